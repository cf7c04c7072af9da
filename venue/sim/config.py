"""The simulator's configuration: the `sim:` section of config.yaml, validated.

Every key is optional. A bad value raises `SimConfigError` naming the field and the
expected form, e.g. ``sim.markets[0].size_decimals: expected an integer 0..8, got 'x'``.

Keys of the `sim:` section
--------------------------
seed                 int, default 7. Seeds the engine's random walk / quotes / taker flow
                     (the CLI's --seed wins over it).
tick_ms              int > 0, default 100. Period of the synthetic market's tick.
volatility_bps       decimal >= 0, default 2. Max random-walk step of the mid per tick,
                     in basis points of the mid (uniform integer step in [-max, +max]).
levels               int 1..100, default 10. Synthetic book levels per side.
half_spread_bps      decimal > 0, default 1. Distance mid -> best synthetic bid/ask.
level_spacing_bps    decimal > 0, default 1. Distance between synthetic levels.
level_size_min_lots  int >= 1, default 2. Smallest synthetic level size, in multiples of
                     the market's min_base_amount.
level_size_max_lots  int >= level_size_min_lots, default 40. Largest synthetic level size.
taker_flow_prob      decimal 0..1, default 0.3. Per tick and market, chance that the flow
                     account takes part of one resting user order near the touch.
flow_reach_bps       decimal >= 0, default 5. A user order is "near the touch" when its price
                     is within this many bps of the best price on its side (or better).
flow_partial_prob    decimal 0..1, default 0.5. Chance a flow take is partial (a seeded chunk)
                     instead of the whole remainder.
random_walk          bool, default true. Initial state of the mid's random walk.
taker_flow           bool, default true. Initial state of the taker flow.
liquidity_account    int, default 1. Synthetic account quoting the book (unlimited margin).
flow_account         int, default 2. Synthetic account sending the taker flow.
synthetic_master     int, default 0. Master of both synthetic accounts (one STP group).
initial_margin_fraction  decimal 0..1, default "0.05".
ws_ping_interval_s   decimal > 0, default 20. App-level {"type":"ping"} period on /stream.
faults               mapping, default {}. Initial fault plan (see venue.sim.faults).
tier                 "standard" (default, as a new Lighter account is), "premium", or "instant"
                     (a simulator extension: no limits, no speed bumps). Every account's tier
                     unless the account sets its own (see venue.sim.tiers for the figures).
rate_limits          bool, default true. Enforce the tiers' request limits (HTTP 429, code 23000).
ip_requests_per_minute  int >= 1, default 60. Requests a client IP may make per rolling minute
                     that no L1 address answers for (no auth token, no signed tx).
nonce_lag_ms         int 0..60000, default 300. How long after a tx is taken `nextNonce` still
                     answers the old nonce (Lighter: "will NOT update right away").
markets              list of {symbol, market_id, size_decimals, price_decimals,
                     min_base_amount, min_quote_amount, start_price}; default ETH (0) + BTC (1).
accounts             list of {index, master, collateral, api_key_indexes, next_nonce, tier};
                     default 281001 and 281002 under master 281000 with keys [3] and [4].
                     The tier belongs to the L1 address: accounts under one master share it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from .tiers import TIERS


class SimConfigError(ValueError):
    """A `sim:` config value is wrong; the message names the field and the expected form."""


@dataclass(frozen=True)
class MarketConfig:
    symbol: str
    market_id: int
    size_decimals: int
    price_decimals: int
    min_base_amount: Decimal
    min_quote_amount: Decimal
    start_price: Decimal

    @property
    def size_scale(self) -> int:
        return 10 ** self.size_decimals

    @property
    def price_scale(self) -> int:
        return 10 ** self.price_decimals

    @property
    def min_base_units(self) -> int:
        return int(self.min_base_amount * self.size_scale)

    @property
    def start_price_units(self) -> int:
        return int(self.start_price * self.price_scale)


@dataclass(frozen=True)
class AccountConfig:
    index: int
    master: int
    collateral: Decimal
    api_key_indexes: tuple[int, ...]
    next_nonce: int = 0
    tier: str | None = None          # None: the run's `tier`


@dataclass(frozen=True)
class SimConfig:
    seed: int = 7
    tick_ms: int = 100
    volatility_bps: Decimal = Decimal(2)
    levels: int = 10
    half_spread_bps: Decimal = Decimal(1)
    level_spacing_bps: Decimal = Decimal(1)
    level_size_min_lots: int = 2
    level_size_max_lots: int = 40
    taker_flow_prob: Decimal = Decimal("0.3")
    flow_reach_bps: Decimal = Decimal(5)
    flow_partial_prob: Decimal = Decimal("0.5")
    random_walk: bool = True
    taker_flow: bool = True
    liquidity_account: int = 1
    flow_account: int = 2
    synthetic_master: int = 0
    initial_margin_fraction: Decimal = Decimal("0.05")
    ws_ping_interval_s: Decimal = Decimal(20)
    faults: dict = field(default_factory=dict)
    tier: str = "standard"
    rate_limits: bool = True
    ip_requests_per_minute: int = 60
    nonce_lag_ms: int = 300
    markets: tuple[MarketConfig, ...] = ()
    accounts: tuple[AccountConfig, ...] = ()


DEFAULT_MARKETS = [
    {"symbol": "ETH", "market_id": 0, "size_decimals": 4, "price_decimals": 2,
     "min_base_amount": "0.0050", "min_quote_amount": "10.000000", "start_price": "3000.00"},
    {"symbol": "BTC", "market_id": 1, "size_decimals": 5, "price_decimals": 1,
     "min_base_amount": "0.00020", "min_quote_amount": "10.000000", "start_price": "100000.0"},
]
DEFAULT_ACCOUNTS = [
    {"index": 281001, "master": 281000, "collateral": "1000000", "api_key_indexes": [3]},
    {"index": 281002, "master": 281000, "collateral": "1000000", "api_key_indexes": [4]},
]


def _int(value: Any, name: str, lo: int | None = None, hi: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        raise SimConfigError(f"{name}: expected an integer{_range(lo, hi)}, got {value!r}")
    if (lo is not None and value < lo) or (hi is not None and value > hi):
        raise SimConfigError(f"{name}: expected an integer{_range(lo, hi)}, got {value!r}")
    return value


def _range(lo: Any, hi: Any) -> str:
    if lo is not None and hi is not None:
        return f" {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}"
    return ""


def _dec(value: Any, name: str, lo: Decimal | None = None, hi: Decimal | None = None,
         positive: bool = False) -> Decimal:
    """Decimals come as strings or ints (floats are accepted only for rates/bps, via str())."""
    form = "a decimal number" + (" > 0" if positive else _range(lo, hi)) + ' (e.g. "0.05")'
    if isinstance(value, bool) or value is None:
        raise SimConfigError(f"{name}: expected {form}, got {value!r}")
    try:
        dec = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise SimConfigError(f"{name}: expected {form}, got {value!r}") from None
    if not dec.is_finite() or (positive and dec <= 0) or (lo is not None and dec < lo) \
            or (hi is not None and dec > hi):
        raise SimConfigError(f"{name}: expected {form}, got {value!r}")
    return dec


def _bool(value: Any, name: str) -> bool:
    if not isinstance(value, bool):
        raise SimConfigError(f"{name}: expected true or false, got {value!r}")
    return value


def _exact_decimals(value: Any, name: str, decimals: int) -> Decimal:
    dec = _dec(value, name, lo=Decimal(0))
    if dec != dec.quantize(Decimal(1).scaleb(-decimals)):
        raise SimConfigError(f"{name}: expected at most {decimals} decimals, got {value!r}")
    return dec


def _market(raw: Any, name: str) -> MarketConfig:
    if not isinstance(raw, dict):
        raise SimConfigError(f"{name}: expected a mapping with symbol, market_id, ..., got {raw!r}")
    unknown = set(raw) - {"symbol", "market_id", "size_decimals", "price_decimals",
                          "min_base_amount", "min_quote_amount", "start_price"}
    if unknown:
        raise SimConfigError(f"{name}: unknown keys {sorted(unknown)}")
    symbol = raw.get("symbol")
    if not isinstance(symbol, str) or not symbol:
        raise SimConfigError(f"{name}.symbol: expected a non-empty string, got {symbol!r}")
    market_id = _int(raw.get("market_id"), f"{name}.market_id", 0, 254)
    size_decimals = _int(raw.get("size_decimals"), f"{name}.size_decimals", 0, 8)
    price_decimals = _int(raw.get("price_decimals"), f"{name}.price_decimals", 0, 8)
    min_base = _exact_decimals(raw.get("min_base_amount", Decimal(1).scaleb(-size_decimals)),
                               f"{name}.min_base_amount", size_decimals)
    if min_base <= 0:
        raise SimConfigError(f"{name}.min_base_amount: expected a decimal > 0, got {min_base}")
    min_quote = _dec(raw.get("min_quote_amount", "10.000000"), f"{name}.min_quote_amount",
                     lo=Decimal(0))
    start = _exact_decimals(raw.get("start_price"), f"{name}.start_price", price_decimals)
    if start * (10 ** price_decimals) < 1000:
        raise SimConfigError(f"{name}.start_price: expected at least 1000 price ticks "
                             f"(so bps steps are representable), got {start}")
    return MarketConfig(symbol, market_id, size_decimals, price_decimals, min_base, min_quote,
                        start)


def _account(raw: Any, name: str) -> AccountConfig:
    if not isinstance(raw, dict):
        raise SimConfigError(f"{name}: expected a mapping with index, master, collateral, "
                             f"api_key_indexes, got {raw!r}")
    unknown = set(raw) - {"index", "master", "collateral", "api_key_indexes", "next_nonce", "tier"}
    if unknown:
        raise SimConfigError(f"{name}: unknown keys {sorted(unknown)}")
    index = _int(raw.get("index"), f"{name}.index", 0, 2**48 - 2)
    master = _int(raw.get("master", index), f"{name}.master", 0, 2**48 - 2)
    collateral = _dec(raw.get("collateral", "1000000"), f"{name}.collateral", lo=Decimal(0))
    keys = raw.get("api_key_indexes", [])
    if not isinstance(keys, list):
        raise SimConfigError(f"{name}.api_key_indexes: expected a list of integers 0..254, "
                             f"got {keys!r}")
    key_tuple = tuple(_int(k, f"{name}.api_key_indexes[{i}]", 0, 254) for i, k in enumerate(keys))
    next_nonce = _int(raw.get("next_nonce", 0), f"{name}.next_nonce", 0)
    tier = raw.get("tier")
    if tier is not None:
        tier = _tier(tier, f"{name}.tier")
    return AccountConfig(index, master, collateral, key_tuple, next_nonce, tier)


def _tier(value: Any, name: str) -> str:
    if value not in TIERS:
        raise SimConfigError(f"{name}: expected one of {sorted(TIERS)}, got {value!r}")
    return value


def parse_sim_config(raw: Any) -> SimConfig:
    """Validate the `sim:` mapping (None = all defaults) into a SimConfig."""
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise SimConfigError(f"sim: expected a mapping, got {type(raw).__name__}")
    known = set(SimConfig.__dataclass_fields__)
    unknown = set(raw) - known
    if unknown:
        raise SimConfigError(f"sim: unknown keys {sorted(unknown)}; known keys: {sorted(known)}")
    d = SimConfig()
    markets_raw = raw.get("markets", DEFAULT_MARKETS)
    if not isinstance(markets_raw, list) or not markets_raw:
        raise SimConfigError(f"sim.markets: expected a non-empty list of markets, got {markets_raw!r}")
    markets = tuple(_market(m, f"sim.markets[{i}]") for i, m in enumerate(markets_raw))
    if len({m.market_id for m in markets}) != len(markets):
        raise SimConfigError("sim.markets: market_id values must be unique")
    accounts_raw = raw.get("accounts", DEFAULT_ACCOUNTS)
    if not isinstance(accounts_raw, list):
        raise SimConfigError(f"sim.accounts: expected a list of accounts, got {accounts_raw!r}")
    accounts = tuple(_account(a, f"sim.accounts[{i}]") for i, a in enumerate(accounts_raw))
    if len({a.index for a in accounts}) != len(accounts):
        raise SimConfigError("sim.accounts: index values must be unique")
    liquidity = _int(raw.get("liquidity_account", d.liquidity_account), "sim.liquidity_account", 0)
    flow = _int(raw.get("flow_account", d.flow_account), "sim.flow_account", 0)
    synthetic_master = _int(raw.get("synthetic_master", d.synthetic_master), "sim.synthetic_master", 0)
    if liquidity == flow:
        raise SimConfigError("sim.flow_account: must differ from sim.liquidity_account")
    for a in accounts:
        if a.index in (liquidity, flow):
            raise SimConfigError(f"sim.accounts: index {a.index} is a synthetic account "
                                 "(liquidity_account/flow_account)")
        if a.master == synthetic_master:
            raise SimConfigError(f"sim.accounts: account {a.index} has master {a.master}, the "
                                 "synthetic accounts' master; self-trade prevention would stop "
                                 "all its trades with the synthetic book")
    tier = _tier(raw.get("tier", d.tier), "sim.tier")
    tier_of_master: dict[int, str] = {}
    for a in accounts:
        mine = a.tier or tier
        if tier_of_master.setdefault(a.master, mine) != mine:
            raise SimConfigError(f"sim.accounts: account {a.index} has tier {mine!r} but another "
                                 f"account under master {a.master} has {tier_of_master[a.master]!r}; "
                                 "the tier belongs to the L1 address, which a master's accounts share")
    faults = raw.get("faults", {})
    if not isinstance(faults, dict):
        raise SimConfigError(f"sim.faults: expected a mapping of fault settings, got {faults!r}")
    min_lots = _int(raw.get("level_size_min_lots", d.level_size_min_lots), "sim.level_size_min_lots", 1)
    max_lots = _int(raw.get("level_size_max_lots", d.level_size_max_lots), "sim.level_size_max_lots",
                    min_lots)
    return SimConfig(
        seed=_int(raw.get("seed", d.seed), "sim.seed"),
        tick_ms=_int(raw.get("tick_ms", d.tick_ms), "sim.tick_ms", 1),
        volatility_bps=_dec(raw.get("volatility_bps", d.volatility_bps), "sim.volatility_bps",
                            lo=Decimal(0), hi=Decimal(1000)),
        levels=_int(raw.get("levels", d.levels), "sim.levels", 1, 100),
        half_spread_bps=_dec(raw.get("half_spread_bps", d.half_spread_bps), "sim.half_spread_bps",
                             positive=True),
        level_spacing_bps=_dec(raw.get("level_spacing_bps", d.level_spacing_bps),
                               "sim.level_spacing_bps", positive=True),
        level_size_min_lots=min_lots,
        level_size_max_lots=max_lots,
        taker_flow_prob=_dec(raw.get("taker_flow_prob", d.taker_flow_prob), "sim.taker_flow_prob",
                             lo=Decimal(0), hi=Decimal(1)),
        flow_reach_bps=_dec(raw.get("flow_reach_bps", d.flow_reach_bps), "sim.flow_reach_bps",
                            lo=Decimal(0)),
        flow_partial_prob=_dec(raw.get("flow_partial_prob", d.flow_partial_prob),
                               "sim.flow_partial_prob", lo=Decimal(0), hi=Decimal(1)),
        random_walk=_bool(raw.get("random_walk", d.random_walk), "sim.random_walk"),
        taker_flow=_bool(raw.get("taker_flow", d.taker_flow), "sim.taker_flow"),
        liquidity_account=liquidity,
        flow_account=flow,
        synthetic_master=synthetic_master,
        initial_margin_fraction=_dec(raw.get("initial_margin_fraction", d.initial_margin_fraction),
                                     "sim.initial_margin_fraction", lo=Decimal(0), hi=Decimal(1)),
        ws_ping_interval_s=_dec(raw.get("ws_ping_interval_s", d.ws_ping_interval_s),
                                "sim.ws_ping_interval_s", positive=True),
        faults=dict(faults),
        tier=tier,
        rate_limits=_bool(raw.get("rate_limits", d.rate_limits), "sim.rate_limits"),
        ip_requests_per_minute=_int(raw.get("ip_requests_per_minute", d.ip_requests_per_minute),
                                    "sim.ip_requests_per_minute", 1),
        nonce_lag_ms=_int(raw.get("nonce_lag_ms", d.nonce_lag_ms), "sim.nonce_lag_ms", 0, 60_000),
        markets=markets,
        accounts=accounts,
    )
