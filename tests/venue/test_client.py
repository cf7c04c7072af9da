"""VenueClient against the simulator: orders, reads, and how every fault maps to a SendOutcome.

The outcome kind is what the hedge task acts on: accepted, a definite reject (never retried),
retryable (definitely not applied), or in doubt (resolved by asking the venue for the
client_order_index, never by sending again blind).
"""
from __future__ import annotations

from decimal import Decimal

import pytest

from hedge.money import MarketSpec
from venue import errors
from venue.client import IN_DOUBT_TAKER, OrderView

from .conftest import A, B, ETH, admin, best_prices, open_client, run

pytestmark = pytest.mark.timeout(60)


def orders_log(sim, cio: int) -> list[dict]:
    return [e for e in sim.admin(f"/admin/orders_log?account_index={A}")["orders_log"]
            if e["client_order_index"] == cio]


def test_orders_reads_and_decimals(sim, private_keys):
    best_bid, best_ask = best_prices(sim)

    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            spec = await client.market_spec(ETH)
            assert spec == MarketSpec(market_index=0, symbol="ETH", size_decimals=4, price_decimals=2,
                                      min_base_amount=Decimal("0.0050"), min_quote_amount=Decimal("10.000000"))
            assert (await client.market_spec(1)).symbol == "BTC"
            with pytest.raises(LookupError, match="99"):
                await client.market_spec(99)

            bids, asks = await client.book_prices(ETH)
            assert bids == sorted(bids, reverse=True) and asks == sorted(asks)
            assert all(isinstance(p, Decimal) for p in bids + asks) and bids[0] < asks[0]
            assert (bids[0], asks[0]) == (best_bid, best_ask)

            # A resting post-only bid below the touch.
            price = best_bid - Decimal("5.00")
            outcome = await client.place_limit(spec, 1001, is_ask=False, base=Decimal("0.0500"),
                                               price=price, post_only=True)
            assert outcome.kind == errors.ACCEPTED and outcome.tx_hash
            [active] = await client.active_orders(ETH)
            assert isinstance(active, OrderView)
            assert (active.client_order_index, active.is_ask, active.status) == (1001, False, "open")
            assert active.initial_base == Decimal("0.0500") and active.price == price
            assert isinstance(active.filled_base, Decimal) and active.filled_base == 0
            assert not active.is_final and active.avg_price is None
            assert await client.order_by_client_index(1001) == active
            assert await client.order_by_client_index(999_999) is None
            # Our bid is on the book now.
            assert (await client.book_prices(ETH))[0][:1] == [best_bid]
            assert price in (await client.book_prices(ETH))[0]

            outcome = await client.cancel(ETH, active.order_index)
            assert outcome.accepted
            cancelled = await client.order_by_client_index(1001)
            assert cancelled.status == "canceled" and cancelled.is_final
            inactive = await client.inactive_orders(ETH)
            assert [o.order_index for o in inactive if o.client_order_index == 1001] == [cancelled.order_index]
            assert await client.active_orders(ETH) == []

            # A market buy inside a 1% worst price fills completely.
            worst = spec.price_to_int(best_ask * Decimal("1.01"))
            outcome = await client.place_market(spec, 1002, is_ask=False, base=Decimal("0.0100"),
                                                worst_price_int=worst)
            assert outcome.accepted
            done = await client.wait_order_final(1002, timeout_s=5)
            assert done.is_final and done.status == "filled"
            assert done.filled_base == Decimal("0.0100")
            assert isinstance(done.avg_price, Decimal) and best_ask <= done.avg_price <= best_ask * Decimal("1.01")

            positions = await client.positions()
            assert positions[ETH] == Decimal("0.0100") and all(isinstance(v, Decimal) for v in positions.values())
            assert await client.position(ETH) == Decimal("0.0100")
            assert (await client.positions(B)).get(ETH, Decimal(0)) == 0  # another account's, no key needed

            trades = await client.trades(ETH)
            assert trades and [int(t["trade_id"]) for t in trades] == sorted(int(t["trade_id"]) for t in trades)
            assert sum(Decimal(t["size"]) for t in trades if t["bid_client_id"] == 1002) == Decimal("0.0100")
            assert all(t["bid_account_id"] == A for t in trades)
            assert await client.trades(None) == trades

            # Reduce-only market sell closes it.
            floor = spec.price_to_int(best_bid * Decimal("0.99"))
            assert (await client.place_market(spec, 1003, True, Decimal("0.0100"), floor, reduce_only=True)).accepted
            await client.wait_order_final(1003, timeout_s=5)
            assert await client.position(ETH) == 0
        finally:
            await client.close()

    run(scenario())


