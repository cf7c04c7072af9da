"""Venue state from WebSockets: one account's orders (`account_all_orders`, authenticated) and,
for the maker, the books of its markets (`order_book/{market}`), on one connection.

Why: Lighter allows 60 requests a minute on a Standard account, shared by A and B. Polling an
order's state or the book over REST spends that budget in seconds, and under the venue's speed
bumps (an order is executed 200-300 ms after sendTx answers) a read made right after sending
finds nothing. The stream tells when the order is there. REST stays for recovery: callers fall
back to one read when the feed is not connected or does not answer in time.

The auth token for the private channel is renewed (re-subscribe) before its 10-minute expiry.
The feed reconnects by itself with backoff and jitter, logs every error, and never ends but by
cancellation. State kept: the last view of each order by client order index (the final ones
pruned beyond FINAL_ORDERS_KEPT), and each market's book levels.
"""
from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Iterable

from websockets.asyncio.client import connect

from venue.client import OrderView
from venue.reconnect import reconnecting

log = logging.getLogger("venue.feed")

TOKEN_RENEW_S = 480.0          # Lighter's tokens live 10 minutes: re-subscribe well before
# Final orders kept for lookups by client order index: callers look at their latest orders (or wait on
# open ones, never pruned); an older one is read over REST. More only costs memory and a scan per frame.
FINAL_ORDERS_KEPT = 256
SNAPSHOT_TIMEOUT_S = 10.0      # no snapshot this long after subscribing: reconnect


class FeedError(RuntimeError):
    """The venue refused a subscription, or the connection cannot be used; the feed reconnects."""


def order_view(raw: dict[str, Any]) -> OrderView:
    """An order of the stream (Lighter's Order JSON) as the OrderView REST reads give."""
    return OrderView(order_index=int(raw["order_index"]), client_order_index=int(raw["client_order_index"]),
                     market_index=int(raw["market_index"]), is_ask=bool(raw["is_ask"]), status=str(raw["status"]),
                     initial_base=Decimal(raw["initial_base_amount"]), filled_base=Decimal(raw["filled_base_amount"]),
                     filled_quote=Decimal(raw["filled_quote_amount"]), price=Decimal(raw["price"]))


class Book:
    """One market's aggregated levels from the order_book channel (price -> size)."""

    def __init__(self) -> None:
        self.bids: dict[Decimal, Decimal] = {}
        self.asks: dict[Decimal, Decimal] = {}
        self.nonce: int | None = None

    def apply(self, body: dict[str, Any], snapshot: bool) -> bool:
        """Applies a snapshot or a diff; False when a diff does not follow the last nonce (a gap)."""
        if snapshot:
            self.bids, self.asks = {}, {}
        elif self.nonce is not None and body.get("begin_nonce") is not None \
                and int(body["begin_nonce"]) != self.nonce:
            return False
        for side, levels in ((self.bids, body.get("bids") or []), (self.asks, body.get("asks") or [])):
            for level in levels:
                price, size = Decimal(level["price"]), Decimal(level["size"])
                if size == 0:
                    side.pop(price, None)
                else:
                    side[price] = size
        if body.get("nonce") is not None:
            self.nonce = int(body["nonce"])
        return True

    def prices(self) -> tuple[list[Decimal], list[Decimal]]:
        """Distinct bid prices best first (descending) and ask prices best first (ascending)."""
        return sorted(self.bids, reverse=True), sorted(self.asks)


