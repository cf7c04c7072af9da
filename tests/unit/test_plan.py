"""Hedge decisions: client order indexes, worst prices, size splitting, the maker's next quote."""
from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from hedge.fill import BUY, SELL
from hedge.money import MarketSpec
from hedge.plan import (MAX_CLIENT_ORDER_INDEX, HedgeSplit, LedgerHint, Quote, leg_client_order_index,
                        next_quote, speculative_split, split_hedge, worst_price_int)

ETH = MarketSpec(market_index=0, symbol="ETH", size_decimals=4, price_decimals=2,
                 min_base_amount=Decimal("0.0050"))
BTC = MarketSpec(market_index=1, symbol="BTC", size_decimals=5, price_decimals=1,
                 min_base_amount=Decimal("0.00020"))


def specs():
    @st.composite
    def build(draw):
        size_decimals = draw(st.integers(0, 8))
        price_decimals = draw(st.integers(0, 6))
        step = Decimal(1).scaleb(-size_decimals)
        return MarketSpec(market_index=draw(st.integers(0, 254)), symbol="X", size_decimals=size_decimals,
                          price_decimals=price_decimals,
                          min_base_amount=step * draw(st.integers(1, 1000)))
    return build()


# ---- client order index ----------------------------------------------------------------------

def test_client_order_index_is_deterministic_and_in_range():
    first = leg_client_order_index(0, 1)
    assert first == leg_client_order_index(0, 1)
    assert 1 <= first <= MAX_CLIENT_ORDER_INDEX == 2**48 - 1


@given(st.integers(0, 254), st.integers(1, 2**40 - 1))
def test_client_order_index_always_in_range(market, leg):
    assert 1 <= leg_client_order_index(market, leg) <= 2**48 - 1


def test_client_order_index_distinct_per_leg_and_market():
    indexes = {leg_client_order_index(m, leg) for m in range(3) for leg in range(1, 2001)}
    assert len(indexes) == 3 * 2000


def test_client_order_index_refuses_leg_zero_and_overflow():
    with pytest.raises(ValueError):
        leg_client_order_index(0, 0)
    with pytest.raises(ValueError):
        leg_client_order_index(0, 2**40)


# ---- worst price ----------------------------------------------------------------------------

@given(spec=specs(), price_units=st.integers(1, 10**10), bps=st.integers(1, 5000),
       b_is_ask=st.booleans())
def test_worst_price_never_beyond_max_slippage(spec, price_units, bps, b_is_ask):
    fill_price = spec.price_from_int(price_units)
    max_bps = Decimal(bps)
    worst = worst_price_int(fill_price, b_is_ask, max_bps, spec)
    worst_price = spec.price_from_int(worst)
    if b_is_ask:  # B sells: never accept less than fill * (1 - bps)
        assert worst_price >= fill_price * (1 - max_bps / 10_000)
        assert worst_price <= fill_price  # and never demands better than the fill itself
    else:         # B buys: never pay more than fill * (1 + bps)
        assert worst_price <= fill_price * (1 + max_bps / 10_000)
        assert worst_price >= fill_price
    assert worst >= 1


def test_worst_price_examples():
    # 50 bps around 3000.00: a buy may pay up to 3015.00, a sell accepts down to 2985.00.
    assert worst_price_int(Decimal("3000.00"), False, Decimal(50), ETH) == 301500
    assert worst_price_int(Decimal("3000.00"), True, Decimal(50), ETH) == 298500
    # Rounded toward the fill price: 3000.01 * 1.005 = 3015.01005 -> 3015.01; * 0.995 = 2985.00995 -> 2985.01
    assert worst_price_int(Decimal("3000.01"), False, Decimal(50), ETH) == 301501
    assert worst_price_int(Decimal("3000.01"), True, Decimal(50), ETH) == 298501


# ---- split ----------------------------------------------------------------------------------

@given(spec=specs(), units=st.integers(-10**9, 10**9), extra=st.integers(0, 999))
def test_split_hedge_conserves_the_amount(spec, units, extra):
    # An unhedged amount may carry sub-step dust from earlier fills (extra digits below the step).
    amount = spec.base_from_int(units) + Decimal(extra).scaleb(-spec.size_decimals - 3) * (1 if units >= 0 else -1)
    split = split_hedge(amount, spec)
    assert split.order_signed + split.dust_signed == amount
    assert abs(split.dust_signed) < spec.min_base_amount or split.order_signed == 0
    if split.order_signed:
        assert split.order_signed % spec.size_step == 0
        assert abs(split.order_signed) >= spec.min_base_amount
        assert abs(split.dust_signed) < spec.size_step
        assert (split.order_signed > 0) == (amount > 0)  # never flips direction
    else:
        assert split.dust_signed == amount and abs(amount) < spec.min_base_amount + spec.size_step


def test_split_examples_and_b_side():
    split = split_hedge(Decimal("0.0123"), ETH)
    assert split == HedgeSplit(Decimal("0.0123"), Decimal("0"))
    assert split.b_is_ask and split.b_side == SELL  # A bought -> B sells
    dust = split_hedge(Decimal("0.0049"), ETH)
    assert dust == HedgeSplit(Decimal(0), Decimal("0.0049"))
    short = split_hedge(Decimal("-0.0060"), ETH)
    assert not short.b_is_ask and short.b_side == BUY
    assert split_hedge(Decimal("0"), ETH).order_signed == 0


