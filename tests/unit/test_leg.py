"""hedge.leg: the hedge leg record, its transitions, its storage, and the rule that resolves a leg in doubt.

The rule must never void (REJECT / EXPIRE) a leg the venue may still execute: only the venue's word,
another tx surely holding its nonce, or its ExpiredAt (plus margin) passing may close it.
"""
from __future__ import annotations

import dataclasses
import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from hedge.leg import (
    EXPIRY_MARGIN_MS,
    NONCE_MOVED,
    Evidence,
    Leg,
    LegState,
    LegStateError,
    OrderSeen,
    Verdict,
    resolve,
)

LAG = 2_000
SENT = 1_000_000
EXPIRES = SENT + 600_000
DEADLINE = EXPIRES + EXPIRY_MARGIN_MS   # the last ms at which the leg is not yet expired
NONCE = 40

OPEN = [LegState.WRITTEN, LegState.SENT, LegState.TAKEN]
CLOSED = [LegState.EXECUTED, LegState.REJECTED, LegState.EXPIRED]


def mk(state=LegState.SENT, *, is_ask=True, nonce=NONCE, expires_by_ms=EXPIRES, sent_ms=SENT, written_ms=SENT - 10,
       witness="", tx_hash="0xabc") -> Leg:
    return Leg(leg=7, client_order_index=281001 * 2**40 + 7, is_ask=is_ask, base_int=500, worst_price_int=12345,
               fill_id="f-1", state=state, written_ms=written_ms, api_key_index=3, nonce=nonce,
               expires_by_ms=expires_by_ms, tx_hash=tx_hash, sent_ms=sent_ms, witness=witness)


def ev(now_ms=SENT + 10_000, **kw) -> Evidence:
    return Evidence(now_ms=now_ms, **kw)


# ---- resolve: one branch at a time -----------------------------------------------------------

@pytest.mark.parametrize("state", OPEN)
def test_an_order_the_venue_lists_final_is_settled(state):
    # Even past expiry and with a failure report: the venue's order stream is the final word.
    res = resolve(mk(state), ev(now_ms=DEADLINE + 1, order=OrderSeen.FINAL, tx_failed="code 21"), LAG)
    assert res.verdict is Verdict.SETTLE
    assert "final" in res.why


@pytest.mark.parametrize("state", OPEN)
def test_an_order_the_venue_lists_active_is_taken_not_voided(state):
    res = resolve(mk(state), ev(now_ms=DEADLINE + 1, order=OrderSeen.ACTIVE,
                                nonce_taken_by_other="leg 3"), LAG)
    assert res.verdict is Verdict.TAKEN
    assert "lists the order" in res.why


@pytest.mark.parametrize("state", OPEN)
def test_a_tx_the_venue_reports_failed_is_rejected_naming_the_failure(state):
    res = resolve(mk(state), ev(tx_failed="code 21120: invalid nonce", tx_known=True), LAG)
    assert res.verdict is Verdict.REJECT
    assert "code 21120: invalid nonce" in res.why


@pytest.mark.parametrize("state", OPEN)
def test_a_leg_whose_nonce_another_tx_took_is_rejected_naming_both(state):
    res = resolve(mk(state), ev(nonce_taken_by_other="leg 3"), LAG)
    assert res.verdict is Verdict.REJECT
    assert f"nonce {NONCE}" in res.why and "leg 3" in res.why


@pytest.mark.parametrize("leg, evidence, verdict", [
    (mk(LegState.TAKEN, witness="answered 200"), ev(), Verdict.WAIT),          # already TAKEN: keep waiting
    (mk(LegState.SENT), ev(tx_known=True), Verdict.TAKEN),                     # known by hash: mark it TAKEN
    (mk(LegState.WRITTEN, sent_ms=None), ev(tx_known=True), Verdict.TAKEN),
    (mk(LegState.TAKEN, nonce=None), ev(now_ms=DEADLINE), Verdict.WAIT),       # the last ms before expiry
], ids=["taken", "sent-known", "written-known", "taken-at-deadline"])
def test_a_taken_leg_before_its_expiry_waits_for_the_venue(leg, evidence, verdict):
    res = resolve(leg, evidence, LAG)
    assert res.verdict is verdict
    assert "took it" in res.why


