"""Re-run hedges by task id, whatever happened to them: failed, revoked by an operator, or lost.

A hedge task carries one fill, and re-running it hedges whatever the market's ledger leaves
unhedged (A's fills counted once, minus B's settled legs: tasks/hedge.py), so re-running a hedge
whose fill is covered already sends nothing. The fill comes from, first match wins, and only if it
can be trusted (requeue signs what it sends with the task signing key):

- the failed-hedge record (written by the task's on_failure, or by the revoke handler in
  tasks/requeue_task.py), whose stored signature must verify: a record written by hand is never
  signed again;
- the result backend (result_extended keeps the task's args and kwargs), its signature verified
  too: the backend also keeps the args of forged messages the worker refused;
- the ledger's fill record for the fill id in the task id (`hedge-<market>-<fill_id>`): the ledger
  counted it, so it is ours.

The same task id, unless Celery would discard it: a worker keeps the ids an operator revoked
(Flower's Revoke) in memory and drops any message with one of them, so a revoked hedge is re-run
as `<id>-r<n>` (tasks.store.Store.next_requeue_id). The maker waits on the market's in-flight set,
which then holds the new id in place of the old one.

With `max_slippage_bps` (`lighter-hedge requeue --max-slippage-bps N`), B's worst price is the best
price on B's side of the book, read now, +- N bps, instead of A's fill price +- the config's
strategy.max_slippage_bps. The bound (hedge.price_bound.PriceBound) travels in the message as the
`price` kwarg, signed with the fill, and the task's retries keep it.
"""
from __future__ import annotations

import asyncio
import logging
import threading
from dataclasses import dataclass
from decimal import ROUND_HALF_EVEN, Decimal
from typing import Any, Awaitable, Callable, TypeVar

import lighter

from hedge.budget import Priority
from hedge.config import MAX_SLIPPAGE_BPS, Config, ConfigError
from hedge.fill import BUY, SELL, Fill, InvalidFill
from hedge.money import MarketSpec
from hedge.plan import BPS, worst_price_int
from hedge.price_bound import InvalidPriceBound, PriceBound, check_slippage_bps
from ops.status import CLI_PROCESS
from tasks.requeue_task import REVOKED_REASON  # noqa: F401 - the failed record of a hedge an operator revoked
from tasks.signing import MessageSigner, UnauthenticatedMessage
from tasks.store import Store, fill_id_of_task, task_id_for
from venue.budget import budget_from_config
from venue.keys import task_signing_key

log = logging.getLogger("ops.requeue")
T = TypeVar("T")

REVOKED_INSPECT_S = 1.0                  # how long the CLI asks the workers which ids they discard
BOOK_BUDGET_WAIT_MS = 10_000             # a requeue's book read waits this long for the request budget at most


class RequeueError(Exception):
    """Why a hedge cannot be requeued, in one line. `exit_code`: 2 for a bad argument (a bound out of
    range), 1 for the rest (refused message, unknown id, no fill to trust, no price on the book)."""

    def __init__(self, message: str, exit_code: int = 1):
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True)
class RequeuePreview:
    """What a requeue would send, for the operator to judge before it is sent."""

    task_id: str
    market: str
    b_side: str                  # B's side of the re-run: "sell" when A is long unhedged
    size: Decimal                # what B would order now: the market's unhedged amount (0: the re-run sends nothing)
    a_fill_price: Decimal
    book_price: Decimal | None   # the best price on B's side of the book now (None: not read, or none there)
    worst_price: Decimal         # B's worst acceptable price
    distance_bps: Decimal        # (worst_price - a_fill_price) / a_fill_price in bps, signed, 0.01 bps
    max_slippage_bps: Decimal = Decimal(0)   # the bound applied: the operator's, or strategy.max_slippage_bps
    from_book: bool = False      # worst price from the book (an operator's bound) or from A's fill price
    fill_id: str = ""
    state: str = "failed"        # failed | revoked | in flight | lost (in no list)

    def line(self) -> str:
        """`task=hedge-ETH-12 side=sell size=0.0100 a_fill_price=3000.00 book=2990.10 worst_price=2975.15
        (-83 bps from A's fill)`, with the bound and where it is measured from."""
        book = "none" if self.book_price is None else str(self.book_price)
        rounded = self.distance_bps.quantize(Decimal(1), ROUND_HALF_EVEN)
        nothing = " (nothing unhedged: the re-run sends nothing)" if self.size == 0 else ""
        return (f"task={self.task_id} fill_id={self.fill_id} state={self.state} side={self.b_side} size={self.size} "
                f"a_fill_price={self.a_fill_price} book={book} max_slippage_bps={self.max_slippage_bps} "
                f"from={'book' if self.from_book else 'a_fill'} worst_price={self.worst_price} "
                f"({'+' if rounded > 0 else ''}{rounded} bps from A's fill){nothing}")

    def price_message(self) -> dict[str, Any] | None:
        """The signed `price` kwarg of the re-run: only an operator's bound travels."""
        if not self.from_book or self.book_price is None:
            return None
        return PriceBound(self.book_price, self.max_slippage_bps, self.b_side).to_message()


