"""Per-process resources of the worker: one event loop, one B client, one Redis store.

Created lazily in the process that runs tasks (the solo pool's only process), never in a
parent that forks: the Go signer hangs after fork(). Kept alive across tasks so a hedge
pays no client creation, no new HTTP session and no nonce fetch.

B's order stream (venue.feed, `account_all_orders/B`) lives on the same loop: a hedge learns its
order's final state from it instead of polling REST. The loop runs while a task runs, so frames
that arrive between tasks are read at the next one; if the venue closed the idle connection
meanwhile, the feed reconnects and the hedge falls back to one REST lookup.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from hedge.config import Config
from ops.settings import load_config
from tasks.signing import MessageSigner
from tasks.store import Store
from venue.budget import budget_from_config
from venue.client import VenueClient
from venue.feed import VenueFeed
from venue.keys import private_key, task_signing_key

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_client: VenueClient | None = None
_feed: VenueFeed | None = None
_feed_task: asyncio.Task | None = None
_store: Store | None = None
_config: Config | None = None
_signer: MessageSigner | None = None


def config() -> Config:
    global _config
    if _config is None:
        _config = load_config()
    return _config


def store() -> Store:
    global _store
    if _store is None:
        _store = Store.from_url(config().redis_url)
    return _store


def signer() -> MessageSigner:
    """Checks the maker's signature on each hedge message (and signs the worker's own recovery tasks)."""
    global _signer
    if _signer is None:
        _signer = MessageSigner(task_signing_key(config()))
    return _signer


def run(make: Callable[[], Awaitable[T]]) -> T:
    global _loop
    if _loop is None or _loop.is_closed():
        _loop = asyncio.new_event_loop()
        asyncio.set_event_loop(_loop)
    return _loop.run_until_complete(make())


async def client() -> VenueClient:
    global _client
    if _client is None:
        cfg = config()
        _client = await VenueClient.open(cfg.base_url, cfg.account_b, private_key(cfg, cfg.account_b),
                                         chain_id=cfg.chain_id, budget=budget_from_config(cfg, store().r),
                                         process="worker")
    return _client


def venue_client() -> VenueClient | None:
    """B's client if it was created (the warm-up creates it)."""
    return _client


async def feed() -> VenueFeed:
    """B's order stream, started on first use (the warm-up)."""
    global _feed, _feed_task
    if _feed is None:
        cfg, venue = config(), await client()
        _feed = VenueFeed(cfg.ws_url, cfg.account_b.account_index, venue.auth_token)
    if _feed_task is None or _feed_task.done():
        _feed_task = asyncio.get_running_loop().create_task(_feed.run(), name="feed-b")
    return _feed


def shutdown() -> None:
    global _client, _feed, _feed_task
    if _loop is not None and not _loop.is_closed():
        if _feed_task is not None:
            _feed_task.cancel()
            _loop.run_until_complete(asyncio.gather(_feed_task, return_exceptions=True))
        if _client is not None:
            _loop.run_until_complete(_client.close())
    _client, _feed, _feed_task = None, None, None
