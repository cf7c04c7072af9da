"""The account stream of A dropped or silenced (/admin/ws/drop, /admin/ws/pause: frames are
dropped, not queued) while A's order fills: the fills of the gap must be found (reconnect
backfill, the order re-read, the periodic REST backfill) and hedged once."""
from __future__ import annotations

import time

import pytest

from tests.chaos.harness import (MIN_BASE, check_invariants, executed_b_orders, fill_round, last_trade_id,
                                 logs_on_failure, record_recovered, shuffled_plan, wait_until)

pytestmark = pytest.mark.timeout(420)

VARIANTS = ("pause_fill_unpause", "drop_then_fill", "pause_fill_drop_unpause", "silent_through_the_round")


def test_stream_gaps_with_fills_during_the_gap(chaos):
    seed = 701
    rng, plan = shuffled_plan(seed, VARIANTS, 6, 40)   # CHAOS_SOAK: 40 of each
    c = chaos(seed)
    c.start_worker()
    c.start_maker()
    with logs_on_failure(c, lambda: f"plan={plan}"):
        for variant in plan:
            kind = f"stream_gap.{variant}"
            started, since, executed_before = time.monotonic(), last_trade_id(c), executed_b_orders(c)
            c.resting_order()
            a_before = c.positions()[0]
            if variant == "pause_fill_unpause":
                c.sim.admin("/admin/ws/pause", {"paused": True})
                fill_round(c, rng)
                time.sleep(rng.uniform(0.05, 0.5))  # the gap's length is the scenario's parameter
                c.sim.admin("/admin/ws/pause", {"paused": False})
            elif variant == "drop_then_fill":
                c.sim.admin("/admin/ws/drop", {})
                fill_round(c, rng)
            elif variant == "pause_fill_drop_unpause":
                c.sim.admin("/admin/ws/pause", {"paused": True})
                fill_round(c, rng)
                c.sim.admin("/admin/ws/drop", {})
                c.sim.admin("/admin/ws/pause", {"paused": False})
            else:
                c.sim.admin("/admin/ws/pause", {"paused": True})
                fill_round(c, rng)
                # no frame at all: the maker must find the fills over REST by itself
                wait_until(lambda: (c.positions()[0] != a_before and abs(sum(c.positions())) < MIN_BASE)
                           or c.paused_reason(), 30, "the gap's fills hedged with the stream silent")
                c.sim.admin("/admin/ws/pause", {"paused": False})
            check_invariants(c, kind, since_trade_id=since, timeout_s=40)
            record_recovered(kind, c, executed_before, started)
