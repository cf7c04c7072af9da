"""The paper exchange behaves like Lighter in production: tiers, request limits, speed bumps,
taken-not-executed, late execution, nonces, minimums, self-trade prevention, scheduled cancel-all.

Each test starts its own simulator and names its profile (venue.sim.harness.PROFILES): the
`standard` or `premium` tier as Lighter publishes it, with the fault plan the test sets (none
unless it says). Clients are the real lighter-sdk 1.1.8 where a client is involved.
"""
from __future__ import annotations

import asyncio
import contextlib
import json
import time
from decimal import Decimal

import lighter
import pytest

from venue.sim.harness import start_sim

from .conftest import ACCOUNT_A, ACCOUNT_B, KEY_A, KEY_B, assert_clean_log, wait_until

pytestmark = pytest.mark.timeout(120)

QUIET = {"tick_ms": 50, "random_walk": False, "taker_flow": False}
FAR_BID = 250000          # 2,500.00: rests well below the 3,000.00 book, never fills


@contextlib.contextmanager
def tier_sim(keys_file, profile: str, **overrides):
    with start_sim({**QUIET, **overrides}, profile=profile, seed=9, keys_file=keys_file) as proc:
        yield proc
        assert proc.alive(), proc.log_tail()
        assert_clean_log(proc)


class Clients:
    """A's and B's SDK signer clients (one event loop), with auth tokens and an OrderApi each."""

    def __init__(self, sim, api_keys):
        self.a = lighter.SignerClient(sim.base_url, ACCOUNT_A, {KEY_A: api_keys[ACCOUNT_A][0]})
        self.b = lighter.SignerClient(sim.base_url, ACCOUNT_B, {KEY_B: api_keys[ACCOUNT_B][0]})
        self.token_a, err_a = self.a.create_auth_token_with_expiry(api_key_index=KEY_A)
        self.token_b, err_b = self.b.create_auth_token_with_expiry(api_key_index=KEY_B)
        assert err_a is None and err_b is None
        self.orders_a = lighter.OrderApi(self.a.api_client)
        self.orders_b = lighter.OrderApi(self.b.api_client)

    async def close(self):
        await self.a.close()
        await self.b.close()


def run(sim, api_keys, scenario):
    async def main():
        clients = Clients(sim, api_keys)
        try:
            return await scenario(clients)
        finally:
            await clients.close()
    return asyncio.run(main())


def tx_status(sim, tx_hash: str) -> dict:
    status, body = sim.request("GET", f"/api/v1/tx?by=hash&value={tx_hash}")
    assert status == 200, body
    return body


def wait_tx(sim, account: int, tx_hash: str, fate: str, timeout_s: float = 10) -> dict:
    """Waits (on the admin API, which no request limit counts) until the tx is `fate`, then
    returns what GET /api/v1/tx says of it."""
    def fate_now():
        log = sim.admin(f"/admin/orders_log?account_index={account}")["orders_log"]
        return any(e["tx_hash"] == tx_hash and e["tx_status"] == fate for e in log)
    wait_until(fate_now, timeout_s, f"tx {tx_hash[:12]} {fate}")
    return tx_status(sim, tx_hash)


def stats(sim) -> dict:
    return sim.admin("/admin/stats")


def position(sim, account: int, market: int = 0) -> Decimal:
    return Decimal(sim.admin("/admin/state")["accounts"][str(account)]["markets"][str(market)]["position"])


def api_error(exc: lighter.ApiException) -> tuple[int, int]:
    return exc.status, json.loads(exc.body)["code"]


# ---- request limits ---------------------------------------------------------------------------

