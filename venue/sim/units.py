"""Exact conversions between the venue's scaled integers and decimal strings (never floats)."""
from __future__ import annotations

from decimal import Decimal

USDC_DECIMALS = 6
USDC_QUANTUM = Decimal("0.000001")


def fmt_units(units: int, decimals: int) -> str:
    """12345, 2 -> "123.45"; -5, 4 -> "-0.0005": exactly `decimals` digits after the point."""
    sign = "-" if units < 0 else ""
    digits = str(abs(units))
    if decimals == 0:
        return sign + digits
    digits = digits.rjust(decimals + 1, "0")
    return f"{sign}{digits[:-decimals]}.{digits[-decimals:]}"


def units_to_decimal(units: int, decimals: int) -> Decimal:
    return Decimal(units).scaleb(-decimals)


def decimal_to_units(value: Decimal | str, decimals: int) -> int:
    """"0.0010", 4 -> 10. Raises ValueError when the value has more decimals than allowed."""
    dec = Decimal(str(value))
    if not dec.is_finite():
        raise ValueError(f"not a finite decimal: {value!r}")
    scaled = dec.scaleb(decimals)
    if scaled != scaled.to_integral_value():
        raise ValueError(f"{value!r} has more than {decimals} decimals")
    return int(scaled)


def fmt_usdc(value: Decimal) -> str:
    q = value.quantize(USDC_QUANTUM)
    return str(q if q != 0 else Decimal("0.000000"))  # never "-0.000000"
