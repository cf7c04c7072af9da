"""The request budget's pure rules (hedge/budget.py): tiers, weights and caps, the hedge reserve,
the admission decision and its wait, the backoff after a 429, and usage."""
from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedge.budget import (TIERS, UNLIMITED, Admit, Backoff, BudgetError, Priority, RateLimit, Request, Wait,
                          WindowEntry, after_refusal, decide, default_hedge_reserve, endpoint_cap,
                          endpoint_weight, live_entries, rate_limit_for_tier, summarize)

STANDARD = rate_limit_for_tier("standard")
PREMIUM = rate_limit_for_tier("premium")
NOW = 1_000_000
H, Q, R = Priority.HEDGE, Priority.QUOTE, Priority.READ
ENDPOINTS = ["sendTx", "nextNonce", "accountOrders", "accountActiveOrders", "accountInactiveOrders", "account",
             "orderBookDetails", "orderBookOrders", "trades", "recentTrades", "publicPools", "apikeys",
             "transferFeeInfo", "changeAccountTier", "tokens/create", "referral/use", "deposit/latest"]


def entry(at_ms: int, endpoint: str = "accountOrders", priority: Priority = R, process: str = "maker") -> WindowEntry:
    return WindowEntry(at_ms, endpoint, endpoint_weight(endpoint), process, priority)


def fill(n: int, start_ms: int = NOW - 30_000, step_ms: int = 10, **kw) -> list[WindowEntry]:
    return [entry(start_ms + i * step_ms, **kw) for i in range(n)]


# ---- figures ------------------------------------------------------------------------------------

def test_tiers_are_lighters_published_figures():
    assert {n: (t.limit, t.weighted) for n, t in TIERS.items()} == {
        "standard": (60, False), "premium": (24_000, True), "plus": (120_000, True), "builder": (240_000, True)}


@pytest.mark.parametrize("endpoint, weight, cap", [
    ("sendTx", 6, None), ("sendTxBatch", 6, None), ("nextNonce", 6, None),
    ("publicPools", 50, None), ("txFromL1TxHash", 50, None),
    ("accountInactiveOrders", 100, None), ("apikeys", 150, None),
    ("trades", 600, 40), ("recentTrades", 600, 40), ("transferFeeInfo", 500, 48),
    ("changeAccountTier", 3000, 8), ("tokens/anything", 3000, 8),
    ("accountOrders", 300, None), ("account", 300, None), ("orderBookOrders", 300, None),
])
def test_weights_and_caps(endpoint, weight, cap):
    assert endpoint_weight(endpoint) == weight and endpoint_cap(endpoint) == cap


@given(st.one_of(st.sampled_from(ENDPOINTS), st.text(alphabet="abcdefghijklmnopqrstuvwxyzAB/", min_size=1)))
def test_weights_and_caps_agree_with_the_paper_exchange(endpoint):
    """The simulator (venue/sim/tiers.py) is our model of Lighter: the client's figures must match it."""
    from venue.sim import tiers as sim
    assert endpoint_weight(endpoint) == sim.endpoint_weight(endpoint)
    assert endpoint_cap(endpoint) == sim.endpoint_cap(endpoint)
    assert (TIERS["standard"].limit, TIERS["premium"].limit) == (sim.STANDARD.limit, sim.PREMIUM.limit)


def test_default_reserve_is_a_quarter_of_the_limit():
    assert [rate_limit_for_tier(t).hedge_reserve for t in TIERS] == [15, 6_000, 30_000, 60_000]
    assert default_hedge_reserve(2, weighted=False) == 1          # tiny limits still keep one hedge
    assert default_hedge_reserve(606, weighted=True) == 6          # one sendTx, and one trades read left


def test_allowance_by_priority():
    assert (STANDARD.allowance(H), STANDARD.allowance(Q), STANDARD.allowance(R)) == (60, 45, 45)
    assert (PREMIUM.allowance(H), PREMIUM.allowance(R)) == (24_000, 18_000)
    assert STANDARD.cost("trades") == 1 and PREMIUM.cost("trades") == 600 and PREMIUM.unit == "weight"
    unlimited = rate_limit_for_tier(UNLIMITED)
    assert unlimited.limit is None and unlimited.allowance(R) is None


