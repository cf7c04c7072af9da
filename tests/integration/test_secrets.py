"""No private key leaves the key file: not in a log, the demo's output, Redis (task messages,
results, state) or `status`. Flower's answers are checked in test_flower.py (the demo stops Flower).

A key counts as leaked if it appears with or without "0x", in any letter case, or if any
40-hex-character piece of it does. Assertion messages name where, never the key itself.
"""
from __future__ import annotations

import base64
import binascii
import json
import os
import re
import subprocess
import threading
from pathlib import Path

import pytest
import redis
import yaml

from tests.integration.cluster import BIN
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration

WINDOW = 40
_B64_RUN = re.compile(rb"[A-Za-z0-9+/_-]{24,}={0,2}")


def key_windows(keys_file: str) -> dict[str, set[str]]:
    """{account: every 40-hex-char piece of its private key (the whole key if shorter)}, lower case."""
    with open(keys_file) as fh:
        entries = json.load(fh)
    out: dict[str, set[str]] = {}
    for account, entry in entries.items():
        # The task signing key (venue.keys) is a secret too: it lets its holder make B trade.
        key = str(entry if account == "task_signing_key" else entry["private_key"]).strip().lower()
        body = key[2:] if key.startswith("0x") else key
        assert re.fullmatch(r"[0-9a-f]+", body) and len(body) >= 32, f"account {account}: unexpected key form"
        out[account] = {body[i:i + WINDOW] for i in range(max(1, len(body) - WINDOW + 1))}
    assert len(out) >= 2, "expected the keys of A and B"
    return out


def leaks(text: str | bytes, windows: dict[str, set[str]]) -> list[str]:
    """Accounts whose key material appears in text (names only, so a failure does not print a key)."""
    if isinstance(text, bytes):
        text = text.decode("latin-1")
    text = text.lower()
    return sorted(account for account, pieces in windows.items() if any(p in text for p in pieces))


def _decoded_variants(value: bytes) -> list[bytes]:
    """The value, plus what every base64 run inside it decodes to (kombu stores task message
    bodies and events base64-encoded)."""
    out = [value]
    for run in _B64_RUN.findall(value):
        for decode in (base64.b64decode, base64.urlsafe_b64decode):
            try:
                out.append(decode(run.rstrip(b"=") + b"=" * (-len(run.rstrip(b"=")) % 4)))
            except (binascii.Error, ValueError):
                pass
    return out


class RedisMonitor:
    """Every command sent to the test's Redis db while it runs (MONITOR): task messages as
    published (LPUSH), events (PUBLISH), results and state as written -- also what is gone by the end."""

    def __init__(self, url: str):
        # No read timeout: MONITOR is quiet whenever Redis is (redis-py 8 defaults to 5 s).
        self._client = redis.Redis.from_url(url, socket_timeout=None)
        self.db = self._client.connection_pool.connection_kwargs.get("db", 0)
        self.commands: list[bytes] = []
        self.unparsed: list[str] = []
        self._stop = threading.Event()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-monitor", daemon=True)

    def _run(self) -> None:
        with self._client.monitor() as monitor:
            self._ready.set()
            while not self._stop.is_set():
                try:
                    cmd = monitor.next_command()
                except Exception as exc:  # noqa: BLE001 - said in the assertion below
                    # redis-py cannot parse every MONITOR line (e.g. a quoted Lua body); keep listening.
                    self.unparsed.append(repr(exc))
                    if isinstance(exc, redis.ConnectionError):
                        return
                    continue
                if cmd and cmd["db"] == self.db:
                    self.commands.append(cmd["command"].encode("utf-8", "surrogateescape"))

    def __enter__(self) -> "RedisMonitor":
        self._thread.start()
        assert self._ready.wait(10), "MONITOR did not start"
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._client.ping()  # one more command wakes the monitor so it sees the stop flag
        self._thread.join(10)


def redis_dump(url: str) -> dict[str, list[bytes]]:
    """Every key of the db with every value in it, whatever its type."""
    r = redis.Redis.from_url(url)
    dump: dict[str, list[bytes]] = {}
    for key in r.scan_iter(count=500):
        kind = r.type(key).decode()
        if kind == "string":
            values = [r.get(key) or b""]
        elif kind == "hash":
            values = [b for kv in r.hgetall(key).items() for b in kv]
        elif kind == "list":
            values = r.lrange(key, 0, -1)
        elif kind == "set":
            values = list(r.smembers(key))
        elif kind == "zset":
            values = [member for member, _ in r.zrange(key, 0, -1, withscores=True)]
        elif kind == "stream":
            values = [b for _, fields in r.xrange(key) for kv in fields.items() for b in kv]
        elif kind == "none":  # expired between SCAN and TYPE
            continue
        else:
            raise AssertionError(f"redis key {key!r} has type {kind} this scan does not read")
        dump[key.decode("latin-1")] = [key] + [v for value in values for v in _decoded_variants(value)]
    return dump


