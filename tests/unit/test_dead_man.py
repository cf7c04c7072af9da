"""The dead-man's switch on A: config fields, when it re-arms, and what it does when the worker is
gone or the venue refuses (maker/dead_man.py with a stand-in client; no venue needed)."""
from __future__ import annotations

import asyncio
import copy
import logging

import pytest

from hedge.config import ConfigError, parse_config
from maker import dead_man
from maker.dead_man import rearm_due, run_dead_man
from venue import errors
from venue.errors import SendOutcome
from tests.unit.test_config import good


def _strategy(**fields) -> dict:
    raw = copy.deepcopy(good())
    raw["strategy"].update(fields)
    return raw


# ---- config -------------------------------------------------------------------------------------

def test_defaults_are_ten_minutes_and_two_minutes():
    s = parse_config(good()).strategy
    assert (s.order_expiry_s, s.dead_man_s) == (600.0, 120.0)


def test_order_expiry_below_lighters_minimum_is_refused_naming_it():
    with pytest.raises(ConfigError) as exc:
        parse_config(_strategy(order_expiry_s=300))
    assert "strategy.order_expiry_s" in str(exc.value) and "MinOrderExpiryPeriod" in str(exc.value)
    assert parse_config(_strategy(order_expiry_s=330)).strategy.order_expiry_s == 330


def test_dead_man_below_thirty_seconds_is_refused():
    with pytest.raises(ConfigError, match=r"strategy\.dead_man_s: expected at least 30 seconds"):
        parse_config(_strategy(dead_man_s=29))
    assert parse_config(_strategy(dead_man_s=30)).strategy.dead_man_s == 30


@pytest.mark.parametrize("field", ["order_expiry_s", "dead_man_s"])
@pytest.mark.parametrize("value", ["soon", -1, 0, True, float("nan"), float("inf")])
def test_not_a_number_of_seconds_is_refused(field, value):
    with pytest.raises(ConfigError, match=rf"strategy\.{field}: expected a positive, finite number of seconds"):
        parse_config(_strategy(**{field: value}))


# ---- when to re-arm ---------------------------------------------------------------------------------

def test_rearm_when_nothing_armed_or_half_the_period_passed():
    assert rearm_due(1_000, None, 120_000)
    assert not rearm_due(1_000, 121_000 - 1, 120_000)       # just armed
    assert not rearm_due(60_999, 121_000, 120_000)
    assert rearm_due(61_000, 121_000, 120_000)              # half of 120 s gone


# ---- the coroutine ------------------------------------------------------------------------------------

class FakeClient:
    account_index = 281001

    def __init__(self, answers: list[SendOutcome] | None = None):
        self.armed: list[int] = []
        self.answers = answers or []

    async def schedule_cancel_all(self, at_ms: int) -> SendOutcome:
        self.armed.append(at_ms)
        return self.answers.pop(0) if self.answers else SendOutcome(errors.ACCEPTED, 200, "")


async def _run_for(client, dead_man_s: float, not_alive, seconds: float) -> None:
    task = asyncio.create_task(run_dead_man(client, dead_man_s, not_alive, check_interval_s=0.01))
    await asyncio.sleep(seconds)
    assert not task.done(), task   # never ends by itself, never raises
    task.cancel()


def test_arms_while_alive_and_stops_once_the_worker_is_gone(caplog, monkeypatch):
    caplog.set_level(logging.INFO, logger="maker.dead_man")
    client = FakeClient()
    alive = {"worker": True}
    now = {"ms": 1_000_000}
    monkeypatch.setattr(dead_man, "_now_ms", lambda: now["ms"])

    async def scenario():
        task = asyncio.create_task(run_dead_man(client, 30, lambda: None if alive["worker"] else "worker_heartbeat_expired",
                                                check_interval_s=0.01))
        await asyncio.sleep(0.05)
        assert client.armed == [1_030_000]          # armed once, now + dead_man_s
        now["ms"] += 15_000                          # half of it passed: re-armed
        await asyncio.sleep(0.05)
        assert client.armed == [1_030_000, 1_045_000]
        alive["worker"] = False
        now["ms"] += 15_000
        await asyncio.sleep(0.05)
        assert client.armed == [1_030_000, 1_045_000]  # not re-armed: the venue cancels at 1_045_000
        task.cancel()

    asyncio.run(scenario())
    stops = [r.getMessage() for r in caplog.records if "dead_man.not_rearming" in r.getMessage()]
    assert stops == ["event=dead_man.not_rearming reason=worker_heartbeat_expired cancel_all_at_ms=1045000 "
                     "account=281001"]   # once, with the deadline the venue will act on


def test_a_refused_arm_is_a_warning_with_the_venues_words_and_never_crashes(caplog):
    caplog.set_level(logging.INFO, logger="maker.dead_man")
    client = FakeClient([SendOutcome(errors.REJECTED, 21122, "invalid cancel all time")])
    asyncio.run(_run_for(client, 30, lambda: None, 0.05))
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert any("arm_refused" in r.getMessage() and "code=21122" in r.getMessage()
               and "invalid cancel all time" in r.getMessage() for r in warned), caplog.text
    assert len(client.armed) == 1   # the next try waits RETRY_AFTER_S, sparing the request budget


def test_a_failing_liveness_probe_counts_as_not_alive(caplog):
    caplog.set_level(logging.INFO, logger="maker.dead_man")
    client = FakeClient()

    def probe():
        raise ConnectionError("redis away")
    asyncio.run(_run_for(client, 30, probe, 0.05))
    assert client.armed == []
    assert "reason=liveness_check_failed:ConnectionError" in caplog.text
