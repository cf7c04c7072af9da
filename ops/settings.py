"""Read config.yaml and the environment into a validated Config (the I/O around hedge.config)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from hedge.config import Config, ConfigError, parse_config

CONFIG_ENV = "LH_CONFIG"
REDIS_URL_ENV = "LH_REDIS_URL"  # overrides redis.url (tests use their own db number)
# Overrides keys_file. `lighter-hedge up` points each program at its own secrets file (run/secrets/),
# holding only that program's key; such a file may also carry the program's "redis_url".
KEYS_FILE_ENV = "LH_KEYS_FILE"
SECRETS_REDIS_URL_FIELD = "redis_url"
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def config_path(path: str | os.PathLike | None = None) -> Path:
    if path:
        return Path(path)
    if os.environ.get(CONFIG_ENV):
        return Path(os.environ[CONFIG_ENV])
    return PROJECT_ROOT / "config.yaml"


def load_config(path: str | os.PathLike | None = None) -> Config:
    p = config_path(path)
    try:
        text = p.read_text()
    except OSError as exc:
        raise ConfigError(f"config file {p}: cannot read ({exc.strerror})") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {p}: not valid YAML ({exc})") from None
    if isinstance(raw, dict):
        raw = _environment_overrides(raw)
    cfg = parse_config(raw)
    if cfg.keys_file and not os.path.isabs(cfg.keys_file):
        # keys_file is relative to the config file, so the config can be moved with its keys.
        cfg = _replace_keys_file(cfg, str((p.parent / cfg.keys_file).resolve()))
    if not os.path.isabs(cfg.ledger.archive_path):   # like keys_file: relative to the config file
        from dataclasses import replace
        cfg = replace(cfg, ledger=replace(cfg.ledger, archive_path=str((p.parent / cfg.ledger.archive_path).resolve())))
    return cfg


def _environment_overrides(raw: dict) -> dict:
    """$LH_KEYS_FILE replaces keys_file; the Redis URL is $LH_REDIS_URL, else the "redis_url" of the
    $LH_KEYS_FILE file (how `up` hands a program its Redis password), else redis.url."""
    keys_file = os.environ.get(KEYS_FILE_ENV, "").strip()
    redis_url = os.environ.get(REDIS_URL_ENV, "").strip()
    raw = dict(raw)
    if keys_file:
        raw["keys_file"] = os.path.abspath(keys_file)
        if not redis_url:
            from venue.keys import read_key_file
            value = read_key_file(raw["keys_file"]).get(SECRETS_REDIS_URL_FIELD)
            if value is not None and not isinstance(value, str):
                raise ConfigError(f"keys_file {raw['keys_file']}: {SECRETS_REDIS_URL_FIELD}: expected a "
                                  f"redis:// or rediss:// URL string")
            redis_url = (value or "").strip()
    if redis_url:
        redis = dict(raw.get("redis") or {})
        redis["url"] = redis_url
        redis.pop("result_backend_url", None)
        raw["redis"] = redis
    return raw


def mask_url(url: str) -> str:
    """A URL without its password, for messages: redis://user:***@host:6379/0."""
    from urllib.parse import urlsplit
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "<unparsable URL>"
    if password:
        userinfo, _, hostinfo = parts.netloc.rpartition("@")
        user = userinfo.split(":", 1)[0]
        return parts._replace(netloc=f"{user}:***@{hostinfo}").geturl()
    return url


def redis_error_line(url: str, exc: BaseException) -> str:
    """One line for an operator: what failed against which Redis (password masked) and where to fix it."""
    import re

    import redis
    where = "(redis.url in config.yaml or $LH_REDIS_URL)"
    try:
        from urllib.parse import urlsplit
        password = urlsplit(url).password
    except ValueError:
        password = None
    text = " ".join(str(exc).split()).rstrip(".")
    if password:
        text = text.replace(password, "***")
    cause = exc.__cause__ or exc.__context__
    if isinstance(exc, redis.AuthenticationError) or (isinstance(exc, redis.ResponseError)
                                                      and text.upper().startswith(("WRONGPASS", "NOAUTH"))):
        return f"redis error: {mask_url(url)} refused the login ({text}); check the user and password {where}"
    if isinstance(exc, (redis.ConnectionError, redis.TimeoutError)):
        if isinstance(cause, OSError) and cause.strerror:
            reason = cause.strerror
        else:
            m = re.match(r"Error -?\d+ connecting to \S+?\. (.*)", text)
            reason = m.group(1) if m else (text or type(exc).__name__)
        return f"redis error: cannot connect to {mask_url(url)} ({reason}); is Redis running? {where}"
    return f"redis error: {mask_url(url)}: {type(exc).__name__}: {text}"


def _replace_keys_file(cfg: Config, keys_file: str) -> Config:
    from dataclasses import replace
    return replace(cfg, keys_file=keys_file)


def redis_db(url: str) -> int:
    """The db number of a redis:// URL (0 when none is given)."""
    from urllib.parse import urlsplit
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def result_keyprefix(result_backend_url: str) -> str:
    """Celery's Redis result backend publishes each result on a channel named like its key, and
    pub/sub channels are server-wide: prefixing keys with the db keeps deployments (and test runs)
    that share a server, and may reuse task ids, from reading each other's results."""
    return f"lh{redis_db(result_backend_url)}:"


# Celery result lifetimes (celeryconfig.py). A hedge's result is read by the maker within
# milliseconds of being stored (and Flower shows results from the worker's events, not from Redis):
# a minute leaves time for anyone else waiting on it. A failed hedge's result lives a day; requeue
# takes the fill from the failed record in the ledger, which lives until the hedge is requeued.
RESULT_TTL_S = 60
FAILED_RESULT_TTL_S = 24 * 3600
