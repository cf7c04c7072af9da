"""Celery settings for lighter-hedge: Redis broker and result backend, hedge routing, safety.

Broker and backend come from config.yaml's redis section (LH_REDIS_URL overrides it).
"""
from kombu import Exchange, Queue

from ops.settings import FAILED_RESULT_TTL_S, RESULT_TTL_S, load_config, result_keyprefix

_cfg = load_config()

broker_url = _cfg.redis_url
# Celery's Redis backend minus one Redis command per sent task (tasks/result_backend.py).
result_backend = "tasks.result_backend:RedisBackend+" + _cfg.result_backend_url
broker_connection_retry_on_startup = True

# Only account B's worker consumes hedge.b.
task_routes = {"tasks.hedge_fill": {"queue": "hedge.b"}}
task_default_queue = "lighter-hedge.default"
# Declared, not only created on first use: Flower's broker page and /api/queues/length list hedge.b
# (with its length) from the start, also while no worker runs or its consumer was cancelled. The
# same exchange and routing key Celery gave the queue it created on demand, so messages already
# queued and running makers and workers stay compatible. The worker's -Q hedge.b still selects
# hedge.b alone; the default queue is declared for Flower's list and nothing consumes it.
task_queues = (Queue("hedge.b", Exchange("hedge.b", type="direct"), routing_key="hedge.b"),
               Queue(task_default_queue, Exchange(task_default_queue, type="direct"), routing_key=task_default_queue))

# A hedge is acknowledged only after it finished; a worker that dies mid-hedge gets it
# redelivered, and the task's write-ahead registry makes that redelivery safe.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
# Longest hedge: all retries with backoff capped at retry_backoff_max_s, plus sends.
# Redelivery after this long would start a second copy of a still-running hedge.
broker_transport_options = {"visibility_timeout": 3600}
result_backend_transport_options = {"retry_policy": {"timeout": 5.0},
                                    "global_keyprefix": result_keyprefix(_cfg.result_backend_url)}

task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
result_accept_content = ["json"]
# Keep name, args and queue with the result: a failed hedge can be re-queued with its fill.
result_extended = True
# Results expire (ops/settings.py says why these lifetimes): Redis keeps no history of its own.
result_expires = RESULT_TTL_S
result_failure_expires = FAILED_RESULT_TTL_S
# No STARTED write to the result backend: it is one more Redis round trip (with the extended
# meta) between a hedge's arrival and its wire call. Flower still sees a task start through the
# worker's task-started event; `lighter-hedge status` shows hedges in flight from Redis.
task_track_started = False

# Events for Flower: the worker's (received, started, succeeded, failed, retried). No task-sent
# event from the maker: it is one more publish in the maker between a fill and its hedge (about
# 0.05 of the latency ratio to the floor in bench/). A hedge therefore shows in Flower's task list
# once the worker receives it; hedges still queued show as hedge.b's length in Flower's broker
# view and one by one in `lighter-hedge status` (in flight, from Redis).
worker_send_task_events = True
task_send_sent_event = False

# Flower's worker controls (README "Operating" has the table): a rate limit set on a hedge task
# (Flower's "Rate limit", `celery control rate_limit`) is ignored, and tasks/worker_guard.py sets it
# back; pool restarts ("Restart pool") are refused. Solo pool: no grow/shrink, autoscale or time limits.
worker_disable_rate_limits = True
worker_pool_restarts = False

worker_hijack_root_logger = False
timezone = "UTC"
