"""Prometheus metrics of the maker and the worker (prometheus-client), served on config's metrics ports.

Each process exposes its own registry on its own port (metrics.maker_port / metrics.worker_port,
0 = off). Flower's /metrics stays as it is. Latencies are measured from the moment the frame
carrying the fill arrived at the maker (Fill.ts_seen_us), on the same clock on one host.

The request budget A and B share (venue/budget.py), once a process calls `watch_budget`, read
from Redis at each scrape, labelled with this process's name (maker, worker):

- `lh_budget_used{process}`: what this process used of the rolling minute, in the limit's unit;
- `lh_budget_window_used{process}`: what all processes used of it, as this process sees it;
- `lh_budget_limit{process}`: the limit (+Inf when there is none: the simulator's instant tier);
- `lh_venue_429_total{process}`: HTTP 429s this process got from the venue (kept in Redis);
- `lh_budget_wait_seconds_total{process,priority}`: time this process waited for room (hedge,
  quote, read).
"""
from __future__ import annotations

import logging
import math
import time
from typing import Any, Iterator

import redis
from prometheus_client import REGISTRY, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry

log = logging.getLogger("tasks.metrics")

LATENCY_BUCKETS = (0.001, 0.002, 0.003, 0.004, 0.005, 0.0075, 0.01, 0.015, 0.02, 0.03, 0.05, 0.075,
                   0.1, 0.2, 0.3, 0.5, 0.75, 1.0, 2.0, 5.0, 10.0, 30.0)

FILL_TO_HEDGE_SENT = Histogram(
    "lh_fill_to_hedge_sent_seconds", "Fill frame seen by the maker -> the hedge order's sendTx answered",
    ["market"], buckets=LATENCY_BUCKETS)
FILL_TO_HEDGE_CONFIRMED = Histogram(
    "lh_fill_to_hedge_confirmed_seconds", "Fill frame seen by the maker -> the hedge order's final state read",
    ["market"], buckets=LATENCY_BUCKETS)
HEDGES = Counter("lh_hedges_total", "Hedge tasks finished, by outcome (hedged, covered, failed, refused)",
                 ["market", "outcome"])
HEDGE_ORDERS = Counter("lh_hedge_orders_total", "B orders sent, by the venue's answer", ["market", "result"])
RETRIES = Counter("lh_hedge_retries_total", "Hedge task retries", ["market"])
INFLIGHT = Gauge("lh_inflight_hedges", "Hedge tasks enqueued and not finished", ["market"])
UNHEDGED = Gauge("lh_unhedged_base", "A's exposure not covered by settled hedge legs (base units)", ["market"])
PAUSED = Gauge("lh_paused", "1 while the market is paused", ["market"])
FILLS = Counter("lh_fills_total", "Fills of A counted (first delivery only)", ["market"])
STREAM_RECONNECTS = Counter("lh_stream_reconnects_total", "Account stream reconnects", ["account"])
ROUND_SECONDS = Histogram("lh_maker_round_seconds", "One maker round: quote, rest, hedges done", ["market"],
                          buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120))
ROUND_PHASE_SECONDS = Counter(
    "lh_maker_round_phase_seconds_total",
    "Time of maker rounds by phase: venue (REST calls to the venue), resting (order waiting for fills), "
    "hedge_wait (waiting on hedge results), own (everything else: our code, Redis)", ["market", "phase"])

# The alerter's (ops/alerter.py, `lighter-hedge alerter`, on metrics.alerter_port), sampled from Redis every
# alerts.poll_interval_s. Labelled, so the maker and the worker, which never set them, export none of them.
QUEUE_LENGTH = Gauge("lh_hedge_queue_length", "Hedge messages waiting in the broker queue, not yet taken by a worker",
                     ["queue"])
CONSUMER_PRESENT = Gauge(
    "lh_hedge_consumer_present", "1 while a worker consumes the queue: its heartbeat is fresh in Redis and, with "
    "alerts.consumer_check heartbeat+inspect, Celery's inspect lists the queue among its active queues", ["queue"])
