"""Bad input is refused with the module's own error, never an unexpected exception, never a trade."""
from __future__ import annotations

import asyncio
import copy
from decimal import Decimal
from pathlib import Path

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from hedge.config import ConfigError, parse_config
from hedge.fill import InvalidFill, fill_from_trade
from tasks.hedge import PermanentHedgeError, hedge_one

REPO_CONFIG = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
A = 281001

junk = st.recursive(
    st.none() | st.booleans() | st.integers(-2**70, 2**70) | st.floats(allow_nan=True)
    | st.text(max_size=12) | st.sampled_from(["", "-1", "0", "1e999", "NaN", "0x10", "３", "--5"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6)


def _paths(node, prefix=()):
    if isinstance(node, dict):
        for key, value in node.items():
            yield prefix + (key,)
            yield from _paths(value, prefix + (key,))


CONFIG_PATHS = list(_paths(REPO_CONFIG))


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])  # no timing in a unit test
@given(st.lists(st.tuples(st.sampled_from(CONFIG_PATHS), junk | st.just("<delete>")), min_size=1, max_size=3))
def test_a_mangled_config_is_accepted_or_refused_naming_a_field(edits):
    cfg = copy.deepcopy(REPO_CONFIG)
    for path, value in edits:
        node = cfg
        for key in path[:-1]:
            if not isinstance(node, dict) or key not in node:
                break
            node = node[key]
        else:
            if isinstance(node, dict):
                if value == "<delete>":
                    node.pop(path[-1], None)
                else:
                    node[path[-1]] = value
    try:
        parse_config(cfg)
    except ConfigError as exc:
        message = str(exc)
        assert ":" in message and message.split(":")[0].strip(), message  # "<field>: <what is wrong>"


VALID_FILL = {"fill_id": "77", "market_index": 0, "side": "buy", "base_amount": "0.0100", "price": "3000.00",
              "order_index": 281474976710700, "client_order_index": 5, "ts_exchange_ms": 1, "ts_seen_ms": 2}


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(list(VALID_FILL)), junk | st.just("<delete>"))
def test_a_malformed_task_payload_fails_permanently_before_touching_redis_or_the_venue(key, value):
    payload = dict(VALID_FILL)
    if value == "<delete>":
        del payload[key]
    else:
        payload[key] = value
    from hedge.fill import Fill
    try:
        valid = Fill.from_message(payload).market_index == 0   # parsed, and a market of the config
    except InvalidFill:
        valid = False
    if valid:
        return  # still a well-formed fill: not this test's business
    cfg = parse_config(REPO_CONFIG)

    class Untouchable:
        def __getattr__(self, name):  # any use of the store or the venue would be a bug here
            raise AssertionError(f"touched {name} for a malformed payload")

    try:
        asyncio.run(hedge_one(cfg, Untouchable(), Untouchable(), payload, attempt=1))
    except PermanentHedgeError as exc:
        assert "refused fill message" in str(exc)
    else:
        raise AssertionError("a malformed payload was accepted")


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(st.sampled_from(["trade_id", "market_id", "size", "price", "ask_id", "bid_id",
                                        "ask_account_id", "bid_account_id", "ask_client_id", "bid_client_id",
                                        "timestamp"]), junk, max_size=11))
def test_a_malformed_trade_is_refused_with_invalid_fill(trade):
    try:
        fill = fill_from_trade(trade, A, ts_seen_ms=0)
    except InvalidFill:
        return
    if fill is not None:
        assert fill.base_amount > 0 and fill.price > 0 and isinstance(fill.base_amount, Decimal)