def test_standard_61st_request_of_the_l1_address_gets_429_and_a_and_b_share_the_budget(sim_keys):
    """Standard: 60 requests a rolling minute per L1 address. A makes 30 authenticated reads,
    B 29 and one sendTx: the 61st request, whoever makes it, is refused with code 23000."""
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        async def scenario(c: Clients):
            for _ in range(30):
                await c.orders_a.account_active_orders(account_index=ACCOUNT_A, market_id=0,
                                                       authorization=c.token_a)
            for _ in range(29):
                await c.orders_b.account_active_orders(account_index=ACCOUNT_B, market_id=0,
                                                       authorization=c.token_b)
            _, resp, err = await c.b.create_order(0, 7, 100, FAR_BID, False, 0, 1)   # the 60th
            assert err is None and resp.code == 200
            with pytest.raises(lighter.ApiException) as refused:
                await c.orders_a.account_active_orders(account_index=ACCOUNT_A, market_id=0,
                                                       authorization=c.token_a)
            assert api_error(refused.value) == (429, 23000)
            with pytest.raises(lighter.ApiException) as refused_tx:
                await c.b.create_order(0, 8, 100, FAR_BID, False, 0, 1)
            assert api_error(refused_tx.value) == (429, 23000)
        run(sim, api_keys, scenario)
        s = stats(sim)
        [bucket] = [v for k, v in s["rolling_minute"].items() if k.startswith("l1:")]
        assert bucket == dict(bucket, tier="standard", used=60, limit=60, unit="requests", http_429=2)
        assert s["requests"][f"account:{ACCOUNT_A}"]["accountActiveOrders"]["http_429"] == 1
        assert s["requests"][f"account:{ACCOUNT_B}"]["sendTx"] == {"requests": 1, "weight": 6, "http_429": 1}
        # The refused order was never taken: B has exactly one order, and no nonce was used for it.
        log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_B}")["orders_log"]
        assert [(e["result"], e["code"]) for e in log] == [("accepted", 200), ("rejected", 23000)]


def test_premium_trades_endpoint_stops_at_40_a_minute(sim_keys):
    """Premium: 24,000 weight a minute, and `trades` (weight 600) is capped at 24,000 / 600 = 40."""
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "premium") as sim:
        async def scenario(c: Clients):
            for _ in range(40):
                await c.orders_a.trades(sort_by="trade_id", limit=10, account_index=ACCOUNT_A,
                                        authorization=c.token_a)
            with pytest.raises(lighter.ApiException) as refused:
                await c.orders_a.trades(sort_by="trade_id", limit=10, account_index=ACCOUNT_A,
                                        authorization=c.token_a)
            assert api_error(refused.value) == (429, 23000)
            # Other endpoints still have budget: 40 x 600 = 24,000 weight is used, so a 300-weight
            # read is refused too, but only because the minute's weight is spent.
            with pytest.raises(lighter.ApiException):
                await c.orders_a.account_active_orders(account_index=ACCOUNT_A, market_id=0,
                                                       authorization=c.token_a)
        run(sim, api_keys, scenario)
        [bucket] = [v for k, v in stats(sim)["rolling_minute"].items() if k.startswith("l1:")]
        assert (bucket["tier"], bucket["used"], bucket["limit"], bucket["unit"]) == \
            ("premium", 24_000, 24_000, "weight")


def test_premium_weights_let_many_sendtx_through(sim_keys):
    """On Premium sendTx weighs 6: 100 orders in a minute are far inside 24,000."""
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "premium") as sim:
        async def scenario(c: Clients):
            for i in range(100):
                _, resp, err = await c.a.create_order(0, 1000 + i, 100, FAR_BID, False, 0, 1)
                assert err is None and resp.code == 200
        run(sim, api_keys, scenario)
        [bucket] = [v for k, v in stats(sim)["rolling_minute"].items() if k.startswith("l1:")]
        assert bucket["used"] == 600 and bucket["http_429"] == 0


def test_unauthenticated_reads_count_per_client_ip(sim_keys):
    keys_file, _ = sim_keys
    with tier_sim(keys_file, "premium", ip_requests_per_minute=5) as sim:
        codes = [sim.request("GET", "/api/v1/orderBooks")[0] for _ in range(6)]
        assert codes == [200] * 5 + [429]
        assert sim.request("GET", "/api/v1/orderBooks")[1]["code"] == 23000


def test_the_tier_switches_from_the_admin_api_for_the_whole_l1_address(sim_keys):
    keys_file, _ = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        assert sim.admin("/admin/tier", {"account_index": ACCOUNT_A, "tier": "premium"})["accounts"] == \
            [ACCOUNT_A, ACCOUNT_B]
        assert sim.admin("/admin/tier")["tiers"] == {str(ACCOUNT_A): "premium", str(ACCOUNT_B): "premium"}


# ---- taken is not executed --------------------------------------------------------------------

