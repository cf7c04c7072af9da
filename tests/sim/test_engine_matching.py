"""Matching rules of the pure engine (no I/O, fast)."""
from __future__ import annotations

import json

import pytest

from venue.sim.config import SimConfigError, parse_sim_config
from venue.sim.engine import Engine
from venue.sim.txcodec import TxRejected

from .conftest import (ACCOUNT_A, ACCOUNT_B, KEY_A, KEY_B, Trader, empty_engine, order_tx,
                       quiet_engine)


def _trader_pair(engine):
    return Trader(engine, ACCOUNT_A, KEY_A), Trader(engine, ACCOUNT_B, KEY_B)


def _other_group_engine() -> tuple[Engine, Trader, Trader]:
    """Two user accounts under different masters, so they may trade with each other."""
    engine = Engine(parse_sim_config({
        "random_walk": False, "taker_flow": False,
        "accounts": [{"index": 10, "master": 100, "api_key_indexes": [0]},
                     {"index": 20, "master": 200, "api_key_indexes": [0]}]}), seed=3)
    return engine, Trader(engine, 10, 0), Trader(engine, 20, 0)


def test_partial_fills_keep_the_remainder_resting():
    engine, maker, taker = _other_group_engine()
    resting = maker.order(base=1000, price=300000, is_ask=True).order
    first = taker.order(base=300, price=300000, order_type=1, tif=0).order
    second = taker.order(base=200, price=300000, order_type=1, tif=0).order
    assert first.status == second.status == "filled"
    assert resting.status == "open" and resting.remaining == 500 and resting.filled_base == 500
    assert [t.json["size"] for t in engine.trades] == ["0.0300", "0.0200"]
    assert engine.position(10, 0).base == -500 and engine.position(20, 0).base == 500


def test_price_time_priority_and_maker_price():
    engine, maker, taker = _other_group_engine()
    later = maker.order(base=100, price=300100, is_ask=True).order
    earlier_better = maker.order(base=100, price=300050, is_ask=True).order
    same_price_later = maker.order(base=100, price=300050, is_ask=True).order
    taker.order(base=150, price=300200, tif=0)
    assert earlier_better.status == "filled"
    assert same_price_later.remaining == 50 and later.remaining == 100
    assert [t.json["price"] for t in engine.trades] == ["3000.50", "3000.50"]


def test_post_only_that_would_cross_is_cancelled_without_trading():
    engine = quiet_engine()
    a = Trader(engine)
    best_ask = engine.markets[0].asks.best().price
    crossing = a.order(price=best_ask, tif=2).order
    assert crossing.status == "canceled-post-only" and crossing.filled_base == 0
    resting = a.order(price=best_ask - 1, tif=2).order
    assert resting.status == "open"
    assert engine.trades == []


def test_ioc_remainder_status_slippage_vs_liquidity():
    engine = quiet_engine(levels=2, level_size_min_lots=2, level_size_max_lots=2)   # 2 x 0.0100
    a = Trader(engine)
    asks = engine.markets[0].asks.orders
    # Worst price only reaches the first level: more liquidity lies beyond -> slippage.
    slip = a.order(base=300, price=asks[0].price, order_type=1, tif=0).order
    assert slip.status == "canceled-too-much-slippage" and slip.filled_base == 100
    # Now the book runs out before the worst price -> not enough liquidity.
    dry = a.order(base=500, price=asks[-1].price + 10_000, order_type=1, tif=0).order
    assert dry.status == "canceled-not-enough-liquidity" and dry.filled_base == 100
    full = Trader(engine, ACCOUNT_B, KEY_B).order(base=100, price=engine.markets[0].bids.best().price,
                                                  is_ask=True, order_type=1, tif=0).order
    assert full.status == "filled"


@pytest.mark.parametrize("mode, maker_status, taker_status, trades", [
    (0, "canceled-self-trade", "filled", 1),                       # expire maker, go deeper
    (1, "open", "canceled-self-trade", 0),                         # expire taker
    (2, "canceled-self-trade", "canceled-self-trade", 0),          # expire both
])
def test_self_trade_prevention_between_accounts_of_one_master(mode, maker_status, taker_status, trades):
    engine = quiet_engine()
    a, b = _trader_pair(engine)
    best_ask = engine.markets[0].asks.best().price
    own_ask = a.order(base=100, price=best_ask - 10, is_ask=True).order      # A now the best ask
    taker = b.order(base=100, price=best_ask, order_type=1, tif=0, stp_mode=mode).order
    assert own_ask.status == maker_status
    assert taker.status == taker_status
    assert len(engine.trades) == trades
    for trade in engine.trades:
        assert {trade.ask_account_id, trade.bid_account_id} != {ACCOUNT_A, ACCOUNT_B}
        assert trade.json["price"] == f"{best_ask // 100}.{best_ask % 100:02d}"   # synthetic level