@pytest.mark.parametrize("base, price_offset, market, code", [
    ("0.0010", "-5.00", ETH, 21706),   # below min_base_amount (0.0050)
    ("0.0100", "-5.00", 99, 21602),    # no such market
])
def test_definite_rejects_carry_the_venue_code_and_message(sim, private_keys, base, price_offset, market, code):
    best_bid, _ = best_prices(sim)

    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            spec = await client.market_spec(ETH)
            if market != ETH:
                spec = MarketSpec(market, "NOPE", 4, 2, Decimal("0.0050"))
            outcome = await client.place_limit(spec, 2001, False, Decimal(base),
                                               best_bid + Decimal(price_offset), post_only=True)
            assert outcome.kind == errors.REJECTED and outcome.code == code
            assert outcome.message and str(code) in outcome.describe()
            assert await client.order_by_client_index(2001) is None
            # A reject consumes no nonce on the venue: the next order goes through.
            good = await client.place_limit(await client.market_spec(ETH), 2002, False, Decimal("0.0100"),
                                            best_bid - Decimal("5.00"), post_only=True)
            assert good.accepted, good.describe()
        finally:
            await client.close()

    run(scenario())


@pytest.mark.parametrize("faults, kind, at_venue", [
    ({"http_5xx_rate": 1}, errors.IN_DOUBT, False),
    ({"http_5xx_after_rate": 1}, errors.IN_DOUBT, True),
    ({"rate_limit_rate": 1}, errors.RETRYABLE, False),
    ({"invalid_nonce_rate": 1}, errors.RETRYABLE, False),
    ({"timeout_rate": 1, "timeout_s": 1.5, "timeout_mode": "before"}, errors.IN_DOUBT, True),
    ({"timeout_rate": 1, "timeout_s": 1.5, "timeout_mode": "never"}, errors.IN_DOUBT, False),
], ids=["http_5xx", "http_5xx_after", "rate_limit", "invalid_nonce", "timeout_applied", "timeout_not_applied"])
def test_fault_maps_to_outcome_and_next_send_succeeds(sim, private_keys, faults, kind, at_venue):
    best_bid, _ = best_prices(sim)
    price = best_bid - Decimal("5.00")

    async def scenario():
        client = await open_client(sim, private_keys, send_timeout_s=0.5)
        try:
            spec = await client.market_spec(ETH)
            # One clean send first, so the signer's nonce is established before the fault.
            assert (await client.place_limit(spec, 3000, False, Decimal("0.0100"), price, True)).accepted
            await admin(sim, "/admin/faults", {**faults, "accounts": [A]})
            outcome = await client.place_limit(spec, 3001, False, Decimal("0.0100"), price, True)
            assert outcome.kind == kind, outcome.describe()
            if "timeout_rate" in faults:  # our own deadline fired, not the venue's connection close
                assert "TimeoutError" in outcome.message, outcome.describe()
            await admin(sim, "/admin/faults", {})
            # In doubt is resolved by asking the venue for the client_order_index.
            found = await client.order_by_client_index(3001)
            assert (found is not None) == at_venue, found
            if at_venue:
                assert found.status == "open" and found.initial_base == Decimal("0.0100")
            # An answer in doubt fences its nonce: the next send is signed with the same one, so the
            # venue takes at most one of the two. Where the first was taken, the fence is refused
            # "invalid nonce" - which proves it - and the send after it is accepted.
            fenced_nonce = client.signer.nonce_manager.nonce[client.api_key_index] + 1
            nxt = await client.place_limit(spec, 3002, False, Decimal("0.0100"), price, True)
            if kind == errors.IN_DOUBT and at_venue:
                assert nxt.code == errors.INVALID_NONCE, nxt.describe()
                assert client.nonce_use(fenced_nonce) == IN_DOUBT_TAKER
                nxt = await client.place_limit(spec, 3002, False, Decimal("0.0100"), price, True)
            elif kind == errors.IN_DOUBT:
                assert client.nonce_use(fenced_nonce) == "coi=3002"   # the fence took the lost tx's nonce
            assert nxt.accepted, nxt.describe()
            assert {o.client_order_index for o in await client.active_orders(ETH)} == \
                {3000, 3002} | ({3001} if at_venue else set())
        finally:
            await client.close()

    run(scenario())
    if not at_venue:
        assert all(e["result"] != "accepted" for e in orders_log(sim, 3001)), orders_log(sim, 3001)


