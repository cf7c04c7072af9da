"""A hedge leg (one B market order) as a typed record, and the rule that resolves one in doubt.

Lighter *takes* a transaction when sendTx answers 200, but executes it later (its speed bump, or
much later), and it stays executable until its `ExpiredAt` (~10 minutes). So a leg the venue does
not show yet is never "lost" because time passed. The key's nonce is the witness: every leg
records the nonce it was signed with, and of all transactions signed with one nonce on one key, at
most one can ever be taken.

    WRITTEN --sent--> SENT --venue took it--> TAKEN --executed--> EXECUTED
       |               |                        '--ExpiredAt passed--> EXPIRED
       '---------------+--definitely not applied (reject, or its nonce taken by another tx)--> REJECTED

Pure: the shell (tasks/hedge.py) gathers the evidence and applies the decision.
"""
from __future__ import annotations

import enum
import json
from dataclasses import asdict, dataclass, replace
from typing import Any

# ExpiredAt as the SDK's signer sets it is now + 599 s (lighter-go DefaultExpireTime - 1 s); a leg
# written ahead before signing records now + this as the latest its tx can execute.
TX_EXPIRY_BOUND_MS = 600_000
# Past ExpiredAt, give the venue this long before a leg that never showed counts as expired
# (clock skew between us and the sequencer).
EXPIRY_MARGIN_MS = 5_000
NONCE_MOVED = "nonce moved"


class LegState(enum.Enum):
    WRITTEN = "written"      # intent stored before signing/sending; may or may not have reached the venue
    SENT = "sent"            # on the wire, the answer lost or unclear (timeout, 5xx, unknown code)
    TAKEN = "taken"          # the venue has it (200, nonce moved, listed active): executes or expires
    EXECUTED = "executed"    # final at the venue (filled all, some or nothing), counted in the ledger
    REJECTED = "rejected"    # definitely never applied
    EXPIRED = "expired"      # its ExpiredAt passed without it executing

    @property
    def open(self) -> bool:
        """Still in flight: counted against the market, nothing new is sent beside it."""
        return self in (LegState.WRITTEN, LegState.SENT, LegState.TAKEN)


class LegStateError(ValueError):
    """A transition the leg's state does not allow (a bug, never a venue event)."""


