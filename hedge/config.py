"""The config schema: parse a plain dict (from YAML) into typed settings, or say exactly what is wrong.

Pure: reading the file and the environment happens in ops/settings.py.
"""
from __future__ import annotations

import difflib
import ipaddress
import math
import re
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, Mapping
from urllib.parse import urlsplit

from hedge.budget import (CUSTOM, TIERS, UNLIMITED, BudgetError, RateLimit, default_hedge_reserve,
                          rate_limit_for_tier, smallest_limit)
from hedge.money import AmountError, to_decimal

MODES = ("paper", "live")
# Markets whose index is known without asking the venue (Lighter mainnet conventions).
KNOWN_MARKET_INDEX = {"ETH": 0, "BTC": 1, "SOL": 2}
# Keys of the system we replace, mapped to where they live now.
RENAMED = {
    "lighter.maker_order_time_out": "strategy.maker_order_timeout_s",
    "strategy.retry_times": "strategy.max_retries",
    "strategy.poll_interval": "(removed: the maker waits on hedge results, it does not poll)",
}


# lighter-go MinOrderExpiryPeriod is 5 minutes, judged again when the order executes (after the
# speed bump) on the venue's clock: 30 s of slack keeps an expiry at the minimum from being refused (21711).
MIN_ORDER_EXPIRY_S = 330
MIN_DEAD_MAN_S = 30        # a re-arm every 15 s at most: 4 of the 60 requests a minute on Standard
# A fill is pruned from Redis only this long after it was seen: a trade of A older than the retention
# that was never delivered would then be taken for a replay (README "Guarantees").
MIN_RETENTION_S = 60


class ConfigError(ValueError):
    """A config problem, always naming the field and the expected form."""


@dataclass(frozen=True)
class AccountConfig:
    name: str
    account_index: int
    api_key_index: int
    private_key_env: str


@dataclass(frozen=True)
class MarketConfig:
    symbol: str
    market_index: int
    quantity: Decimal
    depth: int
    post_only: bool
    max_position_base: Decimal      # A's position never grows beyond this
    max_unhedged_base: Decimal      # A+B beyond this (not yet hedged) pauses the market


@dataclass(frozen=True)
class StrategyConfig:
    maker_order_timeout_s: float
    max_retries: int
    retry_backoff_max_s: int
    max_slippage_bps: Decimal
    hedge_wait_timeout_s: float
    max_hedges_per_minute: int
    reconcile_interval_s: float
    # A's limit orders expire this long after they are signed (Lighter: at least 5 minutes).
    order_expiry_s: float = 600.0
    # The dead-man's switch: the venue cancels all of A's orders this long after the last re-arm.
    dead_man_s: float = 120.0


@dataclass(frozen=True)
class LedgerConfig:
    """How long the ledger's history stays in Redis; older history goes to a JSON-lines archive
    (tasks/retention.py). Totals, open legs and unfinished hedges are never moved."""

    retention_s: float = 3600.0
    prune_interval_s: float = 30.0
    archive_path: str = "logs/ledger-archive.jsonl"   # relative to the config file


@dataclass(frozen=True)
class MetricsConfig:
    """Prometheus endpoints (prometheus-client); port 0 = off."""

    maker_port: int = 0
    worker_port: int = 0
    host: str = "127.0.0.1"
    alerter_port: int = 0           # the alerter (ops/alerter.py): hedge.b's length, consumer presence, alerts


ALERT_FORMATS = ("plain", "slack", "telegram")
ALERT_KINDS = ("paused", "resumed", "hedge_failed", "no_consumer", "budget_exhausted", "flatten", "worker_stopped",
               "control_reverted")
CONSUMER_CHECKS = ("heartbeat", "heartbeat+inspect")


