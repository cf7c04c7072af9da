"""Start and stop supervisord with the environment supervisord.conf expects.

Each program gets only its own secret. supervisord's environment, which every program inherits,
carries none: `start` writes one file per program into run/secrets/ (directory 0700, files 0600)
and supervisord.conf points each program at its own through $LH_KEYS_FILE (ops.settings):

  maker.json    A's private key, the task signing key, the maker's Redis URL
  worker.json   B's private key, the task signing key, the worker's Redis URL
  sim.json      A's and B's public keys (paper mode)
  flower.json   Flower's Redis URL only; flowerconfig.py: Flower's basic auth (`--conf`)
  alerter.json  the alert webhook's URL ($<alerts.webhook_url_env>: it may carry a token), the alerter's
                Redis URL; only when alerts.enabled
  console.json  the task signing key (requeues, flatten requests to the maker and the worker), the
                console's basic auth (Flower's user and password), the console's Redis URL; no account key

A Redis URL goes in a file only when one came from the environment: $LH_REDIS_URL_MAKER /
_WORKER / _FLOWER / _CONSOLE (one Redis user per process), else $LH_REDIS_URL; otherwise each program reads
redis.url from the config file. `shutdown` deletes run/secrets/ once supervisord is gone.
"""
from __future__ import annotations

import os
import re
import secrets
import shutil
import subprocess
import sys
import time
import xmlrpc.client
from pathlib import Path
from typing import Callable
from urllib.parse import urlsplit

import redis

from hedge.config import Config, ConfigError
from ops.settings import KEYS_FILE_ENV, PROJECT_ROOT, REDIS_URL_ENV, SECRETS_REDIS_URL_FIELD, redis_error_line
from venue.keys import TASK_SIGNING_KEY_ENV, TASK_SIGNING_KEY_FIELD, write_key_file

BIN = Path(sys.executable).parent
CONF = PROJECT_ROOT / "supervisord.conf"
SECRETS_DIR = "secrets"
PROGRAM_REDIS_URL_ENV = {"maker": "LH_REDIS_URL_MAKER", "worker": "LH_REDIS_URL_WORKER",
                         "flower": "LH_REDIS_URL_FLOWER", "alerter": "LH_REDIS_URL_ALERTER",
                         "console": "LH_REDIS_URL_CONSOLE"}
CONSOLE_USER_FIELD, CONSOLE_PASSWORD_FIELD = "console_user", "console_password"   # console.json's basic auth
# Never in supervisord's environment (every program would inherit it): keys, passwords, tokens.
_SECRET_NAME = re.compile(r"PRIVATE_KEY|SIGNING_KEY|PASSWORD|PASSWD|SECRET|TOKEN|BASIC_AUTH|OAUTH2")
_SECRET_ENV = {REDIS_URL_ENV, KEYS_FILE_ENV, TASK_SIGNING_KEY_ENV, *PROGRAM_REDIS_URL_ENV.values()}


class StartError(Exception):
    """`up` or `demo` could not bring the stack up; str() is the one line to print."""


def redis_problem(url: str) -> redis.RedisError | None:
    """None when Redis answers PING at url, else the error it gave."""
    try:
        redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping()
        return None
    except redis.RedisError as exc:
        return exc


def redis_answers(url: str) -> bool:
    return redis_problem(url) is None


def nothing_listens(problem: redis.RedisError | None) -> bool:
    """The error says no server is there (refused, unreachable), not that one refused the login."""
    return isinstance(problem, redis.ConnectionError) and not isinstance(problem, redis.AuthenticationError)


def may_start_redis(url: str) -> bool:
    """`up` runs redis-server itself only for a broker meant to be on this machine with no login:
    a URL with a user or password names a Redis set up with requirepass or ACL users, which a
    bare redis-server would not be."""
    parts = urlsplit(url)
    return ((parts.hostname or "") in ("127.0.0.1", "localhost", "::1") and parts.scheme == "redis"
            and not parts.password and not parts.username)


def supervisor_env(cfg: Config, config_file: Path, run_dir: Path, log_dir: Path, autostart: bool) -> dict[str, str]:
    redis_url = urlsplit(cfg.redis_url)
    env = {k: v for k, v in os.environ.items() if not is_secret_env(k, cfg)}
    env.update({
        "LH_BIN": str(BIN),
        "LH_CONFIG": str(config_file.resolve()),
        "LH_RUN_DIR": str(run_dir.resolve()),
        "LH_LOG_DIR": str(log_dir.resolve()),
        # redis-server only when none answers and the broker is meant to be on this machine.
        "LH_START_REDIS": "true" if may_start_redis(cfg.redis_url) and nothing_listens(redis_problem(cfg.redis_url))
                          else "false",
        "LH_REDIS_PORT": str(redis_url.port or 6379),
        "LH_START_SIM": "true" if cfg.mode == "paper" else "false",
        "LH_AUTOSTART": "true" if autostart else "false",
        "LH_FLOWER_PORT": str(cfg.flower_port),
        "LH_START_ALERTER": "true" if cfg.alerts.enabled else "false",   # [program:alerter]
    })
    return env


