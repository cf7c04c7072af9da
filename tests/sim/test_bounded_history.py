"""The paper exchange runs for days: its history is bounded, and a restart never reuses trade ids.

A restarted simulator used to number trades from 1 again, below the trade-id cutoff the maker keeps
in Redis, so every later fill of A was taken for history and never hedged.
"""
from __future__ import annotations

import pytest

from venue.sim import engine as engine_module
from venue.sim.harness import start_sim

from .conftest import ACCOUNT_A, SIM_PROFILE, Trader, next_nonce, order_tx, quiet_engine, send_tx

pytestmark = pytest.mark.timeout(90)


def _trade_on_a_fresh_order(sim, client_index: int) -> list[int]:
    status, body = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=client_index, base=500, price=250000))
    assert status == 200, body
    return sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0, "client_order_index": client_index,
                                     "sizes": ["0.0100", "0.0100"]})["trade_ids"]


def test_a_crashed_and_restarted_simulator_numbers_its_trades_above_every_earlier_one(keys_file):
    config = {"tick_ms": 50, "random_walk": False, "taker_flow": False}
    with start_sim(config, profile=SIM_PROFILE, seed=5, keys_file=keys_file) as sim:
        before = _trade_on_a_fresh_order(sim, 701)
        sim.proc.kill()   # a crash: nothing saved
        sim.proc.wait(10)
    with start_sim(config, profile=SIM_PROFILE, seed=5, keys_file=keys_file) as sim:
        after = _trade_on_a_fresh_order(sim, 702)
        listed = sim.request("GET", f"/api/v1/trades?sort_by=trade_id&limit=10&account_index={ACCOUNT_A}")[1]
    # The maker's stored cutoff is A's last trade id: everything the restarted venue trades is above it.
    assert min(after) > max(before), (before, after)
    assert {t["trade_id"] for t in listed["trades"]} == set(after)


def test_history_is_bounded_and_positions_stay_exact(monkeypatch):
    monkeypatch.setattr(engine_module, "TRADES_KEPT", 40)
    monkeypatch.setattr(engine_module, "ORDER_LOG_KEPT", 30)
    monkeypatch.setattr(engine_module, "TXS_KEPT", 20)
    engine = quiet_engine()
    trader = Trader(engine)
    order_index = trader.order(client_index=1, base=100_000, price=250000).order.order_index  # A's deep bid
    ids = []
    for _ in range(10):                                                  # 200 trades of A, 10 units each
        trader.now_ms += 10
        ids += engine.admin_fill(ACCOUNT_A, 0, [10] * 20, trader.now_ms, order_index=order_index)
    for i in range(60):                                                  # 120 more txs: orders and cancels
        trader.now_ms += 1_000
        trader.cancel(trader.order(client_index=100 + i, base=100, price=240000).order.order_index)

    assert len(ids) == 200 and ids == sorted(ids)
    assert len(engine.trades) <= 50 and [t.trade_id for t in engine.trades][-1] == ids[-1]
    kept = [t.trade_id for t in engine.trades_by_account[ACCOUNT_A]]
    assert 40 <= len(kept) <= 50 and kept == ids[-len(kept):]            # the latest, in order
    assert len(engine.order_log) <= 37 and len(engine.txs) <= 20
    assert engine.order_log[-1]["tx_type"] == 15                         # the last cancel is still there
    assert engine.position(ACCOUNT_A, 0).base == 2000                     # state is whole, history bounded
    assert len(engine.accounts[ACCOUNT_A].nonce_changes[3]) <= 2         # the last order and cancel: within the lag


def test_a_pending_tx_stays_known_by_hash_however_many_come_after(monkeypatch):
    monkeypatch.setattr(engine_module, "TXS_KEPT", 5)
    engine = quiet_engine()
    trader = Trader(engine)
    late = engine.take(14, order_tx(trader.nonce, client_index=1, base=100, price=240000), trader.now_ms,
                       delay_ms=60_000)
    trader.nonce += 1
    for i in range(20):
        trader.order(client_index=10 + i, base=100, price=240000)
    assert late.tx_hash in engine.txs and len(engine.txs) <= 6