@dataclass(frozen=True)
class AlertsConfig:
    """The alerter (`lighter-hedge alerter`, ops/alerter.py): webhook alerts a person reads.

    The webhook URL is a secret (Slack's and Telegram's carry their token): it is read from the
    environment variable named by `webhook_url_env` (or the alerter's $LH_KEYS_FILE, written by `up`),
    never from this file and never logged."""

    enabled: bool = False                       # `up` runs the alerter under supervisord
    webhook_url_env: str = "LH_ALERT_WEBHOOK_URL"
    format: str = "plain"                       # plain JSON, slack {"text"}, telegram {"chat_id", "text"}
    telegram_chat_id: int | str | None = None
    kinds: tuple[str, ...] = ALERT_KINDS
    no_consumer_s: float = 60.0                 # no consumer on hedge.b this long alerts
    consumer_check: str = "heartbeat+inspect"   # the worker's heartbeat, and Celery's inspect of hedge.b
    budget_wait_s: float = 10.0                 # a request that waits this long for the budget publishes budget.exhausted
    budget_clear_s: float = 120.0               # budget_exhausted resolves this long after the last one
    poll_interval_s: float = 2.0
    delivery_attempts: int = 5
    delivery_timeout_s: float = 5.0


@dataclass(frozen=True)
class Config:
    mode: str
    base_url: str
    ws_url: str
    chain_id: int | None
    redis_url: str
    result_backend_url: str
    keys_file: str | None
    account_a: AccountConfig
    account_b: AccountConfig
    markets: dict[str, MarketConfig]
    strategy: StrategyConfig
    flower_port: int
    sim: dict[str, Any] = field(default_factory=dict)
    # `lighter-hedge console` (ops/console.py): the web console on 127.0.0.1, beside Flower.
    console_port: int = 5556
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    # Lighter's request budget of A and B's L1 address (hedge.budget; venue/budget.py enforces it).
    rate_limit: RateLimit = field(default_factory=lambda: rate_limit_for_tier("standard"))
    ledger: LedgerConfig = field(default_factory=LedgerConfig)
    alerts: AlertsConfig = field(default_factory=AlertsConfig)

    def market(self, symbol: str) -> MarketConfig:
        try:
            return self.markets[symbol]
        except KeyError:
            raise ConfigError(
                f"unknown market {symbol!r}: config.yaml 'markets' has {', '.join(sorted(self.markets)) or 'none'}"
            ) from None

    def market_by_index(self, market_index: int) -> MarketConfig:
        for m in self.markets.values():
            if m.market_index == market_index:
                return m
        raise ConfigError(f"no market with market_index {market_index} in config.yaml 'markets'")


def parse_config(raw: Any) -> Config:
    if not isinstance(raw, Mapping):
        raise ConfigError("config: expected a YAML mapping at the top level")
    _refuse_renamed(raw)
    refuse_unknown_keys(raw, "", KNOWN_KEYS[""])
    for section in ("lighter", "redis", "accounts", "strategy", "flower", "metrics", "ledger", "alerts", "console"):
        if isinstance(raw.get(section), Mapping):
            refuse_unknown_keys(raw[section], section, KNOWN_KEYS[section])
    mode = _choice(raw, "mode", MODES, default="paper")
    lighter = _section(raw, "lighter")
    base_url = _url(lighter, "lighter.base_url", ("http://", "https://"))
    ws_url = _url(lighter, "lighter.ws_url", ("ws://", "wss://"))
    chain_id = lighter.get("chain_id")
    if chain_id is not None and (isinstance(chain_id, bool) or not isinstance(chain_id, int)):
        raise ConfigError(f"lighter.chain_id: expected an integer or null, got {chain_id!r}")
    redis = _section(raw, "redis")
    redis_url = _url(redis, "redis.url", ("redis://", "rediss://", "unix://"))
    result_backend_url = redis.get("result_backend_url") or redis_url
    _url({"x": result_backend_url}, "redis.result_backend_url", ("redis://", "rediss://", "unix://"), key="x")
    for name, url in (("redis.url", redis_url), ("redis.result_backend_url", result_backend_url)):
        if url.startswith("rediss://") and "ssl_cert_reqs=" not in url:
            raise ConfigError(f"{name}: a rediss:// URL needs ?ssl_cert_reqs=required (or optional, none); "
                              f"Celery refuses it otherwise")
    keys_file = raw.get("keys_file")
    if keys_file is not None and not isinstance(keys_file, str):
        raise ConfigError(f"keys_file: expected a file path or null, got {keys_file!r}")
    accounts = _section(raw, "accounts")
    a = _account(accounts, "account_a")
    b = _account(accounts, "account_b")
    if a.account_index == b.account_index:
        raise ConfigError("accounts: account_a and account_b must be different accounts")
    markets = _markets(_section(raw, "markets"))
    strategy = _strategy(_section(raw, "strategy"))
    flower = raw.get("flower") or {}
    if not isinstance(flower, Mapping):
        raise ConfigError("flower: expected a mapping")
    flower_port = _int(flower, "flower.port", default=5555, minimum=1, maximum=65535)
    metrics = _metrics(raw.get("metrics"))
    console_port = _console_port(raw.get("console"), flower_port, metrics)
    sim = raw.get("sim") or {}
    if not isinstance(sim, Mapping):
        raise ConfigError("sim: expected a mapping")
    if mode == "live" and is_loopback_url(base_url):
        raise ConfigError("mode: 'live' with lighter.base_url on loopback; live needs Lighter's URL "
                          "(https://mainnet.zklighter.elliot.ai)")
    return Config(mode=mode, base_url=base_url.rstrip("/"), ws_url=ws_url.rstrip("/"), chain_id=chain_id,
                  redis_url=redis_url, result_backend_url=result_backend_url, keys_file=keys_file,
                  account_a=a, account_b=b, markets=markets, strategy=strategy,
                  flower_port=flower_port, sim=dict(sim), metrics=metrics, console_port=console_port,
                  rate_limit=_rate_limit(lighter, mode, sim, (a.account_index, b.account_index)),
                  ledger=_ledger(raw.get("ledger")), alerts=_alerts(raw.get("alerts")))


