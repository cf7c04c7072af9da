"""Redis loses everything while a hedge leg is on the wire, and every process is left running.

Before the ledger had a generation, the leg settled into the empty ledger (hedged without a fill)
and the same task then sent the opposite order to "hedge" that. Now the task finds its generation
gone, stops and sends nothing more; the maker exits (its supervisor restarts it) and its reconcile
at start compares A+B at the venue with the new, empty ledger.
"""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from tests.integration.cluster import A, B, wait_until

pytestmark = pytest.mark.integration

Q = Decimal("0.0500")


def b_creates(c) -> list[dict]:
    return [e for e in c.orders_log(B) if e["tx_type"] == 14 and e["result"] == "accepted"]


def test_redis_wiped_while_a_leg_is_on_the_wire_sends_no_second_leg(make_cluster):
    c = make_cluster(strategy={"reconcile_interval_s": 5})
    c.sim.admin("/admin/faults", {"latency_ms": 2000, "accounts": [B]})   # B's sendTx answers after 2 s
    c.start_worker()
    c.start_maker()
    order = c.wait_resting_order()
    c.fill(order, [str(Q)])
    wait_until(lambda: "event=hedge.sending" in c.log("worker"), 30, "B's leg on the wire", interval_s=0.02)
    time.sleep(0.3)   # the fault under test: 0.3 s into the 2-s send
    c.store.r.flushdb()

    wait_until(lambda: "event=hedge.ledger_lost" in c.log("worker"), 30, "the worker to find its ledger gone")
    # The maker leaves on its next ledger check (nothing of A resting behind it); restarted like supervisord does.
    wait_until(lambda: c.procs["maker"].poll() is not None, 30, "the maker to exit on the lost ledger")
    assert "ledger lost" in c.log("maker")
    wait_until(lambda: c.active_orders(A) == [], 30, "A's orders cancelled by the exiting maker")
    c.procs.pop("maker")
    c.start_maker()
    wait_until(lambda: "event=maker.reconcile" in c.log("maker") and c.active_orders(A), 60,
               "the restarted maker to reconcile and quote again")

    assert len(b_creates(c)) == 1, b_creates(c)   # the leg on the wire, and nothing after it
    assert c.position(A) == Q and c.position(B) == -Q
    assert c.store.paused("ETH") is None
    ledger = c.store.ledger("ETH")
    assert ledger.a_filled == ledger.hedged == 0 and not ledger.pending


def test_every_ledger_write_of_a_lost_generation_is_refused_before_it_writes(redis_url):
    """The store's side of it: counting a fill, opening, updating and closing a leg, and the
    worker's first round trip each check the generation atomically with their writes."""
    import redis

    from hedge.leg import Leg
    from tasks.store import LedgerLostError, Store

    redis.Redis.from_url(redis_url).flushdb()
    store = Store.from_url(redis_url)
    store.expected_generation = store.ensure_generation()
    fill = {"fill_id": "1", "market_index": 0}
    assert store.record_fill("ETH", fill, 500)
    leg, _ = store.open_leg_checked("ETH", Leg(leg=0, client_order_index=0, is_ask=True, base_int=500,
                                               worst_price_int=1, fill_id="1", written_ms=1), 0, 100)
    assert leg is not None

    store.r.flushdb()   # Redis loses everything; a new generation starts
    Store.from_url(redis_url).ensure_generation()
    for write in (lambda: store.record_fill("ETH", {**fill, "fill_id": "2"}, 500),
                  lambda: store.record_fills("ETH", [({**fill, "fill_id": "3"}, 5, "t3"), ({**fill, "fill_id": "4"}, 5, "t4")]),
                  lambda: store.open_leg_checked("ETH", leg, 0, 100),
                  lambda: store.update_leg("ETH", leg.sent(2, "0xab", 3)),
                  lambda: store.close_leg("ETH", leg.rejected("test")),
                  lambda: store.send_begin_hedge("ETH", {**fill, "fill_id": "5"}, 500).result()):
        with pytest.raises(LedgerLostError, match="is gone"):
            write()
    other = Store.from_url(redis_url)
    assert other.ledger("ETH").a_filled == 0 and other.fills("ETH") == {} and other.legs("ETH") == []
    store.r.flushdb()
