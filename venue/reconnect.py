"""The reconnect loop every WebSocket listener here shares: run a session until it ends, log why,
back off (exponential, full jitter), go again - until cancelled. Never dies silently."""
from __future__ import annotations

import asyncio
import logging
import random
from typing import Awaitable, Callable


async def reconnecting(session: Callable[[], Awaitable[None]], *, log: logging.Logger, event: str,
                       account: int, rng: random.Random, backoff_base_s: float, backoff_cap_s: float,
                       describe: Callable[[BaseException], str],
                       on_drop: Callable[[], Awaitable[None]] | None = None) -> None:
    """`event` is logged as `event=<event> account=… error=… failures=…` on every drop."""
    failures = 0
    while True:
        try:
            await session()
            failures = 0
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # any drop or refusal: log it, back off, reconnect
            failures += 1
            log.warning("event=%s account=%s error=%s failures=%d", event, account, describe(exc), failures)
        if on_drop is not None:
            await on_drop()
        await asyncio.sleep(rng.uniform(0, min(backoff_cap_s, backoff_base_s * 2 ** min(failures, 10))))
