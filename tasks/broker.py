"""kombu's Redis broker channel, publishing through one kept client instead of a new one per message.

kombu 5.7's Redis channel builds a new redis.Redis client for every message it publishes (each task
message and each event); with redis-py 8 the construction alone costs about 0.15 ms, paid on the
maker's enqueue and on the worker's task-received and task-started events, all before a hedge is
signed. A redis.Redis client is safe to share (it takes a pooled connection per command), so each
channel keeps one.

Installed on kombu's Redis transport class (install(), from tasks.celery_app) rather than chosen
with Celery's broker_transport setting: a custom transport would also rename the broker URL's
scheme, and Flower picks its broker client by that scheme.
"""
from __future__ import annotations

from contextlib import contextmanager
from typing import Any, Iterator

from kombu.transport import redis as kombu_redis


class Channel(kombu_redis.Channel):
    _publish_client: Any = None

    @contextmanager
    def conn_or_acquire(self, client: Any = None) -> Iterator[Any]:
        if client is not None:
            yield client
            return
        if self._publish_client is None:
            self._publish_client = self._create_client()
        yield self._publish_client


def install() -> None:
    """Use Channel for every Redis (and rediss) broker connection of this process."""
    kombu_redis.Transport.Channel = Channel
