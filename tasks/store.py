"""Durable state in Redis shared by the maker, the worker and the CLI.

Keys (all under "lh:"): hedge registry per fill, carried dust, in-flight and failed hedges,
the maker's pause (survives restarts), recorded fills (durable dedupe), counters, events.
"""
from __future__ import annotations

import dataclasses
import json
import re
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis

from hedge.leg import Leg, LegState
from hedge.plan import LedgerHint, leg_client_order_index, leg_seq_start



def events_channel(db: int) -> str:
    """Pub/sub channels are server-wide, not per db: name them after the db, so two
    deployments on one Redis server never hear each other's events or pause/resume."""
    return f"lh:{db}:events"


def control_channel(db: int) -> str:
    return f"lh:{db}:control"


NONCE_TAKERS_KEPT = 10_000   # per key: far more than can be in doubt at once
GENERATION_KEY = "lh:generation"
_LEDGER_LOST = "LH_LEDGER_LOST"


class LedgerLostError(Exception):
    """The ledger generation this process works in is gone: Redis lost its data (wiped, restarted
    empty, flushed). Whatever was in flight is unknown to the new ledger: stop, send nothing, and
    leave recovery to the maker's reconcile at start (it measures A+B at the venue)."""


def _ledger_lost(exc: redis.ResponseError, expected: str | None) -> Exception:
    if _LEDGER_LOST in str(exc):
        return LedgerLostError(f"ledger generation {expected} is gone (Redis lost its data)")
    return exc


def now_ms() -> int:
    return int(time.time() * 1000)


def task_id_for(market_symbol: str, fill_id: str) -> str:
    return f"hedge-{market_symbol}-{fill_id}"


_REQUEUED = re.compile(r"^(?P<base>.+)-r(?P<n>[1-9][0-9]*)$")


def requeue_base(task_id: str) -> str:
    """The id a hedge task had before any requeue under a new id: `hedge-ETH-12-r2` -> `hedge-ETH-12`."""
    match = _REQUEUED.match(task_id)
    return match["base"] if match else task_id


def fill_id_of_task(market_symbol: str, task_id: str) -> str | None:
    """The fill id in a hedge task id: hedge-<market>-<fill_id>[-again-<ms>][-r<n>]; None for another
    shape (a worker's hedge-<market>-recover-<ms>, a foreign id)."""
    prefix = task_id_for(market_symbol, "")
    base = requeue_base(task_id)
    if not base.startswith(prefix) or base.startswith(f"{prefix}recover-"):
        return None
    return base[len(prefix):].split("-again-")[0] or None