# ---- next quote -----------------------------------------------------------------------------

BIDS = [Decimal("2999.99"), Decimal("2999.50"), Decimal("2999.00")]
ASKS = [Decimal("3000.01"), Decimal("3000.50"), Decimal("3001.00")]


@pytest.mark.parametrize("depth, price", [(1, "2999.99"), (2, "2999.50"), (3, "2999.00"), (9, "2999.00")])
def test_flat_quotes_a_buy_at_the_depth_level(depth, price):
    quote = next_quote(Decimal(0), BIDS, ASKS, depth, Decimal("0.0500"), ETH)
    assert quote == Quote(side=BUY, base_amount=Decimal("0.0500"), price=Decimal(price), reduce_only=False)


def test_long_closes_the_whole_position_reduce_only_on_the_ask_side():
    quote = next_quote(Decimal("0.0730"), BIDS, ASKS, 2, Decimal("0.0500"), ETH)
    assert quote == Quote(side=SELL, base_amount=Decimal("0.0730"), price=Decimal("3000.50"), reduce_only=True)


def test_short_is_bought_back_reduce_only():
    quote = next_quote(Decimal("-0.0200"), BIDS, ASKS, 1, Decimal("0.0500"), ETH)
    assert quote == Quote(side=BUY, base_amount=Decimal("0.0200"), price=Decimal("2999.99"), reduce_only=True)


def test_empty_side_of_the_book_gives_no_quote():
    assert next_quote(Decimal(0), [], ASKS, 1, Decimal("0.05"), ETH) is None
    assert next_quote(Decimal("0.05"), BIDS, [], 1, Decimal("0.05"), ETH) is None
    # the other side being empty does not matter
    assert next_quote(Decimal(0), BIDS, [], 1, Decimal("0.05"), ETH) is not None


@given(st.one_of(st.integers(-10**6, 10**6), st.integers(-60, 60)), st.integers(1, 60))
def test_quote_size_is_always_on_the_step(units, depth):
    position = ETH.base_from_int(units)
    quote = next_quote(position, BIDS, ASKS, depth, Decimal("0.0500"), ETH)
    assume(quote is not None)
    assert quote.base_amount > 0 and ETH.base_to_int(quote.base_amount) >= 0
    # A position of either sign is closed once it is big enough to order; a smaller one is added to.
    assert quote.reduce_only == (abs(position) >= ETH.min_base_amount)


def test_long_below_the_minimum_size_is_added_to_not_closed():
    """A 0.0040 long cannot be closed (the venue refuses orders under 0.0050): buy more first."""
    quote = next_quote(Decimal("0.0040"), BIDS, ASKS, 1, Decimal("0.0500"), ETH)
    assert quote.side == BUY and quote.base_amount == Decimal("0.0500") and quote.reduce_only is False


# ---- signing before the ledger is read back ------------------------------------------------------

def hint(fills=3, a_filled=150, hedged=100, pending_legs=0, leg_seq=7) -> LedgerHint:
    return LedgerHint(fills=fills, a_filled=a_filled, hedged=hedged, pending_legs=pending_legs, leg_seq=leg_seq)


def test_a_current_hint_gives_the_split_of_its_ledger():
    assert speculative_split(hint(), fills_seen=2, spec=ETH) == split_hedge(Decimal("0.0050"), ETH)
    assert speculative_split(hint(), fills_seen=None, spec=ETH).b_is_ask  # A bought: B sells


def test_no_early_signature_when_the_hint_cannot_be_current():
    assert speculative_split(None, None, ETH) is None
    assert speculative_split(hint(pending_legs=1), None, ETH) is None        # a leg in flight
    assert speculative_split(hint(leg_seq=None), None, ETH) is None          # no leg yet
    assert speculative_split(hint(fills=3), fills_seen=3, spec=ETH) is None  # hedged with earlier fills
    assert speculative_split(hint(a_filled=120), None, ETH) is None          # only dust: nothing to order


@given(st.integers(-10**6, 10**6), st.integers(-10**6, 10**6))
def test_early_split_is_exactly_the_split_of_the_hinted_ledger(a_filled, hedged):
    split = speculative_split(hint(a_filled=a_filled, hedged=hedged), None, ETH)
    expected = split_hedge(ETH.base_from_int(a_filled - hedged), ETH)
    assert split == (expected if expected.order_signed != 0 else None)


@given(st.one_of(st.none(), st.integers(), st.text(), st.lists(st.integers()),
                 st.dictionaries(st.sampled_from(["fills", "a_filled", "hedged", "pending_legs", "leg_seq", "x"]),
                                 st.one_of(st.none(), st.integers(), st.text(max_size=5), st.floats()))))
def test_a_malformed_hint_is_ignored_not_fatal(raw):
    parsed = LedgerHint.from_message(raw)
    assert parsed is None or isinstance(parsed, LedgerHint)


def test_hint_survives_the_task_message():
    assert LedgerHint.from_message(hint().to_message()) == hint()
    assert LedgerHint.from_message(hint(leg_seq=None).to_message()) == hint(leg_seq=None)
