"""Read config.yaml and the environment into a validated Config (the I/O around hedge.config)."""
from __future__ import annotations

import os
from pathlib import Path

import yaml

from hedge.config import Config, ConfigError, parse_config

CONFIG_ENV = "LH_CONFIG"
REDIS_URL_ENV = "LH_REDIS_URL"  # overrides redis.url (tests use their own db number)
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
    if isinstance(raw, dict) and os.environ.get(REDIS_URL_ENV):
        raw = dict(raw)
        redis = dict(raw.get("redis") or {})
        redis["url"] = os.environ[REDIS_URL_ENV]
        redis.pop("result_backend_url", None)
        raw["redis"] = redis
    cfg = parse_config(raw)
    if cfg.keys_file and not os.path.isabs(cfg.keys_file):
        # keys_file is relative to the config file, so the config can be moved with its keys.
        cfg = _replace_keys_file(cfg, str((p.parent / cfg.keys_file).resolve()))
    return cfg


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