def test_without_the_master_attribute_accounts_of_one_master_trade_with_each_other():
    """Lighter's default equality is the account index: STP across a master needs "7": 1."""
    engine = quiet_engine()
    a, b = _trader_pair(engine)
    own_bid = a.order(base=100, price=310000).order                  # crosses synthetic asks
    assert own_bid.status == "filled"
    resting = a.order(base=100, price=engine.markets[0].bids.best().price + 5).order
    b.order(base=100, price=200000, is_ask=True, order_type=1, tif=0)   # L2TxAttributes null
    assert resting.status == "filled"
    assert any({t.ask_account_id, t.bid_account_id} == {ACCOUNT_A, ACCOUNT_B} for t in engine.trades)


def test_with_the_master_attribute_the_resting_order_of_the_other_account_expires():
    engine = quiet_engine()
    a, b = _trader_pair(engine)
    resting = a.order(base=100, price=engine.markets[0].bids.best().price + 5).order
    b.order(base=100, price=200000, is_ask=True, order_type=1, tif=0, stp_mode=0)   # {"6":0,"7":1}
    assert resting.status == "canceled-self-trade"
    assert all({t.ask_account_id, t.bid_account_id} != {ACCOUNT_A, ACCOUNT_B} for t in engine.trades)


def test_an_order_trading_with_its_own_account_expires_the_maker_without_any_attribute():
    engine = quiet_engine()
    a, _ = _trader_pair(engine)
    resting = a.order(base=100, price=engine.markets[0].bids.best().price + 5).order
    a.order(base=100, price=200000, is_ask=True, order_type=1, tif=0)
    assert resting.status == "canceled-self-trade"
    assert not any(t.ask_account_id == t.bid_account_id for t in engine.trades)


def test_reduce_behaviour_with_master_equality_is_refused():
    engine = quiet_engine()
    _, b = _trader_pair(engine)
    with pytest.raises(TxRejected) as err:
        b.order(base=100, price=200000, is_ask=True, order_type=1, tif=0, stp_mode=3)
    assert err.value.code == 21501 and "reduce" in err.value.message


def test_reduce_only_cuts_excess_and_refuses_to_increase():
    engine = quiet_engine()
    a = Trader(engine)
    nothing = a.order(base=100, price=200000, is_ask=True, order_type=1, tif=0, reduce_only=True).order
    assert nothing.status == "canceled-reduce-only" and nothing.filled_base == 0
    a.order(base=200, price=400000, order_type=1, tif=0)           # long 0.0200
    assert engine.position(ACCOUNT_A, 0).base == 200
    same_side = a.order(base=100, price=400000, order_type=1, tif=0, reduce_only=True).order
    assert same_side.status == "canceled-reduce-only"
    close = a.order(base=500, price=200000, is_ask=True, order_type=1, tif=0, reduce_only=True).order
    assert close.filled_base == 200 and engine.position(ACCOUNT_A, 0).base == 0


def test_duplicate_active_client_order_index_is_rejected_and_nonce_kept():
    engine = quiet_engine()
    a = Trader(engine)
    a.order(client_index=7, price=200000)
    with pytest.raises(TxRejected) as exc:
        a.order(client_index=7, price=200000)
    assert exc.value.code == 21728 and "client order index already exists" in exc.value.message
    assert engine.next_nonce(ACCOUNT_A, KEY_A) == 1                   # rejection kept the nonce
    a.cancel(7)
    assert a.order(client_index=7, price=200000).order.status == "open"   # free again once inactive


def test_nonce_rules():
    engine = quiet_engine()
    assert engine.next_nonce(ACCOUNT_A, KEY_A) == 0
    with pytest.raises(TxRejected) as exc:
        engine.submit(14, json.dumps(order_tx(1, price=200000)), 1000)
    assert exc.value.code == 21104 and "invalid nonce" in exc.value.message
    engine.submit(14, json.dumps(order_tx(0, price=200000)), 1000)
    assert engine.next_nonce(ACCOUNT_A, KEY_A) == 1
    with pytest.raises(TxRejected):                                   # replay of nonce 0
        engine.submit(14, json.dumps(order_tx(0, price=200000)), 1000)
    with pytest.raises(TxRejected) as exc:
        engine.submit(14, json.dumps(order_tx(1, key=9, price=200000)), 1000)
    assert exc.value.code == 21109 and "api key not found" in exc.value.message
    # Accepted-but-cancelled orders consume their nonce.
    engine.submit(14, json.dumps(order_tx(1, price=engine.markets[0].asks.best().price, tif=2)), 1000)
    assert engine.next_nonce(ACCOUNT_A, KEY_A) == 2
    assert engine.next_nonce(ACCOUNT_B, KEY_B) == 0                   # per (account, key)


