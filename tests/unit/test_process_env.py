"""The memory settings (the Go signer's GC target, glibc's mmap threshold; venue/process_env.py) reach
every program: they are read only from the environment a process starts with, so supervisord.conf
must hand them to the stack."""
from __future__ import annotations

import configparser
import csv
from pathlib import Path

from venue.process_env import PROCESS_ENV

CONF = Path(__file__).resolve().parents[2] / "supervisord.conf"


def _environment(section: str) -> dict[str, str]:
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF)
    value = parser.get(section, "environment", fallback="")
    pairs = next(csv.reader([value], skipinitialspace=True)) if value else []
    return {k: v.strip('"') for k, _, v in (pair.partition("=") for pair in pairs)}


def test_supervisord_starts_every_program_with_the_memory_settings():
    env = _environment("supervisord")   # inherited by every [program:...]
    assert {k: env.get(k) for k in PROCESS_ENV} == PROCESS_ENV


def test_no_program_overrides_it():
    parser = configparser.RawConfigParser(inline_comment_prefixes=(";",))
    parser.read(CONF)
    programs = [s for s in parser.sections() if s.startswith("program:")]
    assert {"program:maker", "program:worker"} <= set(programs)
    for section in programs:
        env = _environment(section)
        assert not set(PROCESS_ENV) & set(env), f"{section} sets {set(PROCESS_ENV) & set(env)}"