@pytest.mark.parametrize("leg, evidence", [
    (mk(LegState.TAKEN, witness="answered 200"), ev(now_ms=DEADLINE + 1)),
    (mk(LegState.SENT), ev(now_ms=DEADLINE + 1, tx_known=True)),
], ids=["taken", "tx-known"])
def test_a_taken_leg_past_its_expiry_and_margin_expires(leg, evidence):
    res = resolve(leg, evidence, LAG)
    assert res.verdict is Verdict.EXPIRE
    assert str(EXPIRES) in res.why


@pytest.mark.parametrize("now_ms, verdict", [
    (SENT + 10_000, Verdict.WAIT), (DEADLINE, Verdict.WAIT), (DEADLINE + 1, Verdict.EXPIRE),
])
def test_a_leg_without_a_nonce_is_closed_only_by_its_expiry(now_ms, verdict):
    res = resolve(mk(LegState.SENT, nonce=None), ev(now_ms=now_ms, next_nonce=NONCE + 5, nonce_read_ms=now_ms), LAG)
    assert res.verdict is verdict
    assert "no nonce recorded" in res.why


def test_a_leg_without_a_nonce_or_an_expiry_is_never_expired():
    res = resolve(mk(LegState.SENT, nonce=None, expires_by_ms=None), ev(now_ms=10**13), LAG)
    assert res.verdict is Verdict.WAIT


@pytest.mark.parametrize("evidence, at_ms", [
    (ev(now_ms=SENT + 100), SENT + LAG),                                            # no read: wait out the lag
    (ev(now_ms=SENT + 10_000), SENT + 10_000),                                      # no read, lag over: now
    (ev(now_ms=SENT + 10_000, next_nonce=NONCE, nonce_read_ms=SENT + LAG - 1), SENT + 10_000),  # read too early
    (ev(now_ms=SENT + 500, next_nonce=NONCE + 1, nonce_read_ms=SENT + 400), SENT + LAG),
    (ev(now_ms=SENT + 10_000, next_nonce=NONCE), SENT + 10_000),                    # a value without its time
    (ev(now_ms=SENT + 10_000, nonce_read_ms=SENT + 9_000), SENT + 10_000),          # a time without a value
], ids=["none-early", "none-late", "read-early", "read-early-moved", "no-read-time", "no-value"])
def test_without_a_nonce_read_after_the_lag_the_nonce_is_read(evidence, at_ms):
    res = resolve(mk(LegState.SENT), evidence, LAG)
    assert res.verdict is Verdict.READ_NONCE
    assert res.at_ms == at_ms == max(SENT + LAG, evidence.now_ms)
    assert "nonce decides" in res.why


def test_a_leg_never_sent_measures_the_nonce_lag_from_when_it_was_written():
    res = resolve(mk(LegState.WRITTEN, sent_ms=None, written_ms=SENT - 50), ev(now_ms=SENT), LAG)
    assert res.verdict is Verdict.READ_NONCE
    assert res.at_ms == SENT - 50 + LAG


@pytest.mark.parametrize("state", [LegState.WRITTEN, LegState.SENT])
@pytest.mark.parametrize("next_nonce", [NONCE + 1, NONCE + 9])
def test_a_nonce_read_after_the_lag_that_moved_past_the_leg_means_taken(state, next_nonce):
    res = resolve(mk(state), ev(next_nonce=next_nonce, nonce_read_ms=SENT + LAG), LAG)
    assert res.verdict is Verdict.TAKEN
    assert f"next nonce {next_nonce} is past the leg's {NONCE}" in res.why


def test_a_nonce_that_moved_but_whose_expiry_passed_expires():
    res = resolve(mk(LegState.SENT), ev(now_ms=DEADLINE + 1, next_nonce=NONCE + 1, nonce_read_ms=DEADLINE), LAG)
    assert res.verdict is Verdict.EXPIRE
    assert f"nonce {NONCE} used" in res.why


