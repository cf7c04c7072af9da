"""`status --watch`'s screen (ops/watch.py) and the ACTION line (ops.status.next_action): pure
functions of the rows `status` collects, checked for fitting any terminal and saying the right thing."""
from __future__ import annotations

import re
from decimal import Decimal

from hypothesis import given, settings
from hypothesis import strategies as st

from ops.status import next_action, short_reason
from ops.watch import REVERSE, paint, plain, screen

NOW_MS = 1_800_000_000_000
ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")


def row(market: str = "ETH", **over) -> dict:
    """A row as ops.status.collect returns it: a quiet, healthy market unless overridden."""
    base = {
        "market": market, "state": "QUOTING_OPEN", "a_position": Decimal("0.0500"),
        "b_position": Decimal("-0.0500"), "net_exposure": Decimal("0"), "unhedged": Decimal("0"),
        "in_flight_base": Decimal("0"), "legs_in_doubt": 0, "inflight_hedges": 0, "inflight_oldest_s": None,
        "failed": 0, "paused": False, "rounds": 3, "fills": 2, "hedges": 2, "last_hedge_fill_id": "1200",
        "last_fill_to_sent_ms": "4.10", "last_fill_to_confirmed_ms": "41.70", "venue_error": None,
        "pause_reason": None, "failed_hedges": {}, "refused_messages": {},
        "budget": {"used": 12, "limit": 60}, "worker_alive": True,
    }
    base.update(over)
    if base["failed_hedges"]:
        base["failed"] = len(base["failed_hedges"])
    return base


def failed_hedge(fill_id: str, reason: str = "SlippageError: book moved 80 bps past max_slippage_bps=50") -> dict:
    return {"fill_id": fill_id, "reason": reason, "fill": {"fill_id": fill_id}, "ts_ms": NOW_MS - 95_000}


def incident(markets: int, failures: int, refused: int) -> list[dict]:
    """Every market paused with failures spread over them, long reasons, huge positions."""
    long_reason = "RefusedMessageError: refused fill message: " + "x" * 200
    refused_messages = {f"bad-{i}": {"market": None, "reason": long_reason, "ts_ms": NOW_MS - i}
                        for i in range(refused)}
    rows = []
    for m in range(markets):
        symbol = f"MKT{m}LONGNAME"
        fails = {f"hedge-{symbol}-{10 ** 12 + i}": failed_hedge(str(10 ** 12 + i), "E" * 300)
                 for i in range(failures) if i % markets == m}
        rows.append(row(symbol, state="PAUSED", paused=True, pause_reason="hedge x failed: " + "why " * 80,
                        a_position=Decimal("-123456789.123456789"), b_position=Decimal("0.000000001"),
                        net_exposure="unknown", inflight_hedges=999, inflight_oldest_s=86_400 * 30,
                        failed_hedges=fails, refused_messages=refused_messages,
                        venue_error="BudgetWaitTimeout: " + "no room " * 40))
    return rows


def lines_of(rows: list[dict], width: int = 80, height: int = 24) -> list[str]:
    return plain(screen(rows, clock="12:00:00", interval=1.0, now_ms=NOW_MS, width=width, height=height))


def assert_fits(lines: list[str], width: int, height: int) -> None:
    assert len(lines) <= height, "\n".join(lines)
    assert all(len(line) <= width for line in lines), [line for line in lines if len(line) > width]
    assert lines[-1].startswith("ACTION: ") and sum(line.startswith("ACTION:") for line in lines) == 1


# ---- fitting 80x24 (and any other size) -------------------------------------------------------

def test_an_incident_with_many_markets_and_failures_fits_80x24():
    lines = lines_of(incident(markets=40, failures=60, refused=25))
    assert_fits(lines, 80, 24)
    assert lines[0].startswith("lighter-hedge status  12:00:00")
    assert any(re.match(r"\+\d+ more markets", line) for line in lines), lines
    assert any(re.search(r"\+\d+ more", line) and "markets" not in line for line in lines), lines


