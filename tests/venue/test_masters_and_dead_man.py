"""VenueClient against the simulator: reading an account's master (live mode's same-master check),
the scheduled cancel-all of the dead-man's switch, and the finite expiry of A's limit orders."""
from __future__ import annotations

import time
from decimal import Decimal

import pytest

from hedge.accounts import same_master_problem
from tests.venue.conftest import A, ACCOUNT_A, B, ETH, KEY_A, KEY_B, best_prices, eventually, open_client, run
from venue import errors
from venue.sim.harness import start_sim

OTHER_MASTER = 999000


@pytest.fixture
def sim_two_masters(keys_file, tmp_path):
    proc = start_sim({"taker_flow": False, "random_walk": False, "accounts": [
        {"index": A, "master": 281000, "collateral": "1000000", "api_key_indexes": [KEY_A]},
        {"index": B, "master": OTHER_MASTER, "collateral": "1000000", "api_key_indexes": [KEY_B]}]},
        profile="instant", keys_file=keys_file, log_path=str(tmp_path / "sim.log"))
    try:
        yield proc
    finally:
        proc.stop()


def test_accounts_under_different_masters_are_told_apart(sim_two_masters, private_keys):
    async def scenario():
        client = await open_client(sim_two_masters, private_keys)
        try:
            return await client.account_identity(A), await client.account_identity(B)
        finally:
            await client.close()
    a, b = run(scenario())
    assert (a.account_index, a.master_account_index) == (A, 281000)
    assert (b.account_index, b.master_account_index) == (B, OTHER_MASTER)
    problem = same_master_problem(a, b)
    assert problem and "281000" in problem and str(OTHER_MASTER) in problem


def test_accounts_under_one_master_pass(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys)
        try:
            return same_master_problem(await client.account_identity(A), await client.account_identity(B))
        finally:
            await client.close()
    assert run(scenario()) is None


def _a_orders(sim) -> list[dict]:
    return sim.admin(f"/admin/orders?account_index={A}&market_id={ETH}")["orders"]


def _armed_ms(sim) -> int:
    return sim.admin("/admin/state")["accounts"][str(A)]["cancel_all_at_ms"]


def test_a_limit_order_expires_order_expiry_s_after_signing_not_in_28_days(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys, ACCOUNT_A)
        client.order_expiry_s = 400
        try:
            spec = await client.market_spec(ETH)
            bid, _ = best_prices(sim)
            signed_at_ms = int(time.time() * 1000)
            placed = await client.place_limit(spec, 12, False, Decimal("0.0500"), bid - 5, post_only=True)
            assert placed.accepted, placed.describe()
            orders = await eventually(lambda: _a_orders(sim), 5, "A's order to rest")
            return signed_at_ms, int(orders[0]["order_expiry"])
        finally:
            await client.close()
    signed_at_ms, expiry_ms = run(scenario())
    assert signed_at_ms + 400_000 <= expiry_ms <= signed_at_ms + 400_000 + 2_000


def test_scheduled_cancel_all_cancels_at_its_time_and_abort_disarms(sim, private_keys):
    async def scenario():
        client = await open_client(sim, private_keys, ACCOUNT_A)
        try:
            spec = await client.market_spec(ETH)
            bid, _ = best_prices(sim)
            placed = await client.place_limit(spec, 11, False, Decimal("0.0500"), bid - 5, post_only=True)
            assert placed.accepted, placed.describe()
            await eventually(lambda: _a_orders(sim), 5, "A's order to rest")

            # Armed, then aborted: nothing happens at the old time.
            at_ms = int(time.time() * 1000) + 800
            assert (await client.schedule_cancel_all(at_ms)).accepted
            await eventually(lambda: _armed_ms(sim) == at_ms, 5, "the cancel-all to be armed")
            assert (await client.abort_cancel_all()).accepted
            await eventually(lambda: _armed_ms(sim) == 0, 5, "the cancel-all to be disarmed")
            await eventually(lambda: time.time() * 1000 > at_ms + 300, 5, "the old deadline to pass")
            assert len(_a_orders(sim)) == 1

            # Armed and left alone: the venue cancels the order at that time, not before.
            at_ms = int(time.time() * 1000) + 800
            assert (await client.schedule_cancel_all(at_ms)).accepted
            await eventually(lambda: not _a_orders(sim), 5, "the scheduled cancel-all to cancel A's order")
            assert time.time() * 1000 >= at_ms

            # A time in the past is a definite reject (21122) with the venue's words.
            refused = await client.schedule_cancel_all(int(time.time() * 1000) - 1000)
            assert refused.kind == errors.REJECTED and refused.code == 21122, refused.describe()
            assert "cancel all time" in refused.describe()
        finally:
            await client.close()
    run(scenario())
