"""/stream sends what Lighter sends in production: account_all without trade history, trades and
positions in separate updates, nested error frames, private order channels behind auth, the
per-connection limits, and `?readonly=true`.

Runs under tests/sim/conftest.py's `sim`: profile SIM_PROFILE ("instant": no request limits, no
speed bumps), quiet market (no random walk, no taker flow), no faults. Order updates are still
awaited as frames, so the tests hold under the tiers' speed bumps too. The subscription-limit test
starts its own simulator, the same but with 120 more accounts (a connection needs 101 channels
that exist); one test drives an in-process StreamHub over a quiet engine (no server).
"""
from __future__ import annotations

import asyncio
import json
import time
from contextlib import asynccontextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any, AsyncIterator, Callable

import jsonschema
import lighter
import pytest
from websockets.asyncio.client import ClientConnection, connect

from venue.sim.harness import SimProcess, start_sim, wait_until
from venue.sim.stream import (INVALID_CHANNEL, MAX_CLIENT_MESSAGES_PER_MINUTE,
                              MAX_SUBSCRIPTIONS_PER_CONNECTION, TOO_MANY_MESSAGES,
                              TOO_MANY_SUBSCRIPTIONS, StreamHub)

from .conftest import (ACCOUNT_A, ACCOUNT_B, KEY_A, KEY_B, SIM_PROFILE, Trader, assert_clean_log,
                       cancel_tx, next_nonce, order_tx, quiet_engine, send_tx)

pytestmark = pytest.mark.timeout(120)
WAIT_S = 10.0
ASYNCAPI = Path("/work/shared/lighter-asyncapi.json")
OTHER_MASTER_ACCOUNT, OTHER_MASTER_KEY = 281077, 6

# The keys of an account_all frame, as the docs' Response Structure lists them.
ACCOUNT_ALL_KEYS = {"account", "assets", "channel", "daily_trades_count", "daily_volume",
                    "weekly_trades_count", "weekly_volume", "monthly_trades_count", "monthly_volume",
                    "total_trades_count", "total_volume", "funding_histories", "positions", "shares",
                    "trades", "type"}
# What lighter-sdk 1.1.8's WsClient handles (anything else is "unhandled").
SDK_TYPES = {"connected", "subscribed/order_book", "update/order_book", "subscribed/account_all",
             "update/account_all", "ping", "pong"}


# ---- helpers ------------------------------------------------------------------------------------

class Peer:
    """One raw WebSocket connection to /stream and every frame it received, in order."""

    def __init__(self, ws: ClientConnection):
        self.ws = ws
        self.frames: list[dict[str, Any]] = []

    async def send(self, **msg: Any) -> None:
        await self.ws.send(json.dumps(msg))

    async def next(self, predicate: Callable[[dict], bool] = lambda f: True,
                   timeout_s: float = WAIT_S) -> dict[str, Any]:
        """The next frame matching `predicate` (frames passed over are kept in `frames`)."""
        async def wait() -> dict[str, Any]:
            while True:
                frame = json.loads(await self.ws.recv())
                self.frames.append(frame)
                if predicate(frame):
                    return frame
        return await asyncio.wait_for(wait(), timeout_s)

    async def next_of(self, frame_type: str, timeout_s: float = WAIT_S) -> dict[str, Any]:
        return await self.next(lambda f: f.get("type") == frame_type, timeout_s)

    async def reply_to(self, timeout_s: float = WAIT_S, **msg: Any) -> dict[str, Any]:
        """Sends `msg`; the first frame after it that is not a server ping."""
        await self.send(**msg)
        return await self.next(lambda f: f.get("type") != "ping", timeout_s)

    async def sync(self) -> list[dict[str, Any]]:
        """Frames up to a pong for a ping sent now: frames are in order, so all that was due."""
        start = len(self.frames)
        await self.send(type="ping")
        await self.next_of("pong")
        return self.frames[start:]


@asynccontextmanager
async def peer(url: str) -> AsyncIterator[Peer]:
    async with connect(url, open_timeout=WAIT_S) as ws:
        p = Peer(ws)
        assert (await p.next())["type"] == "connected"
        yield p


def run(coro, timeout_s: float = 60.0):
    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)
    return asyncio.run(bounded())