@dataclass(frozen=True)
class Requeued:
    """One hedge requeued: `new_task_id` is what runs now (== task_id unless it was revoked)."""

    task_id: str
    new_task_id: str
    market: str
    fill_id: str
    state: str      # failed | revoked | in flight | lost
    source: str     # where its fill came from: failed record | result backend | ledger
    preview: RequeuePreview | None = None

    def line(self) -> str:
        if self.new_task_id != self.task_id:
            return f"requeued {self.task_id} as {self.new_task_id} ({self.state}: workers discard its id)"
        why = {"failed": "failed",
               "in flight": "in flight: if its message runs too, the later of the two sends nothing",
               }.get(self.state, f"{self.state}: its fill from the {self.source}")
        return f"requeued {self.task_id} ({why})"


@dataclass(frozen=True)
class _Hedge:
    task_id: str
    market: str
    fill: dict[str, Any]
    state: str    # failed | revoked | in flight | lost
    source: str   # where the fill came from: failed record | result backend | ledger


# ---- the API (the CLI, the console, tasks.requeue_hedge) ----------------------------------------

async def preview(cfg: Config, store: Store, task_id: str, max_slippage_bps: int | None,
                  *, process: str = CLI_PROCESS) -> RequeuePreview:
    """What `requeue(cfg, store, markets, task_id, max_slippage_bps)` would send; nothing is sent or
    changed. Reads the market spec and B's side of the book (public endpoints, counted in the request
    budget as READ of `process`). Without a bound, a venue that does not answer leaves book_price None.
    RequeueError (one line) when the hedge cannot be requeued."""
    bps = _bound(max_slippage_bps)
    hedge = _find(cfg, store, _signer(cfg), list(cfg.markets), task_id)
    return await _price(cfg, store, hedge, bps, process, {})


def requeue(cfg: Config, store: Store, markets: list[str], task_id: str | None, max_slippage_bps: int | None = None,
            **kwargs: Any) -> list[str]:
    """Re-run the hedge `task_id` (or, with None, every failed hedge of `markets`) and return the task
    ids now in flight for them (the same id, or `<id>-r<n>` for a revoked one). With
    `max_slippage_bps`, B's worst price is priced from the book now (see the module's docstring).
    RequeueError (one line, nothing sent) when `task_id` cannot be requeued or the bound is out of
    range. Keyword arguments: those of requeue_hedges. Blocking (Redis, the workers' inspect, the book
    read): from async code, call it in a thread (asyncio.to_thread)."""
    return [done.new_task_id for done in requeue_hedges(cfg, store, markets, task_id, max_slippage_bps, **kwargs)]


