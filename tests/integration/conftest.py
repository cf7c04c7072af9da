"""Fixtures for integration tests: a cluster per test (redis_url and keys_file: tests/conftest.py).

Clusters run the simulator's `instant` profile (no request limits, no speed bumps) unless a test
passes `profile=`: these tests prove the pipeline, and the engine does not fit Lighter's Standard
budget yet (issue 10). venue.sim.harness.PROFILES says what each profile is."""
from __future__ import annotations

import pytest
import redis

from tests.integration.cluster import Cluster



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
