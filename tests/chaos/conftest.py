"""Fixtures of the chaos suite: a Redis db of our own (tests/conftest.py), throwaway API keys,
and chaos clusters that are always torn down (the per-kind figures are printed by
tests/conftest.py, which pytest-xdist's controller loads too)."""
from __future__ import annotations

import pytest
import redis

from tests.chaos.harness import ChaosCluster, PrivateRedis, RedisTap, close_all


@pytest.fixture
def chaos(tmp_path, redis_url, keys_file):
    """make(seed, ...) -> a fresh ChaosCluster on the run's private db (flushed first).

    make(..., tap=True) routes the worker's Redis traffic through a RedisTap (cluster.tap);
    make(..., private_redis=True) runs everything on a throwaway redis-server (cluster.private_redis).
    Every process, tap and server started here is killed at teardown."""
    made: list = []

    def make(seed: int, *, tap: bool = False, maker_tap: bool = False, private_redis: bool = False, **kwargs) -> ChaosCluster:
        workdir = tmp_path / f"c{len(made)}-seed{seed}"
        workdir.mkdir()
        server = None
        if private_redis:
            server = PrivateRedis(workdir)
            made.append(server)
            url, db, port = server.url(0), 0, server.port
        else:
            url = redis_url
            redis.Redis.from_url(url).flushdb()
            db = int(url.rsplit("/", 1)[1])
            port = int(url.rsplit(":", 1)[1].split("/")[0])
        proxy = None
        if tap:
            proxy = RedisTap(port)
            made.append(proxy)
        mproxy = None
        if maker_tap:
            mproxy = RedisTap(port)
            made.append(mproxy)
        cluster = ChaosCluster(workdir, url, keys_file, seed=seed,
                               worker_redis_url=proxy.url(db) if proxy else None,
                               maker_redis_url=mproxy.url(db) if mproxy else None, **kwargs)
        cluster.maker_tap = mproxy
        cluster.tap = proxy
        cluster.private_redis = server
        made.append(cluster)
        return cluster

    yield make
    close_all(made)
    redis.Redis.from_url(redis_url).flushdb()