def test_market_order_with_tight_worst_price_is_accepted_but_not_filled(sim, private_keys):
    """An IOC whose worst price is inside the book is accepted and ends with nothing filled."""
    _, best_ask = best_prices(sim)

    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            spec = await client.market_spec(ETH)
            worst = spec.price_to_int(best_ask - Decimal("1.00"))
            assert (await client.place_market(spec, 4001, False, Decimal("0.0100"), worst)).accepted
            done = await client.wait_order_final(4001, timeout_s=5)
            assert done.is_final and done.status.startswith("canceled") and done.filled_base == 0
            assert await client.position(ETH) == 0
        finally:
            await client.close()

    run(scenario())


# ---- market orders: signed here, POSTed on the kept-alive session (VenueClient.send_signed) ------

def with_market_buys(sim, private_keys, steps, **client_kwargs) -> None:
    """Run `await steps(client, spec, buy)`, where `await buy(coi[, base])` sends a market buy of A
    whose worst price crosses the book; one clean buy first establishes the signer's nonce."""
    _, best_ask = best_prices(sim)

    async def scenario():
        client = await open_client(sim, private_keys, **client_kwargs)
        try:
            spec = await client.market_spec(ETH)
            worst = spec.price_to_int(best_ask + Decimal("30.00"))

            async def buy(coi: int, base: str = "0.0100"):
                return await client.place_market(spec, coi, False, Decimal(base), worst)
            assert (await buy(5000)).accepted
            await steps(client, spec, buy)
        finally:
            await client.close()

    run(scenario())


@pytest.mark.parametrize("faults, kind", [
    ({"http_5xx_rate": 1}, errors.IN_DOUBT),
    ({"http_5xx_after_rate": 1}, errors.IN_DOUBT),
    ({"rate_limit_rate": 1}, errors.RETRYABLE),
    ({"invalid_nonce_rate": 1}, errors.RETRYABLE),
    ({"timeout_rate": 1, "timeout_s": 1.5, "timeout_mode": "never"}, errors.IN_DOUBT),
], ids=["http_5xx", "http_5xx_after", "rate_limit", "invalid_nonce", "timeout"])
def test_market_order_fault_maps_to_outcome_and_next_send_succeeds(sim, private_keys, faults, kind):
    async def steps(client, spec, buy):
        await admin(sim, "/admin/faults", {**faults, "accounts": [A]})
        outcome = await buy(5001)
        await admin(sim, "/admin/faults", {})
        assert outcome.kind == kind, outcome.describe()
        # In doubt: the next order is the fence (same nonce). It is refused "invalid nonce" only
        # where the first was taken (5xx after applying) - then the one after goes through.
        nxt = await buy(5002)
        if "http_5xx_after_rate" in faults:
            assert nxt.code == errors.INVALID_NONCE, nxt.describe()
            nxt = await buy(5003)
        assert nxt.accepted, nxt.describe()
    with_market_buys(sim, private_keys, steps, send_timeout_s=0.5)


def test_market_order_definite_reject_gives_the_nonce_back(sim, private_keys):
    async def steps(client, spec, buy):
        refused = await buy(5101, base="0.0010")  # below the minimum size
        assert refused.kind == errors.REJECTED and refused.code == 21706, refused.describe()
        assert "0.0050" in refused.message  # what the venue said
        nxt = await buy(5102)
        assert nxt.accepted and nxt.tx_hash, nxt.describe()
        assert [e["result"] for e in orders_log(sim, 5102)] == ["accepted"]
    with_market_buys(sim, private_keys, steps)


def test_a_discarded_signature_uses_no_nonce(sim, private_keys):
    """Signed but never sent (a hedge whose ledger moved): the next order goes through."""
    async def steps(client, spec, buy):
        unsent = await client.sign_market(spec, 5201, False, Decimal("0.0100"), 1)
        assert "tx_info" not in repr(unsent)  # the signed payload stays out of logs
        client.discard(unsent)
        assert (await buy(5202)).accepted
        assert orders_log(sim, 5201) == []
    with_market_buys(sim, private_keys, steps)
