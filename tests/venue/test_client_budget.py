"""VenueClient with the request budget, against the simulator and a real Redis.

Every REST call the client makes is counted in the budget with its priority (checked against what
the simulator counted), a hedge's send asks the budget once and signing not at all, a quote that
has to wait says `event=maker.paced`, and the venue's 429s - on reads and on sends, from its own
rolling minute and from the fault plan - are waited out and retried until they stop: the order is
taken once, with the nonce it was signed with, and the caller sees no error.
"""
from __future__ import annotations

import asyncio
import logging
from collections import Counter
from decimal import Decimal

import lighter
import pytest

from hedge.budget import Priority, RateLimit, rate_limit_for_tier
from tests.conftest import new_budget
from venue import errors
from venue.client import VenueClient
from venue.sim.harness import start_sim, wait_until

from .conftest import A, ACCOUNT_A, ACCOUNT_B, ETH, SIM_CONFIG, admin, best_prices, run

pytestmark = pytest.mark.timeout(120)
H, Q, R = Priority.HEDGE, Priority.QUOTE, Priority.READ


async def client_for(sim, private_keys, budget, account=ACCOUNT_A, **kw) -> VenueClient:
    return await VenueClient.open(sim.base_url, account, private_keys[account.account_index], send_timeout_s=5.0,
                                  budget=budget, process="maker" if account is ACCOUNT_A else "worker", **kw)


def orders_log(sim, cio: int) -> list[dict]:
    return [e for e in sim.admin(f"/admin/orders_log?account_index={A}")["orders_log"]
            if e["client_order_index"] == cio]


def sim_requests(sim) -> Counter:
    """What the venue counted, by endpoint, over every account and IP."""
    counts: Counter = Counter()
    for per_endpoint in sim.admin("/admin/stats")["requests"].values():
        for endpoint, c in per_endpoint.items():
            counts[endpoint] += c.get("requests", 0) + c.get("http_429", 0)
    return counts


def test_every_rest_call_is_counted_with_its_priority(sim, private_keys, r):
    budget = new_budget(r, RateLimit("custom", 1_000, False, 250))
    best_bid, best_ask = best_prices(sim)
    before = sim_requests(sim)

    async def scenario():
        client = await client_for(sim, private_keys, budget)
        try:
            spec = await client.market_spec(ETH)
            await client.book_prices(ETH)
            assert (await client.place_limit(spec, 6001, False, Decimal("0.0100"), best_bid - 5, True)).accepted
            order = await client.order_by_client_index(6001)
            await client.active_orders(ETH)
            assert (await client.cancel(ETH, order.order_index)).accepted
            await client.inactive_orders(ETH)
            worst = spec.price_to_int(best_ask * Decimal("1.01"))
            assert (await client.place_market(spec, 6002, False, Decimal("0.0100"), worst)).accepted
            assert (await client.wait_order_final(6002, 5)).is_final
            await client.positions()
            await client.trades(ETH)
            await client.resync_nonce()
        finally:
            await client.close()

    run(scenario())
    entries = budget.window_entries()
    assert {e.process for e in entries} == {"maker"}
    ours = Counter(e.endpoint for e in entries)
    venue = sim_requests(sim) - before
    assert ours == venue, (ours, venue)           # not one request outside the budget
    by_priority = Counter((e.endpoint, e.priority) for e in entries)
    assert by_priority[("sendTx", Q)] == 2 and by_priority[("sendTx", H)] == 1
    assert by_priority[("nextNonce", Q)] == 1 and by_priority[("nextNonce", R)] == 1   # first use, resync
    assert {e.priority for e in entries if e.endpoint not in ("sendTx", "nextNonce")} == {R}


def test_a_hedge_is_counted_once_right_after_the_post_and_signing_asks_nothing(sim, private_keys, r):
    """With room in the window a hedge goes out first (the Redis round trip stays off the fill ->
    sendTx path) and takes its place right after; the sim's log proves it went out once."""
    budget = new_budget(r, RateLimit("custom", 1_000, False, 250))
    calls = []
    original = budget.try_acquire
    budget.try_acquire = lambda *a, **kw: calls.append(a[:2]) or original(*a, **kw)
    _, best_ask = best_prices(sim)

    async def scenario():
        client = await client_for(sim, private_keys, budget)
        try:
            spec = await client.market_spec(ETH)
            worst = spec.price_to_int(best_ask * Decimal("1.01"))
            assert (await client.place_market(spec, 6101, False, Decimal("0.0100"), worst)).accepted
            calls.clear()                                   # the nonce is known from here on
            used_before = budget.usage().used
            signed = await client.sign_market(spec, 6102, False, Decimal("0.0100"), worst)
            assert calls == []
            assert (await client.send_signed(signed)).accepted
            assert calls == [("sendTx", H)]
            assert budget.usage().used == used_before + 1   # the hedge is in the window
        finally:
            await client.close()

    run(scenario())