class Store:
    def __init__(self, client: redis.Redis):
        self.r = client
        db = int(client.connection_pool.connection_kwargs.get("db") or 0)
        self.events_channel = events_channel(db)
        self.control_channel = control_channel(db)
        self._result_prefix = f"lh{db}:celery-task-meta-"  # celeryconfig: ops.settings.result_keyprefix
        self._record_fill = client.register_script(_RECORD_FILL)
        self._record_fill_inflight = client.register_script(_RECORD_FILL_INFLIGHT)
        self._open_leg = client.register_script(_OPEN_LEG)
        self._begin_hedge = client.register_script(_BEGIN_HEDGE)
        self._close_leg = client.register_script(_CLOSE_LEG)
        self._prune_fills = client.register_script(_PRUNE_FILLS)
        self._prune_markers = client.register_script(_PRUNE_MARKERS)
        self._prune_legs = client.register_script(_PRUNE_LEGS)
        # The ledger generation this process's writes belong to (None: unchecked, e.g. the CLI).
        # When set, every ledger script first checks it, atomically with its writes.
        self.expected_generation: str | None = None
        # The fill count of the last ledger this process read back, per market (the worker's
        # input to hedge.plan.speculative_split).
        self.fills_seen: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str) -> "Store":
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                        socket_connect_timeout=5, health_check_interval=30))

    # ---- the ledger's generation: which incarnation of Redis's data a process works in ------------

    def ensure_generation(self) -> str:
        """The current generation, started now if there is none (first start, or Redis lost its data)."""
        self.r.set(GENERATION_KEY, f"{now_ms()}-{secrets.token_hex(4)}", nx=True)
        return self.r.get(GENERATION_KEY)

    def generation(self) -> str | None:
        return self.r.get(GENERATION_KEY)

    def check_generation(self) -> None:
        """LedgerLostError when this process's generation is no longer Redis's."""
        if self.expected_generation is not None and self.r.get(GENERATION_KEY) != self.expected_generation:
            raise LedgerLostError(f"ledger generation {self.expected_generation} is gone (Redis lost its data)")

    def _gated(self, script, keys: list[str], args: list[Any], client: Any = None) -> Any:
        """Run a ledger script behind the generation check (see _gate)."""
        try:
            return script(keys=[*keys, GENERATION_KEY], args=[*args, self.expected_generation or ""], client=client)
        except redis.ResponseError as exc:
            raise _ledger_lost(exc, self.expected_generation) from None

    # ---- the ledger: A's fills and B's hedge legs, per market ------------------------------------
    #
    # unhedged = a_filled - hedged - (legs in flight). a_filled counts each fill id once, hedged
    # counts each settled leg once (both in A's direction, venue integer units), so replaying a
    # fill or re-running a task cannot change what gets hedged.

    def record_fill(self, market: str, fill_msg: dict[str, Any], signed_units: int) -> bool:
        """Count a fill of A once: True the first time its id is seen on this market."""
        return bool(self._gated(self._record_fill, [f"lh:fills:{market}", f"lh:a_filled:{market}"],
                                [fill_msg["fill_id"], json.dumps(fill_msg), signed_units]))

    def record_fills(self, market: str, fills: list[tuple[dict[str, Any], int, str]]) -> list[LedgerHint | None]:
        """The maker's hot path: count a frame's fills once and mark each new one's hedge task in
        flight, atomically per fill, in one round trip. `fills`: (fill message, signed units, task id).

        Per fill: None for one counted before (a replay), else the ledger right after counting it
        (the hint its hedge task carries)."""
        keys = [f"lh:fills:{market}", f"lh:a_filled:{market}", f"lh:inflight:{market}",
                f"lh:hedged:{market}", f"lh:pending:{market}", f"lh:leg_seq:{market}"]
        if len(fills) == 1:  # the common frame: no pipeline object, a little less latency
            msg, units, task_id = fills[0]
            replies = [self._gated(self._record_fill_inflight, keys, [msg["fill_id"], json.dumps(msg), units, task_id])]
        else:
            with self.r.pipeline(transaction=False) as pipe:
                for msg, units, task_id in fills:
                    self._gated(self._record_fill_inflight, keys, [msg["fill_id"], json.dumps(msg), units, task_id],
                                client=pipe)
                try:
                    replies = pipe.execute()
                except redis.ResponseError as exc:
                    raise _ledger_lost(exc, self.expected_generation) from None
        return [_hint(reply) for reply in replies]

    def after_fills(self, market: str, events: list[dict[str, Any]]) -> None:
        """What is not urgent about new fills (after their hedges are enqueued): the fills counter
        and the events, in one round trip."""
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hincrby(f"lh:stats:{market}", "fills", len(events))
            for event in events:
                pipe.publish(self.events_channel, json.dumps(event, default=_json_default))
            pipe.execute()

    def send_begin_hedge(self, market: str, fill_msg: dict[str, Any], signed_units: int,
                         leg_if: "LegIf | None" = None) -> "BeginHedgeCall":
        """Send the worker's first round trip without waiting for it (the caller signs meanwhile).

        Counts the fill (once) and reads the ledger back; with `leg_if`, also opens that leg
        (write-ahead, rate window) if and only if the ledger still equals its hint.
        """
        keys = [f"lh:fills:{market}", f"lh:a_filled:{market}", f"lh:hedged:{market}", f"lh:pending:{market}",
                f"lh:legs:{market}", f"lh:hedge_times:{market}", f"lh:leg_seq:{market}"]
        args: list[Any] = [fill_msg["fill_id"], json.dumps(fill_msg), signed_units]
        if leg_if is not None:
            now = now_ms()
            hint = leg_if.hint
            args += [hint.a_filled, hint.hedged, hint.leg_seq, now, f"{now}:{time.perf_counter_ns()}",
                     leg_if.window_s * 1000, leg_if.window_s * 2, leg_if.limit_per_minute, leg_if.leg.to_json()]
        return BeginHedgeCall(self, market, [*keys, GENERATION_KEY], [*args, self.expected_generation or ""],
                              None if leg_if is None else leg_if.leg)

    def fills(self, market: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(f"lh:fills:{market}").items()}

    def fill_record(self, market: str, fill_id: str) -> dict[str, Any] | None:
        """One fill as the ledger counted it (None: never counted, or moved out by retention)."""
        raw = self.r.hget(f"lh:fills:{market}", fill_id)
        return json.loads(raw) if raw else None

    def ledger(self, market: str) -> "Ledger":
        with self.r.pipeline(transaction=False) as pipe:
            pipe.get(f"lh:a_filled:{market}")
            pipe.get(f"lh:hedged:{market}")
            pipe.smembers(f"lh:pending:{market}")
            a_filled, hedged, pending = pipe.execute()
        legs = []
        if pending:
            legs = [Leg.from_json(v) for v in self.r.hmget(f"lh:legs:{market}", sorted(pending, key=int)) if v]
        return Ledger(int(a_filled or 0), int(hedged or 0), legs)

    def open_leg_checked(self, market: str, leg: Leg, market_index: int, limit_per_minute: int,
                         window_s: int = 60) -> tuple[Leg | None, int]:
        """Rate check and write-ahead in one atomic round trip (one Lua script).

        Notes the hedge order in the rate window; if the window then holds more than
        `limit_per_minute`, opens nothing and returns (None, count). Otherwise the leg gets the
        market's next sequence number and client_order_index (hedge.plan.leg_client_order_index:
        market_index * 2**40 + leg_no) and is stored (WRITTEN) before anything is sent.
        """
        now = now_ms()
        body = dataclasses.replace(leg, leg=0, client_order_index=0, state=LegState.WRITTEN).to_json()
        count, leg_no = self._gated(
            self._open_leg,
            [f"lh:hedge_times:{market}", f"lh:leg_seq:{market}", f"lh:legs:{market}", f"lh:pending:{market}"],
            [now, f"{now}:{time.perf_counter_ns()}", window_s * 1000, window_s * 2, limit_per_minute,
             market_index, body, leg_seq_start(now)])
        if not leg_no:
            return None, int(count)
        leg_no = int(leg_no)
        coi = leg_client_order_index(market_index, leg_no)  # the same number the script stored
        return dataclasses.replace(leg, leg=leg_no, client_order_index=coi, state=LegState.WRITTEN), int(count)

    def note_latency(self, market: str, fill_id: str, sent_ms: float | None, confirmed_ms: float | None) -> None:
        """The last hedge's latencies, for `status --watch`."""
        self.r.hset(f"lh:last:{market}", mapping={
            "fill_id": fill_id, "ts_ms": now_ms(),
            "fill_to_sent_ms": "" if sent_ms is None else f"{sent_ms:.2f}",
            "fill_to_confirmed_ms": "" if confirmed_ms is None else f"{confirmed_ms:.2f}"})

    def last_latency(self, market: str) -> dict[str, str]:
        return self.r.hgetall(f"lh:last:{market}")

    def update_leg(self, market: str, leg: Leg) -> None:
        """An open leg advanced (sent, taken): stored only while it is still open, so a late
        writer can never reopen a leg another process closed."""
        assert leg.state.open, leg
        self._gated(self._close_leg, [f"lh:legs:{market}", f"lh:pending:{market}", f"lh:hedged:{market}"],
                    [leg.leg, leg.to_json(), 0, 0])

    def close_leg(self, market: str, leg: Leg) -> bool:
        """The venue's final word on a leg (executed, rejected, expired): stored, and what it
        executed counted in the ledger, once, atomically. False if it was closed before."""
        assert not leg.state.open, leg
        return bool(self._gated(self._close_leg, [f"lh:legs:{market}", f"lh:pending:{market}", f"lh:hedged:{market}"],
                                [leg.leg, leg.to_json(), 1, leg.hedged_units]))

    def note_nonce_taker(self, account_index: int, api_key_index: int, nonce: int, taker: str) -> None:
        """Which of our txs the venue surely took with `nonce` (a leg answered 200 or listed): the
        evidence that another tx signed with that nonce never executes, across worker restarts.
        Only the last NONCE_TAKERS_KEPT nonces of a key are kept."""
        key = f"lh:nonce_takers:{account_index}:{api_key_index}"
        with self.r.pipeline(transaction=False) as pipe:
            pipe.hset(key, nonce, taker)
            pipe.hdel(key, nonce - NONCE_TAKERS_KEPT)
            pipe.execute()

    def nonce_taker(self, account_index: int, api_key_index: int, nonce: int) -> str | None:
        return self.r.hget(f"lh:nonce_takers:{account_index}:{api_key_index}", nonce)

    def legs(self, market: str) -> list[Leg]:
        return sorted((Leg.from_json(v) for v in self.r.hvals(f"lh:legs:{market}")), key=lambda leg: leg.leg)

    def result_key(self, task_id: str) -> str:
        """Where the result backend (in this store's db) keeps a task's result."""
        return f"{self._result_prefix}{task_id}"

    # ---- A's order, written ahead (the maker's leg) ---------------------------------------------

    def open_maker_order(self, market: str, record: dict[str, Any]) -> None:
        """A's order intent, stored before the wire call; cleared once the venue's final word is known."""
        self.r.set(f"lh:maker_order:{market}", json.dumps(record))

    def maker_order(self, market: str) -> dict[str, Any] | None:
        raw = self.r.get(f"lh:maker_order:{market}")
        return json.loads(raw) if raw else None

    def close_maker_order(self, market: str) -> None:
        self.r.delete(f"lh:maker_order:{market}")

    # ---- in-flight and failed hedges ----------------------------------------------------------

    def mark_inflight(self, market: str, task_id: str) -> None:
        self.r.sadd(f"lh:inflight:{market}", task_id)

    def clear_inflight(self, market: str, task_id: str) -> None:
        self.r.srem(f"lh:inflight:{market}", task_id)

    def inflight(self, market: str) -> set[str]:
        return set(self.r.smembers(f"lh:inflight:{market}"))

    def hedge_finished(self, market: str, task_id: str, fill_id: str, ok: bool, reason: str = "",
                       fill_msg: dict[str, Any] | None = None, auth: dict[str, Any] | None = None,
                       price: dict[str, Any] | None = None, revoked: bool = False) -> None:
        """`auth`: the failed message's signature (tasks.signing; not a secret: it only lets the same
        fill be sent again), kept so Flower's API can re-queue it as the README shows; `price`: the
        operator's price bound it carried (signed with it). `revoked`: an operator revoked it (Celery
        discards its id from then on: ops/requeue.py re-runs it under another id)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"lh:inflight:{market}", task_id)
            pipe.srem(f"lh:failed_ack:{market}", task_id)   # a new outcome: any old acknowledgement is void
            if ok:
                pipe.hdel(f"lh:failed:{market}", task_id)
                # A set, not a counter: a re-run of a hedge (requeue, redelivery) is one hedged fill.
                pipe.sadd(f"lh:hedged_fills:{market}", fill_id)
            else:
                pipe.hset(f"lh:failed:{market}", task_id, json.dumps(
                    {"fill_id": fill_id, "reason": reason, "fill": fill_msg, "ts_ms": now_ms(),
                     **({"auth": auth} if auth else {}), **({"price": price} if price else {}),
                     **({"revoked": True} if revoked else {})}))
            pipe.execute()

    def record_refused(self, task_id: str, reason: str, message: Any, market: str | None) -> None:
        """A task message refused before anything was traded (malformed, forged, unknown market):
        kept for the operator (`status`, `clear-refused`), never counted as a failed hedge."""
        text = repr(message)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset("lh:refused", task_id, json.dumps({
                "reason": reason, "market": market, "message": text[:500] + ("..." if len(text) > 500 else ""),
                "ts_ms": now_ms()}))
            if market is not None:
                pipe.srem(f"lh:inflight:{market}", task_id)
            pipe.execute()

    def refused(self) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall("lh:refused").items()}

    def clear_refused(self, task_id: str | None = None) -> int:
        """Forget one refused message, or all of them: how many were removed."""
        if task_id is not None:
            return int(self.r.hdel("lh:refused", task_id))
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hlen("lh:refused")
            pipe.delete("lh:refused")
            count, _ = pipe.execute()
        return int(count)

    def failed(self, market: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(f"lh:failed:{market}").items()}

    def acknowledge_failed(self, market: str, task_ids: list[str]) -> None:
        """`resume --force`: the operator let A trade with these failed hedges left (A exposed)."""
        if task_ids:
            self.r.sadd(f"lh:failed_ack:{market}", *task_ids)

    def unacknowledged_failed(self, market: str) -> dict[str, dict[str, Any]]:
        """Failed hedges that keep the market paused: all but those a forced resume acknowledged."""
        acknowledged = self.r.smembers(f"lh:failed_ack:{market}")
        return {k: v for k, v in self.failed(market).items() if k not in acknowledged}

    def next_requeue_id(self, market: str, task_id: str) -> str:
        """A task id never used before for re-running `task_id` (whose own id a worker may discard:
        revoked): `<id>-r<n>`, n counted per original id (a `-r<n>` suffix is not repeated)."""
        base = requeue_base(task_id)
        return f"{base}-r{self.r.hincrby(f'lh:requeues:{market}', base, 1)}"

    def requeued(self, market: str, task_id: str, new_task_id: str) -> None:
        """`task_id` re-run as `new_task_id` (the same id, or a new one when Celery discards the old):
        the new one in flight, the old one no longer failed (nor acknowledged); a renamed one no
        longer in flight either, and remembered as superseded (a late discard of its revoked message
        is then no failed hedge: tasks/requeue_task.py)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.sadd(f"lh:inflight:{market}", new_task_id)
            pipe.hdel(f"lh:failed:{market}", task_id)
            pipe.srem(f"lh:failed_ack:{market}", task_id)
            if new_task_id != task_id:
                pipe.srem(f"lh:inflight:{market}", task_id)
                pipe.hset(f"lh:requeued_as:{market}", task_id, new_task_id)
            else:   # the id runs again: a discard of it is a failed hedge again
                pipe.hdel(f"lh:requeued_as:{market}", task_id)
            pipe.execute()

    def requeued_as(self, market: str, task_id: str) -> str | None:
        """The id `task_id` was re-run under by a requeue, if it was renamed."""
        return self.r.hget(f"lh:requeued_as:{market}", task_id)

    def forget_failed(self, market: str, task_id: str) -> None:
        """A failed hedge requeued: no longer failed (nor acknowledged) until its new outcome."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hdel(f"lh:failed:{market}", task_id)
            pipe.srem(f"lh:failed_ack:{market}", task_id)
            pipe.execute()

    # ---- pause (survives restarts; only `resume` ends it) --------------------------------------

    def pause(self, market: str, reason: str, by: str) -> None:
        self.r.set(f"lh:pause:{market}", json.dumps({"reason": reason, "by": by, "ts_ms": now_ms()}))
        self.publish_control({"event": "paused", "market": market, "reason": reason})

    def paused(self, market: str) -> dict[str, Any] | None:
        raw = self.r.get(f"lh:pause:{market}")
        return json.loads(raw) if raw else None

    def resume(self, market: str) -> bool:
        removed = bool(self.r.delete(f"lh:pause:{market}"))
        self.publish_control({"event": "resumed", "market": market})
        return removed

    def publish_control(self, message: dict[str, Any]) -> None:
        self.r.publish(self.control_channel, json.dumps(message))

    def set_state(self, market: str, state: str) -> None:
        self.r.hset("lh:state", market, json.dumps({"state": state, "ts_ms": now_ms()}))

    def state(self, market: str) -> dict[str, Any] | None:
        raw = self.r.hget("lh:state", market)
        return json.loads(raw) if raw else None

    # ---- stream cutoff, counters, events --------------------------------------------------------

    def cutoff(self, account_index: int) -> int | None:
        raw = self.r.get(f"lh:cutoff:{account_index}")
        return int(raw) if raw is not None else None

    def set_cutoff(self, account_index: int, trade_id: int) -> None:
        self.r.setnx(f"lh:cutoff:{account_index}", trade_id)

    def incr(self, market: str, field: str, by: int = 1) -> None:
        self.r.hincrby(f"lh:stats:{market}", field, by)

    def stats(self, market: str) -> dict[str, int]:
        """rounds and fills (counters), hedges = fills whose hedge task succeeded (each once)."""
        stats = {k: int(v) for k, v in self.r.hgetall(f"lh:stats:{market}").items()}
        stats["hedges"] = int(self.r.scard(f"lh:hedged_fills:{market}")) + self.pruned(market).fills
        return stats

    def publish_event(self, event: dict[str, Any]) -> None:
        self.r.publish(self.events_channel, json.dumps(event, default=_json_default))

    def worker_heartbeat(self, ttl_ms: int) -> None:
        """The hedge worker is alive: the key lives `ttl_ms` unless written again (tasks/heartbeat.py)."""
        self.r.set("lh:worker_heartbeat", now_ms(), px=ttl_ms)

    def worker_stopped(self) -> None:
        """The hedge worker stopped cleanly: no heartbeat to wait out."""
        self.r.delete("lh:worker_heartbeat")

    def worker_alive(self) -> bool:
        """A hedge worker wrote its heartbeat within its TTL (the maker's dead-man's switch asks)."""
        return bool(self.r.exists("lh:worker_heartbeat"))

    # ---- repair (ops/repair.py): the ledger rebuilt from the venue, by compare-and-set ----------

    def ledger_snapshot(self, market: str) -> "LedgerSnapshot":
        """What `repair` checks before it reads the venue and finds unchanged when it writes, read
        in one MULTI (a consistent view)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.get(f"lh:a_filled:{market}")
            pipe.get(f"lh:hedged:{market}")
            pipe.get(f"lh:leg_seq:{market}")
            pipe.hlen(f"lh:fills:{market}")
            pipe.smembers(f"lh:pending:{market}")
            pipe.smembers(f"lh:inflight:{market}")
            pipe.exists(f"lh:pause:{market}")
            pipe.exists(f"lh:maker_order:{market}")
            a_filled, hedged, leg_seq, fills, pending, inflight, paused, maker_order = pipe.execute()
        numbers = sorted(int(n) for n in pending)
        bodies = self.r.hmget(f"lh:legs:{market}", numbers) if numbers else []
        return LedgerSnapshot(
            a_filled=int(a_filled or 0), hedged=int(hedged or 0), leg_seq=None if leg_seq is None else int(leg_seq),
            fills=int(fills), pending=tuple((n, Leg.from_json(b) if b else None) for n, b in zip(numbers, bodies)),
            inflight=frozenset(inflight), paused=bool(paused), maker_order=bool(maker_order))

    def known_fill_ids(self, market: str, fill_ids: list[str]) -> set[str]:
        """Which of these fill ids the market's fill record holds (its durable dedupe)."""
        if not fill_ids:
            return set()
        found = self.r.hmget(f"lh:fills:{market}", fill_ids)
        below = self.pruned(market).below   # moved out of Redis by retention: known (Store.prune_fills)
        return {fill_id for fill_id, body in zip(fill_ids, found)
                if body is not None or (below is not None and is_trade_id(fill_id) and int(fill_id) <= below)}

    def repair_ledger(self, market: str, expected: "LedgerSnapshot", a_filled: int, hedged: int,
                      stale_legs: list[int], remark: list[dict[str, Any]]) -> str | None:
        """Set a_filled and hedged, drop stale legs from the pending set and mark `remark` fills as
        counted (without counting them: the venue's position has them), in one Lua script, only if
        the ledger still equals `expected`, the market is still paused and nothing is in flight.
        Fill records are never deleted: an id the stream could replay stays known.

        None when written, else why nothing was written ('not paused', 'in flight', 'moved')."""
        reply = self.r.register_script(_REPAIR_LEDGER)(   # rare: registering (a local SHA) each time is fine
            keys=[f"lh:a_filled:{market}", f"lh:hedged:{market}", f"lh:leg_seq:{market}", f"lh:fills:{market}",
                  f"lh:pending:{market}", f"lh:inflight:{market}", f"lh:pause:{market}",
                  f"lh:maker_order:{market}"],
            args=[expected.a_filled, expected.hedged, "" if expected.leg_seq is None else expected.leg_seq,
                  expected.fills, a_filled, hedged, len(stale_legs), *stale_legs,
                  *(x for msg in remark for x in (msg["fill_id"], json.dumps(msg)))])
        return None if reply == "ok" else str(reply)

    # ---- key leases: one sender per API key (tasks/key_lease.py) --------------------------------
    #
    # Lighter's nonces are per (account, API key) and sequential: two processes signing with one key
    # refuse each other's txs (21104). Whoever sends on a key holds its lease: the maker (A), the
    # worker (B), or `flatten` while neither runs.

    def key_lease(self, account_index: int, api_key_index: int) -> "KeyLease | None":
        raw = self.r.get(_lease_key(account_index, api_key_index))
        return KeyLease.from_json(raw) if raw else None

    def take_key_lease(self, account_index: int, api_key_index: int, lease: "KeyLease", ttl_ms: int,
                       over_roles: tuple[str, ...] = ()) -> "KeyLease | None":
        """Take the key's lease if it is free, ours, or held by one of `over_roles` (a restarted
        worker takes over from its dead self). None when taken; else the lease that holds it."""
        held = self._lease_script("take", _TAKE_LEASE)(
            keys=[_lease_key(account_index, api_key_index)], args=[lease.to_json(), ttl_ms, *over_roles])
        return KeyLease.from_json(held) if held else None

    def renew_key_lease(self, account_index: int, api_key_index: int, lease: "KeyLease", ttl_ms: int) -> bool:
        """Extend our lease; False when it is not ours any more (expired, or taken by another)."""
        return bool(self._lease_script("cas", _CAS_PEXPIRE)(
            keys=[_lease_key(account_index, api_key_index)], args=[lease.to_json(), ttl_ms]))

    def release_key_lease(self, account_index: int, api_key_index: int, lease: "KeyLease", linger_ms: int) -> None:
        """Give our lease up `linger_ms` from now: Lighter's nextNonce shows our last tx only after a
        lag, and the next holder starts from what it shows."""
        self.renew_key_lease(account_index, api_key_index, lease, max(1, linger_ms))

    # ---- flatten's requests and replies (ops/flatten.py, maker/app.py, tasks/flatten_task.py) ---

    def set_flatten_request(self, market: str, request_id: str, ttl_ms: int) -> None:
        """The flatten of `market` a CLI waits for now: the worker closes B for this request only."""
        self.r.set(f"lh:flatten_request:{market}", request_id, px=ttl_ms)

    def flatten_request(self, market: str) -> str | None:
        return self.r.get(f"lh:flatten_request:{market}")

    def clear_flatten_request(self, market: str, request_id: str) -> None:
        self._lease_script("cas", _CAS_PEXPIRE)(keys=[f"lh:flatten_request:{market}"], args=[request_id, 1])

    def put_flatten_reply(self, request_id: str, reply: dict[str, Any]) -> None:
        key = f"lh:flatten_reply:{request_id}"
        with self.r.pipeline(transaction=True) as pipe:
            pipe.rpush(key, json.dumps(reply, default=_json_default))
            pipe.expire(key, 600)
            pipe.execute()

    def wait_flatten_reply(self, request_id: str, timeout_s: float) -> dict[str, Any] | None:
        """The maker's reply to a flatten request, or None after `timeout_s`."""
        deadline = time.monotonic() + timeout_s
        while (left_s := deadline - time.monotonic()) > 0:
            # In short blocks: the client's socket_timeout (10 s) must not cut a long BLPOP.
            popped = self.r.blpop([f"lh:flatten_reply:{request_id}"], timeout=max(0.1, min(5.0, left_s)))
            if popped:
                return json.loads(popped[1])
        return None

    def _lease_script(self, name: str, text: str):
        scripts = self.__dict__.setdefault("_lease_scripts", {})
        if name not in scripts:
            scripts[name] = self.r.register_script(text)
        return scripts[name]

    # ---- retention: the ledger's history moved out of Redis (tasks/retention.py) ---------------
    #
    # Only history goes: a fill record once its hedge succeeded (its hedged-fill marker goes with it)
    # and its task is neither in flight, failed nor refused; a leg once it is closed. Totals stay
    # (a_filled, hedged, leg_seq, counters). The dedupe holds without the records: per market, the
    # highest fill id removed ('below' in lh:fills:<market>:pruned) marks every id at or below it as
    # counted (trade ids only grow), and the fill count moved out keeps the hint's count growing.

    def pruned(self, market: str) -> "Pruned":
        raw = self.r.hgetall(f"lh:fills:{market}:pruned")
        return Pruned(below=int(raw["below"]) if raw.get("below") else None, fills=int(raw.get("fills") or 0),
                      last_fill=json.loads(raw["last"]) if raw.get("last") else None)

    def latest_fill(self, market: str) -> dict[str, Any] | None:
        """The market's newest fill, also once retention moved every record out: a hedge task needs
        one fill to carry (it hedges whatever the market has unhedged)."""
        fills = self.fills(market)
        if fills:
            return max(fills.values(), key=lambda f: (f.get("ts_seen_ms", 0), str(f["fill_id"])))
        return self.pruned(market).last_fill

    def scan_fills(self, market: str, cursor: int, count: int) -> tuple[int, dict[str, str]]:
        return self.r.hscan(f"lh:fills:{market}", cursor, count=count)

    def scan_legs(self, market: str, cursor: int, count: int) -> tuple[int, dict[str, str]]:
        return self.r.hscan(f"lh:legs:{market}", cursor, count=count)

    def scan_hedged_markers(self, market: str, cursor: int, count: int) -> tuple[int, list[str]]:
        return self.r.sscan(f"lh:hedged_fills:{market}", cursor, count=count)

    def finished_fills(self, market: str, fill_ids: list[str]) -> list[str]:
        """Those of `fill_ids` whose hedge succeeded and whose task is neither in flight, failed nor
        refused (what prune_fills checks again, atomically)."""
        if not fill_ids:
            return []
        tasks = [task_id_for(market, fill_id) for fill_id in fill_ids]
        with self.r.pipeline(transaction=False) as pipe:
            pipe.smismember(f"lh:hedged_fills:{market}", fill_ids)
            pipe.smismember(f"lh:inflight:{market}", tasks)
            pipe.hmget(f"lh:failed:{market}", tasks)
            pipe.hmget("lh:refused", tasks)
            hedged, inflight, failed, refused = pipe.execute()
        return [fill_id for fill_id, h, i, f, r in zip(fill_ids, hedged, inflight, failed, refused)
                if h and not i and f is None and r is None]

    def prune_fills(self, market: str, fill_ids: list[str]) -> list[str]:
        """Remove these fill records (decimal trade ids) and their hedged-fill markers where still
        allowed (see above), raising the market's 'below' to the highest id removed. The ids removed."""
        ids = [fill_id for fill_id in fill_ids if is_trade_id(fill_id)]
        if not ids:
            return []
        return list(self._prune_fills(
            keys=[f"lh:fills:{market}", f"lh:fills:{market}:pruned", f"lh:hedged_fills:{market}",
                  f"lh:inflight:{market}", f"lh:failed:{market}", "lh:refused"],
            args=[market, *ids]))

    def prune_markers(self, market: str, fill_ids: list[str]) -> int:
        """Drop hedged-fill markers of fills moved out before (a task re-run after its fill record was
        removed marks it again; its hedge was counted when the record was removed). How many."""
        ids = [fill_id for fill_id in fill_ids if is_trade_id(fill_id)]
        if not ids:
            return 0
        return int(self._prune_markers(keys=[f"lh:hedged_fills:{market}", f"lh:fills:{market}",
                                             f"lh:fills:{market}:pruned"], args=ids))

    def prune_legs(self, market: str, leg_numbers: list[int]) -> int:
        """Remove these leg records where the leg is not pending (open legs never go). How many."""
        if not leg_numbers:
            return 0
        return int(self._prune_legs(keys=[f"lh:legs:{market}", f"lh:pending:{market}"], args=leg_numbers))