@pytest.mark.parametrize("limit, weighted, reserve, message", [
    (60, False, 0, r"hedge_reserve: expected 1\.\.59"),
    (60, False, 60, r"hedge_reserve: expected 1\.\.59"),
    (24_000, True, 5, r"hedge_reserve: expected 6\.\.23400"),
    (24_000, True, 23_401, r"trades \(weight 600\)"),
    (0, False, 0, r"limit: expected a positive integer"),
])
def test_impossible_limits_are_refused(limit, weighted, reserve, message):
    with pytest.raises(BudgetError, match=message):
        RateLimit("custom", limit, weighted, reserve)


def test_unknown_tier_is_refused():
    with pytest.raises(BudgetError, match="tier: expected one of standard, premium, plus, builder"):
        rate_limit_for_tier("gold")


# ---- the decision ---------------------------------------------------------------------------------

@pytest.mark.parametrize("priority", list(Priority))
def test_an_empty_window_admits_everyone(priority):
    assert decide([], Request("accountOrders", priority), STANDARD, NOW) == Admit()


def test_quotes_and_reads_stop_at_the_limit_minus_the_reserve_and_hedges_go_on():
    window = fill(45)                                      # QUOTE/READ's share of 60 - 15, all used
    first = window[0].at_ms
    assert decide(window, Request("accountOrders", R), STANDARD, NOW) == Wait(first + 60_000 - NOW, "reserve")
    assert decide(window, Request("sendTx", Q), STANDARD, NOW) == Wait(first + 60_000 - NOW, "reserve")
    assert decide(window, Request("sendTx", H), STANDARD, NOW) == Admit()
    # 44 leave room for one more.
    assert decide(window[1:], Request("sendTx", Q), STANDARD, NOW) == Admit()


def test_hedges_count_against_the_limit_not_against_the_quotes_share():
    window = fill(44) + fill(14, start_ms=NOW - 1_000, endpoint="sendTx", priority=H)
    assert decide(window, Request("sendTx", Q), STANDARD, NOW) == Admit()        # 45 of 45, 59 of 60
    # A burst of hedges beyond the reserve fills the limit: then quotes wait for room in it.
    window = fill(40) + fill(20, start_ms=NOW - 1_000, endpoint="sendTx", priority=H)
    assert decide(window, Request("sendTx", Q), STANDARD, NOW) == Wait(window[0].at_ms + 60_000 - NOW, "limit")


def test_hedges_may_fill_the_whole_limit_then_wait_for_the_oldest_entry():
    window = fill(45) + fill(15, start_ms=NOW - 1_000, endpoint="sendTx", priority=H)
    assert decide(window, Request("sendTx", H), STANDARD, NOW) == Wait(window[0].at_ms + 60_000 - NOW, "limit")
    assert decide(window[:-1], Request("sendTx", H), STANDARD, NOW) == Admit()


def test_the_wait_is_until_enough_weight_has_left():
    # Premium: 17,400 of READ's 18,000 used; a trades read (600) fits, a second needs 600 to leave.
    window = [entry(NOW - 50_000, "accountOrders")] * 2 + fill(56, start_ms=NOW - 40_000)   # 58 x 300
    assert decide(window, Request("trades", R), PREMIUM, NOW) == Admit()
    window = window + [entry(NOW - 1, "trades")]
    # need = 17,400 + 600 + 600 - 18,000 = 600: the two oldest (300 each) must leave, both at NOW - 50,000.
    assert decide(window, Request("trades", R), PREMIUM, NOW) == Wait(10_000, "reserve")


def test_an_entry_leaves_the_window_exactly_one_window_later():
    window = fill(45, start_ms=NOW - 60_000, step_ms=0)
    assert live_entries(window, 60_000, NOW) == []
    assert decide(window, Request("accountOrders", R), STANDARD, NOW) == Admit()
    assert decide(window, Request("accountOrders", R), STANDARD, NOW - 1) == Wait(1, "reserve")


@pytest.mark.parametrize("limit", [STANDARD, rate_limit_for_tier("plus"), rate_limit_for_tier("builder")],
                         ids=["standard", "plus", "builder"])
def test_trades_is_capped_at_40_a_minute_on_every_tier(limit):
    """(On premium 40 x 600 is the whole limit: there the limit and the cap coincide.)"""
    window = fill(40, endpoint="trades")
    assert decide(window, Request("trades", R), limit, NOW) == Wait(window[0].at_ms + 60_000 - NOW, "cap")
    assert decide(window, Request("trades", H), limit, NOW) == Wait(window[0].at_ms + 60_000 - NOW, "cap")
    assert decide(window[1:], Request("trades", R), limit, NOW) == Admit()
    assert decide(window, Request("accountOrders", H), limit, NOW) == Admit()   # other endpoints unaffected


