"""What B's worst price is computed from: a reference price and a slippage bound in bps.

By default the reference is A's fill price and the bound `strategy.max_slippage_bps`. A requeue
with `--max-slippage-bps N` (ops/requeue.py) sends an operator's bound instead: the best price on
B's side of the book when the requeue was decided, and N. It travels in the hedge message as the
`price` kwarg and is covered by the message's signature (tasks.signing), so it is trusted exactly
as far as the fill is.
"""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from hedge.config import MAX_SLIPPAGE_BPS
from hedge.fill import BUY, SELL
from hedge.money import AmountError, to_decimal


class InvalidPriceBound(ValueError):
    """A price override that is not of the form {"ref_price", "max_slippage_bps", "b_side"}."""


def check_slippage_bps(value: Any, what: str = "max_slippage_bps") -> Decimal:
    """A slippage bound as strategy.max_slippage_bps allows it: a decimal > 0 and at most
    MAX_SLIPPAGE_BPS (10 %). InvalidPriceBound (one line) otherwise."""
    try:
        bps = to_decimal(value, what)
    except AmountError as exc:
        raise InvalidPriceBound(str(exc)) from None
    if not 0 < bps <= MAX_SLIPPAGE_BPS:
        raise InvalidPriceBound(f"{what}: expected more than 0 and at most {MAX_SLIPPAGE_BPS} (10 %), got {value}")
    return bps


@dataclass(frozen=True)
class PriceBound:
    ref_price: Decimal          # the worst price is this +- max_slippage_bps
    max_slippage_bps: Decimal
    b_side: str | None = None   # an operator's bound is priced from one side of the book: B's "buy" or "sell"

    @property
    def overridden(self) -> bool:
        return self.b_side is not None

    def to_message(self) -> dict[str, Any]:
        """JSON-safe, as signed: decimal strings, never floats."""
        assert self.b_side is not None, "only an operator's bound travels in a message"
        return {"ref_price": str(self.ref_price), "max_slippage_bps": str(self.max_slippage_bps),
                "b_side": self.b_side}

    @classmethod
    def from_message(cls, msg: Any) -> "PriceBound":
        if not isinstance(msg, Mapping):
            raise InvalidPriceBound(f"price override must be an object, got {type(msg).__name__}")
        if set(msg) != {"ref_price", "max_slippage_bps", "b_side"}:
            raise InvalidPriceBound(f"price override must have ref_price, max_slippage_bps and b_side, got "
                                    f"{', '.join(sorted(map(str, msg))) or 'nothing'}")
        try:
            ref_price = to_decimal(msg["ref_price"], "price override ref_price")
        except AmountError as exc:
            raise InvalidPriceBound(str(exc)) from None
        if ref_price <= 0:
            raise InvalidPriceBound(f"price override ref_price must be > 0, got {msg['ref_price']!r:.40}")
        if msg["b_side"] not in (BUY, SELL):
            raise InvalidPriceBound(f"price override b_side must be 'buy' or 'sell', got {msg['b_side']!r:.40}")
        return cls(ref_price, check_slippage_bps(msg["max_slippage_bps"], "price override max_slippage_bps"),
                   msg["b_side"])