@pytest.mark.parametrize("next_nonce", [NONCE, NONCE - 3])
@pytest.mark.parametrize("now_ms", [SENT + 10_000, DEADLINE + 1])
def test_a_nonce_read_after_the_lag_that_has_not_moved_fences(next_nonce, now_ms):
    # Not moved: fence it (never REJECT or EXPIRE: the tx may still arrive until the fence takes its nonce).
    res = resolve(mk(LegState.SENT), ev(now_ms=now_ms, next_nonce=next_nonce, nonce_read_ms=SENT + LAG), LAG)
    assert res.verdict is Verdict.FENCE
    assert f"next nonce {next_nonce} has not moved past {NONCE}" in res.why


@pytest.mark.parametrize("state", CLOSED)
def test_a_closed_leg_cannot_be_resolved(state):
    with pytest.raises(LegStateError, match=state.name):
        resolve(mk(state), ev(order=OrderSeen.FINAL), LAG)


# ---- resolve: the safety property ------------------------------------------------------------

def mostly(usual, *others):
    """Mostly `usual`: the undecided case, where the nonce and the clock decide, is the one to probe."""
    return st.sampled_from([usual] * 4 + list(others))


def opt_int(lo, hi):
    return mostly(None) | st.integers(lo, hi) | st.integers(lo, hi)


legs = st.builds(
    mk,
    state=st.sampled_from(OPEN),
    is_ask=st.booleans(),
    nonce=opt_int(0, 50),
    expires_by_ms=opt_int(0, 40_000),
    sent_ms=opt_int(0, 20_000),
    written_ms=st.integers(0, 20_000),
    witness=st.sampled_from(["", "answered 200", "listed", "known by hash", NONCE_MOVED]),
    tx_hash=st.none() | st.just("0xabc"),
)
evidences = st.builds(
    Evidence,
    now_ms=st.integers(0, 60_000),
    order=mostly(OrderSeen.NOT_SEEN, OrderSeen.ACTIVE, OrderSeen.FINAL),
    tx_failed=mostly(None, "code 1"),
    tx_known=mostly(False, True),
    nonce_taken_by_other=mostly(None, "leg 2"),
    next_nonce=opt_int(0, 55),
    nonce_read_ms=opt_int(0, 40_000),
)


near = st.integers(-2, 2)   # pushes a time onto either side of a boundary


@st.composite
def cases(draw):
    """A leg, evidence and lag, with the read time and `now` often right at their boundaries."""
    leg, evidence, lag = draw(legs), draw(evidences), draw(st.integers(0, 10_000))
    sent_ms = leg.sent_ms if leg.sent_ms is not None else leg.written_ms
    if evidence.nonce_read_ms is not None and draw(st.booleans()):
        evidence = dataclasses.replace(evidence, nonce_read_ms=sent_ms + lag + draw(near))
    if leg.expires_by_ms is not None and draw(st.booleans()):
        evidence = dataclasses.replace(evidence, now_ms=leg.expires_by_ms + EXPIRY_MARGIN_MS + draw(near))
    if leg.nonce is not None and evidence.next_nonce is not None and draw(st.booleans()):
        evidence = dataclasses.replace(evidence, next_nonce=leg.nonce + draw(near))
    return leg, evidence, lag


