"""Ledger retention (tasks/retention.py): history leaves Redis for the archive, the guarantees stay.

Against the real Redis: what the ledger says (exposure, open legs, counters) is the same after a
pass; a replay of a fill moved out is refused on the maker's path and on the worker's; nothing in
flight, failed or younger than the retention bound moves. The last test runs the real worker and
maker: a pruned fill delivered again (a task re-run, a maker restart's backfill) is hedged once.
"""
from __future__ import annotations

import json
import signal
from decimal import Decimal
from pathlib import Path

import pytest
import redis

from hedge.config import LedgerConfig
from hedge.fill import Fill
from hedge.leg import Leg
from tasks.retention import ArchiveError, LedgerRetention
from tasks.store import Store, now_ms, task_id_for
from tests.integration.cluster import A, B, wait_until

pytestmark = pytest.mark.integration

NOW = 2_000_000_000_000          # the pass's clock, ms
OLD = NOW - 2 * 3_600_000        # older than the retention bound (1 h)
UNITS = 100                      # 0.0100 ETH in venue units


@pytest.fixture
def store(redis_url) -> Store:
    redis.Redis.from_url(redis_url).flushdb()
    return Store.from_url(redis_url)


def fill_msg(fill_id: str, ts_ms: int) -> dict:
    return Fill(fill_id=fill_id, market_index=0, side="buy", base_amount=Decimal("0.0100"), price=Decimal("3000"),
                order_index=7, client_order_index=8, ts_exchange_ms=ts_ms, ts_seen_ms=ts_ms).to_message()


def record(store: Store, fill_id: str, ts_ms: int = OLD):
    msg = fill_msg(fill_id, ts_ms)
    [hint] = store.record_fills("ETH", [(msg, UNITS, task_id_for("ETH", fill_id))])
    return hint


def hedge(store: Store, fill_id: str, *, close: bool = True, written_ms: int = OLD) -> Leg:
    """A leg for the fill (closed, executed in full, unless close=False) and the task's success."""
    leg, _ = store.open_leg_checked("ETH", Leg(leg=0, client_order_index=0, is_ask=True, base_int=UNITS,
                                               worst_price_int=1, fill_id=fill_id, written_ms=written_ms),
                                    market_index=0, limit_per_minute=1_000)
    if close:
        leg = leg.executed("filled", order_index=9, executed_int=UNITS, filled_quote="30")
        assert store.close_leg("ETH", leg)
        store.hedge_finished("ETH", task_id_for("ETH", fill_id), fill_id, ok=True)
    return leg


def retention(store: Store, tmp_path: Path, archive: str = "archive.jsonl") -> LedgerRetention:
    cfg = LedgerConfig(retention_s=3600, prune_interval_s=30, archive_path=str(tmp_path / archive))
    return LedgerRetention(store, ["ETH"], cfg, clock_ms=lambda: NOW)


def archived(tmp_path: Path) -> list[dict]:
    path = tmp_path / "archive.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_a_pass_moves_finished_history_out_and_the_ledger_says_the_same(store, tmp_path):
    for fill_id in ("1001", "1002", "1003"):
        record(store, fill_id)
        hedge(store, fill_id)
    record(store, "1004")                                  # its hedge failed: the operator needs it
    store.hedge_finished("ETH", task_id_for("ETH", "1004"), "1004", ok=False, reason="margin",
                         fill_msg=fill_msg("1004", OLD))
    record(store, "1005")                                  # its hedge is in flight, a leg open
    open_leg = hedge(store, "1005", close=False)
    record(store, "1006", ts_ms=NOW - 60_000)              # younger than the retention bound
    hedge(store, "1006", written_ms=NOW - 60_000)
    before, stats_before = store.ledger("ETH"), store.stats("ETH")

    [done] = retention(store, tmp_path).run_once()

    assert (done.fills, done.legs) == (3, 3)
    assert store.ledger("ETH") == before                   # exposure, hedged, the open leg: unchanged
    assert store.stats("ETH") == stats_before              # hedges counted: still 4
    assert set(store.fills("ETH")) == {"1004", "1005", "1006"}
    assert [leg.leg for leg in store.legs("ETH")] == [open_leg.leg, open_leg.leg + 1]  # the open one, the young one
    assert store.failed("ETH") and store.inflight("ETH") == {task_id_for("ETH", "1005")}
    lines = archived(tmp_path)
    assert sorted(line["id"] for line in lines if line["kind"] == "fill") == ["1001", "1002", "1003"]
    assert all(line["hedged"] and line["record"]["fill_id"] == line["id"] for line in lines if line["kind"] == "fill")
    assert sorted(line["record"]["fill_id"] for line in lines if line["kind"] == "leg") == ["1001", "1002", "1003"]
    assert all(line["record"]["state"] == "executed" for line in lines if line["kind"] == "leg")
    # A second pass finds nothing more to move.
    [again] = retention(store, tmp_path).run_once()
    assert (again.fills, again.legs, again.markers) == (0, 0, 0) and len(archived(tmp_path)) == len(lines)


