"""Every definite reject Lighter documents is REJECTED at once (the hedge fails on its first attempt,
the market pauses) with the venue's code and words; an unknown code stays in doubt."""
from __future__ import annotations

import json

import pytest

from venue import errors
from venue.errors import classify_code, classify_response, classify_sdk_error
from venue.sim.faults import DEFINITE_REJECTS as SIM_REJECT_MESSAGES

# lighter-api-notes.md section 8 ("Definite rejects") and section 2 ("Useful Lighter error codes").
DOCUMENTED = {
    21111: "account is in pre-liquidation", 21112: "account is in liquidation",
    21122: "invalid cancel all time",
    21507: "account is below maintenance margin", 21508: "account is below initial margin",
    21601: "order book is full", 21605: "market is not active",
    21701: "invalid base amount", 21702: "invalid price", 21706: "invalid order base or quote amount",
    21711: "invalid expiry",
    21717: "too many active orders in this market", 21718: "too many active orders",
    21719: "too many pending orders in this market", 21720: "too many pending orders",
    21728: "client order index already exists",
    21732: "reduce only order increases position", 21738: "reduce only order has no position",
    21739: "not enough margin",
    # section 2
    21109: "api key not found", 21120: "invalid signature", 21501: "invalid tx info",
    21600: "not an active limit order", 21602: "invalid market index", 21700: "invalid order index",
    21709: "order is inactive", 21727: "invalid client order index", 21733: "fat-finger price",
    21734: "limit price too far from mark",
}


@pytest.mark.parametrize("code", sorted(DOCUMENTED))
def test_documented_reject_is_definite_with_code_and_venue_words(code):
    message = DOCUMENTED[code]
    for outcome in (classify_code(code, message),
                    classify_response(400, json.dumps({"code": code, "message": message})),
                    classify_sdk_error(f"HTTP response body: code={code} message='{message}' "
                                       f"additional_properties={{}}")):
        assert outcome.kind == errors.REJECTED, outcome
        assert outcome.code == code
        described = outcome.describe()
        assert f"code={code}" in described and message in described, described


def test_every_reject_the_simulator_can_inject_is_definite():
    # The fault plan's reject_code list is Lighter's documented list too: none of them may wait.
    assert set(SIM_REJECT_MESSAGES) <= errors.DEFINITE_REJECT_CODES


@pytest.mark.parametrize("code", [21999, 29500, 21500, 20001, 0])
def test_unknown_code_stays_in_doubt(code):
    outcome = classify_response(400, json.dumps({"code": code, "message": "something new"}))
    assert outcome.kind == errors.IN_DOUBT, outcome
    assert "something new" in outcome.describe()


def test_retryable_codes_are_not_definite():
    # 21104 (nonce), 21506 (pending txs) and 23000 (rate limit) change with time: they are retried.
    assert not errors.RETRYABLE_CODES & errors.DEFINITE_REJECT_CODES
    assert classify_code(21104, "invalid nonce").kind == errors.RETRYABLE
