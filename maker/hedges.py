"""Enqueue hedges and wait on their results through the Celery result backend (push, not polling)."""
from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import celery.exceptions
from celery.result import AsyncResult

from hedge.fill import Fill
from tasks import app, metrics
from tasks.hedge_task import send_hedge
from tasks.signing import MessageSigner
from tasks.store import Ledger, Store, task_id_for

log = logging.getLogger("maker.hedges")
HEDGE_QUEUE = "hedge.b"
HEDGER_SEEN_TTL_S = 30.0
FILL_OF_KEPT = 10_000   # hedges the maker waits on at once stay far below (a 1,000-fill burst)


@dataclass(frozen=True)
class HedgeOutcome:
    task_id: str
    ok: bool
    reason: str = ""
    timed_out: bool = False


class HedgeDispatcher:
    def __init__(self, store: Store, signer: MessageSigner):
        """`store.expected_generation` is the ledger generation the maker started in: every hedge
        message is signed for it, and the worker stops a hedge whose generation Redis lost."""
        self.store = store
        self.signer = signer
        # The result backend's consumer is not thread-safe: one thread does all the waiting.
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="hedge-results")
        self._hedger_seen_at = float("-inf")
        # task id -> fill id, for the maker's log lines: dropped when the maker is done with the hedge,
        # and never more than FILL_OF_KEPT (the id is also in the task id: only a log line would lose it).
        self.fill_of: OrderedDict[str, str] = OrderedDict()
        self.last_ledger: Ledger | None = None  # as counting the last new fill left it

    def submit(self, market: str, fill: Fill, signed_units: int) -> str | None:
        """Count the fill in the ledger and enqueue its hedge, once; None for a replayed fill."""
        return self.submit_many(market, [(fill, signed_units)])[0]

    def submit_many(self, market: str, fills: list[tuple[Fill, int]]) -> list[str | None]:
        """Count a frame's fills and enqueue their hedges, each once; None for a replayed fill.

        Hot path, in order: one Redis round trip counts every fill and marks its task in flight
        (atomically per fill: a fill is never counted without its task in flight), then the
        apply_asyncs, and only then what is not urgent (counters, events, log lines) in one more
        round trip. The exposure check uses the ledger the counting step read.
        """
        rows = [(fill, fill.to_message(), units, task_id_for(market, fill.fill_id)) for fill, units in fills]
        # Each new fill's hint (the ledger right after counting it) rides in its task: the worker
        # signs while it reads the ledger back (tasks.hedge._begin).
        hints = self.store.record_fills(market, [(msg, units, task_id) for _, msg, units, task_id in rows])
        new = [hint is not None for hint in hints]
        task_ids: list[str | None] = []
        for (fill, msg, _units, task_id), hint in zip(rows, hints):
            if hint is not None:
                self._enqueue(msg, task_id, hint.to_message())
                self._note_fill(task_id, fill.fill_id)
            task_ids.append(task_id if hint is not None else None)
        enqueued = [row for row, is_new in zip(rows, new) if is_new]
        if enqueued:
            last = [hint for hint in hints if hint is not None][-1]  # read in the step that counted it
            self.last_ledger = Ledger(last.a_filled, last.hedged, [])
            self.store.after_fills(market, [{"event": "fill", "market": market, **msg} for _, msg, _, _ in enqueued])
            metrics.FILLS.labels(market).inc(len(enqueued))
            metrics.INFLIGHT.labels(market).inc(len(enqueued))
        for (fill, _msg, _units, task_id), is_new in zip(rows, new):
            if is_new:
                log.info("event=fill.enqueued fill_id=%s market=%s side=%s base=%s price=%s order_index=%s "
                         "task_id=%s frame_fills=%d", fill.fill_id, market, fill.side, fill.base_amount, fill.price,
                         fill.order_index, task_id, len(rows))
            else:
                log.info("event=fill.duplicate fill_id=%s market=%s task_id=%s", fill.fill_id, market, task_id)
        return task_ids

    def hedge_leftover(self, market: str) -> str | None:
        """A fill counted but whose hedge was never enqueued (a crash between the two) is hedged by
        running the task again for the market's latest fill: it hedges whatever is unhedged. Tasks
        already queued are not a reason to skip: one more finds nothing left and costs nothing."""
        latest = self.store.latest_fill(market)   # also once retention moved the records out of Redis
        if latest is None:
            return None
        task_id = f"{task_id_for(market, latest['fill_id'])}-again-{int(time.time() * 1000)}"
        log.warning("event=fill.rehedge fill_id=%s market=%s task_id=%s", latest["fill_id"], market, task_id)
        self.store.mark_inflight(market, task_id)
        self._note_fill(task_id, str(latest["fill_id"]))
        self._enqueue(latest, task_id)
        return task_id

    def _enqueue(self, fill_msg: dict, task_id: str, hint: dict | None = None) -> None:
        assert self.store.expected_generation is not None, "the maker sets its ledger generation at start"
        send_hedge(fill_msg, task_id, self.signer.sign(fill_msg, self.store.expected_generation), hint)

    def _note_fill(self, task_id: str, fill_id: str) -> None:
        self.fill_of[task_id] = fill_id
        while len(self.fill_of) > FILL_OF_KEPT:
            self.fill_of.popitem(last=False)

    def hedges_done(self, market: str) -> None:
        """No hedge of `market` is in flight: forget its task ids. Most hedges of a burst finish
        without the maker waiting on them one by one (their task found the fills hedged already)."""
        prefix = task_id_for(market, "")
        for task_id in [t for t in self.fill_of if t.startswith(prefix)]:
            del self.fill_of[task_id]

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
        """Some worker consumes hedge.b (Celery's broadcast inspect; a yes is trusted for a while)
        and its heartbeat is fresh: else a new order of A could rest after the dead-man's cancel-all
        fired with nobody re-arming it."""
        if not self.store.worker_alive():
            return False
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