@dataclass(frozen=True)
class Leg:
    leg: int                    # the market's ledger sequence number
    client_order_index: int     # hedge.plan.leg_client_order_index(market, leg)
    is_ask: bool                # B sells (covers an A buy)
    base_int: int               # size, venue units
    worst_price_int: int
    fill_id: str                # the fill whose task opened it (log correlation)
    state: LegState = LegState.WRITTEN
    written_ms: int = 0         # when the intent was stored (ms since epoch)
    api_key_index: int | None = None
    nonce: int | None = None    # the nonce it is (to be) signed with: the witness
    expires_by_ms: int | None = None   # its tx can never execute after this (ExpiredAt, or a bound of it)
    tx_hash: str | None = None
    sent_ms: int | None = None  # when the wire call started (ms since epoch)
    # What showed the venue took it: "answered 200", "listed", "known by hash" (each names this very
    # tx), or "nonce moved" (its nonce was used - by it, or by another tx signed with that nonce).
    witness: str = ""
    # Once EXECUTED: the venue's final word.
    status: str | None = None
    order_index: int | None = None
    executed_int: int = 0
    filled_quote: str = "0"
    hedged_units: int = 0       # executed, in A's direction (a B sell covers an A buy: +)
    note: str = ""              # why it was rejected / expired (the venue's words)

    # ---- transitions -----------------------------------------------------------------------

    def _to(self, state: LegState, allowed: tuple[LegState, ...], **changes: Any) -> "Leg":
        if self.state not in allowed:
            raise LegStateError(f"leg {self.leg}: cannot go from {self.state.name} to {state.name}")
        return replace(self, state=state, **changes)

    def sent(self, sent_ms: int, tx_hash: str | None, expired_at_ms: int | None) -> "Leg":
        return self._to(LegState.SENT, (LegState.WRITTEN, LegState.SENT), sent_ms=sent_ms,
                        tx_hash=tx_hash or self.tx_hash, expires_by_ms=expired_at_ms or self.expires_by_ms)

    def taken(self, witness: str, tx_hash: str | None = None) -> "Leg":
        return self._to(LegState.TAKEN, (LegState.WRITTEN, LegState.SENT, LegState.TAKEN),
                        tx_hash=tx_hash or self.tx_hash, witness=witness)

    @property
    def surely_taken(self) -> bool:
        """The venue took this very tx (not merely some tx with its nonce)."""
        return self.state is LegState.TAKEN and self.witness != NONCE_MOVED

    def executed(self, status: str, order_index: int, executed_int: int, filled_quote: str) -> "Leg":
        return self._to(LegState.EXECUTED, (LegState.WRITTEN, LegState.SENT, LegState.TAKEN), status=status,
                        order_index=order_index, executed_int=executed_int, filled_quote=filled_quote,
                        hedged_units=executed_int if self.is_ask else -executed_int)

    def rejected(self, why: str) -> "Leg":
        # From TAKEN only on the venue's word (its tx failed) or when a sibling with its nonce was
        # surely taken (then this one was taken only "by nonce").
        return self._to(LegState.REJECTED, (LegState.WRITTEN, LegState.SENT, LegState.TAKEN), note=why)

    def expired(self, why: str) -> "Leg":
        return self._to(LegState.EXPIRED, (LegState.WRITTEN, LegState.SENT, LegState.TAKEN), note=why)

    # ---- what it means for the ledger ------------------------------------------------------

    @property
    def in_flight_units(self) -> int:
        """What it would take off A's exposure if it executed in full (A's direction)."""
        return self.base_int if self.is_ask else -self.base_int

    # ---- storage ---------------------------------------------------------------------------

    def to_json(self) -> str:
        raw = asdict(self)
        raw["state"] = self.state.value
        return json.dumps(raw, separators=(", ", ": "))

    @classmethod
    def from_json(cls, text: str) -> "Leg":
        raw = json.loads(text)
        state = raw.pop("state", "written")
        # Records of the engine before typed legs: PENDING / DONE / VOID.
        state = {"PENDING": "sent", "DONE": "executed", "VOID": "rejected"}.get(state, state)
        known = {f for f in cls.__dataclass_fields__}
        if "sent_ms" in raw and "written_ms" not in raw:
            raw["written_ms"] = raw["sent_ms"] or 0
        if "expires_by_ms" not in raw and raw.get("written_ms"):   # a record of the engine before typed legs
            # A record without its tx's ExpiredAt: the signer's bound from when it was written.
            raw["expires_by_ms"] = int(raw["written_ms"]) + TX_EXPIRY_BOUND_MS
        return cls(state=LegState(state), **{k: v for k, v in raw.items() if k in known and k != "state"})


# ---- resolving a leg in doubt ---------------------------------------------------------------

class Verdict(enum.Enum):
    SETTLE = "settle"            # the venue lists it final: count what it executed
    WAIT = "wait"                # the venue has it (or may have it) and it can still execute: keep it open
    TAKEN = "taken"              # the venue took it: mark it TAKEN and wait for it
    REJECT = "reject"            # it can never execute: its nonce went to another tx, or the venue refused it
    EXPIRE = "expire"            # its ExpiredAt passed and the venue never showed it
    READ_NONCE = "read_nonce"    # ask the venue for the key's next nonce (at or after `at_ms`)
    FENCE = "fence"              # the nonce has not moved: sign the next tx on the key with the leg's nonce


class OrderSeen(enum.Enum):
    NOT_SEEN = "not_seen"
    ACTIVE = "active"
    FINAL = "final"


