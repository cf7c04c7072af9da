"""The hedge worker keeps its contract whatever Flower's buttons (or `celery control`) do to it.

README "Operating" has the table of Flower's controls and what each does here. This module:

- **Cancel Consumer / Add Consumer**: the worker consumes hedge.b and nothing else. A check in the
  heartbeat thread (tasks/heartbeat.py, every CHECK_INTERVAL_S) compares the task consumer with
  that and, when it differs, puts it back on the worker's own event loop (consumer.call_soon: the
  path Celery's add_consumer / cancel_consumer commands take), about a second after the change.
  It logs and publishes `worker.control_reverted` (the alerter's `control_reverted` alert).
- **Rate limit, time limits** of our tasks: set back to what they were when the worker became ready
  (a rate limit is ignored anyway: celeryconfig's worker_disable_rate_limits; the solo pool enforces
  no time limit); same event.
- **Shut Down**: Celery's own command, noting why. The solo pool reads control messages between
  tasks, so the hedge in hand finishes first; the worker exits 0 and supervisord starts it again
  (autorestart=true). It publishes `worker.stopped` with the reason when it stops and
  `worker.started` once it consumes again: the alerter's `worker_stopped` alert and its resolution.
- How results, and the hedges the worker itself publishes (retries), read in Flower: JSON
  (tasks/display.py), installed in the worker process only (the maker publishes its own JSON).
"""
from __future__ import annotations

import logging
import os
import time
from typing import Any

from celery.bootsteps import RUN
from celery.signals import before_task_publish, worker_init, worker_ready, worker_shutdown, worker_shutting_down
from celery.worker import control
from celery.worker import state as worker_state

from tasks import display, heartbeat, runtime
from tasks.celery_app import app

log = logging.getLogger("tasks.worker_guard")

HEDGE_QUEUE = "hedge.b"
HEDGE_TASK = "tasks.hedge_fill"
REMOTE_SHUTDOWN = "remote shutdown command (Flower's Shut Down, or `celery control shutdown`)"
UNKNOWN_STOP = "unknown (see the worker's log)"
PENDING_TIMEOUT_S = 5.0

_guard: "Guard | None" = None
_stop_reason: str | None = None
_celery_shutdown = control.Panel.data["shutdown"]


class Guard:
    """The consumer and task limits of one worker, as they were when it became ready."""

    def __init__(self, consumer: Any, queue: str = HEDGE_QUEUE):
        self.consumer = consumer
        self.queue = queue
        self.hostname = str(getattr(consumer, "hostname", "") or "")
        self.stopping = False
        self._pending_since: float | None = None   # a restore handed to the event loop, not run yet
        # When each was last seen as it should be: a change found by a check happened after that.
        self._consumer_ok_at = self._limits_ok_at = time.monotonic()
        self._limits = {name: _limits(task) for name, task in app.tasks.items() if not name.startswith("celery.")}

    def check(self) -> None:
        """Heartbeat thread: compare, and hand what differs to the worker's event loop."""
        if self.stopping or worker_state.should_stop is not None or worker_state.should_terminate is not None:
            return
        self._check_limits()
        self._check_consumer()

    def _check_consumer(self) -> None:
        consumer = self.consumer
        blueprint = getattr(consumer, "blueprint", None)
        now = time.monotonic()
        if self._pending_since is not None and now - self._pending_since < PENDING_TIMEOUT_S:
            return   # (a loop that was being rebuilt may have dropped it: handed again after the timeout)
        if blueprint is None or blueprint.state != RUN:
            return
        consuming = _consuming(consumer)
        if consuming is None:
            return
        if consuming == {self.queue}:
            self._consumer_ok_at = now
            return
        self._pending_since = now
        consumer.call_soon(self._restore)

    def _restore(self) -> None:
        """The worker's event loop: consume hedge.b again and nothing else. What it does is decided on
        the consumer as it is now (after a reconnect, Celery rebuilt it on hedge.b: nothing to do)."""
        try:
            consuming = _consuming(self.consumer)
            if self.stopping or consuming is None or consuming == {self.queue}:
                return
            others, readd = sorted(consuming - {self.queue}), self.queue not in consuming
            for name in others:
                self.consumer.cancel_task_queue(name)
            self.consumer.add_task_queue(self.queue)   # a no-op while it consumes hedge.b
        except Exception as exc:   # never into Celery's loop: the next check tries again
            log.error("event=worker.consumer_restore_failed queue=%s error=%s", self.queue,
                      f"{type(exc).__name__}: {exc}")
            return
        finally:
            self._pending_since = None
        now = time.monotonic()
        within_ms, self._consumer_ok_at = int((now - self._consumer_ok_at) * 1000), now
        if readd:
            self._reverted("cancel_consumer", f"consumer of {self.queue} cancelled; consuming it again", within_ms)
        if others:
            self._reverted("add_consumer", f"consumer of {','.join(others)} added; cancelled, {self.queue} only",
                           within_ms)

    def _check_limits(self) -> None:
        """Set back any rate or time limit changed since the worker became ready."""
        now = time.monotonic()
        within_ms = int((now - self._limits_ok_at) * 1000)
        self._limits_ok_at = now
        for name, (rate, hard, soft) in self._limits.items():
            task = app.tasks.get(name)
            if task is None:
                continue
            now_rate, now_hard, now_soft = _limits(task)
            if now_rate != rate:
                task.rate_limit = rate
                self.consumer.call_soon(self.consumer.reset_rate_limits)
                self._reverted("rate_limit", f"{name} rate_limit {now_rate} set back to {rate}", within_ms)
            if (now_hard, now_soft) != (hard, soft):
                task.time_limit, task.soft_time_limit = hard, soft
                self._reverted("time_limit", f"{name} time_limit {now_hard} soft {now_soft} set back to "
                                             f"{hard} soft {soft}", within_ms)

    def _reverted(self, what: str, detail: str, within_ms: int) -> None:
        """`within_ms`: at most this long between the change and its undoing (since it was last seen
        as it should be)."""
        log.warning("event=worker.control_reverted control=%s worker=%s within_ms=%d detail=%r", what,
                    self.hostname, within_ms, detail)
        _publish({"event": "worker.control_reverted", "control": what, "worker": self.hostname,
                  "detail": detail, "within_ms": within_ms})