def test_a_quote_that_waits_logs_maker_paced_while_a_hedge_goes_at_once(sim, private_keys, r, caplog):
    # 3 requests per 1.5 s, 1 kept for hedges: quotes and reads share 2.
    budget = new_budget(r, RateLimit("custom", 3, False, 1, window_ms=1_500))
    best_bid, best_ask = best_prices(sim)

    async def scenario():
        client = await client_for(sim, private_keys, budget)
        try:
            spec = await client.market_spec(ETH)                      # READ: 1 of 2
            # nextNonce (QUOTE) takes the 2nd; the sendTx waits until market_spec's read left.
            outcome = await client.place_limit(spec, 6201, False, Decimal("0.0100"), best_bid - 5, True)
            assert outcome.accepted
            paced = budget.local.paced[Q]
            worst = spec.price_to_int(best_ask * Decimal("1.01"))
            assert (await client.place_market(spec, 6202, False, Decimal("0.0100"), worst)).accepted
            return paced, budget.local.paced[H]
        finally:
            await client.close()

    with caplog.at_level(logging.INFO, logger="venue.client"):
        quote_paced, hedge_paced = run(scenario())
    assert quote_paced == 1 and hedge_paced == 0
    [line] = [m for m in caplog.messages if "event=maker.paced" in m]
    wait_ms = int(line.split("wait_ms=")[1].split()[0])
    assert 1_000 <= wait_ms <= 2_000 and "endpoint=sendTx" in line


def test_429s_past_the_deadline_give_the_caller_the_usual_outcome_and_the_nonce_back(sim, private_keys, r, caplog):
    budget = new_budget(r, RateLimit("custom", 1_000, False, 250), first_backoff_ms=200, max_backoff_ms=400)
    _, best_ask = best_prices(sim)

    async def scenario():
        client = await client_for(sim, private_keys, budget, refused_deadline_s=1.0)
        try:
            spec = await client.market_spec(ETH)
            worst = spec.price_to_int(best_ask * Decimal("1.01"))
            assert (await client.place_market(spec, 6300, False, Decimal("0.0100"), worst)).accepted
            await admin(sim, "/admin/faults", {"rate_limit_rate": 1, "accounts": [A]})
            refused = await client.place_market(spec, 6301, False, Decimal("0.0100"), worst)
            await admin(sim, "/admin/faults", {})
            assert (refused.kind, refused.code) == (errors.RETRYABLE, errors.TOO_MANY_REQUESTS), refused.describe()
            assert (await client.place_market(spec, 6302, False, Decimal("0.0100"), worst)).accepted
        finally:
            await client.close()

    with caplog.at_level(logging.WARNING, logger="venue.client"):
        run(scenario())
    tries = orders_log(sim, 6301)
    assert len(tries) >= 3 and {(e["result"], e["code"]) for e in tries} == {("rejected", 23000)}
    assert len({e["nonce"] for e in tries}) == 1                     # the same signed tx each time
    [taken] = orders_log(sim, 6302)
    assert taken["result"] == "accepted" and taken["nonce"] == tries[0]["nonce"]   # the nonce came back
    assert budget.usage().by_process["maker"].http_429 == len(tries)
    assert "retrying=false" in caplog.text


def test_a_quote_cancelled_while_it_waits_for_the_budget_gives_its_nonce_back(sim, private_keys, r):
    # The maker's stop cancels a quote loop that is waiting its turn: its cancel-all of A must not
    # then be refused for the nonce the cancelled order took and never sent (21104).
    budget = new_budget(r, RateLimit("custom", 3, False, 1, window_ms=3_000))
    best_bid, _ = best_prices(sim)

    async def scenario():
        client = await client_for(sim, private_keys, budget)
        try:
            spec = await client.market_spec(ETH)                      # READ: 1 of 2
            waiting = asyncio.create_task(                             # nextNonce takes the 2nd; sendTx waits
                client.place_limit(spec, 6401, False, Decimal("0.0100"), best_bid - 5, True))
            await asyncio.to_thread(wait_until, lambda: client.api_key_index in client.signer.nonce_manager.nonce,
                                    10, "the order to take its nonce")
            await asyncio.sleep(0.2)                                   # it is now in the budget's wait
            assert not waiting.done()
            waiting.cancel()
            with pytest.raises(asyncio.CancelledError):
                await waiting
            return await client.cancel_all_now()                       # paced too, then taken
        finally:
            await client.close()

    outcome = run(scenario())
    assert outcome.accepted, outcome.describe()
    assert orders_log(sim, 6401) == []                                 # the cancelled order never went out
    refused = [e for e in sim.admin(f"/admin/orders_log?account_index={A}")["orders_log"] if e["code"] == 21104]
    assert refused == []


