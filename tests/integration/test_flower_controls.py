"""Flower that cannot break the contract (issue 13): its worker controls against the stack as `up` runs it.

One supervisord stack for the module (sim, Flower, worker, maker and the alerter with a local webhook
receiver), started in `up`'s order but with Flower first, before any worker: Flower must list hedge.b
from the start. Then Cancel Consumer (and Add Consumer, a rate limit, pool grow) through Flower's API:
the worker undoes each within a second or two, says so (event, alert), and the next fill is hedged.
Then Shut Down through Flower's API: the worker exits 0, supervisord starts it again, and the webhook
gets the worker_stopped alert with the reason and its resolution. Every wait is on an event with a
deadline. And the pure display function: what Flower shows of a hedge's arguments.
"""
from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import redis
import yaml

from ops import supervise
from tests.integration.cluster import A, B, MASTER
from tests.integration.test_alerts import Receiver
from tests.integration.test_flower import PASSWORD, Flower   # Flower's client logs in as operator / PASSWORD
from venue.sim.harness import free_port, profile_config, wait_until

pytestmark = pytest.mark.integration
Q = Decimal("0.0500")


class Events:
    """Every event the stack publishes on its events channel (Store.publish_event), collected by a thread."""

    def __init__(self, store):
        self.seen: list[dict] = []
        self._pubsub = store.r.pubsub(ignore_subscribe_messages=True)
        self._pubsub.subscribe(store.events_channel)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            message = self._pubsub.get_message(timeout=0.1)
            if message and message.get("type") == "message":
                try:
                    self.seen.append(json.loads(message["data"]))
                except ValueError:
                    pass

    def find(self, name: str, since: int = 0, **fields: Any) -> dict | None:
        for event in self.seen[since:]:
            if event.get("event") == name and all(event.get(k) == v for k, v in fields.items()):
                return event
        return None

    def close(self) -> None:
        self._stop.set()
        self._thread.join(2)
        self._pubsub.close()


