"""The hedge pipeline end to end: real Redis, real Celery worker and maker processes, the simulator."""
from __future__ import annotations

import json
import time
from decimal import Decimal

import pytest

from hedge.fill import Fill
from tests.integration.cluster import A, B, wait_until

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")


def creates(log: list[dict]) -> list[dict]:
    return [e for e in log if e["tx_type"] == 14 and e["result"] == "accepted"]


def test_round_trip_open_long_hedged_short_close_hedged_ends_flat(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()

    buy = c.wait_resting_order()
    assert buy["is_ask"] is False and Decimal(buy["initial_base_amount"]) == Q
    c.fill(buy, ["0.0500"])
    wait_until(lambda: c.position(B) == -Q, 30, "B hedged short 0.05")

    sell = wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A's closing sell")[0]
    assert sell["reduce_only"] is True and Decimal(sell["initial_base_amount"]) == Q
    c.fill(sell, ["0.0500"])
    wait_until(lambda: c.store.stats("ETH").get("rounds") == 1, 30, "the round to complete")

    assert c.position(A) == 0 and c.position(B) == 0
    assert c.store.stats("ETH")["hedges"] == 2
    assert c.store.failed("ETH") == {} and c.store.paused("ETH") is None


def test_partial_fills_are_each_hedged_with_the_opposite_side(make_cluster):
    from celery.result import AsyncResult

    from tasks import app

    c = make_cluster()
    c.start_worker()
    c.start_maker()

    buy = c.wait_resting_order()
    trade_ids = c.fill(buy, ["0.0100", "0.0150", "0.0250"])["trade_ids"]
    wait_until(lambda: c.position(B) == -Q, 30, "B short the sum of A's fills")

    # Every fill has its own hedge task, and each one succeeded...
    for trade_id in trade_ids:
        result = AsyncResult(f"hedge-ETH-{trade_id}", app=app).get(timeout=30)
        assert result["fill_id"] == str(trade_id)
    # ...while fills that arrived together may share one B order (a task hedges all that is unhedged).
    hedges = creates(c.orders_log(B))
    assert 1 <= len(hedges) <= 3 and sum(e["base_amount"] for e in hedges) == 500  # size units
    assert all(e["is_ask"] for e in hedges)  # A bought, so B sold
    assert c.position(A) == Q and c.position(A) + c.position(B) == 0


def test_maker_places_nothing_while_a_hedge_is_in_flight(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    c.sim.admin("/admin/faults", {"latency_ms": 1500, "accounts": [B]})  # every hedge takes >= 1.5 s

    buy = c.wait_resting_order()
    c.fill(buy, ["0.0200", "0.0300"])
    wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A's next (closing) order")

    events = sorted(creates(c.orders_log(A)) + creates(c.orders_log(B)), key=lambda e: e["seq"])
    who = "".join("A" if e["account_index"] == A else "B" for e in events)
    # A's opening order, then every hedge reaches the venue, and only then A's next order.
    assert who in ("ABA", "ABBA"), events
    assert c.position(B) == -Q


def test_failed_hedge_pauses_then_requeue_and_resume_reach_zero_exposure(make_cluster):
    c = make_cluster(strategy={"max_retries": 2, "retry_backoff_max_s": 1})
    c.start_worker()
    c.start_maker()
    c.sim.admin("/admin/faults", {"http_5xx_rate": 1.0, "accounts": [B]})

    buy = c.wait_resting_order()
    c.fill(buy, ["0.0500"])
    pause = wait_until(lambda: c.store.paused("ETH"), 60, "the maker to pause after the hedge failed")
    assert "hedge-ETH-" in pause["reason"] and "failed" in pause["reason"]

    status = c.cli("status", "--json")
    row = json.loads(status.stdout.splitlines()[0])
    assert row["paused"] is True and row["failed"] == 1 and "failed" in row["pause_reason"]
    assert Decimal(row["net_exposure"]) == Q  # the operator sees the naked position
    assert len(creates(c.orders_log(A))) == 1  # A placed nothing after the failure

    c.sim.admin("/admin/faults", {})
    refused = c.cli("resume")
    assert refused.returncode == 1 and "failed hedge" in refused.stderr
    requeued = c.cli("requeue", "--all-failed")
    assert requeued.returncode == 0, requeued.stderr
    wait_until(lambda: c.position(B) == -Q, 30, "the requeued hedge to execute")
    wait_until(lambda: not c.store.failed("ETH"), 30, "the failed record to clear")
    assert c.cli("resume").returncode == 0

    sell = wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A's closing sell after resume")[0]
    c.fill(sell, ["0.0500"])
    wait_until(lambda: c.position(B) == 0, 30, "B hedged the close")
    assert c.position(A) == 0
    hedge_orders = creates(c.orders_log(B))
    assert len(hedge_orders) == 2  # nothing hedged twice across the retries and the requeue


def test_pause_survives_a_maker_restart(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    c.wait_resting_order()

    paused = c.cli("pause", "--reason", "operator check")
    assert paused.returncode == 0, paused.stderr
    wait_until(lambda: not c.active_orders(), 15, "A's resting order cancelled on pause")
    wait_until(lambda: c.maker_state() == "PAUSED", 15, "the maker to report PAUSED")

    c.stop("maker")
    c.store.set_state("ETH", "STOPPED")
    restarted_ms = int(time.time() * 1000)
    c.start_maker()
    wait_until(lambda: c.maker_state() == "PAUSED", 30, "the restarted maker to come up PAUSED")

    assert [e for e in creates(c.orders_log(A)) if e["ts_ms"] >= restarted_ms] == []
    row = json.loads(c.cli("status", "--json").stdout.splitlines()[0])
    assert row["paused"] is True and row["pause_reason"] == "operator check"


def test_duplicate_fill_delivered_again_after_restart_is_hedged_once(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    buy = c.wait_resting_order()
    c.fill(buy, ["0.0200"])
    wait_until(lambda: c.position(B) == Decimal("-0.0200"), 30, "the first hedge")

    # A new maker process has no memory of the trade: the stream snapshot and the REST
    # backfill deliver it again, with the same trade_id.
    c.stop("maker")
    c.start_maker()
    wait_until(lambda: "event=fill.duplicate" in c.log("maker"), 30, "the replayed fill to be recognised")

    assert len(creates(c.orders_log(B))) == 1
    assert c.position(B) == Decimal("-0.0200")


def test_hedge_task_run_twice_for_one_fill_sends_one_order(make_cluster):
    """A redelivered task (worker crash before ack) finds its registry record and sends nothing."""
    c = make_cluster()
    c.start_worker()
    fill = Fill(fill_id="dup-7", market_index=0, side="buy", base_amount=Decimal("0.0100"),
                price=Decimal("3000.00"), order_index=1, client_order_index=1,
                ts_exchange_ms=0, ts_seen_ms=int(time.time() * 1000)).to_message()
    first = c.send_hedge(fill, "redelivery-1").get(timeout=30)
    second = c.send_hedge(fill, "redelivery-2").get(timeout=30)

    assert first["filled_base"] == "0.0100" and len(first["b_order"]) == 1
    assert second["filled_base"] == "0.0000" and second["covered_by_earlier_hedge"] is True
    assert len(creates(c.orders_log(B))) == 1
    assert c.position(B) == Decimal("-0.0100")


def test_stopping_the_maker_cancels_a_s_resting_order(make_cluster):
    """`supervisorctl stop maker` / `lighter-hedge down` send SIGTERM: A's order must not outlive
    the maker (a fill while it is down would go unhedged until it restarts)."""
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    c.wait_resting_order()
    proc = c.procs["maker"]

    c.stop("maker")   # SIGTERM, waits for the exit

    assert proc.returncode == 0, c.log("maker")[-2000:]
    assert c.active_orders() == []   # cancelled before the process exited, not by the dead-man later
    assert "event=maker.stopped" in c.log("maker") and "cancel_all=accepted" in c.log("maker")


def test_a_forced_resume_holds_and_names_the_failed_hedges_it_acknowledged(make_cluster):
    """`resume --force` used to print "resumed" while the maker re-paused within half a second."""
    c = make_cluster(strategy={"max_retries": 1, "retry_backoff_max_s": 1})
    c.start_worker()
    c.start_maker()
    c.sim.admin("/admin/faults", {"http_5xx_rate": 1.0, "accounts": [B]})
    c.fill(c.wait_resting_order(), ["0.0500"])
    wait_until(lambda: c.store.paused("ETH"), 60, "the maker to pause after the hedge failed")
    failed = sorted(c.store.failed("ETH"))
    c.sim.admin("/admin/faults", {})

    forced = c.cli("resume", "--force")

    assert forced.returncode == 0, forced.stderr
    assert f"with 1 failed hedge(s) acknowledged ({failed[0]}): A stays exposed" in forced.stdout
    wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A quoting again after the forced resume")
    assert c.store.paused("ETH") is None and sorted(c.store.failed("ETH")) == failed   # still listed, acknowledged