def test_a_taken_market_order_is_invisible_for_the_standard_taker_delay_then_filled(sim_keys):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        async def scenario(c: Clients):
            _, resp, err = await c.b.create_market_order(0, 31, 100, 310000, False)
            assert err is None and resp.code == 200
            return resp
        resp = run(sim, api_keys, scenario)
        pending = tx_status(sim, resp.tx_hash)
        # Answered at once, executed later: in no order list, no trade and no position yet.
        assert pending["status"] == 1 and pending["executed_at"] == 0
        assert resp.predicted_execution_time_ms == pending["queued_at"] + 300
        assert sim.request("GET", f"/api/v1/accountOrders?client_order_indexes=31&account_index={ACCOUNT_B}")[1]["orders"] == []
        assert sim.admin(f"/admin/trades?account_index={ACCOUNT_B}")["trades"] == []
        assert position(sim, ACCOUNT_B) == 0
        done = wait_tx(sim, ACCOUNT_B, resp.tx_hash, "executed")
        assert done["executed_at"] - done["queued_at"] >= 300
        assert position(sim, ACCOUNT_B) == Decimal("0.0100")
        [order] = sim.request("GET", f"/api/v1/accountOrders?client_order_indexes=31&account_index={ACCOUNT_B}")[1]["orders"]
        assert order["status"] == "filled"


def test_premium_maker_orders_execute_at_once_and_takers_after_200_ms(sim_keys):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "premium") as sim:
        async def scenario(c: Clients):
            _, maker, _ = await c.a.create_order(0, 41, 100, FAR_BID, False, 0, 1)
            _, taker, _ = await c.b.create_market_order(0, 42, 100, 310000, False)
            return maker, taker
        maker, taker = run(sim, api_keys, scenario)
        assert tx_status(sim, maker.tx_hash)["status"] == 2
        assert taker.predicted_execution_time_ms - tx_status(sim, taker.tx_hash)["queued_at"] == 200


# ---- nonces, late execution, tx by hash ------------------------------------------------------

def test_of_two_txs_with_one_nonce_only_one_is_ever_taken(sim_keys):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        async def scenario(c: Clients):
            nonce = sim.request("GET", f"/api/v1/nextNonce?account_index={ACCOUNT_B}&api_key_index={KEY_B}")[1]["nonce"]
            signed = [c.b.sign_create_order(0, cio, 100, 310000, False, 1, 0, order_expiry=0, nonce=nonce,
                                            api_key_index=KEY_B) for cio in (51, 52)]
            first = await c.b.send_tx(tx_type=signed[0][0], tx_info=signed[0][1])
            assert first.code == 200
            with pytest.raises(lighter.ApiException) as second:
                await c.b.send_tx(tx_type=signed[1][0], tx_info=signed[1][1])
            assert api_error(second.value) == (400, 21104)
            return first
        first = run(sim, api_keys, scenario)
        wait_tx(sim, ACCOUNT_B, first.tx_hash, "executed")
        log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_B}")["orders_log"]
        assert [(e["client_order_index"], e["tx_status"]) for e in log] == [(51, "executed"), (52, None)]
        assert position(sim, ACCOUNT_B) == Decimal("0.0100")


def test_next_nonce_shows_a_taken_tx_only_after_the_nonce_lag(sim_keys):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard", nonce_lag_ms=400) as sim:
        url = f"/api/v1/nextNonce?account_index={ACCOUNT_A}&api_key_index={KEY_A}"
        before = sim.request("GET", url)[1]["nonce"]

        async def scenario(c: Clients):
            _, resp, err = await c.a.create_order(0, 61, 100, FAR_BID, False, 0, 1)
            assert err is None
            return time.monotonic()
        sent_at = run(sim, api_keys, scenario)
        if time.monotonic() - sent_at < 0.3:      # only meaningful while inside the lag
            assert sim.request("GET", url)[1]["nonce"] == before
        wait_until(lambda: sim.request("GET", url)[1]["nonce"] == before + 1, 5, "nonce visible",
                   interval_s=0.1)


def test_a_late_tx_executes_after_the_api_answered_5xx(sim_keys):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        sim.admin("/admin/faults", {"http_5xx_after_rate": 1, "late_rate": 1, "late_min_ms": 1500,
                                    "late_max_ms": 1500, "accounts": [ACCOUNT_B]})

        async def scenario(c: Clients):
            with pytest.raises(lighter.ApiException) as answered:
                await c.b.create_market_order(0, 71, 100, 310000, False)
            return answered.value.status
        assert run(sim, api_keys, scenario) == 502
        [entry] = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_B}")["orders_log"]
        assert entry["tx_status"] == "pending" and entry["late"] is True
        assert position(sim, ACCOUNT_B) == 0
        executed = wait_tx(sim, ACCOUNT_B, entry["tx_hash"], "executed")
        assert executed["executed_at"] - executed["queued_at"] >= 1500
        assert position(sim, ACCOUNT_B) == Decimal("0.0100")
        assert stats(sim)["txs_total"] == {"taken": 1, "executed": 1, "failed": 0, "late": 1, "expired": 0}


