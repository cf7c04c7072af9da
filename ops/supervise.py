"""Start and stop supervisord with the environment supervisord.conf expects."""
from __future__ import annotations

import os
import secrets
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import redis

from hedge.config import Config
from ops.settings import PROJECT_ROOT
from venue.keys import write_key_file

BIN = Path(sys.executable).parent
CONF = PROJECT_ROOT / "supervisord.conf"


def redis_answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except redis.RedisError:
        return False


def supervisor_env(cfg: Config, config_file: Path, run_dir: Path, log_dir: Path, autostart: bool) -> dict[str, str]:
    redis_url = urlsplit(cfg.redis_url)
    local_redis = (redis_url.hostname or "") in ("127.0.0.1", "localhost", "::1")
    env = dict(os.environ)
    env.update({
        "LH_BIN": str(BIN),
        "LH_CONFIG": str(config_file.resolve()),
        "LH_RUN_DIR": str(run_dir),
        "LH_LOG_DIR": str(log_dir),
        # redis-server only when none answers and the broker is meant to be on this machine.
        "LH_START_REDIS": "true" if local_redis and not redis_answers(cfg.redis_url) else "false",
        "LH_REDIS_PORT": str(redis_url.port or 6379),
        "LH_START_SIM": "true" if cfg.mode == "paper" else "false",
        "LH_AUTOSTART": "true" if autostart else "false",
        "LH_FLOWER_PORT": str(cfg.flower_port),
        "FLOWER_BASIC_AUTH": f"{flower_user()}:{flower_password(run_dir)}",
    })
    return env


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


def start(env: dict[str, str]) -> None:
    Path(env["LH_RUN_DIR"]).mkdir(parents=True, exist_ok=True)
    Path(env["LH_LOG_DIR"]).mkdir(parents=True, exist_ok=True)
    subprocess.run([str(BIN / "supervisord"), "-c", str(CONF)], env=env, check=True)


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


__all__ = ["supervisor_env", "start", "ctl", "shutdown", "redis_answers", "write_key_file"]
