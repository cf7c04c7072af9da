"""Test-run setup: a Redis db number of our own, chosen before any test imports Celery.

The db is locked (a key in db 0) so parallel runs on one machine never share state,
flushed before and after, and exported as LH_REDIS_URL for this process and its children.
"""
from __future__ import annotations

import os

import redis

BASE_REDIS = os.environ.get("LH_TEST_REDIS", "redis://127.0.0.1:6379")
_LOCK = {}


def pytest_configure(config):
    client = redis.Redis.from_url(f"{BASE_REDIS}/0", socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        raise SystemExit(f"tests need a Redis server at {BASE_REDIS} ({exc}); `make test` starts one")
    for db in range(15, 0, -1):
        key = f"lighter-hedge:test-db-lock:{db}"
        if client.set(key, os.getpid(), nx=True, ex=3 * 3600):
            url = f"{BASE_REDIS}/{db}"
            redis.Redis.from_url(url).flushdb()
            os.environ["LH_REDIS_URL"] = url
            _LOCK.update(client=client, key=key, url=url)
            return
    raise SystemExit("no free Redis db (1..15) for this test run")


def pytest_unconfigure(config):
    if _LOCK:
        redis.Redis.from_url(_LOCK["url"]).flushdb()
        _LOCK["client"].delete(_LOCK["key"])
