"""Lighter's order minimums (code 21706): size >= min_base_amount AND size x price >= min_quote_amount.

B's hedge is checked at the worst price it signs, A's quotes at their own price, and the maker
refuses at start-up a quantity the venue would refuse at today's price.
"""
from __future__ import annotations

import asyncio
import decimal
from decimal import Decimal
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from hedge.config import ConfigError, parse_config
from hedge.fill import BUY, SELL
from hedge.money import AmountError, MarketSpec
from hedge.plan import Quote, next_quote, quote_size_problem, split_hedge, worst_price_int

ETH = MarketSpec(market_index=0, symbol="ETH", size_decimals=4, price_decimals=2,
                 min_base_amount=Decimal("0.0050"), min_quote_amount=Decimal("10.000000"))


def notional(base: Decimal, price: Decimal) -> Decimal:
    """|base| x price computed exactly (independently of hedge.money's arithmetic)."""
    with decimal.localcontext() as ctx:
        ctx.prec = 200
        ctx.traps[decimal.Inexact] = True
        return abs(base) * price


def venue_accepts(spec: MarketSpec, base: Decimal, price: Decimal) -> bool:
    """The simulator's rule (venue/sim/engine.py), restated: both minimums."""
    return abs(base) >= spec.min_base_amount and notional(base, price) >= spec.min_quote_amount


@st.composite
def specs(draw) -> MarketSpec:
    size_decimals = draw(st.integers(0, 8))
    price_decimals = draw(st.integers(0, 6))
    step = Decimal(1).scaleb(-size_decimals)
    min_quote = Decimal(draw(st.integers(0, 10**9))).scaleb(-draw(st.integers(0, 6)))  # 0 .. 10^9 USDC
    return MarketSpec(market_index=draw(st.integers(0, 254)), symbol="X", size_decimals=size_decimals,
                      price_decimals=price_decimals, min_base_amount=step * draw(st.integers(1, 1000)),
                      min_quote_amount=min_quote)


def prices(spec: MarketSpec):
    return st.integers(1, 10**10).map(spec.price_from_int)


# ---- MarketSpec ------------------------------------------------------------------------------

def test_is_orderable_without_a_price_checks_only_the_size():
    assert ETH.is_orderable(Decimal("0.0050")) and ETH.is_orderable(Decimal("-0.0050"))
    assert not ETH.is_orderable(Decimal("0.0049"))


@pytest.mark.parametrize("base, price, ok", [
    ("0.0050", "2000.00", True),    # exactly 10 USDC
    ("0.0050", "1999.99", False),   # 9.99995 USDC
    ("-0.0053", "1900.00", True),   # 10.07 USDC; the sign is the side, not the size
    ("0.0052", "1900.00", False),   # 9.88 USDC
    ("0.0049", "9000.00", False),   # notional fine, size not
])
def test_is_orderable_at_a_price_needs_both_minimums(base, price, ok):
    assert ETH.is_orderable(Decimal(base), Decimal(price)) is ok


def test_min_orderable_base_examples():
    assert ETH.min_orderable_base(Decimal("1900.00")) == Decimal("0.0053")   # 10 / 1900 = 0.005263.. up
    assert ETH.min_orderable_base(Decimal("2000.00")) == Decimal("0.0050")   # exactly 10 USDC
    assert ETH.min_orderable_base(Decimal("1999.99")) == Decimal("0.0051")
    assert ETH.min_orderable_base(Decimal("3000.00")) == ETH.min_orderable_base() == Decimal("0.0050")
    with pytest.raises(AmountError, match="price must be a decimal > 0"):
        ETH.min_orderable_base(Decimal(0))


@given(spec=specs(), data=st.data())
def test_min_orderable_base_is_the_smallest_accepted_size_on_the_step(spec, data):
    price = data.draw(prices(spec))
    smallest = spec.min_orderable_base(price)
    assert smallest % spec.size_step == 0
    assert venue_accepts(spec, smallest, price) and spec.is_orderable(smallest, price)
    one_less = smallest - spec.size_step
    assert not venue_accepts(spec, one_less, price) and not spec.is_orderable(one_less, price)


