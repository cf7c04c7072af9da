"""venue.feed against the simulator on Lighter's Standard tier (speed bumps, request limits, no
faults unless a test sets them): order states and books from WebSockets, no REST polling, and
the fallback when the stream drops."""
from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from venue.feed import VenueFeed, order_final
from venue.sim.harness import start_sim

from .conftest import A, ETH, SIM_CONFIG, admin, eventually, open_client, run

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def standard_sim(keys_file, tmp_path):
    with start_sim(SIM_CONFIG, profile="standard", keys_file=keys_file, log_path=str(tmp_path / "sim.log")) as proc:
        yield proc
        assert proc.alive(), proc.log_tail()


def _requests(sim, endpoint: str) -> int:
    stats = sim.admin("/admin/stats")["requests"]
    return sum(per.get(endpoint, {}).get("requests", 0) for per in stats.values())


def test_an_order_is_followed_from_taken_to_final_without_a_rest_read(standard_sim, private_keys):
    sim = standard_sim

    async def scenario():
        client = await open_client(sim, private_keys)
        feed = VenueFeed(sim.ws_url, A, client.auth_token, book_markets=[ETH])
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 10)
            await eventually(lambda: feed.book_prices(ETH) and feed.book_prices(ETH)[0], 10, "the ETH book")
            spec = await client.market_spec(ETH)
            bids, asks = feed.book_prices(ETH)
            rest_bids, rest_asks = await client.book_prices(ETH, limit=50)
            assert (bids[:len(rest_bids)], asks[:len(rest_asks)]) == (rest_bids, rest_asks)
            reads_before = _requests(sim, "accountOrders") + _requests(sim, "accountActiveOrders")
            # A resting bid under the book: taken now, shown ~200 ms later (Standard maker delay).
            outcome = await client.place_limit(spec, 777, False, Decimal("0.0100"), bids[0] - 50, post_only=True)
            assert outcome.accepted
            assert feed.order(777) is None                      # taken is not executed
            seen = await feed.wait_order(777, lambda _: True, 5)
            assert seen is not None and seen.status == "open"
            await admin(sim, "/admin/fill", {"account_index": A, "market_id": ETH, "client_order_index": 777,
                                             "sizes": ["0.0040"]})
            part = await feed.wait_order(777, lambda o: o.filled_base > 0, 5)
            assert part.filled_base == Decimal("0.0040") and not part.is_final
            await client.cancel(ETH, seen.order_index)
            final = await order_final(feed, client, 777, 5)
            assert final.status == "canceled" and final.filled_base == Decimal("0.0040")
            # Everything above came from the stream: not one order read was spent.
            assert _requests(sim, "accountOrders") + _requests(sim, "accountActiveOrders") == reads_before
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)   # the feed ends when cancelled
            await client.close()
    run(scenario())


def test_a_dropped_stream_falls_back_to_rest_then_catches_up(standard_sim, private_keys):
    sim = standard_sim

    async def scenario():
        client = await open_client(sim, private_keys)
        feed = VenueFeed(sim.ws_url, A, client.auth_token, book_markets=[ETH], backoff_base_s=0.5)
        task = asyncio.create_task(feed.run())
        try:
            await asyncio.wait_for(feed.connected.wait(), 10)
            spec = await client.market_spec(ETH)
            await admin(sim, "/admin/ws/pause", {"paused": True})      # frames lost, connection kept
            bids, _ = await client.book_prices(ETH, limit=1)
            assert (await client.place_limit(spec, 778, False, Decimal("0.0100"), bids[0] - 50, True)).accepted
            await admin(sim, "/admin/ws/drop", {})
            await eventually(lambda: not feed.connected.is_set(), 5, "the feed to notice the drop")
            assert feed.book_prices(ETH) is None                # not current: callers read REST
            view = await order_final(feed, client, 778, 1.0)    # the stream cannot say: REST does
            assert view is not None and view.status == "open"
            await admin(sim, "/admin/ws/pause", {"paused": False})
            # Reconnected (a subscribe answered by nothing while paused times out and is retried):
            # the snapshot lists the order.
            await asyncio.wait_for(feed.connected.wait(), 30)
            assert feed.order(778).status == "open"
            await eventually(lambda: feed.book_prices(ETH), 10, "the book again")
            stats = sim.admin("/admin/stats")
            assert all(b["http_429"] == 0 for b in stats["rolling_minute"].values())
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)   # the feed ends when cancelled
            await client.close()
    run(scenario(), timeout_s=60)


def test_a_refused_subscription_is_logged_and_retried(standard_sim, private_keys, caplog):
    sim = standard_sim

    async def scenario():
        client = await open_client(sim, private_keys)
        feed = VenueFeed(sim.ws_url, A, lambda: "not-a-token", backoff_base_s=0.05, backoff_cap_s=0.1)
        task = asyncio.create_task(feed.run())
        try:
            await eventually(lambda: feed.connects >= 2, 10, "a second attempt")
            assert not feed.connected.is_set()
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)   # the feed ends when cancelled
            await client.close()
    with caplog.at_level("WARNING", logger="venue.feed"):
        run(scenario())
    assert "code=20001" in caplog.text and "event=feed.disconnected" in caplog.text
