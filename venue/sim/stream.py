"""The `/stream` WebSocket: connections, subscriptions and the frames pushed to them.

Frames follow what Lighter sends in production (apidocs.lighter.xyz/docs/websocket-reference,
/work/shared/lighter-api-notes.md sections 5 and 8). Channel names in replies use a colon
(`order_book:0`, `account_all:77`, `account_orders:0` - the market alone, as documented).

Channels:
  order_book/{market}                   public; snapshot, then level diffs
  account_all/{account}                 public (an `auth` is optional and checked when given).
      The snapshot carries positions but no trade history (`"trades": {}`). A fill is sent as
      update frames: the new trades (one frame per trade, or with `one_frame` all of an
      account's new trades in one frame), then one frame with the positions of those markets.
      Every frame has the documented keys; the part not carried is empty.
  account_all_orders/{account}          private; `"orders": {"<market>": [Order]}`
  account_orders/{market}/{account}     private; the same for one market, plus account and nonce
Private channels need `"auth": <token>` in the subscribe, for the account itself or an account
under the same master.

Errors are nested, `{"type": "error", "error": {"code": N, "message": "..."}}`, and go only to
the connection that caused them. Codes (notes section 8, and mainnet captures published by third
parties): 20001 bad/missing auth ("invalid param : auth field is required: ..."); 30005 "Invalid
Channel" (unknown channel, market or account); 30009 "Too Many Websocket Messages!" (over
MAX_CLIENT_MESSAGES_PER_MINUTE); 30010 too many subscriptions (over
MAX_SUBSCRIPTIONS_PER_CONNECTION: Lighter documents the limit but no code for it, 30010 is ours).
A refused message is not acted on. An unsubscribe is acknowledged `{"type": "unsubscribed",
"channel": ...}` (as captured from mainnet). A connection that only uses account_all and
order_book gets nothing lighter-sdk 1.1.8's WsClient does not know (connected, subscribed/ and
update/ of those two, ping, pong) unless it asks for it: an error for a message it sent, the ack
of an unsubscribe (WsClient sends neither). `/stream?readonly=true` (Lighter's URL for
restricted regions) is accepted like `/stream`.

Faults: `drop_all()` aborts every connection's transport (no close frame, so clients see
an abrupt close); while `paused`, frames that would be sent are dropped (not queued) -
trades still happen, and clients must backfill over REST after unpausing.
"""
from __future__ import annotations

import asyncio
import collections
import itertools
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Iterable

from aiohttp import WSMsgType, web

from .auth import INVALID_PARAM, AuthError, parse_auth_token
from .engine import Engine, Order, Trade
from .views import levels_json, order_json, position_json

log = logging.getLogger("venue.sim.stream")

SEND_QUEUE_LIMIT = 10_000

# Lighter's per-connection limits (apidocs "WebSocket" / "Rate Limits").
MAX_CLIENT_MESSAGES_PER_MINUTE = 200
MAX_SUBSCRIPTIONS_PER_CONNECTION = 100
RATE_WINDOW_S = 60.0

# Error codes as Lighter's WebSocket sends them (nested under "error").
INVALID_CHANNEL = 30005
TOO_MANY_MESSAGES = 30009
TOO_MANY_SUBSCRIPTIONS = 30010       # chosen: the limit is documented, its code is not

# channel name -> number of integer ids after it
CHANNEL_IDS = {"order_book": 1, "account_all": 1, "account_all_orders": 1, "account_orders": 2}
PRIVATE_CHANNELS = {"account_all_orders", "account_orders"}

Channel = tuple[str, tuple[int, ...]]