@given(spec=specs(), data=st.data())
def test_is_orderable_agrees_with_the_venue_rule(spec, data):
    price = data.draw(prices(spec))
    # Sizes around the threshold, where rounding would show.
    units = spec.base_to_int(spec.min_orderable_base(price)) + data.draw(st.integers(-3, 3))
    base = spec.base_from_int(units) * data.draw(st.sampled_from([1, -1]))
    assert spec.is_orderable(base, price) == venue_accepts(spec, base, price)


# ---- (a) split_hedge at B's worst price --------------------------------------------------------

@given(spec=specs(), data=st.data())
def test_split_orders_nothing_or_a_size_the_venue_accepts_at_the_worst_price(spec, data):
    worst = data.draw(prices(spec))
    threshold = spec.base_to_int(spec.min_orderable_base(worst))
    units = data.draw(st.one_of(st.integers(-10**9, 10**9), st.integers(threshold - 3, threshold + 3)))
    # An unhedged amount may carry sub-step digits (extra) besides whole steps.
    extra = Decimal(data.draw(st.integers(0, 999))).scaleb(-spec.size_decimals - 3)
    amount = spec.base_from_int(units) + (extra if units >= 0 else -extra)
    split = split_hedge(amount, spec, worst)
    assert split.order_signed + split.dust_signed == amount  # exactly: nothing lost, nothing made up
    if split.order_signed:
        assert venue_accepts(spec, split.order_signed, worst)
        assert split.order_signed % spec.size_step == 0
        assert (split.order_signed > 0) == (amount > 0)
        assert abs(split.dust_signed) < spec.size_step
    else:
        assert split.dust_signed == amount
        # Nothing the venue would take was held back.
        assert not venue_accepts(spec, spec.floor_base(amount), worst)


def test_split_examples_at_1900():
    # B sells at a worst price of 1890.50 (50 bps under a 1900.00 fill): 0.0052 is only 9.83 USDC.
    worst = ETH.price_from_int(worst_price_int(Decimal("1900.00"), True, Decimal(50), ETH))
    assert worst == Decimal("1890.50")
    assert split_hedge(Decimal("0.0052"), ETH, worst).order_signed == 0
    assert split_hedge(Decimal("0.0053"), ETH, worst).order_signed == Decimal("0.0053")  # 10.02 USDC
    assert split_hedge(Decimal("-0.0053"), ETH, Decimal("1909.50")).order_signed == Decimal("-0.0053")
    # Without a worst price only the size counts (callers that do not pass one yet).
    assert split_hedge(Decimal("0.0052"), ETH).order_signed == Decimal("0.0052")


# ---- (b) dust never grows past one minimum -----------------------------------------------------

