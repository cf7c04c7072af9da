"""`lighter-hedge flatten`: both accounts flat, the market paused, the ledger still consistent."""
from __future__ import annotations

import json
import re
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


# ---- one sender per key (issue 12) -----------------------------------------------------------------

CLEAN_RECONCILE = re.compile(r"event=maker\.reconcile market=ETH at_start=False gap=0(\.0+)? ")


def _nonce_refusals(c) -> list[dict]:
    """Every tx the venue refused with "invalid nonce" (21104), on A's key or B's: two senders on one key."""
    return [e for account in (A, B) for e in c.orders_log(account) if e["code"] == 21104]


def _assert_no_nonce_error(c, *texts: str) -> None:
    assert _nonce_refusals(c) == []
    for text in (c.log("maker"), c.log("worker"), *texts):
        assert "21104" not in text and "invalid nonce" not in text.lower(), text[-3000:]


def test_flatten_beside_a_running_stack_sends_through_the_maker_and_the_worker(make_cluster):
    c = make_cluster(strategy={"reconcile_interval_s": 1})
    c.start_worker()
    c.start_maker()
    buy = c.wait_resting_order()
    c.fill(buy, ["0.0300"])
    wait_until(lambda: c.position(B) == Decimal("-0.0300"), 30, "the hedge")
    # A long, B short, and A's closing order resting: the maker is mid-round when flatten comes.
    wait_until(lambda: c.active_orders(), 30, "A's closing order")
    assert c.position(A) == Decimal("0.0300")

    done = c.cli("flatten", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert c.position(A) == 0 and c.position(B) == 0
    assert c.active_orders() == []
    ledger = c.store.ledger("ETH")
    assert ledger.pending == [] and ledger.unhedged == 0
    # A's close went out on the maker's key sequence, B's through the worker: no one else signed.
    assert "via=maker" in done.stdout and "via=worker" in done.stdout, done.stdout
    _assert_no_nonce_error(c, done.stdout, done.stderr)
    assert c.procs["maker"].poll() is None, c.log("maker")[-3000:]

    # Trading resumes cleanly: a round to zero exposure, and the reconciles after it find no gap.
    reconciles = len(CLEAN_RECONCILE.findall(c.log("maker")))
    assert c.cli("resume").returncode == 0
    buy = wait_until(lambda: [o for o in c.active_orders() if not o["is_ask"]], 30, "a new opening order")[0]
    c.fill(buy, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the new hedge")
    wait_until(lambda: len(CLEAN_RECONCILE.findall(c.log("maker"))) > reconciles,
               30, "a reconcile after the resume")
    assert c.position(A) + c.position(B) == 0
    assert c.store.paused("ETH") is None and c.procs["maker"].poll() is None
    assert "maker.round_error" not in c.log("maker") and "Traceback" not in c.log("maker")
    _assert_no_nonce_error(c)


def _lease_free(c, account: int, api_key_index: int) -> bool:
    """Nobody holds the key's lease (README "Flatten"): a stopped process's lapses NONCE_LAG after its last tx."""
    return not c.store.r.exists(f"lh:key_lease:{account}:{api_key_index}")


def _build_positions(c) -> None:
    """A long 0.03 (a partial fill), hedged: B short 0.03."""
    c.fill(c.wait_resting_order(), ["0.0300"])
    wait_until(lambda: c.position(B) == Decimal("-0.0300"), 30, "the hedge")
    assert c.position(A) == Decimal("0.0300")


def test_flatten_beside_a_maker_whose_worker_is_down_refuses_in_one_line_and_changes_nothing(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    _build_positions(c)
    c.stop("worker")
    wait_until(lambda: _lease_free(c, B, 4), 15, "the stopped worker's lease on B's key to lapse")

    refused = c.cli("flatten", "--yes")
    assert refused.returncode == 1
    assert refused.stdout == "" and len(refused.stderr.strip().splitlines()) == 1, refused.stderr
    assert refused.stderr.startswith("flatten error: the maker runs but no hedge worker does"), refused.stderr
    assert "nothing was changed" in refused.stderr
    assert c.position(A) == Decimal("0.0300") and c.position(B) == Decimal("-0.0300")
    assert c.store.paused("ETH") is None and c.procs["maker"].poll() is None
    _assert_no_nonce_error(c)


def test_flatten_without_a_maker_closes_a_under_its_key_lease_and_b_through_the_worker(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    _build_positions(c)
    c.stop("maker")   # cancels A's order; its lease lapses NONCE_LAG after its last tx
    wait_until(lambda: _lease_free(c, A, 3), 15, "the stopped maker's lease on A's key to lapse")
    assert c.active_orders() == []

    done = c.cli("flatten", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "close A via=cli before=0.0300 after=0" in done.stdout, done.stdout
    # B's close was sent by the worker (the maker was not there to hedge A's close).
    assert "close B via=worker before=-0.0300 after=0" in done.stdout, done.stdout
    assert c.position(A) == 0 and c.position(B) == 0
    ledger = c.store.ledger("ETH")
    assert ledger.pending == [] and ledger.unhedged == 0
    _assert_no_nonce_error(c, done.stdout, done.stderr)

    # While a flatten holds A's key, a starting maker sends nothing; it starts once the key is free.
    from tasks.store import KeyLease, now_ms
    held = KeyLease("flatten", "test-flatten", now_ms())
    wait_until(lambda: c.store.take_key_lease(A, 3, held, 60_000) is None, 15, "flatten's lease on A's key to lapse")
    a_txs, starts = len(c.orders_log(A)), c.log("maker").count("event=maker.start")
    c.start_maker()
    wait_until(lambda: "event=key_lease.waiting account=281001" in c.log("maker"), 30, "the maker to wait for A's key")
    assert c.log("maker").count("event=maker.start") == starts and len(c.orders_log(A)) == a_txs
    c.store.release_key_lease(A, 3, held, 1)
    wait_until(lambda: c.log("maker").count("event=maker.start") > starts, 30, "the maker to start")

    # Trading resumes cleanly on the ledger flatten left.
    assert c.cli("resume").returncode == 0
    buy = wait_until(lambda: [o for o in c.active_orders() if not o["is_ask"]], 30, "a new opening order")[0]
    c.fill(buy, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the new hedge")
    assert c.position(A) + c.position(B) == 0 and c.store.paused("ETH") is None
    _assert_no_nonce_error(c)


def test_flatten_with_nothing_running_sends_under_both_key_leases_and_a_starting_worker_waits(make_cluster):
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    _build_positions(c)
    c.stop("maker")
    c.stop("worker")
    wait_until(lambda: _lease_free(c, A, 3) and _lease_free(c, B, 4), 15, "the keys' leases to lapse")

    done = c.cli("flatten", "--yes")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "close A via=cli" in done.stdout and "close B via=cli before=-0.0300 after=0" in done.stdout, done.stdout
    assert c.position(A) == 0 and c.position(B) == 0
    ledger = c.store.ledger("ETH")
    assert ledger.pending == [] and ledger.unhedged == 0
    _assert_no_nonce_error(c, done.stdout, done.stderr)

    # While a flatten holds B's key, a starting worker neither warms up (B's nonce) nor takes a task.
    from tasks.store import KeyLease, now_ms
    held = KeyLease("flatten", "test-flatten", now_ms())
    wait_until(lambda: c.store.take_key_lease(B, 4, held, 60_000) is None, 15, "flatten's lease on B's key to lapse")
    readies = c.log("worker").count(" ready.")
    c._spawn("worker", "worker")
    wait_until(lambda: "event=key_lease.waiting account=281002" in c.log("worker"), 30,
               "the worker to wait for B's key")
    assert c.log("worker").count(" ready.") == readies
    c.store.release_key_lease(B, 4, held, 1)
    wait_until(lambda: c.log("worker").count(" ready.") > readies, 30, "the worker to start")

    # The restarted stack finds the ledger and the venue agreeing, and trades again after resume.
    c.start_maker()
    wait_until(lambda: c.log("maker").count("event=maker.reconcile market=ETH at_start=True gap=0") == 2, 30,
               "the restarted maker's reconcile at start")
    assert c.cli("resume").returncode == 0
    buy = wait_until(lambda: [o for o in c.active_orders() if not o["is_ask"]], 30, "a new opening order")[0]
    c.fill(buy, ["0.0500"])
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the new hedge")
    _assert_no_nonce_error(c)
