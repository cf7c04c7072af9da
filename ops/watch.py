"""`lighter-hedge status --watch` on a terminal: one screen, redrawn in place.

`screen()` is pure: the rows `ops.status.collect` returned (the numbers `status` prints, no second
path) become at most `height` lines of at most `width` columns: a header, one aligned row per
market, a few lines of failed hedges and refused messages ("+N more"), and one `ACTION:` line
(ops.status.next_action). Each line is a list of segments (text, key); `paint()` marks the segments
whose value changed since the previous refresh (reverse video), and `Terminal` draws them on the
alternate screen and restores the terminal on exit.
"""
from __future__ import annotations

import shutil
import signal
import sys
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Callable, Hashable, TextIO

from ops.status import clip, next_action, one_line, short_age, short_reason

# A segment: its text, and (what it shows, the value compared with the previous refresh's), or
# None when never compared (padding, the clock). The value leaves out what ticks by itself (ages).
Key = tuple[Hashable, Hashable]
Segment = tuple[str, Key | None]
Line = list[Segment]

# The market table: (header, width, align). 78 columns with the separators: fits 80.
COLUMNS = (("MARKET", 6, "<"), ("STATE", 9, "<"), ("PAUSED", 14, "<"), ("A", 8, ">"), ("B", 8, ">"),
           ("NET", 8, ">"), ("INFL", 7, ">"), ("FAIL", 4, ">"), ("LAST", 6, ">"))
DETAIL_LINES = 4   # failed/refused lines shown at most (then "+N more")
ACTION_KEY = ("action",)
REVERSE, NORMAL, BOLD, NO_BOLD = "\x1b[7m", "\x1b[27m", "\x1b[1m", "\x1b[22m"

# The maker's states (maker/market_loop.py) in the STATE column's 9 characters.
_STATES = {"WAITING_FOR_WORKER": "no-worker", "QUOTING_OPEN": "quoting", "QUOTING_CLOSE": "closing",
           "HEDGING": "hedging", "STARTING": "starting", "FLAT": "flat", "LONG": "long", "PAUSED": "PAUSED"}


def number(value: Any, width: int) -> str:
    """A position in at most `width` columns: fewer decimals before scientific notation."""
    if not isinstance(value, Decimal):
        try:
            value = Decimal(str(value))
        except (InvalidOperation, ValueError):
            return clip(str(value), width)   # "unknown", "12 units"
    if value == 0:
        return "0"
    text = format(value.normalize(), "f")
    if len(text) <= width:
        return text
    if "." in text and text.index(".") <= width - 2:   # the integer part fits: round the decimals
        return format(value, f".{width - 1 - text.index('.')}f")
    return clip(f"{float(value):.2g}", width)


def latency(ms: Any) -> str:
    try:
        value = float(ms)
    except (TypeError, ValueError):
        return "-"
    return f"{value:.0f}ms" if value < 1000 else f"{value / 1000:.1f}s"


def inflight_cell(row: dict[str, Any]) -> tuple[str, str]:
    """In-flight hedges/age of the oldest, and the part compared between refreshes (the count)."""
    count = row.get("inflight_hedges") or 0
    return (f"{count}/{short_age(row.get('inflight_oldest_s'))}" if count else "0"), str(count)


def _cells(row: dict[str, Any]) -> list[tuple[str, str]]:
    """Each column's (text, value compared between refreshes)."""
    state = "PAUSED" if row.get("paused") else _STATES.get(str(row.get("state")), str(row.get("state")).lower())
    texts = [row["market"], state, short_reason(row.get("pause_reason"), COLUMNS[2][1]) or "-",
             number(row.get("a_position"), 8), number(row.get("b_position"), 8), number(row.get("net_exposure"), 8),
             None, str(row.get("failed", 0)), latency(row.get("last_fill_to_confirmed_ms"))]
    return [inflight_cell(row) if text is None else (text, text) for text in texts]


def _table_line(cells: list[str], keys: list[Key | None]) -> Line:
    line: Line = []
    for i, ((_, width, align), text, key) in enumerate(zip(COLUMNS, cells, keys)):
        text = clip(text, width)
        pad = " " * (width - len(text))
        sep = " " if i else ""
        if align == "<":
            line += [(sep, None), (text, key), (pad, None)]
        else:
            line += [(sep + pad, None), (text, key)]
    return line


