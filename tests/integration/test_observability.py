"""Metrics endpoints, `status --watch`, and one journey per fill in the logs."""
from __future__ import annotations

import re
import urllib.request

import pytest
import yaml

from tests.integration.cluster import B, wait_until
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def test_metrics_status_watch_and_fill_journey(make_cluster):
    c = make_cluster()
    ports = {"maker_port": free_port(), "worker_port": free_port()}
    c.config["metrics"] = ports
    c.config_path.write_text(yaml.safe_dump(c.config))
    c.start_worker()
    c.start_maker()
    buy = c.wait_resting_order()
    trade_id = c.fill(buy, ["0.0500"])["trade_ids"][0]  # the whole order: the maker then waits on its hedge
    wait_until(lambda: c.position(B) < 0, 30, "the hedge")
    wait_until(lambda: f"event=maker.hedge_ok fill_id={trade_id} " in c.log("maker"), 30, "the maker's hedge_ok")

    worker = scrape(ports["worker_port"])
    assert re.search(r'lh_fill_to_hedge_sent_seconds_count\{market="ETH"\} 1\.0', worker), worker
    assert re.search(r'lh_fill_to_hedge_confirmed_seconds_count\{market="ETH"\} 1\.0', worker)
    assert re.search(r'lh_hedges_total\{market="ETH",outcome="hedged"\} 1\.0', worker)
    maker = scrape(ports["maker_port"])
    for name in ("lh_fills_total", "lh_unhedged_base", "lh_inflight_hedges", "lh_paused"):
        assert f'{name}{{market="ETH"}}' in maker, name

    watch = c.cli("status", "--watch", "--interval", "0.1", "--count", "2")
    assert watch.returncode == 0, watch.stderr
    assert len(re.findall(r"^-- \d\d:\d\d:\d\d$", watch.stdout, re.M)) == 2
    assert watch.stdout.count("market=ETH") == 2 and f"last_hedge_fill_id={trade_id}" in watch.stdout

    # One journey: every process's lines about this fill carry its fill_id.
    story = [line for name in ("maker", "worker") for line in c.log(name).splitlines()
             if f"fill_id={trade_id} " in line]
    events = {m.group(1) for line in story for m in [re.search(r"event=(\S+)", line)] if m}
    assert {"fill.enqueued", "hedge.sending", "hedge.sent", "hedge.leg", "hedge.done",
            "maker.hedge_ok"} <= events, events