@dataclass(frozen=True)
class LegIf:
    """A leg to open in the worker's first round trip, only if the ledger still equals `hint`."""

    hint: LedgerHint
    leg: Leg             # the leg record; its number must be hint.leg_seq + 1
    limit_per_minute: int
    window_s: int = 60


@dataclass(frozen=True)
class BeginHedge:
    ledger: "Ledger"               # after counting the fill (and opening the leg, if opened)
    fills: int                     # fills counted on the market
    leg: Leg | None                # the leg opened, or None
    rate_limited: bool             # the leg was due but the rate window was full
    rate_count: int                # hedge orders in the rate window, when the leg was due


class BeginHedgeCall:
    """The worker's first round trip, in flight: written to Redis, its reply read by result().

    The script is atomic on the server whatever happens here; if the reply is lost, the leg (if
    opened) stays PENDING in the ledger and the next attempt resolves it at the venue.
    """

    def __init__(self, store: "Store", market: str, keys: list[str], args: list[Any],
                 leg: Leg | None):
        self._store, self._market, self._keys, self._args, self._leg = store, market, keys, args, leg
        self._pool = store.r.connection_pool
        self._conn = self._pool.get_connection()
        try:
            self._conn.send_command("EVALSHA", store._begin_hedge.sha, len(keys), *keys, *args)
        except BaseException:
            self._release(broken=True)
            raise

    def _release(self, broken: bool) -> None:
        if self._conn is not None:
            if broken:
                self._conn.disconnect()
            self._pool.release(self._conn)
            self._conn = None

    def close(self) -> None:
        """Give up on the reply (after an error elsewhere); safe to call more than once."""
        self._release(broken=True)

    def result(self) -> BeginHedge:
        if self._conn is None:
            raise RuntimeError("the reply was already read or abandoned")
        try:
            reply = self._conn.read_response()
        except redis.exceptions.NoScriptError:
            self._release(broken=False)  # not run: Redis lost its scripts (restart); run it the slow way
            try:
                reply = self._store._begin_hedge(keys=self._keys, args=self._args)
            except redis.ResponseError as exc:
                raise _ledger_lost(exc, self._args[-1]) from None
        except redis.ResponseError as exc:
            self._release(broken=False)
            raise _ledger_lost(exc, self._args[-1]) from None
        except BaseException:
            self._release(broken=True)
            raise
        else:
            self._release(broken=False)
        opened, extra, fills, a_filled, hedged, *legs = reply
        self._store.fills_seen[self._market] = int(fills)
        pending = sorted((Leg.from_json(v) for v in legs if v), key=lambda leg: leg.leg)
        leg = None
        if int(opened) == 1:
            leg = self._leg
            pending = [leg]  # none was pending, or it would not have been opened
        return BeginHedge(Ledger(int(a_filled), int(hedged), pending), int(fills), leg,
                          rate_limited=int(opened) == -1, rate_count=int(extra))