def error_of(frame: dict[str, Any]) -> tuple[int, str]:
    """(code, message) of a nested error frame; fails on any other frame."""
    assert frame.get("type") == "error" and set(frame) == {"type", "error"}, frame
    assert set(frame["error"]) == {"code", "message"}, frame
    return frame["error"]["code"], frame["error"]["message"]


def send_with_fresh_nonce(sim: SimProcess, tx_type: int, build: Callable[[int], dict],
                          account: int = ACCOUNT_A, key: int = KEY_A) -> dict:
    """Sends a tx; re-reads the nonce while the venue still reports the previous one (nonce lag)."""
    deadline = time.monotonic() + WAIT_S
    while True:
        status, body = send_tx(sim, tx_type, build(next_nonce(sim, account, key)))
        if status == 200:
            return body
        if body.get("code") != 21104 or time.monotonic() > deadline:
            raise AssertionError(f"tx refused: {body}")
        time.sleep(0.05)  # bounded by the deadline: the venue's nonce catches up within ms


async def place_bid(sim: SimProcess, cio: int, base: int = 100, price: int = 250000) -> None:
    """A bid far below the touch (it rests), over REST."""
    await asyncio.to_thread(send_with_fresh_nonce, sim, 14,
                            lambda n: order_tx(n, client_index=cio, base=base, price=price))


async def cancel(sim: SimProcess, cio: int) -> None:
    await asyncio.to_thread(send_with_fresh_nonce, sim, 15, lambda n: cancel_tx(n, cio))


async def admin_fill(sim: SimProcess, cio: int, sizes: list[str], one_frame: bool = False) -> list[int]:
    body = await asyncio.to_thread(sim.admin, "/admin/fill", {
        "account_index": ACCOUNT_A, "market_id": 0, "client_order_index": cio, "sizes": sizes,
        "one_frame": one_frame})
    return body["trade_ids"]


def order_in(frame: dict[str, Any], cio: int) -> dict[str, Any] | None:
    """Account A's order `cio` in an orders frame, if the frame carries it."""
    for group in frame.get("orders", {}).values():
        for order in group:
            if order["client_order_index"] == cio and order["owner_account_index"] == ACCOUNT_A:
                return order
    return None


def orders_update(cio: int, status: str, frame_type: str = "update/account_all_orders"):
    def match(frame: dict[str, Any]) -> bool:
        order = order_in(frame, cio) if frame.get("type") == frame_type else None
        return order is not None and order["status"] == status
    return match


async def rest_bid(sim: SimProcess, p: Peer, cio: int, base: int = 100) -> dict[str, Any]:
    """Places a bid and waits until `p` (subscribed to A's account_all_orders) sees it open."""
    await place_bid(sim, cio, base)
    return order_in(await p.next(orders_update(cio, "open")), cio)


async def sdk_token(sim: SimProcess, api_keys, account: int, key: int, **kw: Any) -> str:
    """An auth token made by lighter-sdk's signer, as a Lighter client makes it."""
    client = lighter.SignerClient(sim.base_url, account, {key: api_keys[account][0]})
    try:
        token, err = client.create_auth_token_with_expiry(api_key_index=key, **kw)
        assert err is None, err
        return token
    finally:
        await client.close()


@pytest.fixture(scope="module")
def tokens(sim, api_keys) -> dict[str, str]:
    async def make() -> dict[str, str]:
        return {
            "a": await sdk_token(sim, api_keys, ACCOUNT_A, KEY_A),
            "b": await sdk_token(sim, api_keys, ACCOUNT_B, KEY_B),
            # made an hour ago, valid for a minute
            "a_expired": await sdk_token(sim, api_keys, ACCOUNT_A, KEY_A, deadline=60,
                                         timestamp=int(time.time()) - 3600),
        }
    return asyncio.run(make())


@pytest.fixture(scope="module")
def asyncapi() -> dict:
    if not ASYNCAPI.exists():
        pytest.skip(f"{ASYNCAPI} not present")
    return json.loads(ASYNCAPI.read_text())


@pytest.fixture(scope="module")
def asyncapi_order_schema(asyncapi) -> dict:
    # Only the Order objects: the spec types every by-market map (account_all's trades and
    # positions, the orders channels' orders) as an array, where the docs and Lighter send objects.
    return asyncapi["components"]["schemas"]["Order"]


