"""The `/stream` WebSocket: connections, subscriptions and the frames pushed to them.

Only message types lighter-sdk 1.1.8's WsClient understands are ever sent: connected,
subscribed/order_book, update/order_book, subscribed/account_all, update/account_all,
ping, pong. Channel names in replies use a colon (`order_book:0`, `account_all:77`).

Faults: `drop_all()` aborts every connection's transport (no close frame, so clients see
an abrupt close); while `paused`, frames that would be sent are dropped (not queued) -
trades still happen, and clients must backfill over REST after unpausing.
"""
from __future__ import annotations

import asyncio
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import WSMsgType, web

from .engine import Engine, Trade
from .views import levels_json, position_json

log = logging.getLogger("venue.sim.stream")

SEND_QUEUE_LIMIT = 10_000
ACCOUNT_HISTORY_TRADES = 50


@dataclass(eq=False)
class Connection:
    conn_id: int
    ws: web.WebSocketResponse
    request: web.Request
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    accounts: set[int] = field(default_factory=set)
    markets: set[int] = field(default_factory=set)


class StreamHub:
    def __init__(self, engine: Engine, ping_interval_s: float):
        self.engine = engine
        self.ping_interval_s = ping_interval_s
        self.connections: dict[int, Connection] = {}
        self.paused = False
        self._ids = itertools.count(1)
        self._book_state: dict[int, tuple[dict[int, int], dict[int, int]]] = {}
        self._book_nonce: dict[int, int] = {m: 0 for m in engine.markets}

    # ------------------------------------------------------------ frames out
    def _send(self, conn: Connection, frame: dict[str, Any]) -> None:
        if self.paused:
            return
        try:
            conn.queue.put_nowait(json.dumps(frame))
        except asyncio.QueueFull:
            log.warning("event=ws_slow_consumer conn=%s action=abort", conn.conn_id)
            self._abort(conn)

    def publish(self, one_frame: bool = False) -> None:
        """Pushes everything that changed since the last call (called after every mutation).

        One account_all frame per trade, or (`one_frame`, as Lighter batches them) one frame per
        account carrying all of its new trades, grouped by market.
        """
        trades = self.engine.drain_trades()
        if one_frame:
            by_account: dict[int, list[Trade]] = {}
            for trade in trades:
                for account_index in {trade.ask_account_id, trade.bid_account_id}:
                    by_account.setdefault(account_index, []).append(trade)
            for account_index, group in by_account.items():
                self._publish_trades(account_index, group)
        else:
            for trade in trades:
                for account_index in {trade.ask_account_id, trade.bid_account_id}:
                    self._publish_trades(account_index, [trade])
        for market_id in self.engine.markets:
            self._publish_book(market_id)

    def _publish_trades(self, account_index: int, trades: list[Trade]) -> None:
        subscribers = [c for c in self.connections.values() if account_index in c.accounts]
        if not subscribers:
            return
        by_market: dict[str, list[dict[str, Any]]] = {}
        for trade in trades:
            by_market.setdefault(str(trade.market_id), []).append(trade.json)
        frame = dict(self._account_header("update/account_all", account_index), trades=by_market,
                     positions={m: position_json(self.engine, account_index, int(m)) for m in by_market})
        for conn in subscribers:
            self._send(conn, frame)

    def _levels_maps(self, market_id: int) -> tuple[dict[int, int], dict[int, int]]:
        bids, asks = self.engine.book_levels(market_id)
        return dict(bids), dict(asks)

    def _publish_book(self, market_id: int) -> None:
        subscribers = [c for c in self.connections.values() if market_id in c.markets]
        if not subscribers:
            # Nobody to tell: skip aggregating the book after every mutation (it competes for the
            # CPU with the processes benchmarks time). A new subscriber starts from a snapshot.
            self._book_state.pop(market_id, None)
            return
        new = self._levels_maps(market_id)
        old = self._book_state.get(market_id)
        self._book_state[market_id] = new
        if old is None or old == new:
            return
        begin = self._book_nonce[market_id]
        self._book_nonce[market_id] = begin + 1
        market = self.engine.markets[market_id]
        diffs = []
        for old_side, new_side in zip(old, new):
            changed = [(p, s) for p, s in new_side.items() if old_side.get(p) != s]
            changed += [(p, 0) for p in old_side if p not in new_side]
            diffs.append(levels_json(sorted(changed), market))
        nonce = begin + 1
        frame = {"type": "update/order_book", "channel": f"order_book:{market_id}",
                 "offset": nonce, "timestamp": _now_ms(),
                 "order_book": {"code": 0, "bids": diffs[0], "asks": diffs[1], "offset": nonce,
                                "nonce": nonce, "begin_nonce": begin}}
        for conn in subscribers:
            self._send(conn, frame)

    def _account_header(self, frame_type: str, account_index: int) -> dict[str, Any]:
        trades = self.engine.trades_by_account.get(account_index, [])
        return {"type": frame_type, "channel": f"account_all:{account_index}",
                "account": account_index, "assets": {}, "funding_histories": {}, "shares": [],
                "daily_trades_count": len(trades), "daily_volume": 0,
                "weekly_trades_count": len(trades), "weekly_volume": 0,
                "monthly_trades_count": len(trades), "monthly_volume": 0,
                "total_trades_count": len(trades), "total_volume": 0}

    def _subscribed_account(self, account_index: int) -> dict[str, Any]:
        history: dict[str, list] = {}
        for trade in self.engine.trades_by_account.get(account_index, [])[-ACCOUNT_HISTORY_TRADES:]:
            history.setdefault(str(trade.market_id), []).append(trade.json)
        positions = {str(m): position_json(self.engine, account_index, m)
                     for m in sorted(self.engine.markets)}
        return dict(self._account_header("subscribed/account_all", account_index),
                    positions=positions, trades=history)

    def _subscribed_book(self, market_id: int) -> dict[str, Any]:
        market = self.engine.markets[market_id]
        bids, asks = self.engine.book_levels(market_id)
        nonce = self._book_nonce[market_id]
        return {"type": "subscribed/order_book", "channel": f"order_book:{market_id}",
                "offset": nonce, "timestamp": _now_ms(),
                "order_book": {"code": 0, "bids": levels_json(bids, market),
                               "asks": levels_json(asks, market), "offset": nonce,
                               "nonce": nonce, "begin_nonce": nonce}}

    # ------------------------------------------------------------ faults
    def _abort(self, conn: Connection) -> None:
        transport = conn.request.transport
        if transport is not None:
            transport.abort()
        self.connections.pop(conn.conn_id, None)

    def drop_all(self) -> int:
        conns = list(self.connections.values())
        for conn in conns:
            self._abort(conn)
        return len(conns)

    async def close_all(self) -> None:
        for conn in list(self.connections.values()):
            await conn.ws.close(message=b"server shutdown")

    # ------------------------------------------------------------ connection
    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(heartbeat=None, max_msg_size=1 << 20)
        await ws.prepare(request)
        self.publish()  # make the book baseline current before any snapshot
        conn = Connection(next(self._ids), ws, request)
        self.connections[conn.conn_id] = conn
        log.info("event=ws_open conn=%s peer=%s", conn.conn_id, request.remote)
        sender = asyncio.create_task(self._sender(conn))
        pinger = asyncio.create_task(self._pinger(conn))
        self._send(conn, {"type": "connected", "session_id": f"sim-{conn.conn_id}"})
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    self._on_text(conn, msg.data)
                elif msg.type == WSMsgType.BINARY:
                    log.info("event=ws_ignored conn=%s reason=binary_frame", conn.conn_id)
                elif msg.type == WSMsgType.ERROR:
                    break
        finally:
            self.connections.pop(conn.conn_id, None)
            sender.cancel()
            pinger.cancel()
            log.info("event=ws_close conn=%s", conn.conn_id)
        return ws

    async def _sender(self, conn: Connection) -> None:
        try:
            while True:
                text = await conn.queue.get()
                await conn.ws.send_str(text)
        except (ConnectionError, RuntimeError, asyncio.CancelledError):
            pass
        except Exception:  # noqa: BLE001 - a broken socket must not kill the server
            log.exception("event=ws_send_error conn=%s", conn.conn_id)

    async def _pinger(self, conn: Connection) -> None:
        try:
            while True:
                await asyncio.sleep(self.ping_interval_s)
                self._send(conn, {"type": "ping"})
        except asyncio.CancelledError:
            pass

    def _on_text(self, conn: Connection, text: str) -> None:
        try:
            msg = json.loads(text)
        except ValueError:
            log.info("event=ws_ignored conn=%s reason=not_json", conn.conn_id)
            return
        if not isinstance(msg, dict):
            log.info("event=ws_ignored conn=%s reason=not_an_object", conn.conn_id)
            return
        kind = msg.get("type")
        if kind == "ping":
            self._send(conn, {"type": "pong"})
        elif kind == "pong":
            pass
        elif kind in ("subscribe", "unsubscribe"):
            self._on_subscription(conn, kind, msg.get("channel"))
        else:
            log.info("event=ws_ignored conn=%s reason=unknown_type type=%.40r", conn.conn_id, kind)

    def _on_subscription(self, conn: Connection, kind: str, channel: Any) -> None:
        if not isinstance(channel, str) or "/" not in channel:
            log.info("event=ws_ignored conn=%s reason=bad_channel channel=%.60r", conn.conn_id, channel)
            return
        name, _, ident = channel.partition("/")
        try:
            ident_int = int(ident)
        except ValueError:
            log.info("event=ws_ignored conn=%s reason=bad_channel channel=%.60r", conn.conn_id, channel)
            return
        if name == "order_book" and ident_int in self.engine.markets:
            if kind == "subscribe":
                conn.markets.add(ident_int)
                self._book_state[ident_int] = self._levels_maps(ident_int)  # what the snapshot shows
                self._send(conn, self._subscribed_book(ident_int))
            else:
                conn.markets.discard(ident_int)
        elif name == "account_all" and ident_int in self.engine.accounts:
            if kind == "subscribe":
                conn.accounts.add(ident_int)
                self._send(conn, self._subscribed_account(ident_int))
            else:
                conn.accounts.discard(ident_int)
        else:
            log.info("event=ws_ignored conn=%s reason=unknown_channel channel=%.60r",
                     conn.conn_id, channel)
            return
        log.info("event=ws_%s conn=%s channel=%s", kind, conn.conn_id, channel)


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
