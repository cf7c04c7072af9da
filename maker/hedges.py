"""Enqueue hedges and wait on their results through the Celery result backend (push, not polling)."""
from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import celery.exceptions
from celery.result import AsyncResult

from hedge.fill import Fill
from tasks import app, hedge_fill
from tasks.store import Store, task_id_for

log = logging.getLogger("maker.hedges")
HEDGE_QUEUE = "hedge.b"
HEDGER_SEEN_TTL_S = 30.0


@dataclass(frozen=True)
class HedgeOutcome:
    task_id: str
    ok: bool
    reason: str = ""
    timed_out: bool = False


class HedgeDispatcher:
    def __init__(self, store: Store):
        self.store = store
        # The result backend's consumer is not thread-safe: one thread does all the waiting.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedge-results")
        self._hedger_seen_at = float("-inf")

    def submit(self, market: str, fill: Fill, signed_units: int) -> str | None:
        """Count the fill in the ledger and enqueue its hedge, once; None for a replayed fill."""
        msg = fill.to_message()
        task_id = task_id_for(market, fill.fill_id)
        if not self.store.record_fill(market, msg, signed_units):
            log.info("event=fill.duplicate fill_id=%s market=%s task_id=%s", fill.fill_id, market, task_id)
            return None
        self.store.mark_inflight(market, task_id)
        hedge_fill.apply_async(args=[msg], task_id=task_id)
        self.store.incr(market, "fills")
        log.info("event=fill.enqueued fill_id=%s market=%s side=%s base=%s price=%s order_index=%s task_id=%s",
                 fill.fill_id, market, fill.side, fill.base_amount, fill.price, fill.order_index, task_id)
        self.store.publish_event({"event": "fill", "market": market, **msg})
        return task_id

    def hedge_leftover(self, market: str) -> str | None:
        """A fill counted but whose hedge was never enqueued (a crash between the two) is hedged by
        running the task again for the market's latest fill: it hedges whatever is unhedged."""
        if self.store.inflight(market):
            return None
        fills = self.store.fills(market)
        if not fills:
            return None
        latest = max(fills.values(), key=lambda f: (f.get("ts_seen_ms", 0), str(f["fill_id"])))
        task_id = f"{task_id_for(market, latest['fill_id'])}-again-{int(time.time() * 1000)}"
        log.warning("event=fill.rehedge fill_id=%s market=%s task_id=%s", latest["fill_id"], market, task_id)
        self.store.mark_inflight(market, task_id)
        hedge_fill.apply_async(args=[latest], task_id=task_id)
        return task_id

    async def wait(self, task_id: str, timeout_s: float) -> HedgeOutcome:
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._pool, self._wait_blocking, task_id, timeout_s)

    @staticmethod
    def _wait_blocking(task_id: str, timeout_s: float) -> HedgeOutcome:
        result = AsyncResult(task_id, app=app)
        try:
            result.get(timeout=timeout_s, propagate=False, disable_sync_subtasks=False)
        except celery.exceptions.TimeoutError:
            return HedgeOutcome(task_id, False, f"no result after {timeout_s:.0f}s (state {result.state})",
                                timed_out=True)
        if result.successful():
            return HedgeOutcome(task_id, True)
        return HedgeOutcome(task_id, False, f"{result.state}: {result.result!r}")

    async def hedger_present(self) -> bool:
        """Some worker consumes hedge.b (Celery's broadcast inspect; a yes is trusted for a while)."""
        if time.monotonic() - self._hedger_seen_at < HEDGER_SEEN_TTL_S:
            return True
        loop = asyncio.get_running_loop()
        if await loop.run_in_executor(None, self._hedger_present_blocking):
            self._hedger_seen_at = time.monotonic()
            return True
        return False

    @staticmethod
    def _hedger_present_blocking() -> bool:
        queues = app.control.inspect(timeout=1.0, limit=1).active_queues() or {}
        return any(q.get("name") == HEDGE_QUEUE for worker in queues.values() for q in worker)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