def _severity(row: dict[str, Any]) -> int:
    return 3 if row.get("failed") else 2 if row.get("paused") else 1 if row.get("inflight_hedges") else 0


def _details(rows: list[dict[str, Any]], now_ms: int, width: int) -> list[Line]:
    """Failed hedges (oldest first), then refused messages: one line each."""
    lines: list[Line] = []
    failed = sorted(((task_id, info) for r in rows for task_id, info in (r.get("failed_hedges") or {}).items()),
                    key=lambda item: (item[1].get("ts_ms") or 0, item[0]))
    for task_id, info in failed:
        age = short_age((now_ms - info["ts_ms"]) / 1000) if info.get("ts_ms") else "?"
        reason = one_line(info.get("reason") or "-")
        lines.append([(clip(f"failed  {task_id} {age} ago: {reason}", width), (("failed", task_id), reason))])
    refused = (rows[0].get("refused_messages") or {}) if rows else {}
    for task_id, info in sorted(refused.items(), key=lambda item: (item[1].get("ts_ms") or 0, item[0])):
        text = f"refused {task_id} market={info.get('market') or 'unknown'}: {one_line(info.get('reason') or '-')}"
        lines.append([(clip(text, width), (("refused", task_id), text))])
    return lines


def _header(rows: list[dict[str, Any]], clock: str, interval: float) -> str:
    first = rows[0] if rows else {}
    worker = "up" if first.get("worker_alive", True) else "DOWN"
    budget = first.get("budget") or {}
    used = "error" if "error" in budget or not budget else \
        f"{budget.get('used')}/{'none' if budget.get('limit') is None else budget.get('limit')}"
    return f"lighter-hedge status  {clock}  every {interval:g}s  worker {worker}  budget {used}"


def screen(rows: list[dict[str, Any]], *, clock: str, interval: float, now_ms: int,
           width: int = 80, height: int = 24) -> list[Line]:
    """One refresh as at most `height` lines of at most `width` columns (a terminal is taken as
    at least 20x2); the ACTION line last."""
    width, height = max(width, 20), max(height, 2)
    header: Line = [(clip(_header(rows, clock, interval), width), None)]
    action_text = next_action(rows, width)
    action: Line = [(action_text, (ACTION_KEY, action_text))]
    notes: list[Line] = []
    error = rows[0].get("venue_error") if rows else None
    if error:
        text = clip(f"venue: {one_line(error)}", width)
        notes.append([(text, (("venue",), text))])
    room = height - 2 - len(notes)   # below the header, above the ACTION line
    if room < 2:   # a tiny terminal: the header and what to do
        return [header, action]
    details = _details(rows, now_ms, width)
    if len(details) > DETAIL_LINES + 1:
        more = len(details) - DETAIL_LINES
        details = details[:DETAIL_LINES] + [[(f"  +{more} more (`lighter-hedge status` lists all)",
                                               (("more",), more))]]
    # The table keeps at least its header and one market row: details give way first.
    details = details[:max(0, room - 2)] if len(details) > room - 2 else details
    market_room = room - 1 - len(details)
    shown = rows
    hidden = 0
    if len(rows) > market_room:
        # Markets with something wrong first; the rest are counted on the last line.
        shown = sorted(rows, key=_severity, reverse=True)[:max(0, market_room - 1)]
        hidden = len(rows) - len(shown)
    names = [name for name, _, _ in COLUMNS]
    table: list[Line] = [[(clip(plain([_table_line(names, [None] * len(names))])[0], width), None)]]
    for row in shown:
        cells = _cells(row)
        table.append(_table_line([text for text, _ in cells],
                                 [((row["market"], name), value) for name, (_, value) in zip(names, cells)]))
    if hidden:
        well = sum(1 for r in rows if r not in shown and not _severity(r))
        table.append([(clip(f"+{hidden} more markets ({well} all well)", width), (("hidden",), (hidden, well)))])
    # A terminal narrower than the table: every line cut at its edge.
    return [fit(line, width) for line in (header, *table, *details, *notes, action)]


