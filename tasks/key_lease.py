"""One sender per API key: the lease a process holds on its account's key while it may sign.

Lighter's nonces are per (account, API key) and sequential, and each process keeps its next nonce
locally: two processes signing with one key refuse each other's txs ("invalid nonce", 21104),
which leaves closes half-done and legs in doubt. So whoever sends on a key holds its lease in
Redis (`lh:key_lease:<account>:<api_key_index>`, Store.take_key_lease): the maker on A's key, the
worker on B's, and `lighter-hedge flatten` on a key only while neither holds it.

A maker or worker that starts while a flatten holds its key waits until the flatten is done; one
that finds a lease of its own role (its previous self, killed before the lease expired) takes it
over at once, so a restart is not slowed. A flatten never waits for nor takes over a maker's or
worker's lease: it asks that process to send for it (ops/flatten.py).

A daemon thread renews the lease (a long hedge in the worker's main thread is no gap); it lives
LEASE_TTL_MS past the last renewal. Released, it lingers NONCE_LAG_MS: the venue's nextNonce shows
our last tx only after a lag, and the next holder starts from what nextNonce shows.
"""
from __future__ import annotations

import logging
import os
import secrets
import socket
import threading
import time

from hedge.config import AccountConfig
from tasks.store import KeyLease, Store, now_ms

log = logging.getLogger("tasks.key_lease")

LEASE_TTL_MS = 10_000     # a holder killed -9 blocks a flatten at most this long
RENEW_INTERVAL_S = 2.0
WAIT_POLL_S = 0.25        # a starting maker/worker looks this often whether the flatten is done
NONCE_LAG_MS = 1_000      # Lighter's nextNonce shows a taken tx only later (the SDK waits 350 ms)


class KeyBusy(Exception):
    """The key's lease is held by another sender."""

    def __init__(self, account: AccountConfig, holder: KeyLease):
        super().__init__(f"{account.name} key {account.account_index}:{account.api_key_index} is held by "
                         f"{holder.role} ({holder.owner})")
        self.holder = holder


class KeyLeaseHolder:
    """This process's lease on one account's API key."""

    def __init__(self, store: Store, account: AccountConfig, role: str, ttl_ms: int = LEASE_TTL_MS):
        self.store = store
        self.account = account
        self.ttl_ms = ttl_ms
        self.lease = KeyLease(role, f"{role}:{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}", now_ms())
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def _ids(self) -> tuple[int, int]:
        return self.account.account_index, self.account.api_key_index

    def take(self, over_roles: tuple[str, ...] = ()) -> None:
        """Take the lease now or raise KeyBusy (flatten: it never waits beside a running sender)."""
        holder = self.store.take_key_lease(*self._ids, self.lease, self.ttl_ms, over_roles)
        if holder is not None:
            raise KeyBusy(self.account, holder)
        log.info("event=key_lease.taken account=%d api_key_index=%d role=%s", *self._ids, self.lease.role)

    def take_waiting(self, over_roles: tuple[str, ...], timeout_s: float | None = None) -> None:
        """Take the lease, waiting while another role (a flatten) holds it; KeyBusy after `timeout_s`."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        waited_on: str | None = None
        while True:
            holder = self.store.take_key_lease(*self._ids, self.lease, self.ttl_ms, over_roles)
            if holder is None:
                log.info("event=key_lease.taken account=%d api_key_index=%d role=%s waited=%s", *self._ids,
                         self.lease.role, "true" if waited_on else "false")
                return
            if holder.owner != waited_on:
                waited_on = holder.owner
                # Once per holder: a process that waits to start is worth an operator's look.
                log.warning("event=key_lease.waiting account=%d api_key_index=%d role=%s holder_role=%s holder=%s "
                            "(nothing is sent on this key until it is released)", *self._ids, self.lease.role,
                            holder.role, holder.owner)
            if deadline is not None and time.monotonic() > deadline:
                raise KeyBusy(self.account, holder)
            time.sleep(WAIT_POLL_S)

    def start_renewing(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._renew, name=f"key-lease-{self.account.name}", daemon=True)
            self._thread.start()

    def release(self, linger_ms: int = NONCE_LAG_MS) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)
        try:
            self.store.release_key_lease(*self._ids, self.lease, linger_ms)
            log.info("event=key_lease.released account=%d api_key_index=%d role=%s linger_ms=%d", *self._ids,
                     self.lease.role, linger_ms)
        except Exception as exc:  # noqa: BLE001 - the lease expires by its TTL anyway
            log.warning("event=key_lease.release_failed account=%d error=%s", self._ids[0],
                        f"{type(exc).__name__}: {exc}")

    def _renew(self) -> None:
        trouble: str | None = None   # what was last said about this lease (said once, not every beat)
        while not self._stop.wait(RENEW_INTERVAL_S):
            try:
                if self.store.renew_key_lease(*self._ids, self.lease, self.ttl_ms):
                    seen = None
                else:
                    # Expired (Redis lost its data, or this process stood still past the TTL): take
                    # it again if free; if another sender has it, say so loudly.
                    holder = self.store.take_key_lease(*self._ids, self.lease, self.ttl_ms)
                    seen = None if holder is None else f"lost to {holder.owner}"
                    if holder is not None and seen != trouble:
                        log.error("event=key_lease.lost account=%d api_key_index=%d role=%s holder_role=%s "
                                  "holder=%s", *self._ids, self.lease.role, holder.role, holder.owner)
            except Exception as exc:  # Redis away: keep trying
                seen = type(exc).__name__
                if seen != trouble:
                    log.warning("event=key_lease.renew_failed account=%d error=%s", self._ids[0],
                                f"{type(exc).__name__}: {exc}")
            trouble = seen
