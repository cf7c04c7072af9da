"""The console's pure core: what the page shows, from the rows `ops.status.collect` returned (the
numbers `status` prints, no second path), and the checks every request passes. No I/O here: the
aiohttp shell is ops/console.py, the page's script (ops/console_static/console.js) only puts these
texts into the page.

Money and sizes are decimal strings in the JSON, never floats.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import time
from decimal import Decimal, InvalidOperation
from typing import Any, Mapping

from hedge.budget import RateLimit
from hedge.config import MAX_SLIPPAGE_BPS
from ops.status import next_action, one_line, short_age

CSRF_HEADER = "X-Requested-With"
CSRF_VALUE = "lighter-hedge-console"   # a custom header: a cross-site page cannot send it without CORS
REALM = "lighter-hedge console"
HEDGE_QUEUE = "hedge.b"
# The venue reads of one refresh (A's and B's positions) use at most this share of the request budget.
VENUE_SHARE = Decimal("0.1")
MIN_VENUE_REFRESH_S = 1.0

# The maker's states (maker/market_loop.py) in words.
_STATE_PHRASES = {
    "QUOTING_OPEN": "A quotes an opening order",
    "QUOTING_CLOSE": "A quotes a closing order",
    "HEDGING": "A waits for the hedges of its last order",
    "WAITING_FOR_WORKER": "A waits for a worker to consume hedge.b",
    "STARTING": "the maker is starting",
    "FLAT": "A is flat, about to quote",
    "LONG": "A is long, about to quote its close",
}


class InputError(ValueError):
    """A request the console refuses before calling anything; str() says what is expected."""


# ---- numbers -----------------------------------------------------------------------------------------

def amount(value: Any) -> str:
    """A position or price as the decimal string `status` prints ("0" for zero; "unknown" as is)."""
    if isinstance(value, Decimal):
        return "0" if value == 0 else str(value)
    if value is None:
        return "-"
    try:
        number = Decimal(str(value))
    except InvalidOperation:
        return str(value)
    return "0" if number == 0 else str(value)


def parse_bps(text: Any) -> int | None:
    """The optional max slippage of a requeue: empty = the configured one, else whole basis points
    1..MAX_SLIPPAGE_BPS (the bound config.yaml has)."""
    if text is None or (isinstance(text, str) and not text.strip()):
        return None
    if isinstance(text, bool) or isinstance(text, float):
        raise InputError(f"max_slippage_bps: expected whole basis points 1..{MAX_SLIPPAGE_BPS}, got {text!r}")
    raw = str(text).strip()
    if not raw.isdigit():
        raise InputError(f"max_slippage_bps: expected whole basis points 1..{MAX_SLIPPAGE_BPS}, got {raw[:20]!r}")
    bps = int(raw)
    if not 1 <= bps <= MAX_SLIPPAGE_BPS:
        raise InputError(f"max_slippage_bps: expected 1..{MAX_SLIPPAGE_BPS} (10 %), got {bps}")
    return bps


def venue_refresh_s(limit: RateLimit, share: Decimal = VENUE_SHARE) -> float:
    """How often the console reads A's and B's positions: their two account reads use at most
    `share` of the request budget A and B share (Standard: every 20 s; no limit: every second).
    After each action it reads them at once."""
    if limit.limit is None:
        return MIN_VENUE_REFRESH_S
    cost = Decimal(2 * limit.cost("account"))
    seconds = Decimal(limit.window_ms) / 1000 * cost / (Decimal(limit.limit) * share)
    return max(MIN_VENUE_REFRESH_S, float(seconds))


# ---- the page's view ----------------------------------------------------------------------------------

def state_sentence(row: Mapping[str, Any]) -> str:
    """The market's state in one sentence: running or paused, and why."""
    market = row["market"]
    failed = len(row.get("failed_hedges") or {})
    inflight = row.get("inflight_hedges") or 0
    if row.get("paused"):
        reason = one_line(row.get("pause_reason") or "no reason recorded").rstrip(".")
        if failed:
            then = f"requeue its {failed} failed hedge(s), then resume"
        elif inflight:
            then = f"{inflight} hedge(s) still in flight; resume once they finish"
        else:
            then = "Resume lets A trade again"
        return f"{market} is paused ({reason}): {then}."
    state = str(row.get("state") or "unknown")
    acknowledged = (f"; {failed} failed hedge(s) acknowledged, A stays exposed until they are requeued"
                    if failed else "")
    if state in ("unknown", "STOPPED"):
        return f"{market} is not paused, but the maker reports no state (is it running?){acknowledged}."
    return f"{market} is running: {_STATE_PHRASES.get(state, f'state {state}')}{acknowledged}."


