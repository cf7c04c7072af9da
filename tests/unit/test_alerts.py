"""The alerter's pure decisions (ops/alerts.py): what is alerted once, what clears, how it reads."""
from __future__ import annotations

import json
import logging
from dataclasses import replace

import pytest

from hedge.config import AlertsConfig
from ops import alerts as a
from ops.alerts import (AlertState, BudgetExhaustedEvent, Failure, HedgeFailedEvent, Pause, PausedEvent, ResumedEvent,
                        Snapshot, decide)

S = AlertsConfig(no_consumer_s=30, budget_wait_s=10, budget_clear_s=60)
T0 = 1_800_000_000_000


def snap(at_s: float = 0, paused=None, failed=None, heartbeat=True, listed=True, queue=0) -> Snapshot:
    return Snapshot(at_ms=T0 + int(at_s * 1000), paused={"ETH": None, "BTC": None, **(paused or {})},
                    failed={"ETH": {}, "BTC": {}, **(failed or {})}, heartbeat=heartbeat, consumer_listed=listed,
                    queue_length=queue)


def run(observations, settings=S, state=None):
    """Feed observations in order: the final state and every alert as (kind, state, market)."""
    state = state or AlertState()
    sent = []
    for seen in observations:
        state, alerts = decide(state, seen, settings)
        sent += alerts
    return state, sent


def kinds(alerts):
    return [(x.kind, x.state, x.market) for x in alerts]


# ---- pause, resume, flatten ------------------------------------------------------------------------

def test_a_pause_seen_by_event_and_by_every_snapshot_alerts_once_with_its_reason_then_resume_once():
    reason = "hedge hedge-ETH-12 failed: PermanentHedgeError: 21507 not enough margin"
    pause = Pause(reason, "maker")
    _, sent = run([PausedEvent(T0, "ETH", Pause(reason)), *(snap(i, paused={"ETH": pause}) for i in range(5)),
                   ResumedEvent(T0 + 6000, "ETH"), snap(7), ResumedEvent(T0 + 8000, "ETH")])
    assert kinds(sent) == [("paused", "firing", "ETH"), ("resumed", "resolved", "ETH")]
    assert reason in sent[0].summary and "lighter-hedge resume --market ETH" in sent[0].summary
    assert sent[0].severity == "critical"
    assert "paused 6s" in sent[1].summary and reason in sent[1].summary


def test_a_pause_that_recurs_alerts_again_and_a_resume_seen_only_by_snapshot_counts():
    _, sent = run([snap(0, paused={"ETH": Pause("a")}), snap(1), snap(2, paused={"ETH": Pause("b")}),
                   snap(3, paused={"ETH": Pause("c")})])
    assert kinds(sent) == [("paused", "firing", "ETH"), ("resumed", "resolved", "ETH"), ("paused", "firing", "ETH")]
    assert "b" in sent[2].summary.split(":")[1]


def test_flatten_alerts_as_flatten_also_on_a_market_already_paused_and_resume_ends_it():
    flat = Pause("flattened by operator", "flatten")
    _, sent = run([PausedEvent(T0, "BTC", flat), snap(1, paused={"BTC": flat})])
    assert kinds(sent) == [("flatten", "firing", "BTC")]
    _, sent = run([snap(0, paused={"ETH": Pause("hedge failed", "maker")}), PausedEvent(T0 + 500, "ETH", flat),
                   snap(1, paused={"ETH": flat}), snap(2)])
    assert kinds(sent) == [("paused", "firing", "ETH"), ("flatten", "firing", "ETH"), ("resumed", "resolved", "ETH")]
    assert "flattened by an operator" in sent[1].summary


def test_a_resume_of_a_market_never_seen_paused_says_nothing():
    assert run([ResumedEvent(T0, "ETH"), snap(1)])[1] == []


# ---- failed hedges ---------------------------------------------------------------------------------