def requeue_hedges(cfg: Config, store: Store, markets: list[str], task_id: str | None,
                   max_slippage_bps: int | None = None, *, echo: Callable[[str], Any] | None = None,
                   run: Callable[[Callable[[], Awaitable[Any]]], Any] | None = None, process: str = CLI_PROCESS,
                   revoked: Callable[[str], bool] | None = None) -> list[Requeued]:
    """requeue(), saying what happened to each hedge.

    `echo`: called with each hedge's preview line before anything is sent (with a bound only).
    `run`: runs the book reads' coroutine (default: an event loop of its own; the worker passes its
    runtime.run). `process`: who reads the book, in the request budget. `revoked`: whether workers
    discard a task id (default: Celery's inspect of the running workers, REVOKED_INSPECT_S).
    Signed for the ledger generation Redis holds now: a failed record is in this generation (a wipe
    takes it along), and a fill is counted at most once whatever the message says."""
    bps = _bound(max_slippage_bps)
    signer = _signer(cfg)
    if task_id:
        hedges = [_find(cfg, store, signer, markets, task_id)]
    else:
        hedges = [hedge for market in markets for hedge in _failed_hedges(store, signer, market)]
    if not hedges:
        return []
    previews: list[RequeuePreview | None] = [None] * len(hedges)
    if bps is not None:   # every hedge priced (and shown) before the first one is sent
        books: dict[str, Any] = {}

        async def price_all() -> list[RequeuePreview]:
            return [await _price(cfg, store, hedge, bps, process, books) for hedge in hedges]
        previews = list((run or _run_sync)(price_all))
        for shown in previews:
            log.info("event=requeue.priced fill_id=%s market=%s task_id=%s b_side=%s size=%s a_fill_price=%s book=%s "
                     "max_slippage_bps=%s worst_price=%s distance_bps=%s", shown.fill_id, shown.market, shown.task_id,
                     shown.b_side, shown.size, shown.a_fill_price, shown.book_price, shown.max_slippage_bps,
                     shown.worst_price, shown.distance_bps)
            if echo is not None:
                echo(shown.line())
    is_revoked = revoked or _WorkersRevoked()
    return [_send(store, signer, hedge, shown, is_revoked) for hedge, shown in zip(hedges, previews)]


# ---- finding the hedge and a fill to trust --------------------------------------------------------

def _signer(cfg: Config) -> MessageSigner:
    try:
        return MessageSigner(task_signing_key(cfg))
    except (ConfigError, ValueError) as exc:
        raise RequeueError(f"cannot sign the re-run: {exc}", 2) from None


def _bound(max_slippage_bps: Any) -> Decimal | None:
    if max_slippage_bps is None:
        return None
    try:
        return check_slippage_bps(max_slippage_bps, "--max-slippage-bps")
    except InvalidPriceBound:
        raise RequeueError(f"--max-slippage-bps: expected more than 0 and at most {MAX_SLIPPAGE_BPS} (10 %, like "
                           f"strategy.max_slippage_bps), got {max_slippage_bps!r:.40}", 2) from None


def _trusted(signer: MessageSigner, fill: Any, auth: Any, price: Any = None) -> bool:
    """Signed with our key (for any ledger generation): the fill is one our maker or worker sent."""
    try:
        signer.verify(fill, auth, price)
        return True
    except UnauthenticatedMessage:
        return False


def _find(cfg: Config, store: Store, signer: MessageSigner, markets: list[str], task_id: str) -> _Hedge:
    refused = store.refused().get(task_id)
    if refused is not None:
        raise RequeueError(f"nothing to requeue: {task_id} is a refused message ({refused.get('reason')}); nothing "
                           f"was traded, re-running it cannot help - `lighter-hedge clear-refused {task_id}`")
    for market in markets:
        info = store.failed(market).get(task_id)
        if info is not None:
            return _failed_hedge(store, signer, market, task_id, info)
    backend = _from_backend(signer, task_id)
    market = _market_of(cfg, markets, task_id, backend)
    fill, source = (backend, "result backend") if backend is not None else (_from_ledger(store, market, task_id), "ledger")
    if fill is None:
        raise RequeueError(f"nothing to requeue: {task_id} has no fill to trust (no failed record, no signed message in "
                           f"the result backend, no fill record in {market}'s ledger)")
    return _Hedge(task_id, market, fill, "in flight" if task_id in store.inflight(market) else "lost", source)


def _failed_hedges(store: Store, signer: MessageSigner, market: str) -> list[_Hedge]:
    hedges = []
    for task_id, info in sorted(store.failed(market).items()):
        try:
            hedges.append(_failed_hedge(store, signer, market, task_id, info))
        except RequeueError as exc:
            log.error("event=requeue.no_fill fill_id=%s market=%s task_id=%s reason=%r", info.get("fill_id"), market,
                      task_id, str(exc))
    return hedges


def _failed_hedge(store: Store, signer: MessageSigner, market: str, task_id: str, info: dict[str, Any]) -> _Hedge:
    state = "revoked" if info.get("revoked") else "failed"
    fill = info.get("fill")
    if isinstance(fill, dict) and _trusted(signer, fill, info.get("auth"), info.get("price")):
        return _Hedge(task_id, market, fill, state, "failed record")
    backend = _from_backend(signer, task_id)
    if backend is not None:
        return _Hedge(task_id, market, backend, state, "result backend")
    ledger = _from_ledger(store, market, task_id, info.get("fill_id"))
    if ledger is not None:
        return _Hedge(task_id, market, ledger, state, "ledger")
    raise RequeueError(f"nothing to requeue: the failed record of {task_id} carries no fill signed with this "
                       f"deployment's key, and neither the result backend nor {market}'s ledger has one")


