"""`lighter-hedge up` hardened (issue 12): each program gets only its own secret (Flower none), paths
with spaces work, a program that does not start fails `up` loudly, and a Redis that does not answer
is one line and exit 2 for every command.

Assertion messages name secrets ("A key", "flower password"), never print them."""
from __future__ import annotations

import json
import os
import secrets
import shutil
import socket
import stat
import subprocess
from pathlib import Path

import pytest
import redis
import yaml

from ops import supervise
from tests.integration.cluster import BIN, wait_until
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
PROGRAMS = ("sim", "worker", "maker", "flower", "console")
REDIS_USERS = ("operator", "maker", "worker", "flower", "console")


def _write_config(path: Path, redis_url: str, keys_file: str, *, sim_port: int | None = None,
                  flower_port: int | None = None) -> Path:
    """The shipped config.yaml, on loopback ports of its own, the simulator without request limits."""
    cfg = yaml.safe_load((REPO / "config.yaml").read_text())
    sim_port = sim_port or free_port()
    cfg["lighter"] = {"base_url": f"http://127.0.0.1:{sim_port}", "ws_url": f"ws://127.0.0.1:{sim_port}/stream"}
    cfg["redis"] = {"url": redis_url}
    cfg["flower"] = {"port": flower_port or free_port()}
    cfg["console"] = {"port": free_port()}
    cfg["keys_file"] = keys_file
    cfg["metrics"] = {"maker_port": 0, "worker_port": 0}
    cfg["sim"]["tier"] = "instant"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(cfg))
    return path


def _base_env(run_dir: Path, log_dir: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("LH_", "FLOWER_"))}
    env.update(LH_RUN_DIR=str(run_dir), LH_LOG_DIR=str(log_dir))
    return env


def _lh(*args: str, env: dict[str, str], timeout: float = 180) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "lighter-hedge"), *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


def _down(config: Path, env: dict[str, str], run_dir: Path) -> None:
    if (run_dir / "supervisord.pid").exists():
        _lh("down", "--config", str(config), env=env, timeout=120)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except redis.RedisError:
        return False


@pytest.fixture
def acl_redis(tmp_path):
    """A redis-server of its own loaded with deploy/redis-users.acl (passwords filled in), plus an
    `admin` user for the test's own look at who is connected."""
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    passwords = {user: secrets.token_hex(16) for user in (*REDIS_USERS, "admin")}
    acl = (REPO / "deploy" / "redis-users.acl").read_text()
    for user in REDIS_USERS:
        assert f">CHANGE-ME-{user} " in acl, f"deploy/redis-users.acl has no user {user}"
        acl = acl.replace(f">CHANGE-ME-{user} ", f">{passwords[user]} ")
    assert "CHANGE-ME" not in acl
    aclfile = tmp_path / "users.acl"
    aclfile.write_text(acl + f"user admin on >{passwords['admin']} ~* &* +@all\n")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--aclfile", str(aclfile), "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    urls = {user: f"redis://{user}:{pw}@127.0.0.1:{port}/0" for user, pw in passwords.items()}
    try:
        wait_until(lambda: _answers(urls["operator"]) or proc.poll() is not None, 10, "the ACL redis-server")
        assert proc.poll() is None, "redis-server refused deploy/redis-users.acl"
        yield urls, passwords, port
    finally:
        proc.kill()
        proc.wait(10)


@pytest.fixture
def short_dir():
    """A directory of its own under /tmp: supervisord's socket path must fit a unix socket (107
    bytes), and pytest's tmp_path (deeper under xdist) can come close."""
    import tempfile
    path = Path(tempfile.mkdtemp(prefix="lh-up-"))
    yield path
    shutil.rmtree(path, ignore_errors=True)


def _what_it_holds(pid: int) -> tuple[str, list[Path]]:
    """A process's environment and argv, and the content of every file they name (NAME=/path,
    --opt=/path or /path): what the process was handed."""
    environ = Path(f"/proc/{pid}/environ").read_bytes().split(b"\0")
    argv = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
    texts, files = [b"\n".join(environ), b"\n".join(argv)], []
    for item in environ + argv:
        value = os.fsdecode(item.split(b"=", 1)[-1])
        if value.startswith("/") and os.path.isfile(value):
            files.append(Path(value))
            texts.append(Path(value).read_bytes())
    return b"\n".join(texts).decode("utf-8", "replace"), files