def failed_view(task_id: str, info: Mapping[str, Any], attempts: int | None) -> dict[str, Any]:
    """One failed hedge as a row: A's fill (id, side, size, price), why it failed, how often it was tried.
    Only these fields: the record's signature (`auth`) never reaches the page."""
    fill = info.get("fill") if isinstance(info.get("fill"), Mapping) else {}
    side = str(fill.get("side") or "?")
    b_side = {"buy": "sell", "sell": "buy"}.get(side, "?")
    ts = info.get("ts_ms")
    return {
        "task_id": task_id,
        "fill_id": str(info.get("fill_id") or fill.get("fill_id") or "?"),
        "side": side,
        "b_side": b_side,
        "size": amount(fill.get("base_amount")),
        "price": amount(fill.get("price")),
        "reason": one_line(info.get("reason") or ""),
        "attempts": "?" if attempts is None else str(attempts),
        "failed_at": time.strftime("%H:%M:%S", time.localtime(ts / 1000)) if isinstance(ts, (int, float)) else "?",
    }


def resume_view(row: Mapping[str, Any]) -> dict[str, Any]:
    """Resume is offered while the market is paused and none of its hedges has failed."""
    failed = len(row.get("failed_hedges") or {})
    if failed:
        return {"enabled": False, "why": f"{failed} failed hedge(s): requeue first"}
    if not row.get("paused"):
        return {"enabled": False, "why": "not paused"}
    return {"enabled": True, "why": ""}


def market_view(row: Mapping[str, Any], inflight_ages: Mapping[str, float | None],
                attempts: Mapping[str, int | None], flatten_question: str, default_bps: Decimal) -> dict[str, Any]:
    failed = row.get("failed_hedges") or {}
    return {
        "market": row["market"],
        "paused": bool(row.get("paused")),
        "state": "PAUSED" if row.get("paused") else str(row.get("state") or "unknown"),
        "sentence": state_sentence(row),
        "a_position": amount(row.get("a_position")),
        "b_position": amount(row.get("b_position")),
        "net_exposure": amount(row.get("net_exposure")),
        "unhedged": amount(row.get("unhedged")),
        "legs_in_doubt": int(row.get("legs_in_doubt") or 0),
        "inflight": [{"task_id": task_id, "age": short_age(age)}
                     for task_id, age in sorted(inflight_ages.items(), key=lambda kv: -(kv[1] or 0))],
        "failed": [failed_view(task_id, info, attempts.get(task_id)) for task_id, info in sorted(failed.items())],
        "resume": resume_view(row),
        "flatten_question": flatten_question,
        "default_max_slippage_bps": amount(default_bps),
        "hedges": int(row.get("hedges") or 0),
        "fills": int(row.get("fills") or 0),
    }


