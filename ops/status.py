"""What `lighter-hedge status` shows, per market, from the venue and Redis."""
from __future__ import annotations

from decimal import Decimal
from typing import Any

from hedge.config import Config
from tasks.store import Store
from venue.client import public_positions


async def collect(cfg: Config, store: Store, markets: list[str]) -> list[dict[str, Any]]:
    a_index, b_index = cfg.account_a.account_index, cfg.account_b.account_index
    try:
        positions = await public_positions(cfg.base_url, [a_index, b_index])
        venue_error = ""
    except Exception as exc:  # status must still show Redis state when the venue is down
        positions, venue_error = {}, f"{type(exc).__name__}: {exc}"
    rows = []
    for symbol in markets:
        m = cfg.market(symbol)
        a = positions.get(a_index, {}).get(m.market_index) if positions else None
        b = positions.get(b_index, {}).get(m.market_index) if positions else None
        a = a if a is not None else (Decimal(0) if positions else None)
        b = b if b is not None else (Decimal(0) if positions else None)
        pause = store.paused(symbol)
        state = store.state(symbol) or {}
        stats = store.stats(symbol)
        rows.append({
            "market": symbol,
            "state": "PAUSED" if pause else state.get("state", "unknown"),
            "a_position": a if a is not None else "unknown",
            "b_position": b if b is not None else "unknown",
            "net_exposure": (a + b) if a is not None and b is not None else "unknown",
            "dust_units": store.dust(symbol),
            "inflight_hedges": len(store.inflight(symbol)),
            "failed": len(store.failed(symbol)),
            "paused": bool(pause),
            "rounds": stats.get("rounds", 0),
            "fills": stats.get("fills", 0),
            "hedges": stats.get("hedges", 0),
            "venue_error": venue_error or None,
            "pause_reason": pause.get("reason") if pause else None,
            "failed_hedges": store.failed(symbol),
        })
    return rows
