"""Requeue from Flower, and what Flower's Revoke does to a hedge (worker side).

`tasks.requeue_hedge(task_id, max_slippage_bps=None)`, on hedge.b: the worker holds the task
signing key, so Flower's API can requeue a hedge by id (`POST /api/task/async-apply/
tasks.requeue_hedge` with `{"args": ["hedge-ETH-12"]}`, or `{"args": ["hedge-ETH-12", 80]}`). It
runs ops.requeue.requeue_hedges, as `lighter-hedge requeue` does: with the worker's own event loop,
its own revoked set, and its name in the request budget. It signs only fills it can trust
(ops/requeue.py), and a bound is at most MAX_SLIPPAGE_BPS: whoever can call it (Flower's operator,
or anyone who can write to the broker) can re-run hedges the ledger knows, never trade on a fill
it made up.

Revoke: Celery's worker keeps every revoked id in memory and drops a message with one of them when
it arrives (a hedge waiting for its retry comes back as such a message). Without a handler the
hedge left no trace: no failed record, not in flight, the market free to resume. `task_revoked`
now records it failed with reason "revoked by operator", with its fill, signature and price bound
(as on_failure does), so `status` shows it, the market stays paused like for any failed hedge and
`requeue` re-runs it - under a new id, since this one stays discarded (ops/requeue.py). A message
whose signature does not verify is recorded refused (nothing was traded), and the late discard of
an id a requeue already re-ran under a new one only leaves the in-flight set.
"""
from __future__ import annotations

import logging
from typing import Any

from celery.signals import task_revoked
from celery.worker import state as worker_state

from tasks import metrics, runtime
from tasks.celery_app import app
from tasks.hedge import market_symbol
from tasks.signing import UnauthenticatedMessage

log = logging.getLogger("tasks.requeue")
HEDGE_QUEUE = "hedge.b"
HEDGE_TASK = "tasks.hedge_fill"
REVOKED_REASON = "revoked by operator"   # the failed record's reason (ops.requeue.REVOKED_REASON)


class RequeueRefused(Exception):
    """Why the hedge was not requeued, in one line (ops.requeue.RequeueError); nothing was sent."""


@app.task(name="tasks.requeue_hedge", queue=HEDGE_QUEUE, throws=(RequeueRefused,))
def requeue_hedge(task_id: str, max_slippage_bps: int | None = None) -> dict[str, Any]:
    """Re-run the hedge `task_id` as `lighter-hedge requeue TASK_ID [--max-slippage-bps N]` does.
    Fails with RequeueRefused (one line, nothing sent) when it cannot be requeued."""
    from ops.requeue import RequeueError, requeue_hedges   # ops.requeue imports tasks: not at this module's import
    cfg, store = runtime.config(), runtime.store()
    try:
        done = requeue_hedges(cfg, store, list(cfg.markets), str(task_id), max_slippage_bps, run=runtime.run,
                              process="worker", revoked=lambda tid: tid in worker_state.revoked)
    except RequeueError as exc:
        log.warning("event=requeue.refused task_id=%s reason=%r", task_id, str(exc))
        raise RequeueRefused(str(exc)) from None
    return {"requeued": [{"task_id": d.task_id, "new_task_id": d.new_task_id, "market": d.market,
                          "fill_id": d.fill_id, "state": d.state, "source": d.source,
                          **({"preview": d.preview.line()} if d.preview is not None else {})} for d in done]}


@task_revoked.connect
def _hedge_revoked(sender: Any = None, request: Any = None, terminated: bool = False, expired: bool = False,
                   **_: Any) -> None:
    if getattr(sender, "name", None) != HEDGE_TASK or request is None:
        return
    try:
        _record_revoked(request, terminated, expired)
    except Exception as exc:   # a signal handler must not take the worker's consumer down
        log.error("event=hedge.revoked_unrecorded task_id=%s error=%r", getattr(request, "id", None),
                  f"{type(exc).__name__}: {exc}")


def _record_revoked(request: Any, terminated: bool, expired: bool) -> None:
    task_id = str(request.id)
    args, kwargs = getattr(request, "args", None) or (), getattr(request, "kwargs", None) or {}
    kwargs = kwargs if isinstance(kwargs, dict) else {}
    fill = args[0] if args else kwargs.get("fill")
    auth, price = kwargs.get("auth"), kwargs.get("price")
    cfg, store = runtime.config(), runtime.store()
    market = market_symbol(cfg, fill)
    fill_id = str(fill.get("fill_id")) if isinstance(fill, dict) else "unknown"
    try:
        runtime.signer().verify(fill, auth, price)
    except UnauthenticatedMessage as exc:
        reason = f"revoked, and refused: {exc}; nothing counted or sent"
        log.warning("event=hedge.refused fill_id=%s market=%s task_id=%s reason=%r", fill_id, market, task_id, reason)
        store.record_refused(task_id, reason, fill, None if market == "unknown" else market)
        return
    if market == "unknown":
        reason = "revoked, and refused: not a fill of a configured market; nothing counted or sent"
        log.warning("event=hedge.refused fill_id=%s market=%s task_id=%s reason=%r", fill_id, market, task_id, reason)
        store.record_refused(task_id, reason, fill, None)
        return
    renamed = store.requeued_as(market, task_id)
    if renamed is not None:
        store.clear_inflight(market, task_id)
        log.info("event=hedge.revoked_superseded fill_id=%s market=%s task_id=%s requeued_as=%s", fill_id, market,
                 task_id, renamed)
        return
    reason = REVOKED_REASON + (" (expired)" if expired else " (terminated)" if terminated else "")
    log.error("event=hedge.revoked fill_id=%s market=%s task_id=%s reason=%r", fill_id, market, task_id, reason)
    metrics.HEDGES.labels(market, "failed").inc()
    store.hedge_finished(market, task_id, fill_id, ok=False, reason=reason, fill_msg=fill,
                         auth=auth if isinstance(auth, dict) else None,
                         price=price if isinstance(price, dict) else None, revoked=True)
    store.publish_event({"event": "hedge.failed", "market": market, "fill_id": fill_id, "task_id": task_id,
                         "reason": reason})
