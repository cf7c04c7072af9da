"""Hedge task messages are authenticated: whoever can write to Redis must not be able to make B trade.

The maker signs each hedge_fill message with the task signing key it shares with the worker
(venue.keys.task_signing_key): HMAC-SHA256 over the fill and the ledger generation the fill was
counted in (tasks.store: a wiped Redis starts a new generation), and an operator's price bound when
the message carries one (the `price` kwarg of a requeue with --max-slippage-bps, hedge.price_bound).
The worker refuses a message whose signature is missing or wrong before it reads anything else in
it: an added, altered or removed price bound fails like an altered fill. A message without a price
bound is signed exactly as before, so messages queued by an older maker still verify. The hint is not signed: it only
lets the worker sign early, and the ledger script opens that leg only when the ledger still equals
it (a compare-and-set). A replay of a signed message is harmless: the ledger counts a fill once.

HMAC rather than Celery's `auth` serializer: that one needs an X.509 key pair and certificate
store per process, and signs the whole message including the retry bookkeeping Celery rewrites.
"""
from __future__ import annotations

import hashlib
import hmac
import json
from dataclasses import dataclass
from typing import Any

AUTH_VERSION = 1


class UnauthenticatedMessage(Exception):
    """The message carries no valid signature: it was not written by our maker (or the key differs)."""


@dataclass(frozen=True)
class TaskAuth:
    generation: str
    signature: str

    def to_message(self) -> dict[str, Any]:
        return {"v": AUTH_VERSION, "gen": self.generation, "sig": self.signature}


class MessageSigner:
    def __init__(self, key: bytes):
        if len(key) < 32:
            raise ValueError("the task signing key must be at least 32 bytes")
        self._key = key

    def __repr__(self) -> str:
        return "MessageSigner(key='***')"

    def sign(self, fill_msg: dict[str, Any], generation: str, price: dict[str, Any] | None = None) -> dict[str, Any]:
        """The `auth` argument of hedge_fill for this fill, counted in ledger `generation`, with the
        message's `price` kwarg (an operator's price bound) when it has one."""
        return TaskAuth(generation, self._mac(fill_msg, generation, price)).to_message()

    def verify(self, fill_msg: Any, auth: Any, price: Any = None) -> str:
        """The generation the message was signed for; UnauthenticatedMessage if it is not ours.
        `price`: the message's price bound (None: it has none), covered by the same signature."""
        if not isinstance(auth, dict):
            raise UnauthenticatedMessage("unsigned task message (no auth)")
        generation, signature = auth.get("gen"), auth.get("sig")
        if auth.get("v") != AUTH_VERSION or not isinstance(generation, str) or not isinstance(signature, str):
            raise UnauthenticatedMessage(f"task message auth not of the form {{v: {AUTH_VERSION}, gen, sig}}")
        if not isinstance(fill_msg, dict):
            raise UnauthenticatedMessage("task message fill is not an object")
        if price is not None and not isinstance(price, dict):
            raise UnauthenticatedMessage("task message price bound is not an object")
        try:
            expected = self._mac(fill_msg, generation, price)
        except (TypeError, ValueError):
            raise UnauthenticatedMessage("task message fill cannot be encoded") from None
        if not hmac.compare_digest(expected, signature):
            raise UnauthenticatedMessage("task message signature does not match (forged, altered, or signed "
                                         "with another task signing key)")
        return generation

    def _mac(self, fill_msg: dict[str, Any], generation: str, price: dict[str, Any] | None = None) -> str:
        signed: dict[str, Any] = {"v": AUTH_VERSION, "gen": generation, "fill": fill_msg}
        if price is not None:   # absent, the body is the one messages without a price bound always had
            signed["price"] = price
        body = json.dumps(signed, sort_keys=True, separators=(",", ":"), ensure_ascii=True, allow_nan=False)
        return hmac.new(self._key, body.encode(), hashlib.sha256).hexdigest()
