"""`lighter-hedge demo`: everything under supervisord in paper mode, hedges printed live, a summary.

Exit 0 when every market ends with zero net exposure, 1 otherwise, 2 on a setup error.

The summary ends with what the venue counted (`venue ...`, from the simulator's /admin/stats) and
what our request budget counted in its rolling minute (`budget ...`, from Redis).
"""
from __future__ import annotations

import asyncio
import json
import os
import statistics
import time
from decimal import Decimal
from pathlib import Path

import click

from hedge.config import Config
from ops import supervise
from ops.settings import PROJECT_ROOT, config_path
from ops.status import CLI_PROCESS
from tasks.store import Store
from venue.budget import budget_from_config
from venue.client import public_positions
from venue.keys import ensure_paper_keys

APPS = ("sim", "worker", "maker", "flower")


def run_demo(cfg: Config, config_file: str | None, rounds: int, max_seconds: int) -> int:
    if cfg.mode != "paper":
        click.echo("demo runs in paper mode only (mode: paper in config.yaml)", err=True)
        return 2
    started = time.monotonic()
    ensure_paper_keys(cfg)
    run_dir = Path(os.environ.get("LH_RUN_DIR", PROJECT_ROOT / "run"))
    log_dir = Path(os.environ.get("LH_LOG_DIR", PROJECT_ROOT / "logs"))
    env = supervise.supervisor_env(cfg, Path(config_path(config_file)), run_dir, log_dir, autostart=False)
    if (run_dir / "supervisord.pid").exists():
        supervise.shutdown(env, timeout_s=30)  # a previous demo left running
    supervise.start(env, cfg)
    try:
        supervise.wait_for_redis(cfg.redis_url, 20)
        store = Store.from_url(cfg.redis_url)
        supervise.clear_paper_state(store)
        pubsub = store.r.pubsub(ignore_subscribe_messages=True)
        pubsub.subscribe(store.events_channel)  # before anything can trade, so no event is missed
        supervise.start_programs(env, [a for a in APPS if a != "sim"], already_started=("sim",),
                                 ready=supervise.readiness(cfg, env))
        click.echo(f"demo: paper mode, markets {', '.join(cfg.markets)}, {rounds} round(s) each; "
                   f"logs in {log_dir}/")
        markets = list(cfg.markets)
        latencies: dict[str, list[int]] = {m: [] for m in markets}
        _follow(pubsub, lambda: all(store.stats(m).get("rounds", 0) >= rounds for m in markets),
                started + max_seconds, latencies)
        for market in markets:
            store.pause(market, "demo finished", by="demo")
        if not _follow(pubsub, lambda: _quiet(store, markets), time.monotonic() + 30, latencies):
            click.echo("demo: the maker did not settle in time; the summary shows what the venue holds", err=True)
        ok = _summary(cfg, store, latencies)
        _venue_requests(cfg, time.monotonic() - started)
        _budget_usage(cfg, store)
        click.echo(f"Flower: http://127.0.0.1:{cfg.flower_port} (user {supervise.flower_user()}, "
                   f"password in $LH_FLOWER_PASSWORD or {run_dir}/flower-password)")
        click.echo(f"demo took {time.monotonic() - started:.0f}s")
        return 0 if ok else 1
    finally:
        supervise.shutdown(env)


def _follow(pubsub, until, deadline: float, latencies: dict[str, list[int]]) -> bool:
    """Print fills and hedges as they happen until `until()` holds; False at the deadline."""
    while not until():
        if time.monotonic() > deadline:
            return False
        message = pubsub.get_message(timeout=0.5)
        if message:
            _print_event(json.loads(message["data"]), latencies)
    while (message := pubsub.get_message(timeout=0.05)):  # what arrived with the last check
        _print_event(json.loads(message["data"]), latencies)
    return True