def test_over_the_cap_the_wait_is_for_the_entry_that_brings_the_count_below_it():
    # 42 trades (e.g. counted while another config applied): the 3rd oldest must leave.
    window = fill(42, endpoint="trades", step_ms=100)
    plus = rate_limit_for_tier("plus")
    assert decide(window, Request("trades", R), plus, NOW) == Wait(window[2].at_ms + 60_000 - NOW, "cap")


def test_a_backoff_holds_quotes_and_reads_but_not_hedges():
    assert decide([], Request("sendTx", Q), STANDARD, NOW, backoff_until_ms=NOW + 700) == Wait(700, "backoff")
    assert decide([], Request("account", R), STANDARD, NOW, backoff_until_ms=NOW + 700) == Wait(700, "backoff")
    assert decide([], Request("sendTx", H), STANDARD, NOW, backoff_until_ms=NOW + 700) == Admit()
    assert decide([], Request("sendTx", Q), STANDARD, NOW, backoff_until_ms=NOW) == Admit()


def test_the_longest_wait_wins_and_names_its_reason():
    window = fill(45, start_ms=NOW - 59_000)          # the share frees in 1,000 ms
    assert decide(window, Request("account", R), STANDARD, NOW, NOW + 5_000) == Wait(5_000, "backoff")
    assert decide(window, Request("account", R), STANDARD, NOW, NOW + 500) == Wait(1_000, "reserve")
    assert decide(window, Request("account", R), STANDARD, NOW, NOW + 1_000) == Wait(1_000, "backoff")


def test_a_request_no_share_could_ever_admit_is_an_error_not_a_wait():
    tiny = RateLimit("custom", 700, True, 100)   # READ's share is 600: a trades read fits, a 3,000 one never
    assert decide([], Request("trades", R), tiny, NOW) == Admit()
    with pytest.raises(BudgetError, match="changeAccountTier costs 3000 weight"):
        decide([], Request("changeAccountTier", R), tiny, NOW)


def test_unlimited_admits_everything_and_only_a_backoff_waits():
    unlimited = rate_limit_for_tier(UNLIMITED)
    assert decide(fill(5_000), Request("trades", R), unlimited, NOW) == Admit()
    assert decide([], Request("trades", R), unlimited, NOW, NOW + 10) == Wait(10, "backoff")


# ---- properties: a timeline of requests under the rule ---------------------------------------------

requests_st = st.lists(st.tuples(st.integers(0, 3_000),                      # arrival, ms
                                 st.sampled_from(list(Priority)),
                                 st.sampled_from(["sendTx", "accountOrders", "trades", "nextNonce",
                                                  "accountInactiveOrders"])),
                       min_size=1, max_size=60)
limits_st = st.sampled_from([
    RateLimit("custom", 6, False, 2, window_ms=1_000),
    RateLimit("custom", 1_500, True, 300, window_ms=1_000),
    RateLimit("custom", 2, False, 1, window_ms=500),
])


def run_timeline(requests, limit):
    """Every request retries at now + wait_ms until admitted (as RequestBudget.acquire does).
    Returns the admitted entries and the waits asked."""
    pending = sorted((t, i, p, e) for i, (t, p, e) in enumerate(requests))
    window: list[WindowEntry] = []
    waits = []
    while pending:
        pending.sort()
        t, i, priority, endpoint = pending.pop(0)
        decision = decide(window, Request(endpoint, priority), limit, t)
        if isinstance(decision, Admit):
            window.append(WindowEntry(t, endpoint, endpoint_weight(endpoint), "p", priority))
        else:
            assert decision.wait_ms > 0
            waits.append((t, decision, endpoint, priority, list(window)))
            pending.append((t + decision.wait_ms, i, priority, endpoint))
    return window, waits


def in_window(window, t, window_ms):
    return [e for e in window if t - window_ms < e.at_ms <= t]


