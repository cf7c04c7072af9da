"""README's first command: the paper-mode demo under supervisord, end to end."""
from __future__ import annotations

import os
import re
import subprocess
import time

import pytest
import yaml

from tests.integration.cluster import BIN
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration


def test_demo_runs_everything_under_supervisord_and_ends_flat(tmp_path, redis_url, keys_file):
    sim_port, flower_port = free_port(), free_port()
    config = yaml.safe_load(open(os.path.join(os.path.dirname(__file__), "..", "..", "config.yaml")))
    config["lighter"] = {"base_url": f"http://127.0.0.1:{sim_port}", "ws_url": f"ws://127.0.0.1:{sim_port}/stream"}
    config["redis"] = {"url": redis_url}
    config["flower"] = {"port": flower_port}
    config["keys_file"] = keys_file
    path = tmp_path / "config.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, LH_RUN_DIR=str(tmp_path / "run"), LH_LOG_DIR=str(tmp_path / "logs"))
    env.pop("LH_REDIS_URL", None)

    started = time.monotonic()
    proc = subprocess.run([str(BIN / "lighter-hedge"), "demo", "--config", str(path), "--rounds", "1"],
                          capture_output=True, text=True, env=env, timeout=180)
    took_s = time.monotonic() - started

    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert took_s < 120
    summary = [line for line in proc.stdout.splitlines() if line.startswith("market=")]
    assert sorted(line.split()[0] for line in summary) == ["market=BTC", "market=ETH"]
    for line in summary:
        fields = dict(item.split("=", 1) for item in line.split())
        assert fields["net_exposure"] == "0"
        assert int(fields["rounds"]) >= 1 and int(fields["fills"]) >= 2
        assert fields["hedges"] == fields["fills"]
    assert re.search(r"^hedge  market=ETH fill_id=\S+ side=(buy|sell) .*latency_ms=\d+", proc.stdout, re.M)
    assert f"http://127.0.0.1:{flower_port}" in proc.stdout
    # supervisord ran the four programs and shut them down again.
    for program in ("sim", "worker", "maker", "flower"):
        log = tmp_path / "logs" / f"{program}.log"
        assert log.exists(), program
        assert log.stat().st_mode & 0o777 == 0o640, (program, oct(log.stat().st_mode))   # not world-readable
    assert not (tmp_path / "run" / "supervisord.pid").exists()
