"""The Go signer's GC target reaches every process that signs (venue/signer_env.py): it is read only
from the environment a process starts with, so supervisord.conf must hand it to the stack."""
from __future__ import annotations

import configparser
import csv
from pathlib import Path

from venue.signer_env import SIGNER_ENV

CONF = Path(__file__).resolve().parents[2] / "supervisord.conf"


def _environment(section: str) -> dict[str, str]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF)
    value = parser.get(section, "environment", fallback="")
    pairs = next(csv.reader([value], skipinitialspace=True)) if value else []
    return {k: v.strip('"') for k, _, v in (pair.partition("=") for pair in pairs)}


def test_supervisord_starts_every_program_with_the_signers_gc_target():
    env = _environment("supervisord")   # inherited by every [program:...]
    assert {k: env.get(k) for k in SIGNER_ENV} == SIGNER_ENV


def test_no_program_overrides_it():
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF)
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert {"program:maker", "program:worker"} <= set(programs)
    for section in programs:
        env = _environment(section)
        assert not set(SIGNER_ENV) & set(env), f"{section} sets {set(SIGNER_ENV) & set(env)}"
