"""AccountStream against the simulator: history, exactly-once delivery across drops and pauses,
a failing receiver, and junk on the wire.

What the listener guarantees (and these tests hold it to):
  * trades up to the first snapshot are history and never emitted;
  * every later trade of A is emitted once, in trade_id order within a batch, with A's side,
    size, price and order; a trade is emitted again only if the receiver raised for it;
  * a gap in the stream (disconnect, dropped frames) is closed by the REST backfill that runs
    after every reconnect -- at the latest, a trade is delivered after the next reconnect.

The `sim` tests run a fresh simulator per test (tests/venue/conftest.py: profile "instant", quiet
market, no faults); the others run a local fake venue speaking Lighter's frames, including the
documented examples in tests/fixtures/lighter_frames/.
"""
from __future__ import annotations

import asyncio
import dataclasses
import json
import logging
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
from websockets.asyncio.client import connect
from websockets.asyncio.server import serve

from hedge.fill import BUY, SIDES, Fill
from venue.stream import AccountStream

from .conftest import A, ETH, admin, best_prices, eventually, open_client, run, sim_trade_ids

pytestmark = pytest.mark.timeout(60)
WAIT_S = 10
FRAMES_DIR = Path(__file__).resolve().parents[1] / "fixtures" / "lighter_frames"


class Recorder:
    """on_fill: records deliveries; can fail the first attempt(s) for chosen trade ids."""

    def __init__(self, fail_first: set[int] | None = None):
        self.fills: list[Fill] = []
        self.attempts: Counter[int] = Counter()
        self.fail_first = set(fail_first or ())

    async def __call__(self, fill: Fill) -> None:
        trade_id = int(fill.fill_id)
        self.attempts[trade_id] += 1
        if trade_id in self.fail_first and self.attempts[trade_id] == 1:
            raise RuntimeError("broker unavailable")
        self.fills.append(fill)

    @property
    def ids(self) -> list[int]:
        return [int(f.fill_id) for f in self.fills]


class GatedStream(AccountStream):
    """AccountStream whose next connection waits for `gate`: lets a test act while it is offline."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.gate = asyncio.Event()
        self.gate.set()
        self.sessions_ended = 0

    async def _session(self) -> None:
        await self.gate.wait()
        try:
            await super()._session()
        finally:
            self.sessions_ended += 1


class Listener:
    """A running GatedStream over A's account, backfilling from the VenueClient."""

    def __init__(self, sim, client, recorder: Recorder, backfill=None, backfill_interval_s=None,
                 ws_url: str | None = None):
        self.cutoffs: list[int] = []
        # Periodic backfill off by default so each test controls when REST is asked.
        self.stream = GatedStream(ws_url or sim.ws_url, A, recorder, backfill or (lambda: client.trades(None, 100)),
                                  on_cutoff=self._on_cutoff, backoff_base_s=0.02, backoff_cap_s=0.1, seed=3,
                                  backfill_interval_s=backfill_interval_s)
        self.task: asyncio.Task | None = None

    async def _on_cutoff(self, trade_id: int) -> None:
        self.cutoffs.append(trade_id)

    async def __aenter__(self) -> "Listener":
        self.task = asyncio.create_task(self.stream.run())
        await asyncio.wait_for(self.stream.connected.wait(), WAIT_S)
        return self

    async def __aexit__(self, *exc) -> None:
        self.task.cancel()
        await asyncio.gather(self.task, return_exceptions=True)
        assert self.task.cancelled(), "the listener died instead of running until cancelled"

    async def go_offline(self, sim) -> None:
        """Drop the connection and keep the listener from reconnecting until back_online()."""
        ended = self.stream.sessions_ended
        self.stream.gate.clear()
        await admin(sim, "/admin/ws/drop", {})
        await eventually(lambda: self.stream.sessions_ended > ended and not self.stream.connected.is_set(),
                         WAIT_S, "the listener to see the disconnect")

    async def back_online(self) -> None:
        connects = self.stream.connects
        self.stream.gate.set()
        await eventually(lambda: self.stream.connects > connects and self.stream.connected.is_set(),
                         WAIT_S, "reconnect, snapshot and backfill")

    async def reconnect(self, sim) -> None:
        """A forced drop and a completed reconnect (snapshot + backfill processed)."""
        await self.go_offline(sim)
        await self.back_online()


