"""What to alert, and how an alert reads: the alerter's pure decisions (ops/alerter.py runs them).

The alerter observes two things and turns them into alerts a person reads:

- **events** from Redis pub/sub: `paused` / `resumed` (the control channel, Store.pause/resume),
  `hedge.failed` (the worker, tasks/hedge_task.py), `budget.exhausted` (any process whose request
  waited at least `alerts.budget_wait_s` for the request budget, venue/budget.py), `worker.stopped` /
  `worker.started` and `worker.control_reverted` (the worker, tasks/worker_guard.py);
- **snapshots** of Redis every `alerts.poll_interval_s`: each market's pause (with who paused it),
  its failed hedges, the worker's heartbeat, Celery's inspect of hedge.b, the queue's length.
  Pub/sub is lossy (an alerter that was down missed it); a snapshot is not, so a condition is
  alerted whichever of the two shows it first, and only once.

Deduplication: an ongoing condition alerts once when it starts (`firing`) and once when it clears
(`resolved`); it alerts again only if it recurs. The conditions, keyed in `AlertState.active`:

| condition | starts | clears |
| --- | --- | --- |
| `paused:<market>` | a pause (kind `paused`; kind `flatten` when `flatten` paused it) | resume (kind `resumed`) |
| `hedge_failed:<task id>` | a hedge fails (again: a failure with a new time) | it leaves the failed list (requeued) |
| `no_consumer` | no consumer on hedge.b for `alerts.no_consumer_s` | a consumer is back |
| `budget_exhausted` | a `budget.exhausted` event | none for `alerts.budget_clear_s` |
| `worker_stopped` | a `worker.stopped` event (with the worker's reason: Flower's Shut Down, a signal) | `worker.started`, or a snapshot whose consumer is present longer than a heartbeat's TTL after the stop |

`control_reverted` is not a condition: each `worker.control_reverted` event (Flower's Cancel
Consumer, Add Consumer, Rate limit or time limits, undone by the worker) is one alert.

Consumer presence: the worker's heartbeat in Redis (Store.worker_alive, 10 s TTL) and, with
`alerts.consumer_check: heartbeat+inspect` (the default), Celery's inspect listing hedge.b among a
worker's active queues: a worker whose consumer was cancelled (Flower's "Cancel Consumer") still
beats but consumes nothing. An inspect that gets no answer counts as absent too (a solo worker busy
with one long task does not answer): hence the `no_consumer_s` grace.
"""
from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any, Mapping, Union
from urllib.parse import urlsplit

from hedge.config import AlertsConfig

FIRING, RESOLVED = "firing", "resolved"
CRITICAL, WARNING, INFO = "critical", "warning", "info"
PAUSED, RESUMED, HEDGE_FAILED, NO_CONSUMER, BUDGET_EXHAUSTED, FLATTEN = (
    "paused", "resumed", "hedge_failed", "no_consumer", "budget_exhausted", "flatten")
WORKER_STOPPED, CONTROL_REVERTED = "worker_stopped", "control_reverted"
HEDGE_QUEUE = "hedge.b"
FLATTEN_BY = "flatten"          # Store.pause(..., by="flatten"): ops/flatten.py pauses a market first
CONDITION_KINDS = (PAUSED, HEDGE_FAILED, NO_CONSUMER, BUDGET_EXHAUSTED, WORKER_STOPPED)
# A heartbeat seen this long after a worker stopped was written by a worker running since
# (tasks/heartbeat.py TTL_MS): the stop is over even if the alerter missed worker.started.
HEARTBEAT_TTL_MS = 10_000


# ---- what the alerter observes ---------------------------------------------------------------------

@dataclass(frozen=True)
class Pause:
    reason: str
    by: str = ""                # operator, maker, flatten, ... ('' when not known)


@dataclass(frozen=True)
class Failure:
    task_id: str
    fill_id: str
    reason: str
    ts_ms: int | None = None    # when it failed (the failed record's ts_ms); None when not known


@dataclass(frozen=True)
class PausedEvent:
    at_ms: int
    market: str
    pause: Pause


@dataclass(frozen=True)
class ResumedEvent:
    at_ms: int
    market: str


@dataclass(frozen=True)
class HedgeFailedEvent:
    at_ms: int
    market: str
    failure: Failure


