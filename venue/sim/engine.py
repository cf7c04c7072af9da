"""The simulator's matching engine: pure, synchronous and deterministic.

No I/O, no asyncio, no wall clock: every entry point takes `now_ms`; all randomness
comes from the `random.Random(seed)` the engine owns. Amounts are integers in the
market's scaled units (base = size * 10**size_decimals, price = price * 10**price_decimals);
collateral and pnl are `Decimal`.

Taken is not executed (as on Lighter): `take()` is the API answering sendTx. It checks the
tx and consumes its nonce, then queues it; `execute_due(now_ms)` applies it after its
account tier's speed bump (venue.sim.tiers) or a late-execution fault's delay. Until then
the tx is in no order list, no trade and no position; `txs[hash]` says pending.

Rules the brief left open, decided here:
* Rejected txs (HTTP 400) never consume the nonce; taken txs always do, even when the tx
  later fails at execution or the order ends cancelled (post-only, reduce-only, slippage,
  self-trade). So of two txs with one nonce, at most one is ever taken.
* Checks run in this order: tx info structure (21501), account (21100), api key (21109),
  nonce (21104), ExpiredAt (21711, "invalid expiry"), then the order's own checks. The
  order's checks run again at execution against the state then; a failure there marks the
  tx failed with its code (GET /api/v1/tx) and changes nothing else. ExpiredAt is judged
  at the tx's execution time: a tx that would execute after it fails.
* Self-trade prevention compares account indexes unless the tx asks for master-account
  equality (L2TxAttributes "7" = 1); behaviour "6" picks which side expires. The synthetic
  accounts always use their master group.
* Reduce-only: the order's remaining size is cut to what would close the position;
  with nothing to close the order is cancelled `canceled-reduce-only`. The cap is
  re-checked at every fill (for takers and resting makers).
* Cancel-all TimeInForce 1 (scheduled) arms a cancel-all of the account at `Time` ms (a
  later one re-arms it; `Time` must be in the future, else 21122); 2 (abort) disarms it.
* Margin counts, per market, the worst case of (position + all open bids) and
  (position - all open asks) at the mid; an order is refused only if it raises that
  worst case beyond (collateral + unrealized pnl) / initial_margin_fraction.
* accountOrders / accountInactiveOrders know the last 1,000 inactive orders of the last
  24 hours per account, as Lighter documents; older ones are forgotten.
* Synthetic accounts keep no inactive-order history (their quotes churn every tick).
"""
from __future__ import annotations

import bisect
import hashlib
import heapq
import itertools
import random
from collections import Counter, OrderedDict, defaultdict, deque
from dataclasses import dataclass, field
from enum import IntEnum
from decimal import Decimal
from typing import Any, Iterable

from .config import AccountConfig, MarketConfig, SimConfig
from .txcodec import (TX_CANCEL_ALL, TX_CANCEL_ORDER, TX_CREATE_ORDER, CancelAllTx,
                      CancelOrderTx, CreateOrderTx, Tx, TxRejected, load_tx_info, parse_tx,
                      parse_tx_type, peek_account_index)
from .tiers import TIERS
from .units import fmt_units, fmt_usdc, units_to_decimal

FIRST_ORDER_INDEX = 2**48 + 1
CLIENT_INDEX_LIMIT = 2**48          # cancel Index below this is a client order index
IMF_SCALE = 10_000                  # initial_margin_fraction 0.05 -> 500 in Trade fields

ORDER_TYPES = {0: "limit", 1: "market"}
TIME_IN_FORCE = {0: "immediate-or-cancel", 1: "good-till-time", 2: "post-only"}

STP_EXPIRE_MAKER, STP_EXPIRE_TAKER, STP_EXPIRE_BOTH = 0, 1, 2
CODE_EXPIRED = 21711                 # Lighter's "invalid expiry" (21116 is a withdrawal code)
MIN_ORDER_EXPIRY_MS = 5 * 60_000     # lighter-go MinOrderExpiryPeriod
INACTIVE_ORDERS_KEPT = 1_000         # accountOrders / accountInactiveOrders: the last 1K inactive ...
INACTIVE_WINDOW_MS = 24 * 3_600_000  # ... of the last 24 hours
# Bounded history (a paper exchange that runs for days): the last TRADES_KEPT trades of the exchange
# and of each account, the last ORDER_LOG_KEPT user txs in the order log, the last TXS_KEPT txs by
# hash (pending ones always). Lists are trimmed in steps of a quarter, so appending stays cheap.
TRADES_KEPT = 10_000
ORDER_LOG_KEPT = 10_000
TXS_KEPT = 10_000
# Trade ids start at the first trade's time in ms times this: a restarted exchange continues above
# every id it gave before (as long as it made fewer than this many trades per ms on average), so a
# client's stored trade-id cutoff never hides its new trades.
TRADE_IDS_PER_MS = 1_000
CANCEL_ALL_IMMEDIATE, CANCEL_ALL_SCHEDULED, CANCEL_ALL_ABORT = 0, 1, 2


class TxStatus(IntEnum):
    """Lighter's tx status (GET /api/v1/tx): 0 failed, 1 pending, 2 executed."""
    FAILED = 0
    PENDING = 1
    EXECUTED = 2


class AdminError(ValueError):
    """An admin request that cannot be done (unknown order, sizes too big, ...)."""


@dataclass(eq=False)
class Order:
    order_index: int
    client_order_index: int
    account_index: int
    market_id: int
    is_ask: bool
    initial_base: int
    price: int
    order_type: str
    time_in_force: str
    reduce_only: bool
    nonce: int
    api_key_index: int
    order_expiry_ms: int
    created_at_ms: int
    tx_hash: str
    block_height: int
    remaining: int
    updated_at_ms: int = 0
    filled_base: int = 0
    filled_quote_units: int = 0     # sum(base_units * price_units) of the fills
    status: str = "in-progress"
    inactive_seq: int = 0

    @property
    def is_active(self) -> bool:
        return self.status in ("open", "in-progress")


@dataclass
class Position:
    base: int = 0                           # signed, size units
    entry_quote: Decimal = Decimal(0)       # USDC cost of the open |base|
    realized_pnl: Decimal = Decimal(0)


@dataclass
class Account:
    index: int
    master: int
    collateral: Decimal
    synthetic: bool
    public_keys: dict[int, str] = field(default_factory=dict)   # api key index -> hex ("" = unknown)
    next_nonce: dict[int, int] = field(default_factory=dict)
    active: dict[int, Order] = field(default_factory=dict)
    inactive: deque = field(default_factory=deque)          # oldest first, the last 1,000
    positions: dict[int, Position] = field(default_factory=dict)
    total_order_count: int = 0
    tier: str = "standard"
    nonce_changes: dict[int, deque] = field(default_factory=dict)  # key -> (taken_at_ms, next nonce)
    visible_nonce: dict[int, int] = field(default_factory=dict)    # key -> what nextNonce shows
    cancel_all_at_ms: int = 0                                      # armed scheduled cancel-all (0: none)

    @property
    def l1_address(self) -> str:
        """Accounts under one master share one L1 address (and so one request budget)."""
        return f"0x{self.master:040x}"