def test_a_failed_hedge_alerts_once_clears_when_requeued_and_alerts_again_when_it_fails_again():
    first = Failure("hedge-ETH-7", "7", "HedgeError: nothing filled within max_slippage_bps", T0)
    again = replace(first, ts_ms=T0 + 9000)
    _, sent = run([HedgeFailedEvent(T0, "ETH", replace(first, ts_ms=None)), snap(1, failed={"ETH": {"hedge-ETH-7": first}}),
                   HedgeFailedEvent(T0 + 1500, "ETH", first), snap(2, failed={"ETH": {"hedge-ETH-7": first}}),
                   snap(3),                                                    # requeued: no longer failed
                   snap(10, failed={"ETH": {"hedge-ETH-7": again}}), HedgeFailedEvent(T0 + 10_500, "ETH", again)])
    assert kinds(sent) == [("hedge_failed", "firing", "ETH"), ("hedge_failed", "resolved", "ETH"),
                           ("hedge_failed", "firing", "ETH")]
    assert "hedge-ETH-7" in sent[0].summary and "max_slippage_bps" in sent[0].summary
    assert "lighter-hedge requeue hedge-ETH-7" in sent[0].summary
    assert dict(sent[0].details)["fill_id"] == "7"


def test_a_failure_that_recurs_between_two_snapshots_is_told_apart_by_its_time():
    first = Failure("hedge-ETH-7", "7", "x", T0)
    _, sent = run([snap(0, failed={"ETH": {"hedge-ETH-7": first}}),
                   HedgeFailedEvent(T0 + 5000, "ETH", replace(first, ts_ms=T0 + 4000))])
    assert kinds(sent) == [("hedge_failed", "firing", "ETH")] * 2


# ---- no consumer on hedge.b ------------------------------------------------------------------------

def test_no_heartbeat_for_no_consumer_s_alerts_once_then_once_when_a_worker_is_back():
    _, sent = run([snap(0), snap(1, heartbeat=False), snap(30, heartbeat=False, queue=3)])
    assert sent == []                                   # 29 s absent: inside the grace
    _, sent = run([snap(0), snap(1, heartbeat=False), *(snap(s, heartbeat=False, queue=3) for s in (31, 40, 50)),
                   snap(60), snap(61)])
    assert kinds(sent) == [("no_consumer", "firing", ""), ("no_consumer", "resolved", "")]
    assert "no hedge worker heartbeat" in sent[0].summary and "3 hedge(s) queued" in sent[0].summary
    assert "none for 59s" in sent[1].summary


def test_a_worker_that_beats_but_consumes_nothing_is_no_consumer_and_inspect_not_asked_trusts_the_heartbeat():
    _, sent = run([snap(0, listed=False), snap(31, listed=False)])
    assert kinds(sent) == [("no_consumer", "firing", "")]
    assert "inspect lists no consumer" in sent[0].summary
    assert run([snap(0, listed=None), snap(100, listed=None)])[1] == []


def test_a_consumer_back_inside_the_grace_restarts_the_clock():
    _, sent = run([snap(0, heartbeat=False), snap(20), snap(21, heartbeat=False), snap(45, heartbeat=False)])
    assert sent == []


# ---- the worker stopped (Flower's Shut Down), a control undone -------------------------------------

def test_a_worker_stop_alerts_once_with_its_reason_and_resolves_when_it_starts_again():
    why = "remote shutdown command (Flower's Shut Down, or `celery control shutdown`)"
    stopped = a.parse_event(json.dumps({"event": "worker.stopped", "worker": "hedge-b@h", "pid": 7, "reason": why}),
                            T0)
    assert stopped == a.WorkerStoppedEvent(T0, "hedge-b@h", why)
    started = a.parse_event(json.dumps({"event": "worker.started", "worker": "hedge-b@h", "pid": 8}), T0 + 4000)
    again = replace(stopped, at_ms=T0 + 1000)                     # a restart loop: still one alert
    state, sent = run([stopped, snap(0.5), again, snap(2), started, snap(5), started])
    assert kinds(sent) == [("worker_stopped", "firing", ""), ("worker_stopped", "resolved", "")]
    assert why in sent[0].summary and "hedge-b@h" in sent[0].summary and sent[0].severity == "warning"
    assert dict(sent[0].details)["reason"] == why
    assert "consumes hedge.b again (stopped 4s: " in sent[1].summary and "worker_stopped" not in state.active
    assert run([started])[1] == []                                 # a start alone says nothing