class VenueFeed:
    def __init__(self, ws_url: str, account_index: int, token: Callable[[], str], *,
                 book_markets: Iterable[int] = (), on_order: Callable[[OrderView], None] | None = None,
                 backoff_base_s: float = 0.2, backoff_cap_s: float = 5.0, seed: int | None = None):
        self.ws_url = ws_url
        self.account_index = account_index
        self.token = token
        self.book_markets = sorted(set(book_markets))
        self.on_order = on_order
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._rng = random.Random(seed)
        self.orders: dict[int, OrderView] = {}
        self.books: dict[int, Book] = {}
        self.connected = asyncio.Event()   # the orders snapshot arrived: order state is current
        self._changed = asyncio.Condition()
        self.connects = 0

    # ---- what callers ask ------------------------------------------------------------------

    def order(self, client_order_index: int) -> OrderView | None:
        return self.orders.get(client_order_index)

    async def wait_order(self, client_order_index: int, done: Callable[[OrderView], bool],
                         timeout_s: float) -> OrderView | None:
        """The order's latest view once `done(view)` holds, or the latest seen (maybe None) at the
        timeout. Returns at once when the feed is not connected: the caller reads REST then."""
        deadline = time.monotonic() + timeout_s
        async with self._changed:
            while True:
                view = self.orders.get(client_order_index)
                left_s = deadline - time.monotonic()
                if (view is not None and done(view)) or left_s <= 0 or not self.connected.is_set():
                    return view
                try:
                    async with asyncio.timeout(left_s):
                        await self._changed.wait()
                except TimeoutError:
                    return self.orders.get(client_order_index)

    def book_prices(self, market_index: int) -> tuple[list[Decimal], list[Decimal]] | None:
        """The market's book from the stream, or None when it is not current (not subscribed yet,
        disconnected, or a gap in the diffs): read REST then."""
        if not self.connected.is_set():
            return None
        book = self.books.get(market_index)
        return book.prices() if book is not None else None

    # ---- the connection ----------------------------------------------------------------------

    async def run(self) -> None:
        """Forever (until cancelled): connect, subscribe, follow; reconnect with backoff."""
        await reconnecting(self._session, log=log, event="feed.disconnected", account=self.account_index,
                           rng=self._rng, backoff_base_s=self.backoff_base_s, backoff_cap_s=self.backoff_cap_s,
                           describe=lambda exc: f"{type(exc).__name__}: {exc}"[:300],
                           on_drop=self._set_disconnected)

    async def _set_disconnected(self) -> None:
        self.connected.clear()
        self.books.clear()
        async with self._changed:
            self._changed.notify_all()   # waiters fall back to REST now

    async def _session(self) -> None:
        async with connect(self.ws_url, ping_interval=20, ping_timeout=20, open_timeout=10,
                           max_size=2**23) as ws:
            self.connects += 1
            log.info("event=feed.connected account=%s connects=%d books=%s", self.account_index,
                     self.connects, ",".join(map(str, self.book_markets)) or "-")
            await self._subscribe_orders(ws)
            for market in self.book_markets:
                await ws.send(json.dumps({"type": "subscribe", "channel": f"order_book/{market}"}))
            renew_at = time.monotonic() + TOKEN_RENEW_S
            snapshot_by = time.monotonic() + SNAPSHOT_TIMEOUT_S
            while True:
                now = time.monotonic()
                if now >= renew_at:
                    await ws.send(json.dumps({"type": "unsubscribe",
                                              "channel": f"account_all_orders/{self.account_index}"}))
                    await self._subscribe_orders(ws)
                    renew_at = now + TOKEN_RENEW_S
                if not self.connected.is_set() and now >= snapshot_by:
                    raise FeedError(f"no account_all_orders snapshot within {SNAPSHOT_TIMEOUT_S:.0f}s")
                wait_s = min(renew_at, snapshot_by if not self.connected.is_set() else renew_at) - now
                try:
                    # asyncio.timeout, not wait_for: on 3.11 wait_for can lose a cancellation that
                    # races a frame, and the feed would then outlive its owner.
                    async with asyncio.timeout(max(0.05, wait_s)):
                        raw = await ws.recv()
                except TimeoutError:
                    continue
                await self._on_frame(ws, raw)

    async def _subscribe_orders(self, ws) -> None:
        await ws.send(json.dumps({"type": "subscribe", "channel": f"account_all_orders/{self.account_index}",
                                  "auth": self.token()}))

    async def _on_frame(self, ws, raw: Any) -> None:
        try:
            msg = json.loads(raw)
        except (TypeError, ValueError):
            log.error("event=feed.bad_frame reason=not_json frame=%r", str(raw)[:200])
            return
        if not isinstance(msg, dict):
            log.error("event=feed.bad_frame reason=not_an_object frame=%r", str(raw)[:200])
            return
        kind = str(msg.get("type", ""))
        error = msg.get("error") if isinstance(msg.get("error"), dict) else (msg if kind == "error" else None)
        if error is not None:
            log.error("event=feed.venue_error account=%s code=%s message=%r", self.account_index,
                      error.get("code"), error.get("message"))
            if not self.connected.is_set():
                raise FeedError(f"subscription refused: code={error.get('code')} message={error.get('message')!r}")
            return
        if kind == "ping":
            await ws.send('{"type":"pong"}')
        elif kind.endswith("/account_all_orders"):
            await self._on_orders(msg, snapshot=kind.startswith("subscribed/"))
        elif kind.endswith("/order_book"):
            self._on_book(msg, snapshot=kind.startswith("subscribed/"))

    async def _on_orders(self, msg: dict[str, Any], snapshot: bool) -> None:
        views = []
        for group in (msg.get("orders") or {}).values():
            for raw in group if isinstance(group, list) else [group]:
                try:
                    views.append(order_view(raw))
                except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
                    log.error("event=feed.bad_order account=%s error=%s order=%r", self.account_index,
                              f"{type(exc).__name__}: {exc}", str(raw)[:200])
        async with self._changed:
            if snapshot:
                # The snapshot lists active orders only: an order we saw active that is not in it
                # ended while we were away, in a state we do not know. Forget it (callers read REST).
                listed = {v.client_order_index for v in views}
                for coi in [c for c, v in self.orders.items() if not v.is_final and c not in listed]:
                    del self.orders[coi]
            for view in views:
                self.orders[view.client_order_index] = view
            if snapshot:
                self.connected.set()
            self._prune()
            self._changed.notify_all()
        if self.on_order is not None:
            for view in views:
                self.on_order(view)

    def _on_book(self, msg: dict[str, Any], snapshot: bool) -> None:
        try:
            market = int(str(msg.get("channel", "")).split(":")[1])
        except (IndexError, ValueError):
            log.error("event=feed.bad_frame reason=book_channel frame=%r", str(msg)[:200])
            return
        book = self.books.setdefault(market, Book()) if snapshot else self.books.get(market)
        if book is None:
            return  # a diff before its snapshot (after a gap): ignored until the resubscribe
        try:
            ok = book.apply(msg.get("order_book") or {}, snapshot)
        except (KeyError, TypeError, ValueError, InvalidOperation) as exc:
            log.error("event=feed.bad_frame reason=book error=%s", f"{type(exc).__name__}: {exc}")
            ok = False
        if not ok:
            # A missed diff: this book is wrong until a new snapshot. Callers read REST meanwhile.
            log.warning("event=feed.book_gap market=%s", market)
            self.books.pop(market, None)
            raise FeedError(f"order_book/{market}: a diff does not follow the last nonce")

    def _prune(self) -> None:
        final = [coi for coi, view in self.orders.items() if view.is_final]
        for coi in final[:max(0, len(final) - FINAL_ORDERS_KEPT)]:   # dicts keep insertion order
            del self.orders[coi]


