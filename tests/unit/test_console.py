"""The console's pure core (ops/console_view.py), its request guard (ops/console.py, over aiohttp's test
server, no browser), console.port in the config, and ops.resume.resume (the CLI's and the console's Resume)."""
from __future__ import annotations

import asyncio
import base64
import copy
import json
from decimal import Decimal
from types import SimpleNamespace

import pytest
from aiohttp import ClientSession
from aiohttp.test_utils import TestServer

from hedge.budget import rate_limit_for_tier
from hedge.config import ConfigError, parse_config
from ops import console_view as cv
from ops.requeue import RequeuePreview
from ops.resume import resume
from tests.unit.test_config import good
from tests.unit.test_status_watch import failed_hedge, row

FILL = {"fill_id": "1224", "market_index": 0, "side": "buy", "base_amount": "0.0500", "price": "2999.70",
        "order_index": 7, "client_order_index": 9, "ts_exchange_ms": 0, "ts_seen_ms": 0}
FAILED = {"hedge-ETH-1224": {"fill_id": "1224", "reason": "TransientHedgeError: hedge order 5 filled nothing\n"
                             "within max_slippage_bps=50", "fill": FILL, "ts_ms": 1_800_000_000_000,
                             "auth": {"sig": "deadbeef", "generation": "g1"}}}


# ---- config ------------------------------------------------------------------------------------------

def test_console_port_defaults_to_the_port_after_flower_s():
    assert parse_config(good()).console_port == 5556
    raw = copy.deepcopy(good())
    raw["flower"] = {"port": 7000}
    assert parse_config(raw).console_port == 7001
    raw["console"] = {"port": 8123}
    assert parse_config(raw).console_port == 8123


@pytest.mark.parametrize("section, message", [
    ({"port": 5555}, "console.port: must differ from flower.port (5555)"),
    ({"port": 0}, "console.port: expected an integer >= 1, got 0"),
    ({"port": "5556"}, "console.port: expected an integer, got '5556'"),
    ({"prot": 5556}, "console.prot: unknown key; did you mean console.port?"),
    ([5556], "console: expected a mapping with port, got list"),
])
def test_a_bad_console_port_is_named(section, message):
    raw = copy.deepcopy(good())
    raw["console"] = section
    with pytest.raises(ConfigError) as err:
        parse_config(raw)
    assert str(err.value) == message


def test_the_console_port_may_not_take_a_metrics_port():
    raw = copy.deepcopy(good())
    raw["metrics"] = {"maker_port": 9101, "worker_port": 9102}
    raw["console"] = {"port": 9102}
    with pytest.raises(ConfigError, match=r"^console.port: must differ from metrics.worker_port \(9102\)$"):
        parse_config(raw)


# ---- numbers and inputs ------------------------------------------------------------------------------

@pytest.mark.parametrize("text, bps", [(None, None), ("", None), ("  ", None), ("500", 500), (" 7 ", 7), ("1000", 1000),
                                       (25, 25)])
def test_max_slippage_is_whole_bps_or_nothing(text, bps):
    assert cv.parse_bps(text) == bps


@pytest.mark.parametrize("text", ["0", "1001", "-5", "1.5", "5e2", "abc", 2.5, True])
def test_a_bad_max_slippage_is_refused_before_anything_is_called(text):
    with pytest.raises(cv.InputError, match="max_slippage_bps"):
        cv.parse_bps(text)


def test_amounts_are_decimal_strings_never_floats():
    assert cv.amount(Decimal("0.0500")) == "0.0500"
    assert cv.amount(Decimal("-0.0000")) == "0"
    assert cv.amount("unknown") == "unknown"
    assert cv.amount("2999.70") == "2999.70"
    assert cv.amount(None) == "-"


def test_the_venue_is_read_within_a_tenth_of_the_request_budget():
    assert cv.venue_refresh_s(rate_limit_for_tier("standard")) == 20.0     # 2 of 60 requests / 0.1
    assert cv.venue_refresh_s(rate_limit_for_tier("premium")) == 15.0      # 2 x 300 of 24,000 weight / 0.1
    assert cv.venue_refresh_s(rate_limit_for_tier("unlimited")) == 1.0


# ---- the view ----------------------------------------------------------------------------------------