def test_up_hands_each_program_only_its_own_secret_from_paths_with_spaces_and_hedges(short_dir, keys_file,
                                                                                     acl_redis):
    urls, redis_passwords, port = acl_redis
    base = short_dir / "lighter hedge"         # the config, run and log directories all have spaces
    run_dir, log_dir = base / "run dir", base / "log dir"
    config = _write_config(base / "conf dir" / "config.yaml", f"redis://127.0.0.1:{port}/0", keys_file)
    stored = json.loads(Path(keys_file).read_text())
    a_key = stored["281001"]["private_key"].lower().removeprefix("0x")
    b_key = stored["281002"]["private_key"].lower().removeprefix("0x")
    flower_password = "flower-" + secrets.token_hex(12)
    env = dict(_base_env(run_dir, log_dir),
               LH_REDIS_URL=urls["operator"], LH_REDIS_URL_MAKER=urls["maker"],
               LH_REDIS_URL_WORKER=urls["worker"], LH_REDIS_URL_FLOWER=urls["flower"],
               LH_REDIS_URL_CONSOLE=urls["console"],
               LH_FLOWER_PASSWORD=flower_password,
               # B's key from the environment, as README's live setup has it (the same key as the file's).
               LH_ACCOUNT_B_PRIVATE_KEY=stored["281002"]["private_key"])
    secret_values = {"A key": a_key, "B key": b_key, "task signing key": stored["task_signing_key"].lower(),
                     "flower password": flower_password,
                     **{f"redis password of {u}": redis_passwords[u] for u in REDIS_USERS}}
    expected = {
        "maker": {"A key", "task signing key", "redis password of maker"},
        "worker": {"B key", "task signing key", "redis password of worker"},
        "flower": {"flower password", "redis password of flower"},
        # The console signs requeues and flatten requests (through the maker and the worker): no account key.
        "console": {"task signing key", "flower password", "redis password of console"},
        "sim": set(),
        "supervisord": set(),    # every program inherits its environment
    }
    try:
        up = _lh("up", "--config", str(config), env=env)
        assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
        server = supervise.rpc({"LH_RUN_DIR": str(run_dir)})
        infos = {info["name"]: info for info in server.getAllProcessInfo()}
        assert {name: infos[name]["statename"] for name in PROGRAMS} == {name: "RUNNING" for name in PROGRAMS}

        pids = {**{name: infos[name]["pid"] for name in PROGRAMS}, "supervisord": server.getPID()}
        for program, pid in pids.items():
            text, files = _what_it_holds(pid)
            held = {name for name, value in secret_values.items() if value.lower() in text.lower()}
            assert held == expected[program], (program, sorted(held))   # names of secrets only
            for file in files:
                if "secrets" in file.parts:
                    assert stat.S_IMODE(file.stat().st_mode) == 0o600, (program, file.name)
        assert stat.S_IMODE((run_dir / "secrets").stat().st_mode) == 0o700
        # Each program logged in to Redis as its own user.
        admin = redis.Redis.from_url(urls["admin"])
        users = {client.get("user") for client in admin.client_list()}
        assert {"maker", "worker", "flower", "console"} <= users, users

        # And everything still hedges: the simulator's taker flow fills A, B hedges it.
        from tasks.store import Store
        store = Store.from_url(urls["operator"])
        wait_until(lambda: any(store.stats(m).get("hedges", 0) >= 1 for m in ("ETH", "BTC")), 120,
                   "a hedge through the stack `up` started")
        assert not store.failed("ETH") and not store.failed("BTC")

        down = _lh("down", "--config", str(config), env=env, timeout=120)
        assert down.returncode == 0, down.stderr[-2000:]
        assert not (run_dir / "supervisord.pid").exists()
        assert not (run_dir / "secrets").exists()       # no key left on disk once nothing runs
    finally:
        _down(config, env, run_dir)


