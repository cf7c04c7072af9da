"""Classify what the venue said about a sent tx: accepted, definite reject, retryable, or in doubt.

Only known business codes count as a definite reject; anything unrecognised is in doubt,
because treating an executed order as rejected would hedge twice.
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass

ACCEPTED = "accepted"
REJECTED = "rejected"      # definitely not applied; retrying will not help
RETRYABLE = "retryable"    # definitely not applied; retrying may help (nonce, rate limit)
IN_DOUBT = "in_doubt"      # may or may not be applied: resolve by asking the venue, never resend blind

INVALID_NONCE = 21104
TOO_MANY_REQUESTS = 23000
TOO_MANY_PENDING_TXS = 21506
NOT_ACTIVE_ORDER = 21600
# Lighter codes that mean "this tx was refused and changed nothing" (apidocs errors page; the
# project's lighter-api-notes.md sections 2 and 8). Retrying the same order cannot help, so a hedge
# fails at once and the market pauses. Anything not listed stays in doubt.
DEFINITE_REJECT_CODES = {
    21109,  # api key not found
    21111,  # account is in pre-liquidation: no new risk until it recovers
    21112,  # account is in liquidation
    21120,  # invalid signature
    21122,  # invalid cancel-all time (a scheduled cancel-all not in the future)
    21501,  # invalid tx info
    21507,  # account below maintenance margin
    21508,  # account below initial margin
    21600,  # not an active limit order
    21601,  # order book is full
    21602,  # invalid market index
    21605,  # market is not active (halted, delisted)
    21700,  # invalid order index
    21701,  # invalid base amount
    21702,  # invalid price
    21706,  # invalid order base or quote amount
    21709,  # order is inactive
    21711,  # invalid expiry
    21717,  # too many active orders in this market (per-account cap)
    21718,  # too many active orders (per-account cap)
    21719,  # too many pending orders in this market
    21720,  # too many pending orders
    21727,  # invalid client order index
    21728,  # client order index already exists
    21732,  # reduce-only order would increase the position
    21733,  # fat-finger price
    21734,  # limit price too far from mark
    21738,  # reduce-only order with no position to reduce
    21739,  # not enough margin
}
RETRYABLE_CODES = {INVALID_NONCE, TOO_MANY_REQUESTS, TOO_MANY_PENDING_TXS}

_BODY = re.compile(r"code=(\d+)\s+message='((?:[^'\\]|\\.)*)'")


@dataclass(frozen=True)
class SendOutcome:
    kind: str
    code: int | None = None
    message: str = ""
    tx_hash: str | None = None

    @property
    def accepted(self) -> bool:
        return self.kind == ACCEPTED

    def describe(self) -> str:
        code = f" code={self.code}" if self.code is not None else ""
        return f"{self.kind}{code} venue_message={self.message!r}"


def classify_code(code: int | None, message: str) -> SendOutcome:
    if code == 200:
        return SendOutcome(ACCEPTED, code, message)
    if code in RETRYABLE_CODES or "invalid nonce" in message:
        return SendOutcome(RETRYABLE, code, message)
    if code in DEFINITE_REJECT_CODES:
        return SendOutcome(REJECTED, code, message)
    return SendOutcome(IN_DOUBT, code, message)


def classify_sdk_error(err: str) -> SendOutcome:
    """The SDK's err string: a 400 body ("... code=21104 message='invalid nonce' ...") or a local
    signer validation error (nothing was sent, so a definite reject)."""
    match = _BODY.search(err)
    if match:
        return classify_code(int(match.group(1)), match.group(2))
    return SendOutcome(REJECTED, None, f"signer refused: {err}")


def body_message(exc: Exception) -> str:
    """The venue's `message` from an SDK ApiException body, else its reason."""
    body = getattr(exc, "body", None) or ""
    match = re.search(r'"message"\s*:\s*"((?:[^"\\]|\\.)*)"', str(body))
    return match.group(1) if match else str(getattr(exc, "reason", "") or body)[:200]


def classify_response(status: int, body: str) -> SendOutcome:
    """sendTx's HTTP answer: 200 with RespSendTx, 400 with the venue's {code, message}, else status only."""
    if status not in (200, 400):
        return classify_http_status(status, body)
    try:
        parsed = json.loads(body)
        code, message = int(parsed["code"]), str(parsed.get("message") or "")
    except (ValueError, TypeError, KeyError):
        return SendOutcome(IN_DOUBT, None, f"HTTP {status} unreadable answer {body[:200]!r}")
    outcome = classify_code(code, message)
    if outcome.accepted:
        return SendOutcome(ACCEPTED, code, message, str(parsed.get("tx_hash") or ""))
    return outcome


def classify_http_status(status: int | None, body: str) -> SendOutcome:
    if status == 429:
        return SendOutcome(RETRYABLE, TOO_MANY_REQUESTS, f"HTTP 429 {body[:200]}")
    return SendOutcome(IN_DOUBT, None, f"HTTP {status} {body[:200]}")