# Every key each section knows: anything else is a typo that would otherwise run on a default.
KNOWN_KEYS: dict[str, tuple[str, ...]] = {
    "": ("mode", "lighter", "redis", "keys_file", "accounts", "markets", "strategy", "flower", "metrics", "sim",
         "ledger", "alerts", "console"),
    "lighter": ("base_url", "ws_url", "chain_id", "tier", "rate_limit", "hedge_reserve"),
    "redis": ("url", "result_backend_url"),
    "accounts": ("account_a", "account_b"),
    "accounts.account": ("account_index", "api_key_index", "private_key_env"),
    "markets.market": ("market_index", "quantity", "depth", "post_only", "max_position_base", "max_unhedged_base"),
    "strategy": ("maker_order_timeout_s", "max_retries", "retry_backoff_max_s", "max_slippage_bps",
                 "hedge_wait_timeout_s", "max_hedges_per_minute", "reconcile_interval_s", "order_expiry_s",
                 "dead_man_s"),
    "flower": ("port",),
    "console": ("port",),
    "metrics": ("maker_port", "worker_port", "host", "alerter_port"),
    "ledger": ("retention_s", "prune_interval_s", "archive_path"),
    "alerts": ("enabled", "webhook_url_env", "format", "telegram_chat_id", "kinds", "no_consumer_s", "consumer_check",
               "budget_wait_s", "budget_clear_s", "poll_interval_s", "delivery_attempts", "delivery_timeout_s"),
}
MAX_SLIPPAGE_BPS = Decimal(1000)   # 10 %: beyond this a "hedge" is a market order at any price


def refuse_unknown_keys(sec: Mapping[str, Any], where: str, known: tuple[str, ...]) -> None:
    """A key the section does not know is refused, naming the nearest known key."""
    for key in sec:
        if key in known:
            continue
        name = f"{where}.{key}" if where else str(key)
        near = difflib.get_close_matches(str(key), known, n=1, cutoff=0.6)
        hint = f"did you mean {(where + '.') if where else ''}{near[0]}?" if near else \
            f"known keys here: {', '.join(known)}"
        raise ConfigError(f"{name}: unknown key; {hint}")


def _refuse_renamed(raw: Mapping[str, Any]) -> None:
    for dotted, now in RENAMED.items():
        section, key = dotted.split(".")
        sec = raw.get(section)
        if isinstance(sec, Mapping) and key in sec:
            raise ConfigError(f"{dotted}: this key of the old hedger is now {now}")


