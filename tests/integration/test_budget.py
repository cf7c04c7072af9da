"""The request budget in real Redis (venue/budget.py): the Lua script decides as the pure rule does,
processes share one window and never exceed it together, hedges go at once while A's quoting fills
its share, and the counters stay bounded. Windows are shortened (`window_ms`) so no test waits a
real minute; the rule does not depend on the window's length.
"""
from __future__ import annotations

import asyncio
import json
import logging
import subprocess
import sys
import time
import uuid
from dataclasses import asdict
from pathlib import Path

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, generate_latest

from hedge.budget import (Admit, Backoff, Priority, RateLimit, Request, WindowEntry, after_refusal, decide,
                          endpoint_weight, summarize)
from tasks.metrics import watch_budget
from tests.conftest import new_budget
from venue.budget import BudgetWaitTimeout, RequestBudget, budget_from_config, budget_key

pytestmark = [pytest.mark.integration, pytest.mark.timeout(120)]
H, Q, R = Priority.HEDGE, Priority.QUOTE, Priority.READ
PROJECT_ROOT = Path(__file__).resolve().parents[2]


# ---- the script decides as hedge.budget.decide does ------------------------------------------------

events_st = st.lists(st.one_of(
    st.tuples(st.just("ask"), st.integers(0, 400), st.sampled_from(list(Priority)),
              st.sampled_from(["sendTx", "accountOrders", "trades", "nextNonce", "accountInactiveOrders"]),
              st.sampled_from(["maker", "worker", "cli"])),
    st.tuples(st.just("refused"), st.integers(0, 400), st.sampled_from(["maker", "worker"])),
    st.tuples(st.just("ok"), st.integers(0, 400)),
), min_size=1, max_size=50)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(events_st, st.sampled_from([RateLimit("custom", 5, False, 2, window_ms=1_000),
                                   RateLimit("custom", 2_000, True, 600, window_ms=1_000),
                                   RateLimit("custom", 50, False, 10, window_ms=2_000)]))
def test_the_script_decides_exactly_as_the_pure_rule(r, events, limit):
    """Same window, same clock, same decision and wait: admissions, caps, the reserve, the backoff
    (started by 429s, ended by a success), expiry, and the usage view."""
    budget = new_budget(r, limit, first_backoff_ms=100, max_backoff_ms=400)
    window: list[WindowEntry] = []
    backoff, refused = Backoff(), {}
    now = 10_000_000
    for event in events:
        now += event[1]
        if event[0] == "ask":
            _, _, priority, endpoint, process = event
            expected = decide(window, Request(endpoint, priority), limit, now, backoff.until_ms)
            grant = budget.try_acquire(endpoint, priority, process, now_ms=now)
            assert grant.now_ms == now
            if isinstance(expected, Admit):
                assert grant.admitted, (grant, expected)
                window.append(WindowEntry(now, endpoint, endpoint_weight(endpoint), process, priority))
            else:
                assert (grant.admitted, grant.wait_ms, grant.reason) == (False, expected.wait_ms, expected.reason)
        elif event[0] == "refused":
            backoff = after_refusal(backoff, now, 100, 400)
            refused[event[2]] = refused.get(event[2], 0) + 1
            assert budget.venue_refused("sendTx", event[2], now_ms=now) == backoff.until_ms - now
        else:
            budget.venue_ok()
            backoff = Backoff()
        assert budget.usage(now_ms=now) == summarize(window, limit, now, refused, backoff)


def test_totals_are_rebuilt_when_something_else_touched_them(r):
    limit = RateLimit("custom", 4, False, 1, window_ms=5_000)
    budget = new_budget(r, limit)
    for _ in range(3):
        assert budget.try_acquire("accountOrders", R, "maker").admitted
    r.delete(budget.keys["totals"])            # e.g. an operator deleting keys by hand
    assert budget.try_acquire("accountOrders", R, "maker").reason == "reserve"
    assert budget.usage().used == 3 and budget.try_acquire("sendTx", H, "worker").admitted


# ---- several processes, one window ------------------------------------------------------------------

