"""A fill is one trade of account A (not one order); fill_id is the venue's trade id."""
from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any, Mapping

from hedge.money import AmountError, to_decimal

BUY = "buy"
SELL = "sell"
SIDES = (BUY, SELL)


class InvalidFill(ValueError):
    """A fill message or stream trade that cannot be trusted; it is logged and never traded on."""


def opposite(side: str) -> str:
    if side not in SIDES:
        raise InvalidFill(f"side must be 'buy' or 'sell', got {side!r}")
    return SELL if side == BUY else BUY


def signed(side: str, amount: Decimal) -> Decimal:
    """Position change of a trade on `side`: buys add, sells subtract."""
    return amount if side == BUY else -amount


@dataclass(frozen=True)
class Fill:
    fill_id: str
    market_index: int
    side: str  # A's side of the trade
    base_amount: Decimal
    price: Decimal
    order_index: int
    client_order_index: int
    ts_exchange_ms: int
    ts_seen_ms: int
    # When the frame carrying it arrived at the maker, in microseconds (0: unknown). Optional in
    # messages so fills enqueued by older makers (and requeues of them) still parse.
    ts_seen_us: int = 0

    def to_message(self) -> dict[str, Any]:
        """JSON-safe task payload: amounts as decimal strings, never floats, no secrets."""
        msg = {
            "fill_id": self.fill_id,
            "market_index": self.market_index,
            "side": self.side,
            "base_amount": str(self.base_amount),
            "price": str(self.price),
            "order_index": self.order_index,
            "client_order_index": self.client_order_index,
            "ts_exchange_ms": self.ts_exchange_ms,
            "ts_seen_ms": self.ts_seen_ms,
        }
        if self.ts_seen_us:
            msg["ts_seen_us"] = self.ts_seen_us
        return msg

    @classmethod
    def from_message(cls, msg: Any) -> "Fill":
        if not isinstance(msg, Mapping):
            raise InvalidFill(f"fill must be an object, got {type(msg).__name__}")
        missing = [k for k in _FIELDS if k not in msg]
        if missing:
            raise InvalidFill(f"fill is missing {', '.join(missing)}")
        try:
            fill = cls(
                fill_id=_text(msg["fill_id"], "fill_id"),
                market_index=_int(msg["market_index"], "market_index"),
                side=_side(msg["side"]),
                base_amount=to_decimal(msg["base_amount"], "base_amount"),
                price=to_decimal(msg["price"], "price"),
                order_index=_int(msg["order_index"], "order_index"),
                client_order_index=_int(msg["client_order_index"], "client_order_index"),
                ts_exchange_ms=_int(msg["ts_exchange_ms"], "ts_exchange_ms"),
                ts_seen_ms=_int(msg["ts_seen_ms"], "ts_seen_ms"),
                ts_seen_us=_int(msg.get("ts_seen_us", 0), "ts_seen_us"),
            )
        except AmountError as exc:
            raise InvalidFill(str(exc)) from None
        if fill.base_amount <= 0:
            raise InvalidFill(f"base_amount must be > 0, got {fill.base_amount}")
        if fill.price <= 0:
            raise InvalidFill(f"price must be > 0, got {fill.price}")
        return fill


_FIELDS = (
    "fill_id", "market_index", "side", "base_amount", "price",
    "order_index", "client_order_index", "ts_exchange_ms", "ts_seen_ms",
)


def _text(value: Any, what: str) -> str:
    if isinstance(value, bool) or not isinstance(value, (str, int)) or str(value) == "":
        raise InvalidFill(f"{what} must be a non-empty string or integer, got {value!r}")
    return str(value)


def _int(value: Any, what: str) -> int:
    if isinstance(value, bool):
        raise InvalidFill(f"{what} must be an integer, got {value!r}")
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.lstrip("-").isdigit():
        try:  # isdigit() also accepts "--5" and "²", which int() refuses
            return int(value)
        except ValueError:
            pass
    raise InvalidFill(f"{what} must be an integer, got {value!r}")


def _side(value: Any) -> str:
    if value not in SIDES:
        raise InvalidFill(f"side must be 'buy' or 'sell', got {value!r}")
    return value


def fill_from_trade(trade: Mapping[str, Any], account_index: int, ts_seen_ms: int,
                    ts_seen_us: int = 0) -> Fill | None:
    """Turn a venue Trade (REST or account_all frame) into A's Fill; None if A is not a party.

    A is the ask side iff ask_account_id == A. A trade where A is on both sides cannot
    happen (self-trade prevention) and is refused rather than guessed at.
    """
    try:
        ask_account = int(trade["ask_account_id"])
        bid_account = int(trade["bid_account_id"])
    except (KeyError, TypeError, ValueError, OverflowError):  # OverflowError: JSON Infinity
        raise InvalidFill(f"trade has no valid ask_account_id/bid_account_id: {dict(trade)!r}") from None
    if ask_account == account_index and bid_account == account_index:
        raise InvalidFill(f"trade {trade.get('trade_id')} has account {account_index} on both sides")
    if ask_account == account_index:
        side, order_key, client_key = SELL, "ask_id", "ask_client_id"
    elif bid_account == account_index:
        side, order_key, client_key = BUY, "bid_id", "bid_client_id"
    else:
        return None
    for key in ("trade_id", "market_id", "size", "price", order_key):
        if key not in trade:
            raise InvalidFill(f"trade is missing {key}: {dict(trade)!r}")
    return Fill.from_message({
        "fill_id": trade["trade_id"],
        "market_index": trade["market_id"],
        "side": side,
        "base_amount": trade["size"],
        "price": trade["price"],
        "order_index": trade[order_key],
        "client_order_index": trade.get(client_key) or 0,
        "ts_exchange_ms": trade.get("timestamp") or 0,
        "ts_seen_ms": ts_seen_ms,
        "ts_seen_us": ts_seen_us,
    })
