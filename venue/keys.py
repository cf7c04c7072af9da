"""Private keys: from the environment or a 0600 JSON key file, never from config.yaml or a message.

Key file form: {"<account_index>": {"api_key_index": 3, "private_key": "0x…", "public_key": "0x…"},
                "task_signing_key": "<64 hex digits>"}
The task signing key authenticates hedge task messages between the maker and the worker
(tasks.signing); it is the only entry not keyed by an account index.
"""
from __future__ import annotations

import json
import os
import secrets
import stat

from hedge.config import AccountConfig, Config, ConfigError


class Secret(str):
    """A str whose repr never shows the value, so a stray log line or traceback cannot leak it."""

    def __repr__(self) -> str:
        return "Secret('***')"


def private_key(cfg: Config, account: AccountConfig) -> Secret:
    env_value = os.environ.get(account.private_key_env)
    if env_value:
        return Secret(env_value.strip())
    if cfg.keys_file:
        entry = read_key_file(cfg.keys_file).get(str(account.account_index))
        if entry and entry.get("private_key"):
            if int(entry.get("api_key_index", account.api_key_index)) != account.api_key_index:
                raise ConfigError(
                    f"keys_file {cfg.keys_file}: account {account.account_index} has api_key_index "
                    f"{entry.get('api_key_index')}, config says {account.api_key_index}")
            return Secret(entry["private_key"])
    raise ConfigError(
        f"accounts.{account.name}: no private key; set ${account.private_key_env}"
        + (f" or add account {account.account_index} to {cfg.keys_file}" if cfg.keys_file else ""))


TASK_SIGNING_KEY_ENV = "LH_TASK_SIGNING_KEY"
TASK_SIGNING_KEY_FIELD = "task_signing_key"
TASK_SIGNING_KEY_MIN_HEX = 64   # 32 bytes


def task_signing_key(cfg: Config) -> bytes:
    """The HMAC key the maker signs hedge task messages with and the worker checks them with:
    $LH_TASK_SIGNING_KEY, else keys_file's "task_signing_key" (hex, at least 32 bytes)."""
    where = f"${TASK_SIGNING_KEY_ENV}"
    value = os.environ.get(TASK_SIGNING_KEY_ENV, "").strip()
    if not value and cfg.keys_file:
        value = str(read_key_file(cfg.keys_file).get(TASK_SIGNING_KEY_FIELD) or "").strip()
        where = f"keys_file {cfg.keys_file} field {TASK_SIGNING_KEY_FIELD}"
    if not value:
        raise ConfigError(
            f"no task signing key: set ${TASK_SIGNING_KEY_ENV} (openssl rand -hex 32) for the maker and "
            f"the worker" + (f", or add \"{TASK_SIGNING_KEY_FIELD}\" to {cfg.keys_file}" if cfg.keys_file else ""))
    try:
        key = bytes.fromhex(value.removeprefix("0x"))
    except ValueError:
        raise ConfigError(f"{where}: expected hex digits (openssl rand -hex 32)") from None
    if len(key) * 2 < TASK_SIGNING_KEY_MIN_HEX:
        raise ConfigError(f"{where}: {len(key)} bytes; expected at least 32 (openssl rand -hex 32)")
    return key


def read_key_file(path: str) -> dict:
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return {}
    if stat.S_IMODE(st.st_mode) & 0o077:
        raise ConfigError(f"keys_file {path}: mode is {oct(stat.S_IMODE(st.st_mode))}, must be 0600 "
                          f"(chmod 600 {path})")
    try:
        with open(path) as fh:
            data = json.load(fh)
    except (OSError, ValueError) as exc:
        raise ConfigError(f"keys_file {path}: not readable JSON ({type(exc).__name__})") from None
    if not isinstance(data, dict):
        raise ConfigError(f"keys_file {path}: expected a JSON object keyed by account index")
    return data


def write_key_file(path: str, entries: dict) -> None:
    """Create the key file with mode 0600 from the start (never world-readable, even briefly)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        json.dump(entries, fh, indent=2)
    os.chmod(path, 0o600)


def ensure_paper_keys(cfg: Config) -> None:
    """Paper mode only: generate throwaway API keys for A and B when the key file lacks them.

    Runs the SDK's key generator in a child process: loading the Go signer here would make
    any later fork of this process unsafe.
    """
    if cfg.mode != "paper" or not cfg.keys_file:
        return
    import fcntl
    # Several paper commands may start at once on a fresh checkout: one writes the keys, the
    # others read them (two sets would leave the simulator and the engine with different keys).
    with open(f"{cfg.keys_file}.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        _ensure_paper_keys_locked(cfg)


def _ensure_paper_keys_locked(cfg: Config) -> None:
    assert cfg.keys_file is not None
    existing = read_key_file(cfg.keys_file)
    wanted = [a for a in (cfg.account_a, cfg.account_b) if str(a.account_index) not in existing]
    if not wanted:
        if not existing.get(TASK_SIGNING_KEY_FIELD):
            existing[TASK_SIGNING_KEY_FIELD] = secrets.token_hex(32)
            write_key_file(cfg.keys_file, existing)
        return
    import subprocess
    import sys
    code = ("import json, lighter\n"
            "out = []\n"
            f"for _ in range({len(wanted)}):\n"
            "    priv, pub, err = lighter.create_api_key()\n"
            "    assert err is None, err\n"
            "    out.append([priv, pub])\n"
            "print(json.dumps(out))\n")
    proc = subprocess.run([sys.executable, "-W", "ignore", "-c", code], capture_output=True, text=True, timeout=60)
    if proc.returncode != 0:
        raise RuntimeError(f"could not generate paper keys: {proc.stderr.strip()[-300:]}")
    pairs = json.loads(proc.stdout)
    for account, (priv, pub) in zip(wanted, pairs):
        existing[str(account.account_index)] = {
            "api_key_index": account.api_key_index, "private_key": priv, "public_key": pub}
    existing.setdefault(TASK_SIGNING_KEY_FIELD, secrets.token_hex(32))
    write_key_file(cfg.keys_file, existing)