@dataclass(frozen=True)
class Ledger:
    a_filled: int      # sum of A's fills, signed (buy +), venue units
    hedged: int        # what B's settled legs took off, in A's direction
    pending: list[Leg]  # open legs: written, sent or taken, not yet executed / rejected / expired

    @property
    def in_flight(self) -> int:
        """What open legs would take off, in A's direction (a B sell covers an A buy)."""
        return sum(leg.in_flight_units for leg in self.pending)

    @property
    def unhedged(self) -> int:
        """A's exposure not yet covered by a settled leg (legs in flight not subtracted)."""
        return self.a_filled - self.hedged


# Every ledger script starts with this gate: its last key is GENERATION_KEY and its last argument
# the generation the caller works in ('' = unchecked). Both are removed before the script proper,
# so its KEYS/ARGV numbering is unchanged. A mismatch aborts before any write.
_GATE = """
local expected_generation = table.remove(ARGV)
local generation_key = table.remove(KEYS)
if expected_generation ~= '' and redis.call('GET', generation_key) ~= expected_generation then
  return redis.error_reply('""" + _LEDGER_LOST + """')
end
"""

# A fill counts once (used by the scripts that record fills; KEYS[1] is the market's fill record).
# new_fill: the id is neither recorded nor at or below the highest id the retention job moved out of
# Redis ('below' in '<fill record>:pruned', see Store.prune_fills): such an id was counted before.
# fills_counted: fills ever counted on the market, those moved out included (only ever grows).
_FILL_ONCE = """
local function new_fill(fills_key, id, body)
  if string.match(id, '^[1-9]%d*$') then
    local below = redis.call('HGET', fills_key .. ':pruned', 'below')
    if below and (#id < #below or (#id == #below and id <= below)) then
      return false
    end
  end
  return redis.call('HSETNX', fills_key, id, body) == 1
end
local function fills_counted(fills_key)
  return redis.call('HLEN', fills_key) + tonumber(redis.call('HGET', fills_key .. ':pruned', 'fills') or '0')
end
"""

