"""Every paper-mode command creates the paper keys it needs: `lighter-hedge sim` on a fresh checkout."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import urllib.request
from pathlib import Path

import pytest
import yaml

from tests.integration.cluster import BIN, wait_until
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration
REPO_CONFIG = Path(__file__).resolve().parents[2] / "config.yaml"


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return resp.status == 200
    except OSError:
        return False


def test_sim_on_a_fresh_checkout_creates_the_paper_keys_and_serves(tmp_path):
    cfg = yaml.safe_load(REPO_CONFIG.read_text())
    port = free_port()
    cfg["lighter"].update(base_url=f"http://127.0.0.1:{port}", ws_url=f"ws://127.0.0.1:{port}/stream")
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(cfg))   # keys_file .paper-keys.json: not there
    keys = tmp_path / ".paper-keys.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("LH_")}
    log = open(tmp_path / "sim.log", "wb")
    proc = subprocess.Popen([str(BIN / "lighter-hedge"), "sim", "--config", str(tmp_path / "config.yaml")],
                            stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
    try:
        wait_until(lambda: _answers(f"http://127.0.0.1:{port}/admin/state") or proc.poll() is not None, 60,
                   "the simulator to answer")
        assert proc.poll() is None, (tmp_path / "sim.log").read_text()[-2000:]
        stored = json.loads(keys.read_text())
        assert {cfg["accounts"][a]["account_index"] for a in ("account_a", "account_b")} == \
            {int(k) for k in stored if k.isdigit()}
        assert set(stored) - {k for k in stored if k.isdigit()} == {"task_signing_key"}   # venue.keys
        assert keys.stat().st_mode & 0o777 == 0o600   # throwaway, but keys all the same
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
        log.close()
