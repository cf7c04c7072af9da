"""One-line key=value logs (venue.log_filters: newlines escaped, anything shaped like an API
private key masked)."""
from __future__ import annotations

import logging
import sys

from venue import log_filters

FORMAT = "ts=%(asctime)s level=%(levelname)s logger=%(name)s %(message)s"


def setup(level: str = "INFO") -> None:
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(FORMAT))
    log_filters.install(handler)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    for noisy in ("websockets", "asyncio", "urllib3", "aiohttp"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
