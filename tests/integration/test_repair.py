"""`lighter-hedge repair MARKET`: a ledger corrupted as a forged fill would corrupt it is rebuilt
from the venue (a_filled = A's position, hedged = -B's), after which the market trades and hedges
normally; and repair refuses, writing nothing, unless the market is paused with nothing in flight."""
from __future__ import annotations

import dataclasses
import json
import time
from decimal import Decimal

import pytest
import redis

from hedge.fill import BUY, Fill
from hedge.leg import Leg
from tasks.store import Store
from tests.integration.cluster import A, B, wait_until
from venue.sim.harness import AdminCallError

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")


def b_hedges(c) -> list[dict]:
    return [e for e in c.orders_log(B) if e["tx_type"] == 14 and e["result"] == "accepted"]


def fill_resting(c, is_ask: bool, size: str) -> None:
    """Fill A's next resting order on that side (the maker re-quotes every few seconds in this test:
    an order cancelled before the fill reached it is retried on the next one)."""
    def attempt() -> bool:
        orders = [o for o in c.active_orders() if o["is_ask"] is is_ask]
        if not orders:
            return False
        try:
            c.fill(orders[0], [size])
        except AdminCallError:   # cancelled at its timeout just now
            return False
        return True
    wait_until(attempt, 30, f"A's resting {'sell' if is_ask else 'buy'} filled")


def next_event(sub, name: str, timeout_s: float) -> dict:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = sub.get_message(timeout=max(0.0, deadline - time.monotonic()))
        if msg and msg["type"] == "message":
            event = json.loads(msg["data"])
            if event.get("event") == name:
                return event
    raise AssertionError(f"no {name} event within {timeout_s}s")


