"""The hedge of one fill on account B: write-ahead, send, confirm, hedge any remainder.

Exactly-once in effect: each leg's client_order_index derives from the fill id, its intent
is stored before the wire call, and a leg left in doubt (a crash, a timeout) is resolved by
asking the venue for that index, never by sending again blind.
"""
from __future__ import annotations

import logging
import time
from decimal import Decimal
from typing import Any

from hedge.config import Config, ConfigError
from hedge.fill import Fill, InvalidFill, signed
from hedge.money import MarketSpec
from hedge.plan import hedge_client_order_index, split_hedge, worst_price_int
from tasks.store import Store, now_ms
from venue import errors
from venue.client import OrderView, VenueClient

log = logging.getLogger("tasks.hedge")

MAX_LEGS = 10              # partial fills of one hedge before we stop and fail loudly
CONFIRM_TIMEOUT_S = 10.0   # a market order settles after the venue's taker delay (~300 ms)
IN_DOUBT_GRACE_S = 2.0     # after this long from sending, an order the venue does not know never arrived


class TransientHedgeError(Exception):
    """Retry with Celery's backoff: the venue may accept later (5xx, timeout, 429, nonce, slippage)."""


class PermanentHedgeError(Exception):
    """Fail at once: retrying cannot help (bad fill, unknown market, venue's definite reject)."""


def market_symbol(cfg: Config, fill_msg: Any) -> str:
    try:
        return cfg.market_by_index(int(fill_msg["market_index"])).symbol
    except (ConfigError, KeyError, TypeError, ValueError):
        return "unknown"


async def hedge_one(cfg: Config, store: Store, client: VenueClient, fill_msg: Any, attempt: int) -> dict[str, Any]:
    try:
        fill = Fill.from_message(fill_msg)
        symbol = cfg.market_by_index(fill.market_index).symbol
    except (InvalidFill, ConfigError) as exc:
        raise PermanentHedgeError(f"refused fill message: {exc}") from None
    spec = await client.market_spec(fill.market_index)
    ctx = f"fill_id={fill.fill_id} market={symbol}"

    record = store.get_hedge(symbol, fill.fill_id)
    if record and record.get("state") == "DONE":
        log.info("event=hedge.already_done %s", ctx)
        return record["result"]
    if record is None:
        fill_signed = spec.base_to_int(signed(fill.side, fill.base_amount))
        record = store.open_hedge(symbol, fill.fill_id, fill_signed, lambda total: _split_int(total, spec))
        log.info("event=hedge.opened %s side=%s base=%s price=%s dust_in=%s target=%s", ctx, fill.side,
                 fill.base_amount, fill.price, spec.base_from_int(record["dust_in"]),
                 spec.base_from_int(record["target_signed"]))

    for leg in record["legs"]:
        if leg["state"] == "PENDING":
            await _resolve_in_doubt(client, spec, leg, ctx)
            store.put_hedge(symbol, record)

    target = record["target_signed"]
    b_is_ask = target > 0  # A bought -> B sells
    target_abs = abs(target)
    min_int = spec.base_to_int(spec.min_base_amount)
    while target_abs - _executed(record) >= max(min_int, 1):
        if len(record["legs"]) >= MAX_LEGS:
            raise PermanentHedgeError(f"hedge still short after {MAX_LEGS} orders; {ctx}")
        await _send_leg(cfg, store, client, spec, symbol, fill, record, b_is_ask,
                        target_abs - _executed(record), ctx)

    leftover_abs = target_abs - _executed(record)
    leftover_signed = leftover_abs if target > 0 else -leftover_abs
    result = _result(fill, spec, record, attempt)
    record["result"] = result
    store.close_hedge(symbol, record, leftover_signed)
    log.info("event=hedge.done %s filled_base=%s avg_price=%s attempts=%d latency_ms=%d dust_out=%s",
             ctx, result["filled_base"], result["avg_price"], attempt, result["latency_ms"],
             spec.base_from_int(leftover_signed))
    store.publish_event({"event": "hedge.done", "market": symbol, **result})
    return result


