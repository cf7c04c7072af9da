"""Memory on demand, for an operator and for `python -m bench soak`: SIGUSR2 to the maker or the worker.

Each SIGUSR2 runs a full gc, hands the C allocator's free memory back to the system (glibc
malloc_trim) and logs `event=memory.settled rss_mb_before=… rss_mb_after=…`: what the process holds,
not what it once peaked at. SIGUSR2 because Celery's worker uses SIGUSR1 (it dumps its threads).

With LH_MEMTRACE=1 (`bench soak --memtrace`) the process also runs tracemalloc: the first SIGUSR2
takes the baseline, every later one logs what grew since, most recent frame first:
`event=memtrace.total …`, `event=memtrace.objects type=+n …`, `event=memtrace.top rank=… site=…`.
"""
from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import gc
import logging
import os
import signal
import threading
import tracemalloc
from collections import Counter
from typing import Callable

log = logging.getLogger("memtrace")
ENV = "LH_MEMTRACE"
SIGNAL = signal.SIGUSR2
FRAMES = 4
TOP = 25


def install(loop: asyncio.AbstractEventLoop | None = None) -> None:
    """Answer SIGUSR2 (on `loop`, or with signal.signal from the main thread); trace with LH_MEMTRACE=1."""
    trace = os.environ.get(ENV) == "1"
    if trace:
        tracemalloc.start(FRAMES)
    compare = _tracer() if trace else None

    def on_signal(*_: object) -> None:
        before = rss_mb()
        gc.collect()
        _malloc_trim()
        log.info("event=memory.settled rss_mb_before=%.2f rss_mb_after=%.2f %s", before, rss_mb(),
                 " ".join(f"{k}={v}" for k, v in allocator_stats().items()))
        if compare is not None:
            compare()

    if loop is not None:
        loop.add_signal_handler(SIGNAL, on_signal)
    elif threading.current_thread() is threading.main_thread():
        signal.signal(SIGNAL, on_signal)
    else:   # only the main thread may set a handler; nothing else here depends on it
        log.warning("event=memory.no_signal_handler reason=not_the_main_thread")


def rss_mb() -> float:
    try:
        with open(f"/proc/{os.getpid()}/status") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def allocator_stats() -> dict[str, str]:
    """Where the heap sits, in MB: pymalloc's arenas (and the bytes in use in them) and glibc malloc's
    in-use, free and mmapped bytes (mallinfo2, all arenas). RSS minus these is code, stacks and the
    Go signer's own heap."""
    stats: dict[str, str] = {}
    pymalloc = _pymalloc_stats()
    if pymalloc:
        stats["pymalloc_arenas"] = str(pymalloc.get("# arenas allocated current", 0))
        stats["pymalloc_used_mb"] = "%.2f" % (pymalloc.get("# bytes in allocated blocks", 0) / 2**20)
    try:   # OS threads (Python's and the Go signer's): a new one can bring a new malloc arena
        stats["os_threads"] = str(len(os.listdir(f"/proc/{os.getpid()}/task")))
    except OSError:
        pass
    info = _mallinfo2()
    if info is not None:
        stats["malloc_used_mb"] = "%.2f" % (info.uordblks / 2**20)
        stats["malloc_free_mb"] = "%.2f" % (info.fordblks / 2**20)
        stats["malloc_mmap_mb"] = "%.2f" % (info.hblkhd / 2**20)
    return stats


def _pymalloc_stats() -> dict[str, int]:
    """The counters sys._debugmallocstats writes to the C stderr, read back through a temporary file."""
    import sys
    import tempfile
    if not hasattr(sys, "_debugmallocstats"):
        return {}
    with tempfile.TemporaryFile() as out:
        sys.stderr.flush()
        saved = os.dup(2)
        try:
            os.dup2(out.fileno(), 2)
            sys._debugmallocstats()
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        out.seek(0)
        text = out.read().decode(errors="replace")
    counters: dict[str, int] = {}
    for line in text.splitlines():
        name, sep, value = line.partition("=")
        if sep and name.startswith("#"):
            try:
                counters[name.strip()] = int(value.strip().replace(",", ""))
            except ValueError:
                continue
    return counters


class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks",
                 "fordblks", "keepcost")]


def _mallinfo2() -> _MallInfo2 | None:
    name = ctypes.util.find_library("c")
    if name is None:
        return None
    try:
        fn = ctypes.CDLL(name).mallinfo2
    except (OSError, AttributeError):   # glibc before 2.33, or not glibc
        return None
    fn.restype = _MallInfo2
    return fn()


def _malloc_trim() -> None:
    """glibc keeps freed memory in its arenas; give it back (elsewhere: nothing to do)."""
    name = ctypes.util.find_library("c")
    if name is None:
        return
    try:
        ctypes.CDLL(name).malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _tracer() -> Callable[[], None]:
    baseline: list[tracemalloc.Snapshot] = []
    types: list[Counter[str]] = []
    log.info("event=memtrace.on frames=%d", FRAMES)

    def compare() -> None:
        snapshot = tracemalloc.take_snapshot().filter_traces(
            [tracemalloc.Filter(False, tracemalloc.__file__),   # modules imported late are not growth
             tracemalloc.Filter(False, "<frozen importlib._bootstrap*>", all_frames=True)])
        counts = Counter(type(obj).__qualname__ for obj in gc.get_objects())   # containers gc tracks
        if not baseline:
            baseline.append(snapshot)
            types.append(counts)
            log.info("event=memtrace.baseline traced_kib=%d", tracemalloc.get_traced_memory()[0] // 1024)
            return
        stats = snapshot.compare_to(baseline[0], "traceback")
        log.info("event=memtrace.total traced_kib=%d growth_kib=%+.1f blocks=%+d",
                 tracemalloc.get_traced_memory()[0] // 1024, sum(s.size_diff for s in stats) / 1024,
                 sum(s.count_diff for s in stats))
        grown = sorted(((n - types[0].get(name, 0), name) for name, n in counts.items()), reverse=True)[:10]
        log.info("event=memtrace.objects %s", " ".join(f"{name}={diff:+d}" for diff, name in grown))
        for rank, stat in enumerate(stats[:TOP], 1):
            # Most recent frame first: where it was allocated, then who called.
            site = " < ".join(f"{f.filename.rsplit('/', 2)[-1]}:{f.lineno}" for f in reversed(stat.traceback))
            log.info("event=memtrace.top rank=%d size_kib=%+.1f count=%+d site=%s", rank, stat.size_diff / 1024,
                     stat.count_diff, site)

    return compare