def _consuming(consumer: Any) -> set[str] | None:
    """The queues the worker's task consumer consumes; None when it cannot be told now."""
    tasks = consumer.task_consumer
    if tasks is None:   # (re)connecting: Celery builds it from the selected queues, hedge.b
        return None
    try:
        return {q.name for q in tasks.queues if tasks.consuming_from(q.name)}
    except RuntimeError:   # the loop changed the queues while another thread read them
        return None


def _limits(task: Any) -> tuple[Any, Any, Any]:
    return getattr(task, "rate_limit", None), getattr(task, "time_limit", None), getattr(task, "soft_time_limit", None)


def _publish(event: dict[str, Any]) -> None:
    try:
        runtime.store().publish_event(event)
    except Exception as exc:   # Redis away: the log line stands; the alerter's snapshots see the rest
        log.warning("event=worker.event_unpublished name=%s error=%s", event.get("event"), type(exc).__name__)


def _stopping(reason: str) -> None:
    global _stop_reason
    if _stop_reason is None:
        _stop_reason = reason
    if _guard is not None:
        _guard.stopping = True


def _shutdown(state: Any, msg: str = "Got shutdown from remote", **kwargs: Any) -> Any:
    """Celery's shutdown command, noting the reason for worker.stopped."""
    _stopping(REMOTE_SHUTDOWN)
    return _celery_shutdown(state, msg=msg, **kwargs)


def _refused(why: str) -> Any:
    def refuse(state: Any, *args: Any, **kwargs: Any) -> dict[str, str]:
        log.warning("event=worker.control_refused worker=%s why=%r", getattr(state, "hostname", ""), why)
        return control.nok(why)
    return refuse


_SOLO = "the hedge worker is one process by design (solo pool: B's nonces are sequential)"
# Celery's handlers by name (their argument metadata, Panel.meta, stays Celery's). Without these the
# solo pool answers Grow/Shrink with an AttributeError and a traceback in the worker's log.
control.Panel.data.update({
    "shutdown": _shutdown,
    "pool_grow": _refused(f"pool_grow refused: {_SOLO}"),
    "pool_shrink": _refused(f"pool_shrink refused: {_SOLO}"),
    "autoscale": _refused(f"autoscale refused: {_SOLO}"),
    "pool_restart": _refused("pool_restart refused: the pool is this process; a restart is Shut Down "
                             "(supervisord starts the worker again)"),
})


@worker_shutting_down.connect
def _on_stop_signal(sig: Any = None, how: Any = None, **_: Any) -> None:
    # In a signal handler: only note it.
    _stopping(f"{sig} ({str(how).lower()} shutdown: supervisorctl stop or restart, lighter-hedge down, or a kill)")


@worker_init.connect
def _show_as_json(**_: Any) -> None:
    """The worker's results and its own hedge publishes (retries, recoveries) read as JSON in Flower."""
    from celery.app import trace
    celery_repr = trace.saferepr
    if getattr(celery_repr, "lighter_hedge", False):
        return

    def result_repr(value: Any, maxlen: int | None = None, *args: Any, **kwargs: Any) -> str:
        text = display.result_repr(value, maxlen)
        return text if text is not None else celery_repr(value, maxlen, *args, **kwargs)
    result_repr.lighter_hedge = True   # type: ignore[attr-defined]
    # Celery has no setting for how a result is shown in its task-succeeded event: build_tracer looks
    # `saferepr` up in celery.app.trace when a task returns (after the result is stored). Anything not a
    # JSON dict still gets Celery's repr.
    trace.saferepr = result_repr
    before_task_publish.connect(_json_reprs, weak=False, dispatch_uid="lighter_hedge.json_reprs")


def _json_reprs(sender: Any = None, headers: Any = None, body: Any = None, **_: Any) -> None:
    if sender != HEDGE_TASK or not isinstance(headers, dict) or not isinstance(body, (tuple, list)) or len(body) < 2:
        return
    args, kwargs = body[0], body[1]
    if isinstance(args, (list, tuple)) and isinstance(kwargs, dict):
        headers.update(display.hedge_reprs(args, kwargs, runtime.config().markets))


@worker_ready.connect
def _guard_contract(sender: Any = None, **_: Any) -> None:
    """After the warm-up (tasks/hedge_task.py): watch the consumer, and say the worker consumes again."""
    global _guard
    if sender is None:
        return
    _guard = Guard(sender)
    heartbeat.add_check(_guard.check)
    log.info("event=worker.started worker=%s pid=%d queue=%s", _guard.hostname, os.getpid(), HEDGE_QUEUE)
    _publish({"event": "worker.started", "worker": _guard.hostname, "pid": os.getpid(), "queue": HEDGE_QUEUE})


@worker_shutdown.connect
def _said_stopped(sender: Any = None, **_: Any) -> None:
    _stopping(UNKNOWN_STOP)
    hostname = str(getattr(sender, "hostname", "") or (_guard.hostname if _guard else ""))
    log.warning("event=worker.stopped worker=%s pid=%d reason=%r", hostname, os.getpid(), _stop_reason)
    _publish({"event": "worker.stopped", "worker": hostname, "pid": os.getpid(), "reason": _stop_reason})
