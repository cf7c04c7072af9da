"""REST read paths clients rely on (backfill paging, inactive orders) and the admin/CLI surface."""
from __future__ import annotations

import json
import subprocess
import sys
from decimal import Decimal

import pytest

from venue.sim.harness import PROJECT_ROOT, SimStartError, start_sim

from .conftest import ACCOUNT_A, ACCOUNT_B, KEY_B, next_nonce, order_tx, send_tx, wait_until

pytestmark = pytest.mark.timeout(60)


def test_trades_backfill_paging_by_account_and_market(sim):
    status, _ = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=601, base=500, price=250000))
    assert status == 200
    fill = sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                     "client_order_index": 601,
                                     "sizes": ["0.0050", "0.0100", "0.0050", "0.0100", "0.0150"]})
    ids = fill["trade_ids"]
    assert ids == sorted(ids) and len(ids) == 5
    seen, cursor = [], None
    while True:
        path = (f"/api/v1/trades?sort_by=trade_id&sort_dir=asc&limit=2&account_index={ACCOUNT_A}"
                f"&market_id=0&from={ids[0]}" + (f"&cursor={cursor}" if cursor else ""))
        body = sim.request("GET", path)[1]
        seen += [t["trade_id"] for t in body["trades"]]
        cursor = body.get("next_cursor")
        if not cursor:
            break
    assert seen == ids
    desc = sim.request("GET", f"/api/v1/trades?sort_by=timestamp&limit=3&account_index={ACCOUNT_A}")[1]
    assert [t["trade_id"] for t in desc["trades"]] == ids[::-1][:3]
    other = sim.request("GET", f"/api/v1/trades?sort_by=trade_id&limit=100&account_index={ACCOUNT_B}")[1]
    assert not set(ids) & {t["trade_id"] for t in other["trades"]}
    [order] = sim.request("GET", "/api/v1/accountOrders?client_order_indexes=601")[1]["orders"]
    assert order["status"] == "open" and order["filled_base_amount"] == "0.0450"
    assert order["remaining_base_amount"] == "0.0050"
    status, body = sim.request("POST", "/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                                       "client_order_index": 601, "sizes": ["0.0060"]})
    assert status == 400 and "exceeds" in body["message"]
    sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                              "client_order_index": 601, "sizes": ["0.0050"]})
    [order] = sim.request("GET", "/api/v1/accountOrders?client_order_indexes=601")[1]["orders"]
    assert order["status"] == "filled" and order["remaining_base_amount"] == "0.0000"


def test_inactive_orders_newest_first_with_cursor(sim):
    for cio in (611, 612, 613):
        assert send_tx(sim, 14, order_tx(next_nonce(sim), client_index=cio, price=250000))[0] == 200
    for cio in (611, 612, 613):
        assert send_tx(sim, 15, {"AccountIndex": ACCOUNT_A, "ApiKeyIndex": 3, "MarketIndex": 0,
                                 "Index": cio, "Nonce": next_nonce(sim)})[0] == 200
    first = sim.request("GET", f"/api/v1/accountInactiveOrders?account_index={ACCOUNT_A}&limit=2")[1]
    assert [o["client_order_index"] for o in first["orders"]] == [613, 612]
    second = sim.request("GET", f"/api/v1/accountInactiveOrders?account_index={ACCOUNT_A}&limit=1"
                                f"&cursor={first['next_cursor']}")[1]
    assert [o["client_order_index"] for o in second["orders"]] == [611]


