"""The hedge worker's heartbeat: a Redis key with a TTL, written every few seconds by a daemon
thread (store.worker_heartbeat). The maker's dead-man's switch (maker/dead_man.py) stops re-arming
A's scheduled cancel-all once the key has expired: a worker that died or hangs hedges nothing.

A thread, not a Celery task or the event loop: the solo pool runs a hedge in the worker's main
thread, and a hedge that takes a while must not look like a dead worker.
"""
from __future__ import annotations

import logging
import threading
from typing import Callable

log = logging.getLogger("tasks.heartbeat")

INTERVAL_S = 2.0
TTL_MS = 10_000   # five missed beats (a Redis hiccup) before the worker counts as gone

_thread: threading.Thread | None = None
_stop = threading.Event()


def start(store_factory: Callable[[], object], interval_s: float = INTERVAL_S, ttl_ms: int = TTL_MS) -> None:
    """Start beating (once per process). `store_factory` gives the Store to write through."""
    global _thread
    if _thread is not None and _thread.is_alive():
        return
    _stop.clear()
    _thread = threading.Thread(target=_beat, args=(store_factory, interval_s, ttl_ms),
                               name="worker-heartbeat", daemon=True)
    _thread.start()
    log.info("event=worker.heartbeat_started interval_s=%.1f ttl_ms=%d", interval_s, ttl_ms)


def stop() -> None:
    """Stop beating (worker_shutdown); the key then expires within its TTL."""
    _stop.set()


def _beat(store_factory: Callable[[], object], interval_s: float, ttl_ms: int) -> None:
    failing = False
    while not _stop.is_set():
        try:
            store_factory().worker_heartbeat(ttl_ms)  # type: ignore[attr-defined]
            if failing:
                log.info("event=worker.heartbeat_ok")
            failing = False
        except Exception as exc:  # Redis away: keep trying; the maker sees the key expire meanwhile
            if not failing:
                log.warning("event=worker.heartbeat_failed error=%s", f"{type(exc).__name__}: {exc}")
            failing = True
        _stop.wait(interval_s)
