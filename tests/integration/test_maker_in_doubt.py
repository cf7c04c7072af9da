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

    # The maker asked the venue instead of sending again: one order taken. (The fault also hits the
    # dead-man's cancel-all: the order after it is its fence and may be refused "invalid nonce".)
    taken = [e for e in creates(c.orders_log(A)) if e["result"] == "accepted"]
    assert len(taken) == 1 and taken[0]["client_order_index"] == order["client_order_index"], taken
    c.fill(order, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the hedge of the in-doubt order's fill")
    wait_until(lambda: c.store.maker_order("ETH") is None or
               c.store.maker_order("ETH")["client_order_index"] != order["client_order_index"], 30,
               "the written-ahead record of the filled order to be closed")


def test_order_that_never_arrived_is_fenced_then_the_market_trades_once(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.sim.admin("/admin/faults", {"http_5xx_rate": 1.0, "accounts": [A]})  # 502, not applied
    c.start_maker()
    wait_until(lambda: creates(c.orders_log(A)), 30, "A's first order (refused with a 502, not applied)")
    # Its fate unknown, nothing new is quoted: the maker fences its nonce (a tx on the same nonce)
    # instead of sending another order after some grace time.
    wait_until(lambda: "event=maker.fence" in c.log("maker"), 30, "the maker fencing the lost order's nonce")
    assert len(creates(c.orders_log(A))) == 1 and c.active_orders() == []
    c.sim.admin("/admin/faults", {})

    order = c.wait_resting_order()
    attempts = creates(c.orders_log(A))
    assert len({e["client_order_index"] for e in attempts}) == len(attempts)  # a new index each time
    assert [e["result"] for e in attempts].count("accepted") == 1
    assert len(c.active_orders()) == 1 and c.active_orders()[0]["order_index"] == order["order_index"]