def is_secret_env(name: str, cfg: Config) -> bool:
    return (name in _SECRET_ENV or name in (cfg.account_a.private_key_env, cfg.account_b.private_key_env,
                                            cfg.alerts.webhook_url_env)   # the webhook URL carries a token
            or bool(_SECRET_NAME.search(name.upper())))


def secrets_dir(env: dict[str, str]) -> Path:
    return Path(env["LH_RUN_DIR"]) / SECRETS_DIR


def write_secrets(cfg: Config, env: dict[str, str]) -> Path:
    """run/secrets/: one file per program with only what that program needs (see the module doc).
    Reads the keys where the operator keeps them ($LH_ACCOUNT_*_PRIVATE_KEY, $LH_TASK_SIGNING_KEY,
    keys_file); raises ConfigError (one line) if one is missing."""
    from venue.keys import private_key, read_key_file, task_signing_key
    signing_key = task_signing_key(cfg).hex()
    keys = {name: (account, private_key(cfg, account))
            for name, account in (("maker", cfg.account_a), ("worker", cfg.account_b))}
    stored = read_key_file(cfg.keys_file) if cfg.keys_file and cfg.mode == "paper" else {}
    from ops.alerter import WEBHOOK_FIELD, webhook_url
    alert_url = webhook_url(cfg) if cfg.alerts.enabled else None
    if cfg.alerts.enabled and alert_url is None:
        raise ConfigError(f"alerts.webhook_url_env: alerts.enabled is true but ${cfg.alerts.webhook_url_env} is not "
                          f"set (nor \"{WEBHOOK_FIELD}\" in keys_file); set it to the webhook URL, or alerts.enabled: "
                          f"false")
    directory = secrets_dir(env)
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(mode=0o700, parents=True)
    os.chmod(directory, 0o700)
    for name, (account, key) in keys.items():
        entry = {"api_key_index": account.api_key_index, "private_key": str(key)}
        content: dict = {str(account.account_index): entry, TASK_SIGNING_KEY_FIELD: signing_key}
        content.update(_redis_url_entry(name))
        write_key_file(str(directory / f"{name}.json"), content)
    write_key_file(str(directory / "flower.json"), _redis_url_entry("flower"))
    write_console_secrets(directory, signing_key, Path(env["LH_RUN_DIR"]))
    if alert_url is not None:   # alerter.json: the webhook URL (Slack's, Telegram's token is in it), no key
        write_key_file(str(directory / "alerter.json"), {WEBHOOK_FIELD: alert_url, **_redis_url_entry("alerter")})
    if cfg.mode == "paper":   # the simulator checks signatures with the public keys only
        public = {}
        for account in (cfg.account_a, cfg.account_b):
            entry = stored.get(str(account.account_index))
            if isinstance(entry, dict) and entry.get("public_key"):
                public[str(account.account_index)] = {
                    "api_key_index": entry.get("api_key_index", account.api_key_index),
                    "public_key": entry["public_key"]}
        write_key_file(str(directory / "sim.json"), public)
    basic_auth = f"{flower_user()}:{flower_password(Path(env['LH_RUN_DIR']))}"
    fd = os.open(directory / "flowerconfig.py", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write("# Flower's basic auth, for Flower alone; written by `lighter-hedge up`, removed by `down`.\n"
                 f"basic_auth = [{basic_auth!r}]\n")
    return directory


def write_console_secrets(directory: Path, signing_key_hex: str, run_dir: Path) -> None:
    """console.json: what `lighter-hedge console` needs and nothing more. Requeue signs the hedge
    message, flatten signs its requests to the maker (A's close) and the worker (B's close): the task
    signing key; no account key (without a maker or worker running, its Flatten says so and sends
    nothing). Its basic auth is Flower's."""
    write_key_file(str(directory / "console.json"), {
        TASK_SIGNING_KEY_FIELD: signing_key_hex, CONSOLE_USER_FIELD: flower_user(),
        CONSOLE_PASSWORD_FIELD: flower_password(run_dir), **_redis_url_entry("console")})


def _redis_url_entry(program: str) -> dict[str, str]:
    url = os.environ.get(PROGRAM_REDIS_URL_ENV[program], "").strip() or os.environ.get(REDIS_URL_ENV, "").strip()
    return {SECRETS_REDIS_URL_FIELD: url} if url else {}


def flower_user() -> str:
    return os.environ.get("LH_FLOWER_USER", "operator")


def flower_password(run_dir: Path) -> str:
    """$LH_FLOWER_PASSWORD, else a generated one kept in run/flower-password (mode 0600)."""
    if os.environ.get("LH_FLOWER_PASSWORD"):
        return os.environ["LH_FLOWER_PASSWORD"]
    path = run_dir / "flower-password"
    if not path.exists():
        run_dir.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as fh:
            fh.write(secrets.token_urlsafe(18))
    return path.read_text().strip()


def clear_paper_state(store) -> None:
    """Paper mode: the simulator starts empty, so the last run's registry, pauses, stream cutoff
    and results describe an exchange that no longer exists. Only our own keys are removed."""
    for pattern in ("lh:*", "lh[0-9]*:celery-task-meta-*", "celery-task-meta-*", "_kombu*", "unacked*"):
        keys = list(store.r.scan_iter(match=pattern, count=500))
        if keys:
            store.r.delete(*keys)
    store.r.delete("hedge.b")


def running_supervisord(env: dict[str, str]) -> int | None:
    """The pid of this deployment's supervisord if it runs (its pidfile names a live process)."""
    pidfile = Path(env["LH_RUN_DIR"]) / "supervisord.pid"
    try:
        pid = int(pidfile.read_text().strip())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid


SOCKET_PATH_MAX = 107   # bytes of a unix socket's path (sun_path holds 108 with the NUL)


def check_socket_path(env: dict[str, str]) -> None:
    """supervisord's socket lives in LH_RUN_DIR; a path too long for a unix socket would make it
    exit with nothing but its usage line."""
    sock = os.fsencode(Path(env["LH_RUN_DIR"]) / "supervisor.sock")
    if len(sock) > SOCKET_PATH_MAX:
        raise StartError(f"LH_RUN_DIR is too deep for supervisord's socket: {env['LH_RUN_DIR']}/supervisor.sock "
                         f"is {len(sock)} bytes, a unix socket path holds at most {SOCKET_PATH_MAX}; "
                         f"set LH_RUN_DIR to a shorter directory")


def start(env: dict[str, str], cfg: Config) -> None:
    """Write each program's secrets, then start supervisord (it returns once its socket listens)."""
    check_socket_path(env)
    Path(env["LH_RUN_DIR"]).mkdir(parents=True, exist_ok=True)
    Path(env["LH_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
    write_secrets(cfg, env)
    proc = subprocess.run([str(BIN / "supervisord"), "-c", str(CONF)], env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        shutil.rmtree(secrets_dir(env), ignore_errors=True)
        said = [line for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        raise StartError(f"supervisord did not start (exit {proc.returncode}): "
                         f"{said[-1].strip() if said else 'no output'}; see {env['LH_LOG_DIR']}/supervisord.log")


def rpc(env: dict[str, str]):
    """supervisord's XML-RPC interface over its unix socket (what supervisorctl uses)."""
    from supervisor.xmlrpc import SupervisorTransport
    transport = SupervisorTransport(None, None, f"unix://{env['LH_RUN_DIR']}/supervisor.sock")
    return xmlrpc.client.ServerProxy("http://127.0.0.1", transport=transport).supervisor


_FAILED = ("BACKOFF", "FATAL", "EXITED", "STOPPED", "UNKNOWN")


def start_programs(env: dict[str, str], names: list[str], *, already_started: tuple[str, ...] = (),
                   ready: dict[str, Callable[[], bool]] | None = None, timeout_s: float = 90) -> None:
    """Start `names` (and wait for `already_started`, autostarted by supervisord) until each is up:
    RUNNING (alive past its startsecs) and, if it has one, its `ready` probe holds (it answers, beats,
    logged its start). One that exits, restarts or is not up within timeout_s raises StartError
    naming it and the last line of its log."""
    server = rpc(env)
    wanted = [*already_started, *names]
    probes = ready or {}
    for name in names:
        try:
            server.startProcess(name, False)
        except xmlrpc.client.Fault as fault:
            if "ALREADY_STARTED" not in fault.faultString:
                raise StartError(_not_started(env, name, f"{fault.faultString}")) from None
    deadline = time.monotonic() + timeout_s
    first_start: dict[str, int] = {}
    up: set[str] = set()
    while True:
        infos = {info["name"]: info for info in server.getAllProcessInfo()}
        for name in wanted:
            info = infos[name]
            state = info["statename"]
            if name in first_start and info["start"] != first_start[name]:
                raise StartError(_not_started(env, name, f"it exited and was restarted, exit status "
                                                         f"{info['exitstatus']}"))
            if state == "RUNNING":
                first_start.setdefault(name, info["start"])
                if name not in up and (name not in probes or probes[name]()):
                    up.add(name)
            elif state in _FAILED and not (state == "STOPPED" and name in already_started and not info["start"]):
                raise StartError(_not_started(env, name, f"{state}: {info['spawnerr'] or info['description']}"))
        if len(up) == len(wanted):
            return
        if time.monotonic() > deadline:
            late = [n for n in wanted if n not in up][0]
            raise StartError(_not_started(env, late, f"not up after {timeout_s:.0f} s, {infos[late]['statename']}"
                                                     + (" but not answering" if late in first_start else "")))
        time.sleep(0.25)


def readiness(cfg: Config, env: dict[str, str]) -> dict[str, Callable[[], bool]]:
    """When each program is up, for start_programs: the sim, Flower and the console answer HTTP, the worker's
    heartbeat is in Redis, the maker logged event=maker.start (after this start). Take it before
    starting them (the maker's log offset)."""
    from tasks.store import Store
    store = Store.from_url(cfg.redis_url)
    maker_offset = log_size(env, "maker")
    return {
        "sim": lambda: http_answers(cfg.base_url.rstrip("/") + "/admin/state"),
        "worker": store.worker_alive,
        "maker": lambda: log_says(env, "maker", "event=maker.start", maker_offset),
        "flower": lambda: http_answers(f"http://127.0.0.1:{cfg.flower_port}/healthcheck"),
        "console": lambda: http_answers(f"http://127.0.0.1:{cfg.console_port}/healthz"),
    }


def http_answers(url: str) -> bool:
    """Any HTTP answer (a 401 too) within a second: the server is listening and serving."""
    import urllib.error
    import urllib.request
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))   # loopback: no proxy
    try:
        with opener.open(url, timeout=1):
            return True
    except urllib.error.HTTPError:
        return True
    except (OSError, ValueError):
        return False


def log_size(env: dict[str, str], name: str) -> int:
    try:
        return (Path(env["LH_LOG_DIR"]) / f"{name}.log").stat().st_size
    except OSError:
        return 0


def log_says(env: dict[str, str], name: str, marker: str, offset: int) -> bool:
    """`marker` is in the program's log after `offset` (its size before this start)."""
    try:
        with open(Path(env["LH_LOG_DIR"]) / f"{name}.log", "rb") as fh:
            fh.seek(offset)
            return marker.encode() in fh.read()
    except OSError:
        return False


def _not_started(env: dict[str, str], name: str, why: str) -> str:
    log = Path(env["LH_LOG_DIR"]) / f"{name}.log"
    last = ""
    try:
        lines = [line.strip() for line in log.read_text(errors="replace").splitlines()[-50:] if line.strip()]
        last = lines[-1][:300] if lines else ""
    except OSError:
        pass
    return (f"{name} did not start ({' '.join(why.split())})" + (f"; its log ends: {last}" if last else "")
            + f"; log: {log}")


def wait_for_redis(url: str, timeout_s: float) -> None:
    """Until Redis answers at url; StartError with the redis error line after timeout_s."""
    deadline = time.monotonic() + timeout_s
    while (problem := redis_problem(url)) is not None:
        if time.monotonic() > deadline:
            raise StartError(redis_error_line(url, problem))
        time.sleep(0.1)


def ctl(env: dict[str, str], *args: str, check: bool = True) -> str:
    proc = subprocess.run([str(BIN / "supervisorctl"), "-c", str(CONF), *args], env=env,
                          capture_output=True, text=True)
    if check and proc.returncode not in (0,):
        raise RuntimeError(f"supervisorctl {' '.join(args)}: {proc.stdout.strip()} {proc.stderr.strip()}")
    return proc.stdout


def shutdown(env: dict[str, str], timeout_s: float = 60) -> None:
    pidfile = Path(env["LH_RUN_DIR"]) / "supervisord.pid"
    ctl(env, "shutdown", check=False)
    deadline = time.monotonic() + timeout_s
    while pidfile.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if not pidfile.exists():   # nothing left that could restart a program and need its secrets
        shutil.rmtree(secrets_dir(env), ignore_errors=True)


__all__ = ["supervisor_env", "start", "start_programs", "wait_for_redis", "ctl", "shutdown", "redis_answers",
           "redis_problem", "may_start_redis", "write_secrets", "StartError", "write_key_file"]
