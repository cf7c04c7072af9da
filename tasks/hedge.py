"""Hedging on account B: whatever of A's fills is not yet covered, on the fill's market.

Cumulative, not per event: `unhedged = A filled - B executed - B in flight`, from the ledger
in Redis. The task of one fill hedges everything unhedged on its market at that moment, so
the tasks of fills that arrived meanwhile find nothing left (fewer taker orders, the same
exposure), and a replayed fill or a re-run task cannot hedge twice.

Every B order ("leg") is written ahead before the wire call with a client_order_index derived
from its ledger sequence number; a leg left in doubt (crash, timeout, 5xx) is resolved by
asking the venue for that index, never by sending again blind, and nothing new is sent on the
market while any leg there is in doubt.
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
from hedge.money import MarketSpec
from hedge.plan import LedgerHint, leg_client_order_index, speculative_split, split_hedge, worst_price_int
from tasks import metrics
from tasks.store import BeginHedge, LegIf, Store, now_ms
from venue import errors
from venue.client import OrderView, SignedTx, VenueClient
from venue.feed import VenueFeed, order_final

log = logging.getLogger("tasks.hedge")

MAX_LEGS_PER_TASK = 10     # partial fills in one task before we stop and fail loudly
CONFIRM_TIMEOUT_S = 10.0   # a market order settles after the venue's taker delay (~300 ms)
IN_DOUBT_GRACE_S = 2.0     # after this long from sending, an order the venue does not know never arrived


class TransientHedgeError(Exception):
    """Retry with Celery's backoff: the venue may accept later (5xx, timeout, 429, nonce, slippage)."""


class PermanentHedgeError(Exception):
    """Fail at once: retrying cannot help (bad fill, unknown market, venue's definite reject)."""


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
                    hint_msg: Any = None, feed: VenueFeed | None = None) -> dict[str, Any]:
    try:
        fill = Fill.from_message(fill_msg)
        symbol = cfg.market_by_index(fill.market_index).symbol
    except (InvalidFill, ConfigError) as exc:
        raise PermanentHedgeError(f"refused fill message: {exc}") from None
    spec = await client.market_spec(fill.market_index)
    ctx = f"fill_id={fill.fill_id} market={symbol}"
    sent: list[dict[str, Any]] = []
    # Counted once whoever records it first (the maker; or this task on a requeue after a wipe);
    # the same round trip reads the ledger, and may open the first leg (see _begin).
    begun, signed_tx = await _begin(cfg, store, client, spec, symbol, fill, LedgerHint.from_message(hint_msg))
    ledger = begun.ledger
    if begun.rate_limited:
        _rate_limited(cfg, store, symbol, begun.rate_count, ctx)
    if begun.leg is not None:
        sent.append(await _send_leg(cfg, store, client, spec, symbol, fill, begun.leg, signed_tx, ctx, "early",
                                    feed))
    elif ledger.pending:
        for leg in ledger.pending:
            await _resolve_in_doubt(store, client, spec, symbol, leg, ctx, feed)
        ledger = store.ledger(symbol)

    while True:
        if sent:
            ledger = store.ledger(symbol)
        if ledger.pending:
            raise TransientHedgeError(f"{len(ledger.pending)} hedge leg(s) still in doubt on {symbol}; {ctx}")
        split = split_hedge(spec.base_from_int(ledger.unhedged), spec)
        if split.order_signed == 0:
            break
        if len(sent) >= MAX_LEGS_PER_TASK:
            raise PermanentHedgeError(f"still unhedged after {MAX_LEGS_PER_TASK} hedge orders; {ctx}")
        sent.append(await _open_and_send_leg(cfg, store, client, spec, symbol, fill, split, ctx, feed))

    if sent:
        ledger = store.ledger(symbol)
    metrics.UNHEDGED.labels(symbol).set(float(spec.base_from_int(ledger.unhedged)))
    metrics.HEDGES.labels(symbol, "hedged" if sent else "covered").inc()
    result = _result(fill, spec, sent, ledger.unhedged, attempt)
    log.info("event=hedge.done %s legs=%d filled_base=%s avg_price=%s unhedged_after=%s attempts=%d latency_ms=%d",
             ctx, len(sent), result["filled_base"], result["avg_price"], result["unhedged_after"], attempt,
             result["latency_ms"])
    store.publish_event({"event": "hedge.done", "market": symbol, **result})
    return result


