"""A real lighter-hedge deployment for tests: simulator, Redis db, Celery worker and maker processes.

No stand-ins: the worker is `lighter-hedge worker` (Celery, solo pool) against the local
Redis, the maker is `lighter-hedge maker`, both using the real SDK against the simulator.
"""
from __future__ import annotations

import os
import signal
import subprocess
import sys
from decimal import Decimal
from pathlib import Path

import yaml

from venue.process_env import PROCESS_ENV
from venue.sim.harness import SimProcess, profile_config, start_sim, wait_until  # noqa: F401 (re-exported for tests)

A, B, MASTER = 281001, 281002, 281000
ETH = 0
BIN = Path(sys.executable).parent


class Cluster:
    def __init__(self, workdir: Path, redis_url: str, keys_file: str, *, strategy: dict | None = None,
                 sim: dict | None = None, markets: dict | None = None, profile: str = "instant"):
        self.workdir = workdir
        self.redis_url = redis_url
        self.keys_file = keys_file
        sim_config = {"taker_flow": False, "random_walk": False, "accounts": [
            {"index": A, "master": MASTER, "collateral": "1000000", "api_key_indexes": [3]},
            {"index": B, "master": MASTER, "collateral": "1000000", "api_key_indexes": [4]}]}
        sim_config = profile_config(profile, {**sim_config, **(sim or {})})
        self.sim: SimProcess = start_sim(sim_config, profile=profile, keys_file=keys_file,
                                         log_path=str(workdir / "sim.log"))
        self.config = {
            "mode": "paper",
            "lighter": {"base_url": self.sim.base_url, "ws_url": self.sim.ws_url},
            "redis": {"url": redis_url},
            "keys_file": keys_file,
            "accounts": {"account_a": {"account_index": A, "api_key_index": 3},
                         "account_b": {"account_index": B, "api_key_index": 4}},
            "markets": markets or {"ETH": {"quantity": "0.0500", "depth": 1, "post_only": True}},
            "strategy": {"maker_order_timeout_s": 60, "max_retries": 2, "retry_backoff_max_s": 1,
                         "max_slippage_bps": 50, "hedge_wait_timeout_s": 60, **(strategy or {})},
            "sim": sim_config,
        }
        self.config_path = workdir / "config.yaml"
        self.config_path.write_text(yaml.safe_dump(self.config))
        self.procs: dict[str, subprocess.Popen] = {}
        from tasks.store import Store
        self.store = Store.from_url(redis_url)

    # ---- processes -------------------------------------------------------------------------

    def env(self) -> dict[str, str]:
        env = dict(os.environ, LH_CONFIG=str(self.config_path), PYTHONUNBUFFERED="1",
                   PYTHONWARNINGS="ignore::DeprecationWarning", **PROCESS_ENV)  # as supervisord.conf
        env.pop("LH_REDIS_URL", None)
        return env

    def _spawn(self, name: str, *args: str) -> subprocess.Popen:
        log = open(self.workdir / f"{name}.log", "ab")
        proc = subprocess.Popen([str(BIN / "lighter-hedge"), *args, "--config", str(self.config_path)],
                                stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self) -> None:
        self._spawn("worker", "worker")
        wait_until(lambda: "ready." in self.log("worker") or self._died("worker"), 30, "worker ready")
        assert not self._died("worker"), self.log("worker")

    def start_maker(self) -> None:
        self._spawn("maker", "maker")

    def stop(self, name: str, sig: int = signal.SIGTERM, timeout_s: float = 30) -> None:
        proc = self.procs.pop(name, None)
        if proc is None or proc.poll() is not None:
            return
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)

    def _died(self, name: str) -> bool:
        proc = self.procs.get(name)
        return proc is not None and proc.poll() is not None

    def log(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run([str(BIN / "lighter-hedge"), *args, "--config", str(self.config_path)],
                              capture_output=True, text=True, env=self.env(), timeout=60)

    def close(self) -> None:
        for name in list(self.procs):
            self.stop(name, signal.SIGKILL, 10)
        self.sim.stop()

    # ---- venue views (from the simulator's side) ----------------------------------------------

    def position(self, account: int, market: int = ETH) -> Decimal:
        state = self.sim.admin("/admin/state")
        return Decimal(state["accounts"][str(account)]["markets"][str(market)]["position"])

    def active_orders(self, account: int = A, market: int = ETH) -> list[dict]:
        # The admin view: a test's own look spends none of the venue's request budget.
        status, body = self.sim.request("GET", f"/admin/orders?account_index={account}&market_id={market}")
        assert status == 200, body
        return body["orders"]

    def wait_resting_order(self, timeout_s: float = 30) -> dict:
        orders = wait_until(lambda: self.active_orders(), timeout_s, "A's resting order")
        assert len(orders) == 1, orders
        return orders[0]

    def fill(self, order: dict, sizes: list[str]) -> list:
        return self.sim.admin("/admin/fill", {"account_index": A, "market_id": ETH,
                                              "order_index": order["order_index"], "sizes": sizes})

    def orders_log(self, account: int) -> list[dict]:
        return self.sim.admin(f"/admin/orders_log?account_index={account}")["orders_log"]

    def send_hedge(self, fill: object, task_id: str, *, key: bytes | None = None, generation: str | None = None):
        """Enqueue tasks.hedge_fill as the maker does: signed with this deployment's task signing key
        (or `key`) for the ledger generation Redis holds (or `generation`). Returns its AsyncResult."""
        from celery.result import AsyncResult

        from tasks import app
        from tasks.hedge_task import send_hedge
        from tasks.signing import MessageSigner
        from venue.keys import TASK_SIGNING_KEY_FIELD, read_key_file
        key = key or bytes.fromhex(read_key_file(self.keys_file)[TASK_SIGNING_KEY_FIELD])
        send_hedge(fill, task_id, MessageSigner(key).sign(fill, generation or self.store.ensure_generation()))
        return AsyncResult(task_id, app=app)

    def maker_state(self, market: str = "ETH") -> str | None:
        return (self.store.state(market) or {}).get("state")

    # ---- Flower (added for tests/integration/test_flower.py) ------------------------------------

    def start_flower(self, port: int, basic_auth: str) -> subprocess.Popen:
        """Flower as supervisord.conf runs it: `celery -A tasks flower` on loopback, basic auth from
        FLOWER_BASIC_AUTH in the environment, this cluster's config in LH_CONFIG. Killed by close()."""
        log = open(self.workdir / "flower.log", "ab")
        env = dict(self.env(), FLOWER_BASIC_AUTH=basic_auth)
        env.pop("FLOWER_UNAUTHENTICATED_API", None)
        proc = subprocess.Popen([str(BIN / "celery"), "-A", "tasks", "flower", "--address=127.0.0.1",
                                 f"--port={port}", "--persistent=False"],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=str(Path(__file__).resolve().parents[2]))
        log.close()
        self.procs["flower"] = proc
        return proc