def test_a_quiet_deployment_shows_every_market_aligned():
    rows = [row(sym) for sym in ("ETH", "BTC", "SOL")]
    lines = lines_of(rows)
    assert_fits(lines, 80, 24)
    table = [line for line in lines if line.split()[:1] in (["ETH"], ["BTC"], ["SOL"])]
    assert len(table) == 3
    header = lines[1]
    # Right-aligned columns end where their header ends.
    for name in ("NET", "FAIL", "LAST"):
        end = header.index(name) + len(name)
        assert all(line[end - 1] != " " for line in table), (name, table)
    assert lines[-1] == "ACTION: none"


@settings(max_examples=150, deadline=None)
@given(markets=st.integers(1, 60), failures=st.integers(0, 80), refused=st.integers(0, 40),
       width=st.integers(20, 200), height=st.integers(2, 80))
def test_the_screen_never_exceeds_the_terminal(markets, failures, refused, width, height):
    assert_fits(lines_of(incident(markets, failures, refused), width, height), width, height)


def test_markets_in_trouble_are_shown_before_quiet_ones_when_they_do_not_all_fit():
    rows = [row(f"Q{i}") for i in range(30)] + [row("ETH", paused=True, state="PAUSED",
                                                    pause_reason="paused by operator")]
    lines = lines_of(rows)
    assert_fits(lines, 80, 24)
    assert any(line.startswith("ETH    PAUSED    operator") for line in lines), lines
    assert any(line.startswith("+") and "more markets" in line and "all well" in line for line in lines)


def test_cells_show_the_row_numbers():
    r = row(state="PAUSED", paused=True, pause_reason="3 failed hedge(s) remain: a, b, c; requeue them, then resume",
            a_position=Decimal("0.1500"), b_position=Decimal("-0.1000"), net_exposure=Decimal("0.0500"),
            inflight_hedges=2, inflight_oldest_s=135.0, last_fill_to_confirmed_ms="1234.5",
            failed_hedges={"hedge-ETH-1224": failed_hedge("1224")})
    market = next(line for line in lines_of([r]) if line.startswith("ETH "))
    assert market.split() == ["ETH", "PAUSED", "failed", "hedges", "0.15", "-0.1", "0.05", "2/2m", "1", "1.2s"]


def test_short_reason():
    assert short_reason("paused by operator") == "operator"
    assert short_reason("hedge hedge-ETH-1 failed: boom") == "hedge failed"
    assert short_reason("something nobody\nexpected at all", 10) == "something~"
    assert short_reason(None) == ""


# ---- highlighting what changed ----------------------------------------------------------------

def test_only_cells_that_changed_are_highlighted_and_not_on_the_first_refresh():
    before = screen([row(), row("BTC")], clock="12:00:00", interval=1, now_ms=NOW_MS)
    first, values = paint(before, None)
    assert not any(REVERSE in line for line in first)
    after = screen([row(inflight_hedges=1, inflight_oldest_s=2.0), row("BTC")], clock="12:00:01", interval=1,
                   now_ms=NOW_MS)
    second, _ = paint(after, values)
    changed = [line for line in second if REVERSE in line]
    assert len(changed) == 1 and changed[0].startswith("ETH"), second
    assert f"{REVERSE}1/2s" in changed[0]
    # The clock changes every refresh: never highlighted.
    assert REVERSE not in second[0]
    # Ages tick by themselves: an older in-flight hedge or failure alone is no change.
    def aged(seconds: float) -> list[dict]:
        return [row(inflight_hedges=1, inflight_oldest_s=seconds, failed_hedges={"hedge-ETH-1": failed_hedge("1")}),
                row("BTC")]
    _, values = paint(screen(aged(9.0), clock="12:00:02", interval=1, now_ms=NOW_MS), None)
    third, _ = paint(screen(aged(70.0), clock="12:00:03", interval=1, now_ms=NOW_MS + 60_000), values)
    assert "1/70s" in third[2] and "3m ago" in plain(screen(aged(70.0), clock="x", interval=1,
                                                           now_ms=NOW_MS + 60_000))[4]
    assert not any(REVERSE in line for line in third), third
    # Without the escapes it is the plain screen.
    assert [ANSI.sub("", line) for line in second] == plain(after)


# ---- ACTION --------------------------------------------------------------------------------------

def test_action_requeue_then_resume_for_a_failed_hedge():
    r = row(state="PAUSED", paused=True, pause_reason="hedge hedge-ETH-1224 failed: SlippageError",
            failed_hedges={"hedge-ETH-1224": failed_hedge("1224")})
    assert next_action([r, row("BTC")]) == "ACTION: requeue hedge-ETH-1224, then resume ETH"