async def _begin(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str, fill: Fill,
                 hint: LedgerHint | None) -> tuple[BeginHedge, SignedTx | None]:
    """Count the fill and read the ledger in one round trip.

    When the maker's hint says what the hedge will be (hedge.plan.speculative_split), the order is
    signed while that round trip is in flight, and the same script opens its leg only if the ledger
    still equals the hint: signing (milliseconds) no longer waits for Redis. Otherwise, or if the
    ledger moved, the signature is thrown away (its nonce given back) and the hedge is decided on
    the ledger read back, as always.
    """
    units = spec.base_to_int(signed(fill.side, fill.base_amount))
    split = speculative_split(hint, store.fills_seen.get(symbol), spec)
    if split is None:
        return store.send_begin_hedge(symbol, fill.to_message(), units).result(), None
    assert hint is not None and hint.leg_seq is not None
    leg_no = hint.leg_seq + 1
    leg = _leg_record(cfg, spec, fill, split, leg_no, leg_client_order_index(fill.market_index, leg_no))
    call = store.send_begin_hedge(symbol, fill.to_message(), units,
                                  LegIf(hint, leg, cfg.strategy.max_hedges_per_minute))
    signed_tx = None
    try:
        signed_tx = await client.sign_market(spec, leg["client_order_index"], leg["is_ask"],
                                             spec.base_from_int(leg["base_int"]), leg["worst_price_int"])
        begun = call.result()
    except BaseException:
        call.close()
        if signed_tx is not None:
            client.discard(signed_tx)
        raise
    if begun.leg is None:
        client.discard(signed_tx)
        log.info("event=hedge.ledger_moved %s hint_fills=%d fills=%d", f"fill_id={fill.fill_id} market={symbol}",
                 hint.fills, begun.fills)
        return begun, None
    return begun, signed_tx


def _leg_record(cfg: Config, spec: MarketSpec, fill: Fill, split, leg_no: int | None = None,
                client_order_index: int | None = None) -> dict[str, Any]:
    leg: dict[str, Any] = {
        "is_ask": split.b_is_ask, "base_int": spec.base_to_int(abs(split.order_signed)),
        "worst_price_int": worst_price_int(fill.price, split.b_is_ask, cfg.strategy.max_slippage_bps, spec),
        "sent_ms": now_ms(), "fill_id": fill.fill_id}
    if leg_no is not None:
        leg.update(leg=leg_no, client_order_index=client_order_index, state="PENDING")
    return leg


def _rate_limited(cfg: Config, store: Store, symbol: str, count: int, ctx: str) -> None:
    limit = cfg.strategy.max_hedges_per_minute
    reason = f"max_hedges_per_minute={limit} exceeded on {symbol} ({count} in the last minute)"
    store.pause(symbol, reason, by="worker")
    raise TransientHedgeError(f"{reason}; {ctx}")


async def _open_and_send_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                             fill: Fill, split, ctx: str, feed: VenueFeed | None) -> dict[str, Any]:
    # Rate limit and write-ahead in one atomic step: the leg is PENDING in Redis before the wire call.
    leg, count = store.open_leg_checked(symbol, _leg_record(cfg, spec, fill, split), fill.market_index,
                                        cfg.strategy.max_hedges_per_minute)
    if leg is None:
        _rate_limited(cfg, store, symbol, count, ctx)
    signed_tx = await client.sign_market(spec, leg["client_order_index"], leg["is_ask"],
                                         spec.base_from_int(leg["base_int"]), leg["worst_price_int"])
    return await _send_leg(cfg, store, client, spec, symbol, fill, leg, signed_tx, ctx, "after_read", feed)


