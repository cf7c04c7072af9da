"""The `ledger:` section (retention of the ledger's history): defaults, bounds, where the archive goes."""
from __future__ import annotations

import pytest
import yaml

from hedge.config import ConfigError, LedgerConfig, parse_config
from ops.settings import load_config
from tests.unit.test_config import REPO_CONFIG, good


def test_without_a_ledger_section_history_is_kept_an_hour():
    assert parse_config(good()).ledger == LedgerConfig(retention_s=3600.0, prune_interval_s=30.0,
                                                       archive_path="logs/ledger-archive.jsonl")
    assert parse_config(yaml.safe_load(REPO_CONFIG.read_text())).ledger.retention_s == 3600


@pytest.mark.parametrize("ledger, message", [
    ({"retention_s": 30}, "ledger.retention_s: expected at least 60 seconds"),
    ({"retention_s": float("inf")}, "ledger.retention_s: expected a positive, finite number of seconds"),
    ({"prune_interval_s": 0}, "ledger.prune_interval_s: expected a positive, finite number of seconds"),
    ({"archive_path": ""}, "ledger.archive_path: expected a file path"),
    ({"retention": 600}, "ledger.retention: unknown key; did you mean ledger.retention_s?"),
])
def test_a_bad_ledger_field_is_named(ledger, message):
    with pytest.raises(ConfigError, match=message.replace("?", r"\?")):
        parse_config({**good(), "ledger": ledger})


def test_a_relative_archive_path_is_next_to_the_config_file(tmp_path):
    path = tmp_path / "deploy" / "config.yaml"
    path.parent.mkdir()
    path.write_text(yaml.safe_dump({**good(), "ledger": {"archive_path": "logs/archive.jsonl"}}))
    assert load_config(path).ledger.archive_path == str(tmp_path / "deploy" / "logs" / "archive.jsonl")
