"""One market's quote loop for account A.

FLAT -> QUOTING_OPEN -> HEDGING -> LONG -> QUOTING_CLOSE -> HEDGING -> FLAT, plus PAUSED.
A new order is placed only when no hedge of this market is in flight or failed.
"""
from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from decimal import Decimal

from hedge.budget import Priority
from hedge.config import Config, MarketConfig
from hedge.fill import BUY, SELL, Fill, signed
from hedge.flatten import CloseResult, FlattenError
from hedge.leg import EXPIRY_MARGIN_MS, NONCE_MOVED, TX_EXPIRY_BOUND_MS, Evidence, Leg, LegState, Verdict, resolve
from hedge.money import MarketSpec
from hedge.plan import MAX_CLIENT_ORDER_INDEX, Quote, next_quote, worst_price_int
from maker.hedges import HedgeDispatcher
from tasks import metrics
from tasks.store import Ledger, Store, requeue_base
from venue import errors
from venue.client import IN_DOUBT_TAKER, OrderView, VenueClient
from venue.feed import VenueFeed, order_final

log = logging.getLogger("maker.loop")

ORDER_CHECK_INTERVAL_S = 2.0   # while resting, look at the order now and then (a cancel by the venue sends no trade)
ORDER_VISIBLE_S = 2.0          # an order taken by the venue shows on the order stream within its speed bump
RESTING_REST_CHECK_S = 10.0    # a stream can go silent without closing: one REST look this often while resting
FILLS_ARRIVE_TIMEOUT_S = 10.0  # an order's fills reach us over the stream after its final state
COVERAGE_CHECK_S = 2.0         # while waiting on a hedge result, look at the ledger this often
TAKEN_ORDER_LOOK_S = 10.0      # a taken order of A that does not show yet: watch the stream this long per look
ORDER_PENDING_RETRY_S = 2.0    # a taken order of A that does not show yet: look again this often
NONCE_LAG_MS = 1_000           # the venue's nextNonce shows a taken tx only this much later (at least)
CLOSE_FINAL_TIMEOUT_S = 10.0   # flatten's close of A: a market order settles after the venue's taker delay


class Paused(Exception):
    """The market is paused; the reason is stored in Redis."""


class OrderPending(Exception):
    """A's order written ahead was taken by the venue but does not show yet: quote nothing until it does."""


@dataclass
class RestingOrder:
    client_order_index: int
    quote: Quote
    order_index: int | None = None
    filled: Decimal = Decimal(0)
    fill_ids: list[str] = field(default_factory=list)
    changed: asyncio.Event = field(default_factory=asyncio.Event)


class _TimedVenue:
    """The venue client, with the time spent awaiting it added up (the maker's round breakdown)."""

    def __init__(self, client: VenueClient):
        self._client = client
        self.busy_s = 0.0

    def __getattr__(self, name: str):
        attr = getattr(self._client, name)
        if not asyncio.iscoroutinefunction(attr):
            return attr

        async def timed(*args, **kwargs):
            t0 = time.perf_counter()
            try:
                return await attr(*args, **kwargs)
            finally:
                self.busy_s += time.perf_counter() - t0
        return timed