async def _send_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                    fill: Fill, leg: dict[str, Any], signed_tx: SignedTx, ctx: str, signed_when: str,
                    feed: VenueFeed | None = None) -> dict[str, Any]:
    """Send a leg already written ahead (PENDING) and signed; settle it on the venue's final word.

    signed_when: "early" (signed while the ledger was read back) or "after_read".
    """
    b_is_ask = leg["is_ask"]
    log.info("event=hedge.sending %s leg=%d client_order_index=%d side=%s base=%s worst_price=%s signed=%s", ctx,
             leg["leg"], leg["client_order_index"], "sell" if b_is_ask else "buy",
             spec.base_from_int(leg["base_int"]), spec.price_from_int(leg["worst_price_int"]), signed_when)
    t0 = time.perf_counter()
    outcome = await client.send_signed(signed_tx)
    leg["send_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    sent_s = metrics.since_us(fill.ts_seen_us)
    log.info("event=hedge.sent %s leg=%d client_order_index=%d send_ms=%.1f fill_to_sent_ms=%s outcome=%s",
             ctx, leg["leg"], leg["client_order_index"], leg["send_ms"],
             "-" if sent_s is None else f"{sent_s * 1000:.2f}", outcome.kind)
    metrics.HEDGE_ORDERS.labels(symbol, outcome.kind).inc()
    if outcome.kind == errors.ACCEPTED:
        if sent_s is not None:
            metrics.FILL_TO_HEDGE_SENT.labels(symbol).observe(sent_s)
        # B's order stream says when the order executed (the venue's taker delay); REST only as fallback.
        order = await order_final(feed, client, leg["client_order_index"], CONFIRM_TIMEOUT_S)
        if order is None or not order.is_final:
            store.update_leg(symbol, leg)
            raise TransientHedgeError(f"hedge order {leg['client_order_index']} not confirmed within "
                                      f"{CONFIRM_TIMEOUT_S}s; {ctx}")
        leg = _settle(store, spec, symbol, leg, order)
        confirmed_s = metrics.since_us(fill.ts_seen_us)
        if confirmed_s is not None:
            metrics.FILL_TO_HEDGE_CONFIRMED.labels(symbol).observe(confirmed_s)
        store.note_latency(symbol, fill.fill_id, None if sent_s is None else sent_s * 1000,
                           None if confirmed_s is None else confirmed_s * 1000)
        log.info("event=hedge.leg %s leg=%d client_order_index=%d status=%s executed=%s fill_to_confirmed_ms=%s",
                 ctx, leg["leg"], leg["client_order_index"], leg["status"], spec.base_from_int(leg["executed_int"]),
                 "-" if confirmed_s is None else f"{confirmed_s * 1000:.2f}")
        if leg["executed_int"] == 0:
            raise TransientHedgeError(
                f"hedge order {leg['client_order_index']} filled nothing (status {leg['status']}) within "
                f"max_slippage_bps={cfg.strategy.max_slippage_bps} of {fill.price}; {ctx}")
        return leg
    leg["venue"] = outcome.describe()
    if outcome.kind == errors.IN_DOUBT:
        store.update_leg(symbol, leg)  # stays pending: the next attempt asks the venue
        log.warning("event=hedge.in_doubt %s leg=%d client_order_index=%d %s", ctx, leg["leg"],
                    leg["client_order_index"], outcome.describe())
        raise TransientHedgeError(f"hedge order {leg['client_order_index']} in doubt: {outcome.message}; {ctx}")
    store.void_leg(symbol, leg)
    if outcome.kind == errors.RETRYABLE:
        log.warning("event=hedge.retryable %s leg=%d %s", ctx, leg["leg"], outcome.describe())
        raise TransientHedgeError(f"venue refused for now: {outcome.describe()}; {ctx}")
    log.error("event=hedge.rejected %s leg=%d %s", ctx, leg["leg"], outcome.describe())
    raise PermanentHedgeError(f"venue rejected the hedge: {outcome.describe()}; {ctx}")


async def _resolve_in_doubt(store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                            leg: dict[str, Any], ctx: str, feed: VenueFeed | None = None) -> None:
    coi = leg["client_order_index"]
    grace_left_s = leg["sent_ms"] / 1000 + IN_DOUBT_GRACE_S - time.time()
    order = await order_final(feed, client, coi, max(0.0, grace_left_s))
    if order is not None and not order.is_final:
        order = await order_final(feed, client, coi, CONFIRM_TIMEOUT_S)
    if order is None:
        store.void_leg(symbol, leg)
        state, status, executed = "VOID", "not-found", 0
    elif order.is_final:
        leg = _settle(store, spec, symbol, leg, order)
        state, status, executed = "DONE", leg["status"], leg["executed_int"]
    else:
        raise TransientHedgeError(f"hedge order {coi} still {order.status} at the venue; {ctx}")
    log.info("event=hedge.resolved %s leg=%d client_order_index=%d state=%s status=%s executed=%s", ctx,
             leg["leg"], coi, state, status, spec.base_from_int(executed))


def _settle(store: Store, spec: MarketSpec, symbol: str, leg: dict[str, Any], order: OrderView) -> dict[str, Any]:
    executed = spec.base_to_int(order.filled_base)
    leg = dict(leg, status=order.status, order_index=order.order_index, executed_int=executed,
               filled_quote=str(order.filled_quote))
    store.settle_leg(symbol, leg, executed if leg["is_ask"] else -executed)
    return leg


def _result(fill: Fill, spec: MarketSpec, sent: list[dict[str, Any]], unhedged_after: int,
            attempt: int) -> dict[str, Any]:
    filled_int = sum(leg["executed_int"] for leg in sent)
    quote = sum((Decimal(leg["filled_quote"]) for leg in sent), Decimal(0))
    avg = (quote / spec.base_from_int(filled_int)).quantize(spec.price_step) if filled_int else None
    return {
        "fill_id": fill.fill_id,
        "b_order": [{"client_order_index": leg["client_order_index"], "order_index": leg.get("order_index"),
                     "status": leg.get("status"), "filled_base": str(spec.base_from_int(leg["executed_int"]))}
                    for leg in sent],
        "side": ("sell" if sent[0]["is_ask"] else "buy") if sent else None,
        "filled_base": str(spec.base_from_int(filled_int)),
        "avg_price": str(avg) if avg is not None else None,
        # Nothing sent: an earlier task already hedged this fill together with others.
        "covered_by_earlier_hedge": not sent,
        "unhedged_after": str(spec.base_from_int(unhedged_after)),
        "attempts": attempt,
        "latency_ms": max(0, now_ms() - fill.ts_seen_ms),
    }