def test_a_tx_that_would_execute_after_its_expired_at_fails_expired(sim_keys):
    keys_file, _ = sim_keys
    from .conftest import order_tx, send_tx
    with tier_sim(keys_file, "standard") as sim:
        sim.admin("/admin/faults", {"late_rate": 1, "late_min_ms": 1000, "late_max_ms": 1000})
        expired_at = int(time.time() * 1000) + 300
        status, body = send_tx(sim, 14, order_tx(0, base=100, price=FAR_BID, ExpiredAt=expired_at))
        assert status == 200, body
        failed = wait_tx(sim, ACCOUNT_A, body["tx_hash"], "failed")
        assert json.loads(failed["event_info"])["error"]["code"] == 21711
        assert stats(sim)["txs_total"]["expired"] == 1
        # Arriving after ExpiredAt: refused at once, nonce not consumed.
        status, body = send_tx(sim, 14, order_tx(1, base=100, price=FAR_BID, ExpiredAt=1000))
        assert (status, body["code"]) == (400, 21711)


def test_an_unknown_tx_hash_is_not_found(sim_keys):
    keys_file, _ = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        status, body = sim.request("GET", "/api/v1/tx?by=hash&value=00ff")
        assert (status, body["code"]) == (400, 21500)


# ---- order minimums, definite rejects ---------------------------------------------------------

def test_an_order_below_the_notional_minimum_is_refused_21706(sim_keys):
    """ETH min_base_amount 0.0050 and min_quote_amount 10 USDC: 0.0050 at 1,900.00 is 9.50 USDC."""
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "standard") as sim:
        async def scenario(c: Clients):
            _, resp, err = await c.a.create_order(0, 81, 50, 190000, False, 0, 1)
            assert resp is None and "21706" in err and "notional 9.500000 USDC (min 10" in err
            _, resp, err = await c.a.create_order(0, 82, 53, 190000, False, 0, 1)   # 10.07 USDC
            assert err is None and resp.code == 200
        run(sim, api_keys, scenario)


@pytest.mark.parametrize("code", [21507, 21508, 21111, 21112, 21605, 21717, 21718, 21719, 21720,
                                  21732, 21739])
def test_documented_definite_rejects_can_be_injected(sim_keys, code):
    keys_file, _ = sim_keys
    from .conftest import order_tx, send_tx
    with tier_sim(keys_file, "instant") as sim:
        sim.admin("/admin/faults", {"reject_rate": 1, "reject_code": code})
        status, body = send_tx(sim, 14, order_tx(0, base=100, price=FAR_BID))
        assert (status, body["code"]) == (400, code) and body["message"]
        # Not taken: the same nonce still works once the fault is off.
        sim.admin("/admin/faults", {})
        assert send_tx(sim, 14, order_tx(0, base=100, price=FAR_BID))[0] == 200


def test_an_inactive_market_refuses_orders_21605(sim_keys):
    keys_file, _ = sim_keys
    from .conftest import order_tx, send_tx
    with tier_sim(keys_file, "instant") as sim:
        sim.admin("/admin/market", {"market_id": 0, "active": False})
        status, body = send_tx(sim, 14, order_tx(0, base=100, price=FAR_BID))
        assert (status, body["code"]) == (400, 21605)
        assert sim.request("GET", "/api/v1/orderBooks?market_id=0")[1]["order_books"][0]["status"] == "inactive"


# ---- self-trade prevention, scheduled cancel-all (through the SDK's signer) --------------------

@pytest.mark.parametrize("equality, a_order_status, trades_between_a_and_b", [
    (lighter.SignerClient.SELF_TRADE_EQUALITY_ACCOUNT_INDEX, "filled", 1),
    (lighter.SignerClient.SELF_TRADE_EQUALITY_MASTER_ACCOUNT_INDEX, "canceled-self-trade", 0),
])
def test_self_trade_prevention_follows_the_equality_attribute(sim_keys, equality, a_order_status,
                                                              trades_between_a_and_b):
    keys_file, api_keys = sim_keys
    with tier_sim(keys_file, "instant") as sim:
        best_ask = int(sim.request("GET", "/api/v1/orderBookOrders?market_id=0&limit=1")[1]["asks"][0]["price"].replace(".", ""))

        async def scenario(c: Clients):
            _, resp, err = await c.a.create_order(0, 91, 100, best_ask - 1, True, 0, 1)   # A: best ask
            assert err is None
            tx_type, tx_info, _, err = c.b.sign_create_order(
                0, 92, 100, best_ask + 500, False, 1, 0, order_expiry=0,
                self_trade_behavior_mode=0, self_trade_equality_mode=equality,
                nonce=sim.request("GET", f"/api/v1/nextNonce?account_index={ACCOUNT_B}&api_key_index={KEY_B}")[1]["nonce"],
                api_key_index=KEY_B)
            assert err is None
            assert (await c.b.send_tx(tx_type=tx_type, tx_info=tx_info)).code == 200
        run(sim, api_keys, scenario)
        [a_order] = sim.request("GET", f"/api/v1/accountOrders?client_order_indexes=91&account_index={ACCOUNT_A}")[1]["orders"]
        assert a_order["status"] == a_order_status
        trades = sim.admin(f"/admin/trades?account_index={ACCOUNT_B}")["trades"]
        assert sum(1 for t in trades if {t["ask_account_id"], t["bid_account_id"]} == {ACCOUNT_A, ACCOUNT_B}) \
            == trades_between_a_and_b


