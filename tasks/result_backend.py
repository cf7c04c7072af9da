"""Celery's Redis result backend, without the subscription it makes when a task is sent.

Celery subscribes the sending thread to a task's result channel as it sends the task
(RedisBackend.on_task_call), one more Redis command before the task message is published. The
maker never waits in the thread that sends: it waits in its result thread, and a Redis backend is
per thread. That thread's AsyncResult.get() subscribes itself and then reads the stored result
(RedisBackend.on_wait_for_pending), so a result published before it subscribed is not missed.
Selected in celeryconfig.py (result_backend = "tasks.result_backend:RedisBackend+redis://...").
"""
from __future__ import annotations

from typing import Any

from celery.backends.redis import RedisBackend as CeleryRedisBackend


# Results Celery buffers for a waiter not (or no longer) waiting: a result published after its waiter
# read it from its key, or after a wait timed out. The maker never needs them (a wait subscribes,
# then reads the stored result), and Celery keeps up to 8,192 of them: about 10 MB of the maker's
# memory, filled by the hedges of a burst it does not wait on one by one.
PENDING_MESSAGES_KEPT = 32


class RedisBackend(CeleryRedisBackend):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._pending_messages.maxsize = PENDING_MESSAGES_KEPT   # the result consumer shares this map

    def on_task_call(self, producer: Any, task_id: str) -> None:
        """No early subscription: whoever waits on the result subscribes when it starts waiting."""
