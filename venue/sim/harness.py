"""Run the simulator as a subprocess (tests, demo, benchmarks).

    with start_sim({"tick_ms": 50}, profile="standard", seed=3) as sim:
        sim.admin("/admin/market", {"random_walk": False, "taker_flow": False})
        ... SignerClient(sim.base_url, ...) / WsClient(ws_url=sim.ws_url, ...)

Only the standard library is used here so it works from any process.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

PROJECT_ROOT = Path(__file__).resolve().parents[2]
START_TIMEOUT_S = 20.0

# What a run of the simulator behaves like; every caller names one.
#   standard: Lighter's Standard tier (60 requests a minute per L1 address, 300/200 ms speed
#             bumps, nextNonce 300 ms behind), as a new Lighter account is.
#   premium:  Lighter's Premium tier (24,000 weighted requests, 200/0 ms speed bumps).
#   instant:  not Lighter: no request limits, no speed bumps, nextNonce current at once. For
#             tests of something else, until the engine fits the Standard budget.
PROFILES: dict[str, dict[str, Any]] = {
    "standard": {"tier": "standard", "rate_limits": True, "nonce_lag_ms": 300},
    "premium": {"tier": "premium", "rate_limits": True, "nonce_lag_ms": 300},
    "instant": {"tier": "instant", "rate_limits": False, "nonce_lag_ms": 0},
}


def profile_config(profile: str, sim_config: dict | None = None) -> dict:
    """The `sim:` mapping of a run: the profile's settings, then the caller's own on top."""
    if profile not in PROFILES:
        raise ValueError(f"unknown simulator profile {profile!r}; profiles: {sorted(PROFILES)}")
    return {**PROFILES[profile], **(sim_config or {})}
STOP_TIMEOUT_S = 5.0


class SimStartError(RuntimeError):
    """The simulator did not come up; the message carries its log tail."""


class AdminCallError(RuntimeError):
    def __init__(self, status: int, body: str, path: str):
        super().__init__(f"admin {path} -> HTTP {status}: {body}")
        self.status = status
        self.body = body


def fill_new_orders(cluster, filled: set[int], chunk: str | None = None, one_frame: bool = False) -> int:
    """Fill each of A's resting orders on `cluster` (anything with active_orders() and fill())
    not in `filled` whole, once (adds it to `filled`). Shared by the tests and the benchmarks.

    With `chunk` (a decimal string), each order is filled by trades of that size (one frame each,
    the last one smaller when the size does not divide it; with `one_frame`, all of an order's trades
    in one frame, as Lighter batches them). Returns how many trades were made."""
    from decimal import Decimal

    trades = 0
    for order in cluster.active_orders():
        if order["order_index"] not in filled:
            filled.add(order["order_index"])
            remaining = Decimal(order["remaining_base_amount"])
            sizes = [order["remaining_base_amount"]]
            if chunk is not None and Decimal(chunk) < remaining:
                whole, rest = divmod(remaining, Decimal(chunk))
                sizes = [chunk] * int(whole) + ([str(rest)] if rest else [])
            try:
                if one_frame:
                    cluster.fill(order, sizes, one_frame=True)
                else:
                    cluster.fill(order, sizes)
                trades += len(sizes)
            except Exception:  # noqa: BLE001 - cancelled meanwhile: the next one comes
                pass
    return trades


def wait_until(predicate: Callable[[], Any], timeout_s: float = 5.0, what: str = "condition",
               interval_s: float = 0.02) -> Any:
    """Poll `predicate` until truthy (returns its value); fail after `timeout_s` saying what did not happen.

    Shared by the tests and the benchmarks: wait on a condition with a deadline, never sleep-and-hope.
    """
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout_s}s waiting for: {what}")
        time.sleep(interval_s)


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _no_proxy_opener() -> urllib.request.OpenerDirector:
    return urllib.request.build_opener(urllib.request.ProxyHandler({}))


class SimProcess:
    def __init__(self, proc: subprocess.Popen, port: int, log_path: str, workdir: str,
                 profile: str = "", config: dict | None = None):
        self.proc = proc
        self.profile = profile
        self.config = config or {}
        self.port = port
        self.log_path = log_path
        self._workdir = workdir
        self.base_url = f"http://127.0.0.1:{port}"
        self.ws_url = f"ws://127.0.0.1:{port}/stream"
        self._opener = _no_proxy_opener()

    def request(self, method: str, path: str, payload: Any = None,
                timeout_s: float = 10.0) -> tuple[int, Any]:
        """Raw call: (status, parsed JSON or text). Never raises on HTTP status."""
        data = json.dumps(payload).encode() if payload is not None else None
        req = urllib.request.Request(self.base_url + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                status, text = resp.status, resp.read().decode()
        except urllib.error.HTTPError as err:
            status, text = err.code, err.read().decode()
        try:
            return status, json.loads(text)
        except ValueError:
            return status, text

    def admin(self, path: str, payload: dict | None = None) -> dict:
        """GET when payload is None, else POST JSON; raises AdminCallError on non-2xx."""
        status, body = self.request("GET" if payload is None else "POST", path, payload)
        if not 200 <= status < 300:
            raise AdminCallError(status, json.dumps(body) if not isinstance(body, str) else body, path)
        return body

    def log_tail(self, lines: int = 40) -> str:
        try:
            return "\n".join(Path(self.log_path).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=STOP_TIMEOUT_S)

    def __enter__(self) -> "SimProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


def start_sim(sim_config: dict | None = None, *, profile: str, seed: int = 1, keys_file: str | None = None,
              log_path: str | None = None, port: int | None = None,
              faults: dict | None = None, timeout_s: float = START_TIMEOUT_S) -> SimProcess:
    """Starts `python -m venue.sim` on a loopback port with `profile` (PROFILES) under
    `sim_config`, and waits until it answers (its admin API: the readiness probe is not limited)."""
    import yaml

    sim_config = profile_config(profile, sim_config)
    workdir = tempfile.mkdtemp(prefix="lighter-sim-")
    config_path = os.path.join(workdir, "config.yaml")
    Path(config_path).write_text(yaml.safe_dump({"sim": sim_config}))
    port = port or free_port()
    log_path = log_path or os.path.join(workdir, "sim.log")
    cmd = [sys.executable, "-m", "venue.sim", "--host", "127.0.0.1", "--port", str(port),
           "--seed", str(seed), "--config", config_path]
    if keys_file:
        cmd += ["--keys-file", keys_file]
    if faults is not None:
        cmd += ["--faults", json.dumps(faults)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PROJECT_ROOT), env.get("PYTHONPATH")) if p)
    log_file = open(log_path, "ab")
    try:
        proc = subprocess.Popen(cmd, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                cwd=str(PROJECT_ROOT))
    finally:
        log_file.close()
    sim = SimProcess(proc, port, log_path, workdir, profile, sim_config)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not sim.alive():
            raise SimStartError(f"simulator exited with code {proc.returncode}:\n{sim.log_tail()}")
        try:
            status, _ = sim.request("GET", "/admin/tier", timeout_s=1.0)
            if status == 200:
                return sim
        except (OSError, urllib.error.URLError):
            pass
        time.sleep(0.05)
    sim.stop()
    raise SimStartError(f"simulator did not answer within {timeout_s}s:\n{sim.log_tail()}")