@dataclass
class Stack:
    env: dict
    flower: Flower
    receiver: Receiver
    events: Events
    store: Any
    sim_url: str
    worker: str                     # Celery's name of the hedge worker, as Flower lists it
    queues_before_worker: list      # Flower's /api/queues/length while no worker had ever run
    broker_page_before_worker: str

    def sim(self, path: str, payload: dict | None = None) -> dict:
        import urllib.request
        req = urllib.request.Request(self.sim_url + path, method="GET" if payload is None else "POST",
                                     data=None if payload is None else json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
        with opener.open(req, timeout=10) as resp:
            return json.loads(resp.read())

    def position(self, account: int) -> Decimal:
        return Decimal(self.sim("/admin/state")["accounts"][str(account)]["markets"]["0"]["position"])

    def resting(self) -> list[dict]:
        return self.sim(f"/admin/orders?account_index={A}&market_id=0")["orders"]

    def fill_resting_order(self) -> str:
        orders = wait_until(self.resting, 30, "A's resting order")
        assert len(orders) == 1, orders
        trade_ids = self.sim("/admin/fill", {"account_index": A, "market_id": 0,
                                             "order_index": orders[0]["order_index"], "sizes": ["0.0500"]})["trade_ids"]
        assert len(trade_ids) == 1, trade_ids
        return str(trade_ids[0])

    def alerts(self, kind: str, state: str = "firing") -> list[dict]:
        return [p for p in self.receiver.posts if p["kind"] == kind and p["state"] == state]

    def consumes_hedge_b(self) -> dict | None:
        """Flower's fresh inspect of the worker when it consumes hedge.b and only that: its stats."""
        status, text = self.flower.request("GET", f"/api/workers?refresh=1&workername={self.worker}")
        info = json.loads(text).get(self.worker) if status == 200 else None
        if not info or [q.get("name") for q in info.get("active_queues") or []] != ["hedge.b"]:
            return None
        return info


def _config(path: Path, redis_url: str, keys_file: str) -> Path:
    sim_port = free_port()
    sim = profile_config("instant", {"taker_flow": False, "random_walk": False, "accounts": [
        {"index": A, "master": MASTER, "collateral": "1000000", "api_key_indexes": [3]},
        {"index": B, "master": MASTER, "collateral": "1000000", "api_key_indexes": [4]}]})
    path.write_text(yaml.safe_dump({
        "mode": "paper",
        "lighter": {"base_url": f"http://127.0.0.1:{sim_port}", "ws_url": f"ws://127.0.0.1:{sim_port}/stream"},
        "redis": {"url": redis_url},
        "keys_file": keys_file,
        "accounts": {"account_a": {"account_index": A, "api_key_index": 3},
                     "account_b": {"account_index": B, "api_key_index": 4}},
        "markets": {"ETH": {"quantity": "0.0500", "depth": 1, "post_only": True}},
        "strategy": {"maker_order_timeout_s": 60, "max_retries": 2, "retry_backoff_max_s": 1, "max_slippage_bps": 50,
                     "hedge_wait_timeout_s": 60},
        "flower": {"port": free_port()},
        "metrics": {"maker_port": 0, "worker_port": 0, "alerter_port": 0},
        "alerts": {"enabled": True, "format": "plain", "consumer_check": "heartbeat", "poll_interval_s": 0.2,
                   "delivery_attempts": 3, "delivery_timeout_s": 2},
        "sim": sim,
    }))
    return path


@pytest.fixture(scope="module")
def stack(tmp_path_factory, redis_url, keys_file):
    from ops.settings import load_config
    from tasks.store import Store
    tmp = tmp_path_factory.mktemp("flower-controls")
    redis.Redis.from_url(redis_url).flushdb()
    receiver = Receiver()
    config = _config(tmp / "config.yaml", redis_url, keys_file)
    cfg = load_config(config)
    store = Store.from_url(redis_url)
    events = Events(store)
    with pytest.MonkeyPatch.context() as mp:   # what `up` is given: the webhook, Flower's password
        mp.setenv("LH_ALERT_WEBHOOK_URL", receiver.url)
        mp.setenv("LH_FLOWER_PASSWORD", PASSWORD)
        mp.delenv("LH_FLOWER_USER", raising=False)
        env = supervise.supervisor_env(cfg, config, tmp / "run", tmp / "logs", autostart=False)
        try:
            supervise.start(env, cfg)            # the sim and the alerter start with supervisord
        except BaseException:
            receiver.close()
            events.close()
            raise
    try:
        flower = Flower(cfg.flower_port)
        # Flower before any worker: hedge.b must be listed all the same (celeryconfig task_queues).
        supervise.start_programs(env, ["flower"], already_started=("sim",), ready=supervise.readiness(cfg, env))
        queues_before = flower.get_json("/api/queues/length")["active_queues"]
        broker_page = flower.request("GET", "/broker")[1]
        supervise.start_programs(env, ["worker", "maker"], ready=supervise.readiness(cfg, env))
        alerter_log = tmp / "logs" / "alerter.log"
        wait_until(lambda: alerter_log.exists() and "event=alerter.listening" in alerter_log.read_text(), 30,
                   "the alerter listening")
        workers = wait_until(lambda: [n for n in flower.get_json("/api/workers?refresh=1") if n.startswith("hedge-b@")],
                             30, "Flower to list the hedge worker")
        yield Stack(env, flower, receiver, events, store, cfg.base_url, workers[0], queues_before, broker_page)
    finally:
        supervise.shutdown(env)
        events.close()
        receiver.close()
        redis.Redis.from_url(redis_url).flushdb()


def test_flower_started_before_any_worker_lists_hedge_b(stack):
    names = [q["name"] for q in stack.queues_before_worker]
    assert "hedge.b" in names, stack.queues_before_worker
    assert "lighter-hedge.default" in names             # the default queue stays declared
    assert "hedge.b" in stack.broker_page_before_worker
    # And once the worker runs it consumes hedge.b alone (its -Q), which Flower lists with its length.
    assert wait_until(stack.consumes_hedge_b, 15, "the worker consuming hedge.b")
    assert [q["name"] for q in stack.flower.get_json("/api/queues/length")["active_queues"]] == ["hedge.b"]


def test_cancel_consumer_and_the_other_worker_controls_are_undone_and_the_next_fill_is_hedged(stack):
    s, mark = stack, len(stack.events.seen)
    status, text = s.flower.request("POST", f"/api/worker/queue/cancel-consumer/{s.worker}?queue=hedge.b")
    assert status == 200 and "no longer consuming from hedge.b" in text, (status, text)
    cancelled = time.monotonic()
    undone = wait_until(lambda: s.events.find("worker.control_reverted", mark, control="cancel_consumer"), 10,
                        "the worker to consume hedge.b again")
    assert time.monotonic() - cancelled < 3 and undone["within_ms"] < 2000, undone
    assert wait_until(s.consumes_hedge_b, 10, "Flower's inspect to list hedge.b again")
    alert = wait_until(lambda: s.alerts("control_reverted"), 15, "the control_reverted alert")[0]
    assert alert["details"]["control"] == "cancel_consumer" and alert["details"]["worker"] == s.worker

    # Add Consumer (another queue): cancelled again, hedge.b only.
    status, text = s.flower.request("POST", f"/api/worker/queue/add-consumer/{s.worker}?queue=lighter-hedge.default")
    assert status == 200, (status, text)
    wait_until(lambda: s.events.find("worker.control_reverted", mark, control="add_consumer"), 10,
               "the added consumer cancelled")
    # A rate limit and time limits on the hedge task: set back (a rate limit is ignored meanwhile:
    # worker_disable_rate_limits; the solo pool enforces no time limit).
    for path, what in ((f"/api/task/rate-limit/tasks.hedge_fill?workername={s.worker}&ratelimit=1/m", "rate_limit"),
                       (f"/api/task/timeout/tasks.hedge_fill?workername={s.worker}&soft=1&hard=2", "time_limit")):
        status, text = s.flower.request("POST", path)
        assert status == 200, (path, status, text)
        wait_until(lambda: s.events.find("worker.control_reverted", mark, control=what), 10, f"{what} set back")
    # Grow / shrink / autoscale / restart pool: refused, with why; nothing changes.
    for path in (f"/api/worker/pool/grow/{s.worker}?n=1", f"/api/worker/pool/shrink/{s.worker}?n=1",
                 f"/api/worker/pool/autoscale/{s.worker}?min=1&max=2", f"/api/worker/pool/restart/{s.worker}"):
        status, text = s.flower.request("POST", path)
        assert status == 403 and "refused: the " in text, (path, status, text)
    assert wait_until(s.consumes_hedge_b, 10, "hedge.b consumed after all of that")

    # A fill now: its hedge completes on B, and Flower shows its arguments and result as JSON.
    fill_id = s.fill_resting_order()
    wait_until(lambda: s.position(B) == -Q, 30, "B hedged short 0.05")
    task_id = f"hedge-ETH-{fill_id}"
    task = wait_until(lambda: (t := s.flower.get_json("/api/tasks").get(task_id)) and t.get("state") == "SUCCESS"
                      and t, 30, f"Flower to list {task_id} as SUCCESS", interval_s=0.2)
    shown = json.loads(task["args"])[0]
    assert (shown["market"], shown["fill_id"], shown["a_side"], shown["b_side"], shown["base_amount"]) == \
        ("ETH", fill_id, "buy", "sell", "0.0500")
    assert shown["fill_ts"].endswith("Z") and shown["fill"]["fill_id"] == fill_id
    assert "auth" in json.loads(task["kwargs"])
    result = json.loads(task["result"])
    assert result["fill_id"] == fill_id and Decimal(result["filled_base"]) == Q
    assert len(s.alerts("control_reverted")) >= 4 and not s.alerts("worker_stopped")


def test_shut_down_from_flower_restarts_the_worker_which_consumes_hedge_b_again_and_alerts(stack):
    s, mark = stack, len(stack.events.seen)
    server = supervise.rpc(s.env)
    before = server.getProcessInfo("worker")
    status, text = s.flower.request("POST", f"/api/worker/shutdown/{s.worker}")
    assert status == 200, (status, text)
    asked = time.monotonic()
    stopped = wait_until(lambda: s.events.find("worker.stopped", mark), 30, "worker.stopped")
    assert "Flower's Shut Down" in stopped["reason"] and stopped["pid"] == before["pid"]
    started = wait_until(lambda: s.events.find("worker.started", mark), 60, "the worker started again")
    back_s = time.monotonic() - asked
    assert started["pid"] != before["pid"] and back_s < 30, (started, back_s)
    after = server.getProcessInfo("worker")
    assert after["statename"] == "RUNNING" and after["pid"] == started["pid"] and after["exitstatus"] == 0
    info = wait_until(s.consumes_hedge_b, 15, "the restarted worker consuming hedge.b")
    assert info["stats"]["pid"] == started["pid"]

    fired = wait_until(lambda: s.alerts("worker_stopped"), 15, "the worker_stopped alert")[0]
    assert "Flower's Shut Down" in fired["summary"] and fired["details"]["reason"] == stopped["reason"]
    resolved = wait_until(lambda: s.alerts("worker_stopped", "resolved"), 15, "the worker_stopped resolution")[0]
    assert "consumes hedge.b again" in resolved["summary"]

    # A's closing order (the maker went on quoting): its fill is hedged by the restarted worker.
    s.fill_resting_order()
    wait_until(lambda: s.position(B) == 0 and s.position(A) == 0, 30, "A and B flat again")


# ---- what Flower shows of a hedge's arguments: tasks/display.py (pure) ------------------------------

def test_the_task_reprs_are_json_with_the_symbol_both_sides_decimal_sizes_and_iso_times_and_no_key():
    from tasks.display import hedge_reprs, iso_ms, result_repr
    from tasks.signing import MessageSigner
    key = bytes(range(32))
    markets = {"ETH": SimpleNamespace(market_index=0), "BTC": SimpleNamespace(market_index=1)}
    fill = {"fill_id": "123", "market_index": 1, "side": "sell", "base_amount": "0.00200", "price": "100000.0",
            "order_index": 281474976710700, "client_order_index": 2872492576, "ts_exchange_ms": 1795307841388,
            "ts_seen_ms": 1795307841391}
    auth = MessageSigner(key).sign(fill, "1795307000000-9f2c01ab")
    kwargs = {"auth": auth, "hint": {"fills": 3, "a_filled": 600, "hedged": 400, "pending_legs": 0, "leg_seq": None}}
    shown = hedge_reprs([fill], kwargs, markets)
    args = json.loads(shown["argsrepr"])
    assert args == [{"market": "BTC", "fill_id": "123", "a_side": "sell", "b_side": "buy", "base_amount": "0.00200",
                     "price": "100000.0", "fill_ts": "2026-11-22T00:37:21.388Z", "seen_ts": "2026-11-22T00:37:21.391Z",
                     "fill": fill}]
    assert json.loads(shown["kwargsrepr"]) == kwargs               # exactly the kwargs: a re-queue can copy them
    assert key.hex() not in shown["argsrepr"] + shown["kwargsrepr"]
    # A retry's arguments (fill, hint slot) and odd input: still JSON, never an exception.
    assert json.loads(hedge_reprs([fill, None], {"waits": 1, "auth": auth}, markets)["argsrepr"])[1] is None
    odd = json.loads(hedge_reprs([{"market_index": 9, "side": "long", "base_amount": Decimal("1.5"),
                                   "ts_exchange_ms": "x"}], {}, markets)["argsrepr"])[0]
    assert (odd["market"], odd["b_side"], odd["base_amount"], odd["fill_ts"]) == ("unknown", None, "1.5", None)
    assert json.loads(hedge_reprs(["not a fill"], {}, markets)["argsrepr"]) == ["not a fill"]
    assert hedge_reprs([{"price": float("nan")}], {}, markets)["argsrepr"].startswith("[{")   # repr fallback
    assert iso_ms(0) == "1970-01-01T00:00:00.000Z" and iso_ms(True) is None and iso_ms(10 ** 30) is None
    assert json.loads(result_repr({"fill_id": "123", "filled_base": "0.0500", "covered_by_earlier_hedge": False,
                                   "b_order": None})) == {"fill_id": "123", "filled_base": "0.0500",
                                                          "covered_by_earlier_hedge": False, "b_order": None}
    assert result_repr(["x"]) is None and result_repr({"x": "y" * 100}, maxlen=50) is None
    # The worker's own publishes of a hedge (a retry: (fill, None) and kwargs) get the same reprs.
    from tasks.worker_guard import _json_reprs
    headers = {"argsrepr": repr([fill, None])}
    _json_reprs(sender="tasks.hedge_fill", headers=headers, body=([fill, None], {"waits": 1, "auth": auth}, {}))
    assert json.loads(headers["argsrepr"])[0]["fill"] == fill and json.loads(headers["kwargsrepr"])["waits"] == 1