def test_up_refuses_a_run_dir_too_deep_for_supervisords_socket_and_changes_nothing(tmp_path, redis_url, keys_file):
    redis.Redis.from_url(redis_url).flushdb()
    run_dir = tmp_path / ("r" * 120)
    config = _write_config(tmp_path / "config.yaml", redis_url, keys_file)
    from tasks.store import Store
    store = Store.from_url(redis_url)
    store.pause("ETH", "left by the last run", by="test")   # paper state `up` would clear
    up = _lh("up", "--config", str(config), env=_base_env(run_dir, tmp_path / "logs"))
    lines = [line for line in up.stderr.splitlines() if line.strip()]
    assert up.returncode == 2, (up.returncode, up.stdout, up.stderr)
    assert len(lines) == 1 and "LH_RUN_DIR is too deep" in lines[0] and "107" in lines[0], up.stderr
    assert store.paused("ETH") is not None and not run_dir.exists()


def test_up_fails_loudly_when_a_program_does_not_start_and_stops_everything(tmp_path, redis_url, keys_file):
    redis.Redis.from_url(redis_url).flushdb()   # no deployment's heartbeat left from an earlier test
    run_dir, log_dir = tmp_path / "run", tmp_path / "logs"
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen(1)                                   # Flower's port is taken: Flower cannot start
    config = _write_config(tmp_path / "config.yaml", redis_url, keys_file, flower_port=busy.getsockname()[1])
    env = _base_env(run_dir, log_dir)
    try:
        up = _lh("up", "--config", str(config), env=env)
        lines = [line for line in up.stderr.splitlines() if line.strip()]
        assert up.returncode == 1, (up.returncode, up.stdout[-2000:], up.stderr[-2000:])
        assert len(lines) == 1 and lines[0].startswith("up: flower did not start"), up.stderr
        assert "Address already in use" in lines[0] and str(log_dir / "flower.log") in lines[0]
        assert "Traceback" not in up.stderr.replace("its log ends", "")
        assert not (run_dir / "supervisord.pid").exists()   # everything was stopped again
        assert not (run_dir / "secrets").exists()
    finally:
        busy.close()
        _down(config, env, run_dir)


@pytest.mark.parametrize("args", [("status",), ("maker",), ("worker",), ("requeue", "--all-failed"), ("resume",),
                                  ("flatten", "--yes"), ("console",), ("up",), ("demo",)],
                         ids=lambda a: a[0])
def test_a_redis_that_does_not_answer_is_one_line_exit_2_and_never_shows_its_password(tmp_path, keys_file, args):
    port = free_port()                               # nothing listens there
    password = "pw-" + secrets.token_hex(8)
    config = _write_config(tmp_path / "config.yaml", "redis://127.0.0.1:6379/0", keys_file)
    env = dict(_base_env(tmp_path / "run", tmp_path / "logs"), LH_REDIS_URL=f"redis://:{password}@127.0.0.1:{port}/0")

    proc = _lh(*args, "--config", str(config), env=env, timeout=60)

    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert lines == [f"redis error: cannot connect to redis://:***@127.0.0.1:{port}/0 (Connection refused); "
                     f"is Redis running? (redis.url in config.yaml or $LH_REDIS_URL)"], proc.stderr
    assert password not in proc.stdout + proc.stderr
    assert not (tmp_path / "run" / "supervisord.pid").exists()


def test_the_readme_example_bad_redis_port_is_one_line(tmp_path, keys_file):
    config = _write_config(tmp_path / "config.yaml", "redis://127.0.0.1:1/0", keys_file)
    proc = _lh("status", "--config", str(config), env=_base_env(tmp_path / "run", tmp_path / "logs"), timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip() == ("redis error: cannot connect to redis://127.0.0.1:1/0 (Connection refused); "
                                   "is Redis running? (redis.url in config.yaml or $LH_REDIS_URL)")


def test_a_worker_stopped_cleanly_removes_its_heartbeat_so_up_may_start_at_once(make_cluster):
    """`up` refuses while a worker's heartbeat is fresh; a worker that stopped on SIGTERM hedges
    nothing, so its heartbeat goes with it instead of blocking `up` (and the dead-man's switch) for
    its 10 s TTL."""
    c = make_cluster()
    c.start_worker()
    wait_until(c.store.worker_alive, 30, "the worker's heartbeat")
    c.stop("worker")   # SIGTERM: Celery's warm shutdown
    assert not c.store.worker_alive()
    assert "event=worker.heartbeat_removed" in c.log("worker")
