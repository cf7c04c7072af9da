"""What `lighter-hedge status` shows, per market, from the venue and Redis, and the request budget.

The venue reads (A's and B's positions, the markets' decimals) count in the request budget A and B
share, as READ by process `cli`. A status waits up to STATUS_BUDGET_WAIT_MS for room; `--watch`
only for its first view: after that, when the budget is busy, it shows the last positions it read,
saying when, rather than take room from the maker and the worker.
"""
from __future__ import annotations

import re
import time
from decimal import Decimal
from typing import Any

import lighter
import redis

from hedge.budget import Priority
from hedge.config import Config
from tasks.store import Store, fill_id_of_task, now_ms
from venue.budget import BudgetWaitTimeout, RequestBudget
from venue.client import read_positions

CLI_PROCESS = "cli"          # the CLI's name in the request budget (status, flatten, demo)
STATUS_BUDGET_WAIT_MS = 10_000


class VenueCache:
    """The last venue view `status --watch` read: reused while the budget has no room. With
    `max_age_s` (the console), a view younger than that is shown without reading the venue at all."""

    def __init__(self, max_age_s: float = 0.0) -> None:
        self.positions: dict[int, dict[int, Decimal]] = {}
        self.decimals: dict[int, int] = {}
        self.read_at: float | None = None
        self.max_age_s = max_age_s
        self.fresh_until = 0.0   # time.time() before which the view is shown as is
        self.error: str | None = None   # what the last read said when it failed (with max_age_s)

    def expire(self) -> None:
        """Read the venue at the next view (after an action that changes positions)."""
        self.fresh_until = 0.0


async def venue_view(cfg: Config, budget: RequestBudget | None = None,
                     max_wait_ms: int | None = STATUS_BUDGET_WAIT_MS, cache: VenueCache | None = None,
                     ) -> tuple[dict[int, dict[int, Decimal]], dict[int, int], str | None]:
    """Positions of A and B, and each market's size_decimals, without any key. With a `cache`
    holding a view already, no wait for the budget: the cached view is shown instead."""
    if cache is not None and time.time() < cache.fresh_until:
        return cache.positions, cache.decimals, cache.error
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
            cache.fresh_until, cache.error = cache.read_at + cache.max_age_s, None
        return positions, decimals, None
    except BudgetWaitTimeout as exc:
        if cache is not None and cache.read_at is not None:
            return cache.positions, cache.decimals, (
                f"{exc}; positions as read at {time.strftime('%H:%M:%S', time.localtime(cache.read_at))}")
        return {}, {}, str(exc)
    except Exception as exc:  # status must still show Redis state when the venue is down
        error = f"{type(exc).__name__}: {exc}"
        if cache is not None and cache.max_age_s:   # the console: not asked again before its next refresh
            cache.positions, cache.error, cache.fresh_until = {}, error, time.time() + cache.max_age_s
            return {}, cache.decimals, error
        return {}, {}, error
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
    worker_alive = store.worker_alive()
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
        inflight = store.inflight(symbol)
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
            "inflight_hedges": len(inflight),
            "inflight_oldest_s": inflight_oldest_s(store, symbol, inflight),
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
            # The hedge worker's heartbeat (what the maker's dead-man's switch asks): per deployment.
            "worker_alive": worker_alive,
        })
    return rows


def inflight_oldest_s(store: Store, symbol: str, inflight: set[str]) -> float | None:
    """Seconds since the maker saw the fill of the oldest in-flight hedge (how long A has been
    exposed by it), or None when nothing is in flight or no fill record tells."""
    ages = [age for age in inflight_ages(store, symbol, inflight).values() if age is not None]
    return max(ages) if ages else None


def inflight_ages(store: Store, symbol: str, inflight: set[str]) -> dict[str, float | None]:
    """Each in-flight hedge's seconds since the maker saw its fill (None when no fill record tells)."""
    if not inflight:
        return {}   # the common case: no read of the fill record at all
    fills = store.fills(symbol)
    now = now_ms()
    ages: dict[str, float | None] = {}
    for task_id in inflight:   # hedge-<market>-<fill_id>, or a requeue's hedge-<market>-<fill_id>-r<n>
        fill_id = fill_id_of_task(symbol, task_id)
        ts = fills.get(fill_id, {}).get("ts_seen_ms") if fill_id is not None else None
        ok = isinstance(ts, (int, float)) and not isinstance(ts, bool) and ts > 0
        ages[task_id] = max(0.0, round((now - int(ts)) / 1000, 1)) if ok else None
    return ages


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


# ---- what to do next: one ACTION from the rows `collect` returned (pure; status and --watch) ------

ACTION_PREFIX = "ACTION: "

# Pause reasons (maker/market_loop.py, tasks/hedge.py, ops/flatten.py) as a few words for a table cell.
_SHORT_REASONS = (
    (re.compile(r"^paused by operator$"), "operator"),
    (re.compile(r"^flattened by operator"), "flattened"),
    (re.compile(r"^\d+ failed hedge\(s\) remain"), "failed hedges"),
    (re.compile(r"^hedge \S+ failed"), "hedge failed"),
    (re.compile(r"^hedge \S+ has no result"), "hedge no result"),
    (re.compile(r"exposure gap"), "exposure gap"),
    (re.compile(r"^unhedged .* exceeds"), "unhedged > max"),
    (re.compile(r"^max_hedges_per_minute"), "hedge rate"),
    (re.compile(r"^venue rejected A's order"), "A rejected"),
    (re.compile(r"^A's order"), "A order unclear"),
    (re.compile(r"^opening .* would exceed"), "position limit"),
    (re.compile(r"^nothing sensible to quote"), "no quote"),
)