def test_a_replay_of_a_pruned_fill_is_refused_by_the_maker_and_the_worker(store, tmp_path):
    for fill_id in ("2001", "2002"):
        record(store, fill_id)
        hedge(store, fill_id)
    retention(store, tmp_path).run_once()
    assert store.fills("ETH") == {}
    a_filled = store.ledger("ETH").a_filled

    # The maker's path (a stream replay, a restart's backfill): not counted, no task marked in flight.
    assert store.record_fills("ETH", [(fill_msg("2001", OLD), UNITS, task_id_for("ETH", "2001"))]) == [None]
    assert store.inflight("ETH") == set()
    # The worker's path (a task re-run, a redelivery): its first round trip does not count it either.
    begun = store.send_begin_hedge("ETH", fill_msg("2002", OLD), UNITS).result()
    assert begun.ledger.a_filled == a_filled and begun.ledger.unhedged == 0
    assert store.fills("ETH") == {} and store.ledger("ETH").a_filled == a_filled
    # The fill count the hedge hints carry still only grows: 2 moved out, this is the third.
    assert begun.fills == 2 and record(store, "2003", ts_ms=NOW).fills == 3
    assert store.ledger("ETH").a_filled == a_filled + UNITS


def test_a_task_re_run_after_the_prune_marks_its_fill_again_and_is_not_counted_twice(store, tmp_path):
    record(store, "3001")
    hedge(store, "3001")
    retention(store, tmp_path).run_once()
    store.hedge_finished("ETH", task_id_for("ETH", "3001"), "3001", ok=True)   # e.g. Flower's async-apply
    assert store.stats("ETH")["hedges"] == 2                                  # the marker is back...
    [done] = retention(store, tmp_path).run_once()
    assert done.markers == 1 and store.stats("ETH")["hedges"] == 1            # ...and goes, counted once


def test_once_every_fill_is_moved_out_a_recovery_task_still_has_a_fill_to_carry(store, tmp_path):
    record(store, "4001")
    hedge(store, "4001")
    record(store, "4002")
    hedge(store, "4002")
    retention(store, tmp_path).run_once()
    assert store.fills("ETH") == {}
    assert store.latest_fill("ETH")["fill_id"] == "4002"   # hedge_leftover / the worker's _recover


def test_nothing_leaves_redis_when_the_archive_cannot_be_written(store, tmp_path):
    record(store, "5001")
    hedge(store, "5001")
    (tmp_path / "archive.jsonl").mkdir()                  # a directory where the file should be
    with pytest.raises(ArchiveError):
        retention(store, tmp_path).run_once()
    assert set(store.fills("ETH")) == {"5001"} and len(store.legs("ETH")) == 1


def test_a_pruned_fill_delivered_again_is_hedged_once_end_to_end(make_cluster, tmp_path):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    buy = c.wait_resting_order()
    trade_ids = [str(t) for t in c.fill(buy, ["0.0200", "0.0300"])["trade_ids"]]
    wait_until(lambda: c.position(B) == Decimal("-0.0500") and not c.store.inflight("ETH"), 30, "both fills hedged")
    hedges_before = [e for e in c.orders_log(B) if e["tx_type"] == 14 and e["result"] == "accepted"]
    a_filled = c.store.ledger("ETH").a_filled
    # The pass as the maker runs it, two hours later.
    cfg = LedgerConfig(retention_s=3600, prune_interval_s=30, archive_path=str(tmp_path / "archive.jsonl"))
    [done] = LedgerRetention(c.store, ["ETH"], cfg, clock_ms=lambda: now_ms() + 2 * 3_600_000).run_once()
    assert done.fills == 2 and not set(trade_ids) & set(c.store.fills("ETH"))

    # A re-run of a pruned fill's hedge task (as Flower's async-apply would send it) sends nothing.
    fill = next(line["record"] for line in archived(tmp_path) if line["id"] == trade_ids[0])
    result = c.send_hedge(fill, f"{task_id_for('ETH', trade_ids[0])}-again").get(timeout=30)
    assert Decimal(result["filled_base"]) == 0
    # A maker restart: its stream's backfill delivers both trades again; the ledger refuses them.
    c.stop("maker", signal.SIGKILL)
    c.start_maker()
    wait_until(lambda: all(f"event=fill.duplicate fill_id={t} " in c.log("maker") for t in trade_ids), 60,
               "the restarted maker seeing the pruned fills again")
    wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A's closing order")
    assert c.store.ledger("ETH").a_filled == a_filled and c.store.inflight("ETH") == set()
    assert c.position(A) == Decimal("0.0500") and c.position(B) == Decimal("-0.0500")
    assert [e for e in c.orders_log(B) if e["tx_type"] == 14 and e["result"] == "accepted"] == hedges_before


def test_a_pass_is_bounded_and_the_next_one_goes_on_where_it_stopped(store, tmp_path, monkeypatch):
    import tasks.retention as retention_module
    monkeypatch.setattr(retention_module, "SCAN_COUNT", 20)
    monkeypatch.setattr(retention_module, "MAX_SCANNED_PER_PASS", 60)
    ids = [str(6000 + i) for i in range(300)]   # beyond Redis's small-hash encoding: HSCAN pages for real
    for fill_id in ids:
        record(store, fill_id)
        hedge(store, fill_id)
    passes = retention(store, tmp_path)
    removed = []
    while store.fills("ETH") and len(removed) < 50:
        [done] = passes.run_once()
        removed.append(done.fills)
    assert store.fills("ETH") == {} and sum(removed) == 300
    assert max(removed) <= 60 + 20 and len(removed) >= 4   # each pass scans about MAX_SCANNED_PER_PASS
    assert store.stats("ETH")["hedges"] == 300 and store.ledger("ETH").unhedged == 0
