"""Fixtures for integration tests: a Redis db of our own, throwaway API keys, a cluster per test."""
from __future__ import annotations

import os

import pytest
import redis

from hedge.config import parse_config
from tests.integration.cluster import A, B, Cluster
from venue.keys import ensure_paper_keys

@pytest.fixture(scope="session")
def redis_url() -> str:
    return os.environ["LH_REDIS_URL"]  # chosen and locked in tests/conftest.py

@pytest.fixture(scope="session")
def keys_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("keys") / "keys.json"
    cfg = parse_config({
        "lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
        "redis": {"url": "redis://127.0.0.1:6379/0"}, "keys_file": str(path),
        "accounts": {"account_a": {"account_index": A, "api_key_index": 3},
                     "account_b": {"account_index": B, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}})
    ensure_paper_keys(cfg)
    return str(path)

@pytest.fixture
def make_cluster(tmp_path, redis_url, keys_file):
    clusters = []

    def make(**kwargs) -> Cluster:
        redis.Redis.from_url(redis_url).flushdb()
        cluster = Cluster(tmp_path, redis_url, keys_file, **kwargs)
        clusters.append(cluster)
        return cluster

    yield make
    for cluster in clusters:
        cluster.close()
