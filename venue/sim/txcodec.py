"""Parse a signed tx's `tx_info` JSON (PascalCase keys, as the Go signer emits) into typed txs.

Signatures are opaque: `Sig` is neither required nor verified. Any structural problem
raises `TxRejected(21501, "invalid tx info: <what>")`.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

TX_CREATE_ORDER = 14
TX_CANCEL_ORDER = 15
TX_CANCEL_ALL = 16
SUPPORTED_TX_TYPES = {TX_CREATE_ORDER: "CreateOrder", TX_CANCEL_ORDER: "CancelOrder",
                      TX_CANCEL_ALL: "CancelAllOrders"}
KNOWN_UNSUPPORTED_TX_TYPES = {8: "ChangePubKey", 12: "Transfer", 13: "Withdraw",
                              17: "ModifyOrder", 20: "UpdateLeverage",
                              28: "CreateGroupedOrders", 29: "UpdateMargin"}

MAX_U48 = 2**48 - 1
MAX_I64 = 2**63 - 1


class TxRejected(Exception):
    """A tx the venue refuses (HTTP 400 with `{"code": code, "message": message}`)."""

    def __init__(self, code: int, message: str):
        super().__init__(f"{code} {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class CreateOrderTx:
    account_index: int
    api_key_index: int
    nonce: int
    expired_at_ms: int
    market_index: int
    client_order_index: int
    base_amount: int
    price: int
    is_ask: bool
    order_type: int          # 0 limit, 1 market
    time_in_force: int       # 0 IOC, 1 GTT, 2 post-only
    reduce_only: bool
    trigger_price: int
    order_expiry_ms: int
    self_trade_mode: int     # L2TxAttributes "6": 0 expire maker, 1 taker, 2/3 both
    self_trade_master: bool = False   # L2TxAttributes "7": 0 account equality, 1 master equality
    tx_type: int = TX_CREATE_ORDER


@dataclass(frozen=True)
class CancelOrderTx:
    account_index: int
    api_key_index: int
    nonce: int
    expired_at_ms: int
    market_index: int
    index: int               # client order index (< 2**48) or order index (>= 2**48)
    tx_type: int = TX_CANCEL_ORDER


@dataclass(frozen=True)
class CancelAllTx:
    account_index: int
    api_key_index: int
    nonce: int
    expired_at_ms: int
    time_in_force: int       # 0 immediate, 1 scheduled, 2 abort
    time_ms: int
    tx_type: int = TX_CANCEL_ALL


Tx = CreateOrderTx | CancelOrderTx | CancelAllTx


def _bad(what: str) -> TxRejected:
    return TxRejected(21501, f"invalid tx info: {what}")


def _get_int(info: dict, key: str, *, required: bool = True, default: int = 0,
             lo: int = -MAX_I64, hi: int = MAX_I64) -> int:
    if key not in info or info[key] is None:
        if required:
            raise _bad(f"missing field {key}")
        return default
    value = info[key]
    if isinstance(value, bool) or not isinstance(value, int):
        raise _bad(f"field {key} must be an integer, got {type(value).__name__} {value!r:.40}")
    if value < lo or value > hi:
        raise _bad(f"field {key}={value} out of range {lo}..{hi}")
    return value


def _get_flag(info: dict, key: str) -> bool:
    return _get_int(info, key, lo=0, hi=1) == 1


def _self_trade_mode(info: dict) -> tuple[int, bool]:
    """(behaviour, master equality) from L2TxAttributes "6" and "7" (lighter-go tx_attributes.go)."""
    attrs = info.get("L2TxAttributes")
    if attrs is None:
        return 0, False
    if not isinstance(attrs, dict):
        raise _bad(f"field L2TxAttributes must be an object or null, got {type(attrs).__name__}")
    mode = attrs.get("6", 0)
    if isinstance(mode, bool) or not isinstance(mode, int) or not 0 <= mode <= 3:
        raise _bad(f"L2TxAttributes[\"6\"] (self-trade behaviour) must be 0..3, got {mode!r:.40}")
    equality = attrs.get("7", 0)
    if isinstance(equality, bool) or not isinstance(equality, int) or not 0 <= equality <= 1:
        raise _bad(f"L2TxAttributes[\"7\"] (self-trade equality) must be 0..1, got {equality!r:.40}")
    if mode == 3 and equality == 1:
        raise _bad("self-trade behaviour 3 (reduce) is not allowed with master-account equality")
    return mode, equality == 1


def parse_tx_type(raw: Any) -> int:
    """The form's tx_type (text or int) -> a supported tx type, or TxRejected."""
    if isinstance(raw, bool):
        raise TxRejected(21501, f"invalid tx type: {raw!r}")
    try:
        tx_type = int(str(raw).strip())
    except ValueError:
        raise TxRejected(21501, f"invalid tx type: expected an integer, got {str(raw)[:40]!r}") from None
    if tx_type in SUPPORTED_TX_TYPES:
        return tx_type
    if tx_type in KNOWN_UNSUPPORTED_TX_TYPES:
        raise TxRejected(21501, f"unsupported tx type {tx_type} "
                                f"({KNOWN_UNSUPPORTED_TX_TYPES[tx_type]}) in the simulator; "
                                "supported: 14 CreateOrder, 15 CancelOrder, 16 CancelAllOrders")
    raise TxRejected(21501, f"unknown tx type {tx_type}; supported: 14 CreateOrder, "
                            "15 CancelOrder, 16 CancelAllOrders")


