"""The unmodified lighter-sdk 1.1.8 against the simulator subprocess on loopback."""
from __future__ import annotations

import asyncio
import threading
from decimal import Decimal

import lighter
import pytest

from .conftest import ACCOUNT_A, KEY_A, wait_until

pytestmark = pytest.mark.timeout(60)


def _best_prices(sim) -> tuple[int, int]:
    _, book = sim.request("GET", "/api/v1/orderBookOrders?market_id=0&limit=1")
    return (int(book["bids"][0]["price"].replace(".", "")),
            int(book["asks"][0]["price"].replace(".", "")))


def _position(sim, account: int, market: int = 0) -> Decimal:
    return Decimal(sim.admin("/admin/state")["accounts"][str(account)]["markets"][str(market)]["position"])


def test_signer_client_round_trip(sim, api_keys):
    """check_client, limit/market/cancel/cancel-all and nonce recovery, all via the SDK."""
    async def scenario():
        client = lighter.SignerClient(sim.base_url, ACCOUNT_A, {KEY_A: api_keys[ACCOUNT_A][0]})
        try:
            assert client.check_client() is None
            token, err = client.create_auth_token_with_expiry(api_key_index=KEY_A)
            assert err is None
            order_api = lighter.OrderApi(client.api_client)
            best_bid, best_ask = _best_prices(sim)

            # A GTT bid well below the touch rests.
            rest_price = best_bid - 5000
            _, resp, err = await client.create_order(0, 101, 100, rest_price, False,
                                                     client.ORDER_TYPE_LIMIT,
                                                     client.ORDER_TIME_IN_FORCE_GOOD_TILL_TIME)
            assert err is None and resp.code == 200 and len(resp.tx_hash) == 80
            active = await order_api.account_active_orders(authorization=token,
                                                           account_index=ACCOUNT_A, market_id=0)
            [order] = [o for o in active.orders if o.client_order_index == 101]
            assert order.status == "open" and order.initial_base_amount == "0.0100"
            assert int(order.price.replace(".", "")) == rest_price and order.is_ask is False

            # A market buy walks the synthetic asks; the position grows by the filled size.
            before = _position(sim, ACCOUNT_A)
            _, resp, err = await client.create_market_order(0, 102, 500, best_ask + 3000, False)
            assert err is None and resp.code == 200
            assert _position(sim, ACCOUNT_A) - before == Decimal("0.0500")
            trades = sim.request("GET", f"/api/v1/trades?sort_by=trade_id&limit=10"
                                        f"&account_index={ACCOUNT_A}&market_id=0")[1]["trades"]
            mine = [t for t in trades if t["bid_client_id"] == 102]
            assert sum(Decimal(t["size"]) for t in mine) == Decimal("0.0500")
            assert all(t["bid_account_id"] == ACCOUNT_A and t["is_maker_ask"] for t in mine)

            # cancel_order by order index -> inactive with status canceled.
            _, resp, err = await client.cancel_order(0, order.order_index)
            assert err is None and resp.code == 200
            inactive = await order_api.account_inactive_orders(authorization=token,
                                                               account_index=ACCOUNT_A, limit=10)
            assert [o.status for o in inactive.orders if o.order_index == order.order_index] == ["canceled"]

            # cancel_all_orders(0, 0) leaves no active order.
            for cio in (103, 104):
                _, resp, err = await client.create_order(0, cio, 100, rest_price, False, 0, 1)
                assert err is None and resp.code == 200
            _, resp, err = await client.cancel_all_orders(0, 0)
            assert err is None and resp.code == 200
            active = await order_api.account_active_orders(authorization=token,
                                                           account_index=ACCOUNT_A, market_id=0)
            assert active.orders == []

            # An injected "invalid nonce" makes the SDK re-fetch; the next order succeeds.
            sim.admin("/admin/faults", {"invalid_nonce_rate": 1.0, "accounts": [ACCOUNT_A]})
            _, resp, err = await client.create_order(0, 105, 100, rest_price, False, 0, 1)
            assert resp is None and "invalid nonce" in err
            sim.admin("/admin/faults", {})
            _, resp, err = await client.create_order(0, 106, 100, rest_price, False, 0, 1)
            assert err is None and resp.code == 200
            log = sim.admin(f"/admin/orders_log?account_index={ACCOUNT_A}")["orders_log"]
            assert [e["result"] for e in log if e["client_order_index"] == 105] == ["rejected"]
            assert [e["final_status"] for e in log if e["client_order_index"] == 106] == ["open"]
            _, resp, err = await client.cancel_all_orders(0, 0)
            assert err is None
        finally:
            await client.close()

    asyncio.run(scenario())