@dataclass
class Trade:
    trade_id: int
    market_id: int
    size: int
    price: int
    ask_account_id: int
    bid_account_id: int
    ask_id: int
    bid_id: int
    timestamp_ms: int
    json: dict[str, Any]


@dataclass
class TxOutcome:
    tx_hash: str
    tx_type: int
    account_index: int
    order: Order | None = None
    canceled: list[Order] = field(default_factory=list)


@dataclass(eq=False)
class TakenTx:
    """A tx the API took (its nonce is consumed), pending until it executes or fails."""
    seq: int
    tx_hash: str
    tx: Tx
    tx_info: str
    taken_at_ms: int
    execute_at_ms: int
    late: bool
    force_slippage: bool
    status: TxStatus = TxStatus.PENDING
    code: int = 0
    message: str = ""
    executed_at_ms: int = 0
    block_height: int = 0
    outcome: TxOutcome | None = None


class BookSide:
    """Resting orders of one side, best first (price, then arrival)."""

    def __init__(self, is_ask: bool):
        self.is_ask = is_ask
        self.orders: list[Order] = []

    def _key(self, order: Order) -> tuple[int, int]:
        return (order.price if self.is_ask else -order.price, order.order_index)

    def add(self, order: Order) -> None:
        bisect.insort(self.orders, order, key=self._key)

    def remove(self, order: Order) -> None:
        self.orders.remove(order)

    def best(self) -> Order | None:
        return self.orders[0] if self.orders else None


@dataclass
class MarketState:
    cfg: MarketConfig
    mid: int
    bids: BookSide
    asks: BookSide
    random_walk: bool
    taker_flow: bool
    active: bool = True                      # False: new orders are refused (21605)
    last_trade_price: int = 0
    daily_trades_count: int = 0
    daily_base_volume: int = 0

    def side(self, is_ask: bool) -> BookSide:
        return self.asks if is_ask else self.bids


