"""Requeue that can succeed, and Flower's Revoke (issue #13): real Redis, worker, maker, Flower, simulator.

- a hedge that failed on slippage is hedged by a requeue whose worst price is priced from the book
  now (--max-slippage-bps), printed with its distance from A's fill before it is sent;
- a revoked hedge (app.control.revoke, Flower's Revoke) is recorded failed "revoked by operator",
  the market pauses, and a requeue re-runs it under a new id (workers discard the old one);
- tasks.requeue_hedge through Flower's API requeues by id;
- a hedge by id in no list (its message and result gone) is re-run from the ledger's fill record,
  and a re-run of a covered fill sends nothing;
- a forged price bound (valid fill signature, altered bound) is refused like a forged fill.
"""
from __future__ import annotations

import asyncio
import json
import re
import time
from decimal import ROUND_CEILING, ROUND_HALF_EVEN, Decimal

import pytest

from tests.integration.cluster import A, B, ETH, wait_until
from tests.integration.test_flower import start_all

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")
PREVIEW = re.compile(r"^task=(?P<task>\S+) fill_id=(?P<fill>\S+) state=(?P<state>\S+) side=(?P<side>\S+) "
                     r"size=(?P<size>\S+) a_fill_price=(?P<a>\S+) book=(?P<book>\S+) max_slippage_bps=(?P<bps>\S+) "
                     r"from=(?P<src>\S+) worst_price=(?P<worst>\S+) \((?P<dist>[+-]?\d+) bps from A's fill\)$")


def hedge_sends(c) -> list[dict]:
    """B's market orders the venue took (a slippage-cancelled one included)."""
    return [e for e in c.orders_log(B) if e["tx_type"] == 14 and e["result"] == "accepted"]


def executed(c) -> list[dict]:
    """B's orders that traded."""
    return [e for e in hedge_sends(c) if e["final_status"] == "filled"]


def fill_a(c, size: str = "0.0500") -> tuple[str, str]:
    trade_ids = c.fill(c.wait_resting_order(), [size])["trade_ids"]
    assert len(trade_ids) == 1, trade_ids
    return str(trade_ids[0]), f"hedge-ETH-{trade_ids[0]}"


def failed_since(c, task_id: str, after_ms: int = 0) -> dict | None:
    info = c.store.failed("ETH").get(task_id)
    return info if info and info["ts_ms"] > after_ms else None


def test_a_slippage_failure_is_hedged_by_a_requeue_priced_from_the_book(make_cluster):
    c = make_cluster(strategy={"max_retries": 1, "retry_backoff_max_s": 1})
    c.start_worker()
    c.start_maker()
    c.sim.admin("/admin/faults", {"slippage_rate": 1.0, "accounts": [B]})   # B's market orders fill nothing
    fill_id, task_id = fill_a(c)
    first = wait_until(lambda: failed_since(c, task_id), 60, f"{task_id} to fail on slippage")
    assert "filled nothing" in first["reason"] and "max_slippage_bps=50" in first["reason"], first
    wait_until(lambda: c.store.paused("ETH"), 30, "the market to pause")
    a_price = Decimal(first["fill"]["price"])

    # The book moved 2 % below A's fill since: A's fill price - 50 bps is above every bid now.
    c.sim.admin("/admin/faults", {})
    c.sim.admin("/admin/market", {"market_id": ETH, "mid": str((a_price * Decimal("0.98")).quantize(Decimal("0.01")))})
    bad = c.cli("requeue", "--all-failed", "--max-slippage-bps", "5000")
    assert bad.returncode == 2 and bad.stdout == "", (bad.returncode, bad.stdout, bad.stderr)
    assert bad.stderr.strip().count("\n") == 0 and "--max-slippage-bps" in bad.stderr and "1000" in bad.stderr
    assert c.cli("requeue", "--all-failed", "--max-slippage-bps", "0").returncode == 2
    assert task_id in c.store.failed("ETH") and len(hedge_sends(c)) == 2   # nothing sent by a refused bound

    plain = c.cli("requeue", task_id)   # without the option: A's fill price - 50 bps, as before
    assert plain.returncode == 0 and f"requeued {task_id} (failed)" in plain.stdout, plain.stderr
    second = wait_until(lambda: failed_since(c, task_id, first["ts_ms"]), 60, "the plain requeue to fail again")
    assert "filled nothing" in second["reason"] and f"of {a_price}" in second["reason"], second
    assert executed(c) == [] and len(hedge_sends(c)) == 4

    # The console's call: what the command will print, nothing sent.
    from ops.requeue import RequeuePreview, preview
    from ops.settings import load_config
    seen = asyncio.run(preview(load_config(c.config_path), c.store, task_id, 100))
    assert isinstance(seen, RequeuePreview) and (seen.b_side, seen.size, seen.from_book) == ("sell", Q, True)
    assert seen.distance_bps < -200 and len(hedge_sends(c)) == 4 and task_id in c.store.failed("ETH")

    wide = c.cli("requeue", "--all-failed", "--max-slippage-bps", "100")
    assert wide.returncode == 0, wide.stderr
    shown, done = wide.stdout.splitlines()
    assert shown == seen.line()
    m = PREVIEW.match(shown)
    assert m, shown
    assert (m["task"], m["fill"], m["state"], m["side"], m["size"], m["bps"], m["src"]) == \
        (task_id, fill_id, "failed", "sell", "0.0500", "100", "book")
    book, worst = Decimal(m["book"]), Decimal(m["worst"])
    assert Decimal(m["a"]) == a_price and book < a_price * Decimal("0.995")
    assert worst == (book * Decimal("0.99")).quantize(Decimal("0.01"), ROUND_CEILING)
    distance = ((worst - a_price) / a_price * 10_000).quantize(Decimal(1), ROUND_HALF_EVEN)
    assert Decimal(m["dist"]) == distance and distance < -200, shown
    assert done == f"requeued {task_id} (failed)"

    wait_until(lambda: c.position(B) == -Q, 30, "the requeued hedge to execute")
    wait_until(lambda: not c.store.failed("ETH") and not c.store.inflight("ETH"), 30, "the hedge to succeed")
    assert c.position(A) + c.position(B) == 0
    [order] = executed(c)   # exactly one B order traded for this fill, at the operator's bound
    assert order["is_ask"] is True and order["base_amount"] == 500 and order["price"] == int(worst * 100), order
    assert "event=hedge.price_bound fill_id=%s" % fill_id in c.log("worker")

    # Its message and result gone (in no list): requeue by id finds the fill in the ledger, and the
    # re-run sends nothing - the ledger counts a fill once.
    from celery.result import AsyncResult

    from tasks import app
    c.store.r.delete(c.store.result_key(task_id))
    again = c.cli("requeue", task_id)
    assert again.returncode == 0 and f"requeued {task_id} (lost: its fill from the ledger)" in again.stdout, again
    rerun = AsyncResult(task_id, app=app).get(timeout=30)
    assert rerun["covered_by_earlier_hedge"] is True and rerun["filled_base"] == "0.0000"
    assert executed(c) == [order] and c.position(B) == -Q
    assert c.cli("resume").returncode == 0


