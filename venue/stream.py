"""Account stream listener: account_all/{A} over WebSocket -> one Fill per new trade of A.

The stream carries trades (not orders). Lighter's snapshot carries no trade history
(`"trades": {}`), so on the first start the history cutoff is A's newest trade in a REST read
made before subscribing: every later trade is in the REST read after the snapshot or in an
update frame. (A snapshot that does carry trades - older venues - is history up to its newest.)
After every reconnect the trades missed during the gap are backfilled over REST. Updates that
carry only positions are skipped. Dedupe is by trade_id here (in memory) and again durably by
whoever receives the fill.

Venue errors arrive nested, `{"type": "error", "error": {"code": N, "message": "..."}}` (some
captures have no "type"); the flat `{"type": "error", "code": N, "message": "..."}` is read too.
An error before the snapshot means the subscribe was refused: the session ends and reconnects
with backoff instead of waiting for a snapshot that will not come. The ws_url may carry a query
(`wss://.../stream?readonly=true`, Lighter's URL for restricted regions).
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from decimal import Decimal
from typing import Any, Awaitable, Callable, Iterable

import websockets
from websockets.asyncio.client import connect

from hedge.fill import Fill, InvalidFill, fill_from_trade
from venue.reconnect import reconnecting

log = logging.getLogger("venue.stream")

OnFill = Callable[[Fill], Awaitable[None]]
OnFills = Callable[[list[Fill]], Awaitable[None]]
Backfill = Callable[[], Awaitable[list[dict[str, Any]]]]
SEEN_MAX = 5_000   # trade ids delivered lately; older replays are refused by the ledger (Redis)
SNAPSHOT_TIMEOUT_S = 10.0   # no account_all snapshot this long after subscribing: reconnect


class VenueStreamError(RuntimeError):
    """The venue refused the subscription (an error frame before the snapshot)."""


class AccountStream:
    def __init__(self, ws_url: str, account_index: int, on_fill: OnFill, backfill: Backfill, *,
                 markets: Iterable[int] | None = None, history_cutoff_trade_id: int | None = None,
                 on_cutoff: Callable[[int], Awaitable[None]] | None = None,
                 on_reconnect: Callable[[], Awaitable[None]] | None = None,
                 backoff_base_s: float = 0.2, backoff_cap_s: float = 5.0, seed: int | None = None,
                 backfill_interval_s: float | None = 5.0, on_fills: OnFills | None = None,
                 on_connect: Callable[[int], None] | None = None,
                 on_positions: Callable[[dict[int, Decimal]], None] | None = None,
                 token: Callable[[], str] | None = None, snapshot_timeout_s: float = SNAPSHOT_TIMEOUT_S):
        self.ws_url = ws_url
        # The account's auth token for the subscribe: account_all works without one per Lighter's
        # docs, but NautilusTrader and Qubx send it, and the private channels require it.
        self.token = token
        self.snapshot_timeout_s = snapshot_timeout_s
        self.account_index = account_index
        self.on_fill = on_fill
        # Optional: all new fills of one frame (or one backfill) at once, so the receiver can
        # batch its work (one Redis pipeline for a burst). Without it, on_fill gets them one by one.
        self.on_fills = on_fills
        self.on_connect = on_connect  # called with the connect count (metrics)
        # Signed positions by market from the snapshot and the position frames: the maker reads
        # A's position here instead of asking REST every round.
        self.on_positions = on_positions
        self.backfill = backfill
        self.markets = set(markets) if markets is not None else None
        # Trades at or below the cutoff happened before we started hedging this account.
        self.cutoff = history_cutoff_trade_id
        self.on_cutoff = on_cutoff
        self.on_reconnect = on_reconnect
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = random.Random(seed)
        self._seen: set[int] = set()
        # A venue can drop frames without dropping the connection: a periodic REST backfill
        # bounds how long such a fill goes unseen.
        self.backfill_interval_s = backfill_interval_s
        self._emit_lock = asyncio.Lock()
        self.connects = 0
        self.connected = asyncio.Event()

    async def run(self) -> None:
        """Listen forever (until cancelled), reconnecting with exponential backoff and full jitter;
        after a reconnect the backfill covers the gap."""
        async def dropped() -> None:
            self.connected.clear()
        await reconnecting(self._session, log=log, event="stream.disconnected", account=self.account_index,
                           rng=self._rng, backoff_base_s=self.backoff_base_s, backoff_cap_s=self.backoff_cap_s,
                           describe=_describe, on_drop=dropped)

    async def backfill_now(self) -> None:
        """Ask REST for A's recent trades now and emit any not seen (e.g. an order's fills are short)."""
        if self.cutoff is None:
            return  # history not established yet: the first snapshot does this
        await self._emit(sorted(await self.backfill(), key=lambda t: _trade_id(t) or 0))

    async def _periodic_backfill(self) -> None:
        while True:
            await asyncio.sleep(self.backfill_interval_s)
            await self.backfill_now()

    async def _session(self) -> None:
        periodic = None
        if self.backfill_interval_s:
            periodic = asyncio.create_task(self._periodic_backfill(), name="stream-backfill")
        try:
            await self._listen()
        finally:
            if periodic is not None:
                periodic.cancel()

    async def _listen(self) -> None:
        async with connect(self.ws_url, ping_interval=20, ping_timeout=20, open_timeout=10,
                           max_size=2**23) as ws:
            first = self.connects == 0
            self.connects += 1
            log.info("event=stream.connected account=%s connects=%d", self.account_index, self.connects)
            if self.on_connect is not None:
                self.on_connect(self.connects)
            # Never hedged this account: what REST knows before we subscribe is history (the
            # snapshot carries none). Read before subscribing, so no trade falls between the two.
            rest_cutoff = None
            if self.cutoff is None:
                rest_cutoff = max((i for i in map(_trade_id, await self.backfill()) if i is not None),
                                  default=0)
            channel = f"account_all/{self.account_index}"
            subscribe: dict[str, Any] = {"type": "subscribe", "channel": channel}
            if self.token is not None:
                subscribe["auth"] = self.token()
            await ws.send(json.dumps(subscribe))
            try:
                async with asyncio.timeout(self.snapshot_timeout_s) as first_snapshot:
                    await self._frames(ws, channel, first, rest_cutoff, first_snapshot)
            except TimeoutError:
                raise VenueStreamError(f"no {channel} snapshot within {self.snapshot_timeout_s:.0f}s of "
                                       f"subscribing") from None

    async def _frames(self, ws, channel: str, first: bool, rest_cutoff: int | None, first_snapshot) -> None:
        """The session's frames; `first_snapshot` (an asyncio.timeout) is cancelled once the snapshot came."""
        snapshot_done = False
        async for raw in ws:
            recv_us = time.time_ns() // 1000  # the frame's arrival: every fill in it carries it
            msg = _parse(raw)
            if msg is None:
                continue
            kind = msg.get("type")
            error = _venue_error(msg)
            if error is not None:
                code, message = error
                log.error("event=stream.venue_error account=%s code=%s message=%r snapshot=%s",
                          self.account_index, code, message, str(snapshot_done).lower())
                if not snapshot_done:
                    raise VenueStreamError(f"subscribe to {channel} refused: code={code} "
                                           f"message={message!r}")
            elif kind == "ping":
                await ws.send('{"type":"pong"}')
            elif kind == "subscribed/account_all":
                self._positions(msg)
                await self._on_snapshot(msg, first, rest_cutoff)
                snapshot_done = True
                first_snapshot.reschedule(None)
                self.connected.set()
                if not first and self.on_reconnect is not None:
                    await self.on_reconnect()
            elif kind == "update/account_all" and snapshot_done:
                self._positions(msg)
                trades = _trades_of(msg)
                if trades:  # Lighter sends positions in their own update frames: nothing to emit
                    await self._emit(trades, recv_us)

    def _positions(self, msg: dict[str, Any]) -> None:
        if self.on_positions is None or not msg.get("positions"):
            return
        positions = _positions_of(msg)
        if positions:
            self.on_positions(positions)

    async def _on_snapshot(self, msg: dict[str, Any], first: bool, rest_cutoff: int | None) -> None:
        snapshot = _trades_of(msg)
        missed = await self.backfill()
        if self.cutoff is None:
            # Never hedged this account before: everything it traded before we subscribed is
            # history. The REST read made before subscribing marks that point; a snapshot with
            # trades (older venues) marks a later one. A REST trade above the cutoff happened after
            # we subscribed (its update frame is already queued behind the snapshot): a new fill.
            snap_ids = [i for i in map(_trade_id, snapshot) if i is not None]
            rest_ids = [i for i in map(_trade_id, missed) if i is not None]
            self.cutoff = max(snap_ids + [rest_cutoff or 0])
            self._seen.update(i for i in snap_ids + rest_ids if i <= self.cutoff)
            log.info("event=stream.history account=%s cutoff_trade_id=%d", self.account_index, self.cutoff)
            if self.on_cutoff is not None:
                await self.on_cutoff(self.cutoff)
            await self._emit(sorted((t for t in missed if (_trade_id(t) or 0) > self.cutoff), key=_trade_id))
            return
        # A reconnect (or a restart with a known cutoff): snapshot and REST fill the gap.
        await self._emit(sorted(snapshot + missed, key=lambda t: _trade_id(t) or 0))

    async def _emit(self, trades: list[dict[str, Any]], recv_us: int | None = None) -> None:
        async with self._emit_lock:  # frames and backfills interleave; one trade, one delivery
            await self._emit_locked(trades, recv_us or time.time_ns() // 1000)

    async def _emit_locked(self, trades: list[dict[str, Any]], recv_us: int) -> None:
        batch: list[Fill] = []
        batch_ids: set[int] = set()
        for trade in trades:
            trade_id = _trade_id(trade)
            if trade_id is None:
                log.error("event=stream.bad_trade account=%s trade=%r", self.account_index, trade)
                continue
            if trade_id in self._seen or trade_id in batch_ids or (self.cutoff is not None and trade_id <= self.cutoff):
                continue
            try:
                fill = fill_from_trade(trade, self.account_index, ts_seen_ms=recv_us // 1000,
                                       ts_seen_us=recv_us)
            except InvalidFill as exc:
                log.error("event=stream.bad_trade account=%s trade_id=%s error=%s", self.account_index, trade_id, exc)
                self._seen.add(trade_id)
                continue
            if fill is None or (self.markets is not None and fill.market_index not in self.markets):
                self._seen.add(trade_id)
                continue
            if self.on_fills is not None:
                batch.append(fill)
                batch_ids.add(trade_id)
                continue
            # If the receiver fails, the id stays unseen: the reconnect's backfill delivers it again.
            await self.on_fill(fill)
            self._seen.add(trade_id)
        if batch:
            await self.on_fills(batch)  # if it fails, none is marked seen: the backfill redelivers
            self._seen.update(batch_ids)
        if len(self._seen) > SEEN_MAX:
            self._seen = set(sorted(self._seen)[-SEEN_MAX // 2:])


def _trade_id(trade: dict[str, Any]) -> int | None:
    """The trade's id, or None when it has no usable one (missing, a float, Infinity, "abc")."""
    value = trade.get("trade_id")
    if isinstance(value, (bool, float)) or value is None:
        return None
    try:
        return int(value)
    except (TypeError, ValueError):
        return None


def _parse(raw: Any) -> dict[str, Any] | None:
    try:
        msg = json.loads(raw)
    except (TypeError, ValueError):
        log.error("event=stream.bad_frame reason=not_json frame=%r", str(raw)[:200])
        return None
    if not isinstance(msg, dict):
        log.error("event=stream.bad_frame reason=not_an_object frame=%r", str(raw)[:200])
        return None
    return msg


def _venue_error(msg: dict[str, Any]) -> tuple[Any, Any] | None:
    """(code, message) of an error frame, nested or flat; None for any other frame."""
    nested = msg.get("error")
    if isinstance(nested, dict):
        return nested.get("code"), nested.get("message")
    if msg.get("type") == "error":
        return msg.get("code"), msg.get("message")
    return None


def _positions_of(msg: dict[str, Any]) -> dict[int, Decimal]:
    """{market: signed position} of a frame's `positions` (Lighter: sign 1/-1 and an unsigned size)."""
    out: dict[int, Decimal] = {}
    positions = msg.get("positions")
    if not isinstance(positions, dict):
        return out
    for key, pos in positions.items():
        try:
            size = Decimal(str(pos["position"]))
            out[int(pos.get("market_id", key))] = -size if int(pos.get("sign", 1)) < 0 else size
        except (KeyError, TypeError, ValueError, ArithmeticError):
            log.error("event=stream.bad_position position=%r", str(pos)[:200])
    return out


def _trades_of(msg: dict[str, Any]) -> list[dict[str, Any]]:
    trades = msg.get("trades") or {}
    out: list[dict[str, Any]] = []
    groups = trades.values() if isinstance(trades, dict) else [trades]
    for group in groups:
        if isinstance(group, dict):
            group = [group]
        if not isinstance(group, list):
            log.error("event=stream.bad_frame reason=trades_not_a_list frame=%r", str(group)[:200])
            continue
        out.extend(t for t in group if isinstance(t, dict))
    return out


def _describe(exc: BaseException) -> str:
    if isinstance(exc, websockets.ConnectionClosed):
        return f"closed code={exc.rcvd.code if exc.rcvd else None}"
    return f"{type(exc).__name__}: {exc}"
