"""Simulator responses validate against Lighter's official OpenAPI (Swagger 2.0) definitions
and parse with lighter-sdk 1.1.8's models."""
from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import lighter
import pytest

from .conftest import ACCOUNT_A, next_nonce, order_tx, send_tx

pytestmark = pytest.mark.timeout(60)
SPEC_PATH = Path("/work/shared/lighter-openapi.json")


@pytest.fixture(scope="module")
def spec() -> dict:
    if not SPEC_PATH.exists():
        pytest.skip(f"{SPEC_PATH} not present")
    return json.loads(SPEC_PATH.read_text())


def _validate(spec: dict, definition: str, body: dict) -> None:
    # Swagger 2.0 definitions are JSON Schema draft-4 compatible; $refs point at #/definitions/...
    schema = {"$ref": f"#/definitions/{definition}", "definitions": spec["definitions"]}
    jsonschema.validate(body, schema, cls=jsonschema.Draft4Validator)


@pytest.fixture(scope="module")
def traded(sim):
    """A few orders and trades of account A so every list is non-empty."""
    status, body = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=501, price=250000))
    assert status == 200
    sim.admin("/admin/fill", {"account_index": ACCOUNT_A, "market_id": 0,
                              "client_order_index": 501, "sizes": ["0.0050"]})
    status, _ = send_tx(sim, 14, order_tx(next_nonce(sim), client_index=502, base=60,
                                          price=400000, order_type=1, tif=0))
    assert status == 200
    return body


CASES = [
    ("NextNonce", "/api/v1/nextNonce?account_index=281001&api_key_index=3", "NextNonce"),
    ("OrderBookOrders", "/api/v1/orderBookOrders?market_id=0&limit=5", "OrderBookOrders"),
    ("Orders", "/api/v1/accountActiveOrders?account_index=281001&market_id=0", "Orders"),
    ("Orders", "/api/v1/accountInactiveOrders?account_index=281001&limit=10", "Orders"),
    ("Orders", "/api/v1/accountOrders?client_order_indexes=501,502", "Orders"),
    ("Trades", "/api/v1/trades?sort_by=trade_id&limit=10&account_index=281001", "Trades"),
    ("Trades", "/api/v1/recentTrades?market_id=0&limit=10", "Trades"),
    ("DetailedAccounts", "/api/v1/account?by=index&value=281001", "DetailedAccounts"),
    ("OrderBooks", "/api/v1/orderBooks", "OrderBooks"),
    ("OrderBookDetails", "/api/v1/orderBookDetails", "OrderBookDetails"),
    ("AccountApiKeys", "/api/v1/apikeys?account_index=281001", "AccountApiKeys"),
]


@pytest.mark.parametrize("definition, path, model", CASES, ids=[c[1].split("?")[0] + c[0] for c in CASES])
def test_get_responses_match_spec_and_sdk_models(sim, spec, traded, definition, path, model):
    status, body = sim.request("GET", path)
    assert status == 200, body
    _validate(spec, definition, body)
    parsed = getattr(lighter, model).from_dict(body)
    assert parsed.code == 200
    # Strict pydantic validation (what older SDKs did) must also pass.
    getattr(lighter, model).model_validate(body)


def test_non_empty_lists_were_validated(sim, traded):
    assert sim.request("GET", "/api/v1/trades?sort_by=trade_id&limit=10&account_index=281001")[1]["trades"]
    assert sim.request("GET", "/api/v1/accountOrders?client_order_indexes=501,502")[1]["orders"]


def test_send_tx_and_errors_match_spec(sim, spec, traded):
    _validate(spec, "RespSendTx", traded)
    lighter.RespSendTx.model_validate(traded)
    status, body = send_tx(sim, 14, order_tx(next_nonce(sim), BaseAmount=0))
    assert status == 400
    _validate(spec, "ResultCode", body)


def test_ws_trade_frames_match_spec_trade(sim, spec, traded):
    trades = sim.admin(f"/admin/trades?account_index={ACCOUNT_A}")["trades"]
    for trade in trades:
        _validate(spec, "Trade", trade)