def start_clients(r: redis.Redis, name: str, limit: RateLimit, plans: dict[str, str]) -> dict[str, subprocess.Popen]:
    procs = {}
    for process, plan in plans.items():
        procs[process] = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.budget_client", _url(r), name, json.dumps(asdict(limit)),
             process, plan], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(PROJECT_ROOT))
    for process, proc in procs.items():
        line = proc.stdout.readline().strip()
        assert line == "ready", (process, line, proc.stderr.read() if proc.poll() is not None else "")
    r.rpush(f"{name}:go", *["go"] * len(procs))   # all start together
    return procs


def _url(r: redis.Redis) -> str:
    kw = r.connection_pool.connection_kwargs
    return f"redis://{kw.get('host', '127.0.0.1')}:{kw.get('port', 6379)}/{kw.get('db', 0)}"


def finish(procs: dict[str, subprocess.Popen], timeout_s: float = 60) -> dict[str, list[dict]]:
    out = {}
    for process, proc in procs.items():
        stdout, stderr = proc.communicate(timeout=timeout_s)
        assert proc.returncode == 0, (process, stderr[-2000:])
        out[process] = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    return out


def test_two_processes_share_one_window_and_never_exceed_it_together(r):
    """(a) Two processes acquire 12 requests each against one budget of 5 per 600 ms (1 kept for
    hedges): in every rolling window, all admissions together stay within 5, and quotes and reads
    within 4."""
    limit = RateLimit("custom", 5, False, 1, window_ms=600)
    name = f"lh:test-budget:{uuid.uuid4().hex[:12]}"
    procs = start_clients(r, name, limit, {
        "maker": ",".join(["quote:sendTx", "read:accountOrders"] * 6),
        "worker": ",".join(["hedge:sendTx", "read:account", "read:accountOrders"] * 4)})
    lines = finish(procs)
    admissions = [dict(a, process=p) for p, rows in lines.items() for a in rows if "at_ms" in a]
    assert len(admissions) == 24                              # waited, never refused
    assert {a["process"] for a in admissions} == {"maker", "worker"}
    for a in admissions:
        live = [b for b in admissions if a["at_ms"] - limit.window_ms < b["at_ms"] <= a["at_ms"]]
        assert len(live) <= 5, live
        assert sum(1 for b in live if b["priority"] != "hedge") <= 4, live
    span_ms = max(a["at_ms"] for a in admissions) - min(a["at_ms"] for a in admissions)
    assert span_ms >= 4 * limit.window_ms                    # 24 requests at <= 5 per window: paced
    # The two ran side by side, and the window they share made quotes or reads wait. (Not necessarily
    # in each process: on a loaded machine one may come slowly enough to always find room.)
    spans = {p: (min(a["at_ms"] for a in admissions if a["process"] == p),
                 max(a["at_ms"] for a in admissions if a["process"] == p)) for p in ("maker", "worker")}
    assert spans["maker"][0] < spans["worker"][1] and spans["worker"][0] < spans["maker"][1], spans
    assert sum(done["paced"]["quote"] + done["paced"]["read"] for rows in lines.values()
               for done in rows if done.get("done")) > 0, lines


def test_hedges_go_at_once_while_another_process_quoting_fills_its_share(r):
    """(b) A maker process quotes as fast as its share allows (it is paced); meanwhile this process
    hedges every 250 ms, and no hedge ever waits."""
    limit = RateLimit("custom", 6, False, 4, window_ms=800)   # quotes and reads: 2 per 800 ms
    budget = RequestBudget(r, f"lh:test-budget:{uuid.uuid4().hex[:12]}", limit)
    procs = start_clients(r, budget.name, limit, {"maker": ",".join(["quote:sendTx"] * 8)})

    async def hedge_meanwhile():
        # Every 250 ms: at most 3 earlier hedges in any 800 ms, below the reserve of 4.
        waits = []
        while procs["maker"].poll() is None:
            waits.append(await budget.acquire("sendTx", H, "worker"))
            await asyncio.sleep(0.25)
        return waits

    waits = asyncio.run(hedge_meanwhile())
    maker = finish(procs)["maker"]
    quotes = [a for a in maker if "at_ms" in a]
    assert len(quotes) == 8 and sum(q["paced"] for q in quotes) >= 3     # the maker was paced (pairs) ...
    assert len(waits) >= 8 and budget.local.paced[H] == 0               # ... the hedges never were
    assert max(waits) < 50, waits