def load_tx_info(raw: Any) -> dict:
    """tx_info as sent (JSON text, or an already-decoded object) -> dict."""
    if isinstance(raw, dict):
        return raw
    if isinstance(raw, bytes):
        raw = raw.decode("utf-8", "replace")
    if not isinstance(raw, str):
        raise _bad(f"expected a JSON object, got {type(raw).__name__}")
    try:
        info = json.loads(raw)
    except ValueError as exc:
        raise _bad(f"not valid JSON ({exc.msg} at char {exc.pos})") from None
    if not isinstance(info, dict):
        raise _bad(f"expected a JSON object, got {type(info).__name__}")
    return info


def parse_tx(tx_type: int, raw_info: Any) -> Tx:
    info = load_tx_info(raw_info)
    common = dict(
        account_index=_get_int(info, "AccountIndex", lo=0, hi=MAX_U48),
        api_key_index=_get_int(info, "ApiKeyIndex", lo=0, hi=255),
        nonce=_get_int(info, "Nonce", lo=0),
        expired_at_ms=_get_int(info, "ExpiredAt", required=False, lo=0),
    )
    if tx_type == TX_CREATE_ORDER:
        stp = _self_trade_mode(info)
        order_type = _get_int(info, "Type", lo=0, hi=6)
        if order_type not in (0, 1):
            raise _bad(f"order Type {order_type} is not supported by the simulator "
                       "(0 limit, 1 market)")
        tif = _get_int(info, "TimeInForce", lo=0, hi=2)
        if order_type == 1 and tif != 0:
            raise _bad(f"a market order (Type 1) must be immediate-or-cancel (TimeInForce 0), "
                       f"got TimeInForce {tif}")
        return CreateOrderTx(
            **common,
            market_index=_get_int(info, "MarketIndex", lo=0, hi=65535),
            client_order_index=_get_int(info, "ClientOrderIndex", lo=0, hi=MAX_U48),
            base_amount=_get_int(info, "BaseAmount"),
            price=_get_int(info, "Price"),
            is_ask=_get_flag(info, "IsAsk"),
            order_type=order_type,
            time_in_force=tif,
            reduce_only=_get_flag(info, "ReduceOnly"),
            trigger_price=_get_int(info, "TriggerPrice", required=False),
            order_expiry_ms=_get_int(info, "OrderExpiry", required=False, lo=-1),
            self_trade_mode=stp[0],
            self_trade_master=stp[1],
        )
    if tx_type == TX_CANCEL_ORDER:
        _self_trade_mode(info)
        return CancelOrderTx(**common,
                             market_index=_get_int(info, "MarketIndex", lo=0, hi=65535),
                             index=_get_int(info, "Index", lo=0, hi=2**60))
    if tx_type == TX_CANCEL_ALL:
        return CancelAllTx(**common,
                           time_in_force=_get_int(info, "TimeInForce", lo=0, hi=2),
                           time_ms=_get_int(info, "Time", required=False, lo=0))
    raise parse_tx_type(tx_type)  # always raises for unsupported types


def peek_account_index(raw_info: Any) -> int | None:
    """Best-effort AccountIndex of a possibly malformed tx_info (for fault filtering/logging)."""
    try:
        value = load_tx_info(raw_info).get("AccountIndex")
    except TxRejected:
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) else None
