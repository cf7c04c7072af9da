"""The alerts: section of config.yaml and metrics.alerter_port: defaults, and one line naming a bad field."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from hedge.config import ALERT_KINDS, AlertsConfig, ConfigError, parse_config


def raw(alerts=None, **metrics):
    cfg = {"lighter": {"base_url": "http://127.0.0.1:8787", "ws_url": "ws://127.0.0.1:8787/stream"},
           "redis": {"url": "redis://127.0.0.1:6379/0"},
           "accounts": {"account_a": {"account_index": 1, "api_key_index": 3},
                        "account_b": {"account_index": 2, "api_key_index": 4}},
           "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}}
    if alerts is not None:
        cfg["alerts"] = alerts
    if metrics:
        cfg["metrics"] = metrics
    return cfg


def test_alerts_default_off_plain_every_kind():
    a = parse_config(raw()).alerts
    assert a == AlertsConfig()
    assert (a.enabled, a.format, a.webhook_url_env, a.kinds) == (False, "plain", "LH_ALERT_WEBHOOK_URL", ALERT_KINDS)


def test_shipped_config_yaml_parses_with_alerts_off():
    shipped = yaml.safe_load((Path(__file__).resolve().parents[2] / "config.yaml").read_text())
    cfg = parse_config(shipped)
    assert cfg.alerts.enabled is False and cfg.metrics.alerter_port not in (cfg.metrics.maker_port,
                                                                             cfg.metrics.worker_port)


def test_alerts_fields_parsed():
    a = parse_config(raw({"enabled": True, "format": "telegram", "telegram_chat_id": -1001234567890,
                          "webhook_url_env": "MY_HOOK", "kinds": ["paused", "no_consumer", "paused"],
                          "no_consumer_s": 5, "consumer_check": "heartbeat", "budget_wait_s": 0.5,
                          "budget_clear_s": 30, "poll_interval_s": 0.25, "delivery_attempts": 2,
                          "delivery_timeout_s": 3})).alerts
    assert a == AlertsConfig(True, "MY_HOOK", "telegram", -1001234567890, ("paused", "no_consumer"), 5.0,
                             "heartbeat", 0.5, 30.0, 0.25, 2, 3.0)
    assert parse_config(raw({"format": "telegram", "telegram_chat_id": "@ops_alerts"})).alerts.telegram_chat_id \
        == "@ops_alerts"
    assert parse_config(raw(alerter_port=9103)).metrics.alerter_port == 9103


@pytest.mark.parametrize("alerts,named", [
    ({"enabled": "yes"}, "alerts.enabled"),
    ({"format": "teams"}, "alerts.format"),
    ({"format": "telegram"}, "alerts.telegram_chat_id"),
    ({"telegram_chat_id": "a chat"}, "alerts.telegram_chat_id"),
    ({"webhook_url_env": "lower-case"}, "alerts.webhook_url_env"),
    ({"webhook_url": "https://hooks.slack.com/services/T/B/X"}, "alerts.webhook_url"),
    ({"kinds": []}, "alerts.kinds"),
    ({"kinds": ["paused", "pasued"]}, "alerts.kinds"),
    ({"no_consumer_s": 0}, "alerts.no_consumer_s"),
    ({"no_consumer_s": float("inf")}, "alerts.no_consumer_s"),
    ({"consumer_check": "inspect"}, "alerts.consumer_check"),
    ({"budget_wait_s": -1}, "alerts.budget_wait_s"),
    ({"delivery_attempts": 0}, "alerts.delivery_attempts"),
    ({"delivery_attempts": 100}, "alerts.delivery_attempts"),
    ({"poll_interval": 2}, "alerts.poll_interval"),
])
def test_bad_alerts_fields_are_named(alerts, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")) as caught:
        parse_config(raw(alerts))
    assert "\n" not in str(caught.value)


def test_the_webhook_url_is_never_echoed_from_config():
    with pytest.raises(ConfigError) as caught:
        parse_config(raw({"webhook_url": "https://hooks.slack.com/services/T/B/SECRETX"}))
    assert "SECRETX" not in str(caught.value)


def test_a_misspelt_alerts_key_names_the_nearest():
    with pytest.raises(ConfigError, match=r"alerts\.no_consumer: unknown key; did you mean alerts\.no_consumer_s"):
        parse_config(raw({"no_consumer": 5}))


@pytest.mark.parametrize("metrics,named", [
    ({"maker_port": 9101, "alerter_port": 9101}, "metrics.alerter_port"),
    ({"alerter_port": 70000}, "metrics.alerter_port"),
])
def test_bad_alerter_port_is_named(metrics, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(raw(**metrics))


def test_alerts_section_must_be_a_mapping():
    with pytest.raises(ConfigError, match="alerts: expected a mapping"):
        parse_config(raw(5))
