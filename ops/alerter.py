"""`lighter-hedge alerter`: Redis in, webhook POSTs out. The decisions are ops/alerts.py's; this is the I/O.

One process (supervisord's `alerter` program when `alerts.enabled`):

- the main thread subscribes to the events and control channels (pauses, failed hedges, the budget,
  the worker's worker.stopped / worker.started / worker.control_reverted: ops.alerts.parse_event), and
  every `alerts.poll_interval_s` samples Redis (pauses, failed hedges, the worker's heartbeat, hedge.b's
  length), feeding each into
  ops.alerts.decide; its state is saved in Redis (`lh:alerts:state`) so a restart does not alert
  an ongoing condition again;
- a thread asks Celery's inspect which queues the workers consume (`consumer_check: heartbeat+inspect`);
- a thread POSTs the alerts in order, retrying with backoff (bounded by `alerts.delivery_attempts`),
  and logs every attempt as key=value with the alert's kind and market, never the webhook URL.

It also exports `lh_hedge_queue_length`, `lh_hedge_consumer_present` and the alert counters on
`metrics.alerter_port`.
"""
from __future__ import annotations

import json
import logging
import queue
import threading
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, replace
from typing import Any, Callable

import redis

from hedge.config import Config, ConfigError, is_loopback_url
from ops import alerts as rules
from ops.alerts import Alert, AlertState, Failure, Pause, Snapshot

log = logging.getLogger("ops.alerter")

STATE_KEY = "lh:alerts:state"
WEBHOOK_FIELD = "alert_webhook_url"     # the alerter's $LH_KEYS_FILE field (written by `up`)
INSPECT_TIMEOUT_S = 1.0
MAX_INSPECT_INTERVAL_S = 10.0
_KOMBU_SEP, _KOMBU_PRIORITY_STEPS = "\x06\x16", (3, 6, 9)   # kombu's Redis queues for priorities > 0


@dataclass(frozen=True)
class Webhook:
    url: str
    fmt: str
    chat_id: int | str | None
    timeout_s: float
    attempts: int

    @property
    def target(self) -> str:
        return rules.webhook_target(self.url)

    def __repr__(self) -> str:   # never the URL: it carries the token
        return f"Webhook(target={self.target}, fmt={self.fmt})"


def webhook_url(cfg: Config) -> str | None:
    """The webhook URL: $<alerts.webhook_url_env>, else the keys file's "alert_webhook_url" (`up` hands the
    alerter its own file). None when neither has one. ConfigError for a URL that is not http(s)."""
    import os
    name = cfg.alerts.webhook_url_env
    url = os.environ.get(name, "").strip()
    where = f"${name} (alerts.webhook_url_env)"
    if not url and cfg.keys_file and os.path.exists(cfg.keys_file):
        from venue.keys import read_key_file
        value = read_key_file(cfg.keys_file).get(WEBHOOK_FIELD)
        url = value.strip() if isinstance(value, str) else ""
        where = f"keys_file field {WEBHOOK_FIELD}"
    if not url:
        return None
    if not url.startswith(("https://", "http://")):
        raise ConfigError(f"alerts.webhook_url_env: {where} must be an http:// or https:// URL "
                          f"(its value is not shown: it may carry a token)")
    return url


# ---- reading Redis ---------------------------------------------------------------------------------

def queue_keys(name: str = rules.HEDGE_QUEUE) -> list[str]:
    """The Redis lists kombu keeps one queue in (one per priority step)."""
    return [name, *(f"{name}{_KOMBU_SEP}{p}" for p in _KOMBU_PRIORITY_STEPS)]


def queue_length(r: redis.Redis, name: str = rules.HEDGE_QUEUE) -> int:
    with r.pipeline(transaction=False) as pipe:
        for key in queue_keys(name):
            pipe.llen(key)
        return sum(int(n) for n in pipe.execute())


def sample(store: Any, markets: list[str], consumer_listed: bool | None) -> Snapshot:
    """One Snapshot of Redis (store: tasks.store.Store)."""
    paused: dict[str, Pause | None] = {}
    failed: dict[str, dict[str, Failure]] = {}
    for market in markets:
        p = store.paused(market)
        paused[market] = Pause(str(p.get("reason") or ""), str(p.get("by") or "")) if p else None
        failed[market] = {task_id: _failure(task_id, info) for task_id, info in store.failed(market).items()}
    return Snapshot(at_ms=_now_ms(), paused=paused, failed=failed, heartbeat=store.worker_alive(),
                    consumer_listed=consumer_listed, queue_length=queue_length(store.r))


def _failure(task_id: str, info: dict) -> Failure:
    ts = info.get("ts_ms")
    return Failure(task_id, str(info.get("fill_id") or ""), str(info.get("reason") or ""),
                   int(ts) if isinstance(ts, (int, float)) else None)


