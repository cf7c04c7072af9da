"""Config schema: the shipped config.yaml parses; every bad field is named in the error."""
from __future__ import annotations

import copy
from decimal import Decimal
from pathlib import Path

import pytest
import yaml

from hedge.budget import rate_limit_for_tier
from hedge.config import ConfigError, parse_config

REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def good() -> dict:
    return {
        "mode": "paper",
        "lighter": {"base_url": "http://127.0.0.1:8787", "ws_url": "ws://127.0.0.1:8787/stream"},
        "redis": {"url": "redis://127.0.0.1:6379/0"},
        "keys_file": ".paper-keys.json",
        "accounts": {"account_a": {"account_index": 281001, "api_key_index": 3},
                     "account_b": {"account_index": 281002, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.0500", "depth": 1}},
        "strategy": {"max_slippage_bps": 50},
    }


def test_repo_config_yaml_parses():
    cfg = parse_config(yaml.safe_load(REPO_CONFIG.read_text()))
    assert cfg.mode == "paper"
    assert cfg.account_a.account_index != cfg.account_b.account_index
    assert cfg.account_a.private_key_env == "LH_ACCOUNT_A_PRIVATE_KEY"
    assert cfg.markets["ETH"].market_index == 0 and cfg.markets["ETH"].quantity == Decimal("0.0500")
    assert isinstance(cfg.strategy.max_slippage_bps, Decimal)
    assert cfg.market("ETH") is cfg.markets["ETH"] and cfg.market_by_index(0) is cfg.markets["ETH"]


def test_defaults():
    cfg = parse_config(good())
    assert cfg.account_b.private_key_env == "LH_ACCOUNT_B_PRIVATE_KEY"
    assert cfg.result_backend_url == cfg.redis_url
    assert cfg.markets["ETH"].post_only is True
    assert cfg.strategy.max_retries == 5 and cfg.flower_port == 5555


def _with(path: str, value, delete: bool = False) -> dict:
    raw = copy.deepcopy(good())
    *parents, last = path.split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
    if delete:
        node.pop(last, None)
    else:
        node[last] = value
    return raw


DELETE = object()


@pytest.mark.parametrize("path, value, named", [
    ("accounts.account_b", DELETE, "accounts.account_b"),
    ("accounts.account_a.account_index", DELETE, "accounts.account_a.account_index"),
    ("accounts.account_a.account_index", "281001", "accounts.account_a.account_index"),
    ("accounts.account_a.api_key_index", 255, "accounts.account_a.api_key_index"),
    ("accounts.account_b.account_index", 281001, "account_a and account_b"),
    ("accounts.account_a.private_key", "0xdeadbeef", "accounts.account_a"),
    ("accounts.account_b.api_key_private_key", "0xdeadbeef", "accounts.account_b"),
    ("accounts.account_a.private_key_env", "lower-case", "accounts.account_a.private_key_env"),
    ("markets.ETH.quantity", "-0.05", "markets.ETH.quantity"),
    ("markets.ETH.quantity", "0", "markets.ETH.quantity"),
    ("markets.ETH.quantity", 0.05, "markets.ETH.quantity"),
    ("markets.ETH.quantity", "lots", "markets.ETH.quantity"),
    ("markets.ETH.quantity", DELETE, "markets.ETH.quantity"),
    ("markets.ETH.depth", 0, "markets.ETH.depth"),
    ("markets.ETH.post_only", "yes", "markets.ETH.post_only"),
    ("markets.DOGE", {"quantity": "10"}, "markets.DOGE.market_index"),
    ("markets.DOGE", {"quantity": "10", "market_index": 0}, "share one market_index"),
    ("markets", {}, "markets"),
    ("lighter.base_url", "ftp://127.0.0.1:8787", "lighter.base_url"),
    ("lighter.base_url", "127.0.0.1:8787", "lighter.base_url"),
    ("lighter.ws_url", "http://127.0.0.1:8787/stream", "lighter.ws_url"),
    ("lighter.chain_id", "304", "lighter.chain_id"),
    ("redis.url", "http://127.0.0.1:6379", "redis.url"),
    ("redis.result_backend_url", "mysql://x", "redis.result_backend_url"),
    ("lighter", DELETE, "lighter"),
    ("mode", "real", "mode"),
    ("keys_file", 7, "keys_file"),
    ("strategy.max_slippage_bps", 0, "strategy.max_slippage_bps"),
    ("strategy.max_slippage_bps", -5, "strategy.max_slippage_bps"),
    ("strategy.max_retries", -1, "strategy.max_retries"),
    ("strategy.maker_order_timeout_s", 0, "strategy.maker_order_timeout_s"),
    ("strategy.hedge_wait_timeout_s", "soon", "strategy.hedge_wait_timeout_s"),
    ("flower.port", 70000, "flower.port"),
    ("lighter.maker_order_time_out", 8, "lighter.maker_order_time_out"),
    ("strategy.retry_times", 3, "strategy.retry_times"),
    ("strategy.poll_interval", 1, "strategy.poll_interval"),
    ("lighter.tier", "gold", "lighter.tier: expected one of standard, premium, plus, builder, unlimited"),
    ("lighter.tier", 60, "lighter.tier"),
    ("lighter.rate_limit", 60, "lighter.rate_limit: expected a mapping like {per_minute: 60"),
    ("lighter.rate_limit", {"weighted": False}, "lighter.rate_limit.per_minute: missing"),
    ("lighter.rate_limit", {"per_minute": "60"}, "lighter.rate_limit.per_minute: expected an integer"),
    ("lighter.rate_limit", {"per_minute": 1}, "lighter.rate_limit.per_minute: expected an integer >= 2"),
    ("lighter.rate_limit", {"per_minute": 600, "weighted": True},
     "lighter.rate_limit.per_minute: expected an integer >= 606"),
    ("lighter.rate_limit", {"per_minute": 60, "weighted": "yes"}, "lighter.rate_limit.weighted: expected true"),
    ("lighter.rate_limit", {"per_minute": 60, "burst": 5}, "lighter.rate_limit.burst: unknown key"),
    ("lighter.rate_limit", {"per_minute": 60, "window_ms": 10}, "lighter.rate_limit.window_ms: expected an integer >= 100"),
    ("lighter.hedge_reserve", "15", "lighter.hedge_reserve: expected an integer in the limit's unit"),
    ("lighter.hedge_reserve", True, "lighter.hedge_reserve: expected an integer"),
    ("lighter.hedge_reserve", 0, "lighter.hedge_reserve: expected 1..59 (requests of standard's 60"),
    ("lighter.hedge_reserve", 60, "lighter.hedge_reserve: expected 1..59"),
    ("sim.tier", "gold", "sim.tier: expected one of instant, premium, standard"),
    ("sim.accounts", [{"index": 281001, "tier": "gold"}], "sim.accounts[281001].tier: expected one of"),
])
def test_bad_field_is_named(path, value, named):
    raw = _with(path, None, delete=True) if value is DELETE else _with(path, value)
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert named in str(err.value)


def test_renamed_key_says_where_it_lives_now():
    with pytest.raises(ConfigError, match="strategy.maker_order_timeout_s"):
        parse_config(_with("lighter.maker_order_time_out", 8))


def test_private_key_value_never_echoed():
    with pytest.raises(ConfigError) as err:
        parse_config(_with("accounts.account_a.private_key", "0xSECRETSECRET"))
    assert "SECRETSECRET" not in str(err.value)


def test_live_mode_refuses_loopback_venue():
    with pytest.raises(ConfigError, match="mode"):
        parse_config(_with("mode", "live"))


@pytest.mark.parametrize("raw", [None, [], "mode: paper"])
def test_top_level_must_be_a_mapping(raw):
    with pytest.raises(ConfigError, match="top level"):
        parse_config(raw)


def test_unknown_market_lookup_names_the_configured_ones():
    cfg = parse_config(good())
    with pytest.raises(ConfigError, match="ETH"):
        cfg.market("SOL")


def test_rediss_url_must_say_how_to_check_the_certificate():
    raw = yaml.safe_load(REPO_CONFIG.read_text())
    raw["redis"] = {"url": "rediss://:pw@redis.example:6380/0"}
    with pytest.raises(ConfigError, match=r"redis\.url: a rediss:// URL needs \?ssl_cert_reqs="):
        parse_config(raw)
    raw["redis"] = {"url": "rediss://:pw@redis.example:6380/0?ssl_cert_reqs=required"}
    assert parse_config(raw).redis_url.endswith("ssl_cert_reqs=required")


# ---- the request budget (hedge/budget.py) ------------------------------------------------------

def test_budget_defaults_standard_live_and_the_simulators_tier_in_paper():
    assert parse_config(good()).rate_limit == rate_limit_for_tier("standard")   # the sim's default tier
    live = _with("lighter.base_url", "https://mainnet.zklighter.elliot.ai")
    live["mode"] = "live"
    live["lighter"]["ws_url"] = "wss://mainnet.zklighter.elliot.ai/stream"
    assert parse_config(live).rate_limit == rate_limit_for_tier("standard")
    assert parse_config(_with("sim.tier", "instant")).rate_limit.limit is None
    assert parse_config(_with("sim.tier", "premium")).rate_limit == rate_limit_for_tier("premium")
    assert parse_config(_with("sim", {"tier": "premium", "rate_limits": False})).rate_limit.tier == "unlimited"
    per_account = _with("sim.accounts", [{"index": 281001, "master": 1, "tier": "premium"},
                                         {"index": 281002, "master": 1, "tier": "premium"}])
    assert parse_config(per_account).rate_limit.tier == "premium"
    # The shipped config.yaml runs the simulator on Lighter's Standard tier: the budget follows it.
    assert parse_config(yaml.safe_load(REPO_CONFIG.read_text())).rate_limit.tier == "standard"   # sim.tier


def test_budget_tier_explicit_figures_and_reserve():
    cfg = parse_config(_with("lighter.tier", "premium"))
    assert (cfg.rate_limit.limit, cfg.rate_limit.weighted, cfg.rate_limit.hedge_reserve) == (24_000, True, 6_000)
    assert parse_config(_with("lighter.hedge_reserve", 20)).rate_limit.hedge_reserve == 20
    custom = parse_config(_with("lighter.rate_limit", {"per_minute": 8, "window_ms": 2000})).rate_limit
    assert (custom.tier, custom.limit, custom.weighted, custom.hedge_reserve, custom.window_ms) == \
        ("custom", 8, False, 2, 2000)
    raw = _with("lighter.tier", "plus")
    raw["lighter"]["rate_limit"] = {"per_minute": 60}
    with pytest.raises(ConfigError, match="lighter.rate_limit: give lighter.tier or lighter.rate_limit, not both"):
        parse_config(raw)


def test_unlimited_budget_only_in_paper_mode():
    assert parse_config(_with("lighter.tier", "unlimited")).rate_limit.limit is None
    live = _with("lighter.tier", "unlimited")
    live["mode"] = "live"
    live["lighter"].update(base_url="https://mainnet.zklighter.elliot.ai", ws_url="wss://mainnet.zklighter.elliot.ai/stream")
    with pytest.raises(ConfigError, match=r"lighter.tier: expected one of standard, premium, plus, builder "
                                          r"\(unlimited only in paper mode\)"):
        parse_config(live)


@pytest.mark.parametrize("path, typo, suggested", [
    (("strategy",), "max_slippage_bp", "strategy.max_slippage_bps"),
    (("strategy",), "max_retires", "strategy.max_retries"),
    (("markets", "ETH"), "quantiy", "markets.ETH.quantity"),
    (("accounts", "account_b"), "api_key_idx", "accounts.account_b.api_key_index"),
    (("lighter",), "teir", "lighter.tier"),
    ((), "strategi", "strategy"),
])
def test_a_misspelt_key_is_refused_naming_the_nearest_known_one(path, typo, suggested):
    """A typo never runs on a default: `max_slippage_bp: 5` would otherwise hedge with 50 bps."""
    raw = good()
    sec = raw
    for key in path:
        sec = sec[key]
    sec[typo] = 5
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    where = ".".join((*path, typo))
    assert str(err.value) == f"{where}: unknown key; did you mean {suggested}?"


def test_an_unknown_key_with_no_near_match_lists_the_known_ones():
    raw = good()
    raw["strategy"]["colour"] = "blue"
    with pytest.raises(ConfigError, match=r"strategy\.colour: unknown key; known keys here: maker_order_timeout_s, "):
        parse_config(raw)


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_a_timeout_must_be_finite(value):
    raw = good()
    raw["strategy"]["hedge_wait_timeout_s"] = value
    with pytest.raises(ConfigError, match=r"strategy\.hedge_wait_timeout_s: expected a positive, finite number"):
        parse_config(raw)


def test_slippage_is_bounded():
    raw = good()
    raw["strategy"]["max_slippage_bps"] = 20000   # B's sells would go out at any price
    with pytest.raises(ConfigError, match=r"strategy\.max_slippage_bps: expected at most 1000 \(10 %\), got 20000"):
        parse_config(raw)
    raw["strategy"]["max_slippage_bps"] = 1000
    assert parse_config(raw).strategy.max_slippage_bps == Decimal(1000)
