"""Aggregation keeps exactness: whatever the interleaving of fills and hedge task starts (and task
re-runs, as after a redelivery, and worker restarts), B ends at exactly -(sum of A's fills) up to
dust below min_base_amount, and no B order (client_order_index) is ever executed twice.

Drives tasks.hedge.hedge_one in this process against a real simulator subprocess and the real Redis
store (the test run's own db), as the worker does; fills are counted with Store.record_fills as the
maker does, and each task carries the ledger hint the maker gives it, current or stale by the time
the task runs (the worker then signs before reading the ledger back, or must not). Not
timing-based: every step runs to completion before the next.
"""
from __future__ import annotations

import asyncio
import itertools
import os
from decimal import Decimal

import pytest
import redis
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedge.config import parse_config
from hedge.fill import Fill, signed
from tasks.hedge import hedge_one
from tasks.store import Store
from tests.integration.cluster import A, B, MASTER
from venue.client import VenueClient
from venue.keys import read_key_file
from venue.sim.harness import start_sim

pytestmark = pytest.mark.integration
ETH = 0
MIN_BASE = Decimal("0.0050")  # the simulator's ETH min_base_amount
_fill_ids = itertools.count(1)


@pytest.fixture(scope="module")
def env(keys_file):
    sim = start_sim({"taker_flow": False, "random_walk": False, "accounts": [
        {"index": A, "master": MASTER, "collateral": "1000000", "api_key_indexes": [3]},
        {"index": B, "master": MASTER, "collateral": "1000000", "api_key_indexes": [4]}]},
        profile="instant", keys_file=keys_file)
    redis_url = os.environ["LH_REDIS_URL"]
    cfg = parse_config({
        "lighter": {"base_url": sim.base_url, "ws_url": sim.ws_url}, "redis": {"url": redis_url},
        "keys_file": keys_file,
        "accounts": {"account_a": {"account_index": A, "api_key_index": 3},
                     "account_b": {"account_index": B, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.0500", "max_position_base": "100", "max_unhedged_base": "100"}},
        "strategy": {"max_hedges_per_minute": 100000}})
    loop = asyncio.new_event_loop()
    key = read_key_file(keys_file)[str(B)]["private_key"]
    client = loop.run_until_complete(VenueClient.open(sim.base_url, cfg.account_b, key))
    try:
        yield sim, cfg, Store.from_url(redis_url), client, loop
    finally:
        loop.run_until_complete(client.close())
        loop.close()
        sim.stop()
        redis.Redis.from_url(redis_url).flushdb()


def b_position(sim) -> Decimal:
    return Decimal(sim.admin("/admin/state")["accounts"][str(B)]["markets"][str(ETH)]["position"])


def b_creates(sim) -> list[dict]:
    log = sim.admin(f"/admin/orders_log?account_index={B}")["orders_log"]
    return [e for e in log if e["tx_type"] == 14 and e["result"] == "accepted"]


# A step: a new fill of A (size in 0.001 steps, so many are dust alone), the start of one enqueued
# hedge task (which one: index into the not-yet-run tasks), a re-run of a finished task (with its
# now stale hint), or a worker restart (it forgets which fills it has seen).
steps = st.lists(st.one_of(
    st.tuples(st.just("fill"), st.integers(1, 30), st.sampled_from(["buy", "sell"])),
    st.tuples(st.just("task"), st.integers(0, 50)),
    st.tuples(st.just("rerun"), st.integers(0, 50)),
    st.tuples(st.just("restart"))), min_size=1, max_size=30)


@settings(max_examples=40, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])
@given(plan=steps)
def test_any_interleaving_of_fills_and_tasks_hedges_the_total_exactly_once(env, plan):
    sim, cfg, store, client, loop = env
    seq = store.r.get("lh:leg_seq:ETH")  # keep B's client order indexes unique across examples
    store.r.flushdb()
    if seq:
        store.r.set("lh:leg_seq:ETH", seq)
    b0, creates0 = b_position(sim), len(b_creates(sim))

    total = Decimal(0)
    queued: list[tuple[dict, dict]] = []   # enqueued hedge tasks (fill message, hint) not started yet
    done: list[tuple[dict, dict]] = []

    def run(task: tuple[dict, dict]) -> None:
        loop.run_until_complete(hedge_one(cfg, store, client, task[0], attempt=1, hint_msg=task[1]))

    for step in plan:
        if step[0] == "fill":
            base = Decimal(step[1]) * Decimal("0.0010")
            fill = Fill(fill_id=f"x{next(_fill_ids)}", market_index=ETH, side=step[2], base_amount=base,
                        price=Decimal("3000.00"), order_index=1, client_order_index=1, ts_exchange_ms=0,
                        ts_seen_ms=0)
            hint, = store.record_fills("ETH", [(fill.to_message(), int(signed(fill.side, base) * 10_000),
                                                f"hedge-ETH-{fill.fill_id}")])
            assert hint is not None
            total += signed(fill.side, base)
            queued.append((fill.to_message(), hint.to_message()))
        elif step[0] == "task" and queued:
            msg = queued.pop(step[1] % len(queued))
            run(msg)
            done.append(msg)
        elif step[0] == "rerun" and done:
            run(done[step[1] % len(done)])  # a redelivered / requeued task
        elif step[0] == "restart":
            store.fills_seen.clear()
    while queued:  # every fill's task runs eventually
        msg = queued.pop(0)
        run(msg)
        done.append(msg)

    moved = b_position(sim) - b0
    assert abs(moved + total) < MIN_BASE, (moved, total)   # exposure zero up to carried dust
    ledger = store.ledger("ETH")
    assert not ledger.pending
    assert Decimal(ledger.a_filled).scaleb(-4) == total
    assert Decimal(ledger.hedged).scaleb(-4) == -moved      # the ledger counts exactly what B did
    new = b_creates(sim)[creates0:]
    indexes = [e["client_order_index"] for e in new]
    assert len(indexes) == len(set(indexes)), indexes       # no B order sent twice
    # (A signature thrown away because the ledger moved must give its nonce back, or the next
    # hedge's send is refused with "invalid nonce" and run() raises.)