def test_a_worker_stop_whose_start_was_missed_resolves_from_a_heartbeat_newer_than_its_ttl():
    stopped = a.WorkerStoppedEvent(T0, "hedge-b@h", "SIGTERM (warm shutdown: ...)")
    # The old heartbeat is still fresh for up to its TTL (10 s) after the stop: not evidence.
    _, sent = run([stopped, snap(1), snap(9), snap(10)])
    assert kinds(sent) == [("worker_stopped", "firing", "")]
    _, sent = run([stopped, snap(1), snap(11, heartbeat=False), snap(12)])
    assert kinds(sent) == [("worker_stopped", "firing", ""), ("worker_stopped", "resolved", "")]
    assert "hedge-b@h consumes hedge.b again (stopped 12s" in sent[1].summary
    _, sent = run([stopped, snap(12, listed=False)])               # beats, but inspect lists no consumer
    assert kinds(sent) == [("worker_stopped", "firing", "")]


def test_each_control_the_worker_undid_is_one_alert():
    body = {"event": "worker.control_reverted", "control": "cancel_consumer", "worker": "hedge-b@h",
            "detail": "consumer of hedge.b cancelled; consuming it again", "within_ms": 640}
    undone = a.parse_event(json.dumps(body), T0)
    assert undone == a.ControlRevertedEvent(T0, "hedge-b@h", "cancel_consumer",
                                            "consumer of hedge.b cancelled; consuming it again", 640)
    state, sent = run([undone, replace(undone, control="rate_limit", detail="tasks.hedge_fill rate_limit 1/m set "
                                                                            "back to None", within_ms=0)])
    assert kinds(sent) == [("control_reverted", "firing", ""), ("control_reverted", "firing", "")]
    assert "(cancel_consumer)" in sent[0].summary and "undone within 640 ms" in sent[0].summary
    assert "rate_limit 1/m" in sent[1].summary and state == AlertState()
    assert a.parse_event(json.dumps({**body, "within_ms": "x"}), T0).within_ms == 0
    assert a.format_payload(sent[0], "plain", "lighter-hedge paper")["details"]["control"] == "cancel_consumer"


# ---- request budget -------------------------------------------------------------------------------

def budget_event(at_s: float) -> BudgetExhaustedEvent:
    return BudgetExhaustedEvent(T0 + int(at_s * 1000), "maker", "sendTx", "quote", 12_500,
                                "the limit is used")


def test_budget_exhausted_alerts_once_while_events_keep_coming_and_resolves_after_budget_clear_s_quiet():
    _, sent = run([budget_event(0), snap(1), budget_event(30), snap(31), snap(89), budget_event(89.5), snap(140),
                   snap(150), snap(151)])
    assert kinds(sent) == [("budget_exhausted", "firing", ""), ("budget_exhausted", "resolved", "")]
    assert "maker's sendTx (quote) waits 12.5s" in sent[0].summary and "the limit is used" in sent[0].summary
    assert sent[1].at_ms == T0 + 150_000


# ---- settings, state -------------------------------------------------------------------------------

def test_kinds_not_selected_are_not_sent_but_still_tracked():
    settings = replace(S, kinds=("paused",))
    state, sent = run([snap(0, paused={"ETH": Pause("x")}), snap(1), budget_event(2)], settings)
    assert kinds(sent) == [("paused", "firing", "ETH")]
    assert "budget_exhausted" in state.active


def test_the_state_survives_a_restart_so_an_ongoing_condition_is_not_alerted_again():
    state, _ = run([snap(0, paused={"ETH": Pause("x")}), budget_event(1), snap(2, paused={"ETH": Pause("x")},
                                                                                  heartbeat=False)])
    restored = AlertState.from_json(state.to_json())
    assert restored == state
    assert run([snap(3, paused={"ETH": Pause("x")}, heartbeat=False)], state=restored)[1] == []
    assert AlertState.from_json("not json") == AlertState() and AlertState.from_json(None) == AlertState()