def enrich(store: Any, event: rules.Event) -> rules.Event:
    """What the pub/sub message does not carry, from Redis: who paused (a flatten?), when a hedge failed."""
    if isinstance(event, rules.PausedEvent) and not event.pause.by:
        p = store.paused(event.market)
        if p and str(p.get("reason") or "") == event.pause.reason:
            return replace(event, pause=replace(event.pause, by=str(p.get("by") or "")))
    if isinstance(event, rules.HedgeFailedEvent) and event.failure.ts_ms is None:
        info = store.failed(event.market).get(event.failure.task_id)
        if info:
            ts = info.get("ts_ms")
            if isinstance(ts, (int, float)):
                return replace(event, failure=replace(event.failure, ts_ms=int(ts)))
    return event


class ConsumerProbe:
    """Celery's inspect of the workers' active queues, asked from a thread every `interval_s`:
    `listed` is True (a worker consumes hedge.b), False (none does, or none answered) or None (not asked yet)."""

    def __init__(self, interval_s: float, ask: Callable[[], bool] | None = None):
        self.interval_s = interval_s
        self.listed: bool | None = None
        self._ask = ask or _inspect_hedge_queue
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="alerter-inspect", daemon=True)

    def start(self) -> "ConsumerProbe":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.listed = bool(self._ask())
            except Exception as exc:   # the broker away: no answer is no consumer seen
                log.warning("event=alerter.inspect_failed error=%s", type(exc).__name__)
                self.listed = False
            self._stop.wait(self.interval_s)


def _inspect_hedge_queue() -> bool:
    from tasks.celery_app import app
    queues = app.control.inspect(timeout=INSPECT_TIMEOUT_S).active_queues() or {}
    return any(q.get("name") == rules.HEDGE_QUEUE for worker in queues.values() for q in worker or [])


# ---- sending ---------------------------------------------------------------------------------------

def post_json(url: str, body: dict[str, Any], timeout_s: float) -> tuple[int | None, str | None, str]:
    """POST body as JSON: (HTTP status or None, Retry-After, error class name or ''). Loopback goes
    without the environment's proxy; anything else uses it (an egress proxy, as curl would)."""
    data = json.dumps(body).encode()
    request = urllib.request.Request(url, data=data, method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "lighter-hedge"})
    handlers = [urllib.request.ProxyHandler({})] if is_loopback_url(url) else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout_s) as response:
            response.read(65536)
            return response.status, None, ""
    except urllib.error.HTTPError as exc:    # an answer: its status says whether to try again
        retry_after = exc.headers.get("Retry-After") if exc.headers else None
        exc.close()
        return exc.code, retry_after, "HTTPError"
    except (OSError, ValueError) as exc:     # no answer (refused, timeout, DNS); str(exc) may name the URL
        reason = getattr(exc, "reason", None)
        return None, None, type(reason).__name__ if isinstance(reason, BaseException) else type(exc).__name__


