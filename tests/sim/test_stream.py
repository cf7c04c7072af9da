"""The /stream WebSocket: snapshots, diffs, ping/pong, garbage tolerance, drop and pause.

Runs under tests/sim/conftest.py's `sim`: profile SIM_PROFILE ("instant"), quiet market, no
faults. Lighter's frame shapes, errors, private channels and limits: test_ws_lighter_frames.py.
"""
from __future__ import annotations

import json
from decimal import Decimal

import pytest
from websockets.exceptions import ConnectionClosed
from websockets.sync.client import connect

from .conftest import ACCOUNT_A, next_nonce, order_tx, send_tx

pytestmark = pytest.mark.timeout(60)
ALLOWED_TYPES = {"connected", "subscribed/order_book", "update/order_book",
                 "subscribed/account_all", "update/account_all", "ping", "pong"}


def _recv_until(ws, predicate, timeout_s: float = 5.0, allowed: set[str] = ALLOWED_TYPES) -> list[dict]:
    """Frames received up to and including the first one matching `predicate`."""
    frames = []
    while True:
        frame = json.loads(ws.recv(timeout=timeout_s))
        assert frame["type"] in allowed, frame
        frames.append(frame)
        if predicate(frame):
            return frames


def _rest_order(sim, client_index: int) -> None:
    status, body = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=client_index,
                                             base=100, price=250000))
    assert status == 200, body


def test_order_book_snapshot_then_diffs(sim):
    with connect(sim.ws_url) as ws:
        assert json.loads(ws.recv(timeout=5))["type"] == "connected"
        ws.send(json.dumps({"type": "subscribe", "channel": "order_book/0"}))
        [snap] = _recv_until(ws, lambda f: f["type"] == "subscribed/order_book")[-1:]
        assert snap["channel"] == "order_book:0"
        bids = [Decimal(level["price"]) for level in snap["order_book"]["bids"]]
        asks = [Decimal(level["price"]) for level in snap["order_book"]["asks"]]
        assert bids == sorted(bids, reverse=True) and asks == sorted(asks) and bids[0] < asks[0]
        assert all(len(level["price"].split(".")[1]) == 2 for level in snap["order_book"]["asks"])
        update = _recv_until(ws, lambda f: f["type"] == "update/order_book")[-1]
        assert update["channel"] == "order_book:0"
        assert update["order_book"]["begin_nonce"] == snap["order_book"]["nonce"]


def test_ping_pong_garbage_is_ignored_and_bad_channels_get_errors(sim):
    with connect(sim.ws_url) as ws:
        ws.recv(timeout=5)
        for junk in ("not json", "[1,2]", '{"type":"subscribe","channel":"nope/1"}',
                     '{"type":"subscribe","channel":"order_book/x"}', '{"type":"weird"}', "null"):
            ws.send(junk)
        ws.send(json.dumps({"type": "ping"}))
        frames = _recv_until(ws, lambda f: f["type"] == "pong", allowed=ALLOWED_TYPES | {"error"})
        assert frames[-1] == {"type": "pong"}
        # Only the two subscriptions are answered (nested, as Lighter does); the rest is ignored.
        errors = [f["error"] for f in frames if f["type"] == "error"]
        assert [e["code"] for e in errors] == [30005, 30005]
        assert all(e["message"].startswith("Invalid Channel") for e in errors)
    assert sim.request("GET", "/api/v1/orderBooks")[0] == 200


def test_drop_closes_every_client_abruptly(sim):
    with connect(sim.ws_url) as ws:
        ws.recv(timeout=5)
        assert sim.admin("/admin/ws/drop", {})["dropped"] >= 1
        with pytest.raises(ConnectionClosed):
            while True:
                ws.recv(timeout=5)


def test_pause_drops_frames_but_trades_still_land(sim):
    with connect(sim.ws_url) as ws:
        ws.recv(timeout=5)
        ws.send(json.dumps({"type": "subscribe", "channel": f"account_all/{ACCOUNT_A}"}))
        _recv_until(ws, lambda f: f["type"] == "subscribed/account_all")
        _rest_order(sim, 301)
        sim.admin("/admin/ws/pause", {"paused": True})
        try:
            missed = sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                               "client_order_index": 301, "sizes": ["0.0050"]})
        finally:
            sim.admin("/admin/ws/pause", {"paused": False})
        # Frames are sent in order: the pong proves the paused trade frame was dropped.
        ws.send(json.dumps({"type": "ping"}))
        frames = _recv_until(ws, lambda f: f["type"] == "pong")
        assert not [f for f in frames if f["type"] == "update/account_all"]
        _, body = sim.request("GET", f"/api/v1/trades?sort_by=trade_id&sort_dir=desc&limit=5"
                                     f"&account_index={ACCOUNT_A}")
        assert missed["trade_ids"][0] in [t["trade_id"] for t in body["trades"]]
        # Live frames resume after unpausing.
        live = sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                         "client_order_index": 301, "sizes": ["0.0050"]})
        update = _recv_until(ws, lambda f: f["type"] == "update/account_all")[-1]
        assert [t["trade_id"] for t in update["trades"]["0"]] == live["trade_ids"]
        positions = _recv_until(ws, lambda f: f["type"] == "update/account_all")[-1]
        assert positions["trades"] == {} and positions["positions"]["0"]["market_id"] == 0