@settings(max_examples=150, deadline=None)
@given(requests_st, limits_st)
def test_no_rolling_window_ever_holds_more_than_the_limit_and_caps_hold(requests, limit):
    window, _ = run_timeline(requests, limit)
    assert len(window) == len(requests)              # waits, never refuses
    for admitted in window:
        live = in_window(window, admitted.at_ms, limit.window_ms)
        used = sum(limit.cost(e.endpoint) for e in live)
        assert used <= limit.limit
        cap = endpoint_cap(admitted.endpoint)
        if cap is not None:
            assert sum(1 for e in live if e.endpoint == admitted.endpoint) <= cap


@settings(max_examples=150, deadline=None)
@given(requests_st, limits_st)
def test_quotes_and_reads_never_reach_into_the_reserve(requests, limit):
    window, _ = run_timeline(requests, limit)
    for admitted in window:
        live = in_window(window, admitted.at_ms, limit.window_ms)
        shared = sum(limit.cost(e.endpoint) for e in live if e.priority is not Priority.HEDGE)
        assert shared <= limit.limit - limit.hedge_reserve


@settings(max_examples=150, deadline=None)
@given(requests_st, limits_st)
def test_a_wait_is_exact_nothing_earlier_would_have_been_admitted(requests, limit):
    _, waits = run_timeline(requests, limit)
    for t, decision, endpoint, priority, window in waits:
        req = Request(endpoint, priority)
        assert isinstance(decide(window, req, limit, t + decision.wait_ms - 1), Wait)
        assert decide(window, req, limit, t + decision.wait_ms) == Admit()


@settings(max_examples=150, deadline=None)
@given(st.lists(st.tuples(st.integers(0, 59_999), st.sampled_from([Q, R])), max_size=120),
       st.integers(0, 14))
def test_a_hedge_goes_at_once_whatever_quotes_and_reads_did(others, hedges_before):
    """However A's quoting and the reads filled the window (under the rule), a hedge is admitted at
    once while hedges alone used less than the reserve."""
    window, _ = run_timeline([(t, p, "sendTx" if p is Q else "accountOrders") for t, p in others], STANDARD)
    now = max([e.at_ms for e in window] + [0])
    hedges = [entry(now, "sendTx", H) for _ in range(hedges_before)]
    assert decide(window + hedges, Request("sendTx", H), STANDARD, now) == Admit()


# ---- the backoff -----------------------------------------------------------------------------------

def test_backoff_starts_at_one_second_doubles_to_thirty_and_ignores_refusals_while_it_runs():
    b = after_refusal(Backoff(), NOW)
    assert b == Backoff(NOW + 1_000, 1_000)
    assert after_refusal(b, NOW + 999) == b                     # a second process hit by the same burst
    steps = []
    t = NOW
    for _ in range(8):
        t = b.until_ms
        b = after_refusal(b, t)
        steps.append(b.step_ms)
    assert steps == [2_000, 4_000, 8_000, 16_000, 30_000, 30_000, 30_000, 30_000]
    assert b.until_ms == t + 30_000


@given(st.lists(st.integers(0, 100_000), max_size=30))
def test_backoff_never_exceeds_the_maximum_nor_shrinks_until_reset(gaps):
    b, t = Backoff(), 0
    for gap in gaps:
        t += gap
        nxt = after_refusal(b, t)
        assert 1_000 <= nxt.step_ms <= 30_000 and nxt.step_ms >= b.step_ms
        assert nxt.until_ms >= t
        b = nxt


# ---- usage -----------------------------------------------------------------------------------------

def test_usage_counts_the_live_window_by_process_in_the_limits_unit():
    window = [entry(NOW - 70_000, "trades", R, "cli"),               # expired
              entry(NOW - 100, "sendTx", H, "worker"), entry(NOW - 50, "accountOrders", R, "maker"),
              entry(NOW - 10, "sendTx", Q, "maker")]
    u = summarize(window, STANDARD, NOW, {"worker": 2}, Backoff(NOW + 400, 1_000))
    assert (u.used, u.limit, u.unit, u.requests, u.weight, u.http_429, u.backoff_left_ms) == \
        (3, 60, "requests", 3, 312, 2, 400)
    assert {p: (x.requests, x.weight, x.http_429) for p, x in u.by_process.items()} == \
        {"worker": (1, 6, 2), "maker": (2, 306, 0)}
    assert summarize(window, PREMIUM, NOW).used == 312
    assert u.to_json()["by_process"]["maker"] == {"requests": 2, "weight": 306, "http_429": 0}
