"""The engine within Lighter's request budget, end to end: the simulator on the `standard` profile
(60 requests a minute for A and B together, 300/200 ms speed bumps, nextNonce 300 ms behind),
real worker and maker processes, the fault plan each test names."""
from __future__ import annotations

from decimal import Decimal

import pytest

from tests.integration.cluster import A, B, wait_until
from venue.sim.harness import fill_new_orders

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")


def _rounds(c) -> int:
    return int(c.store.stats("ETH").get("rounds", 0))


def _fill_rounds(c, n: int, timeout_s: float = 90) -> None:
    """Fill A's resting orders whole until `n` more open/close rounds are done."""
    target = _rounds(c) + n
    filled: set[int] = set()

    def step():
        fill_new_orders(c, filled)
        return _rounds(c) >= target
    wait_until(step, timeout_s, f"{n} rounds", interval_s=0.05)


def _venue_429s(c) -> int:
    stats = c.sim.admin("/admin/stats")["requests"]
    return sum(counts.get("http_429", 0) for per in stats.values() for counts in per.values())


def _reads(c) -> int:
    stats = c.sim.admin("/admin/stats")["requests"]
    return sum(counts.get("requests", 0) for per in stats.values()
               for endpoint, counts in per.items() if endpoint not in ("sendTx", "sendTxBatch"))


def test_rounds_on_standard_spend_only_their_sendtx_and_draw_no_429(make_cluster):
    c = make_cluster(profile="standard")
    c.start_worker()
    c.start_maker()
    c.wait_resting_order()
    reads_before = _reads(c)
    _fill_rounds(c, 4)
    assert _venue_429s(c) == 0
    assert _reads(c) - reads_before <= 1          # A's orders, the book, B's confirmations: streams
    assert c.position(A) + c.position(B) == 0
    assert c.store.failed("ETH") == {} and c.store.paused("ETH") is None


def test_a_burst_of_429s_on_both_accounts_fails_no_hedge_and_kills_no_loop(make_cluster):
    """Half of A's and B's sendTx refused with 429 (not taken) while rounds run: the client waits
    on the budget and sends the same signed tx again; no Celery retry is spent on a 429."""
    c = make_cluster(profile="standard")
    c.start_worker()
    c.start_maker()
    c.wait_resting_order()
    c.sim.admin("/admin/faults", {"rate_limit_rate": 0.5, "seed": 3, "accounts": [A, B]})
    _fill_rounds(c, 2, timeout_s=120)
    c.sim.admin("/admin/faults", {})
    refused = [e for e in c.orders_log(B) if e["code"] == 23000]
    assert refused, "the fault plan refused none of B's hedges: the test proves nothing"
    _fill_rounds(c, 1)                                  # both loops still alive and trading
    assert c.store.failed("ETH") == {} and c.store.paused("ETH") is None
    assert "event=hedge.retry " not in c.log("worker")  # 429s never spent a Celery retry
    assert c.position(A) + c.position(B) == 0
    assert not c._died("maker") and not c._died("worker")


def test_a_dropped_stream_falls_back_to_rest_within_the_budget_and_catches_up(make_cluster):
    c = make_cluster(profile="standard")
    c.start_worker()
    c.start_maker()
    order = c.wait_resting_order()
    c.sim.admin("/admin/ws/drop", {})                   # every WebSocket: fills, orders, books
    c.fill(order, [order["remaining_base_amount"]])
    wait_until(lambda: c.position(B) == -Q, 30, "B hedged after the drop")
    _fill_rounds(c, 2)
    assert _venue_429s(c) == 0
    assert c.position(A) + c.position(B) == 0
    assert c.store.failed("ETH") == {} and c.store.paused("ETH") is None