@dataclass(frozen=True)
class BudgetExhaustedEvent:
    at_ms: int
    process: str
    endpoint: str
    priority: str
    wait_ms: int
    why: str


@dataclass(frozen=True)
class Snapshot:
    """Redis at one moment, as sampled by the alerter."""

    at_ms: int
    paused: Mapping[str, Pause | None]                   # per configured market
    failed: Mapping[str, Mapping[str, Failure]]          # per market: task id -> failure
    heartbeat: bool                                      # Store.worker_alive()
    consumer_listed: bool | None                         # Celery inspect; None: not asked (or no answer yet)
    queue_length: int


@dataclass(frozen=True)
class WorkerStoppedEvent:
    at_ms: int
    worker: str
    reason: str


@dataclass(frozen=True)
class WorkerStartedEvent:
    at_ms: int
    worker: str


@dataclass(frozen=True)
class ControlRevertedEvent:
    at_ms: int
    worker: str
    control: str                # cancel_consumer, add_consumer, rate_limit, time_limit
    detail: str
    within_ms: int


Event = Union[PausedEvent, ResumedEvent, HedgeFailedEvent, BudgetExhaustedEvent, WorkerStoppedEvent,
              WorkerStartedEvent, ControlRevertedEvent]
Observation = Union[Event, Snapshot]


def parse_event(message: Any, at_ms: int) -> Event | None:
    """A pub/sub message (JSON text, from the events or the control channel) as an event the
    alerter acts on; None for everything else (fills, hedge.done, flatten requests, garbage)."""
    try:
        body = json.loads(message)
    except (TypeError, ValueError):
        return None
    if not isinstance(body, dict):
        return None
    name, market = body.get("event"), body.get("market")
    if name == "paused" and isinstance(market, str):
        return PausedEvent(at_ms, market, Pause(str(body.get("reason") or ""), str(body.get("by") or "")))
    if name == "resumed" and isinstance(market, str):
        return ResumedEvent(at_ms, market)
    if name == "hedge.failed" and isinstance(market, str) and body.get("task_id"):
        return HedgeFailedEvent(at_ms, market, Failure(str(body["task_id"]), str(body.get("fill_id") or ""),
                                                       str(body.get("reason") or "")))
    if name == "worker.stopped":
        return WorkerStoppedEvent(at_ms, str(body.get("worker") or ""), str(body.get("reason") or ""))
    if name == "worker.started":
        return WorkerStartedEvent(at_ms, str(body.get("worker") or ""))
    if name == "worker.control_reverted":
        took = body.get("within_ms")
        return ControlRevertedEvent(at_ms, str(body.get("worker") or ""), str(body.get("control") or "?"),
                                    str(body.get("detail") or ""),
                                    took if isinstance(took, int) and not isinstance(took, bool) else 0)
    if name == "budget.exhausted":
        try:
            wait_ms = int(body.get("wait_ms") or 0)
        except (TypeError, ValueError):
            wait_ms = 0
        return BudgetExhaustedEvent(at_ms, str(body.get("process") or "?"), str(body.get("endpoint") or "?"),
                                    str(body.get("priority") or "?"), wait_ms,
                                    str(body.get("why") or body.get("reason") or ""))
    return None


# ---- the alerter's memory -------------------------------------------------------------------------

@dataclass(frozen=True)
class Condition:
    kind: str                   # one of CONDITION_KINDS
    market: str                 # '' for the deployment's conditions (no_consumer, budget_exhausted)
    since_ms: int
    mark: str = ""              # what tells a recurrence apart: the pause's `by`, the failure's time
    about: str = ""             # what the resolution repeats: the pause's reason, the failed task


@dataclass(frozen=True)
class AlertState:
    active: Mapping[str, Condition] = field(default_factory=dict)
    consumer_absent_since_ms: int | None = None
    budget_last_ms: int | None = None

    def to_json(self) -> str:
        return json.dumps({"active": {k: dataclasses.asdict(c) for k, c in self.active.items()},
                           "consumer_absent_since_ms": self.consumer_absent_since_ms,
                           "budget_last_ms": self.budget_last_ms})

    @classmethod
    def from_json(cls, text: str | None) -> "AlertState":
        """The state an alerter saved; a fresh one for nothing or anything unreadable."""
        if not text:
            return cls()
        try:
            body = json.loads(text)
            return cls({k: Condition(**c) for k, c in body.get("active", {}).items()},
                       body.get("consumer_absent_since_ms"), body.get("budget_last_ms"))
        except (TypeError, ValueError, AttributeError):
            return cls()

    def count(self, kind: str) -> int:
        return sum(1 for c in self.active.values() if c.kind == kind)


