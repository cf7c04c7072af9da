"""The memory settings a long-running process of the stack starts with.

Both are read only from the environment a process starts with (setting them later, from Python,
changes nothing), so the launchers set them: supervisord.conf for the stack, the test and bench
clusters for theirs.

- `GOGC=25`: the SDK's Go signer's GC target. At Go's default (100) the signer's heap grows to about
  4.5 MB before its collector first runs, thousands of signed orders into a run (the maker's RSS then
  looks like a leak in `bench soak`); at 25 it stays near 2 MB from the start, and signing measured
  no slower (p50 and p99 within run-to-run noise, 8,000 signatures per setting).
- `MALLOC_MMAP_THRESHOLD_=65536`: glibc serves blocks of 64 KB and more (a large frame, a set or
  dict table being rebuilt) from mmap and returns them on free. By default the threshold rises
  with the largest block freed, after which such blocks come from the main heap and leave holes
  that `malloc_trim` cannot give back: in one `bench soak` run of two the maker's heap kept 1 MB
  more free-but-resident memory by the end.
"""
from __future__ import annotations

PROCESS_ENV: dict[str, str] = {"GOGC": "25", "MALLOC_MMAP_THRESHOLD_": "65536"}
