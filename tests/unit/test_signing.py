"""Hedge task messages: the maker's signature covers the fill and the ledger generation; nothing
else in a message can be trusted, and no float or reordering changes what is signed."""
from __future__ import annotations

import json
from decimal import Decimal

import pytest

from hedge.plan import b_position_problem, fill_bound_problem
from tasks.signing import MessageSigner, UnauthenticatedMessage

KEY = bytes(range(32))
FILL = {"fill_id": "7", "market_index": 0, "side": "buy", "base_amount": "0.0500", "price": "3000.00",
        "order_index": 1, "client_order_index": 2, "ts_exchange_ms": 3, "ts_seen_ms": 4}


def test_a_signed_fill_verifies_after_a_json_round_trip_in_any_key_order():
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    shuffled = json.loads(json.dumps(dict(reversed(list(FILL.items())))))
    assert signer.verify(shuffled, json.loads(json.dumps(auth))) == "gen-1"


@pytest.mark.parametrize("change", [
    {"base_amount": "0.0501"}, {"side": "sell"}, {"market_index": 1}, {"fill_id": "8"}, {"extra": 1}])
def test_any_change_to_the_fill_breaks_the_signature(change):
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify({**FILL, **change}, auth)


def test_another_generation_another_key_or_no_auth_is_refused():
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1")
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, {**auth, "gen": "gen-2"})
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        MessageSigner(bytes(32)).verify(FILL, auth)
    for bad in (None, "x", {}, {"v": 2, "gen": "gen-1", "sig": auth["sig"]}, {"v": 1, "gen": 5, "sig": "00"}):
        with pytest.raises(UnauthenticatedMessage):
            signer.verify(FILL, bad)
    with pytest.raises(UnauthenticatedMessage, match="not an object"):
        signer.verify("not a dict", auth)


def test_a_short_key_is_refused_and_the_key_never_shows_in_a_repr():
    with pytest.raises(ValueError):
        MessageSigner(b"short")
    assert KEY.hex() not in repr(MessageSigner(KEY))


def test_b_never_goes_beyond_max_position_base_by_the_ledger():
    limit = Decimal("0.1000")
    assert b_position_problem(Decimal("0.0500"), Decimal("0.0500"), limit) is None       # B at -0.1: allowed
    assert b_position_problem(Decimal("-0.1000"), Decimal("0.1000"), limit) is None      # closing back to 0
    problem = b_position_problem(Decimal("1.0000"), Decimal("0.0100"), limit)
    assert problem is not None and "-1.0100" in problem and "max_position_base 0.1000" in problem
    assert b_position_problem(Decimal("-0.0600"), Decimal("-0.0500"), limit) is not None  # B long 0.11


def test_a_fill_larger_than_a_can_fill_is_impossible():
    assert fill_bound_problem(Decimal("0.1000"), Decimal("0.1000"), Decimal("0.0500")) is None
    assert fill_bound_problem(Decimal("0.1500"), Decimal("0.1000"), Decimal("0.2000")) is None
    assert "exceeds" in fill_bound_problem(Decimal("1000000"), Decimal("0.1000"), Decimal("0.1000"))


# ---- an operator's price bound (requeue --max-slippage-bps) rides under the same signature ----------

PRICE = {"ref_price": "2990.10", "max_slippage_bps": "80", "b_side": "sell"}


def test_a_message_without_a_price_bound_is_signed_as_before():
    """Messages queued by an older maker (no `price` kwarg) still verify: the body is unchanged."""
    import hashlib
    import hmac

    body = json.dumps({"v": 1, "gen": "gen-1", "fill": FILL}, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=True, allow_nan=False)
    old_auth = {"v": 1, "gen": "gen-1", "sig": hmac.new(KEY, body.encode(), hashlib.sha256).hexdigest()}
    signer = MessageSigner(KEY)
    assert signer.sign(FILL, "gen-1") == old_auth == signer.sign(FILL, "gen-1", None)
    assert signer.verify(FILL, old_auth) == "gen-1" and signer.verify(FILL, old_auth, None) == "gen-1"


def test_a_price_bound_verifies_with_its_fill_after_a_json_round_trip():
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1", PRICE)
    shuffled = json.loads(json.dumps(dict(reversed(list(PRICE.items())))))
    assert signer.verify(json.loads(json.dumps(FILL)), json.loads(json.dumps(auth)), shuffled) == "gen-1"
    assert auth["sig"] != signer.sign(FILL, "gen-1")["sig"]


@pytest.mark.parametrize("change", [
    {"max_slippage_bps": "1000"}, {"max_slippage_bps": 80}, {"ref_price": "2000.00"}, {"b_side": "buy"},
    {"extra": "1"}])
def test_an_altered_price_bound_is_refused_like_an_altered_fill(change):
    signer = MessageSigner(KEY)
    auth = signer.sign(FILL, "gen-1", PRICE)
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, auth, {**PRICE, **change})