@dataclass(frozen=True)
class Alert:
    kind: str                   # paused, resumed, hedge_failed, no_consumer, budget_exhausted, flatten,
                                # worker_stopped, control_reverted
    state: str                  # firing | resolved
    severity: str               # critical | warning | info
    market: str                 # '' when not about one market
    summary: str                # one sentence for a person
    at_ms: int
    details: tuple[tuple[str, str], ...] = ()


# ---- the decisions ----------------------------------------------------------------------------------

def decide(state: AlertState, seen: Observation, settings: AlertsConfig) -> tuple[AlertState, list[Alert]]:
    """The new state and the alerts to send for one observation (only kinds in `settings.kinds`)."""
    if isinstance(seen, Snapshot):
        state, alerts = _on_snapshot(state, seen, settings)
    elif isinstance(seen, PausedEvent):
        state, alerts = _on_pause(state, seen.market, seen.pause, seen.at_ms)
    elif isinstance(seen, ResumedEvent):
        state, alerts = _on_resume(state, seen.market, seen.at_ms)
    elif isinstance(seen, HedgeFailedEvent):
        state, alerts = _on_failure(state, seen.market, seen.failure, seen.at_ms)
    elif isinstance(seen, WorkerStoppedEvent):
        state, alerts = _on_worker_stopped(state, seen)
    elif isinstance(seen, WorkerStartedEvent):
        state, alerts = _on_worker_back(state, seen.at_ms, seen.worker)
    elif isinstance(seen, ControlRevertedEvent):
        state, alerts = state, [_control_reverted(seen)]
    elif isinstance(seen, BudgetExhaustedEvent):
        state, alerts = _on_budget(state, seen, settings)
    else:
        raise TypeError(f"not an observation: {seen!r}")
    return state, [a for a in alerts if a.kind in settings.kinds]


def _with(state: AlertState, key: str, condition: Condition | None, **changes: Any) -> AlertState:
    active = dict(state.active)
    if condition is None:
        active.pop(key, None)
    else:
        active[key] = condition
    return dataclasses.replace(state, active=active, **changes)


def _on_pause(state: AlertState, market: str, pause: Pause, at_ms: int) -> tuple[AlertState, list[Alert]]:
    key = f"{PAUSED}:{market}"
    held = state.active.get(key)
    flatten = pause.by == FLATTEN_BY or pause.reason.startswith("flattened by")
    if held is not None and not (flatten and held.mark != FLATTEN_BY):
        return state, []     # paused already: one alert per pause, whatever reasons follow
    by = FLATTEN_BY if flatten else pause.by
    since = held.since_ms if held is not None else at_ms
    state = _with(state, key, Condition(PAUSED, market, since, by, pause.reason))
    if flatten:
        return state, [Alert(FLATTEN, FIRING, WARNING, market,
                             f"{market} is being flattened by an operator: market paused, A's orders cancelled, "
                             f"A's and B's positions closed with reduce-only market orders; `lighter-hedge resume "
                             f"--market {market}` trades again", at_ms, (("reason", pause.reason),))]
    return state, [Alert(PAUSED, FIRING, CRITICAL, market,
                         f"{market} paused: {pause.reason or 'no reason given'}. A places no order until "
                         f"`lighter-hedge resume --market {market}` (see `lighter-hedge status --market {market}`)",
                         at_ms, (("reason", pause.reason), ("by", by)))]


