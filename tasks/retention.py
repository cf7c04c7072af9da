"""The ledger's history out of Redis, on a retention rule (config `ledger:`).

Fill records whose hedge succeeded, and closed hedge legs, older than `ledger.retention_s` are
appended to a JSON-lines archive (`ledger.archive_path`) and then removed from Redis in bounded
batches by Store.prune_fills / prune_legs, which check again atomically what may go. Nothing the
ledger's guarantees rest on leaves Redis: the totals (a_filled, hedged, leg_seq, counters), open
legs, fills whose hedge is in flight, failed or refused. A replayed fill is still refused: each
market keeps the highest fill id moved out, and every id at or below it counts as recorded (trade
ids only grow), which is why a fill goes only once it is older than the retention bound: a trade of A
the stream never delivered within that time would be taken for a replay.

The archive is written (and fsynced) before Redis forgets: a crash in between archives a record
twice, never loses one. Lines: {"kind": "fill"|"leg", "market", "id", "archived_ms", "record"}.

The maker runs it every `ledger.prune_interval_s` (run_retention), off its event loop.
"""
from __future__ import annotations

import asyncio
import json
import logging
import os
import time
from dataclasses import dataclass
from typing import Any, Callable

from hedge.config import LedgerConfig
from hedge.leg import Leg
from tasks.store import Store, is_trade_id, now_ms

log = logging.getLogger("tasks.retention")
SCAN_COUNT = 500              # entries per HSCAN page and per prune script call (Redis stays responsive)
MAX_SCANNED_PER_PASS = 100_000  # per market and kind: one pass never runs unbounded
ARCHIVE_MODE = 0o640          # like the logs it sits with


class ArchiveError(OSError):
    """The archive could not be written: nothing is removed from Redis."""


@dataclass(frozen=True)
class RetentionPass:
    market: str
    fills: int       # fill records (with their hedged-fill markers) moved out
    legs: int        # closed legs moved out
    markers: int     # markers of fills moved out earlier, dropped (a re-run marked them again)
    seconds: float


class LedgerRetention:
    def __init__(self, store: Store, markets: list[str], cfg: LedgerConfig,
                 clock_ms: Callable[[], int] = now_ms):
        self.store = store
        self.markets = list(markets)
        self.cfg = cfg
        self.clock_ms = clock_ms
        # Where a pass stopped at MAX_SCANNED_PER_PASS, per (market, kind): the next one goes on from there.
        self._cursors: dict[tuple[str, str], int] = {}

    def run_once(self) -> list[RetentionPass]:
        """One pass over every market (blocking: Redis and the archive file)."""
        out = []
        for market in self.markets:
            t0 = time.perf_counter()
            older_than_ms = self.clock_ms() - int(self.cfg.retention_s * 1000)
            fills = self._fills(market, older_than_ms)
            legs = self._legs(market, older_than_ms)
            markers = self._markers(market)
            done = RetentionPass(market, fills, legs, markers, time.perf_counter() - t0)
            if fills or legs or markers:
                log.info("event=ledger.pruned market=%s fills=%d legs=%d markers=%d seconds=%.3f archive=%s",
                         market, fills, legs, markers, done.seconds, self.cfg.archive_path)
            out.append(done)
        return out

    def _fills(self, market: str, older_than_ms: int) -> int:
        removed, scanned, cursor = 0, 0, self._cursors.pop((market, "fills"), 0)
        while True:
            cursor, page = self.store.scan_fills(market, cursor, SCAN_COUNT)
            scanned += len(page)
            old = {}
            for fill_id, body in page.items():
                seen_ms = _fill_ms(body) if is_trade_id(fill_id) else None
                if seen_ms is not None and seen_ms < older_than_ms:
                    old[fill_id] = body
            finished = self.store.finished_fills(market, sorted(old))
            if finished:
                self._archive([_line("fill", market, fill_id, old[fill_id], hedged=True) for fill_id in finished])
                removed += len(self.store.prune_fills(market, finished))
            if cursor == 0 or scanned >= MAX_SCANNED_PER_PASS:
                self._cursors[(market, "fills")] = cursor
                return removed

    def _legs(self, market: str, older_than_ms: int) -> int:
        removed, scanned, cursor = 0, 0, self._cursors.pop((market, "legs"), 0)
        while True:
            cursor, page = self.store.scan_legs(market, cursor, SCAN_COUNT)
            scanned += len(page)
            closed = {}
            for number, body in page.items():
                try:
                    leg = Leg.from_json(body)
                except (ValueError, KeyError, TypeError):
                    continue   # not a record this code wrote: left for a person to look at
                if not leg.state.open and max(leg.written_ms, leg.sent_ms or 0) < older_than_ms:
                    closed[number] = body
            if closed:
                self._archive([_line("leg", market, number, body) for number, body in closed.items()])
                removed += self.store.prune_legs(market, [int(n) for n in closed])
            if cursor == 0 or scanned >= MAX_SCANNED_PER_PASS:
                self._cursors[(market, "legs")] = cursor
                return removed

    def _markers(self, market: str) -> int:
        below = self.store.pruned(market).below
        if below is None:
            return 0
        removed, scanned, cursor = 0, 0, self._cursors.pop((market, "markers"), 0)
        while True:
            cursor, page = self.store.scan_hedged_markers(market, cursor, SCAN_COUNT)
            scanned += len(page)
            stale = [fill_id for fill_id in page if is_trade_id(fill_id) and int(fill_id) <= below]
            removed += self.store.prune_markers(market, stale)
            if cursor == 0 or scanned >= MAX_SCANNED_PER_PASS:
                self._cursors[(market, "markers")] = cursor
                return removed

    def _archive(self, lines: list[str]) -> None:
        """Append and fsync before anything is removed from Redis."""
        path = self.cfg.archive_path
        try:
            os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
            fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, ARCHIVE_MODE)
            try:
                os.write(fd, "".join(line + "\n" for line in lines).encode())
                os.fsync(fd)
            finally:
                os.close(fd)
        except OSError as exc:
            raise ArchiveError(f"cannot append to the ledger archive {path}: {exc.strerror or exc}") from exc


def _fill_ms(body: str) -> int | None:
    """When the fill was seen (its exchange time if it carries no other), or None if unreadable."""
    try:
        msg = json.loads(body)
        value = msg.get("ts_seen_ms") or msg.get("ts_exchange_ms")
        return int(value) if value is not None else None
    except (ValueError, TypeError, AttributeError):
        return None


def _line(kind: str, market: str, record_id: str, body: str, **extra: Any) -> str:
    try:
        record: Any = json.loads(body)
    except ValueError:
        record = body
    return json.dumps({"kind": kind, "market": market, "id": record_id, "archived_ms": now_ms(), **extra,
                       "record": record}, separators=(",", ":"))


async def run_retention(retention: LedgerRetention, interval_s: float) -> None:
    """Every `interval_s`, one pass in a thread (the maker's event loop keeps its fills moving). An
    error is logged and the next pass tries again: pruning is never urgent."""
    while True:
        await asyncio.sleep(interval_s)
        try:
            await asyncio.to_thread(retention.run_once)
        except Exception as exc:  # noqa: BLE001 - Redis or disk trouble: history waits, trading goes on
            log.error("event=ledger.prune_failed error=%s", f"{type(exc).__name__}: {exc}"[:500])
