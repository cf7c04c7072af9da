"""Hedging on account B: whatever of A's fills is not yet covered, on the fill's market.

Cumulative, not per event: `unhedged = A filled - B executed`, from the ledger in Redis. The task
of one fill hedges everything unhedged on its market at that moment, so the tasks of fills that
arrived meanwhile find nothing left (fewer taker orders, the same exposure), and a replayed fill
or a re-run task cannot hedge twice.

Every B order ("leg", hedge.leg.Leg) is written ahead before the wire call with a
client_order_index derived from its ledger sequence number and the nonce it is signed with. A leg
whose fate is unknown (crash, timeout, 5xx, or taken but not executed yet) is resolved by the
nonce-witnessed rule (hedge.leg.resolve), never by sending again blind and never on elapsed time
alone: the venue lists it -> settle; the venue took it -> wait until it executes or its ExpiredAt
passes; its nonce has not moved -> the next leg is signed with that same nonce (a fence: the venue
takes at most one of the two). Nothing else is sent on the market while a leg there is open.
"""
from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal
from typing import Any

import aiohttp
import lighter
import redis

from hedge.config import Config, ConfigError
from hedge.fill import Fill, InvalidFill, signed
from hedge.leg import NONCE_MOVED, TX_EXPIRY_BOUND_MS, Evidence, Leg, LegState, OrderSeen, Verdict, resolve
from hedge.money import MarketSpec
from hedge.plan import (LedgerHint, b_position_problem, fill_bound_problem, leg_client_order_index, speculative_split,
                        split_hedge, worst_price_int)
from hedge.price_bound import PriceBound
from tasks import display, metrics
from tasks.store import BeginHedge, LegIf, Store, now_ms
from venue import errors
from venue.client import IN_DOUBT_TAKER, OrderView, SignedTx, VenueClient
from venue.feed import VenueFeed, order_final

log = logging.getLogger("tasks.hedge")

MAX_LEGS_PER_TASK = 10     # partial fills in one task before we stop and fail loudly
CONFIRM_TIMEOUT_S = 10.0   # a market order settles after the venue's taker delay (~300 ms)
IN_DOUBT_LOOK_S = 1.0      # a leg whose answer was lost: how long B's order stream is watched before the nonce decides
TAKEN_LOOK_S = 1.0         # a leg the venue took: how long one attempt watches B's order stream for it
TAKEN_REST_LOOK_S = 30.0   # and how often it is read over REST meanwhile (at once the first time)
LEG_WAIT_RETRY_S = 2.0     # then the task steps aside (the worker hedges other markets) and looks again
NONCE_LAG_MS = 1_000       # Lighter's nextNonce shows a taken tx only later (the SDK waits 350 ms)


class TransientHedgeError(Exception):
    """Retry with Celery's backoff: the venue may accept later (5xx, timeout, 429, nonce, slippage)."""


class PermanentHedgeError(Exception):
    """Fail at once: retrying cannot help (bad fill, unknown market, venue's definite reject)."""


class RefusedMessageError(PermanentHedgeError):
    """A task message that is not a fill of a configured market: nothing was traded. Recorded as
    refused (not failed): it never halts a market, and re-running it cannot help."""


class LedgerGoneError(RefusedMessageError):
    """Redis lost the ledger this task's fill was counted in (tasks.store.LedgerLostError): the task
    stopped without sending anything more. The maker's reconcile at start measures A+B at the venue
    and hedges what is left; re-running this message cannot help."""


class LegPendingError(Exception):
    """A leg the venue took (or may still take) has not executed yet. Not a failure: the task looks
    again in `retry_in_s` without spending one of its retries; the leg's ExpiredAt bounds the wait."""

    def __init__(self, message: str, retry_in_s: float = LEG_WAIT_RETRY_S):
        super().__init__(message)
        self.retry_in_s = retry_in_s


# Retried like TransientHedgeError: a Redis or venue-read hiccup anywhere in a hedge. Safe,
# because every order's intent is written ahead and a retry resolves it before sending anything.
RETRY_ON = (TransientHedgeError, redis.ConnectionError, redis.TimeoutError, aiohttp.ClientError,
            asyncio.TimeoutError, lighter.ApiException)


