"""Log-record filters every process installs: a line is one line, and no key reaches it.

* OneLine: a value that carries a newline (a fill id from a message, a venue's text) is written
  escaped, so it can never forge a second log line.
* RedactKeys: a last-resort mask for anything shaped like an API private key.
"""
from __future__ import annotations

import logging
import re

_KEY_SHAPE = re.compile(r"(0x)?[0-9a-fA-F]{80}")


class RedactKeys(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if _KEY_SHAPE.search(message):
            record.msg = _KEY_SHAPE.sub("<redacted>", message)
            record.args = ()
        return True


class OneLine(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if "\n" in message or "\r" in message:
            record.msg = message.replace("\r", "\\r").replace("\n", "\\n")
            record.args = ()
        return True


def install(handler: logging.Handler) -> None:
    for cls in (OneLine, RedactKeys):
        if not any(isinstance(f, cls) for f in handler.filters):
            handler.addFilter(cls())