# ---- account_all ----------------------------------------------------------------------------------

def test_account_all_snapshot_carries_positions_but_no_trade_history(sim, tokens):
    async def scenario():
        async with peer(sim.ws_url) as p:
            await p.send(type="subscribe", channel=f"account_all_orders/{ACCOUNT_A}", auth=tokens["a"])
            await p.next_of("subscribed/account_all_orders")
            await rest_bid(sim, p, 4001)
            await admin_fill(sim, 4001, ["0.0050"])
        assert (await asyncio.to_thread(sim.admin, f"/admin/trades?account_index={ACCOUNT_A}"))["trades"]

        async with peer(sim.ws_url) as p:
            snap = await p.reply_to(type="subscribe", channel=f"account_all/{ACCOUNT_A}")
            assert snap["type"] == "subscribed/account_all" and snap["channel"] == f"account_all:{ACCOUNT_A}"
            assert set(snap) == ACCOUNT_ALL_KEYS
            assert snap["trades"] == {}                      # A has trades; the snapshot has none
            assert snap["total_trades_count"] >= 1
            assert set(snap["positions"]) == {"0", "1"}
            assert snap["positions"]["0"]["market_id"] == 0 and Decimal(snap["positions"]["0"]["position"]) > 0

    run(scenario())


def test_trades_then_positions_arrive_in_separate_update_frames(sim, tokens):
    async def scenario():
        async with peer(sim.ws_url) as p:
            await p.send(type="subscribe", channel=f"account_all/{ACCOUNT_A}")
            await p.next_of("subscribed/account_all")
            await p.send(type="subscribe", channel=f"account_all_orders/{ACCOUNT_A}", auth=tokens["a"])
            await p.next_of("subscribed/account_all_orders")
            await rest_bid(sim, p, 4002, base=300)

            # One frame per trade, then one with the position.
            ids = await admin_fill(sim, 4002, ["0.0040", "0.0060"])
            frames = [await p.next_of("update/account_all") for _ in range(3)]
            assert [[t["trade_id"] for t in f["trades"].get("0", [])] for f in frames] == [ids[:1], ids[1:], []]
            for f in frames:
                assert set(f) == ACCOUNT_ALL_KEYS and f["channel"] == f"account_all:{ACCOUNT_A}"
            assert [f["positions"] for f in frames[:2]] == [{}, {}]
            assert frames[2]["trades"] == {} and set(frames[2]["positions"]) == {"0"}
            state = await asyncio.to_thread(sim.admin, "/admin/state")
            venue_position = Decimal(state["accounts"][str(ACCOUNT_A)]["markets"]["0"]["position"])
            position = frames[2]["positions"]["0"]
            assert position["sign"] * Decimal(position["position"]) == venue_position

            # one_frame: all new trades of the account in one frame, then the position.
            ids = await admin_fill(sim, 4002, ["0.0050", "0.0050"], one_frame=True)
            trades_frame, positions_frame = [await p.next_of("update/account_all") for _ in range(2)]
            assert [t["trade_id"] for t in trades_frame["trades"]["0"]] == ids
            assert trades_frame["positions"] == {}
            assert positions_frame["trades"] == {} and set(positions_frame["positions"]) == {"0"}
            for trade in trades_frame["trades"]["0"]:
                assert trade["bid_account_id"] == ACCOUNT_A and trade["bid_client_id"] == 4002
            await cancel(sim, 4002)

    run(scenario())


def test_account_all_takes_an_optional_auth(sim, tokens):
    async def scenario():
        async with peer(sim.ws_url) as p:
            # B's token may read A: same master (281000).
            snap = await p.reply_to(type="subscribe", channel=f"account_all/{ACCOUNT_A}", auth=tokens["b"])
            assert snap["type"] == "subscribed/account_all"
            code, message = error_of(await p.reply_to(type="subscribe", channel=f"account_all/{ACCOUNT_B}",
                                                      auth="not-a-token"))
            assert code == 20001 and message.startswith("invalid param") and f"account_all:{ACCOUNT_B}" in message
            # B's own account_all works with no auth at all.
            snap = await p.reply_to(type="subscribe", channel=f"account_all/{ACCOUNT_B}")
            assert snap["type"] == "subscribed/account_all" and snap["account"] == ACCOUNT_B

    run(scenario())


