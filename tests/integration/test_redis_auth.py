"""A password-protected Redis works end to end, and its password never shows."""
from __future__ import annotations

import shutil
import subprocess
from decimal import Decimal

import pytest
import redis

from tests.integration.cluster import BIN, A, B, Cluster, wait_until
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration
PASSWORD = "hunter2-NOT-IN-LOGS-7f3a"


@pytest.fixture
def private_redis(tmp_path):
    if not shutil.which("redis-server"):
        pytest.skip("redis-server is not installed")
    port = free_port()
    proc = subprocess.Popen(["redis-server", "--bind", "127.0.0.1", "--port", str(port), "--save", "",
                             "--appendonly", "no", "--requirepass", PASSWORD, "--dir", str(tmp_path)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"redis://:{PASSWORD}@127.0.0.1:{port}/0"
    wait_until(lambda: _answers(url), 10, "the private redis-server")
    yield url, port
    proc.kill()
    proc.wait(10)


def _answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url).ping())
    except redis.RedisError:
        return False


def test_password_protected_redis_hedges_and_the_password_stays_secret(tmp_path, keys_file, private_redis):
    url, port = private_redis
    c = Cluster(tmp_path, url, keys_file)
    try:
        c.start_worker()
        c.start_maker()
        buy = c.wait_resting_order()
        c.fill(buy, ["0.0500"])
        wait_until(lambda: c.position(B) == Decimal("-0.0500"), 30, "the hedge over the password-protected broker")
        assert c.position(A) + c.position(B) == 0

        status = c.cli("status")
        assert status.returncode == 0 and "market=ETH" in status.stdout
        wrong = subprocess.run([str(BIN / "lighter-hedge"), "status", "--config",
                                str(_with_password(tmp_path, c, port, "wrong"))],
                               capture_output=True, text=True, env=c.env(), timeout=60)
        # One line naming the Redis with its password masked, exit 2 (a bad Redis URL is a setup error).
        assert wrong.returncode == 2 and wrong.stderr.startswith("redis error: ") and "***" in wrong.stderr
        assert len(wrong.stderr.strip().splitlines()) == 1, wrong.stderr
        for text in (status.stdout, status.stderr, wrong.stdout, wrong.stderr, c.log("worker"), c.log("maker")):
            assert PASSWORD not in text and "wrong@" not in text
    finally:
        c.close()


def _with_password(tmp_path, c: Cluster, port: int, password: str):
    import yaml
    cfg = dict(c.config, redis={"url": f"redis://:{password}@127.0.0.1:{port}/0"})
    path = tmp_path / "wrong.yaml"
    path.write_text(yaml.safe_dump(cfg))
    return path