def _print_event(event: dict, latencies: dict[str, list[int]]) -> None:
    kind = event.get("event")
    if kind == "fill":
        click.echo(f"fill   market={event['market']} fill_id={event['fill_id']} side={event['side']} "
                   f"base={event['base_amount']} price={event['price']}")
    elif kind == "hedge.done":
        latencies.setdefault(event["market"], []).append(int(event["latency_ms"]))
        click.echo(f"hedge  market={event['market']} fill_id={event['fill_id']} side={event['side']} "
                   f"filled_base={event['filled_base']} avg_price={event['avg_price']} "
                   f"latency_ms={event['latency_ms']} attempts={event['attempts']}")
    elif kind == "hedge.failed":
        click.echo(f"FAILED market={event['market']} fill_id={event['fill_id']} reason={event['reason']}")


def _quiet(store: Store, markets: list[str]) -> bool:
    return all((store.state(m) or {}).get("state") == "PAUSED" and not store.inflight(m) for m in markets)


def _summary(cfg: Config, store: Store, latencies: dict[str, list[int]]) -> bool:
    a, b = cfg.account_a.account_index, cfg.account_b.account_index
    positions = asyncio.run(public_positions(cfg.base_url, [a, b], budget_from_config(cfg, store.r), CLI_PROCESS))
    ok = True
    for market, m in cfg.markets.items():
        pa = positions[a].get(m.market_index, Decimal(0))
        pb = positions[b].get(m.market_index, Decimal(0))
        net = pa + pb
        ok = ok and net == 0
        stats = store.stats(market)
        lat = sorted(latencies.get(market) or [])
        click.echo(f"market={market} rounds={stats.get('rounds', 0)} fills={stats.get('fills', 0)} "
                   f"hedges={stats.get('hedges', 0)} net_exposure={_num(net)} a_position={_num(pa)} "
                   f"b_position={_num(pb)} failed={len(store.failed(market))} "
                   f"p50_latency_ms={statistics.median(lat) if lat else 'na'} "
                   f"max_latency_ms={lat[-1] if lat else 'na'}")
    return ok


def _venue_requests(cfg: Config, elapsed_s: float) -> None:
    """What the paper exchange counted against Lighter's request limits during the demo."""
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback only
    try:
        with opener.open(cfg.base_url.rstrip("/") + "/admin/stats", timeout=5) as resp:
            stats = json.loads(resp.read())
    except (OSError, ValueError) as exc:
        click.echo(f"venue: request counts unavailable ({type(exc).__name__}: {exc})", err=True)
        return
    by_endpoint: dict[str, int] = {}
    refused = 0
    for per_endpoint in stats["requests"].values():
        for endpoint, counts in per_endpoint.items():
            by_endpoint[endpoint] = by_endpoint.get(endpoint, 0) + counts.get("requests", 0)
            refused += counts.get("http_429", 0)
    total = sum(by_endpoint.values())
    tiers = sorted({b["tier"] for b in stats["rolling_minute"].values() if b["tier"] != "ip"})
    ranked = ",".join(f"{e}:{n}" for e, n in sorted(by_endpoint.items(), key=lambda kv: -kv[1]))
    click.echo(f"venue tier={'/'.join(tiers) or 'none'} rate_limits={str(stats['rate_limits']).lower()} "
               f"requests={total} requests_per_min={total * 60 / max(elapsed_s, 1):.0f} http_429={refused} "
               f"by_endpoint={ranked}")


def _budget_usage(cfg: Config, store: Store) -> None:
    """Our own count: the request budget's rolling minute (all processes) and the 429s it saw."""
    import redis
    try:
        u = budget_from_config(cfg, store.r).usage()
    except redis.RedisError as exc:
        click.echo(f"budget: usage unavailable ({type(exc).__name__}: {exc})", err=True)
        return
    weighted = u.unit == "weight"
    by_process = ",".join(f"{p}:{pu.weight if weighted else pu.requests}"
                          for p, pu in sorted(u.by_process.items()) if pu.requests)
    click.echo(f"budget tier={u.tier} used={u.used} limit={'none' if u.limit is None else u.limit} unit={u.unit} "
               f"hedge_reserve={u.hedge_reserve} http_429={u.http_429} by_process={by_process or '-'}")


def _num(value: Decimal) -> str:
    return "0" if value == 0 else str(value)