def budget_text(view: Mapping[str, Any]) -> str:
    """The request budget A and B share, in words (ops.status.budget_view)."""
    if "error" in view:
        return f"unreadable: {view['error']}"
    window = f"{view.get('window_ms', 60_000) / 1000:g} s"
    unit = view.get("unit", "requests")
    if view.get("limit") is None:
        text = f"{view.get('used', 0)} {unit} used in the rolling {window} (tier {view.get('tier')}: no limit)"
    else:
        text = (f"{view.get('used', 0)} / {view['limit']} {unit} used in the rolling {window} "
                f"(tier {view.get('tier')}, {view.get('hedge_reserve')} kept for hedges)")
    text += f", {view.get('http_429', 0)} HTTP 429"
    if view.get("backoff_left_ms"):
        text += f", backing off {view['backoff_left_ms']} ms"
    return text


def consumer_view(heartbeat: bool, listed: bool | None) -> dict[str, Any]:
    """Whether a worker consumes hedge.b: its heartbeat, and Celery's inspect when it answered."""
    if not heartbeat:
        return {"present": False, "text": "no worker: no heartbeat in Redis"}
    if listed is False:
        return {"present": False, "text": "a worker beats but inspect lists no consumer of hedge.b"}
    return {"present": True, "text": "a worker consumes hedge.b" + (" (heartbeat; inspect not answered yet)"
                                                                    if listed is None else "")}


def page_view(rows: list[Mapping[str, Any]], markets: list[dict[str, Any]], *, mode: str, queue_length: int | None,
              consumer_listed: bool | None, venue_read_at: float | None, venue_every_s: float,
              now: float) -> dict[str, Any]:
    """Everything the page shows; `markets` from market_view, one per row."""
    first = rows[0] if rows else {}
    venue_error = first.get("venue_error")
    if venue_read_at is None:
        venue = "positions not read yet"
    else:
        venue = (f"positions read at {time.strftime('%H:%M:%S', time.localtime(venue_read_at))} "
                 f"({short_age(max(0.0, now - venue_read_at))} ago; every {venue_every_s:g} s and after each action)")
    return {
        "generated_at": time.strftime("%H:%M:%S", time.localtime(now)),
        "mode": mode,
        "action": next_action(list(rows), width=200),
        "queue": {"name": HEDGE_QUEUE, "length": "?" if queue_length is None else str(queue_length),
                  **consumer_view(bool(first.get("worker_alive")), consumer_listed)},
        "budget": budget_text(first.get("budget") or {"error": "not read"}),
        "venue": venue,
        "venue_error": one_line(venue_error) if venue_error else "",
        "markets": markets,
    }


def bps_from(price: Decimal, reference: Decimal) -> Decimal:
    """How far `price` is from `reference`, in signed basis points (0.01)."""
    return ((price - reference) / reference * 10_000).quantize(Decimal("0.01"))


def preview_view(preview: Any) -> dict[str, Any]:
    """ops.requeue.preview's answer (ops.requeue.RequeuePreview) for the page, before anything is sent:
    B's order, its worst price and how far that is from A's fill, and where the book is. Without an
    operator's bound the worst price is A's fill +- strategy.max_slippage_bps: a book beyond it would
    fail again; with one it is the book's best price +- that bound."""
    side, size, fill = preview.b_side, preview.size, preview.a_fill_price
    book, worst = preview.book_price, preview.worst_price
    origin = "the book" if preview.from_book else "A's fill"
    text = (f"B {side}s {amount(size)} {preview.market} at worst {amount(worst)}, "
            f"{_signed(preview.distance_bps)} bps from A's fill at {amount(fill)} "
            f"(max_slippage_bps={amount(preview.max_slippage_bps)} from {origin}); ")
    fills: bool | None = None
    if book is None:
        text += f"no {'bid' if side == 'sell' else 'ask'} read from the book now."
    else:
        fills = book >= worst if side == "sell" else book <= worst
        text += (f"best {'bid' if side == 'sell' else 'ask'} {amount(book)}, {_signed(bps_from(book, fill))} bps "
                 f"from A's fill: " + ("it should fill." if fills else
                                       "beyond the worst price, it would fail again; give a wider max slippage."))
    if size == 0:
        text += " Nothing is unhedged now: the re-run sends nothing."
    return {"task_id": preview.task_id, "market": preview.market, "b_side": side, "size": amount(size),
            "a_fill_price": amount(fill), "book_price": amount(book), "worst_price": amount(worst),
            "distance_bps": _signed(preview.distance_bps), "max_slippage_bps": amount(preview.max_slippage_bps),
            "from": "book" if preview.from_book else "a_fill", "inside": fills, "text": text}


