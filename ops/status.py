"""What `lighter-hedge status` shows, per market, from the venue and Redis."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

import lighter

from hedge.config import Config
from tasks.store import Store
from venue.client import read_positions


async def venue_view(cfg: Config) -> tuple[dict[int, dict[int, Decimal]], dict[int, int], str | None]:
    """Positions of A and B, and each market's size_decimals, without any key."""
    api_client = lighter.ApiClient(configuration=lighter.Configuration(host=cfg.base_url))
    try:
        account_api, order_api = lighter.AccountApi(api_client), lighter.OrderApi(api_client)
        positions = {i: await read_positions(account_api, i)
                     for i in (cfg.account_a.account_index, cfg.account_b.account_index)}
        details = await order_api.order_book_details()
        decimals = {int(d.market_id): int(d.size_decimals) for d in details.order_book_details or []}
        return positions, decimals, None
    except Exception as exc:  # status must still show Redis state when the venue is down
        return {}, {}, f"{type(exc).__name__}: {exc}"
    finally:
        await api_client.close()


async def collect(cfg: Config, store: Store, markets: list[str]) -> list[dict[str, Any]]:
    positions, decimals, venue_error = await venue_view(cfg)
    a_index, b_index = cfg.account_a.account_index, cfg.account_b.account_index
    rows = []
    for symbol in markets:
        m = cfg.market(symbol)
        a = positions[a_index].get(m.market_index, Decimal(0)) if positions else None
        b = positions[b_index].get(m.market_index, Decimal(0)) if positions else None
        size_decimals = decimals.get(m.market_index)
        ledger = store.ledger(symbol)

        def base(units: int) -> Decimal | str:
            return Decimal(units).scaleb(-size_decimals) if size_decimals is not None else f"{units} units"

        pause = store.paused(symbol)
        state = store.state(symbol) or {}
        stats = store.stats(symbol)
        failed = store.failed(symbol)
        last = store.last_latency(symbol)
        rows.append({
            "market": symbol,
            "state": "PAUSED" if pause else state.get("state", "unknown"),
            "a_position": a if a is not None else "unknown",
            "b_position": b if b is not None else "unknown",
            "net_exposure": (a + b) if a is not None else "unknown",
            # What the ledger has not covered: below min_base_amount it is dust, carried to the next hedge.
            "unhedged": base(ledger.unhedged),
            "in_flight_base": base(ledger.in_flight),
            "legs_in_doubt": len(ledger.pending),
            "inflight_hedges": len(store.inflight(symbol)),
            "failed": len(failed),
            "paused": bool(pause),
            "rounds": stats.get("rounds", 0),
            "fills": stats.get("fills", 0),
            "hedges": stats.get("hedges", 0),
            "last_hedge_fill_id": last.get("fill_id", "-"),
            "last_fill_to_sent_ms": last.get("fill_to_sent_ms") or "-",
            "last_fill_to_confirmed_ms": last.get("fill_to_confirmed_ms") or "-",
            "venue_error": venue_error,
            "pause_reason": pause.get("reason") if pause else None,
            "failed_hedges": failed,
        })
    return rows