def test_publish_drains_order_updates_with_nobody_listening():
    """In-process hub, no connection: what nobody hears is dropped, not kept."""
    engine = quiet_engine()
    hub = StreamHub(engine, ping_interval_s=20.0)
    trader = Trader(engine)
    trader.order(client_index=1, base=100, price=250000)
    trader.cancel(1)
    assert engine.pending_order_updates
    hub.publish()
    assert engine.pending_order_updates == [] and engine.pending_trades == []


# ---- errors ----------------------------------------------------------------------------------------

def test_bad_channels_get_a_nested_invalid_channel_error(sim, asyncapi):
    error_schema = asyncapi["components"]["messages"]["ServerError"]["payload"]

    async def scenario():
        async with peer(sim.ws_url) as p:
            for channel in ("nope/1", "order_book/x", "order_book/99", "order_book", "order_book/0/1",
                            "account_all/424242", "account_orders/9/281001", 17, None):
                frame = await p.reply_to(type="subscribe", channel=channel)
                jsonschema.validate(frame, error_schema)
                code, message = error_of(frame)
                assert code == INVALID_CHANNEL and message.startswith("Invalid Channel"), (channel, message)
            assert [f for f in await p.sync() if f["type"] not in ("pong", "ping")] == []

    run(scenario())


def test_private_channels_without_valid_auth_get_error_20001(sim, tokens):
    stranger = f"{int(time.time()) + 600}:{OTHER_MASTER_ACCOUNT}:{OTHER_MASTER_KEY}:{'ab' * 40}"
    unknown = f"{int(time.time()) + 600}:999999:3:{'ab' * 40}"
    sim.admin("/admin/register_key", {"account_index": OTHER_MASTER_ACCOUNT, "api_key_index": OTHER_MASTER_KEY,
                                      "public_key": "cd" * 40, "master": OTHER_MASTER_ACCOUNT})

    async def scenario():
        async with peer(sim.ws_url) as p:
            for channel, reply in ((f"account_all_orders/{ACCOUNT_A}", f"account_all_orders:{ACCOUNT_A}"),
                                   (f"account_orders/0/{ACCOUNT_A}", "account_orders:0")):
                code, message = error_of(await p.reply_to(type="subscribe", channel=channel))
                assert code == 20001
                assert message == f"invalid param : auth field is required: {reply}"
                for bad in ("", "garbage", "1:2:3", tokens["a_expired"], stranger, unknown, 12345):
                    code, message = error_of(await p.reply_to(type="subscribe", channel=channel, auth=bad))
                    assert code == 20001 and message.startswith("invalid param"), (bad, message)
                    assert message.endswith(reply)
            # Nothing was subscribed: no snapshot, and no update when A's orders change.
            await place_bid(sim, 4003)
            await cancel(sim, 4003)
            await asyncio.to_thread(_wait_inactive, sim, 4003)
            assert {f["type"] for f in await p.sync()} <= {"ping", "pong"}
            assert not [f for f in p.frames if f["type"].endswith("orders")]

    run(scenario())


def _wait_inactive(sim: SimProcess, cio: int) -> None:
    """Until A's order `cio` has ended canceled (the venue executes a cancel after taking it)."""
    def canceled() -> bool:
        log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_A}")["orders_log"]
        return any(e["tx_type"] == 14 and e["client_order_index"] == cio and e["final_status"] == "canceled"
                   for e in log)
    wait_until(canceled, timeout_s=WAIT_S, what=f"order {cio} canceled")


# ---- private order channels --------------------------------------------------------------------------

