"""Decimal <-> venue integer scaling: exact, never through floats, never silently rounded."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedge.money import AmountError, MarketSpec, to_decimal

ETH = MarketSpec(market_index=0, symbol="ETH", size_decimals=4, price_decimals=2,
                 min_base_amount=Decimal("0.0050"), min_quote_amount=Decimal("10"))


@pytest.mark.parametrize("value, expected", [
    ("0.0100", Decimal("0.0100")), ("3000.25", Decimal("3000.25")), (5, Decimal(5)),
    (Decimal("1.5"), Decimal("1.5")), ("-0.01", Decimal("-0.01")),
])
def test_to_decimal_accepts_decimal_strings_and_ints(value, expected):
    assert to_decimal(value, "size") == expected


@pytest.mark.parametrize("value", [0.1, 1.0, True, False, "abc", "", "0x10", None, [], "NaN", "Infinity", "-inf"])
def test_to_decimal_refuses_floats_bools_and_garbage_naming_the_field(value):
    with pytest.raises(AmountError, match="base_amount"):
        to_decimal(value, "base_amount")


def test_base_to_int_is_exact_and_refuses_over_precise_amounts():
    assert ETH.base_to_int(Decimal("0.0100")) == 100
    assert ETH.base_to_int(Decimal("1")) == 10_000
    assert ETH.base_to_int(Decimal("0.01000000")) == 100  # trailing zeros are not extra precision
    with pytest.raises(AmountError, match="more than 4 decimals for ETH"):
        ETH.base_to_int(Decimal("0.01005"))


def test_int_to_decimal_keeps_the_market_decimals():
    assert str(ETH.base_from_int(100)) == "0.0100"
    assert str(ETH.price_from_int(300025)) == "3000.25"
    assert ETH.size_step == Decimal("0.0001") and ETH.price_step == Decimal("0.01")


@given(st.integers(min_value=-10**12, max_value=10**12))
def test_base_round_trip(units):
    assert ETH.base_to_int(ETH.base_from_int(units)) == units


@given(st.integers(min_value=1, max_value=10**12))
def test_price_round_trip(units):
    assert ETH.price_to_int(ETH.price_from_int(units)) == units


def test_floor_base_rounds_toward_zero_and_min_base_is_the_orderable_threshold():
    assert ETH.floor_base(Decimal("0.01239")) == Decimal("0.0123")
    assert ETH.floor_base(Decimal("-0.01239")) == Decimal("-0.0123")
    assert ETH.is_orderable(Decimal("0.0050")) and ETH.is_orderable(Decimal("-0.0050"))
    assert not ETH.is_orderable(Decimal("0.0049"))