def fit(line: Line, width: int) -> Line:
    """`line` cut to `width` columns, segment by segment."""
    out: Line = []
    left = width
    for text, key in line:
        if left <= 0:
            break
        out.append((text[:left], key))
        left -= len(text[:left])
    return out


def plain(lines: list[Line]) -> list[str]:
    return ["".join(text for text, _ in line) for line in lines]




def paint(lines: list[Line], previous: dict[Hashable, Hashable] | None,
          ) -> tuple[list[str], dict[Hashable, Hashable]]:
    """ANSI lines: a segment whose value differs from the previous refresh's (or is new) in reverse
    video; the ACTION line bold. No highlight on the first refresh (previous is None). Returns the
    values to compare the next refresh with."""
    out: list[str] = []
    values: dict[Hashable, Hashable] = {}
    for line in lines:
        parts = []
        for text, key in line:
            changed = False
            if key is not None:
                what, value = key
                values[what] = value
                changed = previous is not None and previous.get(what) != value and bool(text.strip())
            parts.append(f"{REVERSE}{text}{NORMAL}" if changed else text)
        painted = "".join(parts)
        if line and line[-1][1] is not None and line[-1][1][0] == ACTION_KEY:
            painted = f"{BOLD}{painted}{NO_BOLD}"
        out.append(painted)
    return out, values


class Terminal:
    """The alternate screen with the cursor hidden while watching; restored on any exit (Ctrl-C,
    SIGTERM, --count reached, an error), then the last refresh printed plainly so it stays."""

    def __init__(self, out: TextIO) -> None:
        self.out = out
        self.last: list[str] = []

    def __enter__(self) -> "Terminal":
        self.out.write("\x1b[?1049h\x1b[?25l")
        self.out.flush()
        return self

    def draw(self, painted: list[str], plain_lines: list[str]) -> None:
        # Each line erased then written at its row, never a newline after the last: a screen that
        # fills the terminal cannot scroll it. (Erasing after a full-width line could eat its last
        # column in terminals that defer the wrap, so the erase comes first.)
        parts = [f"\x1b[{i};1H\x1b[2K{line}" for i, line in enumerate(painted, 1)]
        parts.append(f"\x1b[{len(painted) + 1};1H\x1b[J" if painted else "\x1b[2J")
        self.out.write("".join(parts))
        self.out.flush()
        self.last = plain_lines

    def __exit__(self, *exc: object) -> None:
        self.out.write("\x1b[0m\x1b[?25h\x1b[?1049l")
        if self.last:
            self.out.write("\n".join(self.last) + "\n")
        self.out.flush()


def run(fetch: Callable[[], list[dict[str, Any]]], interval: float, count: int = 0,
        out: TextIO = sys.stdout) -> None:
    """Refresh until Ctrl-C (or `count` refreshes): fetch the rows, draw the screen, sleep."""
    stopping = False

    def interrupt(_signum: int, _frame: object) -> None:
        # Our own Ctrl-C handler, so asyncio.run (inside fetch) installs none of its own: that one
        # only cancels the running task, which the code under it could absorb. The flag ends the
        # loop even if something swallows the KeyboardInterrupt.
        nonlocal stopping
        stopping = True
        raise KeyboardInterrupt

    def terminate(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        raise SystemExit(128 + signum)   # through Terminal.__exit__: the terminal is restored

    previous_int = signal.signal(signal.SIGINT, interrupt)
    previous_term = signal.signal(signal.SIGTERM, terminate)
    previous: dict[Hashable, Hashable] | None = None
    shown = 0
    try:
        with Terminal(out) as term:
            while not stopping:
                rows = fetch()
                if stopping:
                    return
                # Read every refresh: a resized terminal gets a screen of its new size.
                size = shutil.get_terminal_size((80, 24))
                lines = screen(rows, clock=time.strftime("%H:%M:%S"), interval=interval,
                               now_ms=int(time.time() * 1000), width=size.columns, height=size.lines)
                painted, previous = paint(lines, previous)
                term.draw(painted, plain(lines))
                shown += 1
                if count and shown >= count:
                    return
                time.sleep(interval)
    except KeyboardInterrupt:
        pass
    finally:
        signal.signal(signal.SIGINT, previous_int)
        signal.signal(signal.SIGTERM, previous_term)