def test_order_channels_with_auth_get_snapshot_then_rest_fill_and_cancel(sim, tokens, asyncapi_order_schema):
    async def scenario():
        async with peer(sim.ws_url) as p:
            await place_bid(sim, 4010)           # active before the subscription: in the snapshot
            await p.send(type="subscribe", channel=f"account_all_orders/{ACCOUNT_A}", auth=tokens["a"])
            snap = await p.next_of("subscribed/account_all_orders")
            assert snap["channel"] == f"account_all_orders:{ACCOUNT_A}" and set(snap) == {"type", "channel", "orders"}
            if order_in(snap, 4010) is None:     # taken but not yet executed (speed bump): it opens next
                await p.next(orders_update(4010, "open"))
            # B's token reads A's orders too (same master).
            await p.send(type="subscribe", channel=f"account_orders/0/{ACCOUNT_A}", auth=tokens["b"])
            market_snap = await p.next_of("subscribed/account_orders")
            assert market_snap["channel"] == "account_orders:0" and market_snap["account"] == ACCOUNT_A
            assert set(market_snap) == {"type", "channel", "account", "nonce", "orders"}
            assert set(market_snap["orders"]) == {"0"} and order_in(market_snap, 4010)["status"] == "open"

            # Rests.
            await place_bid(sim, 4011, base=200)
            opened = order_in(await p.next(orders_update(4011, "open")), 4011)
            on_market = order_in(await p.next(orders_update(4011, "open", "update/account_orders")), 4011)
            assert opened == on_market
            assert opened["remaining_base_amount"] == "0.0200" and opened["filled_base_amount"] == "0.0000"
            assert opened["is_ask"] is False and opened["market_index"] == 0

            # Partly fills, then fills.
            await admin_fill(sim, 4011, ["0.0050"])
            partly = order_in(await p.next(lambda f: f["type"] == "update/account_all_orders"
                                           and (order_in(f, 4011) or {}).get("filled_base_amount") == "0.0050"), 4011)
            assert partly["status"] == "open" and partly["remaining_base_amount"] == "0.0150"
            await admin_fill(sim, 4011, ["0.0150"])
            filled = order_in(await p.next(orders_update(4011, "filled")), 4011)
            assert filled["filled_base_amount"] == "0.0200" and filled["remaining_base_amount"] == "0.0000"

            # Cancelled.
            await cancel(sim, 4010)
            canceled = order_in(await p.next(orders_update(4010, "canceled")), 4010)
            assert canceled["remaining_base_amount"] == "0.0000"
            on_market = await p.next(orders_update(4010, "canceled", "update/account_orders"))
            assert on_market["account"] == ACCOUNT_A and isinstance(on_market["nonce"], int)

            for frame in p.frames:
                for group in frame.get("orders", {}).values() if frame["type"].endswith("orders") else ():
                    for order in group:
                        jsonschema.validate(order, asyncapi_order_schema)

            # Unsubscribing stops the updates and is acknowledged.
            ack = await p.reply_to(type="unsubscribe", channel=f"account_all_orders/{ACCOUNT_A}")
            assert ack == {"type": "unsubscribed", "channel": f"account_all_orders:{ACCOUNT_A}"}
            ack = await p.reply_to(type="unsubscribe", channel=f"account_orders/0/{ACCOUNT_A}")
            assert ack == {"type": "unsubscribed", "channel": "account_orders:0"}
            await place_bid(sim, 4012)
            await cancel(sim, 4012)
            await asyncio.to_thread(_wait_inactive, sim, 4012)
            assert not [f for f in await p.sync() if f["type"].endswith("orders")]

    run(scenario())


def test_connections_on_account_all_and_order_book_only_get_types_the_sdk_knows(sim, tokens):
    """Errors and private-channel frames go only to the connection that asked for them."""
    async def scenario():
        async with peer(sim.ws_url) as sdk_like, peer(sim.ws_url) as other:
            await sdk_like.send(type="subscribe", channel="order_book/0")
            await sdk_like.send(type="subscribe", channel=f"account_all/{ACCOUNT_A}")
            await sdk_like.next_of("subscribed/account_all")

            await other.send(type="subscribe", channel=f"account_all_orders/{ACCOUNT_A}", auth=tokens["a"])
            await other.next_of("subscribed/account_all_orders")
            for bad in ({"channel": "nope/1"}, {"channel": f"account_orders/0/{ACCOUNT_A}"},
                        {"channel": "account_all/1", "auth": "garbage"}):
                error_of(await other.reply_to(type="subscribe", **bad))
            await rest_bid(sim, other, 4020)
            await admin_fill(sim, 4020, ["0.0100"])
            await other.next(orders_update(4020, "filled"))
            await other.send(type="unsubscribe", channel=f"account_all_orders/{ACCOUNT_A}")
            await other.next_of("unsubscribed")

            got = await sdk_like.sync()
            assert "update/account_all" in {f["type"] for f in got}
            assert {f["type"] for f in sdk_like.frames} <= SDK_TYPES, {f["type"] for f in sdk_like.frames}

    run(scenario())


