"""Durable state in Redis shared by the maker, the worker and the CLI.

Keys (all under "lh:"): hedge registry per fill, carried dust, in-flight and failed hedges,
the maker's pause (survives restarts), recorded fills (durable dedupe), counters, events.
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import redis

EVENTS_CHANNEL = "lh:events"
CONTROL_CHANNEL = "lh:control"


def now_ms() -> int:
    return int(time.time() * 1000)


def task_id_for(market_symbol: str, fill_id: str) -> str:
    return f"hedge-{market_symbol}-{fill_id}"


class Store:
    def __init__(self, client: redis.Redis):
        self.r = client
        self._record_fill = client.register_script(_RECORD_FILL)

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
            legs = [json.loads(v) for v in self.r.hmget(f"lh:legs:{market}", sorted(pending, key=int)) if v]
        return Ledger(int(a_filled or 0), int(hedged or 0), legs)

    def open_leg(self, market: str, leg: dict[str, Any], client_order_index_for) -> dict[str, Any]:
        """Write-ahead: the leg's intent is durable (and counted in flight) before the wire call.

        `client_order_index_for(leg_no)` derives the venue index from the ledger's sequence.
        """
        leg_no = int(self.r.incr(f"lh:leg_seq:{market}"))
        leg = dict(leg, leg=leg_no, client_order_index=client_order_index_for(leg_no), state="PENDING")
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(f"lh:legs:{market}", leg["leg"], json.dumps(leg))
            pipe.sadd(f"lh:pending:{market}", leg["leg"])
            pipe.execute()
        return leg

    def update_leg(self, market: str, leg: dict[str, Any]) -> None:
        self.r.hset(f"lh:legs:{market}", leg["leg"], json.dumps(leg))

    def settle_leg(self, market: str, leg: dict[str, Any], hedged_units: int) -> None:
        """The venue's final word on a leg: count what it executed, once, atomically."""
        leg = dict(leg, state="DONE", hedged_units=hedged_units)
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(f"lh:legs:{market}", leg["leg"], json.dumps(leg))
            pipe.srem(f"lh:pending:{market}", leg["leg"])
            if hedged_units:
                pipe.incrby(f"lh:hedged:{market}", hedged_units)
            pipe.execute()

    def void_leg(self, market: str, leg: dict[str, Any]) -> None:
        """The venue never took this leg (definite reject, or not found after the grace period)."""
        with self.r.pipeline(transaction=True) as pipe:
            pipe.hset(f"lh:legs:{market}", leg["leg"], json.dumps(dict(leg, state="VOID")))
            pipe.srem(f"lh:pending:{market}", leg["leg"])
            pipe.execute()

    def legs(self, market: str) -> list[dict[str, Any]]:
        return sorted((json.loads(v) for v in self.r.hvals(f"lh:legs:{market}")), key=lambda leg: leg["leg"])

    def note_hedge_sent(self, market: str, window_s: int = 60) -> int:
        """Record a hedge order now; how many were sent in the last window (risk limit)."""
        key, now = f"lh:hedge_times:{market}", now_ms()
        with self.r.pipeline(transaction=True) as pipe:
            pipe.zadd(key, {f"{now}:{time.perf_counter_ns()}": now})
            pipe.zremrangebyscore(key, 0, now - window_s * 1000)
            pipe.zcard(key)
            pipe.expire(key, window_s * 2)
            return int(pipe.execute()[2])

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
            if ok:
                pipe.hdel(f"lh:failed:{market}", task_id)
                pipe.hincrby(f"lh:stats:{market}", "hedges", 1)
            else:
                pipe.hset(f"lh:failed:{market}", task_id, json.dumps(
                    {"fill_id": fill_id, "reason": reason, "fill": fill_msg, "ts_ms": now_ms()}))
            pipe.execute()

    def failed(self, market: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(f"lh:failed:{market}").items()}

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
        self.r.publish(CONTROL_CHANNEL, json.dumps(message))

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
        return {k: int(v) for k, v in self.r.hgetall(f"lh:stats:{market}").items()}

    def publish_event(self, event: dict[str, Any]) -> None:
        self.r.publish(EVENTS_CHANNEL, json.dumps(event, default=_json_default))


@dataclass(frozen=True)
class Ledger:
    a_filled: int      # sum of A's fills, signed (buy +), venue units
    hedged: int        # what B's settled legs took off, in A's direction
    pending: list[dict[str, Any]]  # legs sent or about to be sent, outcome not yet known

    @property
    def in_flight(self) -> int:
        """What pending legs would take off, in A's direction (a B sell covers an A buy)."""
        return sum(leg["base_int"] if leg["is_ask"] else -leg["base_int"] for leg in self.pending)

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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