_RECORD_FILL = _GATE + _FILL_ONCE + """
if new_fill(KEYS[1], ARGV[1], ARGV[2]) then
  redis.call('INCRBY', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


# record_fill, and mark the new fill's hedge task in flight in the same step (the maker's hot path).
# KEYS: fills, a_filled, inflight, hedged, pending, leg_seq. Returns {0} for a fill counted before,
# else {1, fills counted, a_filled, hedged, legs pending, leg_seq or false}: the hint for its task.
_RECORD_FILL_INFLIGHT = _GATE + _FILL_ONCE + """
if not new_fill(KEYS[1], ARGV[1], ARGV[2]) then
  return {0}
end
local a_filled = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return {1, fills_counted(KEYS[1]), tostring(a_filled), redis.call('GET', KEYS[4]) or '0',
        redis.call('SCARD', KEYS[5]), redis.call('GET', KEYS[6])}
"""

# The worker's first round trip. KEYS: fills, a_filled, hedged, pending, legs, hedge_times, leg_seq.
# ARGV[1..3]: fill id, fill JSON, signed units: count the fill once. Then, with ARGV[4..12]
# (expected a_filled, hedged and leg_seq; now_ms, rate member, window_ms, expire_s, limit, leg JSON):
# if no leg is pending and the ledger equals the expectation, note the order in the rate window and,
# within the limit, open the leg (the sequence's next number, PENDING) - a compare-and-set.
# Returns {opened (1, 0, or -1 over the rate limit), rate count, fills, a_filled, hedged, pending legs...}.
_BEGIN_HEDGE = _GATE + _FILL_ONCE + """
if new_fill(KEYS[1], ARGV[1], ARGV[2]) then
  redis.call('INCRBY', KEYS[2], ARGV[3])
