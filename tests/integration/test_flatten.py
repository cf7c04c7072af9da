"""`lighter-hedge flatten`: both accounts flat, the market paused, the ledger still consistent."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from tests.integration.cluster import A, B, wait_until

pytestmark = pytest.mark.integration


def test_flatten_closes_both_accounts_pauses_and_trading_resumes_cleanly(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    buy = c.wait_resting_order()
    c.fill(buy, ["0.0300"])  # a partial fill: the rest of A's order still rests
    wait_until(lambda: c.position(B) == Decimal("-0.0300"), 30, "the hedge")

    refused = c.cli("flatten")  # no --yes and no one to answer the prompt
    assert refused.returncode != 0 and c.position(A) == Decimal("0.0300")

    done = c.cli("flatten", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.position(A) == 0 and c.position(B) == 0
    assert c.active_orders() == []
    row = json.loads(c.cli("status", "--json").stdout.splitlines()[0])
    assert row["paused"] is True and row["pause_reason"] == "flattened by operator"
    assert Decimal(row["unhedged"]) == 0 and row["legs_in_doubt"] == 0

    # Nothing double-counted: after resume the maker trades a normal round to zero exposure.
    assert c.cli("resume").returncode == 0
    buy = wait_until(lambda: [o for o in c.active_orders() if not o["is_ask"]], 30, "a new opening order")[0]
    c.fill(buy, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the new hedge")
    assert c.position(A) + c.position(B) == 0
    assert c.store.paused("ETH") is None
