"""Shared helpers for the simulator tests: bounded waits, tx builders, a sim with real keys."""
from __future__ import annotations

import json
import os
import time
from typing import Any, Callable

import pytest

from venue.sim.config import parse_sim_config
from venue.sim.engine import Engine
from venue.sim.harness import SimProcess, start_sim, wait_until

# The shared `sim` fixture runs the `instant` profile (no request limits, no speed bumps): these
# tests exercise the protocol and the matching. Tests of the tiers start their own simulator.
SIM_PROFILE = "instant"

ACCOUNT_A, KEY_A = 281001, 3
ACCOUNT_B, KEY_B = 281002, 4

# The loopback simulator must never be reached through a proxy.
os.environ.setdefault("NO_PROXY", "127.0.0.1,localhost")
os.environ.setdefault("no_proxy", "127.0.0.1,localhost")


def order_tx(nonce: int, *, account: int = ACCOUNT_A, key: int = KEY_A, market: int = 0,
             client_index: int = 0, base: int = 100, price: int = 300000, is_ask: bool = False,
             order_type: int = 0, tif: int = 1, reduce_only: bool = False,
             stp_mode: int | None = None, **overrides: Any) -> dict:
    """A CreateOrder tx_info dict shaped like the Go signer's output."""
    info = {"AccountIndex": account, "ApiKeyIndex": key, "MarketIndex": market,
            "ClientOrderIndex": client_index, "BaseAmount": base, "Price": price,
            "IsAsk": int(is_ask), "Type": order_type, "TimeInForce": tif,
            "ReduceOnly": int(reduce_only), "TriggerPrice": 0,
            "OrderExpiry": 0 if tif == 0 else -1, "ExpiredAt": 0, "Nonce": nonce, "Sig": "c2ln",
            "L2TxAttributes": None if stp_mode is None else {"6": stp_mode, "7": 1}}
    info.update(overrides)
    return info


def cancel_tx(nonce: int, index: int, *, account: int = ACCOUNT_A, key: int = KEY_A,
              market: int = 0) -> dict:
    return {"AccountIndex": account, "ApiKeyIndex": key, "MarketIndex": market, "Index": index,
            "ExpiredAt": 0, "Nonce": nonce, "Sig": "c2ln", "L2TxAttributes": None}


def cancel_all_tx(nonce: int, *, account: int = ACCOUNT_A, key: int = KEY_A) -> dict:
    return {"AccountIndex": account, "ApiKeyIndex": key, "TimeInForce": 0, "Time": 0,
            "ExpiredAt": 0, "Nonce": nonce, "Sig": "c2ln", "L2TxAttributes": None}


class Trader:
    """Sends txs for one (account, key) to an engine, tracking the nonce like the SDK."""

    def __init__(self, engine: Engine, account: int = ACCOUNT_A, key: int = KEY_A):
        self.engine, self.account, self.key, self.nonce = engine, account, key, 0
        self.now_ms = 1_000

    def send(self, tx_type: int, info: dict):
        outcome = self.engine.submit(tx_type, json.dumps(info), self.now_ms)
        self.nonce += 1
        return outcome

    def order(self, **kw: Any):
        return self.send(14, order_tx(self.nonce, account=self.account, key=self.key, **kw))

    def cancel(self, index: int, market: int = 0):
        return self.send(15, cancel_tx(self.nonce, index, account=self.account, key=self.key,
                                       market=market))

    def cancel_all(self):
        return self.send(16, cancel_all_tx(self.nonce, account=self.account, key=self.key))


def quiet_engine(**overrides: Any) -> Engine:
    """An engine with one book quoted once and no random walk / taker flow."""
    raw = {"random_walk": False, "taker_flow": False, "levels": 3,
           "level_size_min_lots": 4, "level_size_max_lots": 4}
    raw.update(overrides)
    engine = Engine(parse_sim_config(raw), seed=11)
    engine.tick(1_000)
    return engine


def empty_engine(**overrides: Any) -> Engine:
    """An engine whose books hold no synthetic liquidity (no tick ever ran)."""
    raw = {"random_walk": False, "taker_flow": False}
    raw.update(overrides)
    return Engine(parse_sim_config(raw), seed=11)


@pytest.fixture(scope="session")
def api_keys() -> dict[int, tuple[str, str]]:
    """Real key pairs from the SDK's signer: {account: (private, public)}."""
    import lighter
    keys = {}
    for account in (ACCOUNT_A, ACCOUNT_B):
        private, public, err = lighter.create_api_key()
        assert err is None, err
        keys[account] = (private, public)
    return keys


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory, api_keys) -> str:
    path = tmp_path_factory.mktemp("keys") / "paper-keys.json"
    path.write_text(json.dumps({
        str(ACCOUNT_A): {"api_key_index": KEY_A, "public_key": api_keys[ACCOUNT_A][1],
                         "private_key": api_keys[ACCOUNT_A][0]},
        str(ACCOUNT_B): {"api_key_index": KEY_B, "public_key": api_keys[ACCOUNT_B][1],
                         "private_key": api_keys[ACCOUNT_B][0]},
    }))
    path.chmod(0o600)
    return str(path)


@pytest.fixture(scope="module")
def sim(keys_file) -> SimProcess:
    """A quiet simulator subprocess (no random walk / taker flow) with the test keys."""
    with start_sim({"tick_ms": 50, "random_walk": False, "taker_flow": False}, profile=SIM_PROFILE,
                   seed=5, keys_file=keys_file) as proc:
        yield proc
        assert proc.alive(), f"simulator died:\n{proc.log_tail()}"
        assert_clean_log(proc)


def assert_clean_log(proc: SimProcess) -> None:
    """No handler ever failed: no traceback, no 500 in the simulator's log."""
    text = open(proc.log_path, errors="replace").read()
    assert "Traceback" not in text and "status=500" not in text, proc.log_tail(80)


def post_form(sim: SimProcess, path: str, fields: dict, timeout_s: float = 10.0) -> tuple[int, Any]:
    """POSTs an urlencoded form like the SDK does; returns (status, parsed JSON body)."""
    import urllib.error
    import urllib.parse
    import urllib.request
    data = urllib.parse.urlencode(fields).encode()
    req = urllib.request.Request(sim.base_url + path, data=data, method="POST",
                                 headers={"Content-Type": "application/x-www-form-urlencoded"})
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(req, timeout=timeout_s) as resp:
            status, text = resp.status, resp.read().decode()
    except urllib.error.HTTPError as err:
        status, text = err.code, err.read().decode()
        assert err.headers.get_content_type() == "application/json", text
    try:
        return status, json.loads(text)
    except ValueError:
        return status, text


def send_tx(sim: SimProcess, tx_type: Any, info: Any, timeout_s: float = 10.0) -> tuple[int, Any]:
    return post_form(sim, "/api/v1/sendTx",
                     {"tx_type": str(tx_type), "tx_info": info if isinstance(info, str) else json.dumps(info)},
                     timeout_s)


def next_nonce(sim: SimProcess, account: int = ACCOUNT_A, key: int = KEY_A) -> int:
    status, body = sim.request("GET", f"/api/v1/nextNonce?account_index={account}&api_key_index={key}")
    assert status == 200, body
    return body["nonce"]
