"""A bad config stops a process at once with one line naming the problem, and nothing trades."""
from __future__ import annotations

import copy
import subprocess

import pytest
import yaml

from tests.integration.cluster import A, B, BIN, wait_until

pytestmark = pytest.mark.integration


def _without(cfg: dict, *path: str) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    del node[path[-1]]
    return cfg


def _with(cfg: dict, value, *path: str) -> dict:
    cfg = copy.deepcopy(cfg)
    node = cfg
    for key in path[:-1]:
        node = node[key]
    node[path[-1]] = value
    return cfg


CASES = {
    "missing account": (lambda c: _without(c, "accounts", "account_b"), "accounts.account_b"),
    "negative quantity": (lambda c: _with(c, "-0.0500", "markets", "ETH", "quantity"), "markets.ETH.quantity"),
    "float quantity": (lambda c: _with(c, 0.05, "markets", "ETH", "quantity"), "markets.ETH.quantity"),
    "unknown market": (lambda c: _with(c, {"DOGEX": {"quantity": "1"}}, "markets"), "markets.DOGEX.market_index"),
    "market the venue lacks": (lambda c: _with(c, {"XYZ": {"quantity": "1", "market_index": 77}}, "markets"),
                               "market_id 77"),
    "unreachable broker": (lambda c: _with(c, {"url": "redis://127.0.0.1:1/0"}, "redis"), "127.0.0.1:1"),
    "key in the YAML": (lambda c: _with(c, "0x" + "ab" * 40, "accounts", "account_a", "private_key"),
                        "accounts.account_a"),
    "old key name": (lambda c: _with(c, {**c["lighter"], "maker_order_time_out": 30}, "lighter"),
                     "strategy.maker_order_timeout_s"),
}


@pytest.mark.parametrize("case", list(CASES))
@pytest.mark.parametrize("program", ["maker", "worker"])
def test_bad_config_exits_with_one_line_and_places_no_order(make_cluster, tmp_path, case, program):
    if program == "worker" and case == "market the venue lacks":
        pytest.skip("the worker learns markets lazily; the maker is what refuses to quote it")
    cluster = make_cluster()
    mutate, expected = CASES[case]
    bad = tmp_path / "bad.yaml"
    bad.write_text(yaml.safe_dump(mutate(cluster.config)))

    proc = subprocess.run([str(BIN / "lighter-hedge"), program, "--config", str(bad)],
                          capture_output=True, text=True, env=cluster.env(), timeout=60)

    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode != 0
    assert len(lines) == 1, proc.stderr
    assert expected in lines[0], lines[0]
    assert "Traceback" not in proc.stderr + proc.stdout
    assert cluster.orders_log(A) == [] and cluster.orders_log(B) == []


def test_up_refuses_while_a_deployment_runs_on_that_redis_and_changes_nothing(make_cluster, tmp_path):
    """A second `lighter-hedge up` used to wipe the running deployment's Redis state."""
    c = make_cluster()
    c.start_worker()
    wait_until(c.store.worker_alive, 30, "the running worker's heartbeat")
    c.store.pause("ETH", "operator check", by="cli")   # live state the second `up` must not touch

    env = dict(c.env(), LH_RUN_DIR=str(tmp_path / "run"), LH_LOG_DIR=str(tmp_path / "logs"))
    up = subprocess.run([str(BIN / "lighter-hedge"), "up", "--config", str(c.config_path)],
                        capture_output=True, text=True, env=env, timeout=60)

    assert up.returncode == 2, (up.stdout, up.stderr)
    assert "a hedge worker is running" in up.stderr and "nothing was changed" in up.stderr
    assert "Traceback" not in up.stderr
    assert c.store.paused("ETH")["reason"] == "operator check"
    assert not (tmp_path / "run" / "supervisord.pid").exists()
