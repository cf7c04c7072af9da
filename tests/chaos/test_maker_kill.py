"""kill -9 of the maker (account A) mid-order, then a restart: leftover order cancelled, fills that
happened while it was down found and hedged, hedges in flight waited for; then the invariants."""
from __future__ import annotations

import time

import pytest

from tests.chaos.harness import (B, FIGURES, check_invariants, dump_logs, executed_b_orders, fill_round,
                                 last_trade_id, logs_on_failure, record_recovered, shuffled_plan, wait_until)

pytestmark = pytest.mark.timeout(420)

VARIANTS = ("resting_no_fill", "fill_while_down", "fill_then_kill_at_once", "kill_while_hedge_in_flight")


def test_maker_kill9_mid_order(chaos):
    seed = 601
    rng, plan = shuffled_plan(seed, VARIANTS, 2, 10)
    c = chaos(seed)
    c.start_worker()
    c.start_maker()
    with logs_on_failure(c, lambda: f"plan={plan}"):
        for variant in plan:
            kind = f"maker_kill.{variant}"
            started, since, executed_before = time.monotonic(), last_trade_id(c), executed_b_orders(c)
            c.resting_order()
            if variant == "resting_no_fill":
                c.kill9("maker")
            elif variant == "fill_while_down":
                c.kill9("maker")
                fill_round(c, rng)
            elif variant == "fill_then_kill_at_once":
                fill_round(c, rng)
                c.kill9("maker")
            else:
                # the worker holds the hedge (its leg written ahead, B's sendTx slowed at the venue)
                c.set_faults(latency_ms=1500, accounts=[B])
                fill_round(c, rng)
                wait_until(lambda: c.store.ledger("ETH").pending, 10, "the hedge leg in flight in the worker")
                c.kill9("maker")
            c.start_maker()
            check_invariants(c, kind, since_trade_id=since, timeout_s=45)
            c.set_faults()
            record_recovered(kind, c, executed_before, started)


def test_maker_kill9_after_fill_counted_before_hedge_enqueued(chaos):
    """Deterministic crash point: the maker's LPUSH of the hedge message onto hedge.b is held by a
    Redis tap (the fill is already counted in lh:a_filled and marked in flight), then kill -9.
    Nothing else can cover that fill (one fill, no later task), so only the restarted maker's own
    recovery can hedge it; allowed up to hedge_wait_timeout_s (20 s) + 25 s."""
    seed = 602
    c = chaos(seed, maker_tap=True)
    c.start_worker()
    c.start_maker()
    kind = "maker_kill.after_fill_counted_before_enqueue"
    since, executed_before = last_trade_id(c), executed_b_orders(c)
    c.resting_order()
    c.maker_tap.hold("LPUSH\r\n$7\r\nhedge.b")
    c.fill_resting(["0.0500"])  # one fill: no later fill's task can cover it by accident
    wait_until(c.maker_tap.held.is_set, 30, "the maker to publish the hedge message")
    assert c.store.inflight("ETH") and int(c.store.r.get("lh:a_filled:ETH") or 0) != 0
    c.kill9("maker")
    c.maker_tap.release_all()
    c.start_maker()
    FIGURES[kind].scenarios += 1
    FIGURES[kind].faults_injected += 1
    try:
        check_invariants(c, kind, since_trade_id=since, timeout_s=45)
    finally:
        FIGURES[kind].hedges += len(executed_b_orders(c) - executed_before)
        print(dump_logs(c))
