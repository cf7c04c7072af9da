"""Lighter's documented definite rejects on B's hedge (margin, market not active, reduce-only):
each fails the hedge on its first attempt (no Celery retry, one order at the venue) and pauses A
with the venue's code and words where the operator looks. One cluster, the codes in sequence."""
from __future__ import annotations

import json
import time

import pytest

from tests.integration.cluster import B, wait_until
from venue.sim.faults import DEFINITE_REJECTS

pytestmark = pytest.mark.integration
CODES = (21507, 21605, 21732)


def _final_meta(c, task_id: str) -> dict | None:
    raw = c.store.r.get(c.store.result_key(task_id))
    meta = json.loads(raw) if raw else None
    return meta if meta and meta["status"] in ("SUCCESS", "FAILURE") else None


def test_documented_rejects_on_b_fail_the_hedge_at_once_and_pause_with_the_venues_words(make_cluster):
    # Retries would be quick and plentiful, so a retried reject would show as a second attempt.
    c = make_cluster(strategy={"max_retries": 3, "retry_backoff_max_s": 1})
    c.start_worker()
    c.start_maker()
    for code in CODES:
        words = DEFINITE_REJECTS[code]
        c.sim.admin("/admin/faults", {"reject_rate": 1, "reject_code": code, "accounts": [B]})
        b_sends_before = len([e for e in c.orders_log(B) if e["tx_type"] == 14])
        order = c.wait_resting_order()
        fill_id = str(c.fill(order, [order["remaining_base_amount"]])["trade_ids"][0])
        task_id = f"hedge-ETH-{fill_id}"
        filled_at = time.monotonic()

        meta = wait_until(lambda: _final_meta(c, task_id), 30, f"{task_id} ({code}) to finish", interval_s=0.05)
        took_s = time.monotonic() - filled_at
        assert meta["status"] == "FAILURE", (code, meta)
        assert meta.get("retries", 0) == 0, (code, meta)   # first attempt, never re-scheduled
        assert took_s < 5, f"{code}: the hedge took {took_s:.1f}s to fail; a definite reject must not wait"
        result = json.dumps(meta["result"])
        assert f"code={code}" in result and words in result, (code, result)
        b_sends = [e for e in c.orders_log(B) if e["tx_type"] == 14]
        assert len(b_sends) == b_sends_before + 1, (code, b_sends[b_sends_before:])  # one order, not resent

        # The market pauses; its reason and the failed hedge name the venue's code and words.
        pause = wait_until(lambda: c.store.paused("ETH"), 30, f"the market to pause on {code}")
        failed = c.store.failed("ETH")
        assert task_id in failed, (code, failed)
        assert f"code={code}" in failed[task_id]["reason"] and words in failed[task_id]["reason"], failed
        assert f"code={code}" in pause["reason"] and words in pause["reason"], (code, pause)
        wait_until(lambda: c.maker_state() == "PAUSED", 30, "the maker to stop quoting")
        assert c.active_orders() == []

        # The operator's way out: venue healthy again, requeue the hedge, resume.
        c.sim.admin("/admin/faults", {})
        assert c.cli("requeue", "--all-failed").returncode == 0
        wait_until(lambda: (_final_meta(c, task_id) or {}).get("status") == "SUCCESS", 30,
                   f"the requeued {task_id} to hedge")
        assert c.cli("resume", "--market", "ETH").returncode == 0
        wait_until(lambda: c.store.paused("ETH") is None, 10, "the pause to end")
