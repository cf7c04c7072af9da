"""The dead-man's switch on A: a venue-side scheduled cancel-all, kept armed only while the maker
and the hedge worker are both alive.

While alive, the maker re-arms Lighter's scheduled cancel-all of A (CancelAllOrders, time in force
scheduled) at now + `strategy.dead_man_s`, each time half of it has passed. When the maker dies
(kill -9, a hung event loop: this coroutine runs on the same loop), or a market loop or the stream
ends, or the worker's heartbeat expires, nobody re-arms and the venue cancels A's orders at the
deadline: A's exposure never outlives whoever hedges it. One re-arm per dead_man_s / 2 is the cost
in the request budget (A and B share 60 requests a minute on Standard).
"""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Callable

from venue.client import VenueClient

log = logging.getLogger("maker.dead_man")

CHECK_INTERVAL_S = 1.0   # how often liveness is looked at (local and Redis only; no venue request)
RETRY_AFTER_S = 5.0      # after a refused or failed arm: the old deadline still stands; spare the budget


def rearm_due(now_ms: int, armed_until_ms: int | None, dead_man_ms: int) -> bool:
    """Re-arm when nothing is armed yet or half of the armed period has passed."""
    return armed_until_ms is None or now_ms >= armed_until_ms - dead_man_ms // 2


async def run_dead_man(client: VenueClient, dead_man_s: float, not_alive: Callable[[], str | None],
                       check_interval_s: float = CHECK_INTERVAL_S) -> None:
    """Keep A's scheduled cancel-all armed while `not_alive()` is None; it returns the reason
    (a short token for the log) when the maker or the worker is not alive. Never raises on a refusal."""
    dead_man_ms = int(dead_man_s * 1000)
    armed_until_ms: int | None = None
    stopped_for: str | None = None
    retry_at_ms = 0
    while True:
        reason = _safe(not_alive)
        if reason is not None:
            if stopped_for != reason:   # once per reason, not every second
                stopped_for = reason
                log.warning("event=dead_man.not_rearming reason=%s cancel_all_at_ms=%s account=%d", reason,
                            armed_until_ms if armed_until_ms is not None else "none", client.account_index)
        elif rearm_due(_now_ms(), armed_until_ms, dead_man_ms) and _now_ms() >= retry_at_ms:
            at_ms = _now_ms() + dead_man_ms
            retry_at_ms = _now_ms() + int(RETRY_AFTER_S * 1000)
            try:
                outcome = await client.schedule_cancel_all(at_ms)
            except Exception as exc:  # a venue/budget error: the old deadline still stands; try next check
                log.warning("event=dead_man.arm_failed at_ms=%d error=%s", at_ms, f"{type(exc).__name__}: {exc}")
            else:
                if outcome.accepted:
                    if stopped_for is not None:
                        log.info("event=dead_man.rearming after=%s", stopped_for)
                    armed_until_ms, stopped_for = at_ms, None
                    log.info("event=dead_man.armed at_ms=%d dead_man_s=%g account=%d", at_ms, dead_man_s,
                             client.account_index)
                else:
                    log.warning("event=dead_man.arm_refused at_ms=%d %s", at_ms, outcome.describe())
        await asyncio.sleep(check_interval_s)


def _safe(not_alive: Callable[[], str | None]) -> str | None:
    """A liveness probe that fails (Redis away) counts as not alive: nobody can vouch for the hedger."""
    try:
        return not_alive()
    except Exception as exc:
        return f"liveness_check_failed:{type(exc).__name__}"


def _now_ms() -> int:
    return int(time.time() * 1000)
