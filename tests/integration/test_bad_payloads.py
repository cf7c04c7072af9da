"""Malformed or forged task messages reach the real worker: each is refused at once, nothing trades,
the worker lives. Malformed ones are signed (as a bug in our own maker would send them); forged ones
are not, or carry a wrong signature."""
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

    from tasks import app

    c = make_cluster()
    c.start_worker()
    ids = [f"bad-{i}" for i in range(len(BAD))]
    for task_id, payload in zip(ids, BAD):
        c.send_hedge(payload, task_id)
    for task_id in ids:
        result = AsyncResult(task_id, app=app)
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE", (task_id, result.state)
        assert type(result.result).__name__ == "RefusedMessageError"
        assert "refused" in str(result.result)
        assert result.retries in (0, None)  # failed at once, no retry

    assert c.orders_log(B) == []
    # Recorded as refused, with the reason - not as failed hedges that would halt a market.
    assert c.store.failed("ETH") == {} and c.store.failed("unknown") == {}
    refused = c.store.refused()
    assert set(refused) == set(ids) and all("refused" in r["reason"] for r in refused.values())
    assert "fill is not an object" in refused["bad-0"]["reason"]
    assert refused["bad-5"]["reason"].endswith("no market with market_index 77 in config.yaml 'markets'")
    status = c.cli("status")
    assert "refused: bad-5 market=unknown reason=RefusedMessageError: refused fill message" in status.stdout
    again = c.cli("requeue", "bad-2")
    assert again.returncode == 1 and "is a refused message" in again.stderr
    cleared = c.cli("clear-refused", "--all")
    assert cleared.returncode == 0 and f"cleared {len(ids)}" in cleared.stdout and c.store.refused() == {}
    # The worker is still there and hedges a good fill right after.
    good = c.send_hedge({**GOOD, "ts_seen_ms": int(time.time() * 1000)}, "good-1")
    assert good.get(timeout=30)["filled_base"] == "0.0100"
    assert c.position(B) == Decimal("-0.0100")


def test_a_fill_id_carrying_a_newline_cannot_forge_a_log_line(make_cluster):
    """Every line of a hedge's journey carries its fill id: one with a newline is written escaped."""
    c = make_cluster()
    c.start_worker()
    forged = "good-2\nevent=hedge.done fill_id=forged market=ETH"
    fill = {**GOOD, "fill_id": forged, "ts_seen_ms": int(time.time() * 1000)}
    assert c.send_hedge(fill, "good-2").get(timeout=30)["filled_base"] == "0.0100"

    lines = c.log("worker").splitlines()
    assert not [line for line in lines if line.startswith("event=hedge.done fill_id=forged")]
    assert [line for line in lines if "event=hedge.done fill_id=good-2\\nevent=hedge.done fill_id=forged" in line]


def test_a_refused_message_never_halts_the_market(make_cluster):
    """A forged or malformed message used to be recorded failed: the maker paused its market, and
    requeue re-failed it. Refused, the maker goes on quoting."""
    c = make_cluster()
    c.start_worker()
    c.start_maker()
    order = c.wait_resting_order()
    c.send_hedge({**GOOD, "base_amount": "-0.0100"}, "forged-1").get(timeout=30, propagate=False)
    assert "forged-1" in c.store.refused()   # recorded before the result is stored

    c.fill(order, ["0.0500"])   # the round ends; the next one starts only if the market is not halted
    wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the real fill's hedge")
    wait_until(lambda: [o for o in c.active_orders() if o["order_index"] != order["order_index"]], 30,
               "the maker's next order")
    assert c.store.paused("ETH") is None and c.store.failed("ETH") == {}


def test_a_forged_message_makes_b_trade_nothing_even_while_paused(make_cluster):
    """Whoever can write to the broker could make B trade: a hedge message must carry the maker's
    signature of its fill and ledger generation. Unsigned, signed with another key, altered after
    signing, or signed for a ledger Redis no longer holds: refused at once, nothing counted or sent."""
    from tasks import hedge_fill
    from tasks.hedge_task import send_hedge
    from tasks.signing import MessageSigner
    from venue.keys import TASK_SIGNING_KEY_FIELD, read_key_file

    c = make_cluster()
    c.start_worker()
    c.store.pause("ETH", "operator looking", by="test")
    now = int(time.time() * 1000)
    big = {**GOOD, "fill_id": "forged-big", "base_amount": "0.0900", "ts_seen_ms": now}
    small = {**GOOD, "fill_id": "forged-big", "base_amount": "0.0100", "ts_seen_ms": now}
    real = MessageSigner(bytes.fromhex(read_key_file(c.keys_file)[TASK_SIGNING_KEY_FIELD]))
    generation = c.store.ensure_generation()

    hedge_fill.apply_async(args=[big], task_id="forged-unsigned")
    c.send_hedge(big, "forged-other-key", key=b"\x01" * 32)
    send_hedge(big, "forged-altered", real.sign(small, generation))   # a real signature, of another fill
    c.send_hedge({**big, "fill_id": "old-generation"}, "forged-old-generation", generation="1-deadbeef")
    reasons = {}
    for task_id in ("forged-unsigned", "forged-other-key", "forged-altered", "forged-old-generation"):
        result = hedge_fill.AsyncResult(task_id)
        result.get(timeout=30, propagate=False)
        assert result.state == "FAILURE" and result.retries in (0, None), (task_id, result.state)
        reasons[task_id] = str(result.result)
    assert "unsigned task message" in reasons["forged-unsigned"]
    assert "signature does not match" in reasons["forged-other-key"]
    assert "signature does not match" in reasons["forged-altered"]
    assert "ledger generation 1-deadbeef is gone" in reasons["forged-old-generation"]

    assert c.orders_log(B) == []
    assert c.store.ledger("ETH").a_filled == 0 and c.store.fills("ETH") == {}
    assert set(c.store.refused()) == set(reasons) and c.store.failed("ETH") == {}


def test_an_impossible_fill_or_a_hedge_past_b_s_position_limit_sends_nothing(make_cluster):
    """Signed or not, a fill larger than anything A can fill is refused before it is counted; and
    when the ledger itself was tampered with (Redis write access), B never goes beyond
    max_position_base (0.1000 here): the hedge fails, the market pauses, nothing is sent."""
    c = make_cluster()
    c.start_worker()
    now = int(time.time() * 1000)
    huge = c.send_hedge({**GOOD, "fill_id": "huge", "base_amount": "1000000.0000", "ts_seen_ms": now}, "huge")
    huge.get(timeout=30, propagate=False)
    assert huge.state == "FAILURE" and "exceeds what A can fill" in str(huge.result)
    assert c.store.ledger("ETH").a_filled == 0   # never counted: no unhedged=1000000 left behind

    # Someone with Redis access counted a 1.0 ETH fill of A that never happened.
    c.store.record_fill("ETH", {**GOOD, "fill_id": "tampered", "base_amount": "1.0000"}, 10_000)
    past = c.send_hedge({**GOOD, "fill_id": "real-1", "ts_seen_ms": now}, "real-1")
    past.get(timeout=30, propagate=False)
    assert past.state == "FAILURE" and "beyond max_position_base 0.1000" in str(past.result)
    assert c.orders_log(B) == [] and c.position(B) == 0
    assert "real-1" in c.store.failed("ETH")
