"""Fill parsing: task messages and venue trades become a Fill, or are refused naming the field."""
from __future__ import annotations

from decimal import Decimal

import pytest

from hedge.fill import BUY, SELL, Fill, InvalidFill, fill_from_trade, opposite, signed

A, OTHER = 281001, 2


def trade(**overrides):
    """A venue Trade in the stream/REST shape: A's resting ask (maker) taken by OTHER."""
    t = {"trade_id": 912297287, "tx_hash": "5de6", "type": "trade", "market_id": 0,
         "size": "0.0100", "price": "3000.25", "usd_amount": "30.002500",
         "ask_id": 281474976710700, "bid_id": 281474976710800,
         "ask_client_id": 77, "bid_client_id": 0,
         "ask_account_id": A, "bid_account_id": OTHER, "is_maker_ask": True,
         "block_height": 5, "timestamp": 1790072395752}
    t.update(overrides)
    return t


def message(**overrides):
    m = {"fill_id": "912297287", "market_index": 0, "side": "buy", "base_amount": "0.0100",
         "price": "3000.25", "order_index": 281474976710800, "client_order_index": 77,
         "ts_exchange_ms": 1790072395752, "ts_seen_ms": 1790072395800}
    m.update(overrides)
    return m


def test_a_as_maker_ask_is_a_sell_of_its_ask_order():
    fill = fill_from_trade(trade(), A, ts_seen_ms=42)
    assert fill == Fill(fill_id="912297287", market_index=0, side=SELL, base_amount=Decimal("0.0100"),
                        price=Decimal("3000.25"), order_index=281474976710700, client_order_index=77,
                        ts_exchange_ms=1790072395752, ts_seen_ms=42)


def test_a_as_bid_is_a_buy_of_its_bid_order():
    t = trade(ask_account_id=OTHER, bid_account_id=A, ask_client_id=0, bid_client_id=91, is_maker_ask=False)
    fill = fill_from_trade(t, A, ts_seen_ms=1)
    assert (fill.side, fill.order_index, fill.client_order_index) == (BUY, 281474976710800, 91)


@pytest.mark.parametrize("is_maker_ask", [True, False])
def test_side_does_not_depend_on_who_was_maker(is_maker_ask):
    # A taker-side trade of A is still A's trade, on the side A's account is on.
    assert fill_from_trade(trade(is_maker_ask=is_maker_ask), A, 1).side == SELL
    t = trade(ask_account_id=OTHER, bid_account_id=A, is_maker_ask=is_maker_ask)
    assert fill_from_trade(t, A, 1).side == BUY


def test_trade_of_other_accounts_is_not_a_fill():
    assert fill_from_trade(trade(ask_account_id=5, bid_account_id=6), A, 1) is None


def test_a_on_both_sides_is_refused():
    with pytest.raises(InvalidFill, match="both sides"):
        fill_from_trade(trade(bid_account_id=A), A, 1)


def test_missing_client_id_and_timestamp_default_to_zero():
    t = trade()
    del t["ask_client_id"], t["timestamp"]
    fill = fill_from_trade(t, A, 1)
    assert fill.client_order_index == 0 and fill.ts_exchange_ms == 0


@pytest.mark.parametrize("field", ["trade_id", "market_id", "size", "price", "ask_id"])
def test_trade_missing_a_needed_field_names_it(field):
    t = trade()
    del t[field]
    with pytest.raises(InvalidFill, match=field):
        fill_from_trade(t, A, 1)


@pytest.mark.parametrize("field, value, named", [
    ("ask_account_id", "x", "ask_account_id"), ("bid_account_id", None, "bid_account_id"),
    ("size", 0.01, "base_amount"), ("size", "abc", "base_amount"), ("size", "0", "base_amount"),
    ("size", "-0.0100", "base_amount"), ("price", "NaN", "price"), ("price", "0", "price"),
    ("market_id", "zero", "market_index"), ("market_id", [0], "market_index"),
    ("ask_id", 1.5, "order_index"), ("ask_id", "--5", "order_index"), ("ask_id", True, "order_index"),
    ("ask_client_id", "x", "client_order_index"), ("timestamp", {"ms": 1}, "ts_exchange_ms"),
])
def test_malformed_trade_values_are_refused_naming_the_field(field, value, named):
    with pytest.raises(InvalidFill, match=named):
        fill_from_trade(trade(**{field: value}), A, 1)


def test_message_round_trip_keeps_decimal_strings():
    fill = Fill.from_message(message())
    out = fill.to_message()
    assert out == message() | {"base_amount": "0.0100", "price": "3000.25"}
    assert isinstance(out["base_amount"], str) and isinstance(out["price"], str)
    assert Fill.from_message(out) == fill


@pytest.mark.parametrize("field", ["fill_id", "market_index", "side", "base_amount", "price", "order_index",
                                   "client_order_index", "ts_exchange_ms", "ts_seen_ms"])
def test_message_missing_field_is_named(field):
    msg = message()
    del msg[field]
    with pytest.raises(InvalidFill, match=field):
        Fill.from_message(msg)


@pytest.mark.parametrize("field, value", [
    ("fill_id", ""), ("fill_id", None), ("fill_id", True), ("market_index", "0x1"),
    ("side", "long"), ("side", "BUY"), ("base_amount", 0.01), ("base_amount", "1e"),
    ("base_amount", "0"), ("price", "-1"), ("price", "Infinity"), ("order_index", 3.0),
    ("client_order_index", False), ("ts_seen_ms", "²"),
])
def test_message_bad_value_is_refused_naming_the_field(field, value):
    with pytest.raises(InvalidFill, match=field):
        Fill.from_message(message(**{field: value}))


@pytest.mark.parametrize("msg", [None, [], "fill", 5])
def test_message_not_an_object_is_refused(msg):
    with pytest.raises(InvalidFill, match="object"):
        Fill.from_message(msg)


def test_sides():
    assert opposite(BUY) == SELL and opposite(SELL) == BUY
    with pytest.raises(InvalidFill):
        opposite("hold")
    assert signed(BUY, Decimal("0.5")) == Decimal("0.5") and signed(SELL, Decimal("0.5")) == Decimal("-0.5")