def market_symbol(cfg: Config, fill_msg: Any) -> str:
    try:
        return cfg.market_by_index(int(fill_msg["market_index"])).symbol
    except (ConfigError, KeyError, TypeError, ValueError):
        return "unknown"


async def hedge_one(cfg: Config, store: Store, client: VenueClient, fill_msg: Any, attempt: int,
                    hint_msg: Any = None, feed: VenueFeed | None = None,
                    price: PriceBound | None = None) -> dict[str, Any]:
    """`price`: an operator's bound on B's worst price (a requeue with --max-slippage-bps, signed with
    the fill); None: A's fill price +- strategy.max_slippage_bps."""
    try:
        fill = Fill.from_message(fill_msg)
        market = cfg.market_by_index(fill.market_index)
    except (InvalidFill, ConfigError) as exc:
        raise RefusedMessageError(f"refused fill message: {exc}") from None
    symbol = market.symbol
    ctx = f"fill_id={fill.fill_id} market={symbol}"
    bound = price or PriceBound(fill.price, cfg.strategy.max_slippage_bps)
    if bound.overridden:
        log.info("event=hedge.price_bound %s b_side=%s ref_price=%s max_slippage_bps=%s", ctx, bound.b_side,
                 bound.ref_price, bound.max_slippage_bps)
    if problem := fill_bound_problem(fill.base_amount, market.max_position_base, market.max_unhedged_base):
        raise PermanentHedgeError(f"{problem}; nothing counted or sent; {ctx}")
    spec = await client.market_spec(fill.market_index)
    sent: list[Leg] = []
    # Counted once whoever records it first (the maker; or this task on a requeue after a wipe);
    # the same round trip reads the ledger, and may open the first leg (see _begin).
    begun, signed_tx = await _begin(cfg, store, client, spec, symbol, fill, LedgerHint.from_message(hint_msg), bound)
    ledger = begun.ledger
    if begun.rate_limited:
        _rate_limited(cfg, store, symbol, begun.rate_count, ctx)
    if begun.leg is not None:
        sent.append(await _send_leg(cfg, store, client, spec, symbol, fill, begun.leg, signed_tx, ctx, "early",
                                    feed, bound=bound))
        ledger = store.ledger(symbol)

    while True:
        fence_nonce = None
        if ledger.pending:
            # Raises LegPendingError while a leg the venue took has not executed; returns the nonce
            # to sign the next leg with when the only open legs are to be fenced.
            fence_nonce = await _resolve_open_legs(cfg, store, client, spec, symbol, ledger.pending, ctx, feed)
            ledger = store.ledger(symbol)
        unhedged = spec.base_from_int(ledger.unhedged)
        split = split_hedge(unhedged, spec, _worst_price(spec, bound, unhedged))
        if split.order_signed == 0:
            if ledger.pending:   # fenced, but nothing left to hedge with the fence: its expiry closes it
                raise LegPendingError(f"{len(ledger.pending)} leg(s) on {symbol} wait for their ExpiredAt; {ctx}",
                                      retry_in_s=10.0)
            break
        if len(sent) >= MAX_LEGS_PER_TASK:
            raise PermanentHedgeError(f"still unhedged after {MAX_LEGS_PER_TASK} hedge orders; {ctx}")
        if problem := b_position_problem(spec.base_from_int(ledger.hedged), split.order_signed, market.max_position_base):
            raise PermanentHedgeError(f"{problem}; {ctx}")
        if bound.overridden and bound.b_side != split.b_side:
            raise PermanentHedgeError(f"the operator's price bound was set from the book for a B {bound.b_side}, "
                                      f"but the hedge is now a B {split.b_side}: nothing sent; requeue again; {ctx}")
        sent.append(await _open_and_send_leg(cfg, store, client, spec, symbol, fill, split, ctx, feed,
                                             fence_nonce, ledger.pending, bound))
        ledger = store.ledger(symbol)

    metrics.UNHEDGED.labels(symbol).set(float(spec.base_from_int(ledger.unhedged)))
    metrics.HEDGES.labels(symbol, "hedged" if sent else "covered").inc()
    result = _result(fill, spec, sent, ledger.unhedged, attempt)
    log.info("event=hedge.done %s legs=%d filled_base=%s avg_price=%s unhedged_after=%s attempts=%d latency_ms=%d",
             ctx, len(sent), result["filled_base"], result["avg_price"], result["unhedged_after"], attempt,
             result["latency_ms"])
    store.publish_event({"event": "hedge.done", "market": symbol, **result})
    return result


