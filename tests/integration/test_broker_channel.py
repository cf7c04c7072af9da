"""The broker channel publishes through one kept Redis client (tasks/broker.py), and messages still
arrive whole and in order; the broker URL keeps its redis:// scheme (Flower picks its broker
client by that scheme)."""
from __future__ import annotations

import pytest
from kombu import Producer, Queue

from tasks import app, broker

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
