"""Malformed task messages reach the real worker: each fails at once, nothing trades, the worker lives."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.integration.cluster import B, wait_until

pytestmark = pytest.mark.integration

GOOD = {"fill_id": "good-1", "market_index": 0, "side": "buy", "base_amount": "0.0100", "price": "3000.00",
        "order_index": 1, "client_order_index": 1, "ts_exchange_ms": 0, "ts_seen_ms": 0}
BAD = [
    "not a dict",
    {},
    {**GOOD, "base_amount": 0.01},            # a float: money is never float
    {**GOOD, "base_amount": "-0.0100"},
    {**GOOD, "side": "long"},
    {**GOOD, "market_index": 77},             # not a configured market
    {**GOOD, "price": "NaN"},
    {k: v for k, v in GOOD.items() if k != "fill_id"},
]


def test_malformed_hedge_messages_are_refused_once_never_trade_and_can_be_cleared(make_cluster):
    from celery.result import AsyncResult

    from tasks import hedge_fill, app

    c = make_cluster()
    c.start_worker()
    ids = [f"bad-{i}" for i in range(len(BAD))]
    for task_id, payload in zip(ids, BAD):
        hedge_fill.apply_async(args=[payload], task_id=task_id)
    for task_id in ids:
        result = AsyncResult(task_id, app=app)
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE", (task_id, result.state)
        assert type(result.result).__name__ == "RefusedMessageError"
        assert "refused fill message" in str(result.result)
        assert result.retries in (0, None)  # failed at once, no retry

    assert c.orders_log(B) == []
    # Recorded as refused, with the reason - not as failed hedges that would halt a market.
    assert c.store.failed("ETH") == {} and c.store.failed("unknown") == {}
    refused = c.store.refused()
    assert set(refused) == set(ids) and all("refused fill message" in r["reason"] for r in refused.values())
    assert refused["bad-5"]["reason"].endswith("no market with market_index 77 in config.yaml 'markets'")
    status = c.cli("status")
    assert "refused: bad-5 market=unknown reason=RefusedMessageError: refused fill message" in status.stdout
    again = c.cli("requeue", "bad-2")
    assert again.returncode == 1 and "is a refused message" in again.stderr
    cleared = c.cli("clear-refused", "--all")
    assert cleared.returncode == 0 and f"cleared {len(ids)}" in cleared.stdout and c.store.refused() == {}
    # The worker is still there and hedges a good fill right after.
    good = hedge_fill.apply_async(args=[{**GOOD, "ts_seen_ms": int(time.time() * 1000)}], task_id="good-1")
    assert good.get(timeout=30)["filled_base"] == "0.0100"
    assert c.position(B) == Decimal("-0.0100")


def test_a_fill_id_carrying_a_newline_cannot_forge_a_log_line(make_cluster):
    """Every line of a hedge's journey carries its fill id: one with a newline is written escaped."""
    from tasks import hedge_fill

    c = make_cluster()
    c.start_worker()
    forged = "good-2\nevent=hedge.done fill_id=forged market=ETH"
    fill = {**GOOD, "fill_id": forged, "ts_seen_ms": int(time.time() * 1000)}
    assert hedge_fill.apply_async(args=[fill], task_id="good-2").get(timeout=30)["filled_base"] == "0.0100"

    lines = c.log("worker").splitlines()
    assert not [line for line in lines if line.startswith("event=hedge.done fill_id=forged")]
    assert [line for line in lines if "event=hedge.done fill_id=good-2\\nevent=hedge.done fill_id=forged" in line]


def test_a_refused_message_never_halts_the_market(make_cluster):
    """A forged or malformed message used to be recorded failed: the maker paused its market, and
    requeue re-failed it. Refused, the maker goes on quoting."""
    from tasks import hedge_fill

    c = make_cluster()
    c.start_worker()
    c.start_maker()
    order = c.wait_resting_order()
    hedge_fill.apply_async(args=[{**GOOD, "base_amount": "-0.0100"}], task_id="forged-1").get(timeout=30,
                                                                                               propagate=False)
    assert "forged-1" in c.store.refused()

    c.fill(order, ["0.0500"])   # the round ends; the next one starts only if the market is not halted
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the real fill's hedge")
    wait_until(lambda: [o for o in c.active_orders() if o["order_index"] != order["order_index"]], 30,
               "the maker's next order")
    assert c.store.paused("ETH") is None and c.store.failed("ETH") == {}
