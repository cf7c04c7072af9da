"""Decimal <-> venue integer scaling. Money is Decimal or the venue's integers, never float."""
from __future__ import annotations

import math
from dataclasses import dataclass
from decimal import ROUND_CEILING, ROUND_DOWN, ROUND_FLOOR, Decimal, InvalidOperation
from fractions import Fraction


class AmountError(ValueError):
    """An amount that cannot be represented on a market (too many decimals, not a number)."""


def to_decimal(value: object, what: str) -> Decimal:
    """Parse a decimal string/int; floats are refused so no binary rounding sneaks in."""
    if isinstance(value, float) or isinstance(value, bool):
        raise AmountError(f"{what} must be a decimal string like '0.0100', got {value!r}")
    try:
        result = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise AmountError(f"{what} must be a decimal string like '0.0100', got {value!r}") from None
    if not result.is_finite():
        raise AmountError(f"{what} must be finite, got {value!r}")
    return result


@dataclass(frozen=True)
class MarketSpec:
    """One perp market's precision and minimums, as the venue's orderBookDetails gives them."""

    market_index: int
    symbol: str
    size_decimals: int
    price_decimals: int
    min_base_amount: Decimal
    min_quote_amount: Decimal = Decimal("0")

    @property
    def size_step(self) -> Decimal:
        return Decimal(1).scaleb(-self.size_decimals)

    @property
    def price_step(self) -> Decimal:
        return Decimal(1).scaleb(-self.price_decimals)

    def base_to_int(self, base: Decimal) -> int:
        """Exact conversion; an amount finer than the market's size step is an error, not rounded."""
        scaled = base.scaleb(self.size_decimals)
        if scaled != scaled.to_integral_value():
            raise AmountError(f"{base} has more than {self.size_decimals} decimals for {self.symbol}")
        return int(scaled)

    def base_from_int(self, base_int: int) -> Decimal:
        return Decimal(base_int).scaleb(-self.size_decimals).quantize(self.size_step)

    def price_to_int(self, price: Decimal, rounding: str = ROUND_DOWN) -> int:
        return int(price.scaleb(self.price_decimals).to_integral_value(rounding=rounding))

    def price_from_int(self, price_int: int) -> Decimal:
        return Decimal(price_int).scaleb(-self.price_decimals).quantize(self.price_step)

    def floor_base(self, base: Decimal) -> Decimal:
        """Round a size toward zero to the market's step (what can actually be ordered)."""
        return base.quantize(self.size_step, rounding=ROUND_DOWN)

    def is_orderable(self, base: Decimal, price: Decimal | None = None) -> bool:
        """Whether the venue accepts an order of `base` (either sign): at least min_base_amount and,
        when a price is given, a notional |base| x price of at least min_quote_amount (else 21706)."""
        if abs(base) < self.min_base_amount:
            return False
        # Exact product: a rounded one could pass an order the venue refuses by a hair.
        return price is None or Fraction(abs(base)) * Fraction(price) >= Fraction(self.min_quote_amount)

    def min_orderable_base(self, price: Decimal | None = None) -> Decimal:
        """The smallest size on the size step that meets both minimums at `price` (rounded up);
        without a price, only min_base_amount counts."""
        needed = Fraction(self.min_base_amount)
        if price is not None:
            if price <= 0:
                raise AmountError(f"{self.symbol} price must be a decimal > 0 to size an order, got {price}")
            needed = max(needed, Fraction(self.min_quote_amount) / Fraction(price))
        steps = math.ceil(needed / Fraction(self.size_step))
        return self.base_from_int(steps)


__all__ = ["AmountError", "MarketSpec", "to_decimal", "ROUND_CEILING", "ROUND_FLOOR", "ROUND_DOWN"]