def test_a_read_refused_past_the_deadline_raises_what_it_always_raised(keys_file, private_keys, r, tmp_path):
    """Unauthenticated reads count per client IP (here 2 a minute): the third is refused until
    the deadline, then the caller gets the venue's 429 as before."""
    budget = new_budget(r, RateLimit("custom", 1_000, False, 250), first_backoff_ms=200, max_backoff_ms=400)
    with start_sim({**SIM_CONFIG, "ip_requests_per_minute": 2}, profile="standard", keys_file=keys_file,
                   log_path=str(tmp_path / "sim.log")) as sim:
        async def scenario():
            client = await client_for(sim, private_keys, budget, refused_deadline_s=1.0)
            try:
                await client.book_prices(ETH)
                await client.book_prices(ETH)
                with pytest.raises(lighter.ApiException) as refused:
                    await client.book_prices(ETH)
                return refused.value.status
            finally:
                await client.close()
        assert run(scenario()) == 429
        assert budget.usage().http_429 >= 3


def test_429s_on_reads_and_sends_are_waited_out_and_the_order_is_taken_once(keys_file, private_keys, r, tmp_path,
                                                                            caplog):
    """(c) Standard tier, the real SDK. Someone else spends A and B's rolling minute (B's reads,
    outside our budget), and the fault plan refuses A's sendTx with 429. A's read and A's order
    are refused, wait and retry; the venue makes room (the address goes premium) and the faults
    stop: the read answers, the order is taken once, with the nonce it was signed with."""
    budget = new_budget(r, rate_limit_for_tier("standard"), first_backoff_ms=300, max_backoff_ms=1_200)
    with start_sim(SIM_CONFIG, profile="standard", keys_file=keys_file, log_path=str(tmp_path / "sim.log")) as sim:
        best_bid, _ = best_prices(sim)
        sim.admin("/admin/faults", {"rate_limit_rate": 1, "accounts": [A]})

        def venue_429s(endpoint: str) -> int:
            stats = sim.admin("/admin/stats")["requests"].get(f"account:{A}", {})
            return stats.get(endpoint, {}).get("http_429", 0)

        def fault_429s() -> int:
            return sum(1 for e in orders_log(sim, 6401) if e["message"].startswith("fault rate_limit"))

        async def scenario():
            client = await client_for(sim, private_keys, budget)
            someone_else = await VenueClient.open(sim.base_url, ACCOUNT_B, private_keys[ACCOUNT_B.account_index])
            try:
                spec = await client.market_spec(ETH)           # counts per IP, not against the address
                for _ in range(61):                             # spend the address's minute
                    try:
                        await someone_else.active_orders(ETH)
                    except lighter.ApiException as exc:
                        assert exc.status == 429
                        break
                else:
                    pytest.fail("the venue never refused: no request limit?")
                both = asyncio.gather(
                    client.order_by_client_index(6401),
                    client.place_limit(spec, 6401, False, Decimal("0.0100"), best_bid - 5, True))
                # Refused by the venue's window, on the read and the send ...
                await asyncio.to_thread(wait_until, lambda: venue_429s("accountOrders") and venue_429s("sendTx"),
                                        20, "the venue refusing A's read and A's sendTx (429)")
                assert not both.done()
                await admin(sim, "/admin/tier", {"account_index": A, "tier": "premium"})   # room again
                # ... then by the fault plan, on the send only ...
                await asyncio.to_thread(wait_until, fault_429s, 20, "a sendTx refused by the fault plan")
                assert not both.done()
                await admin(sim, "/admin/faults", {})            # ... until the faults stop.
                return await asyncio.wait_for(both, 30)
            finally:
                await someone_else.close()
                await client.close()

        with caplog.at_level(logging.INFO, logger="venue.client"):
            found, outcome = run(scenario(), timeout_s=90)
        assert outcome.accepted, outcome.describe()
        assert found is None or found.client_order_index == 6401          # the read answered
        tries = orders_log(sim, 6401)
        assert [e["result"] for e in tries].count("accepted") == 1, tries
        assert {e["code"] for e in tries if e["result"] == "rejected"} == {23000} and len(tries) >= 3
        assert len({e["nonce"] for e in tries}) == 1          # the same signed tx, never resynced
        assert wait_until(lambda: [o["client_order_index"] for o in sim.request(
            "GET", f"/api/v1/accountOrders?client_order_indexes=6401&account_index={A}")[1]["orders"]] == [6401],
            5, "A's order on the book")
        usage = budget.usage()
        assert usage.by_process["maker"].http_429 >= 3 and usage.backoff_left_ms == 0   # reset by the success
        assert not [rec for rec in caplog.records if rec.levelno >= logging.ERROR]
        assert "event=venue.http_429 endpoint=accountOrders" in caplog.text
        assert "event=venue.http_429 endpoint=sendTx" in caplog.text