def test_a_revoked_hedge_is_failed_revoked_by_operator_and_a_requeue_runs_it_under_a_new_id(make_cluster):
    from tasks import app

    c = make_cluster(strategy={"max_retries": 50, "retry_backoff_max_s": 2})
    c.start_worker()
    c.start_maker()
    c.sim.admin("/admin/faults", {"slippage_rate": 1.0, "accounts": [B]})
    fill_id, task_id = fill_a(c)
    wait_until(lambda: f"event=hedge.retry fill_id={fill_id} task_id={task_id}" in c.log("worker"), 30,
               "the hedge to wait for its retry")

    app.control.revoke(task_id)
    failed = wait_until(lambda: failed_since(c, task_id), 30, "the revoked hedge to be recorded failed")
    assert failed["reason"] == "revoked by operator" and failed["revoked"] is True, failed
    assert failed["fill"]["fill_id"] == fill_id and failed["auth"]["sig"]   # what a requeue re-signs
    assert task_id not in c.store.inflight("ETH")
    pause = wait_until(lambda: c.store.paused("ETH"), 30, "the market to pause like for any failed hedge")
    assert task_id in pause["reason"]
    status = c.cli("status")
    assert f"failed: {task_id} fill_id={fill_id} reason=revoked by operator" in status.stdout, status.stdout
    refused = c.cli("resume")
    assert refused.returncode == 1 and task_id in refused.stderr
    assert executed(c) == []

    c.sim.admin("/admin/faults", {})
    requeued = c.cli("requeue", task_id)
    assert requeued.returncode == 0, requeued.stderr
    assert requeued.stdout.strip() == f"requeued {task_id} as {task_id}-r1 (revoked: workers discard its id)"
    wait_until(lambda: c.position(B) == -Q, 30, f"{task_id}-r1 to hedge")
    wait_until(lambda: not c.store.failed("ETH") and not c.store.inflight("ETH"), 30, "nothing failed or in flight")
    assert len(executed(c)) == 1
    assert f"event=hedge.done fill_id={fill_id}" in c.log("worker")

    # The maker is not left waiting: resumed, it quotes again.
    assert c.cli("resume").returncode == 0
    wait_until(lambda: [o for o in c.active_orders() if o["is_ask"]], 30, "A's closing order after the resume")
    assert len(executed(c)) == 1 and c.position(A) + c.position(B) == 0