def test_parse_event_reads_the_messages_the_code_publishes_and_ignores_the_rest():
    assert a.parse_event(json.dumps({"event": "paused", "market": "ETH", "reason": "r"}), T0) == \
        PausedEvent(T0, "ETH", Pause("r", ""))
    assert a.parse_event(json.dumps({"event": "resumed", "market": "ETH"}), T0) == ResumedEvent(T0, "ETH")
    failed = a.parse_event(json.dumps({"event": "hedge.failed", "market": "ETH", "fill_id": "9",
                                       "task_id": "hedge-ETH-9", "reason": "boom"}), T0)
    assert failed == HedgeFailedEvent(T0, "ETH", Failure("hedge-ETH-9", "9", "boom"))
    budget = a.parse_event(json.dumps({"event": "budget.exhausted", "process": "worker", "endpoint": "sendTx",
                                       "priority": "hedge", "wait_ms": 4000, "reason": "backoff",
                                       "why": "backing off after the venue answered 429"}), T0)
    assert budget == BudgetExhaustedEvent(T0, "worker", "sendTx", "hedge", 4000,
                                          "backing off after the venue answered 429")
    for junk in ("", "nope", "[1]", json.dumps({"event": "fill", "market": "ETH"}), json.dumps({"event": "paused"}),
                 json.dumps({"event": "hedge.failed", "market": "ETH"}), None):
        assert a.parse_event(junk, T0) is None


# ---- formats -------------------------------------------------------------------------------------

def paused_alert():
    _, sent = run([snap(0, paused={"ETH": Pause("hedge hedge-ETH-12 failed: 21507 margin", "maker")})])
    return sent[0]


def test_plain_format_is_the_whole_alert_as_json():
    body = a.format_payload(paused_alert(), "plain", "lighter-hedge live")
    json.dumps(body)
    assert body["kind"] == "paused" and body["state"] == "firing" and body["market"] == "ETH"
    assert body["severity"] == "critical" and body["source"] == "lighter-hedge live"
    assert body["details"] == {"reason": "hedge hedge-ETH-12 failed: 21507 margin", "by": "maker"}
    assert body["at"] == "2027-01-15T08:00:00.000Z" and body["at_ms"] == T0
    assert body["text"].startswith("[FIRING] lighter-hedge live: ETH paused: hedge hedge-ETH-12 failed")


def test_slack_and_telegram_formats():
    alert = paused_alert()
    slack = a.format_payload(alert, "slack", "lighter-hedge paper")
    assert list(slack) == ["text"] and slack["text"].startswith("[FIRING] lighter-hedge paper: ETH paused:")
    telegram = a.format_payload(alert, "telegram", "lighter-hedge paper", -1001234567890)
    assert telegram["chat_id"] == -1001234567890 and telegram["text"] == slack["text"]
    with pytest.raises(ValueError, match="alerts.telegram_chat_id"):
        a.format_payload(alert, "telegram", "x")
    with pytest.raises(ValueError, match="alerts.format"):
        a.format_payload(alert, "teams", "x")


# ---- delivery ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("status,result", [(200, "ok"), (204, "ok"), (None, "retry"), (429, "retry"), (500, "retry"),
                                           (503, "retry"), (408, "retry"), (400, "refused"), (403, "refused"),
                                           (404, "refused"), (301, "refused")])
def test_delivery_result(status, result):
    assert a.delivery_result(status) == result


def test_retry_delay_doubles_is_capped_honours_retry_after_and_stops_after_the_attempts():
    assert [a.retry_delay_s(n, 10, 503) for n in range(1, 8)] == [1, 2, 4, 8, 16, 30, 30]
    assert a.retry_delay_s(1, 5, 429, "7") == 7 and a.retry_delay_s(1, 5, 429, "600") == 30
    assert a.retry_delay_s(1, 5, 429, "Wed, 21 Oct 2015 07:28:00 GMT") == 1
    assert a.retry_delay_s(5, 5, 503) is None and a.retry_delay_s(1, 5, 404) is None
    assert a.retry_delay_s(1, 5, 200) is None