def test_a_quote_waits_behind_the_reserve_while_a_hedge_goes_through(r):
    limit = RateLimit("custom", 4, False, 2, window_ms=1_000)
    budget = new_budget(r, limit)

    async def scenario():
        await budget.acquire("sendTx", Q, "maker")
        await budget.acquire("sendTx", Q, "maker")             # QUOTE's share (4 - 2) is used
        quote = asyncio.create_task(budget.acquire("sendTx", Q, "maker"))
        await asyncio.sleep(0.1)
        assert not quote.done()
        assert await budget.acquire("sendTx", H, "worker") < 50
        assert await budget.acquire("sendTx", H, "worker") < 50 and budget.local.paced[H] == 0
        with pytest.raises(BudgetWaitTimeout, match="no room for sendTx"):
            await budget.acquire("sendTx", H, "worker", max_wait_ms=100)     # the whole limit is used now
        assert not quote.done()
        waited = await asyncio.wait_for(quote, 3)
        assert 700 <= waited <= 1_500                            # until the first quote left the window
    asyncio.run(scenario())


# ---- counters stay bounded; an unreachable Redis does not stop trading ---------------------------

def test_the_window_and_its_totals_stay_bounded(r):
    limit = RateLimit("custom", 3, False, 1, window_ms=200)
    budget = new_budget(r, limit)

    async def many():
        for i in range(12):
            await budget.acquire("accountOrders", R, f"proc{i % 4}")
    asyncio.run(many())
    assert r.zcard(budget.keys["window"]) <= 3
    time.sleep(0.25)
    budget.usage()                                             # drops what left the window
    assert r.zcard(budget.keys["window"]) == 0
    assert set(r.hgetall(budget.keys["totals"])) == {"seq", "req", "w", "qr_req", "qr_w"}   # none per process
    assert 0 < r.pttl(budget.keys["window"]) <= 400 or not r.exists(budget.keys["window"])


def test_without_redis_the_request_goes_ahead_and_says_so(caplog):
    dead = redis.Redis(host="127.0.0.1", port=1, socket_connect_timeout=0.2)
    budget = RequestBudget(dead, "lh:test-budget:dead", RateLimit("custom", 5, False, 1))
    with caplog.at_level(logging.WARNING, logger="venue.budget"):
        assert asyncio.run(budget.acquire("sendTx", H, "worker")) >= 0
    assert "event=budget.unavailable" in caplog.text and "going_ahead" in caplog.text
    assert budget.venue_refused("sendTx", "worker") == 1_000     # a local backoff still applies


def test_budget_from_config_is_keyed_by_both_accounts(r):
    from tests.unit.test_config import good
    from hedge.config import parse_config
    cfg = parse_config(good())
    budget = budget_from_config(cfg, r)
    assert budget.name == budget_key(281001, 281002) == "lh:budget:281001:281002"
    assert budget.limit == cfg.rate_limit and budget.limit.tier == "standard"


# ---- Prometheus ----------------------------------------------------------------------------------------

def test_metrics_show_use_limit_and_429s_of_this_process(r):
    budget = new_budget(r, RateLimit("custom", 60, False, 15))
    registry = CollectorRegistry()
    watch_budget(budget, "worker", registry)
    watch_budget(budget, "worker", registry)                   # once per process: no duplicate error
    for _ in range(3):
        assert budget.try_acquire("sendTx", H, "worker").admitted
    assert budget.try_acquire("accountOrders", R, "maker").admitted
    budget.venue_refused("sendTx", "worker")
    text = generate_latest(registry).decode()
    assert 'lh_budget_used{process="worker"} 3.0' in text
    assert 'lh_budget_window_used{process="worker"} 4.0' in text
    assert 'lh_budget_limit{process="worker"} 60.0' in text
    assert 'lh_venue_429_total{process="worker"} 1.0' in text
    assert 'lh_budget_wait_seconds_total{priority="hedge",process="worker"} 0.0' in text