def test_flower_revoke_then_tasks_requeue_hedge_through_flower_s_api_hedges_once(make_cluster):
    from celery.result import AsyncResult

    from tasks import app

    c = make_cluster(strategy={"max_retries": 50, "retry_backoff_max_s": 2})
    flower = start_all(c)
    c.sim.admin("/admin/faults", {"slippage_rate": 1.0, "accounts": [B]})
    fill_id, task_id = fill_a(c)
    wait_until(lambda: f"event=hedge.retry fill_id={fill_id} task_id={task_id}" in c.log("worker"), 30,
               "the hedge to wait for its retry")

    status, text = flower.request("POST", f"/api/task/revoke/{task_id}")
    assert status == 200, (status, text)
    failed = wait_until(lambda: failed_since(c, task_id), 30, "Flower's Revoke to be recorded failed")
    assert failed["reason"] == "revoked by operator"
    wait_until(lambda: c.store.paused("ETH"), 30, "the market to pause")

    c.sim.admin("/admin/faults", {})
    status, text = flower.request("POST", "/api/task/async-apply/tasks.requeue_hedge", body={"args": [task_id]})
    assert status == 200, (status, text)
    answer = AsyncResult(json.loads(text)["task-id"], app=app).get(timeout=30)
    assert answer["requeued"] == [{"task_id": task_id, "new_task_id": f"{task_id}-r1", "market": "ETH",
                                   "fill_id": fill_id, "state": "revoked", "source": "failed record"}], answer
    wait_until(lambda: c.position(B) == -Q, 30, f"{task_id}-r1 to hedge")
    assert AsyncResult(f"{task_id}-r1", app=app).get(timeout=30)["fill_id"] == fill_id
    assert len(executed(c)) == 1 and c.store.failed("ETH") == {}

    # By id again, with a bound, through Flower: the fill is covered, nothing more trades.
    status, text = flower.request("POST", "/api/task/async-apply/tasks.requeue_hedge", body={"args": [task_id, 80]})
    assert status == 200, (status, text)
    [again] = AsyncResult(json.loads(text)["task-id"], app=app).get(timeout=30)["requeued"]
    assert again["new_task_id"] == f"{task_id}-r2" and "max_slippage_bps=80 from=book" in again["preview"], again
    assert AsyncResult(f"{task_id}-r2", app=app).get(timeout=30)["covered_by_earlier_hedge"] is True
    assert len(executed(c)) == 1 and c.position(B) == -Q
    # A refused bound fails the task with the one-line reason, and sends nothing.
    status, text = flower.request("POST", "/api/task/async-apply/tasks.requeue_hedge", body={"args": [task_id, 5000]})
    result = AsyncResult(json.loads(text)["task-id"], app=app)
    result.get(timeout=30, propagate=False)
    assert result.state == "FAILURE" and "--max-slippage-bps" in str(result.result)


def test_a_forged_price_bound_is_refused_like_a_forged_fill(make_cluster):
    from tasks import hedge_fill
    from tasks.hedge_task import send_hedge
    from tasks.signing import MessageSigner
    from venue.keys import TASK_SIGNING_KEY_FIELD, read_key_file

    c = make_cluster(strategy={"max_retries": 10, "retry_backoff_max_s": 1})
    c.start_worker()
    real = MessageSigner(bytes.fromhex(read_key_file(c.keys_file)[TASK_SIGNING_KEY_FIELD]))
    generation = c.store.ensure_generation()
    now = int(time.time() * 1000)
    fill = {"fill_id": "bound-1", "market_index": 0, "side": "buy", "base_amount": "0.0100", "price": "3000.00",
            "order_index": 1, "client_order_index": 1, "ts_exchange_ms": 0, "ts_seen_ms": now}
    tight = {"ref_price": "3000.00", "max_slippage_bps": "10", "b_side": "sell"}
    wide = {**tight, "max_slippage_bps": "1000"}

    send_hedge(fill, "forged-added", real.sign(fill, generation), price=wide)           # valid fill signature
    send_hedge(fill, "forged-altered", real.sign(fill, generation, tight), price=wide)  # bound altered after signing
    for task_id in ("forged-added", "forged-altered"):
        result = hedge_fill.AsyncResult(task_id)
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE" and "signature does not match" in str(result.result), (task_id, result.result)
        assert result.retries in (0, None)
    # on_failure records it after the result is stored
    wait_until(lambda: set(c.store.refused()) == {"forged-added", "forged-altered"}, 10, "both recorded refused")
    assert c.store.failed("ETH") == {}
    assert c.orders_log(B) == [] and c.store.ledger("ETH").a_filled == 0   # nothing counted or sent

    # The same bound, signed: B sells no lower than 3000.00 - 1000 bps, on its retries too (a retry
    # that dropped the bound would be refused: the signature covers it).
    c.sim.admin("/admin/faults", {"slippage_rate": 1.0, "accounts": [B]})
    send_hedge(fill, "signed-bound", real.sign(fill, generation, wide), price=wide)
    wait_until(lambda: "event=hedge.retry fill_id=bound-1 task_id=signed-bound" in c.log("worker"), 30,
               "the bounded hedge to retry")
    c.sim.admin("/admin/faults", {})
    result = hedge_fill.AsyncResult("signed-bound").get(timeout=30)
    assert result["filled_base"] == "0.0100" and result["attempts"] >= 2, result
    [order] = executed(c)
    assert order["price"] == 270000 and order["is_ask"] is True
    assert all(e["price"] == 270000 for e in hedge_sends(c)) and len(hedge_sends(c)) >= 2
