"""Venue faults at a set rate, seeded: B's (and A's) sendTx answered with 429, "invalid nonce",
5xx before / after applying, timeouts (applied before / after / never) and slippage rejects.

One cluster runs many rounds; every injected fault is one scenario, and after every round
(A's order filled in 1-3 seeded chunks, its hedges done) the invariants are checked. The
per-kind count comes from the simulator's own log (`event=fault kind=...`), not from intent.
"""
from __future__ import annotations

import random
import time

import pytest

from tests.chaos.harness import (A, B, FIGURES, check_invariants, executed_b_orders, fill_round,
                                 last_trade_id, logs_on_failure, record_hedges, rounds, wait_until)

pytestmark = pytest.mark.timeout(420)

# kind -> (simulator's fault kind, fault settings, faults to inject by default, in the soak)
KINDS = {
    "rate_limit_429": ("rate_limit", {"rate_limit_rate": 0.4}, 14, 120),   # ~2 s each: the backoff
    "invalid_nonce": ("invalid_nonce", {"invalid_nonce_rate": 0.4}, 24, 120),
    "http_5xx_before_apply": ("http_5xx", {"http_5xx_rate": 0.4}, 10, 100),
    "http_5xx_after_apply": ("http_5xx_after", {"http_5xx_after_rate": 0.4}, 24, 120),
    "timeout": ("timeout", {"timeout_rate": 0.4, "timeout_mode": "random", "timeout_s": 0.6}, 12, 100),
    "slippage_reject": ("slippage", {"slippage_rate": 0.4}, 24, 120),
}
MIXED = {"rate_limit_rate": 0.05, "invalid_nonce_rate": 0.05, "http_5xx_rate": 0.05,
         "http_5xx_after_rate": 0.05, "timeout_rate": 0.05, "timeout_mode": "random", "timeout_s": 0.6,
         "slippage_rate": 0.05}


def run_faulted_rounds(c, kind: str, sim_kind: str | None, settings: dict, target: int, seed: int) -> None:
    rng = random.Random(seed)
    label = f"venue_fault.{kind}"
    started, since, executed_before = time.monotonic(), last_trade_id(c), executed_b_orders(c)
    before = c.faults_injected(sim_kind)
    c.set_faults(seed=seed, **settings)
    done_rounds = 0
    while c.faults_injected(sim_kind) - before < target:
        assert done_rounds < 6 * target, f"only {c.faults_injected(sim_kind) - before} {kind} faults in {done_rounds} rounds"
        hedged_before = len(executed_b_orders(c))
        fill_round(c, rng)
        wait_until(lambda: c.quiescent() and len(executed_b_orders(c)) > hedged_before, 60,
                   f"[{kind}] the round's hedge", interval_s=0.05)
        check_invariants(c, label, since_trade_id=since)
        done_rounds += 1
    c.set_faults()
    injected = c.faults_injected(sim_kind) - before
    FIGURES[label].scenarios += injected
    FIGURES[label].faults_injected += injected
    record_hedges(label, c, executed_before)
    FIGURES[label].seconds += time.monotonic() - started


def test_venue_faults_every_kind_then_all_kinds_on_both_accounts(chaos):
    """B's sendTx faults kind by kind, each with its own seed; then every kind at once on A's
    orders and cancels too (the maker's side of "in doubt"); all in one running cluster."""
    c = chaos(401)
    c.start_worker()
    c.start_maker()
    with logs_on_failure(c):
        for i, (kind, (sim_kind, settings, default_n, soak_n)) in enumerate(KINDS.items()):
            run_faulted_rounds(c, kind, sim_kind, {**settings, "accounts": [B]}, rounds(default_n, soak_n),
                               seed=4000 + i)
        run_faulted_rounds(c, "mixed_on_a_and_b", None, {**MIXED, "accounts": [A, B]}, rounds(20, 150),
                           seed=4100)
