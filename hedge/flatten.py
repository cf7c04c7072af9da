"""What `lighter-hedge flatten` asks of the process that sends on a key, and what it answers.

One sender per key (tasks/key_lease.py): A's close is sent by the maker when it runs (asked over
the control channel, answered in Redis), B's by the worker (the Celery task tasks.flatten_b), and
by the CLI itself only for a key no process holds. All three answer with a CloseResult.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

FLATTEN_A_EVENT = "flatten_a"   # control channel message: {event, market, request_id, deadline_ms}


class FlattenError(Exception):
    """A close could not be done (or not confirmed); the message says why and what to do."""


@dataclass(frozen=True)
class CloseResult:
    """One account's close on one market."""

    account: str                   # "A" or "B"
    market: str
    via: str                       # who sent it: "maker", "worker" or "cli"
    ok: bool                       # the account is flat on the market afterwards
    position_before: Decimal
    position_after: Decimal
    client_order_index: int | None = None   # the close order, if one was sent
    status: str | None = None               # its final status at the venue
    filled_base: Decimal = Decimal(0)
    cancelled: int = 0             # A's resting orders cancelled first
    reason: str = ""               # why not ok

    def describe(self) -> str:
        order = (f" client_order_index={self.client_order_index} status={self.status} filled={_num(self.filled_base)}"
                 if self.client_order_index is not None else " order=none")
        return (f"market={self.market} close {self.account} via={self.via} before={_num(self.position_before)} "
                f"after={_num(self.position_after)}{order}" + (f" cancelled={self.cancelled}" if self.cancelled else "")
                + (f" error={self.reason}" if self.reason else ""))

    def to_message(self) -> dict[str, Any]:
        return {"account": self.account, "market": self.market, "via": self.via, "ok": self.ok,
                "position_before": str(self.position_before), "position_after": str(self.position_after),
                "client_order_index": self.client_order_index, "status": self.status,
                "filled_base": str(self.filled_base), "cancelled": self.cancelled, "reason": self.reason}

    @classmethod
    def from_message(cls, msg: dict[str, Any]) -> "CloseResult":
        coi = msg.get("client_order_index")
        return cls(account=str(msg["account"]), market=str(msg["market"]), via=str(msg["via"]), ok=bool(msg["ok"]),
                   position_before=Decimal(str(msg["position_before"])),
                   position_after=Decimal(str(msg["position_after"])),
                   client_order_index=None if coi is None else int(coi), status=msg.get("status"),
                   filled_base=Decimal(str(msg.get("filled_base") or "0")), cancelled=int(msg.get("cancelled") or 0),
                   reason=str(msg.get("reason") or ""))


def _num(value: Decimal) -> str:
    return "0" if value == 0 else str(value)