def _worst_price(spec: MarketSpec, bound: PriceBound, unhedged_signed: Decimal) -> Decimal:
    """B's worst acceptable price for hedging `unhedged_signed` (A bought: B sells), as a price."""
    return spec.price_from_int(worst_price_int(bound.ref_price, unhedged_signed > 0, bound.max_slippage_bps, spec))


async def _begin(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str, fill: Fill,
                 hint: LedgerHint | None, bound: PriceBound) -> tuple[BeginHedge, SignedTx | None]:
    """Count the fill and read the ledger in one round trip.

    When the maker's hint says what the hedge will be (hedge.plan.speculative_split), the order is
    signed while that round trip is in flight, and the same script opens its leg only if the ledger
    still equals the hint: signing (milliseconds) no longer waits for Redis. Otherwise, or if the
    ledger moved, the signature is thrown away (its nonce given back) and the hedge is decided on
    the ledger read back, as always.
    """
    units = spec.base_to_int(signed(fill.side, fill.base_amount))
    split = None
    if hint is not None:
        hinted = spec.base_from_int(hint.a_filled - hint.hedged)
        split = speculative_split(hint, store.fills_seen.get(symbol), spec, _worst_price(spec, bound, hinted))
        if split is not None and bound.overridden and bound.b_side != split.b_side:
            split = None   # decided (and refused) on the ledger read back
        if split is not None and b_position_problem(spec.base_from_int(hint.hedged), split.order_signed,
                                                    cfg.market_by_index(fill.market_index).max_position_base):
            split = None   # decided (and refused) on the ledger read back
    if split is None:
        return store.send_begin_hedge(symbol, fill.to_message(), units).result(), None
    assert hint is not None and hint.leg_seq is not None
    leg_no = hint.leg_seq + 1
    nonce = await client.take_nonce()   # local: recorded in the write-ahead before anything is signed
    leg = _leg_record(spec, client, fill, bound, split, nonce, leg_no,
                      leg_client_order_index(fill.market_index, leg_no))
    call = store.send_begin_hedge(symbol, fill.to_message(), units,
                                  LegIf(hint, leg, cfg.strategy.max_hedges_per_minute))
    signed_tx = None
    try:
        signed_tx = await client.sign_market(spec, leg.client_order_index, leg.is_ask,
                                             spec.base_from_int(leg.base_int), leg.worst_price_int, nonce=nonce)
        begun = call.result()
    except BaseException:
        call.close()
        client.give_back_nonce(nonce)
        raise
    if begun.leg is None:
        client.discard(signed_tx)
        log.info("event=hedge.ledger_moved %s hint_fills=%d fills=%d", f"fill_id={fill.fill_id} market={symbol}",
                 hint.fills, begun.fills)
        return begun, None
    return begun, signed_tx


def _leg_record(spec: MarketSpec, client: VenueClient, fill: Fill, bound: PriceBound, split, nonce: int,
                leg_no: int = 0, client_order_index: int = 0) -> Leg:
    written_ms = now_ms()
    return Leg(leg=leg_no, client_order_index=client_order_index, is_ask=split.b_is_ask,
               base_int=spec.base_to_int(abs(split.order_signed)),
               worst_price_int=worst_price_int(bound.ref_price, split.b_is_ask, bound.max_slippage_bps, spec),
               fill_id=fill.fill_id, state=LegState.WRITTEN, written_ms=written_ms,
               api_key_index=client.api_key_index, nonce=nonce,
               # The signer sets ExpiredAt to about now + 599 s: the tx can never execute after this.
               expires_by_ms=written_ms + TX_EXPIRY_BOUND_MS)


def _rate_limited(cfg: Config, store: Store, symbol: str, count: int, ctx: str) -> None:
    limit = cfg.strategy.max_hedges_per_minute
    reason = f"max_hedges_per_minute={limit} exceeded on {symbol} ({count} in the last minute)"
    store.pause(symbol, reason, by="worker")
    raise TransientHedgeError(f"{reason}; {ctx}")


