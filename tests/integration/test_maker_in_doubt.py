"""A's own order in doubt (the venue's answer lost): resolved by its client order index, never doubled."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.cluster import A, B, wait_until

pytestmark = pytest.mark.integration


def creates(log: list[dict]) -> list[dict]:
    return [e for e in log if e["tx_type"] == 14]


def test_order_applied_but_answer_lost_is_found_and_traded_not_sent_again(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.sim.admin("/admin/faults", {"http_5xx_after_rate": 1.0, "accounts": [A]})  # applied, then a 502
    c.start_maker()
    order = c.wait_resting_order()
    c.sim.admin("/admin/faults", {})

    assert len(creates(c.orders_log(A))) == 1  # the maker asked the venue instead of sending again
    c.fill(order, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the hedge of the in-doubt order's fill")
    wait_until(lambda: c.store.maker_order("ETH") is None or
               c.store.maker_order("ETH")["client_order_index"] != order["client_order_index"], 30,
               "the written-ahead record of the filled order to be closed")


def test_order_that_never_arrived_does_not_block_the_market_or_double(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.sim.admin("/admin/faults", {"http_5xx_rate": 1.0, "accounts": [A]})  # 502, not applied
    c.start_maker()
    wait_until(lambda: len(creates(c.orders_log(A))) >= 2, 30, "two attempts that never reached the book")
    assert c.active_orders() == []
    c.sim.admin("/admin/faults", {})

    order = c.wait_resting_order()
    attempts = creates(c.orders_log(A))
    assert len({e["client_order_index"] for e in attempts}) == len(attempts)  # a new index each time
    assert [e["result"] for e in attempts].count("accepted") == 1
    assert len(c.active_orders()) == 1 and c.active_orders()[0]["order_index"] == order["order_index"]