@settings(max_examples=3000, deadline=None)
@given(cases())
def test_no_leg_is_voided_on_elapsed_time_before_its_expiry(case):
    leg, evidence, lag = case
    res = resolve(leg, evidence, lag)
    past_expiry = leg.expires_by_ms is not None and evidence.now_ms > leg.expires_by_ms + EXPIRY_MARGIN_MS
    if res.verdict in (Verdict.REJECT, Verdict.EXPIRE):
        assert evidence.order is OrderSeen.NOT_SEEN          # a listed order is never voided
        assert evidence.tx_failed is not None or evidence.nonce_taken_by_other is not None or past_expiry
    if res.verdict is Verdict.EXPIRE:
        assert past_expiry
    if res.verdict is Verdict.FENCE:
        sent_ms = leg.sent_ms if leg.sent_ms is not None else leg.written_ms
        assert leg.nonce is not None and evidence.next_nonce is not None and evidence.nonce_read_ms is not None
        assert evidence.nonce_read_ms >= sent_ms + lag
        assert evidence.next_nonce <= leg.nonce
    if res.verdict is Verdict.READ_NONCE:
        sent_ms = leg.sent_ms if leg.sent_ms is not None else leg.written_ms
        assert res.at_ms == max(sent_ms + lag, evidence.now_ms)
    else:
        assert res.at_ms is None
    assert res.why


# ---- transitions ----------------------------------------------------------------------------

def test_the_happy_path_gives_new_frozen_records_and_leaves_each_original_unchanged():
    written = mk(LegState.WRITTEN, sent_ms=None, tx_hash=None, expires_by_ms=SENT + 600_000)
    sent = written.sent(SENT, "0xfeed", EXPIRES + 1)
    taken = sent.taken("answered 200")
    done = taken.executed("filled", order_index=99, executed_int=300, filled_quote="3.70")

    assert [x.state for x in (written, sent, taken, done)] == [
        LegState.WRITTEN, LegState.SENT, LegState.TAKEN, LegState.EXECUTED]
    assert (written.sent_ms, written.tx_hash, written.expires_by_ms) == (None, None, SENT + 600_000)
    assert (sent.sent_ms, sent.tx_hash, sent.expires_by_ms) == (SENT, "0xfeed", EXPIRES + 1)
    assert (sent.witness, taken.witness, taken.tx_hash) == ("", "answered 200", "0xfeed")
    assert (taken.status, taken.executed_int) == (None, 0)
    assert (done.status, done.order_index, done.executed_int, done.filled_quote) == ("filled", 99, 300, "3.70")
    with pytest.raises(dataclasses.FrozenInstanceError):
        done.state = LegState.TAKEN  # type: ignore[misc]


def test_a_resend_without_a_hash_or_expiry_keeps_the_known_ones():
    leg = mk(LegState.SENT, tx_hash="0xold", expires_by_ms=EXPIRES)
    again = leg.sent(SENT + 5, None, None)
    assert (again.state, again.sent_ms, again.tx_hash, again.expires_by_ms) == (
        LegState.SENT, SENT + 5, "0xold", EXPIRES)
    assert leg.taken("listed", tx_hash=None).tx_hash == "0xold"


TRANSITIONS = {
    "sent": (lambda leg: leg.sent(SENT, "0x1", EXPIRES), {LegState.WRITTEN, LegState.SENT}, LegState.SENT),
    "taken": (lambda leg: leg.taken("listed"), set(OPEN), LegState.TAKEN),
    "executed": (lambda leg: leg.executed("filled", 1, 5, "1"), set(OPEN), LegState.EXECUTED),
    "rejected": (lambda leg: leg.rejected("code 21"), set(OPEN), LegState.REJECTED),
    "expired": (lambda leg: leg.expired("ExpiredAt passed"), set(OPEN), LegState.EXPIRED),
}


@pytest.mark.parametrize("start", list(LegState))
@pytest.mark.parametrize("name", list(TRANSITIONS))
def test_each_transition_is_allowed_exactly_from_its_states(start, name):
    go, allowed_from, target = TRANSITIONS[name]
    leg = mk(start)
    if start in allowed_from:
        new = go(leg)
        assert new.state is target and new is not leg
        assert leg.state is start and leg == mk(start)   # the original record is untouched
    else:
        with pytest.raises(LegStateError, match=f"{start.name} to {target.name}"):
            go(leg)


def test_rejected_and_expired_record_why():
    assert mk(LegState.TAKEN).rejected("nonce 40 was taken by leg 3").note == "nonce 40 was taken by leg 3"
    assert mk(LegState.SENT).expired("ExpiredAt passed").note == "ExpiredAt passed"