@dataclass(eq=False)
class Connection:
    conn_id: int
    ws: web.WebSocketResponse
    request: web.Request
    readonly: bool = False
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(SEND_QUEUE_LIMIT))
    channels: set[Channel] = field(default_factory=set)
    # monotonic times of the client messages accepted in the last RATE_WINDOW_S
    recent: collections.deque = field(default_factory=collections.deque)


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
        self._send_text(conn, json.dumps(frame))

    def _send_text(self, conn: Connection, text: str) -> None:
        if self.paused or conn.conn_id not in self.connections:  # gone (aborted as a slow consumer)
            return
        try:
            conn.queue.put_nowait(text)
        except asyncio.QueueFull:
            log.warning("event=ws_slow_consumer conn=%s action=abort", conn.conn_id)
            self._abort(conn)

    def _broadcast(self, conns: list[Connection], frames: Iterable[dict[str, Any]]) -> None:
        texts = [json.dumps(frame) for frame in frames]  # encoded once, whatever the subscriber count
        for conn in conns:
            for text in texts:
                self._send_text(conn, text)

    def _subscribers(self, channel: Channel) -> list[Connection]:
        return [c for c in self.connections.values() if channel in c.channels]

    def _send_error(self, conn: Connection, code: int, message: str) -> None:
        log.info("event=ws_error_sent conn=%s code=%s message=%r", conn.conn_id, code, message)
        self._send(conn, {"type": "error", "error": {"code": code, "message": message}})

    def publish(self, one_frame: bool = False) -> None:
        """Pushes everything that changed since the last call (called after every mutation).

        Trades: per account, one frame per trade (or, `one_frame`, as Lighter batches them, one
        frame with all of the account's new trades grouped by market), then one frame with the
        positions of those markets. Order updates are drained even when nobody listens, so the
        engine's list never grows.
        """
        trades = self.engine.drain_trades()
        orders = self.engine.drain_order_updates()
        self._publish_trades(trades, one_frame)
        self._publish_orders(orders)
        for market_id in self.engine.markets:
            self._publish_book(market_id)

    def _publish_trades(self, trades: list[Trade], one_frame: bool) -> None:
        by_account: dict[int, list[Trade]] = {}
        for trade in trades:
            for account_index in dict.fromkeys((trade.ask_account_id, trade.bid_account_id)):
                by_account.setdefault(account_index, []).append(trade)
        for account_index, group in by_account.items():
            subscribers = self._subscribers(("account_all", (account_index,)))
            if not subscribers:
                continue
            batches = [group] if one_frame else [[trade] for trade in group]
            frames = [self._account_frame("update/account_all", account_index, trades=batch)
                      for batch in batches]
            markets = sorted({trade.market_id for trade in group})
            frames.append(self._account_frame(
                "update/account_all", account_index,
                positions={str(m): position_json(self.engine, account_index, m) for m in markets}))
            self._broadcast(subscribers, frames)

    def _publish_orders(self, orders: list[Order]) -> None:
        by_account: dict[int, dict[int, list[Order]]] = {}
        for order in orders:
            by_account.setdefault(order.account_index, {}).setdefault(order.market_id, []).append(order)
        for account_index, by_market in by_account.items():
            all_orders = self._subscribers(("account_all_orders", (account_index,)))
            if all_orders:
                self._broadcast(all_orders, [self._all_orders_frame("update", account_index, by_market)])
            for market_id, group in by_market.items():
                one_market = self._subscribers(("account_orders", (market_id, account_index)))
                if one_market:
                    self._broadcast(one_market, [self._market_orders_frame(
                        "update", market_id, account_index, group)])

    def _levels_maps(self, market_id: int) -> tuple[dict[int, int], dict[int, int]]:
        bids, asks = self.engine.book_levels(market_id)
        return dict(bids), dict(asks)

    def _publish_book(self, market_id: int) -> None:
        subscribers = self._subscribers(("order_book", (market_id,)))
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
        self._broadcast(subscribers, [frame])

    # ------------------------------------------------------------ frame shapes
    def _account_frame(self, frame_type: str, account_index: int, *,
                       trades: list[Trade] = (), positions: dict[str, dict] | None = None) -> dict[str, Any]:
        """An account_all frame with every documented key; what it does not carry is empty."""
        history = self.engine.trades_by_account.get(account_index, [])
        grouped: dict[str, list[dict[str, Any]]] = {}
        for trade in trades:
            grouped.setdefault(str(trade.market_id), []).append(trade.json)
        return {"type": frame_type, "channel": f"account_all:{account_index}",
                "account": account_index, "assets": {}, "funding_histories": {}, "shares": [],
                "daily_trades_count": len(history), "daily_volume": 0,
                "weekly_trades_count": len(history), "weekly_volume": 0,
                "monthly_trades_count": len(history), "monthly_volume": 0,
                "total_trades_count": len(history), "total_volume": 0,
                "positions": positions or {}, "trades": grouped}

    def _subscribed_account(self, account_index: int) -> dict[str, Any]:
        # Lighter's snapshot carries no trade history: a client backfills trades over REST.
        positions = {str(m): position_json(self.engine, account_index, m)
                     for m in sorted(self.engine.markets)}
        return self._account_frame("subscribed/account_all", account_index, positions=positions)

    def _orders_json(self, orders: list[Order]) -> list[dict[str, Any]]:
        return [order_json(self.engine, o) for o in orders]

    def _all_orders_frame(self, kind: str, account_index: int,
                          by_market: dict[int, list[Order]]) -> dict[str, Any]:
        return {"type": f"{kind}/account_all_orders", "channel": f"account_all_orders:{account_index}",
                "orders": {str(m): self._orders_json(group) for m, group in sorted(by_market.items())}}

    def _market_orders_frame(self, kind: str, market_id: int, account_index: int,
                             orders: list[Order]) -> dict[str, Any]:
        return {"type": f"{kind}/account_orders", "channel": f"account_orders:{market_id}",
                "account": account_index, "nonce": self.engine.block_height,
                "orders": {str(market_id): self._orders_json(orders)}}

    def _subscribed_all_orders(self, account_index: int) -> dict[str, Any]:
        by_market: dict[int, list[Order]] = {}
        for order in self.engine.active_orders(account_index):
            by_market.setdefault(order.market_id, []).append(order)
        return self._all_orders_frame("subscribed", account_index, by_market)

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
        # Lighter serves read-only data to restricted regions on /stream?readonly=true.
        readonly = request.query.get("readonly", "").lower() == "true"
        conn = Connection(next(self._ids), ws, request, readonly=readonly)
        self.connections[conn.conn_id] = conn
        log.info("event=ws_open conn=%s peer=%s readonly=%s", conn.conn_id, request.remote,
                 str(readonly).lower())
        sender = asyncio.create_task(self._sender(conn))
        pinger = asyncio.create_task(self._pinger(conn))
        self._send(conn, {"type": "connected", "session_id": f"sim-{conn.conn_id}"})
        try:
            async for msg in ws:
                if msg.type in (WSMsgType.TEXT, WSMsgType.BINARY) and not self._admit(conn):
                    continue
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

    def _admit(self, conn: Connection) -> bool:
        """Counts a client message against the per-minute limit; False (error sent) when over it."""
        now = time.monotonic()
        recent = conn.recent
        while recent and now - recent[0] >= RATE_WINDOW_S:
            recent.popleft()
        if len(recent) >= MAX_CLIENT_MESSAGES_PER_MINUTE:
            self._send_error(conn, TOO_MANY_MESSAGES, "Too Many Websocket Messages!")
            return False
        recent.append(now)
        return True

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
            self._on_subscription(conn, kind, msg)
        else:
            log.info("event=ws_ignored conn=%s reason=unknown_type type=%.40r", conn.conn_id, kind)

    def _on_subscription(self, conn: Connection, kind: str, msg: dict[str, Any]) -> None:
        raw = msg.get("channel")
        channel = _parse_channel(raw)
        if channel is None:
            self._send_error(conn, INVALID_CHANNEL, f"Invalid Channel: {str(raw)[:60]}")
            return
        name, ids = channel
        reply = _reply_channel(channel)
        if kind == "unsubscribe":
            conn.channels.discard(channel)
            log.info("event=ws_unsubscribe conn=%s channel=%s", conn.conn_id, raw)
            self._send(conn, {"type": "unsubscribed", "channel": reply})
            return
        unknown = self._unknown_target(name, ids)
        if unknown:
            self._send_error(conn, INVALID_CHANNEL, f"Invalid Channel: {raw} ({unknown})")
            return
        if channel not in conn.channels and len(conn.channels) >= MAX_SUBSCRIPTIONS_PER_CONNECTION:
            self._send_error(conn, TOO_MANY_SUBSCRIPTIONS,
                             f"Too Many Subscriptions: at most {MAX_SUBSCRIPTIONS_PER_CONNECTION} "
                             f"per connection")
            return
        account_index = ids[-1]
        token = msg.get("auth")
        # account_all works without auth (Lighter's docs); a token given is checked all the same.
        if name in PRIVATE_CHANNELS or token is not None:
            try:
                self._authorize(token, account_index)
            except AuthError as exc:
                self._send_error(conn, exc.code, f"{exc.message}: {reply}")
                return
        conn.channels.add(channel)
        log.info("event=ws_subscribe conn=%s channel=%s auth=%s", conn.conn_id, raw,
                 "yes" if token is not None else "no")
        if name == "order_book":
            self._book_state[ids[0]] = self._levels_maps(ids[0])  # what the snapshot shows
            self._send(conn, self._subscribed_book(ids[0]))
        elif name == "account_all":
            self._send(conn, self._subscribed_account(account_index))
        elif name == "account_all_orders":
            self._send(conn, self._subscribed_all_orders(account_index))
        else:
            self._send(conn, self._market_orders_frame(
                "subscribed", ids[0], account_index, self.engine.active_orders(account_index, ids[0])))

    def _unknown_target(self, name: str, ids: tuple[int, ...]) -> str | None:
        """What the channel names that does not exist, or None."""
        if name == "order_book":
            return None if ids[0] in self.engine.markets else "unknown market"
        if name == "account_orders" and ids[0] not in self.engine.markets:
            return "unknown market"
        return None if ids[-1] in self.engine.accounts else "unknown account"

    def _authorize(self, token: Any, account_index: int) -> None:
        """Raises AuthError unless `token` may read `account_index` (itself or same master)."""
        if token is not None and not isinstance(token, str):
            raise AuthError(f"invalid param : auth must be a string, got {type(token).__name__}")
        auth = parse_auth_token(token, int(time.time()))
        owner = self.engine.accounts.get(auth.account_index)
        if owner is None or owner.synthetic or auth.api_key_index not in owner.public_keys:
            raise AuthError(f"invalid param : auth token of account {auth.account_index} api key "
                            f"{auth.api_key_index}: no such api key", INVALID_PARAM)
        target = self.engine.accounts[account_index]
        if auth.account_index != account_index and owner.master != target.master:
            raise AuthError(f"invalid param : auth token of account {auth.account_index} cannot "
                            f"read account {account_index} (another master)", INVALID_PARAM)


def _parse_channel(raw: Any) -> Channel | None:
    """`name/id[/id]` with the id count its name takes, or None."""
    if not isinstance(raw, str):
        return None
    name, *parts = raw.split("/")
    if CHANNEL_IDS.get(name) != len(parts):
        return None
    if not all(p.isascii() and p.isdigit() for p in parts):
        return None
    return name, tuple(int(p) for p in parts)


def _reply_channel(channel: Channel) -> str:
    """The channel as frames name it: a colon, and account_orders by its market alone."""
    name, ids = channel
    return f"{name}:{ids[0]}"


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
