"""AccountStream against the simulator: history, exactly-once delivery across drops and pauses,
a failing receiver, and junk on the wire.

What the listener guarantees (and these tests hold it to):
  * trades up to the first snapshot are history and never emitted;
  * every later trade of A is emitted once, in trade_id order within a batch, with A's side,
    size, price and order; a trade is emitted again only if the receiver raised for it;
  * a gap in the stream (disconnect, dropped frames) is closed by the REST backfill that runs
    after every reconnect -- at the latest, a trade is delivered after the next reconnect.
"""
from __future__ import annotations

import asyncio
import json
from collections import Counter
from decimal import Decimal

import pytest
from websockets.asyncio.server import serve

from hedge.fill import BUY, Fill
from venue.stream import AccountStream

from .conftest import A, ETH, admin, best_prices, eventually, open_client, run, sim_trade_ids

pytestmark = pytest.mark.timeout(60)
WAIT_S = 10


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

    def __init__(self, sim, client, recorder: Recorder, backfill=None, backfill_interval_s=None):
        self.cutoffs: list[int] = []
        # Periodic backfill off by default so each test controls when REST is asked.
        self.stream = GatedStream(sim.ws_url, A, recorder, backfill or (lambda: client.trades(None, 100)),
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


def test_trade_between_snapshot_and_backfill_is_not_taken_for_history(sim, private_keys):
    """A trade landing right after the subscription (before the REST answer) is a new fill."""
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            await rest_bid(sim, client, 1001)
            history = await fill(sim, 1001, ["0.0100"])
            racing: list[int] = []

            async def backfill_with_a_racing_trade():
                if not racing:
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


class FakeVenue:
    """A WebSocket server speaking just enough of /stream; `script(n)` lists the frames of connection n."""

    def __init__(self, script):
        self.script = script
        self.connections = 0
        self.received: list[str] = []

    async def handler(self, ws) -> None:
        self.connections += 1
        n = self.connections
        await ws.send(json.dumps({"type": "connected"}))
        sub = json.loads(await ws.recv())
        assert sub == {"type": "subscribe", "channel": f"account_all/{A}"}
        frames, then_close = self.script(n)
        for frame in frames:
            await ws.send(frame)
        if then_close:
            return
        async for message in ws:
            self.received.append(message)


async def with_fake_venue(script, body) -> None:
    venue = FakeVenue(script)
    async with serve(venue.handler, "127.0.0.1", 0) as server:
        port = server.sockets[0].getsockname()[1]
        recorder = Recorder()

        async def no_backfill():
            return []

        stream = AccountStream(f"ws://127.0.0.1:{port}", A, recorder, no_backfill,
                               backoff_base_s=0.01, backoff_cap_s=0.05, seed=1)
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
