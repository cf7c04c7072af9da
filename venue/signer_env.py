"""The environment a process that signs with the SDK's Go signer starts with.

The signer reads its GC target only from the environment its process started with (setting it
later, from Python, changes nothing), so the launchers set it: supervisord.conf for the stack, the
test and bench clusters for theirs. At Go's default (GOGC=100) the signer's heap grows to about
4.5 MB before its collector first runs, thousands of signed orders into a run (the maker's RSS then
looks like a leak in `bench soak`); at 25 it stays near 2 MB from the start, and signing measured
no slower (p50 and p99 within run-to-run noise, 8,000 signatures per setting).
"""
from __future__ import annotations

SIGNER_ENV: dict[str, str] = {"GOGC": "25"}