def test_action_for_several_failed_hedges():
    fails = {f"hedge-ETH-{i}": failed_hedge(str(i)) for i in (1, 2, 3)}
    r = row(paused=True, pause_reason="x", failed_hedges=fails)
    assert next_action([r]) == "ACTION: requeue --all-failed --market ETH (3 failed), then resume ETH"
    # Resumed with --force (acknowledged): requeue, nothing to resume.
    assert next_action([row(failed_hedges={"hedge-ETH-1": failed_hedge("1")})]) == "ACTION: requeue hedge-ETH-1"


def test_action_resume_a_market_paused_by_the_operator():
    r = row(state="PAUSED", paused=True, pause_reason="paused by operator")
    assert next_action([r, row("BTC")]) == "ACTION: resume ETH (paused by operator)"


def test_action_waits_for_in_flight_hedges_before_resume():
    r = row(paused=True, pause_reason="hedge hedge-ETH-1 failed: x", inflight_hedges=1, inflight_oldest_s=12.0)
    assert next_action([r]) == "ACTION: wait for 1 in-flight hedge(s) of ETH (oldest 12s), then resume ETH"


def test_action_repair_for_an_exposure_gap():
    r = row(paused=True, pause_reason="unexplained exposure gap 0.05 (A 0.05, B 0, ledger unhedged 0)")
    assert next_action([r]).startswith("ACTION: repair ETH")


def test_action_start_the_worker_comes_first():
    r = row(paused=True, pause_reason="x", failed_hedges={"hedge-ETH-1": failed_hedge("1")}, worker_alive=False)
    assert next_action([r]) == "ACTION: start the worker: no consumer on hedge.b (no worker heartbeat)"


def test_action_a_worker_that_consumes_nothing():
    assert next_action([row(state="WAITING_FOR_WORKER")]).startswith("ACTION: restart the worker")


def test_action_unreadable_venue():
    r = row(a_position="unknown", b_position="unknown", net_exposure="unknown",
            venue_error="ClientConnectorError: Cannot connect to host 127.0.0.1:8787")
    assert next_action([r]).startswith("ACTION: check the venue: positions unreadable (ClientConnectorError")


def test_action_refused_messages_after_looking():
    one = {"bad-1": {"market": None, "reason": "refused", "ts_ms": 1}}
    assert next_action([row(refused_messages=one)]) == \
        "ACTION: look at refused bad-1 (status --json), then clear-refused bad-1"
    many = {f"bad-{i}": {"market": None, "reason": "refused", "ts_ms": i} for i in range(5)}
    assert next_action([row(refused_messages=many)]) == \
        "ACTION: look at 5 refused messages (status --json), then clear-refused --all"


def test_action_none_when_all_is_well():
    assert next_action([row(), row("BTC")]) == "ACTION: none"


@settings(max_examples=50, deadline=None)
@given(width=st.integers(20, 120), markets=st.integers(1, 30), failures=st.integers(0, 30))
def test_the_action_line_fits_the_width(width, markets, failures):
    assert len(next_action(incident(markets, failures, 3), width)) <= width


# ---- the in-flight age `collect` reports (from the fill records, through the store) -----------

def test_inflight_oldest_age_is_from_the_oldest_in_flight_fill(redis_url):
    import redis

    from ops.status import inflight_oldest_s
    from tasks.store import Store, now_ms, task_id_for
    redis.Redis.from_url(redis_url).flushdb()
    store = Store.from_url(redis_url)
    assert inflight_oldest_s(store, "ETH", set()) is None
    for fill_id, age_ms in (("1", 90_000), ("2", 5_000), ("3", 300_000)):
        store.record_fill("ETH", {"fill_id": fill_id, "ts_seen_ms": now_ms() - age_ms}, 1)
    # Fill 3 is the oldest but hedged (not in flight); "hedge-ETH-9" has no fill record.
    inflight = {task_id_for("ETH", "1"), task_id_for("ETH", "2"), "hedge-ETH-9"}
    assert 89 <= inflight_oldest_s(store, "ETH", inflight) <= 100
    assert inflight_oldest_s(store, "ETH", {"hedge-ETH-9"}) is None