CONSUMER_ABSENT_SECONDS = Gauge("lh_hedge_consumer_absent_seconds",
                                "How long the queue has had no consumer (0 while one is present)", ["queue"])
ALERT_CONDITIONS = Gauge("lh_alert_conditions", "Alert conditions firing now, by kind", ["kind"])
ALERTS = Counter("lh_alerts_total", "Alerts the alerter raised, by kind, state (firing, resolved) and outcome "
                 "(delivered, failed: every attempt refused, logged: no webhook)", ["kind", "state", "outcome"])
ALERT_DELIVERY_ATTEMPTS = Counter("lh_alert_delivery_attempts_total",
                                  "Webhook POSTs, by result (ok, retry, refused)", ["result"])

_started: set[int] = set()
_watched: set[tuple[int, str]] = set()


class BudgetCollector(Collector):
    """The request budget's metrics for one process, read from Redis at scrape time."""

    def __init__(self, budget: Any, process: str):  # budget: venue.budget.RequestBudget
        self.budget = budget
        self.process = process

    def describe(self) -> list:
        return []   # no Redis call when registering

    def collect(self) -> Iterator[Any]:
        labels = [self.process]
        used = GaugeMetricFamily("lh_budget_used", "This process's use of the rolling minute, in the limit's unit",
                                 labels=["process"])
        window = GaugeMetricFamily("lh_budget_window_used",
                                   "All processes' use of the rolling minute, in the limit's unit",
                                   labels=["process"])
        limit = GaugeMetricFamily("lh_budget_limit", "The request limit per rolling minute (+Inf: none)",
                                  labels=["process"])
        refused = CounterMetricFamily("lh_venue_429", "HTTP 429s this process got from the venue",
                                      labels=["process"])
        waited = CounterMetricFamily("lh_budget_wait_seconds", "Time this process waited for room in the budget",
                                     labels=["process", "priority"])
        for priority, ms in self.budget.local.waited_ms.items():
            waited.add_metric([self.process, priority.name.lower()], ms / 1000)
        try:
            usage = self.budget.usage()
        except redis.RedisError as exc:
            log.warning("event=metrics.budget_unavailable process=%s error=%r", self.process, exc)
            yield waited
            return
        mine = usage.by_process.get(self.process)
        mine_used = (mine.weight if usage.unit == "weight" else mine.requests) if mine else 0
        used.add_metric(labels, mine_used)
        window.add_metric(labels, usage.used)
        limit.add_metric(labels, math.inf if usage.limit is None else usage.limit)
        refused.add_metric(labels, mine.http_429 if mine else 0)
        yield from (used, window, limit, refused, waited)


def watch_budget(budget: Any, process: str, registry: CollectorRegistry = REGISTRY) -> None:
    """Export the request budget (`venue.budget.RequestBudget`) on this process's metrics endpoint,
    as `process`. Once per process and budget; call it next to serve()."""
    key = (id(registry), process)
    if key in _watched:
        return
    registry.register(BudgetCollector(budget, process))
    _watched.add(key)


def serve(port: int, host: str = "127.0.0.1", what: str = "") -> bool:
    """Start the endpoint once per process; a busy port is logged, never fatal (hedging goes on)."""
    if not port or port in _started:
        return False
    try:
        start_http_server(port, addr=host)
    except OSError as exc:
        log.error("event=metrics.unavailable process=%s host=%s port=%d error=%s", what, host, port, exc)
        return False
    _started.add(port)
    log.info("event=metrics.serving process=%s url=http://%s:%d/metrics", what, host, port)
    return True


def since_us(ts_us: int) -> float | None:
    """Seconds since a fill's ts_seen_us, or None when the fill does not carry it."""
    if not ts_us:
        return None
    return max(0.0, (time.time_ns() // 1000 - ts_us) / 1e6)