@pytest.mark.parametrize("is_ask, hedged, in_flight", [(True, 300, 500), (False, -300, -500)])
def test_executed_counts_in_a_direction_a_sell_covers_an_a_buy(is_ask, hedged, in_flight):
    leg = mk(LegState.TAKEN, is_ask=is_ask)
    assert leg.in_flight_units == in_flight
    assert leg.executed("filled", 1, executed_int=300, filled_quote="3").hedged_units == hedged


def test_open_states():
    assert {s for s in LegState if s.open} == set(OPEN)


@pytest.mark.parametrize("state, witness, surely", [
    (LegState.TAKEN, "answered 200", True),
    (LegState.TAKEN, "listed", True),
    (LegState.TAKEN, "known by hash", True),
    (LegState.TAKEN, NONCE_MOVED, False),    # some tx with its nonce, maybe not this one
    (LegState.SENT, "answered 200", False),  # not taken at all
    (LegState.EXECUTED, "answered 200", False),
])
def test_surely_taken_only_when_the_venue_took_this_very_tx(state, witness, surely):
    assert mk(state, witness=witness).surely_taken is surely


# ---- storage --------------------------------------------------------------------------------

def full_leg(state: LegState) -> Leg:
    return Leg(leg=12, client_order_index=5 * 2**40 + 12, is_ask=False, base_int=77, worst_price_int=31337,
               fill_id="trade-9", state=state, written_ms=111, api_key_index=4, nonce=8, expires_by_ms=999_999,
               tx_hash="0xdead", sent_ms=222, witness="answered 200", status="filled", order_index=5151,
               executed_int=70, filled_quote="12.5", hedged_units=-70, note="venue: ok")


@pytest.mark.parametrize("state", list(LegState))
def test_json_round_trip_keeps_every_field_in_every_state(state):
    leg = full_leg(state)
    back = Leg.from_json(leg.to_json())
    assert back == leg
    assert back.state is state
    assert json.loads(leg.to_json())["state"] == state.value


@settings(max_examples=300)
@given(leg=legs)
def test_json_round_trip_of_any_open_leg(leg):
    assert Leg.from_json(leg.to_json()) == leg


@pytest.mark.parametrize("old, state", [
    ("PENDING", LegState.SENT), ("DONE", LegState.EXECUTED), ("VOID", LegState.REJECTED)])
def test_a_legacy_record_maps_to_a_typed_leg_ignoring_unknown_keys(old, state):
    raw = {"leg": 3, "client_order_index": 2**40 + 3, "is_ask": True, "base_int": 40, "worst_price_int": 900,
           "fill_id": "t-1", "sent_ms": 1_700_000_000_000, "state": old,
           "send_ms": 1_700_000_000_001, "venue": "lighter"}
    leg = Leg.from_json(json.dumps(raw))
    assert leg.state is state
    assert (leg.leg, leg.client_order_index, leg.is_ask, leg.base_int, leg.worst_price_int, leg.fill_id) == (
        3, 2**40 + 3, True, 40, 900, "t-1")
    assert leg.sent_ms == leg.written_ms == 1_700_000_000_000
    assert (leg.nonce, leg.tx_hash, leg.api_key_index) == (None, None, None)   # an old engine kept none


def test_a_legacy_record_without_a_send_time_is_written_at_zero():
    raw = {"leg": 1, "client_order_index": 1, "is_ask": False, "base_int": 1, "worst_price_int": 1,
           "fill_id": "t", "sent_ms": None, "state": "PENDING"}
    leg = Leg.from_json(json.dumps(raw))
    assert (leg.state, leg.sent_ms, leg.written_ms) == (LegState.SENT, None, 0)


def test_a_record_of_an_unknown_state_is_refused():
    raw = json.loads(full_leg(LegState.SENT).to_json()) | {"state": "lost"}
    with pytest.raises(ValueError):
        Leg.from_json(json.dumps(raw))
