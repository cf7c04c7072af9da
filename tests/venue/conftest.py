"""Fixtures for venue/ tests: a quiet simulator per test, a VenueClient (keys: tests/conftest.py).

The simulator runs as a subprocess (the SDK's Go signer blocks on HTTP); the SDK client is
created inside the test's own event loop (asyncio.run), as VenueClient requires.
"""
from __future__ import annotations

import asyncio
import json
import os
import time
from decimal import Decimal
from typing import Any, Awaitable, Callable

import pytest

from hedge.config import AccountConfig
from venue.client import VenueClient
from venue.sim.harness import SimProcess, start_sim

A, B, MASTER = 281001, 281002, 281000
KEY_A, KEY_B = 3, 4
ETH = 0
ACCOUNT_A = AccountConfig("account_a", A, KEY_A, "LH_TEST_VENUE_A_KEY")
ACCOUNT_B = AccountConfig("account_b", B, KEY_B, "LH_TEST_VENUE_B_KEY")
SIM_CONFIG = {"taker_flow": False, "random_walk": False, "accounts": [
    {"index": A, "master": MASTER, "collateral": "1000000", "api_key_indexes": [KEY_A]},
    {"index": B, "master": MASTER, "collateral": "1000000", "api_key_indexes": [KEY_B]}]}

os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


@pytest.fixture(scope="session")
def private_keys(keys_file) -> dict[int, str]:
    with open(keys_file) as fh:
        data = json.load(fh)
    return {int(account): entry["private_key"] for account, entry in data.items() if account.isdigit()}


@pytest.fixture
def sim(keys_file, tmp_path) -> SimProcess:
    """A fresh deterministic simulator (no random walk, no taker flow) for each test."""
    proc = start_sim(SIM_CONFIG, profile="instant", keys_file=keys_file, log_path=str(tmp_path / "sim.log"))
    try:
        yield proc
        assert proc.alive(), f"simulator died:\n{proc.log_tail()}"
        text = open(proc.log_path, errors="replace").read()
        assert "Traceback" not in text, proc.log_tail(80)
    finally:
        proc.stop()


def run(coro: Awaitable[Any], timeout_s: float = 30.0) -> Any:
    """Run one scenario in a fresh event loop, bounded."""
    async def bounded():
        return await asyncio.wait_for(coro, timeout_s)
    return asyncio.run(bounded())


async def open_client(sim: SimProcess, private_keys: dict[int, str], account: AccountConfig = ACCOUNT_A,
                      send_timeout_s: float = 5.0) -> VenueClient:
    return await VenueClient.open(sim.base_url, account, private_keys[account.account_index],
                                  send_timeout_s=send_timeout_s)


async def admin(sim: SimProcess, path: str, payload: dict | None = None) -> dict:
    """The simulator's admin API without blocking the test's event loop."""
    return await asyncio.to_thread(sim.admin, path, payload)


async def eventually(predicate: Callable[[], Any], timeout_s: float, what: str, poll_s: float = 0.01) -> Any:
    """Await a condition with a deadline; fail saying what did not happen."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        await asyncio.sleep(poll_s)


def sim_trade_ids(sim: SimProcess, account: int = A) -> list[int]:
    return [t["trade_id"] for t in sim.admin(f"/admin/trades?account_index={account}")["trades"]]


def best_prices(sim: SimProcess, market: int = ETH) -> tuple[Decimal, Decimal]:
    status, body = sim.request("GET", f"/api/v1/orderBookOrders?market_id={market}&limit=50")
    assert status == 200, body
    return Decimal(body["bids"][0]["price"]), Decimal(body["asks"][0]["price"])