class Engine:
    def __init__(self, config: SimConfig, seed: int | None = None):
        self.config = config
        self.seed = config.seed if seed is None else seed
        self.rng = random.Random(self.seed)
        self.markets: dict[int, MarketState] = {}
        for m in config.markets:
            self.markets[m.market_id] = MarketState(
                m, m.start_price_units, BookSide(False), BookSide(True),
                random_walk=config.random_walk, taker_flow=config.taker_flow)
        self.accounts: dict[int, Account] = {}
        for role in (config.liquidity_account, config.flow_account):
            self.accounts[role] = Account(role, config.synthetic_master, Decimal(0), synthetic=True)
        for a in config.accounts:
            self._add_account(a)
        self.user_orders: dict[int, Order] = {}        # order_index -> order (non-synthetic)
        self.trades: list[Trade] = []
        self.trades_by_account: dict[int, list[Trade]] = {}
        self.order_log: list[dict[str, Any]] = []
        self._log_txs: list[TakenTx | None] = []       # taken tx behind each order_log entry
        self.txs: OrderedDict[str, TakenTx] = OrderedDict()   # by hash, oldest first (TXS_KEPT)
        self._pending: list[tuple[int, int, TakenTx]] = []   # heap by (execute_at_ms, seq)
        self.tx_counts: dict[int, Counter] = defaultdict(Counter)
        self.pending_trades: list[Trade] = []          # drained by the server for the stream
        self.pending_order_updates: list[Order] = []   # user orders that changed (the orders channels)
        self._order_ids = itertools.count(FIRST_ORDER_INDEX)
        self._next_trade_id: int | None = None   # from the first trade's time (TRADE_IDS_PER_MS)
        self._inactive_seq = itertools.count(1)
        self._tx_seq = itertools.count(1)
        self.block_height = 1
        self.last_tick_ms = 0

    # ----------------------------------------------------------------- accounts
    def _add_account(self, a: AccountConfig) -> Account:
        acct = Account(a.index, a.master, a.collateral, synthetic=False)
        # An account joining a master that has a tier gets it: the tier is the L1 address's.
        peers = [p for p in self.accounts.values() if not p.synthetic and p.master == a.master]
        acct.tier = a.tier or (peers[0].tier if peers else self.config.tier)
        for key in a.api_key_indexes:
            acct.public_keys[key] = ""
            acct.next_nonce[key] = a.next_nonce
        self.accounts[a.index] = acct
        return acct

    def register_key(self, account_index: int, api_key_index: int, public_key: str,
                     master: int | None = None, collateral: Decimal | None = None) -> Account:
        """Registers (or replaces) an api key's public key; creates an unknown account."""
        acct = self.accounts.get(account_index)
        if acct is None:
            master = account_index if master is None else master
            if master == self.config.synthetic_master:
                raise AdminError(f"master {master} is the synthetic accounts' master")
            acct = self._add_account(AccountConfig(
                account_index, master,
                Decimal("1000000") if collateral is None else collateral, ()))
        if acct.synthetic:
            raise AdminError(f"account {account_index} is a synthetic account")
        acct.public_keys[api_key_index] = public_key.lower().removeprefix("0x")
        acct.next_nonce.setdefault(api_key_index, 0)
        return acct

    def is_synthetic(self, account_index: int | None) -> bool:
        acct = self.accounts.get(account_index) if account_index is not None else None
        return bool(acct and acct.synthetic)

    def same_group(self, a: int, b: int) -> bool:
        return a == b or self.accounts[a].master == self.accounts[b].master

    def position(self, account_index: int, market_id: int) -> Position:
        return self.accounts[account_index].positions.setdefault(market_id, Position())

    def next_nonce(self, account_index: int, api_key_index: int) -> int:
        acct = self._account_or_reject(account_index)
        if api_key_index not in acct.next_nonce:
            raise TxRejected(21109, f"api key not found: account {account_index} has no "
                                    f"api key index {api_key_index}")
        return acct.next_nonce[api_key_index]

    def _account_or_reject(self, account_index: int) -> Account:
        acct = self.accounts.get(account_index)
        if acct is None or acct.synthetic:
            raise TxRejected(21100, f"account not found: {account_index}")
        return acct

    # ----------------------------------------------------------------- tx entry
    def submit(self, tx_type: Any, tx_info: Any, now_ms: int, *,
               force_slippage: bool = False, recv_us: int | None = None) -> TxOutcome:
        """Takes one signed tx and executes it at once (no speed bump); raises TxRejected
        (nothing changed) or returns the outcome. The server uses take() + execute_due().

        `force_slippage` (fault injection): a market order is accepted but ends
        `canceled-too-much-slippage` with zero fill. `recv_us` (benchmarks): when the server
        received the request, in microseconds; logged as `ts_us` (default now_ms * 1000).
        """
        taken = self.take(tx_type, tx_info, now_ms, delay_ms=0, force_slippage=force_slippage,
                          recv_us=recv_us)
        self.execute_due(now_ms)
        if taken.status is TxStatus.FAILED:
            raise TxRejected(taken.code, taken.message)
        assert taken.outcome is not None
        return taken.outcome

    def take(self, tx_type: Any, tx_info: Any, now_ms: int, *, delay_ms: int | None = None,
             late: bool = False, force_slippage: bool = False,
             recv_us: int | None = None) -> "TakenTx":
        """Lighter's API taking a tx: checks what can be checked now (HTTP 400 = TxRejected, the
        nonce not consumed), then consumes the nonce and queues the tx to execute `delay_ms`
        later (default: its account tier's taker or maker delay). Until execute_due() runs it,
        the tx is in no order list, no trade and no position."""
        seq = next(self._tx_seq)
        tx: Tx | None = None
        try:
            tx_type_int = parse_tx_type(tx_type)
            tx = parse_tx(tx_type_int, tx_info)
            acct = self._account_or_reject(tx.account_index)
            if tx.api_key_index not in acct.next_nonce:
                raise TxRejected(21109, f"api key not found: account {tx.account_index} has no "
                                        f"api key index {tx.api_key_index}")
            expected = acct.next_nonce[tx.api_key_index]
            if tx.nonce != expected:
                raise TxRejected(21104, f"invalid nonce: got {tx.nonce}, expected {expected} for "
                                        f"account {tx.account_index} api key {tx.api_key_index}")
            self._check_expired_at(tx, now_ms)
            self._check(acct, tx, now_ms, taking=True)
        except TxRejected as rej:
            self._log_tx(seq, now_ms, tx_type, tx_info, tx, None, rej, recv_us)
            raise
        acct.visible_nonce.setdefault(tx.api_key_index, acct.next_nonce[tx.api_key_index])
        self._settle_nonce_changes(acct, tx.api_key_index, now_ms)   # the queue holds only the lag's txs
        acct.next_nonce[tx.api_key_index] += 1
        acct.nonce_changes.setdefault(tx.api_key_index, deque()).append(
            (now_ms, acct.next_nonce[tx.api_key_index]))
        if delay_ms is None:
            delay_ms = self.delay_ms(acct, tx)
        text = tx_info if isinstance(tx_info, str) else _json_dumps(tx_info)
        taken = TakenTx(seq, self._tx_hash(seq, tx_type_int, tx_info), tx, text, now_ms,
                        now_ms + delay_ms, late, force_slippage)
        self.txs[taken.tx_hash] = taken
        self._forget_old_txs()
        heapq.heappush(self._pending, (taken.execute_at_ms, seq, taken))
        self.tx_counts[acct.index]["taken"] += 1
        if late:
            self.tx_counts[acct.index]["late"] += 1
        self._log_tx(seq, now_ms, tx_type, tx_info, tx, taken, None, recv_us)
        return taken

    def delay_ms(self, acct: "Account", tx: Tx) -> int:
        """The tier's speed bump: taker orders (market / IOC) vs maker orders and cancels."""
        tier = TIERS[acct.tier]
        taker = isinstance(tx, CreateOrderTx) and (tx.order_type == 1 or tx.time_in_force == 0)
        return tier.taker_delay_ms if taker else tier.maker_delay_ms

    def next_execution_ms(self) -> int | None:
        return self._pending[0][0] if self._pending else None

    def execute_due(self, now_ms: int) -> list["TakenTx"]:
        """Executes every taken tx whose time has come, in (execution time, arrival) order."""
        done = []
        while self._pending and self._pending[0][0] <= now_ms:
            _, _, taken = heapq.heappop(self._pending)
            self._execute_taken(taken, now_ms)
            done.append(taken)
        return done

    def _execute_taken(self, taken: "TakenTx", now_ms: int) -> None:
        tx = taken.tx
        acct = self.accounts[tx.account_index]
        counts = self.tx_counts[acct.index]
        try:
            # Judged at its own execution time, so a late tx fails exactly when Lighter's would.
            self._check_expired_at(tx, taken.execute_at_ms)
            self._check(acct, tx, now_ms)
            if isinstance(tx, CreateOrderTx):
                outcome = self._create_order(acct, tx, now_ms, taken.tx_hash, taken.force_slippage)
            elif isinstance(tx, CancelOrderTx):
                outcome = self._cancel_order(acct, tx, now_ms, taken.tx_hash)
            else:
                outcome = self._cancel_all(acct, tx, now_ms, taken.tx_hash)
        except TxRejected as rej:
            taken.status, taken.code, taken.message = TxStatus.FAILED, rej.code, rej.message
            taken.executed_at_ms = now_ms
            counts["expired" if rej.code == CODE_EXPIRED else "failed"] += 1
            return
        self.block_height += 1
        taken.status, taken.outcome = TxStatus.EXECUTED, outcome
        taken.executed_at_ms, taken.block_height = now_ms, self.block_height
        counts["executed"] += 1

    @staticmethod
    def _check_expired_at(tx: Tx, at_ms: int) -> None:
        if 0 < tx.expired_at_ms < at_ms:
            raise TxRejected(CODE_EXPIRED, f"invalid expiry: the tx's ExpiredAt {tx.expired_at_ms} ms "
                                           f"is before {at_ms} ms")

    def visible_next_nonce(self, account_index: int, api_key_index: int, now_ms: int) -> int:
        """What `nextNonce` answers: a taken tx shows only `nonce_lag_ms` after it was taken."""
        acct = self._account_or_reject(account_index)
        if api_key_index not in acct.next_nonce:
            raise TxRejected(21109, f"api key not found: account {account_index} has no "
                                    f"api key index {api_key_index}")
        return self._settle_nonce_changes(acct, api_key_index, now_ms)

    def _settle_nonce_changes(self, acct: "Account", api_key_index: int, now_ms: int) -> int:
        """Nonce changes older than the lag become visible (and leave the queue); the visible nonce."""
        changes = acct.nonce_changes.get(api_key_index)
        visible = acct.visible_nonce.get(api_key_index, acct.next_nonce[api_key_index])
        if changes is None:
            return visible
        while changes and changes[0][0] <= now_ms - self.config.nonce_lag_ms:
            visible = changes.popleft()[1]
        acct.visible_nonce[api_key_index] = visible
        return visible

    def _forget_old_txs(self) -> None:
        """Only the last TXS_KEPT txs are known by hash; one still pending is kept (moved to the end)."""
        for _ in range(len(self.txs) - TXS_KEPT):
            tx_hash, taken = self.txs.popitem(last=False)
            if taken.status is TxStatus.PENDING:
                self.txs[tx_hash] = taken   # at the end now: looked at again only after every other

    def set_tier(self, account_index: int, tier: str) -> list[int]:
        """Sets the tier of an account's L1 address: every account under its master."""
        if tier not in TIERS:
            raise AdminError(f"unknown tier {tier!r}; tiers: {sorted(TIERS)}")
        acct = self.accounts.get(account_index)
        if acct is None or acct.synthetic:
            raise AdminError(f"unknown user account {account_index}")
        changed = [a for a in self.accounts.values() if not a.synthetic and a.master == acct.master]
        for a in changed:
            a.tier = tier
        return sorted(a.index for a in changed)

    def log_unapplied(self, tx_type: Any, tx_info: Any, now_ms: int, code: int, message: str,
                      recv_us: int | None = None) -> None:
        """Order-log entry for a tx the server refused before it reached the engine (faults)."""
        tx = None
        try:
            tx = parse_tx(parse_tx_type(tx_type), tx_info)
        except TxRejected:
            pass
        self._log_tx(next(self._tx_seq), now_ms, tx_type, tx_info, tx, None,
                     TxRejected(code, message), recv_us)

    def _tx_hash(self, seq: int, tx_type: int, tx_info: Any) -> str:
        text = tx_info if isinstance(tx_info, str) else _json_dumps(tx_info)
        return hashlib.blake2b(f"{self.seed}:{seq}:{tx_type}:{text}".encode(),
                               digest_size=40).hexdigest()

    def _log_tx(self, seq: int, now_ms: int, raw_type: Any, raw_info: Any, tx: Tx | None,
                taken: TakenTx | None, rej: TxRejected | None, recv_us: int | None = None) -> None:
        account_index = tx.account_index if tx else peek_account_index(raw_info)
        if self.is_synthetic(account_index):
            return
        try:
            tx_type = int(str(raw_type))
        except ValueError:
            tx_type = None
        entry: dict[str, Any] = {
            "seq": seq, "ts_ms": now_ms, "ts_us": recv_us if recv_us is not None else now_ms * 1000,
            "account_index": account_index,
            "api_key_index": tx.api_key_index if tx else None,
            "nonce": tx.nonce if tx else None, "tx_type": tx_type,
            "market_index": getattr(tx, "market_index", None),
            "client_order_index": None, "order_index": None, "is_ask": None,
            "base_amount": None, "price": None, "order_type": None, "time_in_force": None,
            "reduce_only": None, "result": "rejected" if rej else "accepted",
            "code": rej.code if rej else 200, "message": rej.message if rej else "",
            "tx_hash": taken.tx_hash if taken else None,
        }
        if isinstance(tx, CreateOrderTx):
            entry.update(client_order_index=tx.client_order_index, is_ask=tx.is_ask,
                         base_amount=tx.base_amount, price=tx.price,
                         order_type=ORDER_TYPES[tx.order_type],
                         time_in_force=TIME_IN_FORCE[tx.time_in_force],
                         reduce_only=tx.reduce_only)
        elif isinstance(tx, CancelOrderTx):
            if tx.index < CLIENT_INDEX_LIMIT:
                entry["client_order_index"] = tx.index
            else:
                entry["order_index"] = tx.index
        self.order_log.append(entry)
        self._log_txs.append(taken)
        if len(self.order_log) > ORDER_LOG_KEPT + ORDER_LOG_KEPT // 4:
            del self.order_log[:-ORDER_LOG_KEPT]
            del self._log_txs[:-ORDER_LOG_KEPT]

    def order_log_view(self, account_index: int | None = None) -> list[dict[str, Any]]:
        """Every tx of the user accounts as the API saw it (`result`: taken = "accepted", or
        "rejected"), with what became of it: `tx_status` pending / executed / failed, the failure's
        `tx_code`, and the order's `final_status`."""
        out = []
        for entry, taken in zip(self.order_log, self._log_txs):
            if account_index is not None and entry["account_index"] != account_index:
                continue
            view = dict(entry, final_status=None, tx_status=None, tx_code=None, executed_at_ms=None,
                        late=None)
            if taken is not None:
                order = taken.outcome.order if taken.outcome else None
                view.update(tx_status=taken.status.name.lower(), executed_at_ms=taken.executed_at_ms or None,
                            late=taken.late, tx_code=taken.code or None,
                            final_status=order.status if order else None)
                if order is not None:
                    view.update(order_index=order.order_index, client_order_index=order.client_order_index)
            out.append(view)
        return out

    # ----------------------------------------------------------------- create
    def _check(self, acct: Account, tx: Tx, now_ms: int, taking: bool = False) -> None:
        """A tx's own checks, run when the API takes it and again when it executes (the state
        may have changed in between: a late tx meets the book and margin of its execution)."""
        if isinstance(tx, CreateOrderTx):
            self._check_create(acct, tx, now_ms)
        elif isinstance(tx, CancelOrderTx):
            self._market_or_reject(tx.market_index)
            if tx.index == 0:
                raise TxRejected(21700, "invalid order index: Index 0")
            if self._cancel_target(acct, tx) is None and not (taking and self._pending_create(acct, tx)):
                kind = "client order index" if tx.index < CLIENT_INDEX_LIMIT else "order index"
                raise TxRejected(21600, f"not an active limit order: no active order with {kind} "
                                        f"{tx.index} in market {tx.market_index} for account {acct.index}")
        elif tx.time_in_force not in (CANCEL_ALL_IMMEDIATE, CANCEL_ALL_SCHEDULED, CANCEL_ALL_ABORT):
            raise TxRejected(21501, f"invalid tx info: cancel-all TimeInForce {tx.time_in_force}")
        elif taking and tx.time_in_force == CANCEL_ALL_SCHEDULED and tx.time_ms <= now_ms:
            raise TxRejected(21122, f"invalid cancel all time: Time {tx.time_ms} ms is not after "
                                    f"now ({now_ms} ms)")

    def _market_or_reject(self, market_index: int) -> MarketState:
        market = self.markets.get(market_index)
        if market is None:
            raise TxRejected(21602, f"invalid market index: {market_index} "
                                    f"(markets: {sorted(self.markets)})")
        return market

    def _check_create(self, acct: Account, tx: CreateOrderTx, now_ms: int) -> None:
        market = self._market_or_reject(tx.market_index)
        if not market.active:
            raise TxRejected(21605, f"market is not active: market {tx.market_index}")
        cfg = market.cfg
        if tx.base_amount <= 0:
            raise TxRejected(21701, f"invalid base amount: BaseAmount {tx.base_amount} must be > 0")
        if tx.price <= 0:
            raise TxRejected(21702, f"invalid price: Price {tx.price} must be > 0")
        if tx.base_amount >= 2**48 or tx.price >= 2**32:
            raise TxRejected(21706, "invalid order base or quote amount: BaseAmount must be "
                                    "< 2^48 and Price < 2^32")
        quote = units_to_decimal(tx.base_amount, cfg.size_decimals) * \
            units_to_decimal(tx.price, cfg.price_decimals)
        if tx.base_amount < cfg.min_base_units or quote < cfg.min_quote_amount:
            raise TxRejected(21706, (
                "invalid order base or quote amount: size "
                f"{fmt_units(tx.base_amount, cfg.size_decimals)} {cfg.symbol} (min "
                f"{cfg.min_base_amount}), notional {fmt_usdc(quote)} USDC (min "
                f"{cfg.min_quote_amount})"))
        if tx.client_order_index and any(o.client_order_index == tx.client_order_index
                                         for o in acct.active.values()):
            raise TxRejected(21728, f"client order index already exists: {tx.client_order_index} "
                                    "is used by an active order of this account")
        if tx.time_in_force != 0 and 0 < tx.order_expiry_ms < now_ms + MIN_ORDER_EXPIRY_MS:
            raise TxRejected(CODE_EXPIRED, f"invalid expiry: OrderExpiry {tx.order_expiry_ms} ms is "
                                           f"less than 5 minutes after {now_ms} ms")
        if not tx.reduce_only:
            self._check_margin(acct, market, tx.is_ask, tx.base_amount)

    def _create_order(self, acct: Account, tx: CreateOrderTx, now_ms: int, tx_hash: str,
                      force_slippage: bool) -> TxOutcome:
        market = self.markets[tx.market_index]
        order = self._new_order(acct, market, tx.is_ask, tx.base_amount, tx.price,
                                ORDER_TYPES[tx.order_type], TIME_IN_FORCE[tx.time_in_force],
                                tx.reduce_only, now_ms, tx_hash, client_order_index=tx.client_order_index,
                                nonce=tx.nonce, api_key_index=tx.api_key_index,
                                order_expiry_ms=tx.order_expiry_ms)
        if force_slippage and order.order_type == "market":
            self._finish(order, "canceled-too-much-slippage", now_ms)
        else:
            self._execute(order, market, tx.self_trade_mode, now_ms, tx.self_trade_master)
        return TxOutcome(tx_hash, TX_CREATE_ORDER, acct.index, order=order)

    def _new_order(self, acct: Account, market: MarketState, is_ask: bool, base: int, price: int,
                   order_type: str, tif: str, reduce_only: bool, now_ms: int, tx_hash: str, *,
                   client_order_index: int = 0, nonce: int = 0, api_key_index: int = 0,
                   order_expiry_ms: int = 0) -> Order:
        order = Order(next(self._order_ids), client_order_index, acct.index, market.cfg.market_id,
                      is_ask, base, price, order_type, tif, reduce_only, nonce, api_key_index,
                      order_expiry_ms if tif != "immediate-or-cancel" else 0, now_ms, tx_hash,
                      self.block_height, remaining=base, updated_at_ms=now_ms)
        acct.total_order_count += 1
        if not acct.synthetic:
            self.user_orders[order.order_index] = order
        return order

    def _check_margin(self, acct: Account, market: MarketState, is_ask: bool, base: int) -> None:
        if acct.synthetic:
            return
        before = self._worst_notional(acct)
        after = self._worst_notional(acct, (market.cfg.market_id, is_ask, base))
        equity = acct.collateral + self._unrealized_pnl(acct)
        required = after * self.config.initial_margin_fraction
        if after > before and required > equity:
            raise TxRejected(21739, f"not enough margin: worst-case notional {fmt_usdc(after)} USDC "
                                    f"needs {fmt_usdc(required)} USDC initial margin, account "
                                    f"equity is {fmt_usdc(equity)} USDC")

    def _worst_notional(self, acct: Account, extra: tuple[int, bool, int] | None = None) -> Decimal:
        total = Decimal(0)
        for market_id, market in self.markets.items():
            pos = acct.positions.get(market_id, Position()).base
            bids = sum(o.remaining for o in acct.active.values()
                       if o.market_id == market_id and not o.is_ask and not o.reduce_only)
            asks = sum(o.remaining for o in acct.active.values()
                       if o.market_id == market_id and o.is_ask and not o.reduce_only)
            if extra and extra[0] == market_id:
                if extra[1]:
                    asks += extra[2]
                else:
                    bids += extra[2]
            worst = max(abs(pos + bids), abs(pos - asks))
            total += units_to_decimal(worst, market.cfg.size_decimals) * \
                units_to_decimal(market.mid, market.cfg.price_decimals)
        return total

    def _unrealized_pnl(self, acct: Account) -> Decimal:
        total = Decimal(0)
        for market_id, pos in acct.positions.items():
            if pos.base == 0:
                continue
            cfg = self.markets[market_id].cfg
            value = units_to_decimal(pos.base, cfg.size_decimals) * \
                units_to_decimal(self.markets[market_id].mid, cfg.price_decimals)
            total += value - (pos.entry_quote if pos.base > 0 else -pos.entry_quote)
        return total

    # ----------------------------------------------------------------- matching
    def _reducible(self, order: Order) -> int:
        """How much a reduce-only order may still trade (what closes the position)."""
        pos = self.position(order.account_index, order.market_id).base
        return max(pos, 0) if order.is_ask else max(-pos, 0)

    def _crosses(self, taker: Order, maker_price: int) -> bool:
        return maker_price <= taker.price if not taker.is_ask else maker_price >= taker.price

    def _execute(self, order: Order, market: MarketState, stp_mode: int, now_ms: int,
                 stp_master: bool = True) -> None:
        """Matches a new order, then rests it (GTT/post-only) or cancels its remainder (IOC).

        Self-trade prevention compares account indexes, or master accounts when the tx asks
        for master equality (L2TxAttributes "7" = 1; the synthetic book always does)."""
        acct = self.accounts[order.account_index]
        book = market.side(not order.is_ask)
        if order.reduce_only:
            cap = self._reducible(order)
            if cap == 0:
                self._finish(order, "canceled-reduce-only", now_ms)
                return
            order.remaining = min(order.remaining, cap)
        if order.time_in_force == "post-only":
            best = book.best()
            if best is not None and self._crosses(order, best.price):
                self._finish(order, "canceled-post-only", now_ms)
                return
        acct.active[order.order_index] = order
        while order.remaining > 0:
            maker = book.best()
            if maker is None or not self._crosses(order, maker.price):
                break
            if order.account_index == maker.account_index or (
                    stp_master and self.same_group(order.account_index, maker.account_index)):
                if stp_mode == STP_EXPIRE_MAKER:
                    self._cancel_resting(maker, market, "canceled-self-trade", now_ms)
                    continue
                if stp_mode != STP_EXPIRE_TAKER:      # 2 and 3: expire both
                    self._cancel_resting(maker, market, "canceled-self-trade", now_ms)
                self._finish(order, "canceled-self-trade", now_ms)
                return
            maker_cap = self._reducible(maker) if maker.reduce_only else maker.remaining
            if maker_cap == 0:
                self._cancel_resting(maker, market, "canceled-reduce-only", now_ms)
                continue
            if order.reduce_only:
                taker_cap = self._reducible(order)
                if taker_cap == 0:
                    self._finish(order, "canceled-reduce-only", now_ms)
                    return
            else:
                taker_cap = order.remaining
            qty = min(order.remaining, maker.remaining, maker_cap, taker_cap)
            self._trade(order, maker, market, qty, now_ms)
        if order.remaining == 0:
            self._finish(order, "filled", now_ms)
        elif order.time_in_force == "immediate-or-cancel":
            best = book.best()
            beyond = best is not None and not self._crosses(order, best.price)
            self._finish(order, "canceled-too-much-slippage" if beyond
                         else "canceled-not-enough-liquidity", now_ms)
        else:
            order.status = "open"
            market.side(order.is_ask).add(order)
            self._order_changed(order)

    def _finish(self, order: Order, status: str, now_ms: int) -> None:
        """Ends an order that is not (or no longer) resting in the book."""
        order.status = status
        order.updated_at_ms = now_ms
        acct = self.accounts[order.account_index]
        acct.active.pop(order.order_index, None)
        if not acct.synthetic:
            order.inactive_seq = next(self._inactive_seq)
            acct.inactive.append(order)
            if len(acct.inactive) > INACTIVE_ORDERS_KEPT:
                # Lighter forgets it too: accountOrders / accountInactiveOrders know the last 1K.
                forgotten = acct.inactive.popleft()
                self.user_orders.pop(forgotten.order_index, None)
            self._order_changed(order)

    def _order_changed(self, order: Order) -> None:
        if not self.is_synthetic(order.account_index) and (
                not self.pending_order_updates or self.pending_order_updates[-1] is not order):
            self.pending_order_updates.append(order)

    def _cancel_resting(self, order: Order, market: MarketState, status: str, now_ms: int) -> None:
        market.side(order.is_ask).remove(order)
        self._finish(order, status, now_ms)

    def _trade(self, taker: Order, maker: Order, market: MarketState, qty: int, now_ms: int) -> Trade:
        cfg = market.cfg
        price = maker.price
        ask, bid = (taker, maker) if taker.is_ask else (maker, taker)
        taker_before = self._position_snapshot(taker)
        maker_before = self._position_snapshot(maker)
        ask_pnl = self._apply_fill(ask.account_index, market, -qty, price)
        bid_pnl = self._apply_fill(bid.account_index, market, qty, price)
        for o in (taker, maker):
            o.remaining -= qty
            o.filled_base += qty
            o.filled_quote_units += qty * price
            o.updated_at_ms = now_ms
            self._order_changed(o)
        if maker.remaining == 0:
            self._cancel_resting(maker, market, "filled", now_ms)
        elif maker.reduce_only and self._reducible(maker) == 0:
            self._cancel_resting(maker, market, "canceled-reduce-only", now_ms)
        market.last_trade_price = price
        market.daily_trades_count += 1
        market.daily_base_volume += qty
        if self._next_trade_id is None:
            self._next_trade_id = max(1, now_ms * TRADE_IDS_PER_MS)
        trade_id, self._next_trade_id = self._next_trade_id, self._next_trade_id + 1
        usd = units_to_decimal(qty * price, cfg.size_decimals + cfg.price_decimals)
        imf = int(self.config.initial_margin_fraction * IMF_SCALE)
        taker_after = self.position(taker.account_index, cfg.market_id).base
        maker_after = self.position(maker.account_index, cfg.market_id).base
        body = {
            "trade_id": trade_id, "trade_id_str": str(trade_id),
            "tx_hash": taker.tx_hash, "type": "trade", "market_id": cfg.market_id,
            "size": fmt_units(qty, cfg.size_decimals), "price": fmt_units(price, cfg.price_decimals),
            "usd_amount": fmt_usdc(usd),
            "ask_id": ask.order_index, "bid_id": bid.order_index,
            "ask_id_str": str(ask.order_index), "bid_id_str": str(bid.order_index),
            "ask_client_id": ask.client_order_index, "bid_client_id": bid.client_order_index,
            "ask_client_id_str": str(ask.client_order_index),
            "bid_client_id_str": str(bid.client_order_index),
            "ask_account_id": ask.account_index, "bid_account_id": bid.account_index,
            "is_maker_ask": maker.is_ask, "block_height": self.block_height,
            "timestamp": now_ms, "transaction_time": now_ms * 1000,
            "taker_fee": 0, "maker_fee": 0,
            "taker_position_size_before": fmt_units(taker_before[0], cfg.size_decimals),
            "taker_entry_quote_before": fmt_usdc(taker_before[1]),
            "taker_initial_margin_fraction_before": imf,
            "taker_position_sign_changed": _sign(taker_before[0]) * _sign(taker_after) < 0,
            "maker_position_size_before": fmt_units(maker_before[0], cfg.size_decimals),
            "maker_entry_quote_before": fmt_usdc(maker_before[1]),
            "maker_initial_margin_fraction_before": imf,
            "maker_position_sign_changed": _sign(maker_before[0]) * _sign(maker_after) < 0,
            "bid_account_pnl": fmt_usdc(bid_pnl), "ask_account_pnl": fmt_usdc(ask_pnl),
            "integrator_maker_fee": 0, "integrator_maker_fee_collector_index": 0,
            "integrator_taker_fee": 0, "integrator_taker_fee_collector_index": 0,
            "taker_allocated_margin_usdc_before": 0, "taker_allocated_margin_usdc_after": 0,
            "maker_allocated_margin_usdc_before": 0, "maker_allocated_margin_usdc_after": 0,
            "bid_order_version": 0, "ask_order_version": 0,
            "market_symbol": cfg.symbol, "market_kind": "perps",
        }
        trade = Trade(trade_id, cfg.market_id, qty, price, ask.account_index, bid.account_index,
                      ask.order_index, bid.order_index, now_ms, body)
        _append_bounded(self.trades, trade, TRADES_KEPT)
        for account_index in (ask.account_index, bid.account_index):
            _append_bounded(self.trades_by_account.setdefault(account_index, []), trade, TRADES_KEPT)
        self.pending_trades.append(trade)
        return trade

    def _position_snapshot(self, order: Order) -> tuple[int, Decimal]:
        pos = self.position(order.account_index, order.market_id)
        return pos.base, pos.entry_quote

    def _apply_fill(self, account_index: int, market: MarketState, signed_qty: int,
                    price: int) -> Decimal:
        """Updates position/avg entry; returns the realized pnl of this fill."""
        cfg = market.cfg
        pos = self.position(account_index, cfg.market_id)
        px = units_to_decimal(price, cfg.price_decimals)
        realized = Decimal(0)
        if pos.base == 0 or (pos.base > 0) == (signed_qty > 0):
            pos.entry_quote += units_to_decimal(abs(signed_qty), cfg.size_decimals) * px
            pos.base += signed_qty
        else:
            close = min(abs(signed_qty), abs(pos.base))
            close_dec = units_to_decimal(close, cfg.size_decimals)
            avg = pos.entry_quote / units_to_decimal(abs(pos.base), cfg.size_decimals)
            realized = close_dec * (px - avg) * _sign(pos.base)
            new_base = pos.base + signed_qty
            if new_base == 0:
                pos.entry_quote = Decimal(0)
            elif _sign(new_base) == _sign(pos.base):
                pos.entry_quote -= avg * close_dec
            else:
                pos.entry_quote = units_to_decimal(abs(new_base), cfg.size_decimals) * px
            pos.base = new_base
            pos.realized_pnl += realized
            acct = self.accounts[account_index]
            if not acct.synthetic:
                acct.collateral += realized
        return realized

    # ----------------------------------------------------------------- cancels
    def _cancel_target(self, acct: Account, tx: CancelOrderTx) -> Order | None:
        by_client = tx.index < CLIENT_INDEX_LIMIT
        return next((o for o in acct.active.values() if o.market_id == tx.market_index and
                     (o.client_order_index if by_client else o.order_index) == tx.index), None)

    def _pending_create(self, acct: Account, tx: CancelOrderTx) -> bool:
        """A cancel may name, by client index, an order taken but not executed yet."""
        return tx.index < CLIENT_INDEX_LIMIT and any(
            isinstance(t.tx, CreateOrderTx) and t.tx.account_index == acct.index and
            t.tx.market_index == tx.market_index and t.tx.client_order_index == tx.index
            for _, _, t in self._pending)

    def _cancel_order(self, acct: Account, tx: CancelOrderTx, now_ms: int, tx_hash: str) -> TxOutcome:
        market = self.markets[tx.market_index]
        target = self._cancel_target(acct, tx)
        assert target is not None  # _check ran just before
        self._cancel_resting(target, market, "canceled", now_ms)
        return TxOutcome(tx_hash, TX_CANCEL_ORDER, acct.index, order=target, canceled=[target])

    def _cancel_all(self, acct: Account, tx: CancelAllTx, now_ms: int, tx_hash: str) -> TxOutcome:
        """Immediate: cancels every resting order. Scheduled (the dead-man's switch): arms, or
        re-arms, a cancel-all at `Time` ms. Abort: disarms it."""
        if tx.time_in_force == CANCEL_ALL_SCHEDULED:
            acct.cancel_all_at_ms = tx.time_ms        # a time passed meanwhile fires at the next tick
            return TxOutcome(tx_hash, TX_CANCEL_ALL, acct.index)
        if tx.time_in_force == CANCEL_ALL_ABORT:
            acct.cancel_all_at_ms = 0
            return TxOutcome(tx_hash, TX_CANCEL_ALL, acct.index)
        return TxOutcome(tx_hash, TX_CANCEL_ALL, acct.index, canceled=self._cancel_all_now(acct, now_ms))

    def _cancel_all_now(self, acct: Account, now_ms: int) -> list[Order]:
        canceled = sorted(acct.active.values(), key=lambda o: o.order_index)
        for order in canceled:
            self._cancel_resting(order, self.markets[order.market_id], "canceled", now_ms)
        return canceled

    def _fire_scheduled_cancel_alls(self, now_ms: int) -> None:
        for acct in self.accounts.values():
            if acct.cancel_all_at_ms and acct.cancel_all_at_ms <= now_ms:
                acct.cancel_all_at_ms = 0
                if self._cancel_all_now(acct, now_ms):
                    self.block_height += 1

    # ----------------------------------------------------------------- synthetic market
    def set_market_mode(self, market_id: int | None = None, *, random_walk: bool | None = None,
                        taker_flow: bool | None = None, mid: int | None = None,
                        active: bool | None = None) -> None:
        if market_id is not None and market_id not in self.markets:
            raise AdminError(f"unknown market_id {market_id}; markets: {sorted(self.markets)}")
        targets = [self.markets[market_id]] if market_id is not None else list(self.markets.values())
        for market in targets:
            if random_walk is not None:
                market.random_walk = random_walk
            if taker_flow is not None:
                market.taker_flow = taker_flow
            if active is not None:
                market.active = active
            if mid is not None:
                if mid <= 0:
                    raise AdminError(f"mid must be > 0, got {mid}")
                market.mid = mid

    def tick(self, now_ms: int) -> None:
        """One step of the synthetic market: expiries, random walk, re-quote, taker flow."""
        self.last_tick_ms = now_ms
        self.execute_due(now_ms)
        self._fire_scheduled_cancel_alls(now_ms)
        self._expire_orders(now_ms)
        for market_id in sorted(self.markets):
            market = self.markets[market_id]
            if market.random_walk:
                self._walk(market)
            self._requote(market, now_ms)
            if market.taker_flow and self.rng.random() < float(self.config.taker_flow_prob):
                self._flow_take(market, now_ms)

    def _expire_orders(self, now_ms: int) -> None:
        expired = [o for acct in self.accounts.values() if not acct.synthetic
                   for o in acct.active.values() if 0 < o.order_expiry_ms < now_ms]
        for order in expired:
            self._cancel_resting(order, self.markets[order.market_id], "canceled-expired", now_ms)
            self.block_height += 1

    def _bps_ticks(self, market: MarketState, bps: Decimal) -> int:
        return max(1, int(market.mid * bps / 10_000))

    def _walk(self, market: MarketState) -> None:
        if self.config.volatility_bps == 0:
            return
        max_step = self._bps_ticks(market, self.config.volatility_bps)
        floor = max(1, market.cfg.start_price_units // 10)
        market.mid = max(floor, market.mid + self.rng.randint(-max_step, max_step))

    def _requote(self, market: MarketState, now_ms: int) -> None:
        liquidity = self.accounts[self.config.liquidity_account]
        for order in [o for o in liquidity.active.values() if o.market_id == market.cfg.market_id]:
            self._cancel_resting(order, market, "canceled", now_ms)
        half = self._bps_ticks(market, self.config.half_spread_bps)
        spacing = self._bps_ticks(market, self.config.level_spacing_bps)
        lot = market.cfg.min_base_units
        tx_hash = self._tx_hash(next(self._tx_seq), 0, f"requote:{market.cfg.market_id}:{now_ms}")
        self.block_height += 1
        for level in range(self.config.levels):
            for is_ask in (False, True):
                offset = half + level * spacing
                price = market.mid + offset if is_ask else market.mid - offset
                if price <= 0:
                    continue
                size = lot * self.rng.randint(self.config.level_size_min_lots,
                                              self.config.level_size_max_lots)
                order = self._new_order(liquidity, market, is_ask, size, price, "limit",
                                        "good-till-time", False, now_ms, tx_hash)
                self._execute(order, market, STP_EXPIRE_MAKER, now_ms)

    def _flow_take(self, market: MarketState, now_ms: int) -> None:
        reach = self._bps_ticks(market, self.config.flow_reach_bps)
        candidates = []
        for side in (market.bids, market.asks):
            best = side.best()
            if best is None:
                continue
            for o in side.orders:
                if self.is_synthetic(o.account_index):
                    continue
                distance = (o.price - best.price) if side.is_ask else (best.price - o.price)
                if distance <= reach:
                    candidates.append(o)
        if not candidates:
            return
        candidates.sort(key=lambda o: o.order_index)
        target = self.rng.choice(candidates)
        lot = market.cfg.min_base_units
        if target.remaining > 2 * lot and self.rng.random() < float(self.config.flow_partial_prob):
            qty = self.rng.randint(lot, target.remaining - lot)
        else:
            qty = target.remaining
        self._take(target, qty, now_ms)

    def _take(self, maker: Order, qty: int, now_ms: int) -> Trade:
        """The flow account takes `qty` of one resting order directly (one trade)."""
        market = self.markets[maker.market_id]
        flow = self.accounts[self.config.flow_account]
        if self.same_group(flow.index, maker.account_index):
            raise AdminError(f"order {maker.order_index} belongs to the flow account's group")
        tx_hash = self._tx_hash(next(self._tx_seq), 0, f"flow:{maker.order_index}:{now_ms}")
        self.block_height += 1
        taker = self._new_order(flow, market, not maker.is_ask, qty, maker.price, "limit",
                                "immediate-or-cancel", False, now_ms, tx_hash)
        trade = self._trade(taker, maker, market, qty, now_ms)
        self._finish(taker, "filled", now_ms)
        return trade

    def admin_fill(self, account_index: int, market_id: int, sizes: list[int], now_ms: int, *,
                   client_order_index: int | None = None, order_index: int | None = None) -> list[int]:
        """The flow account takes the given resting order in `sizes` chunks now."""
        acct = self.accounts.get(account_index)
        if acct is None or acct.synthetic:
            raise AdminError(f"unknown user account {account_index}")
        if (client_order_index is None) == (order_index is None):
            raise AdminError("give exactly one of client_order_index or order_index")
        order = next((o for o in acct.active.values() if o.market_id == market_id and
                      (o.order_index == order_index if order_index is not None
                       else o.client_order_index == client_order_index)), None)
        if order is None:
            which = (f"order_index {order_index}" if order_index is not None
                     else f"client_order_index {client_order_index}")
            raise AdminError(f"no active order with {which} in market {market_id} "
                             f"for account {account_index}")
        if not sizes or any(s <= 0 for s in sizes):
            raise AdminError(f"sizes must be a non-empty list of positive amounts, got {sizes}")
        if sum(sizes) > order.remaining:
            cfg = self.markets[market_id].cfg
            raise AdminError(f"sizes sum {fmt_units(sum(sizes), cfg.size_decimals)} exceeds the "
                             f"order's remaining {fmt_units(order.remaining, cfg.size_decimals)}")
        if order.reduce_only and sum(sizes) > self._reducible(order):
            cfg = self.markets[market_id].cfg
            raise AdminError(f"sizes sum {fmt_units(sum(sizes), cfg.size_decimals)} exceeds what the "
                             f"reduce-only order can still close "
                             f"({fmt_units(self._reducible(order), cfg.size_decimals)})")
        return [self._take(order, size, now_ms).trade_id for size in sizes]

    # ----------------------------------------------------------------- queries
    def drain_trades(self) -> list[Trade]:
        out, self.pending_trades = self.pending_trades, []
        return out

    def drain_order_updates(self) -> list[Order]:
        """User orders whose state changed since the last call, each once, in first-change order."""
        out, self.pending_order_updates = self.pending_order_updates, []
        return list(dict.fromkeys(out))

    def book_levels(self, market_id: int) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
        """Aggregated (price, size) levels, bids desc / asks asc."""
        market = self.markets[market_id]
        return _levels(market.bids.orders), _levels(market.asks.orders)

    def active_orders(self, account_index: int, market_id: int | None = None) -> list[Order]:
        acct = self.accounts.get(account_index)
        if acct is None:
            return []
        return sorted((o for o in acct.active.values()
                       if market_id is None or o.market_id == market_id),
                      key=lambda o: o.order_index)

    def inactive_orders(self, account_index: int, market_id: int | None = None,
                        now_ms: int | None = None) -> list[Order]:
        """Newest (last to become inactive) first; only the last 1,000 of the last 24 h."""
        acct = self.accounts.get(account_index)
        if acct is None:
            return []
        since = (now_ms if now_ms is not None else self.last_tick_ms) - INACTIVE_WINDOW_MS
        return [o for o in reversed(acct.inactive) if o.updated_at_ms >= since and
                (market_id is None or o.market_id == market_id)]

    def orders_by_client_index(self, client_indexes: Iterable[int], account_index: int | None = None,
                               now_ms: int | None = None) -> list[Order]:
        """accountOrders: active orders and the inactive ones Lighter still knows."""
        wanted = set(client_indexes)
        accounts = ([account_index] if account_index is not None else
                    [i for i, a in self.accounts.items() if not a.synthetic])
        out = []
        for index in accounts:
            acct = self.accounts.get(index)
            if acct is None or acct.synthetic:
                continue
            out += [o for o in acct.active.values() if o.client_order_index in wanted]
            out += [o for o in self.inactive_orders(index, now_ms=now_ms) if o.client_order_index in wanted]
        return out

    def find_trades(self, *, account_index: int | None = None, market_id: int | None = None,
                    order_index: int | None = None) -> list[Trade]:
        """Matching trades in trade_id order."""
        source = (self.trades if account_index is None
                  else self.trades_by_account.get(account_index, []))
        return [t for t in source if (market_id is None or t.market_id == market_id) and
                (order_index is None or order_index in (t.ask_id, t.bid_id))]

    def position_sums(self) -> dict[int, int]:
        sums = {m: 0 for m in self.markets}
        for acct in self.accounts.values():
            for market_id, pos in acct.positions.items():
                sums[market_id] += pos.base
        return sums


def _levels(orders: list[Order]) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for o in orders:
        if out and out[-1][0] == o.price:
            out[-1] = (o.price, out[-1][1] + o.remaining)
        else:
            out.append((o.price, o.remaining))
    return out


def _sign(value: int) -> int:
    return (value > 0) - (value < 0)


def _json_dumps(value: Any) -> str:
    import json
    try:
        return json.dumps(value, sort_keys=True, default=str)
    except (TypeError, ValueError):
        return repr(value)


def _append_bounded(items: list, item: Any, kept: int) -> None:
    """Append, keeping the last `kept` (trimmed in steps of a quarter: an amortised O(1) append)."""
    items.append(item)
    if len(items) > kept + kept // 4:
        del items[:-kept]
