"""Durable state in Redis shared by the maker, the worker and the CLI.

Keys (all under "lh:"): hedge registry per fill, carried dust, in-flight and failed hedges,
the maker's pause (survives restarts), recorded fills (durable dedupe), counters, events.
"""
from __future__ import annotations

import dataclasses
import json
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


def now_ms() -> int:
    return int(time.time() * 1000)


def task_id_for(market_symbol: str, fill_id: str) -> str:
    return f"hedge-{market_symbol}-{fill_id}"


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
        # The fill count of the last ledger this process read back, per market (the worker's
        # input to hedge.plan.speculative_split).
        self.fills_seen: dict[str, int] = {}

    @classmethod
    def from_url(cls, url: str) -> "Store":
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                        socket_connect_timeout=5, health_check_interval=30))

    # ---- the ledger: A's fills and B's hedge legs, per market ------------------------------------
    #
    # unhedged = a_filled - hedged - (legs in flight). a_filled counts each fill id once, hedged
    # counts each settled leg once (both in A's direction, venue integer units), so replaying a
    # fill or re-running a task cannot change what gets hedged.

    def record_fill(self, market: str, fill_msg: dict[str, Any], signed_units: int) -> bool:
        """Count a fill of A once: True the first time its id is seen on this market."""
        return bool(self._record_fill(keys=[f"lh:fills:{market}", f"lh:a_filled:{market}"],
                                      args=[fill_msg["fill_id"], json.dumps(fill_msg), signed_units]))

    def record_fills(self, market: str, fills: list[tuple[dict[str, Any], int, str]]) -> list[LedgerHint | None]:
        """The maker's hot path: count a frame's fills once and mark each new one's hedge task in
        flight, atomically per fill, in one round trip. `fills`: (fill message, signed units, task id).

        Per fill: None for one counted before (a replay), else the ledger right after counting it
        (the hint its hedge task carries)."""
        keys = [f"lh:fills:{market}", f"lh:a_filled:{market}", f"lh:inflight:{market}",
                f"lh:hedged:{market}", f"lh:pending:{market}", f"lh:leg_seq:{market}"]
        if len(fills) == 1:  # the common frame: no pipeline object, a little less latency
            msg, units, task_id = fills[0]
            replies = [self._record_fill_inflight(keys=keys, args=[msg["fill_id"], json.dumps(msg), units, task_id])]
        else:
            with self.r.pipeline(transaction=False) as pipe:
                for msg, units, task_id in fills:
                    self._record_fill_inflight(keys=keys, args=[msg["fill_id"], json.dumps(msg), units, task_id],
                                               client=pipe)
                replies = pipe.execute()
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
        return BeginHedgeCall(self, market, keys, args, None if leg_if is None else leg_if.leg)

    def fills(self, market: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(f"lh:fills:{market}").items()}

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
        count, leg_no = self._open_leg(
            keys=[f"lh:hedge_times:{market}", f"lh:leg_seq:{market}", f"lh:legs:{market}", f"lh:pending:{market}"],
            args=[now, f"{now}:{time.perf_counter_ns()}", window_s * 1000, window_s * 2, limit_per_minute,
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
        self._close_leg(keys=[f"lh:legs:{market}", f"lh:pending:{market}", f"lh:hedged:{market}"],
                        args=[leg.leg, leg.to_json(), 0, 0])

    def close_leg(self, market: str, leg: Leg) -> bool:
        """The venue's final word on a leg (executed, rejected, expired): stored, and what it
        executed counted in the ledger, once, atomically. False if it was closed before."""
        assert not leg.state.open, leg
        return bool(self._close_leg(keys=[f"lh:legs:{market}", f"lh:pending:{market}", f"lh:hedged:{market}"],
                                    args=[leg.leg, leg.to_json(), 1, leg.hedged_units]))

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
                       fill_msg: dict[str, Any] | None = None) -> None:
        with self.r.pipeline(transaction=True) as pipe:
            pipe.srem(f"lh:inflight:{market}", task_id)
            pipe.srem(f"lh:failed_ack:{market}", task_id)   # a new outcome: any old acknowledgement is void
            if ok:
                pipe.hdel(f"lh:failed:{market}", task_id)
                # A set, not a counter: a re-run of a hedge (requeue, redelivery) is one hedged fill.
                pipe.sadd(f"lh:hedged_fills:{market}", fill_id)
            else:
                pipe.hset(f"lh:failed:{market}", task_id, json.dumps(
                    {"fill_id": fill_id, "reason": reason, "fill": fill_msg, "ts_ms": now_ms()}))
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
        stats["hedges"] = int(self.r.scard(f"lh:hedged_fills:{market}"))
        return stats

    def publish_event(self, event: dict[str, Any]) -> None:
        self.r.publish(self.events_channel, json.dumps(event, default=_json_default))

    def worker_heartbeat(self, ttl_ms: int) -> None:
        """The hedge worker is alive: the key lives `ttl_ms` unless written again (tasks/heartbeat.py)."""
        self.r.set("lh:worker_heartbeat", now_ms(), px=ttl_ms)

    def worker_alive(self) -> bool:
        """A hedge worker wrote its heartbeat within its TTL (the maker's dead-man's switch asks)."""
        return bool(self.r.exists("lh:worker_heartbeat"))


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
            reply = self._store._begin_hedge(keys=self._keys, args=self._args)
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


_RECORD_FILL = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
  redis.call('INCRBY', KEYS[2], ARGV[3])
  return 1
end
return 0
"""


# record_fill, and mark the new fill's hedge task in flight in the same step (the maker's hot path).
# KEYS: fills, a_filled, inflight, hedged, pending, leg_seq. Returns {0} for a fill counted before,
# else {1, fills counted, a_filled, hedged, legs pending, leg_seq or false}: the hint for its task.
_RECORD_FILL_INFLIGHT = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 0 then
  return {0}
end
local a_filled = redis.call('INCRBY', KEYS[2], ARGV[3])
redis.call('SADD', KEYS[3], ARGV[4])
return {1, redis.call('HLEN', KEYS[1]), tostring(a_filled), redis.call('GET', KEYS[4]) or '0',
        redis.call('SCARD', KEYS[5]), redis.call('GET', KEYS[6])}
"""

# The worker's first round trip. KEYS: fills, a_filled, hedged, pending, legs, hedge_times, leg_seq.
# ARGV[1..3]: fill id, fill JSON, signed units: count the fill once. Then, with ARGV[4..12]
# (expected a_filled, hedged and leg_seq; now_ms, rate member, window_ms, expire_s, limit, leg JSON):
# if no leg is pending and the ledger equals the expectation, note the order in the rate window and,
# within the limit, open the leg (the sequence's next number, PENDING) - a compare-and-set.
# Returns {opened (1, 0, or -1 over the rate limit), rate count, fills, a_filled, hedged, pending legs...}.
_BEGIN_HEDGE = """
if redis.call('HSETNX', KEYS[1], ARGV[1], ARGV[2]) == 1 then
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
local reply = {opened, count, redis.call('HLEN', KEYS[1]), a_filled, hedged}
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
_OPEN_LEG = """
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
_CLOSE_LEG = """
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
