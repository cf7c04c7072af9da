"""One sender per API key: the key lease (tasks/key_lease.py, Store.take_key_lease) against real Redis,
and the flatten request's signature (tasks/flatten_task.py)."""
from __future__ import annotations

import threading
import time
from decimal import Decimal

import pytest

from hedge.config import AccountConfig
from hedge.flatten import CloseResult
from tasks.key_lease import KeyBusy, KeyLeaseHolder
from tasks.store import KeyLease, Store, now_ms

ACCOUNT = AccountConfig("account_b", 990002, 4, "LH_TEST_KEY")


@pytest.fixture
def store(r) -> Store:
    s = Store(r)
    yield s
    r.delete("lh:key_lease:990002:4")


def test_a_key_is_held_by_one_sender_and_a_flatten_never_takes_a_running_worker_s(store):
    worker = KeyLeaseHolder(store, ACCOUNT, "worker")
    worker.take()
    flatten = KeyLeaseHolder(store, ACCOUNT, "flatten")
    with pytest.raises(KeyBusy, match="held by worker"):
        flatten.take()
    assert store.key_lease(990002, 4).owner == worker.lease.owner


def test_a_restarted_worker_takes_over_its_dead_self_at_once_but_waits_for_a_flatten(store):
    dead = KeyLeaseHolder(store, ACCOUNT, "worker")
    dead.take()
    restarted = KeyLeaseHolder(store, ACCOUNT, "worker")
    restarted.take_waiting(over_roles=("worker",), timeout_s=0.5)   # no wait: its own role
    assert store.key_lease(990002, 4).owner == restarted.lease.owner

    store.r.delete("lh:key_lease:990002:4")
    flatten = KeyLeaseHolder(store, ACCOUNT, "flatten")
    flatten.take()
    starting = KeyLeaseHolder(store, ACCOUNT, "worker")
    with pytest.raises(KeyBusy, match="held by flatten"):
        starting.take_waiting(over_roles=("worker",), timeout_s=0.6)
    released = threading.Timer(0.3, flatten.release, kwargs={"linger_ms": 1})
    released.start()
    t0 = time.monotonic()
    starting.take_waiting(over_roles=("worker",), timeout_s=5)
    assert time.monotonic() - t0 >= 0.25 and store.key_lease(990002, 4).owner == starting.lease.owner


def test_renew_and_release_touch_only_our_own_lease(store):
    ours = KeyLeaseHolder(store, ACCOUNT, "flatten", ttl_ms=5_000)
    ours.take()
    other = KeyLease("worker", "someone-else", now_ms())
    assert store.renew_key_lease(990002, 4, ours.lease, 5_000)
    store.r.set("lh:key_lease:990002:4", other.to_json(), px=5_000)   # it lapsed and a worker took it
    assert not store.renew_key_lease(990002, 4, ours.lease, 5_000)
    ours.release(linger_ms=1)
    assert store.key_lease(990002, 4) == other


def test_a_released_lease_lingers_for_the_venue_s_nonce_lag(store):
    ours = KeyLeaseHolder(store, ACCOUNT, "flatten")
    ours.take()
    ours.release(linger_ms=300)
    assert store.key_lease(990002, 4) is not None and 0 < store.r.pttl("lh:key_lease:990002:4") <= 300


def test_a_flatten_request_s_signature_is_its_own():
    from tasks.flatten_task import request_body, sign_request, verify_request
    from tasks.signing import MessageSigner, UnauthenticatedMessage
    signer = MessageSigner(b"k" * 32)
    body = request_body("B", "ETH", "r1", 123)
    auth = sign_request(signer, body)
    verify_request(signer, body, auth)
    for altered in (request_body("A", "ETH", "r1", 123), request_body("B", "BTC", "r1", 123),
                    request_body("B", "ETH", "r2", 123), request_body("B", "ETH", "r1", 124)):
        with pytest.raises(UnauthenticatedMessage):
            verify_request(signer, altered, auth)
    with pytest.raises(UnauthenticatedMessage):   # a hedge message's signature never passes for a flatten's
        verify_request(signer, body, signer.sign(body, "1796158500287-abcd"))
    with pytest.raises(UnauthenticatedMessage):
        verify_request(MessageSigner(b"x" * 32), body, auth)


def test_close_results_travel_as_json_and_say_who_sent():
    result = CloseResult("B", "ETH", "worker", True, Decimal("-0.0300"), Decimal("0"), 7, "filled", Decimal("0.0300"))
    assert CloseResult.from_message(result.to_message()) == result
    assert result.describe() == ("market=ETH close B via=worker before=-0.0300 after=0 client_order_index=7 "
                                 "status=filled filled=0.0300")
