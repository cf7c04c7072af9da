"""A definite reject from the venue (B has not enough margin) fails the hedge at once: no retry,
no second order, and A pauses with the venue's reason where the operator looks."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from tests.integration.cluster import A, B, MASTER, wait_until

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")
ACCOUNTS_B_BROKE = [
    {"index": A, "master": MASTER, "collateral": "1000000", "api_key_indexes": [3]},
    {"index": B, "master": MASTER, "collateral": "1", "api_key_indexes": [4]},
]


def status_row(c) -> dict:
    out = c.cli("status", "--json", "--market", "ETH")
    assert out.returncode == 0 or out.stdout.strip(), out.stderr
    return json.loads(out.stdout.splitlines()[0])


def test_not_enough_margin_on_b_fails_the_hedge_at_once_and_pauses_a(make_cluster):
    # Retries would be quick and plentiful, so a retried reject would show as extra attempts.
    c = make_cluster(sim={"accounts": ACCOUNTS_B_BROKE}, strategy={"max_retries": 3, "retry_backoff_max_s": 1})
    c.start_worker()
    c.start_maker()

    buy = c.wait_resting_order()
    fill_id = str(c.fill(buy, ["0.0500"])["trade_ids"][0])
    task_id = f"hedge-ETH-{fill_id}"
    filled_at = time.monotonic()

    def final_result():
        raw = c.store.r.get(c.store.result_key(task_id))
        meta = json.loads(raw) if raw else None
        return meta if meta and meta["status"] in ("SUCCESS", "FAILURE") else None

    meta = wait_until(final_result, 30, f"{task_id} to reach a final state", interval_s=0.05)
    took_s = time.monotonic() - filled_at
    assert meta["status"] == "FAILURE", meta
    assert meta.get("retries", 0) == 0, meta  # failed on its first run, never re-scheduled
    assert took_s < 5, f"the hedge took {took_s:.1f}s to fail; a definite reject must not wait on retries"
    assert "21739" in json.dumps(meta["result"]) or "not enough margin" in json.dumps(meta["result"]), meta

    # The venue saw exactly one hedge order from B, and refused it for margin.
    b_creates = [e for e in c.orders_log(B) if e["tx_type"] == 14]
    assert [(e["result"], e["code"]) for e in b_creates] == [("rejected", 21739)], b_creates
    assert "not enough margin" in b_creates[0]["message"]
    assert b_creates[0]["is_ask"] is True  # it was the hedge of A's buy

    # A pauses, and the operator sees why: the venue's reason, the failed hedge and the open position.
    wait_until(lambda: c.maker_state() == "PAUSED", 30, "the maker to pause")
    row = status_row(c)
    assert row["paused"] is True and row["failed"] == 1, row
    told = (row["pause_reason"] or "") + json.dumps(row["failed_hedges"])
    assert "not enough margin" in told or "21739" in told, row
    assert task_id in row["failed_hedges"] and str(row["failed_hedges"][task_id]["fill_id"]) == fill_id, row
    assert Decimal(row["net_exposure"]) == Q and c.position(B) == 0

    # A placed nothing after its filled buy, and nothing rests.
    a_creates = [e for e in c.orders_log(A) if e["tx_type"] == 14]
    assert [(e["order_index"], e["result"]) for e in a_creates] == [(buy["order_index"], "accepted")], a_creates
    assert c.active_orders(A) == []
    # Still one attempt at the venue now that everything has settled (no late retry).
    assert len([e for e in c.orders_log(B) if e["tx_type"] == 14]) == 1