def test_demo_leaves_no_private_key_in_logs_output_redis_or_status(tmp_path, redis_url, keys_file):
    windows = key_windows(keys_file)
    redis.Redis.from_url(redis_url).flushdb()  # what is scanned below is what the demo wrote

    sim_port, flower_port = free_port(), free_port()
    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "config.yaml")))
    config["lighter"] = {"base_url": f"http://127.0.0.1:{sim_port}", "ws_url": f"ws://127.0.0.1:{sim_port}/stream"}
    config["redis"] = {"url": redis_url}
    config["flower"] = {"port": flower_port}
    config["keys_file"] = keys_file
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    log_dir, run_dir = tmp_path / "logs", tmp_path / "run"
    env = dict(os.environ, LH_RUN_DIR=str(run_dir), LH_LOG_DIR=str(log_dir))
    env.pop("LH_REDIS_URL", None)

    with RedisMonitor(redis_url) as monitor:
        demo = subprocess.run([str(BIN / "lighter-hedge"), "demo", "--config", str(path), "--rounds", "1"],
                              capture_output=True, text=True, env=env, timeout=180)
    assert demo.returncode == 0, demo.stdout[-3000:] + demo.stderr[-3000:]

    # The scan is not vacuous: the demo hedged, and its logs and results are there.
    assert "hedge  market=ETH" in demo.stdout
    logs = sorted(p for p in log_dir.rglob("*") if p.is_file())
    assert {"sim.log", "worker.log", "maker.log", "flower.log"} <= {p.name for p in logs}
    dump = redis_dump(redis_url)
    results = [k for k in dump if "celery-task-meta-hedge-" in k]
    assert len(results) >= 2, sorted(dump)

    assert not leaks(demo.stdout, windows), "private key in the demo's stdout"
    assert not leaks(demo.stderr, windows), "private key in the demo's stderr"
    for file in logs + sorted(p for p in run_dir.rglob("*") if p.is_file()):
        assert not leaks(file.read_bytes(), windows), f"private key in {file.relative_to(tmp_path)}"
    for key, values in dump.items():
        for value in values:
            assert not leaks(value, windows), f"private key in redis key {key!r}"
    # Everything written while the demo ran, including task messages consumed since.
    pushes = [cmd for cmd in monitor.commands if cmd.upper().startswith((b"LPUSH", b"RPUSH")) and b"hedge.b" in cmd]
    assert any(b'"fill_id"' in body for cmd in pushes for body in _decoded_variants(cmd)[1:]), \
        f"no decodable hedge task message among {len(monitor.commands)} commands ({monitor.unparsed[:3]} unparsed)"
    for cmd in monitor.commands:
        for value in _decoded_variants(cmd):
            assert not leaks(value, windows), f"private key in a redis {cmd.split(b' ', 1)[0].decode(errors='replace')} command"

    status_env = dict(os.environ)
    status_env.pop("LH_REDIS_URL", None)
    outputs = {}
    for args in (("status", "--json"), ("status",)):
        status = subprocess.run([str(BIN / "lighter-hedge"), *args, "--config", str(path)],
                                capture_output=True, text=True, env=status_env, timeout=60)
        assert status.stdout.strip(), (args, status.returncode, status.stderr[-2000:])
        assert not leaks(status.stdout + status.stderr, windows), f"private key in `lighter-hedge {' '.join(args)}`"
        outputs[args] = status.stdout
    rows = [json.loads(line) for line in outputs[("status", "--json")].splitlines() if line.strip()]
    assert sorted(row["market"] for row in rows) == ["BTC", "ETH"]


def test_leak_scan_finds_a_key_piece_in_any_form(keys_file):
    """The scanner itself: a 40-char piece, either case, with 0x or not, and inside a kombu-style
    base64 body is found; unrelated hex is not."""
    windows = key_windows(keys_file)
    entries = json.loads(Path(keys_file).read_text())
    account, entry = next(iter(entries.items()))
    body = entry["private_key"].lower().removeprefix("0x")
    assert leaks(f"x={body[5:5 + WINDOW].upper()}y", windows) == [account]
    assert leaks("0x" + body, windows) == [account]
    envelope = json.dumps({"body": base64.b64encode(json.dumps([[{"k": body}], {}, {}]).encode()).decode(),
                           "properties": {"body_encoding": "base64"}}).encode()
    assert any(leaks(v, windows) for v in _decoded_variants(envelope))
    assert not leaks(body[:WINDOW - 1], windows) and not leaks("ab" * 60, windows)