end
local a_filled = redis.call('GET', KEYS[2]) or '0'
local hedged = redis.call('GET', KEYS[3]) or '0'
local pending = redis.call('SMEMBERS', KEYS[4])
local opened, count = 0, 0
if #ARGV > 3 and #pending == 0 and a_filled == ARGV[4] and hedged == ARGV[5]
    and redis.call('GET', KEYS[7]) == ARGV[6] then
  local now = tonumber(ARGV[7])
  redis.call('ZADD', KEYS[6], now, ARGV[8])
  redis.call('ZREMRANGEBYSCORE', KEYS[6], 0, now - tonumber(ARGV[9]))
  count = redis.call('ZCARD', KEYS[6])
  redis.call('EXPIRE', KEYS[6], tonumber(ARGV[10]))
  if count > tonumber(ARGV[11]) then
    opened = -1
  else
    local leg_no = redis.call('INCR', KEYS[7])
    redis.call('HSET', KEYS[5], leg_no, ARGV[12])
    redis.call('SADD', KEYS[4], leg_no)
    opened = 1
  end
end
local reply = {opened, count, fills_counted(KEYS[1]), a_filled, hedged}
if #pending > 0 then
  for _, body in ipairs(redis.call('HMGET', KEYS[5], unpack(pending))) do
    reply[#reply + 1] = body
  end
end
return reply
"""

# Rate window + write-ahead of one hedge leg, atomically. KEYS: hedge_times, leg_seq, legs, pending.
# ARGV: now_ms, member, window_ms, expire_s, limit, market_index, leg JSON with "leg":0 and
# "client_order_index":0 placeholders (filled in here, as integers), the sequence's start (leg_seq_start).
_OPEN_LEG = _GATE + """
local now = tonumber(ARGV[1])
redis.call('ZADD', KEYS[1], now, ARGV[2])
redis.call('ZREMRANGEBYSCORE', KEYS[1], 0, now - tonumber(ARGV[3]))
local count = redis.call('ZCARD', KEYS[1])
redis.call('EXPIRE', KEYS[1], tonumber(ARGV[4]))
if count > tonumber(ARGV[5]) then
  return {count, 0}
end
-- No sequence (first run, or Redis lost its data): start from the clock, past every index used before.
redis.call('SET', KEYS[2], ARGV[8], 'NX')
local leg_no = redis.call('INCR', KEYS[2])
local coi = string.format('%.0f', tonumber(ARGV[6]) * 1099511627776 + leg_no)
local body = string.gsub(ARGV[7], '"leg": 0,', '"leg": ' .. leg_no .. ',', 1)
body = string.gsub(body, '"client_order_index": 0,', '"client_order_index": ' .. coi .. ',', 1)
redis.call('HSET', KEYS[3], leg_no, body)
redis.call('SADD', KEYS[4], leg_no)
return {count, leg_no}
"""


# Store a leg; with ARGV[3] == 1 close it: only if it was open (SREM), count what it executed.
# KEYS: legs, pending, hedged. ARGV: leg number, leg JSON, close (0/1), hedged units.
# An update of an open leg (ARGV[3] == 0) is dropped when the leg is closed already.
_CLOSE_LEG = _GATE + """
if ARGV[3] == '1' then
  if redis.call('SREM', KEYS[2], ARGV[1]) == 0 then
    return 0
  end
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  if tonumber(ARGV[4]) ~= 0 then
    redis.call('INCRBY', KEYS[3], ARGV[4])
  end
  return 1
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return 1
end
return 0
"""


def _hint(reply: list[Any]) -> LedgerHint | None:
    if not int(reply[0]):
        return None
    _, fills, a_filled, hedged, pending, leg_seq = reply
    return LedgerHint(fills=int(fills), a_filled=int(a_filled), hedged=int(hedged), pending_legs=int(pending),
                      leg_seq=None if leg_seq is None else int(leg_seq))


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


@dataclass(frozen=True)
class LedgerSnapshot:
    """One market's ledger as `repair` reads it (Store.ledger_snapshot), and must find it again."""

    a_filled: int
    hedged: int
    leg_seq: int | None                         # the legs' sequence: moves whenever a leg is opened
    fills: int                                  # fill ids recorded (the dedupe's size)
    pending: tuple[tuple[int, Leg | None], ...]  # leg numbers in the pending set, with their records
    inflight: frozenset[str]                    # hedge tasks in flight
    paused: bool
    maker_order: bool                           # an order of A written ahead, not yet resolved

    @property
    def unhedged(self) -> int:
        return self.a_filled - self.hedged

    @property
    def open_legs(self) -> list[Leg]:
        """Legs that may still execute at the venue: a repair waits for them."""
        return [leg for _, leg in self.pending if leg is not None and leg.state.open]

    @property
    def stale_legs(self) -> list[int]:
        """Pending-set members whose record is closed or gone: nothing of them can still execute."""
        return [n for n, leg in self.pending if leg is None or not leg.state.open]


# Repair a market's ledger by compare-and-set. KEYS: a_filled, hedged, leg_seq, fills, pending, inflight,
# pause, maker_order. ARGV: expected a_filled, hedged, leg_seq ('' = none) and fill count; new a_filled,
# new hedged; the number of stale legs and their numbers; then fill id / fill JSON pairs to mark counted.
_REPAIR_LEDGER = """
if redis.call('EXISTS', KEYS[7]) == 0 then return 'not paused' end
if redis.call('SCARD', KEYS[6]) > 0 or redis.call('EXISTS', KEYS[8]) == 1 then return 'in flight' end
local stale = tonumber(ARGV[7])
if (redis.call('GET', KEYS[1]) or '0') ~= ARGV[1] or (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2]
    or (redis.call('GET', KEYS[3]) or '') ~= ARGV[3] or redis.call('HLEN', KEYS[4]) ~= tonumber(ARGV[4])
    or redis.call('SCARD', KEYS[5]) ~= stale then
  return 'moved'
end
for i = 8, 7 + stale do
  if redis.call('SISMEMBER', KEYS[5], ARGV[i]) == 0 then return 'moved' end
end
for i = 8, 7 + stale do
  redis.call('SREM', KEYS[5], ARGV[i])
end
for i = 8 + stale, #ARGV, 2 do
  redis.call('HSETNX', KEYS[4], ARGV[i], ARGV[i + 1])
end
redis.call('SET', KEYS[1], ARGV[5])
redis.call('SET', KEYS[2], ARGV[6])
return 'ok'
"""


# ---- key leases (Store.take_key_lease and friends) ------------------------------------------------

def _lease_key(account_index: int, api_key_index: int) -> str:
    return f"lh:key_lease:{account_index}:{api_key_index}"


@dataclass(frozen=True)
class KeyLease:
    """Who sends on an API key: role "maker", "worker" or "flatten", and which process."""

    role: str
    owner: str      # unique per process and lease: role:host:pid:random
    since_ms: int

    def to_json(self) -> str:
        return json.dumps({"role": self.role, "owner": self.owner, "since_ms": self.since_ms}, sort_keys=True)

    @classmethod
    def from_json(cls, raw: str) -> "KeyLease":
        try:
            data = json.loads(raw)
            return cls(str(data["role"]), str(data["owner"]), int(data["since_ms"]))
        except (ValueError, KeyError, TypeError):
            return cls("unknown", str(raw)[:80], 0)   # still a holder: nobody sends beside it


# KEYS: the lease. ARGV: our lease JSON, ttl_ms, roles we may take over... Returns nil when taken,
# else the lease that holds the key.
_TAKE_LEASE = """
local held = redis.call('GET', KEYS[1])
if held and held ~= ARGV[1] then
  local ok, lease = pcall(cjson.decode, held)
  local role = ok and type(lease) == 'table' and lease['role'] or nil
  local over = false
  for i = 3, #ARGV do
    if role == ARGV[i] then over = true end
  end
  if not over then return held end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', tonumber(ARGV[2]))
return nil
"""

# Compare-and-expire: KEYS[1] lives ARGV[2] ms more only if it still holds ARGV[1]. 1 if it did.
_CAS_PEXPIRE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  redis.call('PEXPIRE', KEYS[1], tonumber(ARGV[2]))
  return 1
end
return 0
"""


# ---- retention (Store.prune_*) --------------------------------------------------------------------

def is_trade_id(fill_id: str) -> bool:
    """A venue trade id in decimal: the fill ids retention may move out (they only grow). Others
    (a reconcile's 'recon-…' fills) stay in Redis."""
    return isinstance(fill_id, str) and fill_id[:1] in "123456789" and fill_id.isdigit() and fill_id.isascii()


@dataclass(frozen=True)
class Pruned:
    """What retention moved out of a market's fill record so far."""

    below: int | None               # every fill id at or below it counts as recorded
    fills: int                      # fill records (each with its hedged-fill marker) moved out
    last_fill: dict[str, Any] | None  # the highest one moved out (Store.latest_fill)


# KEYS: fills, pruned, hedged_fills, inflight, failed, refused. ARGV: the market, then fill ids (decimal).
# Removes each fill whose hedge succeeded (its marker) and whose task is neither in flight, failed nor
# refused, with its marker; raises 'below' to the highest id removed. Returns the ids removed.
_PRUNE_FILLS = """
local below = redis.call('HGET', KEYS[2], 'below')
local last
local removed = {}
for i = 2, #ARGV do
  local id = ARGV[i]
  local task = 'hedge-' .. ARGV[1] .. '-' .. id
  if redis.call('SISMEMBER', KEYS[3], id) == 1 and redis.call('SISMEMBER', KEYS[4], task) == 0
      and redis.call('HEXISTS', KEYS[5], task) == 0 and redis.call('HEXISTS', KEYS[6], task) == 0 then
    local body = redis.call('HGET', KEYS[1], id)
    if body then
      redis.call('HDEL', KEYS[1], id)
      redis.call('SREM', KEYS[3], id)
      removed[#removed + 1] = id
      if not below or #id > #below or (#id == #below and id > below) then
        below, last = id, body
      end
    end
  end
end
if #removed > 0 then
  redis.call('HINCRBY', KEYS[2], 'fills', #removed)
  if last then
    redis.call('HSET', KEYS[2], 'below', below, 'last', last)
  end
end
return removed
"""

# KEYS: hedged_fills, fills, pruned. ARGV: fill ids (decimal). Drops the marker of each id at or below
# 'below' whose fill record is gone (moved out before). Returns how many.
_PRUNE_MARKERS = """
local below = redis.call('HGET', KEYS[3], 'below')
if not below then
  return 0
end
local n = 0
for i = 1, #ARGV do
  local id = ARGV[i]
  if (#id < #below or (#id == #below and id <= below)) and redis.call('HEXISTS', KEYS[2], id) == 0 then
    n = n + redis.call('SREM', KEYS[1], id)
  end
end
return n
"""

# KEYS: legs, pending. ARGV: leg numbers. Removes each leg record not in the pending set (a closed leg).
_PRUNE_LEGS = """
local n = 0
for i = 1, #ARGV do
  if redis.call('SISMEMBER', KEYS[2], ARGV[i]) == 0 then
    n = n + redis.call('HDEL', KEYS[1], ARGV[i])
  end
end
return n
"""
