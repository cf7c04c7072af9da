"""`lighter-hedge flatten`: cancel A's orders and close A and B with reduce-only market orders.

The market is paused first (the maker stops quoting). A's close reaches the maker's stream
like any fill; whichever of the maker or this command records it first, the ledger counts it
once. B's close is a ledger leg written ahead like a hedge, so A+B, the ledger and the venue
agree afterwards, and a crash in the middle is resolved like any hedge left in doubt.

Its requests count in the request budget A and B share, as process `cli`: the closes as HEDGE
(market orders that take exposure off), the cancels as QUOTE, the reads as READ.
"""
from __future__ import annotations

import asyncio
import logging
import time
from decimal import Decimal

from hedge.config import Config, MarketConfig
from hedge.fill import BUY, SELL, Fill, signed
from hedge.leg import TX_EXPIRY_BOUND_MS, Leg
from hedge.plan import MAX_CLIENT_ORDER_INDEX, worst_price_int
from ops.status import CLI_PROCESS
from tasks.store import Store, now_ms
from venue.budget import budget_from_config
from venue.client import VenueClient, fill_trades_of_order
from venue.keys import private_key

log = logging.getLogger("ops.flatten")
SETTLE_TIMEOUT_S = 60.0


async def flatten(cfg: Config, store: Store, symbols: list[str], echo) -> bool:
    budget = budget_from_config(cfg, store.r)
    a = await VenueClient.open(cfg.base_url, cfg.account_a, private_key(cfg, cfg.account_a), chain_id=cfg.chain_id,
                               budget=budget, process=CLI_PROCESS)
    b = await VenueClient.open(cfg.base_url, cfg.account_b, private_key(cfg, cfg.account_b), chain_id=cfg.chain_id,
                               budget=budget, process=CLI_PROCESS)
    ok = True
    try:
        for symbol in symbols:
            ok = await _flatten_market(cfg, store, cfg.market(symbol), a, b, echo) and ok
    finally:
        await a.close()
        await b.close()
    return ok


async def _flatten_market(cfg: Config, store: Store, market: MarketConfig, a: VenueClient, b: VenueClient,
                          echo) -> bool:
    symbol, mi = market.symbol, market.market_index
    spec = await a.market_spec(mi)
    store.pause(symbol, "flattened by operator", by="flatten")
    for order in await a.active_orders(mi):
        outcome = await a.cancel(mi, order.order_index)
        echo(f"market={symbol} cancel A order_index={order.order_index} {outcome.describe()}")
    await _wait_no_hedges(store, symbol)

    position = await a.position(mi)
    if position != 0:
        coi = (now_ms() * 16) % MAX_CLIENT_ORDER_INDEX + 1
        order = await _close(cfg, a, spec, position, coi)
        for trade in fill_trades_of_order(await a.trades(mi, 100), order.order_index) if order else []:
            fill = Fill.from_message({"fill_id": trade["trade_id"], "market_index": mi,
                                      "side": SELL if position > 0 else BUY, "base_amount": trade["size"],
                                      "price": trade["price"], "order_index": order.order_index,
                                      "client_order_index": coi, "ts_exchange_ms": trade.get("timestamp") or 0,
                                      "ts_seen_ms": now_ms()})
            store.record_fill(symbol, fill.to_message(), spec.base_to_int(signed(fill.side, fill.base_amount)))
        echo(f"market={symbol} close A {position} -> {order.status if order else 'not found'}")
    await _wait_no_hedges(store, symbol)  # the maker may have hedged A's close already

    position = await a.positions(cfg.account_b.account_index)
    b_position = position.get(mi, Decimal(0))
    if b_position != 0:
        is_ask = b_position > 0
        # Written ahead like a hedge leg, so the worker resolves it if the close is left in doubt.
        leg, _ = store.open_leg_checked(symbol, Leg(
            leg=0, client_order_index=0, is_ask=is_ask, base_int=spec.base_to_int(abs(b_position)),
            worst_price_int=0, fill_id="flatten", written_ms=now_ms(),
            expires_by_ms=now_ms() + TX_EXPIRY_BOUND_MS), mi, limit_per_minute=10**9)
        assert leg is not None
        order = await _close(cfg, b, spec, b_position, leg.client_order_index)
        if order is not None and order.is_final:
            store.close_leg(symbol, leg.executed(order.status, order.order_index,
                                                 spec.base_to_int(order.filled_base), str(order.filled_quote)))
        echo(f"market={symbol} close B {b_position} -> {order.status if order else 'in doubt (the worker resolves it)'}")

    a_after = await a.position(mi)
    b_after = (await a.positions(cfg.account_b.account_index)).get(mi, Decimal(0))
    echo(f"market={symbol} flattened a_position={_num(a_after)} b_position={_num(b_after)} "
         f"net_exposure={_num(a_after + b_after)} (paused: resume to trade again)")
    return a_after == 0 and b_after == 0


async def _close(cfg: Config, client: VenueClient, spec, position: Decimal, coi: int):
    is_ask = position > 0
    bids, asks = await client.book_prices(spec.market_index, limit=1)
    best = (bids if is_ask else asks) or (asks if is_ask else bids)
    if not best:
        raise RuntimeError(f"no price on {spec.symbol} to close {position} at")
    worst = worst_price_int(best[0], is_ask, cfg.strategy.max_slippage_bps, spec)
    outcome = await client.place_market(spec, coi, is_ask, abs(position), worst, reduce_only=True)
    log.info("event=flatten.order account=%d market=%s client_order_index=%d %s", client.account_index,
             spec.symbol, coi, outcome.describe())
    if outcome.kind in ("rejected", "retryable"):
        raise RuntimeError(f"venue refused the close of {position} on account {client.account_index}: "
                           f"{outcome.describe()}")
    return await client.wait_order_final(coi, 10.0)


async def _wait_no_hedges(store: Store, symbol: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while store.inflight(symbol) or store.ledger(symbol).pending:
        if time.monotonic() > deadline:
            raise RuntimeError(f"hedges still in flight on {symbol} after {SETTLE_TIMEOUT_S:.0f}s; "
                               f"check `lighter-hedge status` and the worker")
        await asyncio.sleep(0.2)


def _num(value: Decimal) -> str:
    return "0" if value == 0 else str(value)
