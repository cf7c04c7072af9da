"""Test-run setup: a Redis db number of our own, chosen before any test imports Celery.

The db is locked (a key in db 0) so parallel runs on one machine never share state,
flushed before and after, and exported as LH_REDIS_URL for this process and its children.
"""
from __future__ import annotations

import os

import pytest
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


def pytest_sessionfinish(session):
    workeroutput = getattr(session.config, "workeroutput", None)   # an xdist worker: hand the figures over
    if workeroutput is not None:
        from tests.chaos.harness import figures_state
        workeroutput["chaos_figures"] = figures_state()


@pytest.hookimpl(optionalhook=True)
def pytest_testnodedown(node, error):
    """xdist's controller: add a finished worker's chaos figures to its own."""
    state = getattr(node, "workeroutput", {}).get("chaos_figures")
    if state:
        from tests.chaos.harness import merge_figures
        merge_figures(state)


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    """The chaos suite's per-kind figures (tests/chaos/harness.py), once for the whole run."""
    from tests.chaos.harness import summary_lines
    lines = summary_lines()
    if len(lines) > 1:
        terminalreporter.section("chaos figures")
        for line in lines:
            terminalreporter.write_line(line)


@pytest.fixture(scope="session")
def redis_url() -> str:
    """The run's own Redis db (chosen and locked above)."""
    return os.environ["LH_REDIS_URL"]


@pytest.fixture(scope="session")
def keys_file(tmp_path_factory) -> str:
    """Throwaway API keys for accounts A (281001, key 3) and B (281002, key 4), in a 0600 key file."""
    from hedge.config import parse_config
    from venue.keys import ensure_paper_keys

    path = tmp_path_factory.mktemp("keys") / "keys.json"
    cfg = parse_config({
        "lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
        "redis": {"url": "redis://127.0.0.1:6379/0"}, "keys_file": str(path),
        "accounts": {"account_a": {"account_index": 281001, "api_key_index": 3},
                     "account_b": {"account_index": 281002, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}})
    ensure_paper_keys(cfg)
    return str(path)


@pytest.fixture
def r(redis_url) -> redis.Redis:
    """A client of the run's Redis db; test budgets (new_budget) are deleted afterwards."""
    client = redis.Redis.from_url(redis_url, decode_responses=True)
    yield client
    for key in client.scan_iter(match="lh:test-budget:*", count=500):
        client.delete(key)


def new_budget(r: redis.Redis, limit, **kw):
    """A request budget (venue.budget) of its own in the run's db, for one test."""
    import uuid

    from venue.budget import RequestBudget
    return RequestBudget(r, f"lh:test-budget:{uuid.uuid4().hex[:12]}", limit, **kw)
