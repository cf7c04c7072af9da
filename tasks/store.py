"""Durable state in Redis shared by the maker, the worker and the CLI.

Keys (all under "lh:"): hedge registry per fill, carried dust, in-flight and failed hedges,
the maker's pause (survives restarts), recorded fills (durable dedupe), counters, events.
"""
from __future__ import annotations

import json
import time
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

    @classmethod
    def from_url(cls, url: str) -> "Store":
        return cls(redis.Redis.from_url(url, decode_responses=True, socket_timeout=10,
                                        socket_connect_timeout=5, health_check_interval=30))

    # ---- fills seen by the maker (durable dedupe) --------------------------------------------

    def record_fill(self, market: str, fill_msg: dict[str, Any]) -> bool:
        """True the first time this fill id is recorded for the market; False for a replay."""
        return bool(self.r.hsetnx(f"lh:fills:{market}", fill_msg["fill_id"], json.dumps(fill_msg)))

    def fills(self, market: str) -> dict[str, dict[str, Any]]:
        return {k: json.loads(v) for k, v in self.r.hgetall(f"lh:fills:{market}").items()}

    # ---- hedge registry (worker) --------------------------------------------------------------

    def hedge_key(self, market: str, fill_id: str) -> str:
        return f"lh:hedge:{market}:{fill_id}"

    def dust_key(self, market: str) -> str:
        return f"lh:dust:{market}"

    def get_hedge(self, market: str, fill_id: str) -> dict[str, Any] | None:
        raw = self.r.get(self.hedge_key(market, fill_id))
        return json.loads(raw) if raw else None

    def put_hedge(self, market: str, record: dict[str, Any]) -> None:
        self.r.set(self.hedge_key(market, record["fill_id"]), json.dumps(record))

    def open_hedge(self, market: str, fill_id: str, fill_signed_int: int, split) -> dict[str, Any]:
        """Create the fill's hedge record and take the carried dust, atomically and once.

        `split(total_signed_int) -> (order_signed_int, dust_signed_int)`. A retry or a
        redelivery finds the record and gets it back unchanged, so dust is never taken twice.
        """
        key, dust_key = self.hedge_key(market, fill_id), self.dust_key(market)
        with self.r.pipeline() as pipe:
            while True:
                try:
                    pipe.watch(key, dust_key)
                    existing = pipe.get(key)
                    if existing:
                        pipe.unwatch()
                        return json.loads(existing)
                    dust = int(pipe.get(dust_key) or 0)
                    target, new_dust = split(fill_signed_int + dust)
                    record = {"fill_id": fill_id, "fill_signed": fill_signed_int, "dust_in": dust,
                              "target_signed": target, "legs": [], "state": "OPEN",
                              "opened_ms": now_ms()}
                    pipe.multi()
                    pipe.set(key, json.dumps(record))
                    pipe.set(dust_key, new_dust)
                    pipe.execute()
                    return record
                except redis.WatchError:
                    continue

    def close_hedge(self, market: str, record: dict[str, Any], leftover_signed_int: int) -> None:
        """Mark done and carry what could not be ordered (below min size) as dust, atomically."""
        record["state"] = "DONE"
        record["dust_out"] = leftover_signed_int
        with self.r.pipeline(transaction=True) as pipe:
            pipe.set(self.hedge_key(market, record["fill_id"]), json.dumps(record))
            if leftover_signed_int:
                pipe.incrby(self.dust_key(market), leftover_signed_int)
            pipe.execute()

    def dust(self, market: str) -> int:
        return int(self.r.get(self.dust_key(market)) or 0)

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


def _json_default(value: Any) -> Any:
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
