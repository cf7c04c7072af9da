"""Per-process resources of the worker: one event loop, one B client, one Redis store.

Created lazily in the process that runs tasks (the solo pool's only process), never in a
parent that forks: the Go signer hangs after fork(). Kept alive across tasks so a hedge
pays no client creation, no new HTTP session and no nonce fetch.
"""
from __future__ import annotations

import asyncio
from typing import Awaitable, Callable, TypeVar

from hedge.config import Config
from ops.settings import load_config
from tasks.store import Store
from venue.client import VenueClient
from venue.keys import private_key

T = TypeVar("T")

_loop: asyncio.AbstractEventLoop | None = None
_client: VenueClient | None = None
_store: Store | None = None
_config: Config | None = None


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
                                         chain_id=cfg.chain_id)
    return _client


def shutdown() -> None:
    global _client
    if _client is not None and _loop is not None and not _loop.is_closed():
        _loop.run_until_complete(_client.close())
    _client = None