def test_a_price_bound_added_to_or_dropped_from_a_signed_message_is_refused():
    signer = MessageSigner(KEY)
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, signer.sign(FILL, "gen-1"), PRICE)          # a valid fill signature, a forged bound
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, signer.sign(FILL, "gen-1", PRICE))          # the bound stripped
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        signer.verify(FILL, signer.sign(FILL, "gen-1"), {})             # even an empty one
    with pytest.raises(UnauthenticatedMessage, match="price bound is not an object"):
        signer.verify(FILL, signer.sign(FILL, "gen-1"), "80")
    with pytest.raises(UnauthenticatedMessage, match="does not match"):
        MessageSigner(bytes(32)).verify(FILL, signer.sign(FILL, "gen-1", PRICE), PRICE)


def test_a_price_bound_is_read_as_config_bounds_max_slippage_bps():
    from hedge.price_bound import InvalidPriceBound, PriceBound, check_slippage_bps

    bound = PriceBound.from_message(PRICE)
    assert bound == PriceBound(Decimal("2990.10"), Decimal(80), "sell") and bound.overridden
    assert PriceBound.from_message(bound.to_message()) == bound
    assert check_slippage_bps(1000) == Decimal(1000) and check_slippage_bps("12.5") == Decimal("12.5")
    for bad in (0, -1, 1001, "NaN", "Infinity", 50.0, True, "abc"):
        with pytest.raises(InvalidPriceBound):
            check_slippage_bps(bad)
    for bad in ("80", {}, {**PRICE, "b_side": "long"}, {**PRICE, "ref_price": "0"}, {**PRICE, "ref_price": 2990.1},
                {**PRICE, "max_slippage_bps": "5000"}, {k: v for k, v in PRICE.items() if k != "b_side"},
                {**PRICE, "extra": 1}):
        with pytest.raises(InvalidPriceBound):
            PriceBound.from_message(bad)


class _Ledger:
    def __init__(self, unhedged: int):
        self.unhedged = unhedged


class _Store:
    def __init__(self, unhedged: int):
        self._unhedged = unhedged

    def ledger(self, market):
        return _Ledger(self._unhedged)


def test_a_requeue_is_priced_from_the_book_and_shows_its_distance_from_a_s_fill():
    """The README's example: A bought 0.0100 at 3000.00, the best bid is now 2990.10; with 50 bps from
    the book B sells no lower than 2975.15, 83 bps below A's fill. Without a bound: A's fill - config's."""
    import asyncio

    from hedge.config import parse_config
    from hedge.money import MarketSpec
    from ops.requeue import RequeuePreview, _Hedge, _price

    cfg = parse_config({"lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
                        "redis": {"url": "redis://127.0.0.1:6379/0"},
                        "accounts": {"account_a": {"account_index": 1, "api_key_index": 3},
                                     "account_b": {"account_index": 2, "api_key_index": 4}},
                        "markets": {"ETH": {"quantity": "0.01"}}, "strategy": {"max_slippage_bps": 50}})
    spec = MarketSpec(0, "ETH", 4, 2, Decimal("0.0010"))
    fill = {**FILL, "fill_id": "12", "base_amount": "0.0100"}
    hedge = _Hedge("hedge-ETH-12", "ETH", fill, "failed", "failed record")
    books = {"ETH": (spec, [Decimal("2990.10"), Decimal("2990.00")], [Decimal("2990.20")])}

    shown = asyncio.run(_price(cfg, _Store(100), hedge, Decimal(50), "cli", books))
    assert shown == RequeuePreview("hedge-ETH-12", "ETH", "sell", Decimal("0.0100"), Decimal("3000.00"),
                                   Decimal("2990.10"), Decimal("2975.15"), Decimal("-82.83"), Decimal(50), True, "12",
                                   "failed")
    assert "side=sell size=0.0100 a_fill_price=3000.00 book=2990.10" in shown.line()
    assert shown.line().endswith("worst_price=2975.15 (-83 bps from A's fill)")
    assert shown.price_message() == {"ref_price": "2990.10", "max_slippage_bps": "50", "b_side": "sell"}

    plain = asyncio.run(_price(cfg, _Store(100), hedge, None, "cli", books))
    assert (plain.worst_price, plain.distance_bps, plain.from_book) == (Decimal("2985.00"), Decimal(-50), False)
    assert plain.price_message() is None
    # A sold (the ledger short): B buys, priced from the best ask; nothing unhedged: said so.
    bought = asyncio.run(_price(cfg, _Store(-100), hedge, Decimal(50), "cli", books))
    assert (bought.b_side, bought.book_price, bought.worst_price) == ("buy", Decimal("2990.20"), Decimal("3005.15"))
    assert "(nothing unhedged" in asyncio.run(_price(cfg, _Store(0), hedge, Decimal(50), "cli", books)).line()