async def _send_leg(cfg: Config, store: Store, client: VenueClient, spec: MarketSpec, symbol: str,
                    fill: Fill, record: dict[str, Any], b_is_ask: bool, amount_int: int, ctx: str) -> None:
    leg_no = len(record["legs"])
    coi = hedge_client_order_index(fill.market_index, fill.fill_id, leg_no)
    worst = worst_price_int(fill.price, b_is_ask, cfg.strategy.max_slippage_bps, spec)
    leg = {"leg": leg_no, "client_order_index": coi, "is_ask": b_is_ask, "base_int": amount_int,
           "worst_price_int": worst, "state": "PENDING", "sent_ms": now_ms(), "executed_int": 0}
    record["legs"].append(leg)
    store.put_hedge(symbol, record)  # write-ahead: intent is durable before the wire call
    log.info("event=hedge.sending %s leg=%d client_order_index=%d side=%s base=%s worst_price=%s",
             ctx, leg_no, coi, "sell" if b_is_ask else "buy", spec.base_from_int(amount_int),
             spec.price_from_int(worst))
    t0 = time.perf_counter()
    outcome = await client.place_market(spec, coi, b_is_ask, spec.base_from_int(amount_int), worst)
    leg["send_ms"] = round((time.perf_counter() - t0) * 1000, 3)
    if outcome.kind == errors.ACCEPTED:
        order = await client.wait_order_final(coi, CONFIRM_TIMEOUT_S)
        _settle(leg, spec, order)
        store.put_hedge(symbol, record)
        log.info("event=hedge.leg %s leg=%d client_order_index=%d status=%s executed=%s", ctx, leg_no, coi,
                 leg.get("status"), spec.base_from_int(leg["executed_int"]))
        if leg["state"] == "PENDING":
            raise TransientHedgeError(f"hedge order {coi} not confirmed within {CONFIRM_TIMEOUT_S}s; {ctx}")
        if leg["executed_int"] == 0:
            raise TransientHedgeError(
                f"hedge order {coi} filled nothing (status {leg.get('status')}) within "
                f"max_slippage_bps={cfg.strategy.max_slippage_bps} of {fill.price}; {ctx}")
        return
    leg["venue"] = outcome.describe()
    if outcome.kind == errors.IN_DOUBT:
        store.put_hedge(symbol, record)  # stays PENDING: the next attempt asks the venue
        log.warning("event=hedge.in_doubt %s leg=%d client_order_index=%d %s", ctx, leg_no, coi, outcome.describe())
        raise TransientHedgeError(f"hedge order {coi} in doubt: {outcome.message}; {ctx}")
    leg["state"] = "VOID"
    store.put_hedge(symbol, record)
    if outcome.kind == errors.RETRYABLE:
        log.warning("event=hedge.retryable %s leg=%d %s", ctx, leg_no, outcome.describe())
        raise TransientHedgeError(f"venue refused for now: {outcome.describe()}; {ctx}")
    log.error("event=hedge.rejected %s leg=%d %s", ctx, leg_no, outcome.describe())
    raise PermanentHedgeError(f"venue rejected the hedge: {outcome.describe()}; {ctx}")


async def _resolve_in_doubt(client: VenueClient, spec: MarketSpec, leg: dict[str, Any], ctx: str) -> None:
    coi = leg["client_order_index"]
    grace_left_s = leg["sent_ms"] / 1000 + IN_DOUBT_GRACE_S - time.time()
    order = await client.wait_order_final(coi, max(0.0, grace_left_s))
    if order is not None and not order.is_final:
        order = await client.wait_order_final(coi, CONFIRM_TIMEOUT_S)
    if order is None:
        leg["state"] = "VOID"  # the venue never saw it: safe to send a new leg
        leg["status"] = "not-found"
    else:
        _settle(leg, spec, order)
    log.info("event=hedge.resolved %s leg=%d client_order_index=%d state=%s status=%s executed=%s", ctx,
             leg["leg"], leg["client_order_index"], leg["state"], leg.get("status"),
             spec.base_from_int(leg["executed_int"]))


def _settle(leg: dict[str, Any], spec: MarketSpec, order: OrderView | None) -> None:
    if order is None or not order.is_final:
        return
    leg["state"] = "DONE"
    leg["status"] = order.status
    leg["order_index"] = order.order_index
    leg["executed_int"] = spec.base_to_int(order.filled_base)
    leg["filled_quote"] = str(order.filled_quote)


def _executed(record: dict[str, Any]) -> int:
    return sum(leg["executed_int"] for leg in record["legs"] if leg["state"] == "DONE")


def _split_int(total_signed: int, spec: MarketSpec) -> tuple[int, int]:
    split = split_hedge(spec.base_from_int(total_signed), spec)
    return spec.base_to_int(split.order_signed), spec.base_to_int(split.dust_signed)


def _result(fill: Fill, spec: MarketSpec, record: dict[str, Any], attempt: int) -> dict[str, Any]:
    done = [leg for leg in record["legs"] if leg["state"] == "DONE" and leg["executed_int"]]
    filled_int = sum(leg["executed_int"] for leg in done)
    quote = sum((Decimal(leg["filled_quote"]) for leg in done), Decimal(0))
    avg = (quote / spec.base_from_int(filled_int)).quantize(spec.price_step) if filled_int else None
    return {
        "fill_id": fill.fill_id,
        "b_order": [{"client_order_index": leg["client_order_index"], "order_index": leg.get("order_index"),
                     "status": leg.get("status"), "filled_base": str(spec.base_from_int(leg["executed_int"]))}
                    for leg in done],
        "side": "sell" if record["target_signed"] > 0 else "buy",
        "filled_base": str(spec.base_from_int(filled_int)),
        "avg_price": str(avg) if avg is not None else None,
        "dust_in": str(spec.base_from_int(record["dust_in"])),
        "attempts": attempt,
        "latency_ms": max(0, now_ms() - fill.ts_seen_ms),
    }
