"""Our two adjustments to Celery's Redis plumbing keep its behaviour: the broker channel publishes
through one kept Redis client (tasks/broker.py) and messages still arrive whole and in order, with
the broker URL's redis:// scheme kept (Flower picks its broker client by it); the result backend
no longer subscribes when a task is sent (tasks/result_backend.py), and a waiter in another thread,
as in the maker, still gets a result stored before it started waiting or after."""
from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

import pytest
from kombu import Producer, Queue

from tasks import app, broker, hedge_fill
from tasks.result_backend import RedisBackend
from tasks.store import Store
from venue.sim.harness import wait_until

pytestmark = pytest.mark.integration


def test_channel_reuses_one_client_and_delivers_in_order():
    queue = Queue("lh-test-broker-channel", routing_key="lh-test-broker-channel")
    with app.connection_for_write() as conn:
        assert conn.as_uri().startswith("redis://")
        channel = conn.channel()
        try:
            assert isinstance(channel, broker.Channel)
            producer = Producer(channel)
            for n in range(3):
                producer.publish({"n": n}, routing_key=queue.routing_key, declare=[queue], serializer="json")
            with channel.conn_or_acquire() as first, channel.conn_or_acquire() as second:
                assert first is second
            bound = queue(channel)
            got = [bound.get(no_ack=True).payload for _ in range(3)]
            assert got == [{"n": 0}, {"n": 1}, {"n": 2}]
            assert bound.get(no_ack=True) is None
        finally:
            queue(channel).delete()
            channel.close()


def test_waiter_in_another_thread_gets_results_stored_before_and_after_it_waits():
    assert isinstance(app.backend, RedisBackend)
    early, late = f"lh-test-early-{uuid.uuid4()}", f"lh-test-late-{uuid.uuid4()}"
    app.backend.store_result(early, {"ok": 1}, "SUCCESS")   # done before anyone waits

    def wait(task_id: str) -> object:  # like the maker's result thread: its own backend instance
        return hedge_fill.AsyncResult(task_id).get(timeout=10)

    with ThreadPoolExecutor(max_workers=1) as pool:
        assert pool.submit(wait, early).result(timeout=15) == {"ok": 1}
        waiting = pool.submit(wait, late)
        # Store only once the waiter has subscribed: this result reaches it by push.
        channel = Store(app.backend.client).result_key(late)
        wait_until(lambda: app.backend.client.pubsub_numsub(channel)[0][1] > 0, 10, "the waiter's subscription")
        app.backend.store_result(late, {"ok": 2}, "SUCCESS")
        assert waiting.result(timeout=15) == {"ok": 2}
    for task_id in (early, late):
        app.backend.forget(task_id)