def test_state_in_one_sentence():
    paused = row(paused=True, state="PAUSED", pause_reason="hedge hedge-ETH-1224 failed: SlippageError: x.",
                 failed_hedges=FAILED)
    assert cv.state_sentence(paused) == ("ETH is paused (hedge hedge-ETH-1224 failed: SlippageError: x): requeue its "
                                         "1 failed hedge(s), then resume.")
    waiting = row(paused=True, pause_reason="paused by operator", inflight_hedges=2)
    assert cv.state_sentence(waiting) == ("ETH is paused (paused by operator): 2 hedge(s) still in flight; resume once "
                                          "they finish.")
    assert cv.state_sentence(row(paused=True, pause_reason="flattened by operator")) == \
        "ETH is paused (flattened by operator): Resume lets A trade again."
    assert cv.state_sentence(row()) == "ETH is running: A quotes an opening order."
    assert cv.state_sentence(row(state="unknown")) == \
        "ETH is not paused, but the maker reports no state (is it running?)."
    assert cv.state_sentence(row(failed_hedges=FAILED)) == ("ETH is running: A quotes an opening order; 1 failed "
                                                            "hedge(s) acknowledged, A stays exposed until they are "
                                                            "requeued.")
    multi_line = row(paused=True, pause_reason="venue said:\n  no\tway.")
    assert cv.state_sentence(multi_line) == "ETH is paused (venue said: no way): Resume lets A trade again."


def test_a_failed_hedge_row_shows_the_fill_and_never_its_signature():
    view = cv.failed_view("hedge-ETH-1224", FAILED["hedge-ETH-1224"], 3)
    assert view["fill_id"] == "1224" and view["side"] == "buy" and view["b_side"] == "sell"
    assert view["size"] == "0.0500" and view["price"] == "2999.70" and view["attempts"] == "3"
    assert view["reason"] == "TransientHedgeError: hedge order 5 filled nothing within max_slippage_bps=50"
    assert "deadbeef" not in json.dumps(view)
    assert cv.failed_view("hedge-ETH-9", {"fill_id": "9", "reason": "x", "fill": None}, None)["attempts"] == "?"


def test_resume_is_offered_only_while_paused_without_failed_hedges():
    assert cv.resume_view(row(paused=True)) == {"enabled": True, "why": ""}
    assert cv.resume_view(row(paused=True, failed_hedges=FAILED)) == \
        {"enabled": False, "why": "1 failed hedge(s): requeue first"}
    assert cv.resume_view(row()) == {"enabled": False, "why": "not paused"}


def test_the_page_view_is_json_with_decimal_strings_and_the_cli_s_action():
    r = row(paused=True, state="PAUSED", pause_reason="hedge hedge-ETH-1224 failed", failed_hedges=FAILED,
            a_position=Decimal("0.0500"), b_position=Decimal("0"), net_exposure=Decimal("0.0500"), inflight_hedges=1,
            budget={"tier": "standard", "used": 12, "limit": 60, "unit": "requests", "window_ms": 60_000,
                    "hedge_reserve": 15, "http_429": 0, "backoff_left_ms": 0})
    market = cv.market_view(r, {"hedge-ETH-1225": 4.2, "hedge-ETH-1226": None}, {"hedge-ETH-1224": 2},
                            "Close every position?", Decimal("50"))
    page = cv.page_view([r], [market], mode="paper", queue_length=3, consumer_listed=True, venue_read_at=1_000.0,
                        venue_every_s=20.0, now=1_004.0)
    text = json.dumps(page)   # no default=: nothing in it needs one
    assert "deadbeef" not in text
    assert page["action"] == "ACTION: requeue hedge-ETH-1224, then resume ETH"
    assert page["queue"] == {"name": "hedge.b", "length": "3", "present": True, "text": "a worker consumes hedge.b"}
    assert page["budget"] == ("12 / 60 requests used in the rolling 60 s (tier standard, 15 kept for hedges), "
                              "0 HTTP 429")
    assert "(4s ago; every 20 s and after each action)" in page["venue"]
    m = page["markets"][0]
    assert (m["a_position"], m["b_position"], m["net_exposure"]) == ("0.0500", "0", "0.0500")
    assert m["inflight"] == [{"task_id": "hedge-ETH-1225", "age": "4s"}, {"task_id": "hedge-ETH-1226", "age": "?"}]
    assert [f["task_id"] for f in m["failed"]] == ["hedge-ETH-1224"] and m["failed"][0]["attempts"] == "2"
    assert m["resume"]["enabled"] is False and m["default_max_slippage_bps"] == "50"
    assert not any(isinstance(v, float) for v in _leaves(page))


