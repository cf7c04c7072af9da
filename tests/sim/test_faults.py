"""Each injected fault, driven through /admin/faults, has the promised observable effect."""
from __future__ import annotations

import http.client
import json
import time
import urllib.error

import pytest

from venue.sim.harness import start_sim

from .conftest import ACCOUNT_A, ACCOUNT_B, KEY_B, assert_clean_log, next_nonce, order_tx, send_tx

pytestmark = pytest.mark.timeout(60)


@pytest.fixture(scope="module")
def fsim():
    with start_sim({"tick_ms": 50, "random_walk": False, "taker_flow": False}, profile="instant", seed=8) as proc:
        yield proc
        assert proc.alive(), proc.log_tail()
        assert_clean_log(proc)


@pytest.fixture(autouse=True)
def _clean(fsim):
    fsim.admin("/admin/faults", {})
    yield
    fsim.admin("/admin/faults", {})


_cio = iter(range(1000, 100000))


def _resting(fsim, account=ACCOUNT_A, key=3) -> dict:
    """A resting bid far below the touch, with a fresh client order index and the current nonce."""
    return order_tx(next_nonce(fsim, account, key), account=account, key=key,
                    client_index=next(_cio), price=250000)


def _orders(fsim, client_index: int) -> list[dict]:
    status, body = fsim.request("GET", f"/api/v1/accountOrders?client_order_indexes={client_index}")
    assert status == 200
    return body["orders"]


@pytest.mark.parametrize("fault, status, code, applied", [
    ("http_5xx_rate", 502, 502, False),
    ("http_5xx_after_rate", 502, 502, True),
    ("rate_limit_rate", 429, 23000, False),
    ("invalid_nonce_rate", 400, 21104, False),
])
def test_http_faults_status_body_and_whether_applied(fsim, fault, status, code, applied):
    fsim.admin("/admin/faults", {fault: 1.0})
    tx = _resting(fsim)
    got_status, body = send_tx(fsim, 14, tx)
    assert (got_status, body["code"]) == (status, code)
    if fault == "rate_limit_rate":
        assert body["message"] == "too many requests"
    if fault == "invalid_nonce_rate":
        assert body["message"] == "invalid nonce"
    assert bool(_orders(fsim, tx["ClientOrderIndex"])) is applied
    assert next_nonce(fsim) == tx["Nonce"] + (1 if applied else 0)


def test_slippage_fault_accepts_market_order_with_zero_fill(fsim):
    fsim.admin("/admin/faults", {"slippage_rate": 1.0})
    tx = order_tx(next_nonce(fsim), client_index=next(_cio), base=100, price=400000,
                  order_type=1, tif=0)
    status, body = send_tx(fsim, 14, tx)
    assert status == 200 and body["code"] == 200
    [order] = _orders(fsim, tx["ClientOrderIndex"])
    assert order["status"] == "canceled-too-much-slippage" and order["filled_base_amount"] == "0.0000"


def test_latency_is_added(fsim):
    fsim.admin("/admin/faults", {"latency_ms": 300})
    started = time.monotonic()
    status, _ = send_tx(fsim, 14, _resting(fsim))
    assert status == 200
    assert time.monotonic() - started >= 0.3


@pytest.mark.parametrize("mode, applied", [("before", True), ("after", True), ("never", False)])
def test_timeout_hangs_then_closes_without_response(fsim, mode, applied):
    fsim.admin("/admin/faults", {"timeout_rate": 1.0, "timeout_s": 0.3, "timeout_mode": mode})
    tx = _resting(fsim)
    started = time.monotonic()
    with pytest.raises((http.client.RemoteDisconnected, ConnectionError, urllib.error.URLError)):
        send_tx(fsim, 14, tx, timeout_s=10)
    assert time.monotonic() - started >= 0.3
    assert bool(_orders(fsim, tx["ClientOrderIndex"])) is applied
    assert fsim.request("GET", "/api/v1/orderBooks")[0] == 200   # server still fine


def test_faults_can_target_accounts(fsim):
    fsim.admin("/admin/faults", {"http_5xx_rate": 1.0, "accounts": [ACCOUNT_B]})
    assert send_tx(fsim, 14, _resting(fsim))[0] == 200
    assert send_tx(fsim, 14, _resting(fsim, ACCOUNT_B, KEY_B))[0] == 502


def test_same_seed_gives_same_fault_sequence(fsim):
    plan = {"seed": 77, "http_5xx_rate": 0.25, "rate_limit_rate": 0.25, "invalid_nonce_rate": 0.2}

    def run() -> list[int]:
        fsim.admin("/admin/faults", plan)
        return [send_tx(fsim, 14, _resting(fsim))[0] for _ in range(16)]

    first = run()
    assert len(set(first)) >= 3            # the plan really mixes outcomes
    assert run() == first


def test_bad_fault_settings_are_refused_with_the_field_named(fsim):
    status, body = fsim.request("POST", "/admin/faults", {"http_5xx_rate": 2})
    assert status == 400 and "faults.http_5xx_rate" in body["message"]
    status, body = fsim.request("POST", "/admin/faults", {"timeout_mode": "sometimes"})
    assert status == 400 and "timeout_mode" in body["message"]