@given(spec=specs(), data=st.data())
def test_dust_stays_below_one_minimum_at_each_hedges_worst_price(spec, data):
    """What holds after every hedge: |dust| < min_orderable_base(that hedge's worst price), and an
    amount that reached it is hedged whole (fills are whole size steps, as the venue's are).
    The bound moves with the price (min_quote_amount / price), so it is per hedge, not one number."""
    mid_units = data.draw(st.integers(1000, 10**9))
    slippage = Decimal(data.draw(st.integers(0, 500)))
    lot = spec.base_to_int(spec.min_base_amount)
    fills = data.draw(st.lists(st.tuples(st.integers(-3 * lot - 5, 3 * lot + 5), st.integers(-300, 300)),
                               min_size=1, max_size=40))
    unhedged = ordered = filled = Decimal(0)
    for fill_units, move_bps in fills:
        mid_units = max(1, mid_units + mid_units * move_bps // 10_000)
        fill_price = spec.price_from_int(mid_units)
        fill = spec.base_from_int(fill_units)
        filled += fill
        unhedged += fill
        worst = spec.price_from_int(worst_price_int(fill_price, unhedged > 0, slippage, spec))
        bound = spec.min_orderable_base(worst)
        split = split_hedge(unhedged, spec, worst)
        if abs(unhedged) >= bound:
            assert split.order_signed == unhedged and split.dust_signed == 0
        ordered += split.order_signed
        unhedged = split.dust_signed
        assert abs(unhedged) < bound
        assert ordered + unhedged == filled


# ---- (c) next_quote ----------------------------------------------------------------------------

@st.composite
def books(draw, spec: MarketSpec):
    """Distinct bids (descending) below distinct asks (ascending), either side possibly empty."""
    mid = draw(st.integers(1_000, 10**9))
    bid_gaps = draw(st.lists(st.integers(1, 50), max_size=6))
    ask_gaps = draw(st.lists(st.integers(1, 50), max_size=6))
    bids, asks, p = [], [], mid
    for gap in bid_gaps:
        p -= gap
        if p > 0:
            bids.append(spec.price_from_int(p))
    p = mid
    for gap in ask_gaps:
        p += gap
        asks.append(spec.price_from_int(p))
    return bids, asks


@given(spec=specs(), data=st.data())
def test_next_quote_never_sends_a_reduce_only_quote_the_venue_refuses(spec, data):
    bids, asks = data.draw(books(spec))
    threshold = spec.base_to_int(spec.min_base_amount)
    units = data.draw(st.one_of(st.integers(-10**7, 10**7), st.integers(-threshold - 100, threshold + 100)))
    position = spec.base_from_int(units)
    depth = data.draw(st.integers(1, 8))
    quantity = spec.base_from_int(data.draw(st.integers(1, 10**6)))
    quote = next_quote(position, bids, asks, depth, quantity, spec)
    if quote is None:
        return
    levels = {BUY: bids, SELL: asks}[quote.side]
    assert quote.price == levels[min(depth, len(levels)) - 1]
    if quote.reduce_only:
        assert venue_accepts(spec, quote.base_amount, quote.price)
        assert quote.base_amount == abs(position) and quote.side == (SELL if position > 0 else BUY)
    else:
        assert quote == Quote(BUY, quantity, bids[min(depth, len(bids)) - 1], False)
        # An opening quote only when there is nothing the venue would let A close at the price.
        closing = asks if position > 0 else bids
        assert position == 0 or not closing or not venue_accepts(
            spec, position, closing[min(depth, len(closing)) - 1])


BIDS_1900 = [Decimal("1899.99"), Decimal("1899.50")]
ASKS_1900 = [Decimal("1900.01"), Decimal("1900.50")]


@pytest.mark.parametrize("position, expected", [
    # 0.0052 x 1900.01 = 9.88 USDC: cannot be closed, so A adds to it (closes it all next time).
    ("0.0052", Quote(BUY, Decimal("0.0500"), Decimal("1899.99"), False)),
    ("0.0053", Quote(SELL, Decimal("0.0053"), Decimal("1900.01"), True)),     # 10.07 USDC
    # A short too small to buy back is covered by the opening buy.
    ("-0.0052", Quote(BUY, Decimal("0.0500"), Decimal("1899.99"), False)),
    ("-0.0053", Quote(BUY, Decimal("0.0053"), Decimal("1899.99"), True)),
])
def test_a_position_below_the_notional_minimum_is_added_to_not_closed(position, expected):
    assert next_quote(Decimal(position), BIDS_1900, ASKS_1900, 1, Decimal("0.0500"), ETH) == expected


def test_an_opening_quote_below_the_minimum_is_returned_for_the_caller_to_refuse():
    """The maker pauses on a quote `spec.is_orderable(base, price)` refuses (maker/market_loop.py)."""
    quote = next_quote(Decimal(0), BIDS_1900, ASKS_1900, 1, Decimal("0.0050"), ETH)
    assert quote == Quote(BUY, Decimal("0.0050"), Decimal("1899.99"), False)
    assert ETH.is_orderable(quote.base_amount) and not ETH.is_orderable(quote.base_amount, quote.price)


# ---- (d) quote_size_problem --------------------------------------------------------------------

def test_quote_size_problem_examples():
    assert quote_size_problem(Decimal("0.0050"), Decimal("1900.00"), ETH) == (
        "markets.ETH.quantity 0.0050 at price 1900.00 is 9.5 USDC, below the venue's min_quote_amount "
        "10 USDC (and min_base_amount 0.0050 ETH); use at least 0.0053")
    assert quote_size_problem(Decimal("0.0040"), Decimal("3000.00"), ETH) == (
        "markets.ETH.quantity 0.0040 at price 3000.00 is 12 USDC, below the venue's min_base_amount "
        "0.0050 ETH (and min_quote_amount 10 USDC); use at least 0.0050")
    assert quote_size_problem(Decimal("0.0040"), Decimal("1900.00"), ETH, "markets.eth.quantity") == (
        "markets.eth.quantity 0.0040 at price 1900.00 is 7.6 USDC, below the venue's min_base_amount "
        "0.0050 ETH and min_quote_amount 10 USDC; use at least 0.0053")
    assert quote_size_problem(Decimal("0.0500"), Decimal("1900.00"), ETH) is None   # 95 USDC
    assert quote_size_problem(Decimal("0.0053"), Decimal("1900.00"), ETH) is None


@given(spec=specs(), data=st.data())
def test_quote_size_problem_names_the_quantity_price_and_minimum_and_a_size_that_works(spec, data):
    price = data.draw(prices(spec))
    threshold = spec.base_to_int(spec.min_orderable_base(price))
    quantity = spec.base_from_int(data.draw(st.one_of(st.integers(1, 10**9),
                                                       st.integers(max(1, threshold - 3), threshold + 3))))
    problem = quote_size_problem(quantity, price, spec)
    if venue_accepts(spec, quantity, price):
        assert problem is None
        return
    assert problem is not None and "\n" not in problem
    assert problem.startswith(f"markets.X.quantity {quantity} at price {price} is ")
    if quantity < spec.min_base_amount:
        assert f"below the venue's min_base_amount {spec.min_base_amount} X" in problem
    else:
        assert "below the venue's min_quote_amount " in problem
    assert Decimal(problem.split(" is ", 1)[1].split(" USDC", 1)[0]) == notional(quantity, price)
    suggested = Decimal(problem.rsplit("use at least ", 1)[1])
    assert suggested == spec.min_orderable_base(price)
    assert quote_size_problem(suggested, price, spec) is None


# ---- the maker refuses to start with a quantity the venue refuses ------------------------------

class _Started(Exception):
    """Raised where the maker builds its first market loop: the start-up check let it through."""


def _run_maker(monkeypatch, redis_url, quantity: str, book, book_reads=((0, 1),)):
    import maker.app as app

    calls = []

    class FakeClient:
        async def market_spec(self, market_index):
            return ETH

        async def book_prices(self, market_index, limit=50):
            calls.append((market_index, limit))
            return book

        async def close(self):
            pass

    async def fake_open(*args, **kwargs):
        return FakeClient()

    def no_loop(*args, **kwargs):
        raise _Started()

    monkeypatch.setattr(app, "VenueClient", SimpleNamespace(open=fake_open))
    monkeypatch.setattr(app, "private_key", lambda cfg, account: "0x00")
    monkeypatch.setenv("LH_TASK_SIGNING_KEY", "ab" * 32)
    monkeypatch.setattr(app, "MarketLoop", no_loop)
    cfg = parse_config({
        "lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
        "redis": {"url": redis_url},
        "accounts": {"account_a": {"account_index": 281001, "api_key_index": 3},
                     "account_b": {"account_index": 281002, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": quantity}}, "strategy": {}})
    try:
        asyncio.run(app.run_maker(cfg, ["ETH"]))
    finally:
        assert calls == list(book_reads)  # one book read, one level (none when refused before)


def test_the_maker_refuses_to_start_with_a_quantity_below_the_notional_minimum(monkeypatch, redis_url):
    with pytest.raises(ConfigError) as refused:
        _run_maker(monkeypatch, redis_url, "0.0050", ([Decimal("1900.00")], [Decimal("1900.50")]))
    assert str(refused.value) == ("markets.ETH.quantity 0.0050 at price 1900.00 is 9.5 USDC, below the venue's "
                                  "min_quote_amount 10 USDC (and min_base_amount 0.0050 ETH); use at least 0.0053")


@pytest.mark.parametrize("quantity, book", [
    ("0.0053", ([Decimal("1900.00")], [Decimal("1900.50")])),   # 10.07 USDC at the bid
    ("0.0050", ([], [])),                                         # empty book: nothing to check against
])
def test_the_maker_starts_with_an_accepted_quantity_or_an_empty_book(monkeypatch, redis_url, quantity, book):
    with pytest.raises(_Started):
        _run_maker(monkeypatch, redis_url, quantity, book)


def test_the_maker_refuses_to_start_with_a_quantity_finer_than_the_size_step(monkeypatch, redis_url):
    with pytest.raises(ConfigError) as refused:
        _run_maker(monkeypatch, redis_url, "0.05001", ([Decimal("1900.00")], [Decimal("1900.50")]), book_reads=())
    assert str(refused.value) == "markets.ETH.quantity: 0.05001 has more than 4 decimals for ETH"
