"""The metrics: section of config.yaml (Prometheus endpoints of maker and worker)."""
import pytest

from hedge.config import ConfigError, parse_config


def raw(**metrics):
    cfg = {"lighter": {"base_url": "http://127.0.0.1:8787", "ws_url": "ws://127.0.0.1:8787/stream"},
           "redis": {"url": "redis://127.0.0.1:6379/0"},
           "accounts": {"account_a": {"account_index": 1, "api_key_index": 3},
                        "account_b": {"account_index": 2, "api_key_index": 4}},
           "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}}
    if metrics:
        cfg["metrics"] = metrics
    return cfg


def test_metrics_default_off_and_ports_parsed():
    assert parse_config(raw()).metrics.maker_port == 0
    m = parse_config(raw(maker_port=9101, worker_port=9102)).metrics
    assert (m.maker_port, m.worker_port, m.host) == (9101, 9102, "127.0.0.1")


@pytest.mark.parametrize("metrics,named", [
    ({"maker_port": "x"}, "metrics.maker_port"),
    ({"worker_port": 70000}, "metrics.worker_port"),
    ({"maker_port": -1}, "metrics.maker_port"),
    ({"maker_port": 9101, "worker_port": 9101}, "metrics.worker_port"),
    ({"host": "bad host!"}, "metrics.host"),
    ({"port": 1}, "metrics.port"),
])
def test_bad_metrics_fields_are_named(metrics, named):
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        parse_config(raw(**metrics))


def test_metrics_section_must_be_a_mapping():
    cfg = raw()
    cfg["metrics"] = 5
    with pytest.raises(ConfigError, match="metrics"):
        parse_config(cfg)
