"""Redis restarted with all its data gone (queue, results, ledger, pauses, stream cutoff).

Runs on a throwaway `redis-server --save "" --appendonly no` of its own (never the machine's
shared server): kill -9 it, start it again empty on the same port. Then either every process is
restarted (the supervisor's way) or they are left running to reconnect by themselves.
"""
from __future__ import annotations

import random
import time

import pytest
import redis

from tests.chaos.harness import (check_invariants, executed_b_orders, fill_round, last_trade_id, logs_on_failure,
                                 record_recovered, shuffled_plan, wait_until)

pytestmark = pytest.mark.timeout(420)

# what is going on when Redis loses everything
STATES = ("order_resting", "long_hedged_order_resting", "fill_unhedged_worker_stuck_before_write_ahead")


def _wipe(c) -> None:
    c.private_redis.kill()
    c.private_redis.start()
    wait_until(lambda: _ping(c.store.r), 10, "the test's Redis client to reconnect")
    # (processes left running may write again at once: no "dbsize == 0" check here)


def _ping(client: redis.Redis) -> bool:
    try:
        return bool(client.ping())
    except redis.RedisError:
        return False


def _bring_to(c, state: str, rng: random.Random) -> None:
    order = c.resting_order()
    if state == "order_resting":              # whatever A holds is hedged; its next order rests
        return
    if state == "long_hedged_order_resting":  # A long (hedged by B), its closing order resting
        if not order["is_ask"]:
            fill_round(c, rng)
            check_invariants(c, "redis_loss.setup", record=False)
            assert c.resting_order()["is_ask"]
        return
    # a fill of A counted and enqueued, its hedge stuck in the worker before the write-ahead
    c.tap.hold("lh:leg_seq")
    fill_round(c, rng)
    wait_until(c.tap.held.is_set, 30, "the worker stuck before its write-ahead")


def _run(chaos, seed: int, restart_all: bool, check_coi: bool, label: str = "redis_loss") -> None:
    rng, plan = shuffled_plan(seed, STATES, 1, 5)
    c = chaos(seed, private_redis=True, tap=True)
    c.start_worker()
    c.start_maker()
    with logs_on_failure(c, lambda: (f"plan={plan} redis_keys={sorted(c.store.r.keys('*'))} "
                                   f"hedge.b_len={c.store.r.llen('hedge.b')}")):
        fill_round(c, rng)  # B has hedge legs (client_order_index 1..) from before the first wipe
        check_invariants(c, "redis_loss.setup", record=False)
        for state in plan:
            kind = f"{label}.{'restart_all' if restart_all else 'processes_keep_running'}.{state}"
            started, since, executed_before = time.monotonic(), last_trade_id(c), executed_b_orders(c)
            _bring_to(c, state, rng)
            if state == "fill_unhedged_worker_stuck_before_write_ahead":
                c.kill9("worker")  # killed while stuck, before its held connection is dropped
            _wipe(c)
            if restart_all:
                for name in ("maker", "worker"):
                    if name in c.procs:
                        c.kill9(name)
            else:
                # The maker exits on a lost Redis connection (its supervisor restarts it); give it
                # a bounded moment to show whether it survives, then restart whatever died.
                try:
                    wait_until(lambda: c.procs["maker"].poll() is not None, 8, "the maker to exit", interval_s=0.2)
                except AssertionError:
                    pass
            c.tap.release_all()
            for name, start in (("worker", c.start_worker), ("maker", c.start_maker)):
                if name not in c.procs or c.procs[name].poll() is not None:
                    c.procs.pop(name, None)
                    start()
            check_invariants(c, kind, since_trade_id=since, timeout_s=45, check_coi=check_coi)
            record_recovered(kind, c, executed_before, started)


def test_redis_loses_everything_client_order_indexes_stay_unique(chaos):
    """Every invariant, including: no client_order_index of B executed twice across the loss (the leg
    sequence restarts from the clock, hedge.plan.leg_seq_start)."""
    _run(chaos, 801, restart_all=True, check_coi=True, label="redis_loss_coi_check")


def test_redis_loses_everything_exposure_every_process_restarted(chaos):
    """Exposure back to zero (or a stated pause), nothing left in flight, the maker trading again.
    (Uniqueness of B's client_order_index across the loss: the test above.)"""
    _run(chaos, 802, restart_all=True, check_coi=False)


def test_redis_loses_everything_exposure_processes_keep_running(chaos):
    """The same, with the maker and worker left running to reconnect by themselves (restarted only
    if they died; the worker stuck on a held Redis connection is killed)."""
    _run(chaos, 803, restart_all=False, check_coi=False)