# ---- readonly and limits -----------------------------------------------------------------------------

def test_readonly_url_is_accepted(sim):
    async def scenario():
        async with peer(sim.ws_url + "?readonly=true") as p:
            book = await p.reply_to(type="subscribe", channel="order_book/0")
            assert book["type"] == "subscribed/order_book" and book["order_book"]["bids"]
            snap = await p.reply_to(type="subscribe", channel=f"account_all/{ACCOUNT_A}")
            assert snap["type"] == "subscribed/account_all" and snap["trades"] == {}
    run(scenario())
    assert_clean_log(sim)
    assert "readonly=true" in open(sim.log_path, errors="replace").read()


def test_message_over_the_per_minute_limit_gets_an_error_and_is_not_acted_on(sim):
    async def scenario():
        async with peer(sim.ws_url) as p:
            for _ in range(MAX_CLIENT_MESSAGES_PER_MINUTE):
                await p.send(type="ping")
            for _ in range(MAX_CLIENT_MESSAGES_PER_MINUTE):
                await p.next_of("pong")
            # The 201st and 202nd: both refused, in order; had the subscribe been acted on, its
            # snapshot would come between the two errors.
            await p.send(type="subscribe", channel=f"account_all/{ACCOUNT_A}")
            await p.send(type="ping")
            replies = [await p.next(lambda f: f["type"] != "ping") for _ in range(2)]
            for reply in replies:
                assert error_of(reply) == (TOO_MANY_MESSAGES, "Too Many Websocket Messages!")
            # The limit is per connection.
            async with peer(sim.ws_url) as fresh:
                assert (await fresh.reply_to(type="ping"))["type"] == "pong"

    run(scenario())


@pytest.fixture(scope="module")
def crowded_sim(keys_file) -> SimProcess:
    """The module's simulator again, with 120 more accounts (ids 300000..300119) to subscribe to."""
    accounts = [{"index": ACCOUNT_A, "master": 281000, "api_key_indexes": [KEY_A]},
                {"index": ACCOUNT_B, "master": 281000, "api_key_indexes": [KEY_B]}]
    accounts += [{"index": 300000 + i, "master": 300000} for i in range(120)]
    with start_sim({"tick_ms": 50, "random_walk": False, "taker_flow": False, "accounts": accounts},
                   profile=SIM_PROFILE, seed=5, keys_file=keys_file) as proc:
        yield proc
        assert proc.alive(), f"simulator died:\n{proc.log_tail()}"
        assert_clean_log(proc)


def test_subscription_over_the_per_connection_limit_gets_an_error(crowded_sim):
    assert MAX_SUBSCRIPTIONS_PER_CONNECTION == 100

    async def scenario():
        async with peer(crowded_sim.ws_url) as p:
            for i in range(MAX_SUBSCRIPTIONS_PER_CONNECTION):
                await p.send(type="subscribe", channel=f"account_all/{300000 + i}")
            snaps = [await p.next_of("subscribed/account_all") for _ in range(MAX_SUBSCRIPTIONS_PER_CONNECTION)]
            assert [s["account"] for s in snaps] == [300000 + i for i in range(MAX_SUBSCRIPTIONS_PER_CONNECTION)]

            code, message = error_of(await p.reply_to(type="subscribe", channel="order_book/0"))
            assert code == TOO_MANY_SUBSCRIPTIONS and "100" in message
            # Subscribing again to a channel it holds is no new subscription: a fresh snapshot.
            again = await p.reply_to(type="subscribe", channel="account_all/300000")
            assert again["type"] == "subscribed/account_all" and again["account"] == 300000
            # Unsubscribing frees a place.
            ack = await p.reply_to(type="unsubscribe", channel="account_all/300007")
            assert ack == {"type": "unsubscribed", "channel": "account_all:300007"}
            book = await p.reply_to(type="subscribe", channel="order_book/0")
            assert book["type"] == "subscribed/order_book"
            assert not [f for f in await p.sync() if f["type"] == "error"]

    run(scenario())
