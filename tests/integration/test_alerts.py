"""The real alerter process (`lighter-hedge alerter`) against this run's Redis db and a local webhook receiver.

Each alert kind is caused the way the code causes it: a pause and a resume through the store's API
(what `pause`/`resume`, the maker and `flatten` call), a failed hedge recorded and published as the
worker's on_failure does, a request that waits for a tiny request budget (venue/budget.py publishes
budget.exhausted), a worker heartbeat that expires (no consumer), and Celery's inspect finding no
worker (no consumer while a heartbeat is fresh). The receiver must get one POST per kind and state,
in the selected format; the alerter's log names the kind and market and never the URL's token.
"""
from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis
import yaml

from venue.sim.harness import free_port, wait_until

pytestmark = pytest.mark.integration
BIN = Path(sys.executable).parent
TOKEN = "T0SECRET/B0SECRET/XyzzySecretToken42"


class Receiver:
    """A webhook on 127.0.0.1 that records every POST's JSON; it answers 503 to the first `fail_first`."""

    def __init__(self, fail_first: int = 0):
        self.posts: list[dict] = []
        self.paths: list[str] = []
        self.answered_503 = 0
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if outer.answered_503 < fail_first:
                    outer.answered_503 += 1
                    self.send_response(503)
                    self.end_headers()
                    return
                outer.posts.append(json.loads(body))
                outer.paths.append(self.path)
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.end_headers()
                self.wfile.write(b'{"ok": true}')

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/services/{TOKEN}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def write_config(path: Path, redis_url: str, keys_file: str, fmt: str, check: str, metrics_port: int) -> Path:
    config = {
        "mode": "paper",
        "lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream",
                    # A tiny budget: a few reads fill a 1.5 s window and the next one waits for room.
                    "rate_limit": {"per_minute": 4, "weighted": False, "window_ms": 1500}, "hedge_reserve": 1},
        "redis": {"url": redis_url},
        "keys_file": keys_file,
        "accounts": {"account_a": {"account_index": 281001, "api_key_index": 3},
                     "account_b": {"account_index": 281002, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.0500"}, "BTC": {"quantity": "0.00200"}},
        "strategy": {},
        "metrics": {"alerter_port": metrics_port},
        "alerts": {"enabled": True, "format": fmt, "consumer_check": check, "no_consumer_s": 1,
                   "budget_wait_s": 0.3, "budget_clear_s": 2, "poll_interval_s": 0.2, "delivery_attempts": 3,
                   "delivery_timeout_s": 2},
    }
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.fixture
def clean_db(redis_url):
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    client.flushdb()
    yield client
    client.flushdb()


def start_alerter(tmp_path: Path, config: Path, webhook_url: str) -> tuple[subprocess.Popen, Path]:
    log_path = tmp_path / "alerter.log"
    env = dict(os.environ, LH_CONFIG=str(config), LH_ALERT_WEBHOOK_URL=webhook_url, PYTHONUNBUFFERED="1",
               PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("LH_REDIS_URL", None)   # the config's redis.url: this run's db
    with open(log_path, "ab") as log:
        proc = subprocess.Popen([str(BIN / "lighter-hedge"), "alerter", "--config", str(config)], stdout=log,
                                stderr=subprocess.STDOUT, env=env, start_new_session=True)
    wait_until(lambda: "event=alerter.listening" in log_path.read_text() or proc.poll() is not None, 60,
               "the alerter listening")
    assert proc.poll() is None, log_path.read_text()
    return proc, log_path


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def scrape(port: int) -> str:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return opener.open(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()


def exhaust_budget(config: Path) -> None:
    """Reads through the real request budget until one waits for room (venue/budget.py publishes then)."""
    from ops.settings import load_config
    from tasks.store import Store
    from venue.budget import budget_from_config
    from hedge.budget import Priority
    cfg = load_config(config)
    budget = budget_from_config(cfg, Store.from_url(cfg.redis_url).r)

    async def reads() -> None:
        for _ in range(4):
            await budget.acquire("account", Priority.READ, "cli")
    asyncio.run(reads())


@pytest.mark.parametrize("fmt,check", [("plain", "heartbeat"), ("slack", "heartbeat+inspect")])
def test_the_alerter_posts_each_kind_once_in_the_selected_format(tmp_path, redis_url, keys_file, clean_db, fmt, check):
    from tasks.store import Store
    store = Store.from_url(redis_url)
    # A worker's heartbeat: fresh for the whole test with inspect (no worker answers it); with the heartbeat
    # check alone it expires after 3 s, as a stopped worker's does.
    store.worker_heartbeat(120_000 if check == "heartbeat+inspect" else 3_000)
    receiver = Receiver(fail_first=1)            # the first POST is answered 503: delivery retries it
    port = free_port()
    config = write_config(tmp_path / "config.yaml", redis_url, keys_file, fmt, check, port)
    proc, log_path = start_alerter(tmp_path, config, receiver.url)
    try:
        def got(kind: str, state: str = "firing", market: str | None = None, text: str = "") -> list[dict]:
            found = []
            for body in receiver.posts:
                if fmt == "plain":
                    if (body["kind"], body["state"]) == (kind, state) and market in (None, body["market"]) \
                            and text in body["summary"]:
                        found.append(body)
                else:
                    line = body["text"]
                    if line.startswith(f"[{state.upper()}] lighter-hedge paper: ") and text in line \
                            and _kind_of(line) == kind:
                        found.append(body)
            return found

        def wait_for(kind: str, state: str = "firing", market: str | None = None, text: str = "") -> dict:
            return wait_until(lambda: got(kind, state, market, text), 30,
                              f"a {state} {kind} alert{' on ' + market if market else ''}")[0]

        # Paused, with its reason (the maker pausing after a failed hedge).
        reason = "hedge hedge-ETH-7 failed: PermanentHedgeError: 21507 not enough margin"
        store.pause("ETH", reason, by="maker")
        paused = wait_for("paused", market="ETH", text=reason)
        # A failed hedge, recorded and published as the worker's on_failure does.
        fill = {"fill_id": "7", "market_index": 0, "side": "buy", "base_amount": "0.0500", "price": "1900.00"}
        store.hedge_finished("ETH", "hedge-ETH-7", "7", ok=False, reason="PermanentHedgeError: 21507 not enough margin",
                             fill_msg=fill)
        store.publish_event({"event": "hedge.failed", "market": "ETH", "fill_id": "7", "task_id": "hedge-ETH-7",
                             "reason": "PermanentHedgeError: 21507 not enough margin"})
        wait_for("hedge_failed", market="ETH", text="hedge-ETH-7")
        # A flatten pauses its market first (ops/flatten.py).
        store.pause("BTC", "flattened by operator", by="flatten")
        wait_for("flatten", market="BTC", text="flattened")
        # A request waiting for the request budget.
        exhaust_budget(config)
        wait_for("budget_exhausted", text="cli's account (read)")
        # No consumer on hedge.b: the heartbeat expired (heartbeat), or no worker answers inspect.
        wait_for("no_consumer", text="no hedge worker heartbeat" if check == "heartbeat" else "inspect lists no consumer")
        # Requeue (the failed hedge is forgotten) and resume: each clears its condition.
        store.forget_failed("ETH", "hedge-ETH-7")
        wait_for("hedge_failed", "resolved", market="ETH")
        store.resume("ETH")
        wait_for("resumed", "resolved", market="ETH", text=reason)
        wait_for("budget_exhausted", "resolved")
        if check == "heartbeat":   # a worker beats again
            store.worker_heartbeat(60_000)
            wait_for("no_consumer", "resolved")

        # The gauges of hedge.b: a message waiting, and the consumer's presence.
        store.r.lpush("hedge.b", "{}")
        wait_until(lambda: 'lh_hedge_queue_length{queue="hedge.b"} 1.0' in scrape(port), 15, "queue length 1")
        store.r.delete("hedge.b")
        present = "1.0" if check == "heartbeat" else "0.0"
        assert f'lh_hedge_consumer_present{{queue="hedge.b"}} {present}' in scrape(port)

        # Ongoing conditions were seen by many samples (and pauses by pub/sub too): one POST each. A last
        # pause, delivered after all of them, shows nothing else was queued behind.
        store.pause("ETH", "sentinel", by="operator")
        wait_for("paused", market="ETH", text="sentinel")
        expected = {("paused", "firing"): 2, ("hedge_failed", "firing"): 1, ("flatten", "firing"): 1,
                    ("budget_exhausted", "firing"): 1, ("no_consumer", "firing"): 1, ("hedge_failed", "resolved"): 1,
                    ("resumed", "resolved"): 1, ("budget_exhausted", "resolved"): 1}
        if check == "heartbeat":
            expected[("no_consumer", "resolved")] = 1
        assert {key: len(got(*key)) for key in expected} == expected
        assert len(receiver.posts) == sum(expected.values()), receiver.posts

        if fmt == "plain":
            assert paused["severity"] == "critical" and paused["details"]["reason"] == reason
            assert set(paused) >= {"source", "kind", "state", "market", "summary", "text", "details", "at", "at_ms"}
        else:
            assert all(list(body) == ["text"] for body in receiver.posts)
            assert paused["text"].startswith(f"[FIRING] lighter-hedge paper: ETH paused: {reason}")
        assert set(receiver.paths) == {f"/services/{TOKEN}"}
    finally:
        stop(proc)
        receiver.close()
    log = log_path.read_text()
    assert proc.returncode == 0, log[-3000:]
    # Each delivery logged key=value with its kind and market; the URL's token never.
    retried = re.search(r"event=alert\.retry (kind=\S+ state=\S+ market=\S+) format=\S+ target=http://127\.0\.0\.1:\d+ "
                        r"attempt=1 result=retry status=503 error=HTTPError next_in_s=1\n", log)
    assert retried and f"event=alert.delivered {retried.group(1)} format={fmt} " in log, log[-3000:]
    assert f"event=alert.delivered kind=flatten state=firing market=BTC format={fmt} " in log
    assert "event=alert.delivered kind=no_consumer state=firing market=- " in log
    for secret in ("XyzzySecretToken42", "T0SECRET", "/services/"):
        assert secret not in log


def _kind_of(line: str) -> str:
    """The kind a chat line (slack format) is about, from its wording."""
    text = line.split(": ", 1)[1]
    if " paused: " in text:
        return "paused"
    if " resumed: " in text:
        return "resumed"
    if " is being flattened" in text:
        return "flatten"
    if " hedge " in text and (" failed: " in text or "no longer failed" in text):
        return "hedge_failed"
    if "request budget" in text:
        return "budget_exhausted"
    if "consumes hedge.b" in text:
        return "no_consumer"
    return "?"


def test_the_alerter_refuses_to_start_without_its_webhook(tmp_path, redis_url, keys_file, clean_db):
    config = write_config(tmp_path / "config.yaml", redis_url, keys_file, "plain", "heartbeat", 0)
    env = dict(os.environ, LH_CONFIG=str(config))
    env.pop("LH_ALERT_WEBHOOK_URL", None)
    env.pop("LH_REDIS_URL", None)
    proc = subprocess.run([str(BIN / "lighter-hedge"), "alerter", "--config", str(config)], capture_output=True,
                          text=True, env=env, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("config error: alerts.webhook_url_env: $LH_ALERT_WEBHOOK_URL is not set (nor "
                                   "\"alert_webhook_url\" in $LH_KEYS_FILE); set it to the webhook URL, or use --dry-run")


def test_supervisord_runs_the_alerter_with_its_webhook_from_its_own_secrets_file(tmp_path, redis_url, keys_file,
                                                                                 clean_db, monkeypatch):
    """[program:alerter] as `up` starts it: the webhook URL reaches the alerter through run/secrets/alerter.json,
    not through supervisord's environment (which every program inherits), and alerts arrive."""
    from ops import supervise
    from ops.settings import load_config
    from tasks.store import Store
    receiver = Receiver()
    monkeypatch.setenv("LH_ALERT_WEBHOOK_URL", receiver.url)
    config = write_config(tmp_path / "config.yaml", redis_url, keys_file, "plain", "heartbeat", 0)
    cfg = load_config(config)
    env = supervise.supervisor_env(cfg, config, tmp_path / "run", tmp_path / "logs", autostart=False)
    assert env["LH_START_ALERTER"] == "true" and "LH_ALERT_WEBHOOK_URL" not in env
    env["LH_START_SIM"] = "false"            # the alerter alone: it needs no venue
    store = Store.from_url(redis_url)
    store.worker_heartbeat(120_000)
    try:
        supervise.start(env, cfg)
        secrets_file = tmp_path / "run" / "secrets" / "alerter.json"
        assert (secrets_file.stat().st_mode & 0o777) == 0o600
        assert json.loads(secrets_file.read_text())["alert_webhook_url"] == receiver.url
        log = tmp_path / "logs" / "alerter.log"
        wait_until(lambda: log.exists() and "event=alerter.listening" in log.read_text(), 60, "the alerter under supervisord")
        store.pause("ETH", "paused by operator", by="operator")
        wait_until(lambda: any(p["kind"] == "paused" and p["market"] == "ETH" for p in receiver.posts), 30,
                   "the paused alert")
        # supervisord says RUNNING once the program has stayed up for its startsecs (2 s).
        info = wait_until(lambda: (i := supervise.rpc(env).getProcessInfo("alerter"))["statename"] == "RUNNING" and i,
                          30, "supervisord to count the alerter as running")
        for pid in (info["pid"], supervise.rpc(env).getPID()):
            held = Path(f"/proc/{pid}/environ").read_bytes() + Path(f"/proc/{pid}/cmdline").read_bytes()
            assert TOKEN.encode() not in held and b"LH_ALERT_WEBHOOK_URL" not in held
    finally:
        supervise.shutdown(env)
        receiver.close()
    assert not (tmp_path / "run" / "secrets").exists()
    assert "XyzzySecretToken42" not in (tmp_path / "logs" / "alerter.log").read_text()


def test_up_refuses_alerts_enabled_without_the_webhook_and_leaves_no_secrets(tmp_path, redis_url, keys_file, clean_db,
                                                                             monkeypatch):
    from hedge.config import ConfigError
    from ops import supervise
    from ops.settings import load_config
    monkeypatch.delenv("LH_ALERT_WEBHOOK_URL", raising=False)
    config = write_config(tmp_path / "config.yaml", redis_url, keys_file, "plain", "heartbeat", 0)
    cfg = load_config(config)
    env = supervise.supervisor_env(cfg, config, tmp_path / "run", tmp_path / "logs", autostart=False)
    with pytest.raises(ConfigError, match=r"^alerts\.webhook_url_env: alerts\.enabled is true but "
                                          r"\$LH_ALERT_WEBHOOK_URL is not set"):
        supervise.write_secrets(cfg, env)
    assert not (tmp_path / "run" / "secrets").exists()


def test_a_request_that_waits_for_the_budget_publishes_budget_exhausted_once_per_process_and_interval(r):
    from hedge.budget import Priority, RateLimit
    from tests.conftest import new_budget
    channel = f"lh:test-budget-events:{os.getpid()}"
    pubsub = r.pubsub(ignore_subscribe_messages=True)
    pubsub.subscribe(channel)
    budget = new_budget(r, RateLimit("custom", 4, False, 1, 600), exhausted_wait_ms=200, events_channel=channel)

    async def reads(n: int) -> None:
        for _ in range(n):
            await budget.acquire("account", Priority.READ, "maker")
    asyncio.run(reads(3))                          # within the share: nothing waits, nothing said
    asyncio.run(reads(4))                          # three of these wait for room: said once (EXHAUSTED_EVERY_S)
    said = []
    wait_until(lambda: (m := pubsub.get_message(timeout=0.1)) and said.append(json.loads(m["data"])) or said, 10,
               "budget.exhausted")
    assert pubsub.get_message(timeout=0.5) is None
    assert said == [{"event": "budget.exhausted", "process": "maker", "endpoint": "account", "priority": "read",
                     "wait_ms": said[0]["wait_ms"], "reason": "reserve",
                     "why": "quotes and reads have used their share; the rest is kept for hedges", "used": 3,
                     "limit": 4, "unit": "requests", "tier": "custom"}]
    assert 200 <= said[0]["wait_ms"] <= 1000       # about the 600 ms window
    pubsub.close()