def test_the_scheduled_cancel_all_fires_and_an_abort_disarms_it(sim_keys):
    keys_file, api_keys = sim_keys
    tif = lighter.SignerClient
    with tier_sim(keys_file, "premium") as sim:
        async def scenario(c: Clients):
            _, _, err = await c.a.create_order(0, 101, 100, FAR_BID, False, 0, 1)
            assert err is None
            _, resp, err = await c.a.cancel_all_orders(tif.CANCEL_ALL_TIF_SCHEDULED, int(time.time() * 1000) + 60_000)
            assert err is None and resp.code == 200
            _, resp, err = await c.a.cancel_all_orders(tif.CANCEL_ALL_TIF_ABORT, 0)    # disarm
            assert err is None
            _, resp, err = await c.a.cancel_all_orders(tif.CANCEL_ALL_TIF_SCHEDULED, int(time.time() * 1000) + 1_000)
            assert err is None    # re-armed, one second ahead
            _, resp, err = await c.a.cancel_all_orders(tif.CANCEL_ALL_TIF_SCHEDULED, int(time.time() * 1000) - 1)
            assert resp is None and "21122" in err          # a time in the past is refused
        run(sim, api_keys, scenario)
        armed = sim.admin("/admin/state")["accounts"][str(ACCOUNT_A)]["cancel_all_at_ms"]
        assert armed > 0
        wait_until(lambda: sim.admin("/admin/state")["accounts"][str(ACCOUNT_A)]["markets"]["0"]["active_orders"] == 0,
                   5, "the scheduled cancel-all fired")
        assert int(time.time() * 1000) >= armed
        [order] = sim.request("GET", f"/api/v1/accountOrders?client_order_indexes=101&account_index={ACCOUNT_A}")[1]["orders"]
        assert order["status"] == "canceled"
        assert sim.admin("/admin/state")["accounts"][str(ACCOUNT_A)]["cancel_all_at_ms"] == 0


@pytest.fixture(scope="module")
def sim_keys(keys_file, api_keys):
    return keys_file, api_keys


# ---- what the venue remembers, config --------------------------------------------------------

def test_order_lists_know_only_the_last_1000_inactive_orders_of_the_last_24_hours():
    from venue.sim.engine import INACTIVE_WINDOW_MS
    from .conftest import Trader, quiet_engine
    engine = quiet_engine()
    a = Trader(engine)
    for cio in range(1, 1006):                       # 1,005 orders, each cancelled at once
        a.order(client_index=cio, base=100, price=FAR_BID)
        a.cancel(cio)
    known = engine.inactive_orders(ACCOUNT_A, now_ms=a.now_ms)
    assert len(known) == 1000 and known[0].client_order_index == 1005
    found = engine.orders_by_client_index([1, 5, 6, 1005], ACCOUNT_A, now_ms=a.now_ms)
    assert sorted(o.client_order_index for o in found) == [6, 1005]      # 1..5 are forgotten
    assert engine.inactive_orders(ACCOUNT_A, now_ms=a.now_ms + INACTIVE_WINDOW_MS + 1) == []


def test_accounts_under_one_master_share_one_tier():
    from venue.sim.config import SimConfigError, parse_sim_config
    with pytest.raises(SimConfigError, match="tier belongs to the L1 address"):
        parse_sim_config({"accounts": [{"index": 5, "master": 4, "tier": "premium"},
                                       {"index": 6, "master": 4, "tier": "standard"}]})
    with pytest.raises(SimConfigError, match=r"sim.tier: expected one of \['instant', 'premium', 'standard'\]"):
        parse_sim_config({"tier": "gold"})
    assert parse_sim_config({}).tier == "standard" and parse_sim_config({}).nonce_lag_ms == 300