def test_orders_log_and_state(sim):
    log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_B}")["orders_log"]
    before = len(log)
    nonce = next_nonce(sim, ACCOUNT_B, KEY_B)
    send_tx(sim, 14, order_tx(nonce, account=ACCOUNT_B, key=KEY_B, client_index=621, price=250000))
    send_tx(sim, 14, order_tx(nonce + 1, account=ACCOUNT_B, key=KEY_B, client_index=622, BaseAmount=0))
    send_tx(sim, 16, {"AccountIndex": ACCOUNT_B, "ApiKeyIndex": KEY_B, "TimeInForce": 0, "Time": 0,
                      "Nonce": nonce + 1})
    log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_B}")["orders_log"][before:]
    assert [(e["tx_type"], e["result"], e["code"]) for e in log] == [
        (14, "accepted", 200), (14, "rejected", 21701), (16, "accepted", 200)]
    assert log[0]["final_status"] == "canceled" and log[0]["price"] == 250000
    assert all(e["account_index"] == ACCOUNT_B for e in log)
    state = sim.admin("/admin/state")
    for market in state["markets"].values():
        assert Decimal(market["position_sum"]) == 0


def test_admin_market_sets_mid_and_the_book_follows(sim):
    sim.admin("/admin/market", {"market_id": 1, "mid": "90000.0"})
    book = sim.request("GET", "/api/v1/orderBookOrders?market_id=1&limit=1")[1]
    assert Decimal(book["bids"][0]["price"]) < Decimal("90000.0") < Decimal(book["asks"][0]["price"])
    assert len(book["asks"][0]["price"].split(".")[1]) == 1


def test_register_key_makes_apikeys_answer():
    with start_sim({"tick_ms": 100}, profile="instant", seed=2) as sim:
        sim.admin("/admin/register_key", {"account_index": 281001, "api_key_index": 3,
                                          "public_key": "0xABCDEF"})
        keys = sim.request("GET", "/api/v1/apikeys?account_index=281001")[1]["api_keys"]
        assert keys[0]["public_key"] == "abcdef" and keys[0]["api_key_index"] == 3


def _run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "venue.sim", *args], cwd=PROJECT_ROOT,
                          capture_output=True, text=True, timeout=30)


def test_cli_refuses_non_loopback_host():
    result = _run_cli("--host", "0.0.0.0", "--port", "1")
    assert result.returncode == 2 and "loopback" in result.stderr


def test_cli_bad_config_names_the_field(tmp_path):
    config = tmp_path / "config.yaml"
    config.write_text("other: {x: 1}\nsim:\n  levels: lots\n")
    result = _run_cli("--port", "1", "--config", str(config))
    assert result.returncode == 2 and "sim.levels" in result.stderr
    with pytest.raises(SimStartError, match="sim.tick_ms"):
        start_sim({"tick_ms": -1}, profile="instant", timeout_s=10)


def test_keys_file_private_key_never_logged(tmp_path, keys_file):
    log_path = tmp_path / "sim.log"
    with start_sim({}, profile="instant", keys_file=keys_file, log_path=str(log_path)) as sim:
        sim.request("GET", "/api/v1/apikeys?account_index=281001")
        send_tx(sim, 14, order_tx(0, price=250000))
    text = log_path.read_text()
    secrets = json.loads(open(keys_file).read())
    assert "event=http" in text and "event=tx" in text
    for entry in secrets.values():
        assert entry["private_key"].removeprefix("0x")[:40] not in text


def test_delayed_fill_answers_first_and_fills_after(sim):
    """/admin/fill with delay_ms (benchmarks: the driver is idle while the fill is hedged)."""
    status, _ = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=621, base=500, price=250000))
    assert status == 200
    answer = sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0, "client_order_index": 621,
                                       "sizes": ["0.0050"], "delay_ms": 200})
    assert answer == {"trade_ids": [], "delay_ms": 200}
    def order() -> dict:
        orders = sim.request("GET", f"/api/v1/accountOrders?account_index={ACCOUNT_A}&client_order_indexes=621")[1]
        [found] = [o for o in orders["orders"] if o["client_order_index"] == 621]
        return found
    assert order()["filled_base_amount"] == "0.0000"  # not yet: 200 ms is far longer than this request

    def filled():
        return order()["filled_base_amount"] == "0.0050"
    wait_until(filled, 5.0, "the delayed fill")
    status, body = sim.request("POST", "/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                                       "client_order_index": 621, "sizes": ["0.0050"],
                                                       "delay_ms": -1})
    assert status == 400 and "delay_ms" in body["message"]