async def _open_and_send_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                             fill: Fill, split, ctx: str, feed: VenueFeed | None, fence_nonce: int | None,
                             open_legs: list[Leg], bound: PriceBound) -> Leg:
    # Rate limit and write-ahead in one atomic step: the leg (with its nonce) is stored before the
    # wire call. A fence takes the nonce of the open legs it fences instead of the next one.
    if fence_nonce is not None:
        client.fence(fence_nonce)
    nonce = await client.take_nonce()
    leg, count = store.open_leg_checked(symbol, _leg_record(spec, client, fill, bound, split, nonce), fill.market_index,
                                        cfg.strategy.max_hedges_per_minute)
    if leg is None:
        client.give_back_nonce(nonce)
        _rate_limited(cfg, store, symbol, count, ctx)
    if fence_nonce is not None:
        log.info("event=hedge.fence %s leg=%d nonce=%d fences_legs=%s", ctx, leg.leg, nonce,
                 ",".join(str(other.leg) for other in open_legs if other.nonce == fence_nonce))
    signed_tx = await client.sign_market(spec, leg.client_order_index, leg.is_ask,
                                         spec.base_from_int(leg.base_int), leg.worst_price_int, nonce=nonce)
    return await _send_leg(cfg, store, client, spec, symbol, fill, leg, signed_tx, ctx, "after_read", feed,
                           open_legs, bound)


async def _send_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                    fill: Fill, leg: Leg, signed_tx: SignedTx, ctx: str, signed_when: str,
                    feed: VenueFeed | None = None, open_legs: list[Leg] = (), bound: PriceBound | None = None) -> Leg:
    """Send a leg already written ahead and signed; settle it on the venue's final word.

    signed_when: "early" (signed while the ledger was read back) or "after_read". `open_legs`: the
    market's other open legs when it was opened (those it may fence; none on the early path).
    """
    log.info("event=hedge.sending %s leg=%d client_order_index=%d nonce=%s side=%s base=%s worst_price=%s "
             "signed=%s", ctx, leg.leg, leg.client_order_index, leg.nonce, "sell" if leg.is_ask else "buy",
             spec.base_from_int(leg.base_int), spec.price_from_int(leg.worst_price_int), signed_when)
    t0 = time.perf_counter()
    sent_ms = now_ms()
    outcome = await client.send_signed(signed_tx)
    send_ms = (time.perf_counter() - t0) * 1000
    sent_s = metrics.since_us(fill.ts_seen_us)
    log.info("event=hedge.sent %s leg=%d client_order_index=%d send_ms=%.1f fill_to_sent_ms=%s outcome=%s",
             ctx, leg.leg, leg.client_order_index, send_ms, "-" if sent_s is None else f"{sent_s * 1000:.2f}",
             outcome.kind)
    metrics.HEDGE_ORDERS.labels(symbol, outcome.kind).inc()
    if outcome.kind == errors.ACCEPTED:
        # Taken, not yet executed (the venue's speed bump): whatever else it fenced can never execute.
        leg = leg.sent(sent_ms, signed_tx.tx_hash, signed_tx.expired_at_ms).taken("answered 200", outcome.tx_hash or None)
        store.update_leg(symbol, leg)
        _nonce_taken(store, client, leg)
        _close_fenced(store, symbol, leg, ctx, open_legs)
        if sent_s is not None:
            metrics.FILL_TO_HEDGE_SENT.labels(symbol).observe(sent_s)
        # B's order stream says when the order executed (the venue's taker delay); REST only as fallback.
        order = await order_final(feed, client, leg.client_order_index, CONFIRM_TIMEOUT_S)
        if order is None or not order.is_final:
            raise LegPendingError(f"hedge order {leg.client_order_index} taken, not executed within "
                                  f"{CONFIRM_TIMEOUT_S}s; {ctx}")
        leg = _settle(store, spec, symbol, leg, order)   # its fenced siblings were closed when it was taken
        confirmed_s = metrics.since_us(fill.ts_seen_us)
        if confirmed_s is not None:
            metrics.FILL_TO_HEDGE_CONFIRMED.labels(symbol).observe(confirmed_s)
        store.note_latency(symbol, fill.fill_id, None if sent_s is None else sent_s * 1000,
                           None if confirmed_s is None else confirmed_s * 1000)
        log.info("event=hedge.leg %s leg=%d client_order_index=%d status=%s executed=%s fill_to_confirmed_ms=%s",
                 ctx, leg.leg, leg.client_order_index, leg.status, spec.base_from_int(leg.executed_int),
                 "-" if confirmed_s is None else f"{confirmed_s * 1000:.2f}")
        if leg.executed_int == 0:
            bound = bound or PriceBound(fill.price, cfg.strategy.max_slippage_bps)
            whose = " (the operator's bound, from the book)" if bound.overridden else ""
            raise TransientHedgeError(
                f"hedge order {leg.client_order_index} filled nothing (status {leg.status}) within "
                f"max_slippage_bps={bound.max_slippage_bps} of {bound.ref_price}{whose}; {ctx}")
        return leg
    if outcome.kind == errors.IN_DOUBT:
        store.update_leg(symbol, leg.sent(sent_ms, signed_tx.tx_hash, signed_tx.expired_at_ms))
        log.warning("event=hedge.in_doubt %s leg=%d client_order_index=%d nonce=%s %s", ctx, leg.leg,
                    leg.client_order_index, leg.nonce, outcome.describe())
        raise TransientHedgeError(f"hedge order {leg.client_order_index} in doubt: {outcome.message}; {ctx}")
    # Refused before the venue took it: this leg never executes.
    fenced_taken = outcome.code == errors.INVALID_NONCE and client.nonce_use(leg.nonce) == IN_DOUBT_TAKER
    store.close_leg(symbol, leg.rejected(outcome.describe()))
    if fenced_taken:
        # This leg fenced an earlier one; the venue says that one was taken: it executes or expires.
        for other in store.ledger(symbol).pending:
            if other.nonce == leg.nonce and other.state is not LegState.TAKEN:
                store.update_leg(symbol, other.taken(NONCE_MOVED))
                log.warning("event=hedge.fenced_leg_taken %s leg=%d client_order_index=%d nonce=%s", ctx,
                            other.leg, other.client_order_index, other.nonce)
        raise LegPendingError(f"an earlier hedge order with nonce {leg.nonce} was taken; {ctx}", retry_in_s=0.5)
    if outcome.kind == errors.RETRYABLE:
        log.warning("event=hedge.retryable %s leg=%d %s", ctx, leg.leg, outcome.describe())
        raise TransientHedgeError(f"venue refused for now: {outcome.describe()}; {ctx}")
    log.error("event=hedge.rejected %s leg=%d %s", ctx, leg.leg, outcome.describe())
    raise PermanentHedgeError(f"venue rejected the hedge: {outcome.describe()}; {ctx}")


