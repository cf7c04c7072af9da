"""A throwaway deployment for benchmarks: the simulator, a Redis db of our own, `lighter-hedge worker`
and `lighter-hedge maker` as real subprocesses. Loopback only; everything is stopped and the db
flushed and unlocked on close.
"""
from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable

import redis
import yaml

from venue.keys import TASK_SIGNING_KEY_FIELD, read_key_file, write_key_file
from venue.process_env import PROCESS_ENV
from venue.sim.harness import SimProcess, fill_new_orders, free_port, profile_config, start_sim
from venue.sim.harness import wait_until as harness_wait_until

A, B, C, MASTER = 281001, 281002, 281003, 281000  # C: the floor script's own account
KEY_A, KEY_B, KEY_C = 3, 4, 5
ETH = 0
BIN = Path(sys.executable).parent
BASE_REDIS = os.environ.get("LH_BENCH_REDIS", "redis://127.0.0.1:6379")
LOCK_PREFIX = "lighter-hedge:test-db-lock:"  # shared with tests/conftest.py: never the same db


def wait_until(predicate: Callable[[], Any], timeout_s: float, what: str, interval_s: float = 0.002) -> Any:
    """Fine-grained polling: the benchmarks time what they wait for."""
    return harness_wait_until(predicate, timeout_s, what, interval_s)


def lock_redis_db() -> tuple[str, Callable[[], None]]:
    """A Redis db (1..15) nobody else uses, locked like the test suite does; returns (url, release)."""
    client = redis.Redis.from_url(f"{BASE_REDIS}/0", socket_connect_timeout=2)
    client.ping()
    for db in range(15, 0, -1):
        key = f"{LOCK_PREFIX}{db}"
        if client.set(key, f"bench:{os.getpid()}", nx=True, ex=3600):
            url = f"{BASE_REDIS}/{db}"
            redis.Redis.from_url(url).flushdb()

            def release() -> None:
                redis.Redis.from_url(url).flushdb()
                client.delete(key)
            return url, release
    raise SystemExit("no free Redis db (1..15) for the benchmark")


def make_keys(path: str, accounts: list[tuple[int, int]]) -> None:
    """Throwaway API keys for paper accounts (generated in a child: the Go signer stays out of here)."""
    existing = read_key_file(path)
    wanted = [(a, k) for a, k in accounts if str(a) not in existing]
    if not existing.get(TASK_SIGNING_KEY_FIELD):
        existing[TASK_SIGNING_KEY_FIELD] = secrets.token_hex(32)   # maker and worker sign/check hedge messages
        write_key_file(path, existing)
    if not wanted:
        return
    code = ("import json, lighter\nout = []\n"
            f"for _ in range({len(wanted)}):\n"
            "    priv, pub, err = lighter.create_api_key()\n    assert err is None, err\n"
            "    out.append([priv, pub])\nprint(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True,
                          timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"could not generate keys: {proc.stderr[-300:]}")
    for (account, key_index), (priv, pub) in zip(wanted, json.loads(proc.stdout)):
        existing[str(account)] = {"api_key_index": key_index, "private_key": priv, "public_key": pub}
    write_key_file(path, existing)