class MarketLoop:
    def __init__(self, cfg: Config, market: MarketConfig, spec: MarketSpec, client: VenueClient,
                 b_position, store: Store, dispatcher: HedgeDispatcher, resumed: asyncio.Event,
                 feed: VenueFeed | None = None, a_positions: dict[int, tuple[Decimal, float]] | None = None,
                 stream_connected: asyncio.Event | None = None):
        self.cfg = cfg
        self.market = market
        self.symbol = market.symbol
        self.spec = spec
        self.client = _TimedVenue(client)
        self.b_position = b_position  # async () -> Decimal, B's position on this market
        self.store = store
        self.dispatcher = dispatcher
        self.resumed = resumed
        # State from WebSockets (venue.feed, and A's positions from the account stream); REST is
        # the fallback when the stream is not connected or does not answer in time.
        self.feed = feed
        self.a_positions = a_positions if a_positions is not None else {}   # market -> (position, monotonic s)
        self.stream_connected = stream_connected
        self._last_fill_s = 0.0   # monotonic: a position frame older than our newest fill is stale
        self._state = "STARTING"
        self.resting: RestingOrder | None = None
        self._seq = 0
        self.backfill_now = None  # set by the app: async () -> None, the stream's REST backfill
        self._reconcile_due = False
        self._reconciled_at = time.monotonic()
        self._resting_s = 0.0      # time this round's order waited for fills
        self._hedge_wait_s = 0.0   # time this round waited on hedge results
        self._taken_rest_look_s = time.monotonic()
        # flatten(): `at_rest` is set while the loop waits paused (nothing of it rests or is on the
        # wire); `flattening` keeps it waiting until the flatten is done, even if resumed meanwhile.
        self.at_rest = asyncio.Event()
        self.flattening = False

    @property
    def state(self) -> str:
        return self._state

    @state.setter
    def state(self, value: str) -> None:
        if value != self._state:
            self._state = value
            self.store.set_state(self.symbol, value)

    def on_paused(self) -> None:
        """A pause from the operator: stop waiting on the resting order and cancel it now."""
        if self.resting is not None:
            self.resting.changed.set()

    # ---- fills from the stream -------------------------------------------------------------

    def on_fill(self, fill: Fill) -> None:
        self.on_fills([fill])

    def on_fills(self, fills: list[Fill]) -> None:
        """New fills of this market (all of one frame at once): enqueue every hedge, then the rest."""
        task_ids = self.dispatcher.submit_many(
            self.symbol, [(f, self.spec.base_to_int(signed(f.side, f.base_amount))) for f in fills])
        new = [f for f, task_id in zip(fills, task_ids) if task_id is not None]
        if not new:
            return
        self._last_fill_s = time.monotonic()
        self._check_unhedged(self.dispatcher.last_ledger)
        order = self.resting
        if order is None:
            return
        for fill in new:
            if fill.client_order_index == order.client_order_index or fill.order_index == order.order_index:
                order.filled += fill.base_amount
                order.fill_ids.append(fill.fill_id)
                order.changed.set()

    # ---- the loop ----------------------------------------------------------------------------

    async def run(self, stream_ready: asyncio.Event) -> None:
        await stream_ready.wait()  # snapshot and backfill processed: fills during downtime are queued
        failures = 0
        while True:
            try:
                await self._startup()
                break
            except Exception as exc:  # a venue or Redis hiccup at start: log it, try again
                failures += 1
                await self._after_error("startup", exc, failures)
        failures = 0
        while True:
            try:
                await self._wait_unpaused()
                await self._round()
                failures = 0
            except Paused:
                continue
            except OrderPending as exc:   # not an error: the venue executes it late, or it expires
                log.info("event=maker.order_pending market=%s reason=%s", self.symbol, exc)
                self.resting = None
                await asyncio.sleep(ORDER_PENDING_RETRY_S)
            except Exception as exc:  # never exit on a read error: what was written ahead is resolved next round
                failures += 1
                await self._after_error("round", exc, failures)

    async def _after_error(self, where: str, exc: Exception, failures: int) -> None:
        delay_s = min(30.0, 0.5 * 2 ** min(failures, 6))
        log.error("event=maker.%s_error market=%s error=%s failures=%d retry_in_s=%.1f", where, self.symbol,
                  f"{type(exc).__name__}: {exc}"[:500], failures, delay_s)
        self.resting = None
        await asyncio.sleep(delay_s)

    # ---- venue state: the streams first, REST when they cannot say ---------------------------

    async def _position(self) -> Decimal:
        """A's position from the account stream's position frames while they are current (one came
        after the newest fill we know of), else from REST."""
        mi = self.market.market_index
        entry = self.a_positions.get(mi)
        if entry is not None and self.stream_connected is not None and self.stream_connected.is_set() \
                and entry[1] >= self._last_fill_s:
            return entry[0]
        return await self.client.position(mi)

    async def _book(self, limit: int) -> tuple[list[Decimal], list[Decimal]]:
        book = self.feed.book_prices(self.market.market_index) if self.feed is not None else None
        if book is not None:
            return book[0][:limit], book[1][:limit]
        return await self.client.book_prices(self.market.market_index, limit=limit)

    async def _order_seen(self, coi: int, timeout_s: float) -> OrderView | None:
        """The order as soon as the venue shows it (any state); None if it never does."""
        if self.feed is not None and self.feed.connected.is_set():
            view = await self.feed.wait_order(coi, lambda _: True, timeout_s)
            if view is not None:
                return view
        view = await self.client.order_by_client_index(coi)
        return view if view is not None else await self.client.wait_order_final(coi, timeout_s)

    async def _order_final(self, coi: int, timeout_s: float) -> OrderView | None:
        """The order's final state (or the last seen at the timeout; None if never seen)."""
        return await order_final(self.feed, self.client, coi, timeout_s)

    def on_order(self, view: OrderView) -> None:
        """An update of one of A's orders from the order stream: wake the resting loop."""
        if self.resting is not None and view.client_order_index == self.resting.client_order_index:
            self.resting.changed.set()

    async def _startup(self) -> None:
        for order in await self.client.active_orders(self.market.market_index):
            log.warning("event=maker.cancel_leftover market=%s order_index=%s", self.symbol, order.order_index)
            await self.client.cancel(self.market.market_index, order.order_index)
        try:
            if not self._covered():
                # A fill counted whose task never reached the broker (the maker died between the
                # two), or a leg in doubt: one more task for the market hedges whatever is left.
                self.dispatcher.hedge_leftover(self.symbol)
            await self._wait_hedges()
            await self._reconcile(at_start=True)
        except Paused:
            pass

    def request_reconcile(self) -> None:
        """After a stream reconnect: compare with the venue before the next order."""
        self._reconcile_due = True

    async def _reconcile(self, at_start: bool) -> None:
        """The venue's A+B must equal what the ledger says is unhedged.

        At start, a gap the ledger cannot know (Redis lost its data, a hedge lost with the broker)
        is measured directly from the venue, so it is hedged through the same task when within
        max_unhedged_base. Later, a gap is first looked for in A's trades (a fill the stream
        missed); what remains is unexplained and pauses the market.
        """
        self.store.check_generation()   # Redis lost the ledger: LedgerLostError ends the maker (restart reconciles)
        pending = self.store.ledger(self.symbol).pending
        if pending and not at_start:
            # A leg in flight (a failed hedge acknowledged by `resume --force`, or one the venue took
            # and has not executed) would be half-counted: compare once it is settled.
            log.info("event=maker.reconcile_deferred market=%s legs_open=%d", self.symbol, len(pending))
            self._reconciled_at = time.monotonic()
            return
        self._reconcile_due = False
        self._reconciled_at = time.monotonic()
        gap, detail = await self._measure_gap()
        if gap != 0 and not at_start and self.backfill_now is not None:
            await self.backfill_now()
            await self._wait_hedges()
            gap, detail = await self._measure_gap()
        log.info("event=maker.reconcile market=%s at_start=%s gap=%s %s", self.symbol, at_start, gap, detail)
        if gap == 0:
            self._check_unhedged()
            return
        if not at_start:
            self._pause(f"unexplained exposure gap {gap} ({detail})")
        if abs(gap) > self.market.max_unhedged_base:
            self._pause(f"exposure gap {gap} at start exceeds max_unhedged_base "
                        f"{self.market.max_unhedged_base} ({detail})")
        bids, asks = await self._book(limit=1)
        price = (bids or asks or [None])[0]
        if price is None:
            self._pause(f"exposure gap {gap} at start and no price to hedge it at ({detail})")
        now = int(time.time() * 1000)
        gap_fill = Fill(fill_id=f"recon-{now}", market_index=self.market.market_index,
                        side=BUY if gap > 0 else SELL, base_amount=abs(gap), price=price, order_index=0,
                        client_order_index=0, ts_exchange_ms=now, ts_seen_ms=now)
        log.warning("event=maker.hedge_gap fill_id=%s market=%s gap=%s %s", gap_fill.fill_id, self.symbol, gap, detail)
        self.dispatcher.submit(self.symbol, gap_fill, self.spec.base_to_int(gap))
        await self._wait_hedges()

    async def _measure_gap(self) -> tuple[Decimal, str]:
        """(A + B at the venue) - (what the ledger says is unhedged). Only called with no hedge in
        flight, so no B leg can be half-counted."""
        a = await self._position()
        b = await self.b_position()
        ledger = self.store.ledger(self.symbol)
        if ledger.pending:
            raise RuntimeError(f"reconcile with {len(ledger.pending)} hedge leg(s) still pending")
        unhedged = self.spec.base_from_int(ledger.unhedged)
        return a + b - unhedged, f"A {a}, B {b}, ledger unhedged {unhedged}"

    def _check_unhedged(self, ledger: Ledger | None = None) -> None:
        unhedged_signed = self.spec.base_from_int((ledger or self.store.ledger(self.symbol)).unhedged)
        metrics.UNHEDGED.labels(self.symbol).set(float(unhedged_signed))
        unhedged = abs(unhedged_signed)
        if unhedged > self.market.max_unhedged_base:
            reason = f"unhedged {unhedged} exceeds max_unhedged_base {self.market.max_unhedged_base}"
            if not self.store.paused(self.symbol):
                self.store.pause(self.symbol, reason, by="maker")
                log.error("event=maker.pause market=%s reason=%r", self.symbol, reason)

    async def _wait_unpaused(self) -> None:
        while True:
            pause = self.store.paused(self.symbol)
            metrics.PAUSED.labels(self.symbol).set(1 if pause else 0)
            if pause is None and not self.flattening:
                failed = self.store.unacknowledged_failed(self.symbol)
                if failed:
                    self._pause(f"{len(failed)} failed hedge(s) remain: {', '.join(sorted(failed))}; "
                                f"requeue them, then resume")
                    continue
                self.at_rest.clear()
                return
            self.at_rest.set()
            if self.state != "PAUSED":
                self.state = "PAUSED"
                log.warning("event=maker.paused market=%s reason=%r", self.symbol,
                            (pause or {}).get("reason", "flatten"))
            self.resumed.clear()
            try:
                await asyncio.wait_for(self.resumed.wait(), timeout=5.0)  # pubsub wakes us; re-check anyway
            except asyncio.TimeoutError:
                pass

    def _pause(self, reason: str) -> None:
        # A hedge that failed because Redis lost the ledger is no reason to pause the new one: end
        # the maker instead (LedgerLostError), and its restart reconciles with the venue.
        self.store.check_generation()
        self.state = "PAUSED"
        self.store.pause(self.symbol, reason, by="maker")
        log.error("event=maker.pause market=%s reason=%r", self.symbol, reason)
        raise Paused(reason)

    async def _wait_for_hedger(self) -> None:
        """Never open exposure that nobody can hedge: wait until a worker consumes hedge.b."""
        while not await self.dispatcher.hedger_present():
            if self.state != "WAITING_FOR_WORKER":
                self.state = "WAITING_FOR_WORKER"
                log.warning("event=maker.no_hedger market=%s queue=hedge.b", self.symbol)
            await asyncio.sleep(1.0)

    async def _round(self) -> None:
        t0, venue0 = time.perf_counter(), self.client.busy_s
        self._resting_s = self._hedge_wait_s = 0.0
        try:
            await self._round_inner()
        finally:
            total = time.perf_counter() - t0
            venue = self.client.busy_s - venue0
            own = max(0.0, total - venue - self._resting_s - self._hedge_wait_s)
            metrics.ROUND_SECONDS.labels(self.symbol).observe(total)
            for phase, seconds in (("venue", venue), ("resting", self._resting_s),
                                   ("hedge_wait", self._hedge_wait_s), ("own", own)):
                metrics.ROUND_PHASE_SECONDS.labels(self.symbol, phase).inc(seconds)

    async def _round_inner(self) -> None:
        await self._resolve_written_order()
        await self._wait_for_hedger()
        if self._reconcile_due or time.monotonic() - self._reconciled_at > self.cfg.strategy.reconcile_interval_s:
            await self._reconcile(at_start=False)
        position = await self._position()
        bids, asks = await self._book(limit=max(50, self.market.depth * 5))
        quote = next_quote(position, bids, asks, self.market.depth, self.market.quantity, self.spec)
        if quote is None or not self.spec.is_orderable(quote.base_amount, quote.price):
            self._pause(f"nothing sensible to quote: position {position}, book {len(bids)} bids / {len(asks)} asks")
        if not quote.reduce_only and position + quote.base_amount > self.market.max_position_base:
            self._pause(f"opening {quote.base_amount} on a position of {position} would exceed "
                        f"max_position_base {self.market.max_position_base}")
        closing = quote.reduce_only
        self.state = "QUOTING_CLOSE" if closing else "QUOTING_OPEN"
        order = RestingOrder(client_order_index=self._next_client_order_index(), quote=quote)
        self.resting = order
        try:
            placed = await self._place(order)
            if placed is not None:
                await self._rest_until_done(order, placed)
                self.store.close_maker_order(self.symbol)  # final at the venue, fills all seen
        finally:
            self.resting = None
        self.state = "HEDGING"
        await self._wait_hedges()
        position = await self._position()
        if closing and position == 0:
            self.store.incr(self.symbol, "rounds")
            log.info("event=maker.round_done market=%s rounds=%s", self.symbol,
                     self.store.stats(self.symbol).get("rounds"))
        self.state = "FLAT" if position == 0 else "LONG"

    async def _resolve_written_order(self) -> None:
        """An order of A written ahead but never seen final (the maker crashed, or its answer was in
        doubt): ask the venue by client order index, cancel it if it still rests, then forget it.
        Nothing new is quoted on the market before this. Its fills reach the stream like any other.

        An order the venue does not list is resolved by its nonce (hedge.leg.resolve), never on
        elapsed time: taken -> wait for it to show (it executes late, or expires); nonce not moved ->
        fence it with a tx on the same nonce (the dead-man's re-arm), after which it can never rest."""
        record = self.store.maker_order(self.symbol)
        if record is None:
            return
        coi = record["client_order_index"]
        if record.get("witness"):   # taken: it shows on the order stream when it executes (no REST polling)
            view = await self._order_watch(coi, TAKEN_ORDER_LOOK_S)
        else:
            view = await self._order_final(coi, ORDER_VISIBLE_S)
        if view is None:
            verdict, why = await self._order_verdict(record)
            if verdict is Verdict.FENCE:
                verdict, why = await self._fence(record)
            if verdict in (Verdict.TAKEN, Verdict.WAIT):
                if not record.get("witness"):
                    record = dict(record, witness=NONCE_MOVED)
                    self.store.open_maker_order(self.symbol, record)
                    if record.get("nonce") is not None:
                        self.client.note_nonce_used(int(record["nonce"]))
                # Its nonce was used - by it, or by a fence also in doubt: a cancel by its client
                # index tells which, at once.
                if record["witness"] == NONCE_MOVED and await self._probe_never_taken(record):
                    log.info("event=maker.order_resolved market=%s client_order_index=%d status=never-executed "
                             "why=%r", self.symbol, coi, "a cancel by its client index found no such order")
                    self.store.close_maker_order(self.symbol)
                    return
                if view is None:
                    raise OrderPending(f"A's order {coi} was taken by the venue ({why}); waiting for it to show")
            elif verdict not in (Verdict.REJECT, Verdict.EXPIRE):
                raise OrderPending(f"A's order {coi} is still in doubt ({why})")
            else:
                log.info("event=maker.order_resolved market=%s client_order_index=%d status=never-executed why=%r",
                         self.symbol, coi, why)
                self.store.close_maker_order(self.symbol)
                return
        if record.get("nonce") is not None:
            self.client.note_nonce_used(int(record["nonce"]), f"coi={coi}")
        if not view.is_final:
            outcome = await self.client.cancel(self.market.market_index, view.order_index)
            log.info("event=maker.cancel market=%s client_order_index=%d outcome=%s", self.symbol, coi,
                     outcome.describe())
            view = await self._final_after_cancel(coi, outcome, view.order_index)
            if view is None or not view.is_final:
                self._pause(f"A's order {coi} (written ahead) still rests after a cancel")
        log.info("event=maker.order_resolved market=%s client_order_index=%d status=%s filled=%s", self.symbol,
                 coi, view.status, view.filled_base)
        self.store.close_maker_order(self.symbol)

    async def _probe_never_taken(self, record: dict) -> bool:
        """Its nonce was used, but by this order or by another tx with the same nonce (a fence also
        in doubt)? A cancel by its client index tells: the venue refuses one naming no active or
        pending order (21600) - and a taken order is one of those until it ends, when it is listed."""
        coi = int(record["client_order_index"])
        if record.get("probed"):
            return False
        outcome = await self.client.cancel(self.market.market_index, coi)
        log.info("event=maker.order_probe market=%s client_order_index=%d outcome=%s", self.symbol, coi,
                 outcome.describe())
        if outcome.accepted:   # it is at the venue (resting or pending): the cancel ends it; it will show
            self.store.open_maker_order(self.symbol, dict(record, probed=True))
            return False
        if outcome.code != errors.NOT_ACTIVE_ORDER:
            return False
        # Not active, not pending: either it never executed, or it ended already - then it is listed.
        return await self.client.order_by_client_index(coi) is None

    async def _final_after_cancel(self, coi: int, outcome, order_index: int) -> OrderView | None:
        """The order's final state after our cancel. A cancel the venue took executes after its speed
        bump - or late, until its ExpiredAt: wait for it (on the stream) rather than give up. A cancel
        in doubt or refused for now is sent again (an answer in doubt fences its nonce: at most one
        of the two is taken)."""
        view = await self._order_final(coi, 5.0)
        for _ in range(3):
            if view is not None and view.is_final or outcome is None or outcome.accepted:
                break
            outcome = await self.client.cancel(self.market.market_index, order_index)
            log.info("event=maker.cancel market=%s client_order_index=%d outcome=%s again=true", self.symbol, coi,
                     outcome.describe())
            view = await self._order_final(coi, 5.0)
        if view is not None and view.is_final or outcome is None or not outcome.accepted:
            return view
        log.warning("event=maker.cancel_pending market=%s client_order_index=%d", self.symbol, coi)
        deadline = time.monotonic() + TX_EXPIRY_BOUND_MS / 1000 + EXPIRY_MARGIN_MS / 1000
        while time.monotonic() < deadline:
            view = await self._order_watch(coi, TAKEN_ORDER_LOOK_S, final=True) or view
            if view is not None and view.is_final:
                break
            if self.feed is None or not self.feed.connected.is_set():
                await asyncio.sleep(ORDER_PENDING_RETRY_S)   # REST only: look again in a while
        return view

    async def _order_watch(self, coi: int, timeout_s: float, final: bool = False) -> OrderView | None:
        """An order the venue took, once it shows (or, with `final`, once it is final): from the
        order stream while it is connected (no request spent), else one REST look."""
        if self.feed is not None and self.feed.connected.is_set():
            view = await self.feed.wait_order(coi, (lambda o: o.is_final) if final else (lambda _: True), timeout_s)
            # A frame lost to a reconnect is not replayed: REST now and then.
            if (view is not None and (view.is_final or not final)) or \
                    time.monotonic() - self._taken_rest_look_s < RESTING_REST_CHECK_S * 3:
                return view
        self._taken_rest_look_s = time.monotonic()
        return await self.client.order_by_client_index(coi)

    def _record_as_leg(self, record: dict) -> Leg:
        """A's order record seen through hedge.leg's rule (the same witness rule as B's legs)."""
        nonce = record.get("nonce")
        leg = Leg(leg=0, client_order_index=int(record["client_order_index"]), is_ask=record.get("side") == SELL,
                  base_int=0, worst_price_int=0, fill_id="", state=LegState.SENT,
                  written_ms=int(record["sent_ms"]), sent_ms=int(record["sent_ms"]),
                  api_key_index=record.get("api_key_index"), nonce=None if nonce is None else int(nonce),
                  expires_by_ms=record.get("expires_by_ms") or int(record["sent_ms"]) + TX_EXPIRY_BOUND_MS,
                  tx_hash=record.get("tx_hash"))
        return leg.taken(record["witness"]) if record.get("witness") else leg

    async def _order_verdict(self, record: dict) -> tuple[Verdict, str]:
        leg = self._record_as_leg(record)
        taker = self.client.nonce_use(leg.nonce) if leg.nonce is not None else None
        ev = Evidence(now_ms=int(time.time() * 1000),
                      tx_known=taker == f"coi={leg.client_order_index}",
                      nonce_taken_by_other=taker if taker not in (None, f"coi={leg.client_order_index}",
                                                                  IN_DOUBT_TAKER) else None)
        res = resolve(leg, ev, NONCE_LAG_MS)
        if res.verdict is Verdict.READ_NONCE:
            assert res.at_ms is not None
            await asyncio.sleep(max(0.0, res.at_ms / 1000 - time.time()))
            read_ms = int(time.time() * 1000)
            ev = Evidence(now_ms=read_ms, tx_known=ev.tx_known, nonce_taken_by_other=ev.nonce_taken_by_other,
                          next_nonce=await self.client.venue_next_nonce(Priority.QUOTE), nonce_read_ms=read_ms)
            res = resolve(leg, ev, NONCE_LAG_MS)
        log.info("event=maker.order_witness market=%s client_order_index=%d nonce=%s verdict=%s why=%r",
                 self.symbol, leg.client_order_index, leg.nonce, res.verdict.value, res.why)
        return res.verdict, res.why

    async def _fence(self, record: dict) -> tuple[Verdict, str]:
        """Take the order's nonce with a harmless tx: the dead-man's scheduled cancel-all, re-armed."""
        nonce = int(record["nonce"])
        self.client.fence(nonce)
        at_ms = int((time.time() + self.cfg.strategy.dead_man_s) * 1000)
        outcome = await self.client.schedule_cancel_all(at_ms)
        taker = self.client.nonce_use(nonce)
        log.info("event=maker.fence market=%s client_order_index=%s nonce=%d outcome=%s taker=%s", self.symbol,
                 record["client_order_index"], nonce, outcome.describe(), taker)
        if outcome.accepted and taker == "coi=0":
            return Verdict.REJECT, f"nonce {nonce} taken by the fence (a scheduled cancel-all)"
        if taker == IN_DOUBT_TAKER:
            # The order or an earlier fence took the nonce: the probe in the caller decides which.
            return Verdict.TAKEN, f"the fence on nonce {nonce} was refused: the nonce was used"
        return Verdict.READ_NONCE, f"the fence on nonce {nonce} answered {outcome.describe()}"

    async def _place(self, order: RestingOrder) -> OrderView | None:
        q = order.quote
        record = {"client_order_index": order.client_order_index, "side": q.side, "base": str(q.base_amount),
                  "price": str(q.price), "reduce_only": q.reduce_only, "sent_ms": int(time.time() * 1000)}
        self.store.open_maker_order(self.symbol, record)

        def on_signed(tx) -> None:   # the witness, written ahead of the wire call
            self.store.open_maker_order(self.symbol, dict(
                record, nonce=tx.nonce, api_key_index=self.client.api_key_index, tx_hash=tx.tx_hash,
                expires_by_ms=tx.expired_at_ms, sent_ms=int(time.time() * 1000)))

        outcome = await self.client.place_limit(self.spec, order.client_order_index, q.side == SELL,
                                                q.base_amount, q.price, self.market.post_only, q.reduce_only,
                                                on_signed=on_signed)
        log.info("event=maker.order market=%s client_order_index=%d side=%s base=%s price=%s reduce_only=%s "
                 "outcome=%s", self.symbol, order.client_order_index, q.side, q.base_amount, q.price,
                 q.reduce_only, outcome.describe())
        if outcome.kind in (errors.REJECTED, errors.RETRYABLE):
            self.store.close_maker_order(self.symbol)  # definitely not at the venue
        if outcome.kind == errors.REJECTED:
            self._pause(f"venue rejected A's order: {outcome.describe()}")
        if outcome.kind == errors.RETRYABLE:
            await asyncio.sleep(1.0)  # a nonce resync or a rate limit: try the round again
            return None
        # Accepted or in doubt: the venue's record of this client_order_index is the truth. It shows
        # after the venue's speed bump (200 ms for a maker order on a Standard account), or later;
        # if not by then, the next round resolves it by its nonce before quoting again.
        view = await self._order_seen(order.client_order_index, ORDER_VISIBLE_S)
        if view is not None:
            order.order_index = view.order_index
            return view
        if outcome.accepted:
            self.store.open_maker_order(self.symbol, dict(self.store.maker_order(self.symbol) or record,
                                                          witness="answered 200"))
        return None

    async def _rest_until_done(self, order: RestingOrder, view: OrderView) -> None:
        """Wait for fills (pushed by the stream) until filled, or cancel at the timeout."""
        deadline = time.monotonic() + self.cfg.strategy.maker_order_timeout_s
        rest_check_at = time.monotonic() + RESTING_REST_CHECK_S
        cancel_outcome = None
        while not view.is_final and order.filled < order.quote.base_amount:
            left_s = deadline - time.monotonic()
            if left_s <= 0 or self.store.paused(self.symbol):
                cancel_outcome = await self.client.cancel(self.market.market_index, view.order_index)
                log.info("event=maker.cancel market=%s client_order_index=%d outcome=%s", self.symbol,
                         order.client_order_index, cancel_outcome.describe())
                break
            order.changed.clear()
            t_wait = time.perf_counter()
            try:
                await asyncio.wait_for(order.changed.wait(), timeout=min(left_s, ORDER_CHECK_INTERVAL_S))
            except asyncio.TimeoutError:
                streamed = self.feed is not None and self.feed.connected.is_set()
                if not streamed or time.monotonic() >= rest_check_at:
                    rest_check_at = time.monotonic() + RESTING_REST_CHECK_S
                    rest_view = await self.client.order_by_client_index(order.client_order_index)
                    if rest_view is not None and (rest_view.is_final or rest_view.filled_base != view.filled_base):
                        if streamed:
                            log.warning("event=maker.stream_behind market=%s client_order_index=%d rest_status=%s "
                                        "rest_filled=%s stream_filled=%s", self.symbol, order.client_order_index,
                                        rest_view.status, rest_view.filled_base, view.filled_base)
                        view = rest_view
                        if order.filled < view.filled_base and self.backfill_now is not None:
                            await self.backfill_now()   # fills the stream did not deliver
            finally:
                self._resting_s += time.perf_counter() - t_wait
            if self.feed is not None and self.feed.connected.is_set() and not view.is_final:
                streamed_view = self.feed.order(order.client_order_index)
                if streamed_view is not None and streamed_view.filled_base >= view.filled_base:
                    view = streamed_view
        final = view if view.is_final else await self._final_after_cancel(order.client_order_index, cancel_outcome,
                                                                           view.order_index)
        if final is None or not final.is_final:
            self._pause(f"A's order {order.client_order_index} did not reach a final state after cancel")
        # A fill that raced the cancel still arrives over the stream: wait until we have them all,
        # asking REST once if the stream has not delivered them.
        if order.filled < final.filled_base and self.backfill_now is not None:
            await self.backfill_now()
        deadline = time.monotonic() + FILLS_ARRIVE_TIMEOUT_S
        while order.filled < final.filled_base and time.monotonic() < deadline:
            order.changed.clear()
            try:
                await asyncio.wait_for(order.changed.wait(), timeout=deadline - time.monotonic())
            except asyncio.TimeoutError:
                break
        log.info("event=maker.order_done market=%s client_order_index=%d status=%s filled=%s fills=%d",
                 self.symbol, order.client_order_index, final.status, final.filled_base, len(order.fill_ids))
        if order.filled != final.filled_base:
            self._pause(f"A's order {order.client_order_index} filled {final.filled_base} but the stream "
                        f"reported {order.filled}")

    async def _wait_hedges(self) -> None:
        """Until every hedge of this market has a result, or the ledger shows everything covered.

        A task whose worker died is redelivered only after the broker's visibility timeout; the
        restarted worker hedges the market at once, and then that task has nothing left to do.
        """
        t0 = time.perf_counter()
        try:
            await self._wait_hedges_inner()
        finally:
            self._hedge_wait_s += time.perf_counter() - t0
        # "Every hedge done" holds only in the ledger they were counted in: no next order of A after
        # Redis lost it (LedgerLostError ends the maker; its restart reconciles with the venue).
        self.store.check_generation()

    async def _wait_hedges_inner(self) -> None:
        # An empty in-flight set means "all hedged" only in the ledger the hedges were counted in.
        self.store.check_generation()
        deadline = time.monotonic() + self.cfg.strategy.hedge_wait_timeout_s
        while True:
            inflight = sorted(self.store.inflight(self.symbol))
            metrics.INFLIGHT.labels(self.symbol).set(len(inflight))
            if not inflight:
                self.dispatcher.hedges_done(self.symbol)
                return
            task_id = inflight[0]
            left_s = deadline - time.monotonic()
            if left_s <= 0:
                taken = self._taken_legs()
                if not taken:
                    self._pause(f"hedge {task_id} has no result after {self.cfg.strategy.hedge_wait_timeout_s:.0f}s")
                # A leg the venue took executes late or expires (its ExpiredAt bounds this): keep waiting.
                log.warning("event=maker.hedge_waits_on_taken_leg market=%s task_id=%s legs=%s", self.symbol,
                            task_id, ",".join(taken))
                deadline = time.monotonic() + COVERAGE_CHECK_S * 5
                left_s = deadline - time.monotonic()
            outcome = await self.dispatcher.wait(task_id, min(left_s, COVERAGE_CHECK_S))
            fill_id = self.dispatcher.fill_of.get(task_id) or _fill_id_of(task_id, self.symbol)
            if outcome.ok:
                self.dispatcher.fill_of.pop(task_id, None)
                log.info("event=maker.hedge_ok fill_id=%s market=%s task_id=%s", fill_id, self.symbol, task_id)
                self.store.clear_inflight(self.symbol, task_id)  # the worker does too; don't race it
            elif outcome.timed_out:
                if self._covered():
                    log.warning("event=maker.hedges_covered market=%s waiting_on=%s", self.symbol, ",".join(inflight))
                    for stale in inflight:
                        self.store.clear_inflight(self.symbol, stale)
                        self.dispatcher.fill_of.pop(stale, None)
                    return
            else:
                log.error("event=maker.hedge_failed fill_id=%s market=%s task_id=%s reason=%s", fill_id,
                          self.symbol, task_id, outcome.reason)
                self.dispatcher.fill_of.pop(task_id, None)
                self._pause(f"hedge {task_id} failed: {outcome.reason}")

    def _taken_legs(self) -> list[str]:
        """Open legs of this market the venue took (or may have) that can still execute."""
        now = int(time.time() * 1000)
        return [f"{leg.leg}({leg.state.name.lower()})" for leg in self.store.ledger(self.symbol).pending
                if leg.expires_by_ms is None or now <= leg.expires_by_ms + EXPIRY_MARGIN_MS]

    def _covered(self) -> bool:
        """Nothing in doubt and nothing orderable left unhedged on this market (at the book's price,
        when the stream has it: below the notional minimum a remainder is dust)."""
        ledger = self.store.ledger(self.symbol)
        unhedged = self.spec.base_from_int(ledger.unhedged)
        book = self.feed.book_prices(self.market.market_index) if self.feed is not None else None
        price = None
        if book is not None:
            levels = book[0] if unhedged > 0 else book[1]   # B sells into bids, buys from asks
            price = levels[0] if levels else None
        return not ledger.pending and not self.spec.is_orderable(unhedged, price)

    # ---- flatten: A's close, sent by the maker (the only sender on A's key) ----------------------

    async def flatten(self, request_id: str) -> CloseResult:
        """Close A on this market for `lighter-hedge flatten`, which paused it first.

        Once the quote loop is at rest (paused: no order of its own resting or on the wire): settle
        an order of A written ahead, cancel A's orders on the market, then one reduce-only market
        order for A's whole position, written ahead like A's other orders. Its fills come over the
        account stream and are hedged by the worker like any fill. The caller bounds the time;
        FlattenError says why it could not close.
        """
        mi = self.market.market_index
        ctx = f"market={self.symbol} request_id={request_id}"
        if self.store.paused(self.symbol) is None:
            raise FlattenError(f"{self.symbol} is not paused")
        self.flattening = True
        try:
            await self.at_rest.wait()
            try:
                await self._resolve_written_order()
            except (OrderPending, Paused) as exc:
                raise FlattenError(f"A's last order on {self.symbol} is not settled yet ({exc})") from None
            cancelled = 0
            for order in await self.client.active_orders(mi):
                outcome = await self.client.cancel(mi, order.order_index)
                log.info("event=maker.flatten_cancel %s client_order_index=%d outcome=%s", ctx,
                         order.client_order_index, outcome.describe())
                view = await self._final_after_cancel(order.client_order_index, outcome, order.order_index)
                if view is None or not view.is_final:
                    raise FlattenError(f"A's order {order.client_order_index} still rests after a cancel")
                cancelled += 1
            before = await self.client.position(mi)   # REST: the venue's word, not a stream frame
            if before == 0:
                log.info("event=maker.flatten_done %s a_position=0 cancelled=%d", ctx, cancelled)
                return CloseResult("A", self.symbol, "maker", True, before, before, cancelled=cancelled)
            order, view = await self._close(before, ctx)
            after = await self.client.position(mi)
            log.info("event=maker.flatten_done %s client_order_index=%d status=%s filled=%s a_before=%s a_after=%s",
                     ctx, order.client_order_index, view.status, view.filled_base, before, after)
            return CloseResult("A", self.symbol, "maker", after == 0, before, after, order.client_order_index,
                               view.status, view.filled_base, cancelled,
                               "" if after == 0 else f"A still holds {after} after its close")
        finally:
            self.flattening = False

    async def _close(self, position: Decimal, ctx: str) -> tuple[RestingOrder, OrderView]:
        """A reduce-only market order for `position`, written ahead; returns once it is final at the
        venue and its fills have reached this loop (so their hedges are enqueued)."""
        is_ask = position > 0
        bids, asks = await self.client.book_prices(self.market.market_index, limit=1)   # the freshest touch
        touch = bids if is_ask else asks
        if not touch:
            raise FlattenError(f"no {'bid' if is_ask else 'ask'} on {self.symbol} to close A's {position} into")
        worst = worst_price_int(touch[0], is_ask, self.cfg.strategy.max_slippage_bps, self.spec)
        order = RestingOrder(client_order_index=self._next_client_order_index(),
                             quote=Quote(SELL if is_ask else BUY, abs(position), self.spec.price_from_int(worst), True))
        q = order.quote
        record = {"client_order_index": order.client_order_index, "side": q.side, "base": str(q.base_amount),
                  "price": str(q.price), "reduce_only": True, "sent_ms": int(time.time() * 1000)}
        self.store.open_maker_order(self.symbol, record)

        def on_signed(tx) -> None:   # the witness, written ahead of the wire call
            self.store.open_maker_order(self.symbol, dict(
                record, nonce=tx.nonce, api_key_index=self.client.api_key_index, tx_hash=tx.tx_hash,
                expires_by_ms=tx.expired_at_ms, sent_ms=int(time.time() * 1000)))

        self.resting = order   # its fills count here as they arrive, as for a quote
        try:
            outcome = await self.client.close_market(self.spec, order.client_order_index, is_ask, q.base_amount,
                                                     worst, on_signed=on_signed)
            log.info("event=maker.flatten_close %s client_order_index=%d side=%s base=%s worst_price=%s outcome=%s",
                     ctx, order.client_order_index, q.side, q.base_amount, q.price, outcome.describe())
            if outcome.kind in (errors.REJECTED, errors.RETRYABLE):
                self.store.close_maker_order(self.symbol)   # definitely not at the venue
                raise FlattenError(f"the venue refused A's close of {position}: {outcome.describe()}")
            view = await self._order_final(order.client_order_index, CLOSE_FINAL_TIMEOUT_S)
            if view is None or not view.is_final:
                if outcome.accepted:
                    self.store.open_maker_order(self.symbol, dict(self.store.maker_order(self.symbol) or record,
                                                                  witness="answered 200"))
                raise FlattenError(f"A's close {order.client_order_index} is not final after "
                                   f"{CLOSE_FINAL_TIMEOUT_S:.0f}s ({outcome.describe()}); the maker settles it "
                                   f"before it quotes again - flatten again then")
            order.order_index = view.order_index
            self.store.close_maker_order(self.symbol)
            await self._fills_arrive(order, view.filled_base)
            return order, view
        finally:
            self.resting = None

    async def _fills_arrive(self, order: RestingOrder, filled: Decimal) -> None:
        """Until the stream has delivered `filled` of this order (REST backfill once if it lags)."""
        for backfill in (False, True):
            if backfill and self.backfill_now is not None:
                await self.backfill_now()
            deadline = time.monotonic() + FILLS_ARRIVE_TIMEOUT_S
            while order.filled < filled and time.monotonic() < deadline:
                order.changed.clear()
                try:
                    await asyncio.wait_for(order.changed.wait(), timeout=deadline - time.monotonic())
                except asyncio.TimeoutError:
                    break
            if order.filled >= filled:
                return
        raise FlattenError(f"A's order {order.client_order_index} filled {filled} but the stream reported "
                           f"{order.filled}")

    def _next_client_order_index(self) -> int:
        # Unique for centuries without shared state: milliseconds * 16 + a per-process counter.
        self._seq = (self._seq + 1) % 16
        return (int(time.time() * 1000) * 16 + self._seq) % MAX_CLIENT_ORDER_INDEX + 1


def _fill_id_of(task_id: str, symbol: str) -> str:
    """hedge-<market>-<fill_id>[-again-<ms>][-r<n>] -> fill_id (tasks enqueued by an earlier maker, the
    worker, or a requeue under a new id)."""
    base = requeue_base(task_id)
    rest = base.removeprefix(f"hedge-{symbol}-")
    return rest.split("-again-")[0] if rest != base else "unknown"