def one_line(text: object) -> str:
    """Any text as one line (a reason can carry newlines or runs of spaces)."""
    return " ".join(str(text).split())


def clip(text: str, width: int) -> str:
    """`text` in at most `width` columns; a cut is marked with '~' (ASCII: one column everywhere)."""
    if width <= 0:
        return ""
    return text if len(text) <= width else text[:width - 1] + "~"


def short_reason(reason: str | None, width: int = 14) -> str:
    """A pause reason in a few words (the full reason is in `status` and the logs)."""
    if not reason:
        return ""
    reason = one_line(reason)
    for pattern, label in _SHORT_REASONS:
        if pattern.search(reason):
            return clip(label, width)
    return clip(reason, width)


def short_age(seconds: float | None) -> str:
    """An age in a few columns: 42s, 17m, 5h ("?" when unknown)."""
    if seconds is None:
        return "?"
    if seconds < 100:
        return f"{seconds:.0f}s"
    if seconds < 6000:
        return f"{seconds / 60:.0f}m"
    return f"{seconds / 3600:.0f}h"


def _names(markets: list[str], limit: int = 3) -> str:
    return ", ".join(markets) if len(markets) <= limit else f"{', '.join(markets[:limit])} +{len(markets) - limit}"


def next_action(rows: list[dict[str, Any]], width: int = 80) -> str:
    """The one thing the operator should do next, as `ACTION: ...` in at most `width` columns.

    In order of what blocks what: no worker (nothing hedges), a venue status cannot read, failed
    hedges (requeue, then resume), paused markets (wait for in-flight hedges, repair a ledger gap,
    or resume), refused messages (look, then clear-refused). "none" when all is well."""
    room = width - len(ACTION_PREFIX)
    for text in _candidates(rows, room):
        if len(text) <= room:
            return ACTION_PREFIX + text
    return ACTION_PREFIX + clip(text, room)


def _candidates(rows: list[dict[str, Any]], room: int):
    """Each rule's texts, most specific first (next_action takes the first that fits); the first
    rule that applies is the only one asked."""
    if not rows:
        yield "none"
        return
    first = rows[0]
    if not first.get("worker_alive", True):
        yield "start the worker: no consumer on hedge.b (no worker heartbeat)"
        yield "start the worker: no consumer on hedge.b"
        return
    deaf = [r["market"] for r in rows if r.get("state") == "WAITING_FOR_WORKER"]
    if deaf:   # the worker beats but the maker sees nobody consuming hedge.b (a cancelled consumer)
        yield f"restart the worker: it consumes no hedge.b ({_names(deaf)} waiting)"
        yield "restart the worker: it consumes no hedge.b"
        return
    if first.get("venue_error") and first.get("a_position") == "unknown":
        error = one_line(first["venue_error"])
        prefix = "check the venue: positions unreadable ("
        yield f"{prefix}{clip(error, room - len(prefix) - 1)})"
        yield "check the venue: positions unreadable"
        return
    failed = [r for r in rows if r.get("failed_hedges")]
    if failed:
        paused = [r["market"] for r in failed if r.get("paused")]
        then = f", then resume {_names(paused)}" if paused else ""
        ids = sorted(task_id for r in failed for task_id in r["failed_hedges"])
        if len(ids) == 1:
            yield f"requeue {ids[0]}{then}"
        if len(failed) == 1:
            yield f"requeue --all-failed --market {failed[0]['market']} ({len(ids)} failed){then}"
        yield f"requeue --all-failed ({len(ids)} failed in {_names([r['market'] for r in failed])}){then}"
        yield f"requeue --all-failed ({len(ids)} failed), then resume"
        return
    paused = [r for r in rows if r.get("paused")]
    if paused:
        busy = [r for r in paused if r.get("inflight_hedges")]
        if busy:
            r = busy[0]
            yield (f"wait for {r['inflight_hedges']} in-flight hedge(s) of {r['market']} "
                   f"(oldest {short_age(r.get('inflight_oldest_s'))}), then resume {r['market']}")
            yield f"wait for the in-flight hedges of {r['market']}, then resume {r['market']}"
            return
        gap = [r["market"] for r in paused if "exposure gap" in (r.get("pause_reason") or "")]
        if gap:
            yield f"repair {gap[0]} (exposure gap: A + B vs ledger), then resume {gap[0]}"
            yield f"repair {gap[0]}, then resume {gap[0]}"
            return
        reasons = {one_line(r.get("pause_reason") or "paused") for r in paused}
        names = _names([r["market"] for r in paused])
        if len(reasons) == 1:
            reason = reasons.pop()
            yield f"resume {names} ({reason})"
            yield f"resume {names} ({short_reason(reason, 40)})"
        yield f"resume {names} (paused: see the table)"
        yield f"resume ({len(paused)} markets paused)"
        return
    refused = sorted(first.get("refused_messages") or {})
    if refused:
        if len(refused) == 1:
            yield f"look at refused {refused[0]} (status --json), then clear-refused {refused[0]}"
            yield f"clear-refused {refused[0]} after looking at it"
        yield f"look at {len(refused)} refused messages (status --json), then clear-refused --all"
        yield f"clear-refused --all after looking ({len(refused)} refused)"
        return
    yield "none"