def _section(raw: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = raw.get(name)
    if value is None:
        raise ConfigError(f"{name}: missing section")
    if not isinstance(value, Mapping):
        raise ConfigError(f"{name}: expected a mapping, got {type(value).__name__}")
    return value


def _choice(raw: Mapping[str, Any], key: str, choices: tuple[str, ...], default: str) -> str:
    value = raw.get(key, default)
    if value not in choices:
        raise ConfigError(f"{key}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _url(sec: Mapping[str, Any], name: str, schemes: tuple[str, ...], key: str | None = None) -> str:
    value = sec.get(key or name.split(".")[-1])
    if not isinstance(value, str) or not value.startswith(schemes):
        raise ConfigError(f"{name}: expected a URL starting with {' or '.join(schemes)}, got {value!r}")
    return value


def _int(sec: Mapping[str, Any], name: str, default: int | None = None,
         minimum: int | None = None, maximum: int | None = None) -> int:
    value = sec.get(name.split(".")[-1], default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(f"{name}: expected an integer, got {value!r}")
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name}: expected an integer >= {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(f"{name}: expected an integer <= {maximum}, got {value}")
    return value


def _seconds(sec: Mapping[str, Any], name: str, default: float) -> float:
    value = sec.get(name.split(".")[-1], default)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
        raise ConfigError(f"{name}: expected a positive, finite number of seconds, got {value!r}")
    return float(value)


def _positive_decimal(sec: Mapping[str, Any], name: str, default: str | None = None) -> Decimal:
    value = sec.get(name.split(".")[-1], default)
    if value is None:
        raise ConfigError(f"{name}: missing; expected a positive decimal string like '0.0100'")
    try:
        result = to_decimal(value, name)
    except AmountError:
        raise ConfigError(f"{name}: expected a positive decimal string like '0.0100', got {value!r}") from None
    if result <= 0:
        raise ConfigError(f"{name}: expected a positive decimal string like '0.0100', got {value!r}")
    return result


def _account(accounts: Mapping[str, Any], name: str) -> AccountConfig:
    sec = accounts.get(name)
    if not isinstance(sec, Mapping):
        raise ConfigError(f"accounts.{name}: missing; expected account_index, api_key_index, private_key_env")
    if "api_key_private_key" in sec or "private_key" in sec:
        raise ConfigError(f"accounts.{name}: private keys never go in config.yaml; set the environment "
                          f"variable named by private_key_env, or use keys_file (mode 0600)")
    refuse_unknown_keys(sec, f"accounts.{name}", KNOWN_KEYS["accounts.account"])
    index = _int(sec, f"accounts.{name}.account_index", minimum=0)
    key_index = _int(sec, f"accounts.{name}.api_key_index", minimum=0, maximum=254)
    env = sec.get("private_key_env", f"LH_{name.upper()}_PRIVATE_KEY")
    if not isinstance(env, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
        raise ConfigError(f"accounts.{name}.private_key_env: expected an environment variable name, got {env!r}")
    return AccountConfig(name=name, account_index=index, api_key_index=key_index, private_key_env=env)


def _markets(sec: Mapping[str, Any]) -> dict[str, MarketConfig]:
    if not sec:
        raise ConfigError("markets: expected at least one market, e.g. ETH: {quantity: '0.0500', depth: 1}")
    result: dict[str, MarketConfig] = {}
    for symbol, m in sec.items():
        where = f"markets.{symbol}"
        if not isinstance(m, Mapping):
            raise ConfigError(f"{where}: expected a mapping with quantity and depth")
        refuse_unknown_keys(m, where, KNOWN_KEYS["markets.market"])
        if "market_index" in m:
            index = _int(m, f"{where}.market_index", minimum=0, maximum=254)
        elif symbol in KNOWN_MARKET_INDEX:
            index = KNOWN_MARKET_INDEX[symbol]
        else:
            raise ConfigError(f"{where}.market_index: unknown market {symbol!r}; give its market_index "
                              f"(known without it: {', '.join(KNOWN_MARKET_INDEX)})")
        post_only = m.get("post_only", True)
        if not isinstance(post_only, bool):
            raise ConfigError(f"{where}.post_only: expected true or false, got {post_only!r}")
        quantity = _positive_decimal(m, f"{where}.quantity")
        max_position = _positive_decimal(m, f"{where}.max_position_base", default=str(quantity * 2))
        if max_position < quantity:
            raise ConfigError(f"{where}.max_position_base: expected at least quantity ({quantity}), "
                              f"got {max_position}")
        result[str(symbol)] = MarketConfig(
            symbol=str(symbol), market_index=index, quantity=quantity,
            depth=_int(m, f"{where}.depth", default=1, minimum=1, maximum=50),
            post_only=post_only, max_position_base=max_position,
            max_unhedged_base=_positive_decimal(m, f"{where}.max_unhedged_base", default=str(max_position)))
    indexes = [m.market_index for m in result.values()]
    if len(set(indexes)) != len(indexes):
        raise ConfigError("markets: two markets share one market_index")
    return result


def _strategy(sec: Mapping[str, Any]) -> StrategyConfig:
    return StrategyConfig(
        maker_order_timeout_s=_seconds(sec, "strategy.maker_order_timeout_s", 30),
        max_retries=_int(sec, "strategy.max_retries", default=5, minimum=0, maximum=100),
        retry_backoff_max_s=_int(sec, "strategy.retry_backoff_max_s", default=10, minimum=1),
        max_slippage_bps=_slippage_bps(sec),
        hedge_wait_timeout_s=_seconds(sec, "strategy.hedge_wait_timeout_s", 120),
        max_hedges_per_minute=_int(sec, "strategy.max_hedges_per_minute", default=600, minimum=1),
        reconcile_interval_s=_seconds(sec, "strategy.reconcile_interval_s", 30),
        order_expiry_s=_seconds_at_least(sec, "strategy.order_expiry_s", 600, MIN_ORDER_EXPIRY_S,
                                         "Lighter's MinOrderExpiryPeriod of 5 minutes plus 30 s "
                                         "for the speed bump and clock skew"),
        dead_man_s=_seconds_at_least(sec, "strategy.dead_man_s", 120, MIN_DEAD_MAN_S,
                                     "the dead-man's switch is re-armed every half of it"),
    )


def _slippage_bps(sec: Mapping[str, Any]) -> Decimal:
    value = _positive_decimal(sec, "strategy.max_slippage_bps", default="50")
    if value > MAX_SLIPPAGE_BPS:
        raise ConfigError(f"strategy.max_slippage_bps: expected at most {MAX_SLIPPAGE_BPS} (10 %), got {value}")
    return value


def _seconds_at_least(sec: Mapping[str, Any], name: str, default: float, minimum: float, why: str) -> float:
    value = _seconds(sec, name, default)
    if value < minimum:
        raise ConfigError(f"{name}: expected at least {minimum:g} seconds ({why}), got {value:g}")
    return value


def _ledger(sec: Any) -> LedgerConfig:
    if sec is None:
        return LedgerConfig()
    if not isinstance(sec, Mapping):
        raise ConfigError(f"ledger: expected a mapping with retention_s, prune_interval_s, archive_path, "
                          f"got {type(sec).__name__}")
    default = LedgerConfig()
    path = sec.get("archive_path", default.archive_path)
    if not isinstance(path, str) or not path.strip():
        raise ConfigError(f"ledger.archive_path: expected a file path, got {path!r}")
    return LedgerConfig(
        retention_s=_seconds_at_least(sec, "ledger.retention_s", default.retention_s, MIN_RETENTION_S,
                                      "a trade of A not delivered within it would be taken for a replay"),
        prune_interval_s=_seconds(sec, "ledger.prune_interval_s", default.prune_interval_s),
        archive_path=path)


def _console_port(sec: Any, flower_port: int, metrics: MetricsConfig) -> int:
    """console.port: the web console's loopback port; default the port after Flower's."""
    if sec is None:
        sec = {}
    if not isinstance(sec, Mapping):
        raise ConfigError(f"console: expected a mapping with port, got {type(sec).__name__}")
    default = flower_port + 1 if flower_port < 65535 else flower_port - 1
    port = _int(sec, "console.port", default=default, minimum=1, maximum=65535)
    taken = {flower_port: "flower.port", metrics.maker_port: "metrics.maker_port",
             metrics.worker_port: "metrics.worker_port", metrics.alerter_port: "metrics.alerter_port"}
    if port in taken:
        raise ConfigError(f"console.port: must differ from {taken[port]} ({port})")
    return port


def _metrics(sec: Any) -> MetricsConfig:
    if sec is None:
        return MetricsConfig()
    if not isinstance(sec, Mapping):
        raise ConfigError(f"metrics: expected a mapping with maker_port, worker_port, got {type(sec).__name__}")
    unknown = sorted(set(sec) - {"maker_port", "worker_port", "host", "alerter_port"})
    if unknown:
        raise ConfigError(f"metrics.{unknown[0]}: unknown key; expected maker_port, worker_port, host, alerter_port")
    maker_port = _int(sec, "metrics.maker_port", default=0, minimum=0, maximum=65535)
    worker_port = _int(sec, "metrics.worker_port", default=0, minimum=0, maximum=65535)
    if maker_port and maker_port == worker_port:
        raise ConfigError(f"metrics.worker_port: must differ from metrics.maker_port ({maker_port})")
    alerter_port = _int(sec, "metrics.alerter_port", default=0, minimum=0, maximum=65535)
    if alerter_port and alerter_port in (maker_port, worker_port):
        raise ConfigError(f"metrics.alerter_port: must differ from metrics.maker_port and metrics.worker_port "
                          f"({alerter_port})")
    host = sec.get("host", "127.0.0.1")
    if not isinstance(host, str) or not re.fullmatch(r"[A-Za-z0-9.:\-\[\]]+", host):
        raise ConfigError(f"metrics.host: expected an address to listen on like '127.0.0.1', got {host!r}")
    return MetricsConfig(maker_port=maker_port, worker_port=worker_port, host=host, alerter_port=alerter_port)


def _alerts(sec: Any) -> AlertsConfig:
    if sec is None:
        return AlertsConfig()
    if not isinstance(sec, Mapping):
        raise ConfigError(f"alerts: expected a mapping with enabled, webhook_url_env, format, ..., "
                          f"got {type(sec).__name__}")
    if "webhook_url" in sec or "url" in sec:
        raise ConfigError("alerts.webhook_url: the webhook URL carries its token (Slack, Telegram): never in "
                          "config.yaml; put it in the environment variable named by alerts.webhook_url_env")
    default = AlertsConfig()
    enabled = sec.get("enabled", default.enabled)
    if not isinstance(enabled, bool):
        raise ConfigError(f"alerts.enabled: expected true or false, got {enabled!r}")
    env = sec.get("webhook_url_env", default.webhook_url_env)
    if not isinstance(env, str) or not re.fullmatch(r"[A-Z_][A-Z0-9_]*", env):
        raise ConfigError(f"alerts.webhook_url_env: expected an environment variable name like "
                          f"LH_ALERT_WEBHOOK_URL, got {env!r}")
    fmt = _choice_in(sec, "alerts.format", ALERT_FORMATS, default.format)
    chat_id = sec.get("telegram_chat_id")
    if chat_id is not None and (isinstance(chat_id, bool) or not isinstance(chat_id, (int, str))
                                or (isinstance(chat_id, str) and not re.fullmatch(r"@?[A-Za-z0-9_\-]+", chat_id))):
        raise ConfigError(f"alerts.telegram_chat_id: expected a chat id like -1001234567890 or '@channel', "
                          f"got {chat_id!r}")
    if fmt == "telegram" and chat_id is None:
        raise ConfigError("alerts.telegram_chat_id: missing; alerts.format telegram posts to one chat: give its id "
                          "(e.g. -1001234567890 or '@channel')")
    kinds = sec.get("kinds", list(default.kinds))
    if not isinstance(kinds, list) or not kinds or any(k not in ALERT_KINDS for k in kinds):
        raise ConfigError(f"alerts.kinds: expected a non-empty list of {', '.join(ALERT_KINDS)}, got {kinds!r}")
    return AlertsConfig(
        enabled=enabled, webhook_url_env=env, format=fmt, telegram_chat_id=chat_id,
        kinds=tuple(dict.fromkeys(kinds)),
        no_consumer_s=_seconds(sec, "alerts.no_consumer_s", default.no_consumer_s),
        consumer_check=_choice_in(sec, "alerts.consumer_check", CONSUMER_CHECKS, default.consumer_check),
        budget_wait_s=_seconds(sec, "alerts.budget_wait_s", default.budget_wait_s),
        budget_clear_s=_seconds(sec, "alerts.budget_clear_s", default.budget_clear_s),
        poll_interval_s=_seconds(sec, "alerts.poll_interval_s", default.poll_interval_s),
        delivery_attempts=_int(sec, "alerts.delivery_attempts", default=default.delivery_attempts, minimum=1,
                               maximum=20),
        delivery_timeout_s=_seconds(sec, "alerts.delivery_timeout_s", default.delivery_timeout_s))


def _choice_in(sec: Mapping[str, Any], name: str, choices: tuple[str, ...], default: str) -> str:
    value = sec.get(name.split(".")[-1], default)
    if value not in choices:
        raise ConfigError(f"{name}: expected one of {', '.join(choices)}, got {value!r}")
    return value


def _rate_limit(lighter: Mapping[str, Any], mode: str, sim: Mapping[str, Any],
                accounts: tuple[int, int]) -> RateLimit:
    """lighter.tier or lighter.rate_limit, and lighter.hedge_reserve (hedge.budget has the figures).

    Without either, live is `standard` (a new Lighter account is) and paper follows the simulator:
    its tier for A and B (`instant`, or `rate_limits: false`, means no limit).
    """
    tier, explicit, reserve = lighter.get("tier"), lighter.get("rate_limit"), lighter.get("hedge_reserve")
    if tier is not None and explicit is not None:
        raise ConfigError("lighter.rate_limit: give lighter.tier or lighter.rate_limit, not both")
    if reserve is not None and (isinstance(reserve, bool) or not isinstance(reserve, int)):
        raise ConfigError(f"lighter.hedge_reserve: expected an integer in the limit's unit (requests on "
                          f"standard, weight on the weighted tiers) or null, got {reserve!r}")
    if explicit is not None:
        return _explicit_rate_limit(explicit, reserve)
    if tier is None:
        tier = _paper_tier(sim, accounts) if mode == "paper" else "standard"
    choices = (*TIERS, UNLIMITED) if mode == "paper" else tuple(TIERS)
    if tier not in choices:
        extra = f" ({UNLIMITED} only in paper mode)" if tier == UNLIMITED else ""
        raise ConfigError(f"lighter.tier: expected one of {', '.join(choices)}{extra}, got {tier!r}")
    try:
        return rate_limit_for_tier(tier, reserve)
    except BudgetError as exc:
        raise ConfigError(f"lighter.{exc}") from None


def _explicit_rate_limit(sec: Any, reserve: int | None) -> RateLimit:
    name = "lighter.rate_limit"
    if not isinstance(sec, Mapping):
        raise ConfigError(f"{name}: expected a mapping like {{per_minute: 60, weighted: false}}, got {sec!r}")
    unknown = sorted(set(sec) - {"per_minute", "weighted", "window_ms"})
    if unknown:
        raise ConfigError(f"{name}.{unknown[0]}: unknown key; expected per_minute, weighted, window_ms")
    weighted = sec.get("weighted", False)
    if not isinstance(weighted, bool):
        raise ConfigError(f"{name}.weighted: expected true (weights are summed) or false (requests are "
                          f"counted), got {weighted!r}")
    per_minute = _int(sec, f"{name}.per_minute", minimum=smallest_limit(weighted)) if "per_minute" in sec else None
    if per_minute is None:
        raise ConfigError(f"{name}.per_minute: missing; expected the limit per rolling minute, e.g. 60")
    window_ms = _int(sec, f"{name}.window_ms", default=60_000, minimum=100, maximum=3_600_000)
    try:
        return RateLimit(CUSTOM, per_minute, weighted,
                         default_hedge_reserve(per_minute, weighted) if reserve is None else reserve, window_ms)
    except BudgetError as exc:
        raise ConfigError(f"lighter.{exc}") from None


def _paper_tier(sim: Mapping[str, Any], accounts: tuple[int, int]) -> str:
    """The simulator's tier for A and B, as a budget tier name."""
    if sim.get("rate_limits", True) is False:
        return UNLIMITED
    tier, where = sim.get("tier", "standard"), "sim.tier"
    entries = sim.get("accounts") or []
    if not isinstance(entries, list):
        raise ConfigError(f"sim.accounts: expected a list of {{index, master, collateral, api_key_indexes}}, "
                          f"got {entries!r}")
    for entry in entries:
        if isinstance(entry, Mapping) and entry.get("index") in accounts and entry.get("tier") is not None:
            tier, where = entry["tier"], f"sim.accounts[{entry['index']}].tier"
    if tier not in ("standard", "premium", "instant"):
        raise ConfigError(f"{where}: expected one of instant, premium, standard, got {tier!r}")
    return UNLIMITED if tier == "instant" else tier


def is_loopback_url(url: str) -> bool:
    """The URL's host is this machine (localhost, 127.0.0.0/8, ::1)."""
    return is_loopback_host(urlsplit(url).hostname or "")


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False