@pytest.mark.parametrize("overrides, code", [
    ({"BaseAmount": 0}, 21701), ({"BaseAmount": -5}, 21701), ({"Price": 0}, 21702),
    ({"MarketIndex": 9}, 21602), ({"BaseAmount": 49}, 21706),        # below 0.0050 ETH
    ({"BaseAmount": 50, "Price": 100}, 21706),                        # 0.005 * 1.00 < 10 USDC
    ({"BaseAmount": "1"}, 21501), ({"IsAsk": 2}, 21501), ({"Type": 1, "TimeInForce": 1}, 21501),
])
def test_order_validation_codes(overrides, code):
    engine = quiet_engine()
    with pytest.raises(TxRejected) as exc:
        engine.submit(14, json.dumps(order_tx(0, **overrides)), 1000)
    assert exc.value.code == code
    assert engine.next_nonce(ACCOUNT_A, KEY_A) == 0


def test_not_enough_margin():
    engine = quiet_engine(accounts=[{"index": 5, "master": 50, "collateral": "100",
                                     "api_key_indexes": [0]}])
    t = Trader(engine, 5, 0)
    t.order(base=300, price=200000)                  # 0.03 ETH * 3000 = 90 USDC notional: ok
    with pytest.raises(TxRejected) as exc:
        t.order(base=10000, price=200000)           # 1 ETH -> 3000+ notional * 5% > 100 USDC
    assert exc.value.code == 21739 and "not enough margin" in exc.value.message


def test_cancel_unknown_and_by_client_index():
    engine = quiet_engine()
    a = Trader(engine)
    with pytest.raises(TxRejected) as exc:
        a.cancel(12345)
    assert exc.value.code == 21600
    order = a.order(client_index=9, price=200000).order
    a.cancel(9)
    assert order.status == "canceled" and engine.active_orders(ACCOUNT_A) == []
    with pytest.raises(TxRejected):
        a.cancel(order.order_index)                                    # already inactive


def test_random_walk_moves_through_a_resting_order_and_fills_it():
    engine = Engine(parse_sim_config({"random_walk": True, "taker_flow": False,
                                      "volatility_bps": 20}), seed=4)
    engine.tick(0)
    a = Trader(engine)
    resting = a.order(base=100, price=engine.markets[0].bids.best().price).order
    for i in range(1, 400):
        engine.tick(i * 100)
        if resting.status == "filled":
            break
    assert resting.status == "filled"
    assert engine.trades[0].json["is_maker_ask"] is False            # A's bid was the maker
    assert engine.trades[0].json["bid_account_id"] == ACCOUNT_A
    assert engine.trades[0].json["ask_account_id"] == engine.config.liquidity_account


def test_taker_flow_fills_an_order_at_the_touch_within_seconds():
    engine = Engine(parse_sim_config({}), seed=9)                     # default settings
    engine.tick(0)
    a = Trader(engine)
    order = a.order(base=1000, price=engine.markets[0].asks.best().price, is_ask=True, tif=2).order
    ticks = 0
    while order.status != "filled" and ticks < 100:                   # 100 ticks = 10 s
        ticks += 1
        engine.tick(ticks * 100)
    assert order.status == "filled", f"not filled after {ticks} ticks"
    assert sum(t.size for t in engine.trades if order.order_index in (t.ask_id, t.bid_id)) == 1000


def test_config_errors_name_the_field():
    with pytest.raises(SimConfigError, match=r"sim.markets\[0\].size_decimals"):
        parse_sim_config({"markets": [{"symbol": "X", "market_id": 0, "size_decimals": "x",
                                       "price_decimals": 2, "start_price": "10.00"}]})
    with pytest.raises(SimConfigError, match="sim.tick_ms"):
        parse_sim_config({"tick_ms": 0})
    with pytest.raises(SimConfigError, match="unknown keys"):
        parse_sim_config({"tick": 5})