def _signed(value: Decimal) -> str:
    return f"+{value}" if value > 0 else amount(value)


# ---- requests: who may ask what ---------------------------------------------------------------------

def loopback_hosts(port: int) -> frozenset[str]:
    return frozenset({f"127.0.0.1:{port}", f"localhost:{port}", f"[::1]:{port}"})


def host_refusal(host: str | None, port: int) -> str | None:
    """The Host header names this loopback console (a DNS-rebinding page would name its own host)."""
    if host not in loopback_hosts(port):
        return f"Host {str(host)[:80]!r} is not this console (127.0.0.1:{port})"
    return None


def post_refusal(headers: Mapping[str, str], port: int) -> str | None:
    """A POST must come from the console's own page: the custom header (no cross-site form or
    fetch can send it without CORS, which the console never allows), a same-origin Origin and
    Sec-Fetch-Site when the browser sends them, and a JSON body."""
    if headers.get(CSRF_HEADER) != CSRF_VALUE:
        return f"missing header {CSRF_HEADER}: {CSRF_VALUE} (actions are taken from the console page only)"
    origin = headers.get("Origin")
    if origin is not None and origin not in {f"http://{h}" for h in loopback_hosts(port)}:
        return f"cross-origin request from {origin[:80]!r} refused"
    site = headers.get("Sec-Fetch-Site")
    if site is not None and site not in ("same-origin", "none"):
        return f"cross-site request refused (Sec-Fetch-Site: {site[:20]})"
    if not (headers.get("Content-Type") or "").startswith("application/json"):
        return "expected Content-Type: application/json"
    return None


def basic_auth_ok(header: str | None, user: str, password: str) -> bool:
    """`Authorization: Basic …` names this user and password (compared in constant time)."""
    if not header or not header.startswith("Basic "):
        return False
    try:
        given = base64.b64decode(header[6:].strip(), validate=True)
    except (binascii.Error, ValueError):
        return False
    expected = f"{user}:{password}".encode()
    return hmac.compare_digest(given, expected)


def action_body(body: Any, markets: list[str], *, task: bool = False) -> tuple[str, str | None, int | None]:
    """(market, task_id, max_slippage_bps) of an action's JSON body; InputError when malformed."""
    if not isinstance(body, Mapping):
        raise InputError("expected a JSON object")
    market = body.get("market")
    if market not in markets:
        raise InputError(f"market: expected one of {', '.join(markets)}, got {str(market)[:20]!r}")
    if not task:
        return market, None, None
    task_id = body.get("task_id")
    if not isinstance(task_id, str) or not task_id or len(task_id) > 200:
        raise InputError("task_id: expected a failed hedge's task id")
    return market, task_id, parse_bps(body.get("max_slippage_bps"))


def attempts_from_meta(meta: Mapping[str, Any] | None) -> int | None:
    """How often a hedge task was tried, from its Celery result (result_extended keeps retries and
    kwargs): retries that were waits on a leg the venue took are not attempts (tasks.hedge_task)."""
    if not meta:
        return None
    retries = meta.get("retries")
    if isinstance(retries, bool) or not isinstance(retries, int):
        return None
    kwargs = meta.get("kwargs") if isinstance(meta.get("kwargs"), Mapping) else {}
    waits = kwargs.get("waits", 0)
    waits = waits if isinstance(waits, int) and not isinstance(waits, bool) else 0
    return max(1, retries - waits + 1)