SEEN_WITHIN_S = 1.5   # an order the stream has not shown this long after we asked is looked up over REST


async def order_final(feed: VenueFeed | None, client, client_order_index: int,
                      timeout_s: float) -> OrderView | None:
    """An order's final state (or the last state seen at the timeout; None if never seen).

    From the order stream while it is connected: no request spent. One REST lookup (then REST
    polling, the pre-stream behaviour) when the stream is down, has not shown the order within
    SEEN_WITHIN_S (it may have ended while we reconnected, or the venue is late), or stays silent.
    """
    deadline = time.monotonic() + timeout_s
    if feed is not None and feed.connected.is_set():
        view = await feed.wait_order(client_order_index, lambda _: True, min(timeout_s, SEEN_WITHIN_S))
        if view is None and deadline - time.monotonic() > SEEN_WITHIN_S:
            # Not on the stream yet: one REST look, then the stream again - a tx executing late
            # (seconds to minutes after it was taken) must not turn into REST polling.
            view = await client.order_by_client_index(client_order_index)
            if view is None and feed.connected.is_set():
                view = await feed.wait_order(client_order_index, lambda _: True,
                                             max(0.0, deadline - time.monotonic() - SEEN_WITHIN_S))
        if view is not None and not view.is_final and feed.connected.is_set():
            view = await feed.wait_order(client_order_index, lambda o: o.is_final,
                                         max(0.0, deadline - time.monotonic())) or view
        if view is not None and view.is_final:
            return view
        if feed.connected.is_set():
            return await client.order_by_client_index(client_order_index) or view
    return await client.wait_order_final(client_order_index, max(0.0, deadline - time.monotonic()))