async def rest_bid(sim, client, cio: int, base: str = "1.0000") -> tuple[dict, Decimal]:
    spec = await client.market_spec(ETH)
    price = best_prices(sim)[0] - Decimal("5.00")
    assert (await client.place_limit(spec, cio, False, Decimal(base), price, post_only=True)).accepted
    order = await client.order_by_client_index(cio)
    return order, price


async def fill(sim, cio: int, sizes: list[str]) -> list[int]:
    return (await admin(sim, "/admin/fill", {"account_index": A, "market_id": ETH,
                                             "client_order_index": cio, "sizes": sizes}))["trade_ids"]


def assert_exactly_once(recorder: Recorder, sim, history: set[int] = frozenset()) -> None:
    """Every trade the venue recorded for A after the history was emitted once, in trade_id order."""
    expected = sorted(set(sim_trade_ids(sim)) - set(history))
    assert sorted(recorder.ids) == expected, (recorder.ids, expected)
    assert len(recorder.ids) == len(set(recorder.ids)), Counter(recorder.ids).most_common(3)


# ---- history --------------------------------------------------------------------------------------

def test_first_snapshot_is_history_and_a_later_trade_is_emitted_once(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            order, price = await rest_bid(sim, client, 1001, "0.0500")
            history = await fill(sim, 1001, ["0.0040", "0.0060"])
            recorder = Recorder()
            async with Listener(sim, client, recorder) as listener:
                assert recorder.fills == []
                assert listener.cutoffs == [max(history)] and listener.stream.cutoff == max(history)

                [new_id] = await fill(sim, 1001, ["0.0100"])
                await eventually(lambda: recorder.fills, WAIT_S, "the new fill")
                [f] = recorder.fills
                assert f.fill_id == str(new_id) and f.market_index == ETH and f.side == BUY
                assert f.base_amount == Decimal("0.0100") and f.price == price
                assert (f.order_index, f.client_order_index) == (order.order_index, 1001)
                assert f.ts_exchange_ms > 0 and f.ts_seen_ms > 0

                # A reconnect replays snapshot + REST backfill (all three trades): nothing is emitted twice.
                await listener.reconnect(sim)
                assert recorder.ids == [new_id]
                assert listener.cutoffs == [max(history)]  # the cutoff is taken once
            assert_exactly_once(recorder, sim, set(history))
        finally:
            await client.close()

    run(scenario())


def test_trade_right_after_the_history_read_is_a_new_fill(sim, private_keys):
    """The snapshot carries no trades: history is what REST knew before the subscribe. A trade
    landing after that read (before the subscribe is even sent) is a new fill, delivered by the
    REST read that follows the snapshot."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            history = await fill(sim, 1001, ["0.0100"])
            calls: list[int] = []
            after_read: list[int] = []

            async def backfill():
                trades = await client.trades(None, 100)
                calls.append(len(calls))
                if len(calls) == 1:  # the history read, made before subscribing
                    after_read.extend(await fill(sim, 1001, ["0.0070"]))
                return trades

            recorder = Recorder()
            async with Listener(sim, client, recorder, backfill=backfill) as listener:
                await eventually(lambda: recorder.fills, WAIT_S, "the trade made after the history read")
                assert listener.cutoffs == history and recorder.ids == after_read
                await listener.reconnect(sim)
                assert recorder.ids == after_read
            assert_exactly_once(recorder, sim, set(history))
        finally:
            await client.close()

    run(scenario())


def test_trade_between_snapshot_and_backfill_is_not_taken_for_history(sim, private_keys):
    """A trade landing right after the subscription (before the REST answer) is a new fill,
    delivered once although both its update frame and the REST read carry it."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            history = await fill(sim, 1001, ["0.0100"])
            calls: list[int] = []
            racing: list[int] = []

            async def backfill_with_a_racing_trade():
                calls.append(len(calls))
                if len(calls) == 2:  # the read after the snapshot: the trade races it
                    racing.extend(await fill(sim, 1001, ["0.0070"]))
                return await client.trades(None, 100)

            recorder = Recorder()
            async with Listener(sim, client, recorder, backfill=backfill_with_a_racing_trade) as listener:
                await eventually(lambda: recorder.fills, WAIT_S, "the racing trade")
                assert listener.cutoffs == history
                await listener.reconnect(sim)
                assert recorder.ids == racing
            assert_exactly_once(recorder, sim, set(history))
        finally:
            await client.close()

    run(scenario())


def test_listener_accepts_a_readonly_ws_url(sim, private_keys):
    """Lighter's URL for restricted regions, `/stream?readonly=true`, carries account_all too."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            recorder = Recorder()
            async with Listener(sim, client, recorder, ws_url=sim.ws_url + "?readonly=true") as listener:
                assert listener.stream.ws_url.endswith("/stream?readonly=true")
                ids = await fill(sim, 1001, ["0.0050"])
                await eventually(lambda: recorder.ids == ids, WAIT_S, "the fill over the readonly URL")
        finally:
            await client.close()

    run(scenario())
    assert "readonly=true" in open(sim.log_path, errors="replace").read()


# ---- gaps -----------------------------------------------------------------------------------------

def test_no_fill_lost_or_duplicated_across_a_disconnect_with_trades_in_the_gap(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            recorder = Recorder()
            async with Listener(sim, client, recorder) as listener:
                before = await fill(sim, 1001, ["0.0050", "0.0060"])
                await eventually(lambda: len(recorder.ids) == 2, WAIT_S, "the live fills")

                await listener.go_offline(sim)
                # 60 trades while nobody listens: more than the snapshot's 50 recent trades, so the
                # oldest ones reach the listener only through the REST backfill.
                gap = await fill(sim, 1001, ["0.0050"] * 60)
                await listener.back_online()
                assert set(gap) <= set(recorder.ids)

                after = await fill(sim, 1001, ["0.0070"])
                await eventually(lambda: after[0] in recorder.ids, WAIT_S, "the fill after the reconnect")
                assert recorder.ids == before + gap + after  # once each, in venue order
            assert_exactly_once(recorder, sim)
            assert listener.stream.connects == 2
        finally:
            await client.close()

    run(scenario())


def test_trades_during_a_ws_pause_are_delivered_once_after_the_next_reconnect(sim, private_keys):
    """While paused the venue drops frames on a live connection. The listener cannot tell (no gap
    signal is checked), so its guarantee is: delivered exactly once after the next reconnect."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            recorder = Recorder()
            async with Listener(sim, client, recorder) as listener:
                first = await fill(sim, 1001, ["0.0050"])
                await eventually(lambda: recorder.ids == first, WAIT_S, "the live fill")

                await admin(sim, "/admin/ws/pause", {"paused": True})
                silent = await fill(sim, 1001, ["0.0060", "0.0070"])
                await admin(sim, "/admin/ws/pause", {"paused": False})
                later = await fill(sim, 1001, ["0.0080"])
                await eventually(lambda: later[0] in recorder.ids, WAIT_S, "the fill after the pause")
                assert listener.stream.connects == 1  # the connection never broke

                await listener.reconnect(sim)
                await eventually(lambda: set(silent) <= set(recorder.ids), WAIT_S, "the silently dropped fills")
                assert sorted(recorder.ids) == sorted(first + silent + later)
            assert_exactly_once(recorder, sim)
        finally:
            await client.close()

    run(scenario())


def test_silently_dropped_frames_are_noticed_without_a_reconnect(sim, private_keys):
    """The periodic REST backfill finds a fill whose frame the venue dropped on a live connection."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            recorder = Recorder()
            async with Listener(sim, client, recorder, backfill_interval_s=0.2) as listener:
                await admin(sim, "/admin/ws/pause", {"paused": True})
                silent = await fill(sim, 1001, ["0.0060"])
                await admin(sim, "/admin/ws/pause", {"paused": False})
                later = await fill(sim, 1001, ["0.0080"])
                await eventually(lambda: later[0] in recorder.ids, WAIT_S, "the fill after the pause")
                await eventually(lambda: silent[0] in recorder.ids, WAIT_S, "the dropped fill, without a reconnect")
                assert listener.stream.connects == 1
            assert_exactly_once(recorder, sim)
        finally:
            await client.close()

    run(scenario())


# ---- a failing receiver ---------------------------------------------------------------------------

def test_fill_whose_receiver_failed_is_delivered_again_after_reconnect(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            probe = await fill(sim, 1001, ["0.0050"])  # history; tells us the next trade ids
            recorder = Recorder(fail_first={probe[0] + 1})
            async with Listener(sim, client, recorder) as listener:
                ids = await fill(sim, 1001, ["0.0060", "0.0070"])
                assert ids[0] == probe[0] + 1
                await eventually(lambda: sorted(recorder.ids) == ids, WAIT_S, "both fills, the first one re-delivered")
                assert recorder.attempts[ids[0]] == 2 and recorder.attempts[ids[1]] == 1
                assert listener.stream.connects == 2  # the failure ended the session; the listener came back
            assert_exactly_once(recorder, sim, set(probe))
        finally:
            await client.close()

    run(scenario())


# ---- junk on the wire (a local fake venue) --------------------------------------------------------

OTHER = 2


def wire_trade(trade_id, **overrides) -> dict:
    t = {"trade_id": trade_id, "type": "trade", "market_id": 0, "size": "0.0100", "price": "3000.00",
         "ask_id": 281474976710700, "bid_id": 281474976710800, "ask_client_id": 0, "bid_client_id": 1001,
         "ask_account_id": OTHER, "bid_account_id": A, "is_maker_ask": False, "timestamp": 1790072395752}
    t.update(overrides)
    return t


def account_frame(kind: str, trades) -> str:
    return json.dumps({"type": f"{kind}/account_all", "channel": f"account_all:{A}", "account": A,
                       "trades": trades, "positions": {}})


def lighter_frame(kind: str, *, trades=None, positions=None, account: int = A) -> str:
    """An account_all frame as Lighter sends it: every documented key, what it does not carry empty."""
    return json.dumps({"type": f"{kind}/account_all", "channel": f"account_all:{account}", "account": account,
                       "assets": {}, "funding_histories": {}, "shares": [],
                       "daily_trades_count": 0, "daily_volume": 0, "weekly_trades_count": 0, "weekly_volume": 0,
                       "monthly_trades_count": 0, "monthly_volume": 0, "total_trades_count": 0, "total_volume": 0,
                       "positions": positions or {}, "trades": trades or {}})


POSITION = {"market_id": 0, "symbol": "ETH", "initial_margin_fraction": "5.00", "open_order_count": 0,
            "pending_order_count": 0, "position_tied_order_count": 0, "sign": 1, "position": "0.0100",
            "avg_entry_price": "3000.00", "position_value": "30.000000", "unrealized_pnl": "0.000000",
            "realized_pnl": "0.000000", "liquidation_price": "0", "margin_mode": 0, "allocated_margin": "0.000000"}
PING = json.dumps({"type": "ping"})
PONG = '{"type":"pong"}'


class FakeVenue:
    """A WebSocket server speaking just enough of /stream; `script(n)` lists the frames of connection n."""

    def __init__(self, script, account: int = A):
        self.script = script
        self.account = account
        self.connections = 0
        self.received: list[str] = []
        self.subscribes: list[dict] = []

    async def handler(self, ws) -> None:
        self.connections += 1
        n = self.connections
        await ws.send(json.dumps({"type": "connected"}))
        sub = json.loads(await ws.recv())
        self.subscribes.append(sub)
        assert {k: v for k, v in sub.items() if k != "auth"} == \
            {"type": "subscribe", "channel": f"account_all/{self.account}"}
        frames, then_close = self.script(n)
        for frame in frames:
            await ws.send(frame)
        if then_close:
            return
        async for message in ws:
            self.received.append(message)


async def with_fake_venue(script, body, *, backfill=None, account: int = A, **stream_kwargs) -> None:
    venue = FakeVenue(script, account)
    async with serve(venue.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        recorder = Recorder()

        async def no_backfill():
            return []

        stream = AccountStream(f"ws://127.0.0.1:{port}", account, recorder, backfill or no_backfill,
                               backoff_base_s=0.01, backoff_cap_s=0.05, seed=1, **stream_kwargs)
        task = asyncio.create_task(stream.run())
        try:
            await body(venue, stream, recorder)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)


def test_malformed_frames_and_trades_do_not_kill_the_session(caplog):
    junk = [
        "not json", "[1, 2, 3]", "null", '"a string"', "{}", '{"type": 7}',
        '{"type": "update/account_all", "trades": "garbage"}',
        '{"type": "update/account_all", "trades": {"0": "x"}}',
        '{"type": "update/account_all", "trades": {"0": [1, "x", null]}}',
        '{"type": "update/account_all", "trades": 5}',
        account_frame("update", {"0": [{"trade_id": "abc"}, {"no_id": 1}, {"trade_id": None},
                                       {"trade_id": 1.5}, {"trade_id": [11]}]}),
        '{"type": "update/account_all", "trades": {"0": [{"trade_id": Infinity}]}}',
        account_frame("update", {"0": [wire_trade(12, ask_account_id=A)]}),          # A on both sides
        account_frame("update", {"0": [wire_trade(13, size="abc")]}),                # bad size
        account_frame("update", {"0": [wire_trade(14, bid_id="--5")]}),              # bad order index
        account_frame("update", {"0": [wire_trade(15, bid_account_id=OTHER)]}),      # not A's trade
        '{"type": "update/account_all", "trades": {"0": [{"trade_id": 16, "ask_account_id": Infinity, '
        '"bid_account_id": 281001}]}}',
        json.dumps({"type": "error", "code": 30003, "message": "invalid channel"}),
        json.dumps({"type": "ping"}),
        account_frame("update", {"0": [wire_trade(17)]}),
    ]

    def script(n):
        assert n == 1, "the session broke on a malformed frame"
        return [account_frame("subscribed", {"0": [wire_trade(10)]})] + junk, False

    async def body(venue, stream, recorder):
        await eventually(lambda: recorder.fills, WAIT_S, "the valid fill after the junk")
        assert recorder.ids == [17] and recorder.fills[0].side == BUY
        assert stream.cutoff == 10 and stream.connects == 1 and stream.connected.is_set()
        await eventually(lambda: '{"type":"pong"}' in venue.received, WAIT_S, "the pong")
        assert venue.connections == 1

    run(with_fake_venue(script, body))
    bad = [r for r in caplog.records if "bad_trade" in r.getMessage() or "bad_frame" in r.getMessage()]
    assert len(bad) >= 10  # each piece of junk was logged, not silently eaten


def test_malformed_history_does_not_poison_every_reconnect():
    """A junk trade inside a snapshot must not end the session (it would come back on every reconnect)."""
    def script(n):
        if n == 1:   # first snapshot: junk next to the history
            return [account_frame("subscribed", {"0": [{"trade_id": "abc"}, wire_trade(10)]})], True
        # reconnect: the snapshot carries junk, the old trade, and a trade made while we were away
        return [account_frame("subscribed", {"0": [{"trade_id": "x"}, wire_trade(10), wire_trade(11),
                                                   {"trade_id": 12.0}]})], False

    async def body(venue, stream, recorder):
        await eventually(lambda: recorder.fills, WAIT_S, "the fill made during the gap")
        assert recorder.ids == [11] and stream.cutoff == 10
        assert venue.connections == 2 and stream.connected.is_set()

    run(with_fake_venue(script, body))


# ---- Lighter's frames (a local fake venue) ---------------------------------------------------------

def bad_logs(caplog) -> list[str]:
    return [r.getMessage() for r in caplog.records
            if "bad_trade" in r.getMessage() or "bad_frame" in r.getMessage()]


def test_snapshot_without_trades_takes_history_from_rest_and_skips_position_frames(caplog):
    """Lighter's snapshot: positions, `"trades": {}`; trades and positions in separate updates."""
    history = [wire_trade(9), wire_trade(10)]
    rest_reads: list[int] = []

    def script(n):
        assert n == 1, "the session broke"
        return [lighter_frame("subscribed", positions={"0": POSITION, "1": dict(POSITION, market_id=1)}),
                lighter_frame("update", trades={"0": [wire_trade(11)]}),
                lighter_frame("update", positions={"0": POSITION}),
                lighter_frame("update", trades={"0": [wire_trade(12), wire_trade(13, bid_account_id=OTHER,
                                                                                  ask_account_id=7)]}),
                lighter_frame("update", positions={"0": dict(POSITION, position="0.0200")}),
                PING], False

    async def backfill():
        rest_reads.append(1)
        return history

    async def body(venue, stream, recorder):
        await eventually(lambda: PONG in venue.received, WAIT_S, "the pong after the last frame")
        assert stream.cutoff == 10 and recorder.ids == [11, 12]
        assert len(rest_reads) == 2  # the history read before subscribing, the gap read after the snapshot

    run(with_fake_venue(script, body, backfill=backfill))
    assert bad_logs(caplog) == []


def test_venue_errors_are_logged_nested_untyped_and_flat(caplog):
    caplog.set_level(logging.INFO, logger="venue.stream")
    errors = [{"type": "error", "error": {"code": 20001, "message": "invalid param : auth field is required: "
                                                                     "account_all_orders:0"}},
              {"error": {"code": 30009, "message": "Too Many Websocket Messages!"}},
              {"type": "error", "code": 30005, "message": "Invalid Channel"}]

    def script(n):
        assert n == 1, "an error after the snapshot must not end the session"
        return ([lighter_frame("subscribed")] + [json.dumps(e) for e in errors]
                + [lighter_frame("update", trades={"0": [wire_trade(11)]}), PING]), False

    async def body(venue, stream, recorder):
        await eventually(lambda: PONG in venue.received, WAIT_S, "the pong after the errors")
        assert recorder.ids == [11] and stream.connects == 1

    run(with_fake_venue(script, body))
    logged = [r.getMessage() for r in caplog.records if "event=stream.venue_error" in r.getMessage()]
    assert len(logged) == 3, logged
    assert "code=20001 message='invalid param : auth field is required: account_all_orders:0'" in logged[0]
    assert "code=30009 message='Too Many Websocket Messages!'" in logged[1]
    assert "code=30005 message='Invalid Channel'" in logged[2]
    assert all(r.levelno == logging.ERROR for r in caplog.records if "stream.venue_error" in r.getMessage())


def test_an_error_instead_of_the_snapshot_ends_the_session_and_it_reconnects(caplog):
    def script(n):
        if n == 1:  # the subscribe refused: no snapshot will come on this connection
            return [json.dumps({"type": "error", "error": {"code": 30009,
                                                           "message": "Too Many Websocket Messages!"}})], False
        return [lighter_frame("subscribed"), lighter_frame("update", trades={"0": [wire_trade(11)]})], False

    async def backfill():
        return [wire_trade(10)]

    async def body(venue, stream, recorder):
        await eventually(lambda: recorder.fills, WAIT_S, "the fill after the reconnect")
        assert recorder.ids == [11] and stream.cutoff == 10
        assert venue.connections == 2 and stream.connects == 2 and stream.connected.is_set()

    run(with_fake_venue(script, body, backfill=backfill))
    messages = [r.getMessage() for r in caplog.records]
    assert any("event=stream.venue_error" in m and "code=30009" in m and "snapshot=false" in m for m in messages)
    assert any("event=stream.disconnected" in m and "VenueStreamError" in m for m in messages)


def test_no_snapshot_after_subscribing_ends_the_session_and_it_reconnects_with_auth(caplog):
    def script(n):
        if n == 1:  # subscribed, then silence: no snapshot ever comes on this connection
            return [], False
        return [lighter_frame("subscribed"), lighter_frame("update", trades={"0": [wire_trade(11)]})], False

    async def backfill():
        return [wire_trade(10)]

    async def body(venue, stream, recorder):
        await eventually(lambda: recorder.fills, WAIT_S, "the fill after the reconnect")
        assert recorder.ids == [11] and venue.connections == 2 and stream.connected.is_set()
        assert len(venue.subscribes) == 2 and all(m["auth"] == "token-of-A" for m in venue.subscribes)

    run(with_fake_venue(script, body, backfill=backfill, token=lambda: "token-of-A", snapshot_timeout_s=0.3))
    assert any("event=stream.disconnected" in r.getMessage() and "snapshot within" in r.getMessage()
               for r in caplog.records)


def load_frame(name: str) -> dict:
    return json.loads((FRAMES_DIR / name).read_text())


async def fills_from(frame: dict, account: int) -> list[Fill]:
    """The fills our listener makes of `frame`, served by a fake venue after a Lighter snapshot."""
    got: list[Fill] = []

    def script(n):
        assert n == 1, "the session broke"
        return [lighter_frame("subscribed", account=account), json.dumps(frame), PING], False

    async def body(venue, stream, recorder):
        await eventually(lambda: PONG in venue.received, WAIT_S, "the pong after the frame")
        got.extend(recorder.fills)

    await with_fake_venue(script, body, account=account)
    return got


def fill_kinds(fill: Fill) -> dict[str, type]:
    return {f.name: type(getattr(fill, f.name)) for f in dataclasses.fields(Fill)}


def test_documented_and_simulated_account_all_frames_give_the_same_fills(sim, private_keys, caplog):
    """Lighter's documented account_all examples (tests/fixtures/lighter_frames, from
    apidocs.lighter.xyz/docs/websocket-reference) and the simulator's frame for a fill of A go
    through the listener's parsing (venue/stream.py, hedge/fill.py) to the same kind of Fill."""
    documented = load_frame("account_all_update_example.json")
    older = load_frame("account_all_update_example_older.json")
    assert older["type"] == "update/account"  # the docs' typo: real frames say update/account_all
    older["type"] = "update/account_all"
    documented_trade = load_frame("trade_example.json")

    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            order, price = await rest_bid(sim, client, 1001)
            async with connect(sim.ws_url, open_timeout=WAIT_S) as ws:
                await ws.send(json.dumps({"type": "subscribe", "channel": f"account_all/{A}"}))

                async def next_update():
                    while True:
                        frame = json.loads(await ws.recv())
                        if frame["type"] == "update/account_all" and frame["trades"]:
                            return frame
                [trade_id] = await fill(sim, 1001, ["0.0050"])
                simulated = await asyncio.wait_for(next_update(), WAIT_S)
            assert [t["trade_id"] for t in simulated["trades"]["0"]] == [trade_id]
            # The documented Trade JSON example, in the simulator's frame.
            with_documented_trade = dict(simulated, trades={"0": [documented_trade]})
            return (order, price, simulated, await fills_from(documented, 654321),
                    await fills_from(older, 654321), await fills_from(documented, 10),
                    await fills_from(simulated, A), await fills_from(with_documented_trade, 317068))
        finally:
            await client.close()

    order, price, simulated, [doc], [doc_older], not_a_party, [simulated_fill], [doc_trade] = run(scenario())

    # The simulator's frame has the documented keys, and its trade every key the docs' Trade has.
    assert set(simulated) == set(documented)
    assert set(documented_trade) <= set(simulated["trades"]["0"][0])

    # Same kind of Fill: the same fields, of the same types; amounts Decimal.
    for f in (doc, doc_older, simulated_fill, doc_trade):
        assert fill_kinds(f) == fill_kinds(simulated_fill)
        assert isinstance(f.base_amount, Decimal) and isinstance(f.price, Decimal)
        assert f.side in SIDES and f.base_amount > 0 and f.price > 0
    assert (doc.fill_id, doc.market_index, doc.side, doc.base_amount, doc.price, doc.order_index,
            doc.client_order_index) == ("401", 101, BUY, Decimal("0.5"), Decimal("20000.00"), 502, 0)
    # The Account All example's timestamp is in seconds: taken as ms it is 1000x too small.
    assert doc.ts_exchange_ms == 1_700_000_000
    assert dataclasses.replace(doc_older, ts_seen_ms=0, ts_seen_us=0) == dataclasses.replace(
        doc, ts_seen_ms=0, ts_seen_us=0)
    assert not_a_party == []  # account 10's example trade is between 123456 and 654321
    assert (simulated_fill.side, simulated_fill.base_amount, simulated_fill.price, simulated_fill.order_index,
            simulated_fill.client_order_index) == (BUY, Decimal("0.0050"), price, order.order_index, 1001)
    assert (doc_trade.fill_id, doc_trade.side, doc_trade.base_amount, doc_trade.price, doc_trade.order_index,
            doc_trade.client_order_index, doc_trade.ts_exchange_ms) == (
        "16164557907", BUY, Decimal("0.1336"), Decimal("2181.83"), 562948334068259, 23004521241, 1773854156654)
    assert bad_logs(caplog) == []