def _on_resume(state: AlertState, market: str, at_ms: int) -> tuple[AlertState, list[Alert]]:
    key = f"{PAUSED}:{market}"
    held = state.active.get(key)
    if held is None:
        return state, []
    state = _with(state, key, None)
    took = _duration(at_ms - held.since_ms)
    return state, [Alert(RESUMED, RESOLVED, INFO, market,
                         f"{market} resumed: A trades again (paused {took}: {held.about or 'no reason given'})",
                         at_ms, (("paused_for_s", str(max(0, at_ms - held.since_ms) // 1000)),
                                 ("pause_reason", held.about)))]


def _on_failure(state: AlertState, market: str, failure: Failure, at_ms: int) -> tuple[AlertState, list[Alert]]:
    key = f"{HEDGE_FAILED}:{failure.task_id}"
    held = state.active.get(key)
    mark = str(failure.ts_ms) if failure.ts_ms is not None else ""
    if held is not None and (not mark or held.mark == mark or not held.mark):
        # The same failure seen twice (its event and a snapshot); a recurrence carries a new time.
        if mark and not held.mark:
            state = _with(state, key, dataclasses.replace(held, mark=mark))
        return state, []
    state = _with(state, key, Condition(HEDGE_FAILED, market, at_ms, mark, failure.task_id))
    return state, [Alert(HEDGE_FAILED, FIRING, CRITICAL, market,
                         f"{market} hedge {failure.task_id} (fill {failure.fill_id or '?'}) failed: "
                         f"{failure.reason or 'no reason given'}. A is exposed and the market pauses: fix the "
                         f"cause, `lighter-hedge requeue {failure.task_id}`, then resume",
                         at_ms, (("task_id", failure.task_id), ("fill_id", failure.fill_id),
                                 ("reason", failure.reason)))]


def _on_budget(state: AlertState, seen: BudgetExhaustedEvent, settings: AlertsConfig
               ) -> tuple[AlertState, list[Alert]]:
    key = BUDGET_EXHAUSTED
    if key in state.active:
        return dataclasses.replace(state, budget_last_ms=seen.at_ms), []
    state = _with(state, key, Condition(BUDGET_EXHAUSTED, "", seen.at_ms, "", seen.process),
                  budget_last_ms=seen.at_ms)
    return state, [Alert(BUDGET_EXHAUSTED, FIRING, WARNING, "",
                         f"request budget exhausted: {seen.process}'s {seen.endpoint} ({seen.priority}) waits "
                         f"{seen.wait_ms / 1000:.1f}s for room ({seen.why or 'no reason given'}); A and B share "
                         f"Lighter's limit per rolling minute, see `lighter-hedge status` (budget line)",
                         seen.at_ms, (("process", seen.process), ("endpoint", seen.endpoint),
                                      ("priority", seen.priority), ("wait_ms", str(seen.wait_ms)),
                                      ("why", seen.why)))]


def _on_snapshot(state: AlertState, snap: Snapshot, settings: AlertsConfig) -> tuple[AlertState, list[Alert]]:
    alerts: list[Alert] = []
    for market, pause in snap.paused.items():
        if pause is not None:
            state, more = _on_pause(state, market, pause, snap.at_ms)
        else:
            state, more = _on_resume(state, market, snap.at_ms)
        alerts += more
    for market, failures in snap.failed.items():
        for failure in failures.values():
            state, more = _on_failure(state, market, failure, snap.at_ms)
            alerts += more
    failed_now = {f"{HEDGE_FAILED}:{task_id}" for failures in snap.failed.values() for task_id in failures}
    for key, held in list(state.active.items()):
        if held.kind == HEDGE_FAILED and held.market in snap.failed and key not in failed_now:
            state = _with(state, key, None)
            alerts.append(Alert(HEDGE_FAILED, RESOLVED, INFO, held.market,
                                f"{held.market} hedge {held.about} is no longer failed (requeued)", snap.at_ms,
                                (("task_id", held.about),)))
    state, more = _on_consumer(state, snap, settings)
    alerts += more
    stopped = state.active.get(WORKER_STOPPED)
    if stopped is not None and consumer_present(snap) and snap.at_ms - stopped.since_ms > HEARTBEAT_TTL_MS:
        state, more = _on_worker_back(state, snap.at_ms, "")
        alerts += more
    held = state.active.get(BUDGET_EXHAUSTED)
    last = state.budget_last_ms if state.budget_last_ms is not None else (held.since_ms if held else 0)
    if held is not None and snap.at_ms - last >= settings.budget_clear_s * 1000:
        state = _with(state, BUDGET_EXHAUSTED, None)
        alerts.append(Alert(BUDGET_EXHAUSTED, RESOLVED, INFO, "",
                            f"request budget recovered: no request waited {settings.budget_wait_s:g}s or more for "
                            f"room in the last {_duration(snap.at_ms - last)}", snap.at_ms))
    return state, alerts


def _on_worker_stopped(state: AlertState, seen: WorkerStoppedEvent) -> tuple[AlertState, list[Alert]]:
    if WORKER_STOPPED in state.active:
        return state, []    # stopped again before it was seen back (a restart loop): one alert
    state = _with(state, WORKER_STOPPED, Condition(WORKER_STOPPED, "", seen.at_ms, seen.worker, seen.reason))
    who = seen.worker or "?"
    return state, [Alert(
        WORKER_STOPPED, FIRING, WARNING, "",
        f"hedge worker {who} stopped: {seen.reason or 'no reason given'}. Under supervisord (autorestart=true) it "
        f"starts again within seconds; hedges wait in {HEDGE_QUEUE} meanwhile. If it does not come back: "
        f"`supervisorctl status worker`, logs/worker.log", seen.at_ms,
        (("worker", seen.worker), ("reason", seen.reason)))]


def _on_worker_back(state: AlertState, at_ms: int, worker: str) -> tuple[AlertState, list[Alert]]:
    held = state.active.get(WORKER_STOPPED)
    if held is None:
        return state, []
    state = _with(state, WORKER_STOPPED, None)
    who = worker or held.mark or "?"
    return state, [Alert(
        WORKER_STOPPED, RESOLVED, INFO, "",
        f"hedge worker {who} consumes {HEDGE_QUEUE} again (stopped {_duration(at_ms - held.since_ms)}: "
        f"{held.about or 'no reason given'})", at_ms,
        (("worker", who), ("stopped_for_s", str(max(0, at_ms - held.since_ms) // 1000)), ("reason", held.about)))]


def _control_reverted(seen: ControlRevertedEvent) -> Alert:
    return Alert(
        CONTROL_REVERTED, FIRING, WARNING, "",
        f"a worker control ({seen.control}) reached hedge worker {seen.worker or '?'} and was undone "
        f"within {seen.within_ms} ms: {seen.detail or 'no detail'}. The worker consumes {HEDGE_QUEUE} only, "
        f"without rate or time limits (README \"Operating\", Flower's controls)", seen.at_ms,
        (("worker", seen.worker), ("control", seen.control), ("detail", seen.detail),
         ("within_ms", str(seen.within_ms))))


def consumer_present(snap: Snapshot) -> bool:
    """A worker consumes hedge.b: its heartbeat is fresh and inspect (when asked) lists the queue."""
    return snap.heartbeat and snap.consumer_listed is not False


def _on_consumer(state: AlertState, snap: Snapshot, settings: AlertsConfig) -> tuple[AlertState, list[Alert]]:
    held = state.active.get(NO_CONSUMER)
    if consumer_present(snap):
        state = dataclasses.replace(state, consumer_absent_since_ms=None)
        if held is None:
            return state, []
        took = _duration(snap.at_ms - held.since_ms)
        return _with(state, NO_CONSUMER, None), [Alert(
            NO_CONSUMER, RESOLVED, INFO, "",
            f"a worker consumes {HEDGE_QUEUE} again (none for {took}); {snap.queue_length} hedge(s) queued",
            snap.at_ms, (("queue", HEDGE_QUEUE), ("queue_length", str(snap.queue_length))))]
    since = state.consumer_absent_since_ms if state.consumer_absent_since_ms is not None else snap.at_ms
    state = dataclasses.replace(state, consumer_absent_since_ms=since)
    if held is not None or snap.at_ms - since < settings.no_consumer_s * 1000:
        return state, []
    why = ("no hedge worker heartbeat in Redis (the worker is stopped, dead or cannot reach Redis)"
           if not snap.heartbeat else
           f"the worker beats but Celery's inspect lists no consumer of {HEDGE_QUEUE} (consumer cancelled, "
           f"or the worker is stuck in one task)")
    state = _with(state, NO_CONSUMER, Condition(NO_CONSUMER, "", since, "heartbeat" if not snap.heartbeat else "inspect"))
    return state, [Alert(
        NO_CONSUMER, FIRING, CRITICAL, "",
        f"no worker consumes {HEDGE_QUEUE} for {_duration(snap.at_ms - since)}: {why}; {snap.queue_length} "
        f"hedge(s) queued. The maker quotes nothing meanwhile; check `supervisorctl status worker` and logs/worker.log",
        snap.at_ms, (("queue", HEDGE_QUEUE), ("queue_length", str(snap.queue_length)),
                     ("heartbeat", "fresh" if snap.heartbeat else "missing"),
                     ("inspect", {True: "listed", False: "not listed", None: "not asked"}[snap.consumer_listed])))]


def _duration(ms: int) -> str:
    s = max(0, ms) // 1000
    if s < 120:
        return f"{s}s"
    if s < 7200:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


# ---- how an alert reads -----------------------------------------------------------------------------

def alert_text(alert: Alert, source: str) -> str:
    """One line for a chat: `[FIRING] lighter-hedge live: ETH paused: ...`."""
    return f"[{alert.state.upper()}] {source}: {alert.summary}"


def format_payload(alert: Alert, fmt: str, source: str, chat_id: int | str | None = None) -> dict[str, Any]:
    """The webhook's JSON body: `plain` (the whole alert), `slack` ({"text"}: Slack incoming webhooks,
    Mattermost, Rocket.Chat, Discord's /slack endpoint) or `telegram` ({"chat_id", "text"} for a bot's
    sendMessage URL)."""
    text = alert_text(alert, source)
    if fmt == "slack":
        return {"text": text}
    if fmt == "telegram":
        if chat_id is None:
            raise ValueError("alerts.telegram_chat_id: missing; the telegram format needs the chat to post to")
        return {"chat_id": chat_id, "text": text, "disable_web_page_preview": True}
    if fmt != "plain":
        raise ValueError(f"alerts.format: expected one of plain, slack, telegram, got {fmt!r}")
    return {"source": source, "kind": alert.kind, "state": alert.state, "severity": alert.severity,
            "market": alert.market or None, "summary": alert.summary, "text": text,
            "details": dict(alert.details), "at_ms": alert.at_ms,
            "at": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(alert.at_ms / 1000)) + f".{alert.at_ms % 1000:03d}Z"}


# ---- delivery: when to try again, what to log ---------------------------------------------------------

MAX_RETRY_DELAY_S = 30.0


def delivery_result(status: int | None) -> str:
    """`ok` (2xx), `retry` (no answer, 408, 429, 5xx) or `refused` (any other answer: a bad URL or
    token, a payload the receiver will never take)."""
    if status is not None and 200 <= status < 300:
        return "ok"
    if status is None or status in (408, 429) or status >= 500:
        return "retry"
    return "refused"


def retry_delay_s(attempt: int, attempts: int, status: int | None, retry_after: str | None = None) -> float | None:
    """Seconds before attempt `attempt + 1`, or None: delivered, refused for good, or out of attempts.
    1 s doubling, capped at MAX_RETRY_DELAY_S; a receiver's Retry-After (seconds) is honoured up to the cap."""
    if delivery_result(status) != "retry" or attempt >= attempts:
        return None
    delay = min(MAX_RETRY_DELAY_S, 2.0 ** (attempt - 1))
    if retry_after:
        try:
            delay = max(delay, min(MAX_RETRY_DELAY_S, float(retry_after)))
        except ValueError:
            pass
    return delay


def webhook_target(url: str) -> str:
    """What the logs say about a webhook: scheme, host and port only. Slack's and Telegram's
    tokens live in the path (and some receivers take them in the query or the userinfo)."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or "?"
        return f"{parts.scheme}://{host}" + (f":{parts.port}" if parts.port else "")
    except ValueError:
        return "<unparsable URL>"


def delivery_line(alert: Alert, fmt: str, target: str, attempt: int, result: str, status: int | None,
                  error: str = "", next_in_s: float | None = None) -> str:
    """The key=value log line of one delivery attempt: the alert's kind and market, never the URL."""
    parts = [f"kind={alert.kind}", f"state={alert.state}", f"market={alert.market or '-'}", f"format={fmt}",
             f"target={target}", f"attempt={attempt}", f"result={result}", f"status={status if status else '-'}"]
    if error:
        parts.append(f"error={error}")
    if next_in_s is not None:
        parts.append(f"next_in_s={next_in_s:g}")
    return " ".join(parts)