def _from_backend(signer: MessageSigner, task_id: str) -> dict[str, Any] | None:
    """The task's fill as the worker received it (result_extended), if its signature verifies."""
    from celery.result import AsyncResult

    from tasks import app
    try:
        result = AsyncResult(task_id, app=app)
        args, kwargs = result.args, result.kwargs
    except Exception as exc:   # a backend that does not answer: the other sources still count
        log.warning("event=requeue.backend_unread task_id=%s error=%r", task_id, f"{type(exc).__name__}: {exc}")
        return None
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    fill = args[0] if isinstance(args, (list, tuple)) and args else kwargs.get("fill")
    if isinstance(fill, dict) and _trusted(signer, fill, kwargs.get("auth"), kwargs.get("price")):
        return fill
    return None


def _from_ledger(store: Store, market: str, task_id: str, fill_id: str | None = None) -> dict[str, Any] | None:
    """The fill the ledger counted for this task's fill id (a worker's recovery task: the market's latest)."""
    if task_id.startswith(task_id_for(market, "recover-")):
        return store.latest_fill(market)
    fill_id = fill_id_of_task(market, task_id) or fill_id
    return store.fill_record(market, fill_id) if fill_id else None


def _market_of(cfg: Config, markets: list[str], task_id: str, fill: dict[str, Any] | None) -> str:
    for market in sorted(cfg.markets, key=len, reverse=True):   # ETH-PERP before ETH
        if task_id.startswith(task_id_for(market, "")):
            found = market
            break
    else:
        found = None
        if fill is not None:
            try:
                found = cfg.market_by_index(int(fill["market_index"])).symbol
            except (ConfigError, KeyError, TypeError, ValueError):
                found = None
    if found is None:
        raise RequeueError(f"nothing to requeue: {task_id} is no hedge this deployment knows (not failed, not refused, "
                           f"no signed message in the result backend, not of the form hedge-<market>-<fill_id>)")
    if found not in markets:
        raise RequeueError(f"nothing to requeue on {', '.join(markets)}: {task_id} is a hedge of {found}")
    return found


# ---- pricing from the book ------------------------------------------------------------------------

async def _price(cfg: Config, store: Store, hedge: _Hedge, bps: Decimal | None, process: str,
                 books: dict[str, Any]) -> RequeuePreview:
    try:
        fill = Fill.from_message(hedge.fill)
    except InvalidFill as exc:
        raise RequeueError(f"nothing to requeue: {hedge.task_id}'s fill cannot be read ({exc})") from None
    market = cfg.market(hedge.market)
    if hedge.market not in books:
        try:
            books[hedge.market] = await _read_book(cfg, store, market.market_index, process)
        except Exception as exc:   # the venue, the budget: one line, whatever it was
            if bps is not None:
                raise RequeueError(f"cannot price the re-run of {hedge.task_id} from {hedge.market}'s book: "
                                   f"{type(exc).__name__}: {exc}") from None
            books[hedge.market] = (_spec_from_fill(fill, hedge.market), [], [])
    spec, bids, asks = books[hedge.market]
    unhedged = spec.base_from_int(store.ledger(hedge.market).unhedged)
    b_is_ask = unhedged > 0 if unhedged != 0 else fill.side == BUY   # A long: B sells
    best = bids if b_is_ask else asks
    book = best[0] if best else None
    side = SELL if b_is_ask else BUY
    if bps is not None:
        if book is None:
            raise RequeueError(f"no {'bid' if b_is_ask else 'ask'} on {hedge.market}'s book to price B's {side} of "
                               f"{hedge.task_id} from; nothing sent")
        ref, used = book, bps
    else:
        ref, used = fill.price, cfg.strategy.max_slippage_bps
    worst = spec.price_from_int(worst_price_int(ref, b_is_ask, used, spec))
    distance = ((worst - fill.price) / fill.price * BPS).quantize(Decimal("0.01"), ROUND_HALF_EVEN)
    return RequeuePreview(task_id=hedge.task_id, market=hedge.market, b_side=side, size=abs(unhedged),
                          a_fill_price=fill.price, book_price=book, worst_price=worst, distance_bps=distance,
                          max_slippage_bps=used, from_book=bps is not None, fill_id=fill.fill_id, state=hedge.state)