class BenchCluster:
    def __init__(self, *, quantity: str, strategy: dict | None = None, metrics: bool = True,
                 sim: dict | None = None, keep_dir: bool = False, profile: str = "instant",
                 lighter: dict | None = None):
        self.workdir = Path(tempfile.mkdtemp(prefix="lh-bench-"))
        self.keep_dir = keep_dir
        self.redis_url, self._release = lock_redis_db()
        self.procs: dict[str, subprocess.Popen] = {}
        self.sim: SimProcess | None = None
        try:
            self.keys_file = str(self.workdir / "keys.json")
            make_keys(self.keys_file, [(A, KEY_A), (B, KEY_B), (C, KEY_C)])
            sim_config = {"taker_flow": False, "random_walk": False, "tick_ms": 100, "accounts": [
                {"index": A, "master": MASTER, "collateral": "100000000", "api_key_indexes": [KEY_A]},
                {"index": B, "master": MASTER, "collateral": "100000000", "api_key_indexes": [KEY_B]},
                {"index": C, "master": MASTER + 10, "collateral": "100000000", "api_key_indexes": [KEY_C]}],
                # deep synthetic book: a hedge of a 1,000-fill burst fills inside max_slippage_bps
                "levels": 20, "level_size_min_lots": 400, "level_size_max_lots": 800}
            sim_config = profile_config(profile, {**sim_config, **(sim or {})})
            self.sim = start_sim(sim_config, profile=profile, keys_file=self.keys_file,
                                 log_path=str(self.workdir / "sim.log"))
            self.metrics_ports = {"maker_port": free_port(), "worker_port": free_port()} if metrics else {}
            big = str(Decimal(quantity) * 4)
            self.config = {
                "mode": "paper",
                "lighter": {"base_url": self.sim.base_url, "ws_url": self.sim.ws_url, **(lighter or {})},
                "redis": {"url": self.redis_url},
                "keys_file": self.keys_file,
                "accounts": {"account_a": {"account_index": A, "api_key_index": KEY_A},
                             "account_b": {"account_index": B, "api_key_index": KEY_B}},
                "markets": {"ETH": {"quantity": quantity, "depth": 2, "post_only": True,
                                    "max_position_base": big, "max_unhedged_base": big}},
                "strategy": {"maker_order_timeout_s": 600, "max_retries": 2, "retry_backoff_max_s": 1,
                             "max_slippage_bps": 50, "hedge_wait_timeout_s": 120,
                             "max_hedges_per_minute": 1_000_000, "reconcile_interval_s": 600,
                             **(strategy or {})},
                "metrics": self.metrics_ports,
                "sim": sim_config,
            }
            self.config_path = self.workdir / "config.yaml"
            self.config_path.write_text(yaml.safe_dump(self.config))
            self.r = redis.Redis.from_url(self.redis_url, decode_responses=True)
        except BaseException:
            self.close()
            raise

    # ---- processes -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ, LH_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1",
                   PYTHONWARNINGS="ignore::DeprecationWarning", **PROCESS_ENV)  # as supervisord.conf
        env.pop("LH_REDIS_URL", None)
        for k in list(env):
            if k.lower() in ("http_proxy", "https_proxy", "all_proxy"):
                env.pop(k)  # loopback only
        env["NO_PROXY"] = env["no_proxy"] = "127.0.0.1,localhost"
        return env

    def spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen([str(BIN / "lighter-hedge"), *args, "--config", str(self.config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self) -> None:
        self.spawn("worker", "worker", "--log-level", "INFO")
        wait_until(lambda: "ready." in self.log("worker") or self.procs["worker"].poll() is not None, 60,
                   "worker ready", 0.05)
        if self.procs["worker"].poll() is not None:
            raise RuntimeError(f"worker died:\n{self.log('worker')[-2000:]}")

    def start_maker(self, *args: str) -> None:
        self.spawn("maker", "maker", *args)

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 20) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGTERM, 10)
        if self.sim is not None:
            self.sim.stop()
        self._release()
        if not self.keep_dir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> "BenchCluster":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- venue views ---------------------------------------------------------------------------

    def positions(self, market: int = ETH) -> tuple[Decimal, Decimal]:
        accounts = self.sim.admin("/admin/state")["accounts"]
        return tuple(Decimal(accounts[str(a)]["markets"][str(market)]["position"]) for a in (A, B))

    def active_orders(self, account: int = A, market: int = ETH) -> list[dict]:
        # The admin view: the driver spends none of the venue's request budget (the engine's).
        status, body = self.sim.request("GET", f"/admin/orders?account_index={account}&market_id={market}")
        return body["orders"] if status == 200 else []

    def orders_log(self, account: int) -> list[dict]:
        return self.sim.admin(f"/admin/orders_log?account_index={account}")["orders_log"]

    def fill(self, order: dict, sizes: list[str], one_frame: bool = False, delay_ms: int = 0) -> list[int]:
        """A's order filled by trades of these sizes (their ids; none yet when delayed)."""
        return self.sim.admin("/admin/fill", {"account_index": A, "market_id": ETH, "one_frame": one_frame,
                                              "order_index": order["order_index"], "sizes": sizes,
                                              "delay_ms": delay_ms})["trade_ids"]

    def fill_new_orders(self, filled: set[int]) -> None:
        """Fill each of A's resting orders not in `filled` whole, once (adds it to `filled`)."""
        fill_new_orders(self, filled)

    def metrics(self, which: str) -> dict[str, float]:
        """The maker's or worker's Prometheus metrics, flattened: 'name{labels}' -> value."""
        import urllib.request
        port = self.metrics_ports[f"{which}_port"]
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        text = opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
        out = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                out[name] = float(value)
        return out


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile (q in 0..100)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(1, min(len(ordered), int(-(-q * len(ordered) // 100))))
    return ordered[rank - 1]
