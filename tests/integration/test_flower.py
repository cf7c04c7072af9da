"""Flower as supervisord runs it: basic auth, every hedge task with its fill, the README's re-queue call.

Flower learns tasks only from worker events, so it is started (and seen to receive the worker's
heartbeats) before the fill, and every check waits on a condition with a deadline.
"""
from __future__ import annotations

import base64
import json
import time
import urllib.error
import urllib.request
from decimal import Decimal

import pytest

from tests.integration.cluster import B, wait_until
from tests.integration.test_secrets import key_windows, leaks
from venue.sim.harness import free_port

pytestmark = pytest.mark.integration

Q = Decimal("0.0500")
USER, PASSWORD = "operator", "s3cret-flower-pw"
# Flower 2.x serves these two without authentication by design (no option to protect them).
UNAUTHENTICATED_BY_FLOWER = ("/healthcheck", "/metrics")


class Flower:
    def __init__(self, port: int):
        self.base = f"http://127.0.0.1:{port}"
        self._opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method: str, path: str, body: object = None, auth: tuple[str, str] | None = (USER, PASSWORD),
                timeout_s: float = 10.0) -> tuple[int, str]:
        headers = {}
        data = None
        if body is not None:
            data = json.dumps(body).encode()
            headers["Content-Type"] = "application/json"
        elif method == "POST":
            data = b""
        if auth is not None:
            headers["Authorization"] = "Basic " + base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
        req = urllib.request.Request(self.base + path, data=data, method=method, headers=headers)
        try:
            with self._opener.open(req, timeout=timeout_s) as resp:
                return resp.status, resp.read().decode(errors="replace")
        except urllib.error.HTTPError as err:
            return err.code, err.read().decode(errors="replace")
        except (urllib.error.URLError, ConnectionError, TimeoutError) as err:
            return 0, str(err)

    def get_json(self, path: str) -> object:
        status, text = self.request("GET", path)
        assert status == 200, (path, status, text[:500])
        return json.loads(text)


def creates(log: list[dict]) -> list[dict]:
    return [e for e in log if e["tx_type"] == 14 and e["result"] == "accepted"]


def start_all(c) -> Flower:
    """Worker, Flower (seen receiving the worker's events), then the maker."""
    c.start_worker()
    port = free_port()
    proc = c.start_flower(port, f"{USER}:{PASSWORD}")
    flower = Flower(port)
    wait_until(lambda: proc.poll() is not None or flower.request("GET", "/healthcheck", auth=None)[0] == 200,
               30, "Flower to listen")
    assert proc.poll() is None, c.log("flower")
    # /api/workers?status=true is built from received events: a worker there means Flower's event
    # receiver is running, so the hedge task's events below will not be missed.
    wait_until(lambda: flower.request("GET", "/api/workers?status=true")[0] == 200
               and json.loads(flower.request("GET", "/api/workers?status=true")[1]), 30,
               "Flower to receive the worker's heartbeat events")
    c.start_maker()
    return flower


def hedge_one_fill(c, flower: Flower) -> tuple[str, str, dict]:
    """Fill A's resting buy once; return (fill_id, task_id, Flower's view of the task)."""
    buy = c.wait_resting_order()
    trade_ids = c.fill(buy, ["0.0500"])["trade_ids"]
    assert len(trade_ids) == 1, trade_ids
    fill_id = str(trade_ids[0])
    task_id = f"hedge-ETH-{fill_id}"
    wait_until(lambda: c.position(B) == -Q, 30, "B hedged short 0.05")

    def flower_task():
        task = flower.get_json("/api/tasks").get(task_id)
        return task if task and task.get("state") == "SUCCESS" else None

    task = wait_until(flower_task, 30, f"Flower to list {task_id} as SUCCESS", interval_s=0.2)
    return fill_id, task_id, task


def result_meta(c, task_id: str) -> dict | None:
    raw = c.store.r.get(c.store.result_key(task_id))
    return json.loads(raw) if raw else None