def test_logs_name_the_host_never_the_token():
    url = "https://user:pw@hooks.slack.com/services/T000/B000/XXXXSECRET?token=abc"
    assert a.webhook_target(url) == "https://hooks.slack.com"
    assert a.webhook_target("https://api.telegram.org/bot123456:ABC-DEF/sendMessage") == "https://api.telegram.org"
    assert a.webhook_target("http://127.0.0.1:8080/x") == "http://127.0.0.1:8080"
    line = a.delivery_line(paused_alert(), "slack", a.webhook_target(url), 2, "retry", 503, "HTTPError", 2.0)
    assert line == ("kind=paused state=firing market=ETH format=slack target=https://hooks.slack.com attempt=2 "
                    "result=retry status=503 error=HTTPError next_in_s=2")


def test_the_sender_retries_with_backoff_stops_at_the_attempts_and_logs_no_url(caplog):
    from ops.alerter import Sender, Webhook
    url = "https://hooks.example.com/services/SECRET-TOKEN-42"
    answers = iter([(503, None, "HTTPError"), (None, None, "TimeoutError"), (200, None, "")])
    posts, slept = [], []
    sender = Sender(Webhook(url, "slack", None, 5.0, 3), "lighter-hedge paper",
                    post=lambda u, body, timeout: posts.append(body) or next(answers), sleep=slept.append)
    caplog.set_level(logging.INFO, "ops.alerter")
    assert sender.deliver(paused_alert()) == "delivered"
    assert len(posts) == 3 and slept == [1.0, 2.0]
    assert [r.message.split()[0] for r in caplog.records] == ["event=alert.retry", "event=alert.retry",
                                                               "event=alert.delivered"]
    assert "SECRET-TOKEN-42" not in caplog.text and "kind=paused" in caplog.text and "market=ETH" in caplog.text

    caplog.clear()
    posts.clear()
    refused = Sender(Webhook(url, "plain", None, 5.0, 5), "x", post=lambda *_: posts.append(1) or (404, None, "HTTPError"),
                     sleep=slept.append)
    assert refused.deliver(paused_alert()) == "failed" and len(posts) == 1      # a 404 is not retried
    bounded = Sender(Webhook(url, "plain", None, 5.0, 4), "x", post=lambda *_: posts.append(1) or (500, None, "HTTPError"),
                     sleep=lambda s: None)
    assert bounded.deliver(paused_alert()) == "failed" and len(posts) == 1 + 4
    assert "event=alert.undelivered" in caplog.text and "SECRET-TOKEN-42" not in caplog.text
    assert "SECRET" not in repr(Webhook(url, "plain", None, 5.0, 4))


def test_the_budget_publishes_on_the_channel_the_alerter_listens_on():
    from tasks.store import events_channel
    from venue.budget import budget_from_config
    from hedge.config import parse_config
    import redis
    cfg = parse_config({"lighter": {"base_url": "http://127.0.0.1:1", "ws_url": "ws://127.0.0.1:1/stream"},
                        "redis": {"url": "redis://127.0.0.1:6379/7"},
                        "accounts": {"account_a": {"account_index": 1, "api_key_index": 3},
                                     "account_b": {"account_index": 2, "api_key_index": 4}},
                        "markets": {"ETH": {"quantity": "0.05"}}, "strategy": {}, "alerts": {"budget_wait_s": 2.5}})
    budget = budget_from_config(cfg, redis.Redis.from_url("redis://127.0.0.1:6379/7"))
    assert budget.events_channel == events_channel(7) and budget.exhausted_wait_ms == 2500


def test_without_a_webhook_alerts_are_logged_only(caplog):
    from ops.alerter import Sender
    caplog.set_level(logging.INFO, "ops.alerter")
    assert Sender(None, "lighter-hedge paper").deliver(paused_alert()) == "logged"
    assert "event=alert.logged kind=paused state=firing market=ETH" in caplog.text
