"""A seeded random session on the pure engine keeps the books' invariants."""
from __future__ import annotations

import json
import random

import pytest

from venue.sim.config import parse_sim_config
from venue.sim.engine import Engine
from venue.sim.txcodec import TxRejected

ACCOUNTS = [  # 11 and 12 share master 10: they must never trade with each other
    {"index": 11, "master": 10, "collateral": "50000", "api_key_indexes": [0]},
    {"index": 12, "master": 10, "collateral": "50000", "api_key_indexes": [0]},
    {"index": 21, "master": 20, "collateral": "50000", "api_key_indexes": [0]},
    {"index": 31, "master": 30, "collateral": "2000", "api_key_indexes": [0]},
]


def _random_tx(rng: random.Random, engine: Engine, account: int, nonce: int) -> tuple[int, dict]:
    market = engine.markets[rng.choice(sorted(engine.markets))]
    cfg = market.cfg
    roll = rng.random()
    common = {"AccountIndex": account, "ApiKeyIndex": 0, "ExpiredAt": 0, "Nonce": nonce,
              "Sig": "", "L2TxAttributes": rng.choice([None, {"6": rng.randint(0, 3), "7": 1}])}
    active = engine.active_orders(account)
    if roll < 0.12 and active:
        target = rng.choice(active)
        index = target.client_order_index if target.client_order_index and rng.random() < 0.5 \
            else target.order_index
        return 15, dict(common, MarketIndex=target.market_id, Index=index)
    if roll < 0.15:
        return 16, dict(common, TimeInForce=0, Time=0)
    is_ask = rng.random() < 0.5
    spread_ticks = market.mid * rng.randint(-30, 30) // 10_000
    price = market.mid + (spread_ticks if is_ask else -spread_ticks)
    kind = rng.choice(["gtt", "gtt", "post", "ioc", "market"])
    order_type, tif = {"gtt": (0, 1), "post": (0, 2), "ioc": (0, 0), "market": (1, 0)}[kind]
    if kind == "market":
        price = market.mid * (10_000 + (150 if not is_ask else -150)) // 10_000
    base = cfg.min_base_units * rng.randint(1, 30) + rng.randint(0, 3)
    return 14, dict(common, MarketIndex=cfg.market_id, ClientOrderIndex=rng.choice([0, rng.randint(1, 40)]),
                    BaseAmount=base, Price=max(price, 1), IsAsk=int(is_ask), Type=order_type,
                    TimeInForce=tif, ReduceOnly=int(rng.random() < 0.15), TriggerPrice=0,
                    OrderExpiry=0)


@pytest.mark.parametrize("seed", [1, 2])
def test_positions_sum_to_zero_and_no_same_master_trade(seed):
    engine = Engine(parse_sim_config({"accounts": ACCOUNTS, "volatility_bps": 5,
                                      "taker_flow_prob": 0.5}), seed=seed)
    rng = random.Random(seed * 1000)
    nonces = {a["index"]: 0 for a in ACCOUNTS}
    outcomes = {"accepted": 0, "rejected": 0}
    now_ms = 0
    for step in range(3000):
        now_ms += 25
        if step % 4 == 0:
            engine.tick(now_ms)
        account = rng.choice(sorted(nonces))
        tx_type, info = _random_tx(rng, engine, account, nonces[account])
        try:
            engine.submit(tx_type, json.dumps(info), now_ms)
            nonces[account] += 1
            outcomes["accepted"] += 1
        except TxRejected:
            outcomes["rejected"] += 1
        if step % 500 == 0:
            assert all(total == 0 for total in engine.position_sums().values())

    assert outcomes["accepted"] > 2000, outcomes
    assert len(engine.trades) > 500
    assert engine.position_sums() == {0: 0, 1: 0}
    masters = {a.index: a.master for a in engine.accounts.values()}
    for trade in engine.trades:
        assert masters[trade.ask_account_id] != masters[trade.bid_account_id], trade.json
        assert trade.size > 0
    for order in engine.user_orders.values():
        assert 0 <= order.filled_base <= order.initial_base
        assert order.remaining >= 0
        assert order.is_active == (order.status == "open")
    # Every trade appears in exactly the two accounts' histories.
    for account, trades in engine.trades_by_account.items():
        assert all(account in (t.ask_account_id, t.bid_account_id) for t in trades)
    # Trade amounts recompute exactly to the positions.
    for account in engine.accounts:
        for market_id in engine.markets:
            signed = sum((t.size if t.bid_account_id == account else -t.size)
                         for t in engine.trades_by_account.get(account, []) if t.market_id == market_id)
            assert signed == engine.position(account, market_id).base


def test_same_seed_same_session():
    def run() -> list[tuple]:
        engine = Engine(parse_sim_config({"accounts": ACCOUNTS}), seed=42)
        for i in range(200):
            engine.tick(i * 100)
            if i % 20 == 0:   # a resting ask at the touch for the taker flow to hit
                engine.submit(14, json.dumps({
                    "AccountIndex": 21, "ApiKeyIndex": 0, "MarketIndex": 0, "ClientOrderIndex": 0,
                    "BaseAmount": 500, "Price": engine.markets[0].asks.best().price, "IsAsk": 1,
                    "Type": 0, "TimeInForce": 2, "ReduceOnly": 0, "Nonce": i // 20}), i * 100)
        return [(t.trade_id, t.size, t.price) for t in engine.trades] + \
            [(engine.markets[0].mid, engine.markets[1].mid)]
    first = run()
    assert len(first) > 5 and first == run()