class Sender:
    """Delivers alerts in order from a queue, each with bounded retries; logs every attempt."""

    def __init__(self, webhook: Webhook | None, source: str, post: Callable[..., tuple] = post_json,
                 sleep: Callable[[float], bool] | None = None):
        self.webhook = webhook
        self.source = source
        self._post = post
        self._queue: "queue.Queue[Alert | None]" = queue.Queue()
        self._stopping = threading.Event()
        self._sleep = sleep or self._stopping.wait
        self._thread = threading.Thread(target=self._run, name="alerter-sender", daemon=True)

    def start(self) -> "Sender":
        self._thread.start()
        return self

    def put(self, alert: Alert) -> None:
        self._queue.put(alert)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Deliver what is queued (without waiting out retries) for at most timeout_s."""
        self._queue.put(None)
        self._thread.join(timeout_s)
        self._stopping.set()
        self._thread.join(1.0)

    def _run(self) -> None:
        while True:
            alert = self._queue.get()
            if alert is None:
                self._stopping.set()
                while True:   # drain: one attempt each
                    try:
                        rest = self._queue.get_nowait()
                    except queue.Empty:
                        return
                    if rest is not None:
                        self.deliver(rest)
            self.deliver(alert)

    def deliver(self, alert: Alert) -> str:
        """One alert: `delivered`, `failed` (every attempt refused or unanswered) or `logged` (no webhook)."""
        from tasks import metrics
        hook = self.webhook
        if hook is None:
            log.warning("event=alert.logged %s summary=%r (no webhook: alerts.webhook_url_env not set)",
                        rules.delivery_line(alert, "-", "-", 0, "logged", None), alert.summary)
            metrics.ALERTS.labels(alert.kind, alert.state, "logged").inc()
            return "logged"
        body = rules.format_payload(alert, hook.fmt, self.source, hook.chat_id)
        attempt = 0
        while True:
            attempt += 1
            status, retry_after, error = self._post(hook.url, body, hook.timeout_s)
            result = rules.delivery_result(status)
            metrics.ALERT_DELIVERY_ATTEMPTS.labels(result).inc()
            delay = None if self._stopping.is_set() else rules.retry_delay_s(attempt, hook.attempts, status, retry_after)
            line = rules.delivery_line(alert, hook.fmt, hook.target, attempt, result, status, error, delay)
            if result == "ok":
                log.info("event=alert.delivered %s", line)
                metrics.ALERTS.labels(alert.kind, alert.state, "delivered").inc()
                return "delivered"
            if delay is None:
                log.error("event=alert.undelivered %s summary=%r", line, alert.summary)
                metrics.ALERTS.labels(alert.kind, alert.state, "failed").inc()
                return "failed"
            log.warning("event=alert.retry %s", line)
            self._sleep(delay)


# ---- the process -----------------------------------------------------------------------------------

class Alerter:
    def __init__(self, cfg: Config, store: Any, sender: Sender, probe: ConsumerProbe | None):
        self.cfg = cfg
        self.store = store
        self.sender = sender
        self.probe = probe
        self.markets = list(cfg.markets)
        self.state = AlertState()

    def load_state(self) -> None:
        self.state = AlertState.from_json(self.store.r.get(STATE_KEY))

    def observe(self, seen: rules.Observation) -> list[Alert]:
        state, alerts = rules.decide(self.state, seen, self.cfg.alerts)
        if state != self.state:
            self.state = state
            self.store.r.set(STATE_KEY, state.to_json())
        for alert in alerts:
            log.info("event=alert kind=%s state=%s market=%s severity=%s summary=%r", alert.kind, alert.state,
                     alert.market or "-", alert.severity, alert.summary)
            self.sender.put(alert)
        return alerts

    def tick(self) -> Snapshot:
        """Sample Redis, decide, and export the gauges."""
        from tasks import metrics
        snap = sample(self.store, self.markets, self.probe.listed if self.probe else None)
        self.observe(snap)
        present = rules.consumer_present(snap)
        metrics.QUEUE_LENGTH.labels(rules.HEDGE_QUEUE).set(snap.queue_length)
        metrics.CONSUMER_PRESENT.labels(rules.HEDGE_QUEUE).set(1 if present else 0)
        since = self.state.consumer_absent_since_ms
        metrics.CONSUMER_ABSENT_SECONDS.labels(rules.HEDGE_QUEUE).set(
            0 if present or since is None else max(0, snap.at_ms - since) / 1000)
        for kind in rules.CONDITION_KINDS:
            metrics.ALERT_CONDITIONS.labels(kind).set(self.state.count(kind))
        return snap

    def handle(self, message: dict) -> None:
        if message.get("type") != "message":
            return
        event = rules.parse_event(message.get("data"), _now_ms())
        if event is not None:
            self.observe(enrich(self.store, event))

    def run(self, stop: threading.Event) -> None:
        poll_s = self.cfg.alerts.poll_interval_s
        pubsub = None
        failing = False
        next_tick = 0.0
        while not stop.is_set():
            try:
                if pubsub is None:
                    pubsub = self.store.r.pubsub(ignore_subscribe_messages=True)
                    pubsub.subscribe(self.store.events_channel, self.store.control_channel)
                    self.load_state()
                    log.info("event=alerter.listening channels=%s,%s markets=%s consumer_check=%s",
                             self.store.events_channel, self.store.control_channel, ",".join(self.markets),
                             self.cfg.alerts.consumer_check)
                wait = max(0.0, min(poll_s, next_tick - time.monotonic()))
                message = pubsub.get_message(timeout=wait)
                while message is not None:
                    self.handle(message)
                    message = pubsub.get_message(timeout=0)
                if time.monotonic() >= next_tick:
                    next_tick = time.monotonic() + poll_s
                    self.tick()
                if failing:
                    log.info("event=alerter.redis_ok")
                failing = False
            except redis.RedisError as exc:
                if not failing:
                    log.warning("event=alerter.redis_unavailable error=%s action=retrying", type(exc).__name__)
                failing = True
                if pubsub is not None:
                    try:
                        pubsub.close()
                    except redis.RedisError:
                        pass
                pubsub = None
                stop.wait(min(poll_s, 2.0))
        if pubsub is not None:
            pubsub.close()


def run_alerter(cfg: Config, webhook: Webhook | None, stop: threading.Event) -> None:
    """The process: metrics endpoint, probe, sender and the main loop, until `stop` is set."""
    from tasks import metrics
    from tasks.store import Store
    store = Store.from_url(cfg.redis_url)
    metrics.serve(cfg.metrics.alerter_port, cfg.metrics.host, "alerter")
    probe = None
    if cfg.alerts.consumer_check == "heartbeat+inspect":
        probe = ConsumerProbe(min(MAX_INSPECT_INTERVAL_S, max(0.5, cfg.alerts.no_consumer_s / 3))).start()
    sender = Sender(webhook, f"lighter-hedge {cfg.mode}").start()
    log.info("event=alerter.start format=%s target=%s kinds=%s no_consumer_s=%g budget_wait_s=%g",
             webhook.fmt if webhook else "-", webhook.target if webhook else "none(log only)",
             ",".join(cfg.alerts.kinds), cfg.alerts.no_consumer_s, cfg.alerts.budget_wait_s)
    try:
        Alerter(cfg, store, sender, probe).run(stop)
    finally:
        if probe is not None:
            probe.stop()
        sender.stop()
        log.info("event=alerter.stop")


def _now_ms() -> int:
    return int(time.time() * 1000)
