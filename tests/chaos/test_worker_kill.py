"""kill -9 of the hedge worker (the celery solo process group) at each step of a hedge.

Each crash point is hit deterministically, not by timing luck:

* before_write_ahead           the worker has the task and has read the ledger; its first write-ahead
                               command (INCR lh:leg_seq) is held by the Redis tap -> kill.
* between_write_ahead_and_wire the leg is PENDING in Redis; B's sendTx hangs at the venue and is never
                               applied (sim timeout fault, mode "never") -> kill. The venue never gets it.
* after_wire_before_response   the venue applied B's order, the HTTP answer never comes (timeout fault,
                               mode "before") -> kill with the leg PENDING.
* after_fill_before_settle     B's order executed and the worker read it back; the settle transaction
                               (MULTI .. INCRBY lh:hedged ..) is held by the tap -> kill.
* after_settle_before_task_ack the leg is settled; storing the task's SUCCESS result is held by the tap
                               -> kill: no result, the broker message is never acked.

After each kill the worker is restarted (the maker keeps running) and the invariants are checked.
"""
from __future__ import annotations

import random
import time

import pytest

from hedge.leg import LegState
from tests.chaos.harness import (B, check_invariants, executed_b_orders, fill_round, last_trade_id,
                                 logs_on_failure, record_recovered, shuffled_plan, wait_until)

pytestmark = pytest.mark.timeout(600)

STEPS = ("before_write_ahead", "between_write_ahead_and_wire", "after_wire_before_response",
         "after_fill_before_settle", "after_settle_before_task_ack")
TAP_MARKERS = {"before_write_ahead": "lh:leg_seq",
               "after_fill_before_settle": '"state": "executed"',
               "after_settle_before_task_ack": '"SUCCESS"'}


def _venue_cois(c) -> set[int]:
    return {e["client_order_index"] for e in c.b_hedge_orders()}


def crash_at(c, step: str, rng: random.Random) -> str:
    """Drive one fill of A into `step` of its hedge and kill -9 the worker there; returns evidence."""
    legs_before = {leg.leg for leg in c.store.legs("ETH")}
    timeouts_before = c.faults_injected("timeout")
    if step in TAP_MARKERS:
        c.tap.hold(TAP_MARKERS[step])
    elif step == "between_write_ahead_and_wire":
        c.set_faults(timeout_rate=1, timeout_mode="never", timeout_s=20, accounts=[B], seed=rng.randrange(1 << 30))
    else:
        c.set_faults(timeout_rate=1, timeout_mode="before", timeout_s=20, accounts=[B], seed=rng.randrange(1 << 30))
    # The tap holds the first SUCCESS stored: a chunk below min_base_amount settles with no leg, so
    # this step fills A's order whole (one fill, one leg) to hold the result of a hedge that traded.
    fill_round(c, rng, max_chunks=1 if step == "after_settle_before_task_ack" else 3)

    def new_legs() -> list:
        return [leg for leg in c.store.legs("ETH") if leg.leg not in legs_before]

    if step in TAP_MARKERS:
        wait_until(c.tap.held.is_set, 30, f"the worker to reach {step}")
    elif step == "between_write_ahead_and_wire":
        wait_until(lambda: c.faults_injected("timeout") > timeouts_before and c.store.ledger("ETH").pending, 30,
                   "a PENDING leg whose sendTx hangs at the venue")
    else:
        wait_until(lambda: c.faults_injected("timeout") > timeouts_before and c.store.ledger("ETH").pending
                   and {leg.client_order_index for leg in c.store.ledger("ETH").pending} & _venue_cois(c), 30,
                   "the venue to apply the PENDING leg while its answer hangs")
    c.kill9("worker")
    if c.tap is not None:
        c.tap.release_all()
    c.set_faults()

    # Evidence that the crash happened at the intended step.
    legs = new_legs()
    cois = _venue_cois(c)
    if step == "before_write_ahead":
        assert not legs, f"{step}: a leg was written ahead: {legs}"
    elif step in ("between_write_ahead_and_wire", "after_wire_before_response", "after_fill_before_settle"):
        assert legs and all(leg.state.open for leg in legs), f"{step}: {legs}"
        on_venue = [leg.client_order_index in cois for leg in legs]
        assert any(on_venue) == (step != "between_write_ahead_and_wire"), f"{step}: {legs} venue={sorted(cois)}"
    else:
        assert legs and all(leg.state is LegState.EXECUTED for leg in legs), f"{step}: {legs}"
        assert c.store.inflight("ETH"), f"{step}: the task's in-flight mark is gone already"
    return f"legs={[(leg.leg, leg.state.name) for leg in legs]}"


def test_worker_kill9_at_each_step_of_a_hedge(chaos):
    seed = 501
    rng, plan = shuffled_plan(seed, STEPS, 2, 10)
    c = chaos(seed, tap=True)
    c.start_worker()
    c.start_maker()
    c.resting_order()
    with logs_on_failure(c, lambda: f"plan={plan}"):
        for i, step in enumerate(plan):
            kind = f"worker_kill.{step}"
            started, since, executed_before = time.monotonic(), last_trade_id(c), executed_b_orders(c)
            crash_at(c, step, rng)
            c.start_worker()
            check_invariants(c, kind, since_trade_id=since, timeout_s=45)
            record_recovered(kind, c, executed_before, started)