@dataclass(frozen=True)
class Evidence:
    """What the venue (and our own records) say about one open leg, gathered by the shell."""

    now_ms: int
    order: OrderSeen = OrderSeen.NOT_SEEN     # by client_order_index (B's order stream, else REST)
    tx_failed: str | None = None              # the venue reports its tx failed (code and message)
    tx_known: bool = False                    # the venue knows its tx by hash (pending or executed)
    nonce_taken_by_other: str | None = None   # another tx surely taken with the leg's nonce
    next_nonce: int | None = None             # the key's next nonce at the venue, read at `nonce_read_ms`
    nonce_read_ms: int | None = None


@dataclass(frozen=True)
class Resolution:
    verdict: Verdict
    why: str
    at_ms: int | None = None   # READ_NONCE: not before this


def resolve(leg: Leg, ev: Evidence, nonce_lag_ms: int) -> Resolution:
    """The nonce-witnessed rule for one open leg. Never voids a leg on elapsed time alone.

    1. The venue lists it: final -> SETTLE; active -> TAKEN.
    2. Its tx failed at the venue, or another tx we sent was accepted with its nonce -> REJECT.
    3. The venue knows the tx by hash, or took it before -> TAKEN/WAIT until it executes, or EXPIRE
       once its ExpiredAt has passed (with a margin) without the venue ever listing it.
    4. Otherwise the nonce decides, read at least `nonce_lag_ms` after the send (the venue's next
       nonce shows a taken tx only after a lag): moved past the leg's nonce -> TAKEN (pending until
       it executes or expires); not moved -> FENCE (the next tx on the key takes that nonce, so this
       one can never execute later).
    """
    if not leg.state.open:
        raise LegStateError(f"leg {leg.leg} is {leg.state.name}: nothing to resolve")
    if ev.order is OrderSeen.FINAL:
        return Resolution(Verdict.SETTLE, "the venue lists the order final")
    if ev.order is OrderSeen.ACTIVE:
        return Resolution(Verdict.TAKEN, "the venue lists the order")
    if ev.tx_failed is not None:
        return Resolution(Verdict.REJECT, f"the venue reports its tx failed: {ev.tx_failed}")
    if ev.nonce_taken_by_other is not None:
        return Resolution(Verdict.REJECT, f"nonce {leg.nonce} was taken by {ev.nonce_taken_by_other}")
    expired = leg.expires_by_ms is not None and ev.now_ms > leg.expires_by_ms + EXPIRY_MARGIN_MS
    if leg.state is LegState.TAKEN or ev.tx_known:
        if expired:
            return Resolution(Verdict.EXPIRE, f"taken, never executed, ExpiredAt {leg.expires_by_ms} ms passed")
        return Resolution(Verdict.WAIT if leg.state is LegState.TAKEN else Verdict.TAKEN,
                          "the venue took it; it executes or expires")
    if leg.nonce is None:
        # Written by an engine that did not record nonces: only its expiry can close it.
        if expired:
            return Resolution(Verdict.EXPIRE, "no nonce recorded and its expiry bound passed")
        return Resolution(Verdict.WAIT, "no nonce recorded: wait for the venue or its expiry")
    sent_ms = leg.sent_ms if leg.sent_ms is not None else leg.written_ms
    earliest_ms = sent_ms + nonce_lag_ms
    if ev.next_nonce is None or ev.nonce_read_ms is None or ev.nonce_read_ms < earliest_ms:
        return Resolution(Verdict.READ_NONCE, "the key's nonce decides", at_ms=max(earliest_ms, ev.now_ms))
    if ev.next_nonce > leg.nonce:
        if expired:
            return Resolution(Verdict.EXPIRE, f"nonce {leg.nonce} used, never executed, ExpiredAt passed")
        return Resolution(Verdict.TAKEN, f"the key's next nonce {ev.next_nonce} is past the leg's {leg.nonce}")
    return Resolution(Verdict.FENCE, f"the key's next nonce {ev.next_nonce} has not moved past {leg.nonce}")