def _nonce_taken(store: Store, client: VenueClient, leg: Leg) -> None:
    """The venue surely took this leg's tx: its nonce is spent, and any other tx with it never executes."""
    if leg.nonce is None or leg.api_key_index != client.api_key_index:
        return
    taker = f"coi={leg.client_order_index}"
    client.note_nonce_used(leg.nonce, taker)
    store.note_nonce_taker(client.account_index, client.api_key_index, leg.nonce, taker)


def _close_fenced(store: Store, symbol: str, taker: Leg, ctx: str, open_legs: list[Leg]) -> None:
    """The venue took `taker` with its nonce: every other open leg signed with that nonce never can.
    `open_legs`: the market's open legs as the caller last read them (a closed one is skipped by
    close_leg), so the hot path reads no ledger for this."""
    for other in open_legs:
        if other.leg != taker.leg and other.nonce == taker.nonce and other.api_key_index == taker.api_key_index:
            if store.close_leg(symbol, other.rejected(f"nonce {taker.nonce} taken by leg {taker.leg}")):
                log.info("event=hedge.resolved %s leg=%d client_order_index=%d state=REJECTED why=%r", ctx,
                         other.leg, other.client_order_index, f"fenced by leg {taker.leg}")


async def _resolve_open_legs(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                             legs: list[Leg], ctx: str, feed: VenueFeed | None) -> int | None:
    """Apply hedge.leg.resolve to every open leg of the market.

    Returns the nonce to fence with when every leg still open is to be fenced (all with that one
    nonce); raises LegPendingError while any leg the venue took has not executed or expired.
    """
    fence: set[int] = set()
    waiting: list[str] = []
    for leg in legs:
        verdict = await _resolve_leg(cfg, store, client, spec, symbol, leg, legs, ctx, feed)
        if verdict is Verdict.FENCE:
            fence.add(leg.nonce)
        elif verdict in (Verdict.WAIT, Verdict.TAKEN):
            waiting.append(f"leg {leg.leg} ({leg.client_order_index})")
    if waiting:
        raise LegPendingError(f"{', '.join(waiting)} taken by the venue, not executed yet; {ctx}")
    if len(fence) > 1:   # two different nonces in doubt: fence the lower first, one per attempt
        return min(fence)
    return next(iter(fence), None)