async def _read_book(cfg: Config, store: Store, market_index: int,
                     process: str) -> tuple[MarketSpec, list[Decimal], list[Decimal]]:
    """The market's spec and best bid/ask prices over the public endpoints (no key), each read
    counted in the request budget A and B share, as READ of `process`."""
    budget = budget_from_config(cfg, store.r)
    api_client = lighter.ApiClient(configuration=lighter.Configuration(host=cfg.base_url))
    try:
        order_api = lighter.OrderApi(api_client)
        await budget.acquire("orderBookDetails", Priority.READ, process, BOOK_BUDGET_WAIT_MS)
        details = await order_api.order_book_details(market_id=market_index)
        found = [d for d in (details.order_book_details or []) if int(d.market_id) == market_index]
        if not found:
            raise LookupError(f"venue has no perp market with market_id {market_index}")
        d = found[0]
        spec = MarketSpec(market_index=market_index, symbol=str(d.symbol), size_decimals=int(d.size_decimals),
                          price_decimals=int(d.price_decimals), min_base_amount=Decimal(d.min_base_amount),
                          min_quote_amount=Decimal(d.min_quote_amount or "0"))
        await budget.acquire("orderBookOrders", Priority.READ, process, BOOK_BUDGET_WAIT_MS)
        book = await order_api.order_book_orders(market_id=market_index, limit=5)
        bids = sorted({Decimal(o.price) for o in (book.bids or [])}, reverse=True)
        asks = sorted({Decimal(o.price) for o in (book.asks or [])})
        return spec, bids, asks
    finally:
        await api_client.close()


def _spec_from_fill(fill: Fill, symbol: str) -> MarketSpec:
    """The market's precision as the fill's own amounts show it (the venue did not answer)."""
    return MarketSpec(market_index=fill.market_index, symbol=symbol,
                      size_decimals=max(0, -int(fill.base_amount.as_tuple().exponent)),
                      price_decimals=max(0, -int(fill.price.as_tuple().exponent)), min_base_amount=Decimal(0))


def _run_sync(make: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine to its end from sync code; in a thread of its own when this one runs a loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(make())
    box: dict[str, Any] = {}

    def target() -> None:
        try:
            box["value"] = asyncio.run(make())
        except BaseException as exc:   # re-raised in the caller's thread
            box["error"] = exc
    thread = threading.Thread(target=target, name="requeue-book", daemon=True)
    thread.start()
    thread.join()
    if "error" in box:
        raise box["error"]
    return box["value"]


# ---- sending ------------------------------------------------------------------------------------

class _WorkersRevoked:
    """Whether the running workers discard a task id (Celery's inspect, asked once, when needed)."""

    def __init__(self) -> None:
        self._ids: set[str] | None = None

    def __call__(self, task_id: str) -> bool:
        if self._ids is None:
            from tasks import app
            try:
                replies = app.control.inspect(timeout=REVOKED_INSPECT_S).revoked() or {}
            except Exception as exc:   # the revoke handler still records a discarded re-run as failed
                log.warning("event=requeue.inspect_failed error=%r", f"{type(exc).__name__}: {exc}")
                replies = {}
            self._ids = {str(i) for ids in replies.values() for i in (ids or [])}
        return task_id in self._ids


def _send(store: Store, signer: MessageSigner, hedge: _Hedge, shown: RequeuePreview | None,
          is_revoked: Callable[[str], bool]) -> Requeued:
    from tasks.hedge_task import send_hedge
    state = hedge.state
    if state != "revoked" and is_revoked(hedge.task_id):
        state = "revoked"
    new_task_id = store.next_requeue_id(hedge.market, hedge.task_id) if state == "revoked" else hedge.task_id
    price = shown.price_message() if shown is not None else None
    store.requeued(hedge.market, hedge.task_id, new_task_id)
    send_hedge(hedge.fill, new_task_id, signer.sign(hedge.fill, store.ensure_generation(), price), price=price)
    fill_id = str(hedge.fill.get("fill_id"))
    log.info("event=requeue fill_id=%s market=%s task_id=%s new_task_id=%s state=%s source=%r max_slippage_bps=%s "
             "worst_price=%s", fill_id, hedge.market, hedge.task_id, new_task_id, state, hedge.source,
             price["max_slippage_bps"] if price else "config", shown.worst_price if shown else "from_a_fill")
    return Requeued(hedge.task_id, new_task_id, hedge.market, fill_id, state, hedge.source, shown)