def test_ws_client_receives_fill_of_admin_fill(sim, api_keys):
    """WsClient gets subscribed/account_all, then update/account_all with the trade."""
    messages: list[dict] = []
    client = lighter.WsClient(ws_url=sim.ws_url, account_ids=[ACCOUNT_A],
                              on_account_update=lambda account, msg: messages.append(msg))
    errors: list[BaseException] = []

    def run():
        try:
            client.run()
        except Exception as exc:  # noqa: BLE001 - the drop below ends run() abruptly
            errors.append(exc)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: any(m["type"] == "subscribed/account_all" for m in messages),
                   what="subscribed/account_all")

        async def place():
            signer = lighter.SignerClient(sim.base_url, ACCOUNT_A, {KEY_A: api_keys[ACCOUNT_A][0]})
            try:
                best_bid, _ = _best_prices(sim)
                _, resp, err = await signer.create_order(0, 201, 100, best_bid - 2000, False, 0, 1)
                assert err is None and resp.code == 200
            finally:
                await signer.close()

        asyncio.run(place())
        filled = sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                                           "client_order_index": 201, "sizes": ["0.0040", "0.0060"]})
        assert len(filled["trade_ids"]) == 2
        updates = wait_until(
            lambda: [t for m in messages if m["type"] == "update/account_all"
                     for t in m["trades"].get("0", []) if t["trade_id"] in filled["trade_ids"]]
            if len([1 for m in messages if m["type"] == "update/account_all" and m["trades"]]) >= 2 else None,
            what="two update/account_all trade frames")
        assert [t["size"] for t in updates] == ["0.0040", "0.0060"]
        for trade in updates:
            assert trade["bid_account_id"] == ACCOUNT_A and trade["bid_client_id"] == 201
            assert trade["is_maker_ask"] is False       # A's resting bid was the maker
        # Positions come in frames of their own, after the trades (as Lighter sends them).
        last = wait_until(lambda: [m for m in messages if m["type"] == "update/account_all" and m["positions"]],
                          what="a positions frame")[-1]
        assert last["channel"] == f"account_all:{ACCOUNT_A}"
        assert last["positions"]["0"]["sign"] in (1, -1)
    finally:
        sim.admin("/admin/ws/drop", {})
        thread.join(timeout=5)
    assert not thread.is_alive()


def test_ws_client_order_book_state_stays_consistent(sim):
    """The SDK merges our order_book diffs into a book whose best bid stays below best ask."""
    states: list[dict] = []
    client = lighter.WsClient(ws_url=sim.ws_url, order_book_ids=[0],
                              on_order_book_update=lambda market, state: states.append(
                                  {"bids": [dict(x) for x in state["bids"]],
                                   "asks": [dict(x) for x in state["asks"]]}))
    thread = threading.Thread(target=lambda: _run_quietly(client), daemon=True)
    thread.start()
    try:
        wait_until(lambda: len(states) >= 5, what="an order_book snapshot and 4 updates")
    finally:
        sim.admin("/admin/ws/drop", {})
        thread.join(timeout=5)
    final = states[4]
    best_bid = max(Decimal(level["price"]) for level in final["bids"])
    best_ask = min(Decimal(level["price"]) for level in final["asks"])
    assert best_bid < best_ask
    assert all(len(level["price"].split(".")[1]) == 2 for level in final["bids"] + final["asks"])
    assert all(float(level["size"]) > 0 for level in final["bids"] + final["asks"])


def _run_quietly(client) -> None:
    try:
        client.run()
    except Exception:  # noqa: BLE001 - ended by the admin drop
        pass