async def _resolve_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                       leg: Leg, open_legs: list[Leg], ctx: str, feed: VenueFeed | None) -> Verdict:
    coi = leg.client_order_index
    # The tx by hash: for a leg the venue took, a failure at execution shows nowhere else (asked on
    # the REST cadence). A leg merely in doubt is decided by its nonce instead: one read fewer.
    ask_venue = False
    if leg.state is LegState.TAKEN:
        order, ask_venue = await _watch_taken(feed, client, coi)
    elif feed is not None and feed.connected.is_set():
        # B's order stream shows it if it executed; if a frame was lost, the nonce still says "taken".
        order = await feed.wait_order(coi, lambda o: o.is_final, IN_DOUBT_LOOK_S)
    else:
        order = await client.order_by_client_index(coi)
    ev = await _evidence(store, client, leg, open_legs, order, ask_venue)
    res = resolve(leg, ev, NONCE_LAG_MS)
    if res.verdict is Verdict.READ_NONCE:
        assert res.at_ms is not None
        await asyncio.sleep(max(0.0, (res.at_ms - now_ms()) / 1000))
        read_ms = now_ms()
        ev = Evidence(now_ms=read_ms, order=ev.order, tx_failed=ev.tx_failed, tx_known=ev.tx_known,
                      nonce_taken_by_other=ev.nonce_taken_by_other,
                      next_nonce=await client.venue_next_nonce(), nonce_read_ms=read_ms)
        res = resolve(leg, ev, NONCE_LAG_MS)
    verdict = res.verdict
    if verdict is Verdict.SETTLE:
        assert order is not None
        leg = _settle(store, spec, symbol, leg, order)
        _nonce_taken(store, client, leg)
        _close_fenced(store, symbol, leg, ctx, open_legs)
    elif verdict is Verdict.TAKEN:
        witness = ("listed" if order is not None else "known by hash" if ev.tx_known
                   else NONCE_MOVED if ev.next_nonce is not None else "taken")
        leg = leg.taken(witness)
        store.update_leg(symbol, leg)
        if leg.surely_taken:
            _nonce_taken(store, client, leg)
        elif leg.nonce is not None and leg.api_key_index == client.api_key_index:
            client.note_nonce_used(leg.nonce)   # someone took it: never sign with it again
    elif verdict is Verdict.REJECT:
        store.close_leg(symbol, leg.rejected(res.why))
    elif verdict is Verdict.EXPIRE:
        store.close_leg(symbol, leg.expired(res.why))
    log.info("event=hedge.resolved %s leg=%d client_order_index=%d nonce=%s verdict=%s why=%r", ctx, leg.leg,
             coi, leg.nonce, verdict.value, res.why)
    return verdict


_taken_rest_look_s: dict[int, float] = {}   # client_order_index -> when a taken leg was last read over REST


async def _watch_taken(feed: VenueFeed | None, client: VenueClient, coi: int) -> tuple[OrderView | None, bool]:
    """A leg the venue took shows on B's order stream when it executes (seconds to minutes): watch
    the stream briefly (the solo worker has other markets to hedge); REST only now and then, for a
    frame lost to a reconnect - a late leg must not become REST polling on a 60-a-minute budget.
    Returns the order (or None) and whether REST was asked this time."""
    if feed is not None and feed.connected.is_set():
        view = await feed.wait_order(coi, lambda o: o.is_final, TAKEN_LOOK_S)
        if view is not None and view.is_final:
            return view, False
        # The first look in this process asks REST at once: the leg may have gone final before this
        # process subscribed (a restarted worker), and the stream never shows that again.
        last = _taken_rest_look_s.get(coi)
        if feed.connected.is_set() and last is not None and time.monotonic() - last < TAKEN_REST_LOOK_S:
            return view, False
    _taken_rest_look_s[coi] = time.monotonic()
    while len(_taken_rest_look_s) > 1000:
        _taken_rest_look_s.pop(next(iter(_taken_rest_look_s)))
    return await client.order_by_client_index(coi), True