def _leaves(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _leaves(v)
    elif isinstance(value, list):
        for v in value:
            yield from _leaves(v)
    else:
        yield value


def test_consumer_presence_and_budget_in_words():
    assert cv.consumer_view(False, True)["present"] is False
    assert cv.consumer_view(True, False) == {"present": False,
                                             "text": "a worker beats but inspect lists no consumer of hedge.b"}
    assert cv.consumer_view(True, None)["present"] is True
    assert cv.budget_text({"error": "ConnectionError: x"}) == "unreadable: ConnectionError: x"
    assert cv.budget_text({"tier": "unlimited", "used": 20, "limit": None, "unit": "requests", "window_ms": 60_000,
                           "hedge_reserve": 0, "http_429": 0}) == \
        "20 requests used in the rolling 60 s (tier unlimited: no limit), 0 HTTP 429"


def _preview(**over) -> RequeuePreview:
    fields = dict(task_id="hedge-ETH-1224", market="ETH", b_side="sell", size=Decimal("0.0500"),
                  a_fill_price=Decimal("2999.70"), book_price=Decimal("2909.41"), worst_price=Decimal("2763.94"),
                  distance_bps=Decimal("-785.95"), max_slippage_bps=Decimal("500"), from_book=True, fill_id="1224")
    fields.update(over)
    return RequeuePreview(**fields)


def test_the_requeue_preview_says_how_far_from_a_s_fill_before_sending():
    view = cv.preview_view(_preview())
    assert view["text"] == ("B sells 0.0500 ETH at worst 2763.94, -785.95 bps from A's fill at 2999.70 "
                            "(max_slippage_bps=500 from the book); best bid 2909.41, -301.00 bps from A's fill: "
                            "it should fill.")
    assert view["inside"] is True and view["from"] == "book" and view["distance_bps"] == "-785.95"
    # The configured bound from A's fill, the book beyond it: it would fail again.
    again = cv.preview_view(_preview(worst_price=Decimal("2984.70"), distance_bps=Decimal("-50.00"),
                                     max_slippage_bps=Decimal("50"), from_book=False))
    assert again["inside"] is False and again["text"].endswith(
        "best bid 2909.41, -301.00 bps from A's fill: beyond the worst price, it would fail again; give a wider "
        "max slippage.")
    assert "(max_slippage_bps=50 from A's fill)" in again["text"]
    empty = cv.preview_view(_preview(book_price=None, size=Decimal("0"), from_book=False))
    assert empty["inside"] is None and "no bid read from the book now." in empty["text"]
    assert empty["text"].endswith("Nothing is unhedged now: the re-run sends nothing.")
    buy = cv.preview_view(_preview(b_side="buy", book_price=Decimal("3001.00"), worst_price=Decimal("3014.70"),
                                   distance_bps=Decimal("50.00")))
    assert buy["inside"] is True and "at worst 3014.70, +50.00 bps" in buy["text"] and "best ask 3001.00" in buy["text"]


def test_the_console_s_venue_cache_reads_at_most_once_per_period_even_when_the_venue_fails(monkeypatch):
    """ops.status.venue_view with VenueCache(max_age_s): positions shown from the cache until the period
    ends or an action expires it; a failed read is not retried before the next period either."""
    from ops import status
    reads: list[int] = []

    async def read_positions(_api, index):
        reads.append(index)
        return {0: Decimal("0.0500")}
    monkeypatch.setattr(status, "read_positions", read_positions)
    cfg = parse_config(good())
    cache = status.VenueCache(max_age_s=60)
    cache.decimals = {0: 4}   # known: only the two position reads go to the venue
    view = lambda: asyncio.run(status.venue_view(cfg, None, None, cache))   # noqa: E731
    positions, _, error = view()
    assert error is None and positions[281001] == {0: Decimal("0.0500")} and len(reads) == 2
    assert view()[0] == positions and len(reads) == 2          # fresh: nothing read
    cache.expire()
    view()
    assert len(reads) == 4                                      # after an action: read at once

    async def down(_api, index):
        reads.append(index)
        raise ConnectionError("venue down")
    monkeypatch.setattr(status, "read_positions", down)
    cache.expire()
    assert view() == ({}, {0: 4}, "ConnectionError: venue down") and len(reads) == 5
    assert view() == ({}, {0: 4}, "ConnectionError: venue down") and len(reads) == 5   # not again this period
    watch = status.VenueCache()   # status --watch (no max age): every refresh reads, as before
    watch.decimals = {0: 4}
    asyncio.run(status.venue_view(cfg, None, None, watch))
    asyncio.run(status.venue_view(cfg, None, None, watch))
    assert len(reads) == 7


def test_in_flight_hedges_are_aged_from_their_fill_a_requeued_one_too(monkeypatch):
    from ops import status
    monkeypatch.setattr(status, "now_ms", lambda: 1_000_000)
    store = SimpleNamespace(fills=lambda market: {"12": {"ts_seen_ms": 958_000}, "13": {"ts_seen_ms": 999_000},
                                                  "14": {}})
    ages = status.inflight_ages(store, "ETH", {"hedge-ETH-12-r1", "hedge-ETH-13", "hedge-ETH-14",
                                               "hedge-ETH-recover-5"})
    assert ages == {"hedge-ETH-12-r1": 42.0, "hedge-ETH-13": 1.0, "hedge-ETH-14": None, "hedge-ETH-recover-5": None}
    assert status.inflight_oldest_s(store, "ETH", set(ages)) == 42.0
    assert status.inflight_ages(store, "ETH", set()) == {}


# ---- who may ask what -------------------------------------------------------------------------------

def _auth(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


def test_basic_auth_in_constant_time_and_nothing_else():
    assert cv.basic_auth_ok(_auth("operator", "pw"), "operator", "pw")
    assert not cv.basic_auth_ok(_auth("operator", "pw2"), "operator", "pw")
    assert not cv.basic_auth_ok(_auth("admin", "pw"), "operator", "pw")
    assert not cv.basic_auth_ok(None, "operator", "pw")
    assert not cv.basic_auth_ok("Bearer x", "operator", "pw")
    assert not cv.basic_auth_ok("Basic !!!not-base64", "operator", "pw")


def test_only_this_loopback_console_s_host_and_own_page_may_act():
    assert cv.host_refusal("127.0.0.1:5556", 5556) is None and cv.host_refusal("localhost:5556", 5556) is None
    assert cv.host_refusal("evil.example", 5556) and cv.host_refusal("127.0.0.1:5555", 5556)
    assert cv.host_refusal(None, 5556)
    own = {"X-Requested-With": "lighter-hedge-console", "Content-Type": "application/json",
           "Origin": "http://127.0.0.1:5556", "Sec-Fetch-Site": "same-origin"}
    assert cv.post_refusal(own, 5556) is None
    assert cv.post_refusal({k: v for k, v in own.items() if k != "Origin"}, 5556) is None
    assert "X-Requested-With" in cv.post_refusal({**own, "X-Requested-With": "XMLHttpRequest"}, 5556)
    assert "cross-origin" in cv.post_refusal({**own, "Origin": "http://evil.example"}, 5556)
    assert "cross-origin" in cv.post_refusal({**own, "Origin": "null"}, 5556)
    assert "cross-site" in cv.post_refusal({**own, "Sec-Fetch-Site": "cross-site"}, 5556)
    assert "Content-Type" in cv.post_refusal({**own, "Content-Type": "text/plain"}, 5556)


def test_action_bodies_are_checked():
    assert cv.action_body({"market": "ETH"}, ["ETH"]) == ("ETH", None, None)
    assert cv.action_body({"market": "ETH", "task_id": "hedge-ETH-1", "max_slippage_bps": "500"}, ["ETH"],
                          task=True) == ("ETH", "hedge-ETH-1", 500)
    for body in ([], {"market": "BTC"}, {"market": None}):
        with pytest.raises(cv.InputError, match="market|JSON object"):
            cv.action_body(body, ["ETH"])
    with pytest.raises(cv.InputError, match="task_id"):
        cv.action_body({"market": "ETH", "task_id": ""}, ["ETH"], task=True)


def test_attempts_from_the_celery_result_leave_out_waits_on_a_taken_leg():
    assert cv.attempts_from_meta({"retries": 1, "kwargs": {"waits": 0}}) == 2
    assert cv.attempts_from_meta({"retries": 4, "kwargs": {"waits": 2}}) == 3
    assert cv.attempts_from_meta({"retries": 0}) == 1
    assert cv.attempts_from_meta({"status": "PENDING"}) is None
    assert cv.attempts_from_meta(None) is None


# ---- the HTTP guard, over aiohttp's test server (no browser) --------------------------------------------

class FakeConsole:
    def __init__(self, port: int):
        self.cfg = SimpleNamespace(console_port=port, redis_url="redis://127.0.0.1:6379/0")
        self.creds = SimpleNamespace(user="operator", password="s3cret")
        self.markets = ["ETH"]
        self.resumed: list[str] = []

    async def view(self):
        return {"markets": [], "action": "ACTION: none"}

    async def resume(self, market):
        self.resumed.append(market)
        return {"message": f"market={market} resumed", "lines": []}


def test_every_request_needs_the_basic_auth_and_every_action_the_page_s_own_header():
    from ops.console import make_app
    from venue.sim.harness import free_port

    async def scenario():
        port = free_port()
        console = FakeConsole(port)
        server = TestServer(make_app(console), host="127.0.0.1", port=port)
        await server.start_server()
        base = f"http://127.0.0.1:{port}"
        auth = {"Authorization": _auth("operator", "s3cret")}
        page = {**auth, "X-Requested-With": "lighter-hedge-console", "Origin": base}
        try:
            async with ClientSession() as http:
                async def status(method, path, headers=None, **kw):
                    async with http.request(method, base + path, headers=headers or {}, **kw) as resp:
                        return resp.status, await resp.text(), resp.headers
                assert (await status("GET", "/healthz"))[:2] == (200, "ok")
                code, _, headers = await status("GET", "/api/state")
                assert code == 401 and headers["WWW-Authenticate"].startswith('Basic realm="lighter-hedge console"')
                assert (await status("GET", "/", {"Authorization": _auth("operator", "nope")}))[0] == 401
                code, body, headers = await status("GET", "/api/state", auth)
                assert code == 200 and json.loads(body)["action"] == "ACTION: none"
                assert "frame-ancestors 'none'" in headers["Content-Security-Policy"]
                assert headers["Cache-Control"] == "no-store"
                code, body, _ = await status("GET", "/", auth)
                assert code == 200 and '<script src="/console.js"' in body and "s3cret" not in body
                assert (await status("GET", "/api/state", {**auth, "Host": "evil.example"}))[0] == 421
                assert (await status("POST", "/api/resume", auth, json={"market": "ETH"}))[0] == 403
                assert (await status("POST", "/api/resume", {**page, "Origin": "http://evil.example"},
                                     json={"market": "ETH"}))[0] == 403
                assert (await status("POST", "/api/resume", page, data="market=ETH"))[0] == 403   # not JSON
                assert console.resumed == []
                code, body, _ = await status("POST", "/api/resume", page, json={"market": "BTC"})
                assert code == 400 and "market: expected one of ETH" in json.loads(body)["message"]
                code, body, _ = await status("POST", "/api/resume", page, json={"market": "ETH"})
                assert code == 200 and json.loads(body) == {"ok": True, "message": "market=ETH resumed", "lines": []}
                assert console.resumed == ["ETH"]
                assert (await status("DELETE", "/api/resume", page))[0] in (403, 405)
        finally:
            await server.close()

    asyncio.run(scenario())


# ---- resume: one function for the CLI and the console ----------------------------------------------------

class FakeStore:
    def __init__(self, failed: dict[str, dict]):
        self._failed = failed
        self.acknowledged: list[tuple[str, list[str]]] = []
        self.resumed: list[str] = []

    def failed(self, market):
        return dict(self._failed.get(market, {}))

    def acknowledge_failed(self, market, task_ids):
        self.acknowledged.append((market, task_ids))

    def resume(self, market):
        self.resumed.append(market)
        return True


def test_resume_refuses_a_market_with_failed_hedges_unless_forced():
    store = FakeStore({"ETH": {"hedge-ETH-2": failed_hedge("2"), "hedge-ETH-1": failed_hedge("1")}})
    eth, btc = resume(store, ["ETH", "BTC"])
    assert (eth.resumed, btc.resumed) == (False, True) and store.resumed == ["BTC"]
    assert eth.line() == ("market=ETH not resumed: 2 failed hedge(s) remain (hedge-ETH-1, hedge-ETH-2); run "
                          "`lighter-hedge requeue --all-failed` first")
    assert btc.line() == "market=BTC resumed"
    (forced,) = resume(store, ["ETH"], force=True)
    assert forced.resumed and store.acknowledged == [("ETH", ["hedge-ETH-1", "hedge-ETH-2"])]
    assert forced.line() == ("market=ETH resumed with 2 failed hedge(s) acknowledged (hedge-ETH-1, hedge-ETH-2): A "
                             "stays exposed until they are requeued")


def test_flatten_asks_the_same_question_on_the_console_and_the_cli():
    from ops.flatten import confirm_question
    cfg = parse_config(good())
    assert confirm_question(cfg, ["ETH"]) == ("Close every position of accounts 281001 and 281002 on ETH (paper mode) "
                                              "with market orders, and pause?")
