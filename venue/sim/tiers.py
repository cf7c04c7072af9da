"""Lighter's account tiers as the simulator applies them: request limits and speed bumps.

Figures from Lighter's API docs ("Account Types", "Rate Limits"; lighter-api-notes.md section 8):

| tier     | limit per rolling minute       | taker delay | maker order / cancel delay |
|----------|--------------------------------|-------------|----------------------------|
| standard | 60 requests, unweighted        | 300 ms      | 200 ms                     |
| premium  | 24,000 weighted requests       | 200 ms      | 0 ms                       |
| instant  | none (simulator extension)     | 0 ms        | 0 ms                       |

`instant` is not a Lighter tier: it is the simulator as it was before it modelled the tiers,
kept for tests that exercise something else and say so.

Weights (premium counts them; standard counts requests): sendTx, sendTxBatch, nextNonce 6;
publicPools, txFromL1TxHash 50; accountInactiveOrders, deposit/latest 100; apikeys 150;
transferFeeInfo 500; trades, recentTrades 600; changeAccountTier, tokens/*, setAccountMetadata,
notification/ack, createIntentAddress, fastwithdraw, referral/* 3000; every other endpoint 300.
Whenever 24,000 / weight < 60, that count caps the endpoint on both tiers (trades: 40 a minute).
"""
from __future__ import annotations

from dataclasses import dataclass

WINDOW_MS = 60_000
PREMIUM_WEIGHT_LIMIT = 24_000
STANDARD_REQUEST_LIMIT = 60
DEFAULT_WEIGHT = 300

_WEIGHTS = {
    "sendTx": 6, "sendTxBatch": 6, "nextNonce": 6,
    "publicPools": 50, "txFromL1TxHash": 50,
    "accountInactiveOrders": 100, "deposit/latest": 100,
    "apikeys": 150,
    "transferFeeInfo": 500,
    "trades": 600, "recentTrades": 600,
    "changeAccountTier": 3000, "setAccountMetadata": 3000, "notification/ack": 3000,
    "createIntentAddress": 3000, "fastwithdraw": 3000,
}
_HEAVY_PREFIXES = ("tokens/", "referral/")


@dataclass(frozen=True)
class Tier:
    name: str
    weighted: bool              # premium: weights against `limit`; standard: request count
    limit: int | None           # per rolling minute; None = unlimited
    taker_delay_ms: int         # market / immediate-or-cancel orders
    maker_delay_ms: int         # resting limit orders, cancels, cancel-all


STANDARD = Tier("standard", weighted=False, limit=STANDARD_REQUEST_LIMIT, taker_delay_ms=300,
                maker_delay_ms=200)
PREMIUM = Tier("premium", weighted=True, limit=PREMIUM_WEIGHT_LIMIT, taker_delay_ms=200,
               maker_delay_ms=0)
INSTANT = Tier("instant", weighted=False, limit=None, taker_delay_ms=0, maker_delay_ms=0)
TIERS = {t.name: t for t in (STANDARD, PREMIUM, INSTANT)}


def endpoint_name(path: str) -> str:
    """`/api/v1/sendTx` -> `sendTx`; the name the weight table uses."""
    return path.removeprefix("/api/v1/").strip("/")


def endpoint_weight(endpoint: str) -> int:
    # The venue's own table, kept apart from the engine's (hedge/budget.py) on purpose: the
    # simulator is the oracle the engine's budget is tested against, so it must not share its mistakes.
    if endpoint in _WEIGHTS:
        return _WEIGHTS[endpoint]
    if endpoint.startswith(_HEAVY_PREFIXES):
        return 3000
    return DEFAULT_WEIGHT


def endpoint_cap(endpoint: str) -> int | None:
    """Requests a minute of this endpoint allowed on every tier, when the weight makes it < 60."""
    cap = PREMIUM_WEIGHT_LIMIT // endpoint_weight(endpoint)
    return cap if cap < STANDARD_REQUEST_LIMIT else None
