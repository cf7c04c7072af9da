"""Hedge task messages: the maker's signature covers the fill and the ledger generation; nothing
else in a message can be trusted, and no float or reordering changes what is signed."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from hedge.plan import b_position_problem, fill_bound_problem
from tasks.signing import MessageSigner, UnauthenticatedMessage

KEY = bytes(range(32))
FILL = {"fill_id": "7", "market_index": 0, "side": "buy", "base_amount": "0.0500", "price": "3000.00",
        "order_index": 1, "client_order_index": 2, "ts_exchange_ms": 3, "ts_seen_ms": 4}


def test_a_signed_fill_verifies_after_a_json_round_trip_in_any_key_order():
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    shuffled = json.loads(json.dumps(dict(reversed(list(FILL.items())))))
    assert signer.verify(shuffled, json.loads(json.dumps(auth))) == "gen-1"


@pytest.mark.parametrize("change", [
    {"base_amount": "0.0501"}, {"side": "sell"}, {"market_index": 1}, {"fill_id": "8"}, {"extra": 1}])
def test_any_change_to_the_fill_breaks_the_signature(change):
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify({**FILL, **change}, auth)


def test_another_generation_another_key_or_no_auth_is_refused():
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, {**auth, "gen": "gen-2"})
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        MessageSigner(bytes(32)).verify(FILL, auth)
    for bad in (None, "x", {}, {"v": 2, "gen": "gen-1", "sig": auth["sig"]}, {"v": 1, "gen": 5, "sig": "00"}):
        with pytest.raises(UnauthenticatedMessage):
            signer.verify(FILL, bad)
    with pytest.raises(UnauthenticatedMessage, match="not an object"):
        signer.verify("not a dict", auth)


def test_a_short_key_is_refused_and_the_key_never_shows_in_a_repr():
    with pytest.raises(ValueError):
        MessageSigner(b"short")
    assert KEY.hex() not in repr(MessageSigner(KEY))


def test_b_never_goes_beyond_max_position_base_by_the_ledger():
    limit = Decimal("0.1000")
    assert b_position_problem(Decimal("0.0500"), Decimal("0.0500"), limit) is None       # B at -0.1: allowed
    assert b_position_problem(Decimal("-0.1000"), Decimal("0.1000"), limit) is None      # closing back to 0
    problem = b_position_problem(Decimal("1.0000"), Decimal("0.0100"), limit)
    assert problem is not None and "-1.0100" in problem and "max_position_base 0.1000" in problem
    assert b_position_problem(Decimal("-0.0600"), Decimal("-0.0500"), limit) is not None  # B long 0.11


def test_a_fill_larger_than_a_can_fill_is_impossible():
    assert fill_bound_problem(Decimal("0.1000"), Decimal("0.1000"), Decimal("0.0500")) is None
    assert fill_bound_problem(Decimal("0.1500"), Decimal("0.1000"), Decimal("0.2000")) is None
    assert "exceeds" in fill_bound_problem(Decimal("1000000"), Decimal("0.1000"), Decimal("0.1000"))