async def _evidence(store: Store, client: VenueClient, leg: Leg, open_legs: list[Leg],
                    order: OrderView | None, ask_venue: bool = True) -> Evidence:
    seen = OrderSeen.NOT_SEEN if order is None else OrderSeen.FINAL if order.is_final else OrderSeen.ACTIVE
    tx_failed, tx_known, taken_by_other, nonce_used = None, False, None, False
    if seen is OrderSeen.NOT_SEEN and leg.nonce is not None and leg.api_key_index == client.api_key_index:
        taker = client.nonce_use(leg.nonce) or store.nonce_taker(client.account_index, client.api_key_index,
                                                                  leg.nonce)
        if taker == f"coi={leg.client_order_index}":
            tx_known = True
        elif taker == IN_DOUBT_TAKER:   # a fence was refused "invalid nonce": a tx in doubt took it
            nonce_used = True
        elif taker is not None:
            taken_by_other = taker
        for other in open_legs:   # a sibling signed with the same nonce that the venue took
            if other.leg != leg.leg and other.nonce == leg.nonce and other.surely_taken:
                taken_by_other = f"leg {other.leg}"
    if seen is OrderSeen.NOT_SEEN and leg.tx_hash and taken_by_other is None and ask_venue:
        status = await client.tx_status(leg.tx_hash)
        if status is not None:
            code, info = status
            if code == 0:
                tx_failed = info or "failed"
            else:
                tx_known = True
    if nonce_used and leg.nonce is not None:
        sent_ms = leg.sent_ms if leg.sent_ms is not None else leg.written_ms
        return Evidence(now_ms=now_ms(), order=seen, tx_failed=tx_failed, nonce_taken_by_other=taken_by_other,
                        next_nonce=leg.nonce + 1, nonce_read_ms=sent_ms + NONCE_LAG_MS)
    return Evidence(now_ms=now_ms(), order=seen, tx_failed=tx_failed, tx_known=tx_known,
                    nonce_taken_by_other=taken_by_other)


def _settle(store: Store, spec: MarketSpec, symbol: str, leg: Leg, order: OrderView) -> Leg:
    leg = leg.executed(order.status, order.order_index, spec.base_to_int(order.filled_base), str(order.filled_quote))
    store.close_leg(symbol, leg)
    return leg


def _result(fill: Fill, spec: MarketSpec, sent: list[Leg], unhedged_after: int,
            attempt: int) -> dict[str, Any]:
    filled_int = sum(leg.executed_int for leg in sent)
    quote = sum((Decimal(leg.filled_quote) for leg in sent), Decimal(0))
    avg = (quote / spec.base_from_int(filled_int)).quantize(spec.price_step) if filled_int else None
    finished_ms = now_ms()
    b_side = ("sell" if sent[0].is_ask else "buy") if sent else None
    return {
        "fill_id": fill.fill_id,
        "market": spec.symbol,
        "a_side": fill.side,
        "b_side": b_side,
        "b_order": [{"client_order_index": leg.client_order_index, "order_index": leg.order_index,
                     "status": leg.status, "filled_base": str(spec.base_from_int(leg.executed_int))}
                    for leg in sent],
        "side": b_side,   # B's side, as before b_side existed (kept for readers of older results)
        "filled_base": str(spec.base_from_int(filled_int)),
        "avg_price": str(avg) if avg is not None else None,
        # Nothing sent: an earlier task already hedged this fill together with others.
        "covered_by_earlier_hedge": not sent,
        "unhedged_after": str(spec.base_from_int(unhedged_after)),
        "attempts": attempt,
        "latency_ms": max(0, finished_ms - fill.ts_seen_ms),
        "finished_at": display.iso_ms(finished_ms),
    }
