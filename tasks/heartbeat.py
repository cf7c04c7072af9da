"""The hedge worker's heartbeat: a Redis key with a TTL, written every few seconds by a daemon
thread (store.worker_heartbeat). The maker's dead-man's switch (maker/dead_man.py) stops re-arming
A's scheduled cancel-all once the key has expired: a worker that died or hangs hedges nothing.

A thread, not a Celery task or the event loop: the solo pool runs a hedge in the worker's main
thread, and a hedge that takes a while must not look like a dead worker.

The same thread runs the worker's checks (add_check) every CHECK_INTERVAL_S: tasks/worker_guard.py
puts back a hedge.b consumer that Flower's "Cancel Consumer" took away.
"""
from __future__ import annotations

import logging
import threading
import time
from typing import Callable

log = logging.getLogger("tasks.heartbeat")

INTERVAL_S = 2.0
TTL_MS = 10_000   # five missed beats (a Redis hiccup) before the worker counts as gone
CHECK_INTERVAL_S = 0.5

_thread: threading.Thread | None = None
_store_factory: Callable[[], object] | None = None
_stop = threading.Event()
_checks: list[Callable[[], None]] = []


def start(store_factory: Callable[[], object], interval_s: float = INTERVAL_S, ttl_ms: int = TTL_MS) -> None:
    """Start beating (once per process). `store_factory` gives the Store to write through."""
    global _thread, _store_factory
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _store_factory = store_factory
    _thread = threading.Thread(target=_beat, args=(store_factory, interval_s, ttl_ms),
                               name="worker-heartbeat", daemon=True)
    _thread.start()
    log.info("event=worker.heartbeat_started interval_s=%.1f ttl_ms=%d", interval_s, ttl_ms)


def add_check(check: Callable[[], None]) -> None:
    """Run `check` in the heartbeat thread every CHECK_INTERVAL_S, between beats (once per process).
    A check must be quick and must not block: the beat waits for it. Its errors are logged, never fatal."""
    if check not in _checks:
        _checks.append(check)


def stop() -> None:
    """Stop beating and remove the key (worker_shutdown): a worker that stopped hedges nothing, so the
    maker's dead-man's switch and a later `up` know at once instead of after the TTL."""
    _stop.set()
    if _thread is None or _store_factory is None:
        return
    _thread.join(timeout=INTERVAL_S)   # its last beat lands before the key goes
    try:
        _store_factory().worker_stopped()  # type: ignore[attr-defined]
        log.info("event=worker.heartbeat_removed")
    except Exception as exc:   # Redis away: the key expires within its TTL instead
        log.warning("event=worker.heartbeat_remove_failed error=%s", f"{type(exc).__name__}: {exc}")


def _beat(store_factory: Callable[[], object], interval_s: float, ttl_ms: int) -> None:
    failing = False
    checks_failing: set[str] = set()
    next_beat = 0.0
    while not _stop.is_set():
        if time.monotonic() >= next_beat:
            next_beat = time.monotonic() + interval_s
            try:
                store_factory().worker_heartbeat(ttl_ms)  # type: ignore[attr-defined]
                if failing:
                    log.info("event=worker.heartbeat_ok")
                failing = False
            except Exception as exc:  # Redis away: keep trying; the maker sees the key expire meanwhile
                if not failing:
                    log.warning("event=worker.heartbeat_failed error=%s", f"{type(exc).__name__}: {exc}")
                failing = True
        _run_checks(checks_failing)
        _stop.wait(max(0.0, min(CHECK_INTERVAL_S, next_beat - time.monotonic())))   # a check added meanwhile runs soon


def _run_checks(failing: set[str]) -> None:
    for check in list(_checks):
        name = getattr(check, "__qualname__", repr(check))
        try:
            check()
            failing.discard(name)
        except Exception as exc:  # said once until it works again; the beat goes on
            if name not in failing:
                log.error("event=worker.check_failed check=%s error=%s", name, f"{type(exc).__name__}: {exc}")
            failing.add(name)