def test_repair_rebuilds_a_forged_ledger_from_the_venue_and_trading_resumes(make_cluster):
    # Short rounds and reconciles: the periodic reconcile finds the corrupted ledger within seconds.
    c = make_cluster(strategy={"maker_order_timeout_s": 3, "reconcile_interval_s": 1})
    c.start_worker()
    c.start_maker()
    fill_resting(c, is_ask=False, size="0.0500")
    wait_until(lambda: c.position(B) == -Q, 30, "B hedged A's buy")
    wait_until(lambda: not c.store.inflight("ETH"), 30, "the hedge task to finish")
    hedged_ok = c.store.ledger("ETH")
    assert hedged_ok.unhedged == 0 and hedged_ok.a_filled > 0

    # Trading (not paused): refused in one line, nothing written.
    refused = c.cli("repair", "ETH", "--yes")
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert refused.stderr.strip().splitlines() == [refused.stderr.strip()] and "not paused" in refused.stderr
    assert c.store.ledger("ETH") == hedged_ok

    # A forged 1,000,000 ETH fill counted in the ledger (as a forged task message once could).
    units_per_eth = Decimal(hedged_ok.a_filled) / Q
    forged = Fill(fill_id="forged-1", market_index=0, side=BUY, base_amount=Decimal(1_000_000),
                  price=Decimal(3000), order_index=0, client_order_index=0, ts_exchange_ms=0, ts_seen_ms=0)
    real_fill_ids = set(c.store.fills("ETH"))
    assert c.store.record_fill("ETH", forged.to_message(), int(1_000_000 * units_per_eth))
    pause = wait_until(lambda: c.store.paused("ETH"), 60, "the reconcile to pause the market")
    assert "gap" in pause["reason"], pause
    row = json.loads(c.cli("status", "--json").stdout.splitlines()[0])
    assert Decimal(row["unhedged"]) == Decimal(1_000_000) and Decimal(row["net_exposure"]) == 0

    # Paused, but a hedge task in flight: refused.
    c.store.mark_inflight("ETH", "hedge-ETH-in-flight-test")
    busy = c.cli("repair", "ETH", "--yes")
    assert busy.returncode == 2 and "in flight" in busy.stderr and "status" in busy.stderr, busy.stderr
    c.store.clear_inflight("ETH", "hedge-ETH-in-flight-test")

    # No answer to the confirmation: the diff is shown, nothing written.
    corrupted = c.store.ledger("ETH")
    unconfirmed = c.cli("repair", "ETH")
    assert unconfirmed.returncode == 1 and "a_filled" in unconfirmed.stdout
    assert c.store.ledger("ETH") == corrupted

    sub = c.store.r.pubsub()
    sub.subscribe(c.store.events_channel)
    wait_until(lambda: sub.get_message(timeout=0.1), 5, "the events subscription")
    done = c.cli("repair", "ETH", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    diff = {line.split()[0]: line for line in done.stdout.splitlines() if line.startswith("  ")}
    assert "1000000.0500 -> 0.0500" in diff["a_filled"], done.stdout
    assert "1000000.0000 -> 0" in diff["unhedged"], done.stdout
    assert "event=ledger.repaired market=ETH before=" in done.stderr and "after=" in done.stderr
    assert "resume --market ETH" in done.stdout and "to trade again" in done.stdout
    event = next_event(sub, "ledger.repaired", 10)
    assert event["market"] == "ETH" and event["after"]["unhedged"] == 0
    assert event["before"]["unhedged"] == int(1_000_000 * units_per_eth)

    repaired = c.store.ledger("ETH")
    a, b = c.position(A), c.position(B)
    assert a == Q and b == -Q
    assert (repaired.a_filled, repaired.hedged, repaired.pending) == (int(a * units_per_eth), int(-b * units_per_eth), [])
    assert repaired.unhedged == int((a + b) * units_per_eth) == 0
    # Dedupe intact: every fill id ever recorded stays known, the forged one included.
    assert set(c.store.fills("ETH")) >= real_fill_ids | {"forged-1"}
    assert c.store.paused("ETH") is not None   # still paused until the operator resumes
    again = c.cli("repair", "ETH", "--yes")
    assert again.returncode == 0 and "nothing to repair" in again.stdout, again.stdout + again.stderr

    # Resumed: the maker closes A's long, B's hedge takes B flat, once.
    hedges_before = len(b_hedges(c))
    resumed = c.cli("resume", "--market", "ETH")
    assert resumed.returncode == 0, resumed.stderr
    fill_resting(c, is_ask=True, size="0.0500")
    wait_until(lambda: c.position(A) == 0 and c.position(B) == 0, 30, "A closed and B's hedge back to flat")
    wait_until(lambda: not c.store.inflight("ETH"), 30, "the close's hedge task to finish")
    after = c.store.ledger("ETH")
    assert (after.a_filled, after.hedged, after.pending) == (0, 0, [])
    new_hedges = b_hedges(c)[hedges_before:]
    assert len(new_hedges) == 1 and new_hedges[0]["is_ask"] is False
    assert Decimal(new_hedges[0]["base_amount"]) == Q * units_per_eth
    assert c.store.paused("ETH") is None and c.store.failed("ETH") == {}


def test_repair_writes_nothing_onto_a_ledger_that_moved_or_a_market_resumed(redis_url):
    """The compare-and-set under the command (Store.repair_ledger), against Redis alone."""
    redis.Redis.from_url(redis_url).flushdb()
    store = Store.from_url(redis_url)
    fill = Fill(fill_id="7", market_index=0, side=BUY, base_amount=Q, price=Decimal(3000), order_index=1,
                client_order_index=1, ts_exchange_ms=0, ts_seen_ms=0)
    store.record_fill("ETH", fill.to_message(), 500)
    store.pause("ETH", "test", by="test")
    snap = store.ledger_snapshot("ETH")

    late = dataclasses.replace(fill, fill_id="8")
    store.record_fill("ETH", late.to_message(), 500)   # a fill counted after the snapshot
    assert store.repair_ledger("ETH", snap, 0, 0, [], []) == "moved"
    assert store.ledger("ETH").a_filled == 1000

    snap = store.ledger_snapshot("ETH")
    store.resume("ETH")
    assert store.repair_ledger("ETH", snap, 0, 0, [], []) == "not paused"
    assert store.ledger("ETH").a_filled == 1000

    # Pending legs named stale are dropped from the pending set (repair names only closed ones: an
    # open leg makes it refuse first); a re-marked fill is known but not counted.
    store.pause("ETH", "test", by="test")
    leg, _ = store.open_leg_checked("ETH", Leg(leg=0, client_order_index=0, is_ask=True, base_int=500,
                                               worst_price_int=0, fill_id="7"), 0, limit_per_minute=10**9)
    assert leg is not None
    snap = store.ledger_snapshot("ETH")
    assert [n for n, _ in snap.pending] == [leg.leg] and snap.open_legs and not snap.stale_legs
    closed = dataclasses.replace(snap, pending=((leg.leg, leg.executed("filled", 1, 500, "150")),))
    assert closed.stale_legs == [leg.leg] and not closed.open_legs
    remark = dataclasses.replace(fill, fill_id="9").to_message()
    assert store.repair_ledger("ETH", snap, 500, 500, [leg.leg], [remark]) is None
    ledger = store.ledger("ETH")
    assert (ledger.a_filled, ledger.hedged, ledger.pending) == (500, 500, [])
    assert store.known_fill_ids("ETH", ["7", "8", "9", "10"]) == {"7", "8", "9"}
    assert not store.record_fill("ETH", remark, 500)   # the stream replaying it counts nothing
    assert store.ledger("ETH").a_filled == 500
