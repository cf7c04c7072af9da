"""The dead-man's switch on A, on Lighter's Standard tier (60 requests a minute, speed bumps).

A's order rests (maker_order_timeout_s far away); the maker keeps A's scheduled cancel-all armed
at now + dead_man_s (30 s) while it and the worker live. Then:
(a) kill -9 of the maker and the worker: nobody re-arms, the venue cancels A's order at the
    armed deadline;
(b) kill -9 of the worker only: the maker stops re-arming (the worker's heartbeat expired), the
    venue cancels A's order at the deadline, and the maker places nothing new while no worker
    consumes; a restarted worker brings quoting and the switch back.
"""
from __future__ import annotations

import time

import pytest

from tests.chaos.harness import A, FIGURES, logs_on_failure, record_scenario, wait_until

pytestmark = pytest.mark.timeout(240)

DEAD_MAN_S = 30          # the minimum: a deadline at most 30 s after the last re-arm
HEARTBEAT_TTL_S = 10     # tasks/heartbeat.py TTL_MS
SLACK_MS = 2_000         # the venue's tick and our polling


def _armed_ms(c) -> int:
    return int(c.sim.admin("/admin/state")["accounts"][str(A)]["cancel_all_at_ms"])


def _now_ms() -> int:
    return int(time.time() * 1000)


def _resting_and_armed(c, after_ms: int) -> int:
    """Wait for A's resting order and an armed cancel-all newer than `after_ms`; the deadline."""
    c.resting_order(timeout_s=60)
    return wait_until(lambda: (lambda at: at if at > after_ms else 0)(_armed_ms(c)), 45,
                      "the maker to arm A's scheduled cancel-all")


def _watch_venue_cancel(c, timeout_s: float) -> tuple[int, int]:
    """Until A's order is gone from the venue: (the last armed deadline seen, when it was gone), ms."""
    seen = {"at_ms": 0}

    def gone() -> bool:
        armed = _armed_ms(c)   # the venue sets it back to 0 when it fires
        if armed:
            seen["at_ms"] = armed
        return not c.active_orders()
    wait_until(gone, timeout_s, "the venue to cancel A's order by the dead-man's deadline", interval_s=0.05)
    return seen["at_ms"], _now_ms()


def _a_creates(c) -> int:
    return len([e for e in c.orders_log(A) if e["tx_type"] == 14])


def _record(kind: str, killed_ms: int, deadline_ms: int, gone_ms: int) -> None:
    record_scenario(kind, faults=1)
    FIGURES[kind].seconds += (gone_ms - killed_ms) / 1000
    print(f"dead_man kind={kind} kill_to_cancel_s={(gone_ms - killed_ms) / 1000:.1f} "
          f"deadline_after_kill_s={(deadline_ms - killed_ms) / 1000:.1f} "
          f"cancel_after_deadline_ms={gone_ms - deadline_ms}")


def test_dead_man_cancels_a_when_the_maker_or_the_worker_dies(chaos):
    c = chaos(701, profile="standard",
              strategy={"dead_man_s": DEAD_MAN_S, "maker_order_timeout_s": 120, "reconcile_interval_s": 60})
    c.start_worker()
    c.mark("maker")
    c.start_maker()
    with logs_on_failure(c):
        # (a) maker and worker killed: the armed deadline stands, nobody moves it.
        kind = "dead_man.maker_and_worker_killed"
        _resting_and_armed(c, _now_ms())
        c.kill9("maker")
        c.kill9("worker")
        killed_ms = _now_ms()
        deadline_ms, gone_ms = _watch_venue_cancel(c, DEAD_MAN_S + SLACK_MS / 1000 + 5)
        assert deadline_ms <= killed_ms + DEAD_MAN_S * 1000, (deadline_ms, killed_ms)
        assert deadline_ms <= gone_ms <= deadline_ms + SLACK_MS, (deadline_ms, gone_ms)
        _record(kind, killed_ms, deadline_ms, gone_ms)

        # (b) only the worker killed: the live maker stops re-arming and waits for a hedger.
        kind = "dead_man.worker_killed"
        c.start_worker()
        c.mark("maker")
        c.start_maker()
        _resting_and_armed(c, gone_ms)
        creates_before = _a_creates(c)
        c.kill9("worker")
        killed_ms = _now_ms()
        c.mark("maker")
        wait_until(lambda: "event=dead_man.not_rearming reason=worker_heartbeat_expired" in c.log_since("maker"),
                   HEARTBEAT_TTL_S + 5, "the maker to stop re-arming once the worker's heartbeat expired")
        deadline_ms, gone_ms = _watch_venue_cancel(c, HEARTBEAT_TTL_S + DEAD_MAN_S + SLACK_MS / 1000 + 5)
        assert deadline_ms <= killed_ms + (HEARTBEAT_TTL_S + DEAD_MAN_S) * 1000, (deadline_ms, killed_ms)
        assert deadline_ms <= gone_ms <= deadline_ms + SLACK_MS, (deadline_ms, gone_ms)
        _record(kind, killed_ms, deadline_ms, gone_ms)
        assert "maker" in c.procs and c.procs["maker"].poll() is None, "the maker must stay up"
        wait_until(lambda: "event=maker.no_hedger" in c.log_since("maker"), 30,
                   "the maker to wait for a hedger after its order was cancelled")
        assert c.active_orders() == [] and _a_creates(c) == creates_before, "A quoted with no worker to hedge"

        # A worker again: the maker quotes and the switch is armed again.
        c.start_worker()
        _resting_and_armed(c, gone_ms)
        assert _a_creates(c) == creates_before + 1