def test_flower_needs_auth_lists_the_hedge_and_readme_requeue_sends_nothing_twice(make_cluster):
    c = make_cluster()
    flower = start_all(c)
    fill_id, task_id, task = hedge_one_fill(c, flower)

    # (a) Without credentials (or with wrong ones) every page and API answers 401.
    paths = ["/", "/workers", "/worker/celery@x", "/tasks", "/tasks/datatable", "/broker", f"/task/{task_id}",
             "/api/workers", "/api/tasks", "/api/task/types", "/api/queues/length", f"/api/task/info/{task_id}",
             f"/api/task/result/{task_id}"]
    posts = ["/api/task/async-apply/tasks.hedge_fill", "/api/task/apply/tasks.hedge_fill",
             "/api/task/send-task/tasks.hedge_fill", f"/api/task/revoke/{task_id}",
             f"/api/task/abort/{task_id}", "/api/worker/shutdown/celery@x",
             "/api/worker/pool/restart/celery@x", "/api/worker/queue/cancel-consumer/celery@x"]
    for auth in (None, (USER, "wrong"), ("intruder", PASSWORD)):
        for path in paths:
            status, _ = flower.request("GET", path, auth=auth)
            assert status == 401, (path, auth, status)
        for path in posts:
            status, _ = flower.request("POST", path, body={"args": [{"fill_id": "x"}]}, auth=auth)
            assert status == 401, (path, auth, status)
    # The two endpoints Flower leaves open must not tell an outsider about fills.
    for path in UNAUTHENTICATED_BY_FLOWER:
        status, text = flower.request("GET", path, auth=None)
        assert status == 200 and task_id not in text, (path, status, text[:500])

    # (b) With them, the hedge task is listed with its fill as args, SUCCESS.
    assert task["name"] == "tasks.hedge_fill" and task["state"] == "SUCCESS"
    shown = json.loads(task["args"])  # Flower shows the args as JSON (tasks/display.py); the fill as sent is in it
    assert isinstance(shown, list) and len(shown) == 1 and shown[0]["fill_id"] == fill_id
    assert (shown[0]["market"], shown[0]["a_side"], shown[0]["b_side"]) == ("ETH", "buy", "sell")
    fill = shown[0]["fill"]   # an operator copies it from there
    assert fill["side"] == "buy" and Decimal(fill["base_amount"]) == Q and fill["market_index"] == 0
    info = flower.get_json(f"/api/task/info/{task_id}")
    assert info["state"] == "SUCCESS" and json.loads(info["args"]) == shown
    first_meta = result_meta(c, task_id)
    assert first_meta["status"] == "SUCCESS" and first_meta["args"] == [fill]  # backend agrees with Flower
    first_result = first_meta["result"]
    assert Decimal(first_result["filled_base"]) == Q

    # (c) The README's re-queue call, same task id, original fill: accepted, and sends nothing.
    b_creates_before = creates(c.orders_log(B))
    assert len(b_creates_before) == 1
    auth = json.loads(task["kwargs"])["auth"]   # the maker's signature, shown beside the args
    status, text = flower.request("POST", "/api/task/async-apply/tasks.hedge_fill",
                                  body={"args": [fill], "kwargs": {"auth": auth}, "task_id": task_id})
    assert status == 200, (status, text)
    assert json.loads(text)["task-id"] == task_id

    # Celery keeps the first SUCCESS in the result backend (a later run never overwrites it), so
    # the re-run is seen where the operator sees it: Flower's events for that task id.
    def rerun_done():
        info = flower.get_json(f"/api/task/info/{task_id}")
        return info if info.get("state") in ("SUCCESS", "FAILURE") \
            and (info.get("succeeded") or 0) > (task.get("succeeded") or 0) else None

    rerun = wait_until(rerun_done, 30, "Flower to show the re-queued hedge finished", interval_s=0.1)
    assert rerun["state"] == "SUCCESS", rerun
    assert fill_id in rerun["result"]
    b_attempts = [e for e in c.orders_log(B) if e["tx_type"] == 14]  # accepted or not
    assert [(e["seq"], e["result"]) for e in b_attempts] == [(b_creates_before[0]["seq"], "accepted")], b_attempts
    assert c.position(B) == -Q
    assert result_meta(c, task_id)["result"] == first_result  # the backend still holds the hedge's result


def test_flower_answers_carry_no_private_key(make_cluster, keys_file):
    windows = key_windows(keys_file)
    c = make_cluster()
    flower = start_all(c)
    fill_id, task_id, _ = hedge_one_fill(c, flower)
    # A re-run through Flower too, so its own publish is part of what Flower shows.
    shown = flower.get_json(f"/api/task/info/{task_id}")
    status, _ = flower.request("POST", "/api/task/async-apply/tasks.hedge_fill",
                               body={"args": [json.loads(shown["args"])[0]["fill"]],
                                     "kwargs": {"auth": json.loads(shown["kwargs"])["auth"]},
                                     "task_id": task_id})
    assert status == 200

    answers = {}
    for path in ("/api/tasks", f"/api/task/info/{task_id}", f"/api/task/result/{task_id}", "/api/workers",
                 "/api/workers?refresh=1", "/api/task/types", "/api/queues/length", "/tasks", f"/task/{task_id}",
                 "/workers", "/broker", "/tasks/datatable?draw=1&start=0&length=100&search[value]=&order[0][column]=0"
                 "&columns[0][data]=name&order[0][dir]=asc"):
        status, text = flower.request("GET", path)
        assert status == 200, (path, status, text[:300])
        answers[path] = text
    for path in UNAUTHENTICATED_BY_FLOWER:
        answers[path] = flower.request("GET", path, auth=None)[1]
    assert fill_id in answers["/api/tasks"]  # the scan looks at answers that do carry the hedge
    for path, text in answers.items():
        assert not leaks(text, windows), f"private key material in Flower's {path}"
    for name in ("flower", "worker", "maker"):
        assert not leaks(c.log(name), windows), f"private key material in {name}.log"
