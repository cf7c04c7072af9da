"""The worker signs a hedge while its first Redis round trip is in flight, from the ledger hint the
maker put in the task; the leg is opened only if the ledger still equals the hint. These tests pin
the outcomes an operator cares about on that path: the hinted hedge is the one sent, a moved
ledger or a full rate window sends nothing from the hint, and Redis losing its scripts changes
nothing. Real simulator, real Redis, the worker's own hedge_one.
"""
from __future__ import annotations

import dataclasses
import itertools
import logging
from decimal import Decimal

import pytest

from hedge.fill import Fill, signed
from tasks.hedge import TransientHedgeError, hedge_one
from tests.integration.test_aggregation_exactness import b_creates, b_position, env  # noqa: F401 - fixture

pytestmark = pytest.mark.integration
ETH = 0
_ids = itertools.count(1)


def count_fill(store, base: str, side: str = "buy") -> tuple[dict, dict]:
    """Count a fill of A as the maker does; returns (fill message, hint) for its task."""
    fill = Fill(fill_id=f"early{next(_ids)}", market_index=ETH, side=side, base_amount=Decimal(base),
                price=Decimal("3000.00"), order_index=1, client_order_index=1, ts_exchange_ms=0, ts_seen_ms=0)
    units = int(signed(fill.side, fill.base_amount) * 10_000)
    hint, = store.record_fills("ETH", [(fill.to_message(), units, f"hedge-ETH-{fill.fill_id}")])
    return fill.to_message(), hint.to_message()


def fresh(store) -> None:
    seq = store.r.get("lh:leg_seq:ETH")
    store.r.flushdb()
    store.r.set("lh:leg_seq:ETH", seq or 1)  # a sequence exists: a hint can name the next leg
    store.fills_seen.clear()


def test_current_hint_sends_the_hinted_leg(env, caplog):
    sim, cfg, store, client, loop = env
    fresh(store)
    b0, creates0 = b_position(sim), len(b_creates(sim))
    msg, hint = count_fill(store, "0.0100")
    with caplog.at_level(logging.INFO, logger="tasks.hedge"):
        result = loop.run_until_complete(hedge_one(cfg, store, client, msg, 1, hint))
    assert result["filled_base"] == "0.0100" and result["side"] == "sell"
    assert b_position(sim) - b0 == Decimal("-0.0100")
    leg, = [e for e in b_creates(sim)[creates0:]]
    assert leg["client_order_index"] == hint["leg_seq"] + 1   # the leg the hint named
    assert "signed=early" in caplog.text


def test_moved_ledger_sends_nothing_from_the_hint_and_hedges_the_total(env, caplog):
    sim, cfg, store, client, loop = env
    fresh(store)
    b0, creates0 = b_position(sim), len(b_creates(sim))
    msg, hint = count_fill(store, "0.0100")
    count_fill(store, "0.0200")  # counted after the hint: the ledger moved
    with caplog.at_level(logging.INFO, logger="tasks.hedge"):
        loop.run_until_complete(hedge_one(cfg, store, client, msg, 1, hint))
    assert b_position(sim) - b0 == Decimal("-0.0300")          # both fills, in one order
    assert [e["base_amount"] for e in b_creates(sim)[creates0:]] == [300]   # venue units: 0.0300
    assert "event=hedge.ledger_moved" in caplog.text and "signed=after_read" in caplog.text


def test_full_rate_window_pauses_and_sends_nothing(env):
    sim, cfg, store, client, loop = env
    fresh(store)
    creates0 = len(b_creates(sim))
    msg, hint = count_fill(store, "0.0100")
    tight = dataclasses.replace(cfg, strategy=dataclasses.replace(cfg.strategy, max_hedges_per_minute=0))
    with pytest.raises(TransientHedgeError, match="max_hedges_per_minute=0"):
        loop.run_until_complete(hedge_one(tight, store, client, msg, 1, hint))
    assert store.paused("ETH")["by"] == "worker"
    assert b_creates(sim)[creates0:] == []
    assert not store.ledger("ETH").pending
    # The signature made meanwhile gave its nonce back: with the limit lifted, the hedge goes out.
    store.resume("ETH")
    loop.run_until_complete(hedge_one(cfg, store, client, msg, 2, hint))
    assert len(b_creates(sim)[creates0:]) == 1


def test_redis_without_its_scripts_still_hedges_once(env):
    sim, cfg, store, client, loop = env
    fresh(store)
    b0, creates0 = b_position(sim), len(b_creates(sim))
    msg, hint = count_fill(store, "0.0100", side="sell")
    store.r.script_flush()  # as after a Redis restart
    loop.run_until_complete(hedge_one(cfg, store, client, msg, 1, hint))
    assert b_position(sim) - b0 == Decimal("0.0100")
    assert len(b_creates(sim)[creates0:]) == 1
