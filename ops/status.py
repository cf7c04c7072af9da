"""What `lighter-hedge status` shows, per market, from the venue and Redis, and the request budget.

The venue reads (A's and B's positions, the markets' decimals) count in the request budget A and B
share, as READ by process `cli`. A status waits up to STATUS_BUDGET_WAIT_MS for room; `--watch`
only for its first view: after that, when the budget is busy, it shows the last positions it read,
saying when, rather than take room from the maker and the worker.
"""
from __future__ import annotations

import time
from decimal import Decimal
from typing import Any

import lighter
import redis

from hedge.budget import Priority
from hedge.config import Config
from tasks.store import Store
from venue.budget import BudgetWaitTimeout, RequestBudget
from venue.client import read_positions

CLI_PROCESS = "cli"          # the CLI's name in the request budget (status, flatten, demo)
STATUS_BUDGET_WAIT_MS = 10_000


class VenueCache:
    """The last venue view `status --watch` read: reused while the budget has no room."""

    def __init__(self) -> None:
        self.positions: dict[int, dict[int, Decimal]] = {}
        self.decimals: dict[int, int] = {}
        self.read_at: float | None = None


async def venue_view(cfg: Config, budget: RequestBudget | None = None,
                     max_wait_ms: int | None = STATUS_BUDGET_WAIT_MS, cache: VenueCache | None = None,
                     ) -> tuple[dict[int, dict[int, Decimal]], dict[int, int], str | None]:
    """Positions of A and B, and each market's size_decimals, without any key. With a `cache`
    holding a view already, no wait for the budget: the cached view is shown instead."""
    if cache is not None and cache.read_at is not None:
        max_wait_ms = 0

    async def read(endpoint: str, call):
        if budget is not None:
            await budget.acquire(endpoint, Priority.READ, CLI_PROCESS, max_wait_ms)
        return await call()

    api_client = lighter.ApiClient(configuration=lighter.Configuration(host=cfg.base_url))
    try:
        account_api, order_api = lighter.AccountApi(api_client), lighter.OrderApi(api_client)
        positions = {i: await read("account", lambda i=i: read_positions(account_api, i))
                     for i in (cfg.account_a.account_index, cfg.account_b.account_index)}
        if cache is not None and cache.decimals:
            decimals = cache.decimals   # they do not change: one read less per refresh
        else:
            details = await read("orderBookDetails", order_api.order_book_details)
            decimals = {int(d.market_id): int(d.size_decimals) for d in details.order_book_details or []}
        if cache is not None:
            cache.positions, cache.decimals, cache.read_at = positions, decimals, time.time()
        return positions, decimals, None
    except BudgetWaitTimeout as exc:
        if cache is not None and cache.read_at is not None:
            return cache.positions, cache.decimals, (
                f"{exc}; positions as read at {time.strftime('%H:%M:%S', time.localtime(cache.read_at))}")
        return {}, {}, str(exc)
    except Exception as exc:  # status must still show Redis state when the venue is down
        return {}, {}, f"{type(exc).__name__}: {exc}"
    finally:
        await api_client.close()


def budget_view(budget: RequestBudget | None) -> dict[str, Any]:
    """The request budget's rolling window (hedge.budget.Usage.to_json), or the error reading it."""
    if budget is None:
        return {"error": "no request budget"}
    try:
        return budget.usage().to_json()
    except redis.RedisError as exc:
        return {"error": f"{type(exc).__name__}: {exc}"}


async def collect(cfg: Config, store: Store, markets: list[str], budget: RequestBudget | None = None,
                  max_wait_ms: int | None = STATUS_BUDGET_WAIT_MS,
                  cache: VenueCache | None = None) -> list[dict[str, Any]]:
    positions, decimals, venue_error = await venue_view(cfg, budget, max_wait_ms, cache)
    budget_now = budget_view(budget)
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
            # Task messages refused before anything traded (malformed, forged, unknown market): of
            # the whole deployment, the same in every row.
            "refused_messages": store.refused(),
            "budget": budget_now,   # one per deployment: the same in every market's row
        })
    return rows


def budget_line(view: dict[str, Any]) -> str:
    """The budget as one key=value line for the status table."""
    if "error" in view:
        return f"budget error={view['error']!r}"
    weighted = view["unit"] == "weight"
    by_process = ",".join(f"{p}:{u['weight'] if weighted else u['requests']}" for p, u in view["by_process"].items()
                          if u["requests"])
    refused = ",".join(f"{p}:{u['http_429']}" for p, u in view["by_process"].items() if u["http_429"])
    limit = "none" if view["limit"] is None else view["limit"]
    return (f"budget tier={view['tier']} used={view['used']} limit={limit} unit={view['unit']} "
            f"window_s={view['window_ms'] / 1000:g} hedge_reserve={view['hedge_reserve']} "
            f"by_process={by_process or '-'} http_429={view['http_429']} http_429_by_process={refused or '-'} "
            f"backoff_ms={view['backoff_left_ms']}")
