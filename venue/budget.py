"""The request budget of A and B's L1 address, shared through Redis by every process that calls Lighter.

Lighter counts the requests of one L1 address in one rolling minute, whichever process makes them:
the maker (A), the worker (B) and the CLI (`status`, `flatten`, the demo) all draw on one window.
`RequestBudget` keeps that window in the Redis they already share and applies hedge/budget.py's
rule to it atomically, in one Lua script per call (one EVALSHA):

1. drop the entries older than the window (60 s);
2. decide with the pure rule's figures: everyone together may fill the limit, QUOTE and READ
   together only the limit minus `hedge_reserve`; per-endpoint caps (`trades`: 40 a minute);
   QUOTE and READ wait out the shared backoff after a 429;
3. record the request when admitted, else answer how long until it would be.

API (times in ms):

    budget = budget_from_config(cfg, Store.from_url(cfg.redis_url).r)
    waited_ms = await budget.acquire("sendTx", Priority.HEDGE, "worker")  # waits, never refuses
    backoff_ms = budget.venue_refused("sendTx", "worker")   # after an HTTP 429: the venue disagrees
    budget.venue_ok()                                       # after a success: ends that backoff
    budget.usage()                                          # hedge.budget.Usage: used/limit/unit, by process, 429s

Keys (the Redis db is per deployment; the name carries both account indexes):
`lh:budget:<a>:<b>:window` (sorted set: one member per admitted request, scored by its time),
`...:totals` (running sums of the window: requests and weight, of QUOTE+READ, by process, by
endpoint), `...:backoff`
(until_ms, step_ms: 1 s doubling to 30 s, reset by the next success, forgotten after 10 quiet
minutes) and `...:stats` (429s seen, by process). Window and totals expire two windows after the
last request; entries leave the window after one, so everything stays bounded by the limit.

The clock is Redis's (`TIME`), so processes on different hosts share one window. If Redis cannot
be reached, `acquire` logs `event=budget.unavailable` and lets the request go: the venue's own
limit still applies, and its 429s are retried by venue/client.py.
"""
from __future__ import annotations

import asyncio
import json
import logging
import re
import time
from dataclasses import dataclass, field
from typing import Any

import redis

from hedge.budget import (FIRST_BACKOFF_MS, MAX_BACKOFF_MS, BudgetError, Priority, ProcessUsage, RateLimit,
                          Usage, WindowEntry, endpoint_cap, endpoint_weight)

log = logging.getLogger("venue.budget")

BACKOFF_TTL_MS = 600_000       # a backoff step is forgotten after 10 minutes without a 429
EXHAUSTED_EVERY_S = 10.0       # a process publishes budget.exhausted at most this often
_NAME = re.compile(r"[A-Za-z0-9_.:/-]+")   # endpoints and process names: no '|' (the member separator)

# Shared by the scripts: parse a window member, keep the running totals, drop expired entries.
# Member: "<at_ms>|<seq>|<priority>|<weight>|<process>|<endpoint>" (seq keeps members unique).
_LUA_COMMON = r"""
local PATTERN = '^(%d+)|(%d+)|(%d+)|(%d+)|([^|]*)|(.*)$'
local function parse(m)
  local at, _, pr, w, proc, ep = string.match(m, PATTERN)
  return tonumber(at), tonumber(w), proc, ep, tonumber(pr)
end
local function add(totals, w, proc, ep, pr, sign)
  redis.call('HINCRBY', totals, 'req', sign)
  redis.call('HINCRBY', totals, 'w', sign * w)
  if pr ~= 0 then   -- QUOTE and READ: their share is limit - hedge_reserve
    redis.call('HINCRBY', totals, 'qr_req', sign)
    redis.call('HINCRBY', totals, 'qr_w', sign * w)
  end
  if redis.call('HINCRBY', totals, 'req:' .. proc, sign) <= 0 then
    redis.call('HDEL', totals, 'req:' .. proc, 'w:' .. proc)
  else
    redis.call('HINCRBY', totals, 'w:' .. proc, sign * w)
  end
  if redis.call('HINCRBY', totals, 'n:' .. ep, sign) <= 0 then redis.call('HDEL', totals, 'n:' .. ep) end
end
local function clock(arg)
  local now = tonumber(arg)
  if now then return now end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function settle(win, totals, now, window_ms)
  -- The totals must describe the window; rebuild them if anything else touched either key.
  if tonumber(redis.call('HGET', totals, 'req') or '0') ~= redis.call('ZCARD', win) then
    local seq = redis.call('HGET', totals, 'seq') or '0'
    redis.call('DEL', totals)
    redis.call('HSET', totals, 'seq', seq, 'req', 0, 'w', 0, 'qr_req', 0, 'qr_w', 0)
    for _, m in ipairs(redis.call('ZRANGE', win, 0, -1)) do
      local _, w, proc, ep, pr = parse(m)
      add(totals, w, proc, ep, pr, 1)
    end
  end
  local cutoff = now - window_ms
  local old = redis.call('ZRANGEBYSCORE', win, '-inf', cutoff)
  for _, m in ipairs(old) do
    local _, w, proc, ep, pr = parse(m)
    add(totals, w, proc, ep, pr, -1)
  end
  if #old > 0 then redis.call('ZREMRANGEBYSCORE', win, '-inf', cutoff) end
end
"""

# KEYS: window, totals, backoff. ARGV: now_ms ('' = Redis TIME), window_ms, limit (-1 = none),
# weighted (1/0), share (QUOTE and READ's: limit - hedge_reserve), endpoint, weight, cap (0 = none),
# priority, process. Waits are considered in hedge.budget.decide's order: backoff, cap, limit, reserve.
# Returns {admitted 1/0, wait_ms, reason, used (in the limit's unit), backoff step_ms, now_ms}.
_ACQUIRE = _LUA_COMMON + r"""
local win, totals, backoff = KEYS[1], KEYS[2], KEYS[3]
local now, window_ms = clock(ARGV[1]), tonumber(ARGV[2])
local limit, weighted, share = tonumber(ARGV[3]), ARGV[4] == '1', tonumber(ARGV[5])
local endpoint, weight, cap = ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8])
local priority, process = tonumber(ARGV[9]), ARGV[10]
settle(win, totals, now, window_ms)

local wait, reason = 0, ''
local function consider(ms, why) if ms > wait then wait, reason = ms, why end end
local step = tonumber(redis.call('HGET', backoff, 'step_ms') or '0')
if priority ~= 0 then
  consider(tonumber(redis.call('HGET', backoff, 'until_ms') or '0') - now, 'backoff')
end
local cost = 1
if weighted then cost = weight end
local used = tonumber(redis.call('HGET', totals, weighted and 'w' or 'req') or '0')
-- The ms until `cost` fits within `room` beside the entries `counts` selects (oldest leave first).
local function until_room(in_use, room, counts)
  local need, freed = in_use + cost - room, 0
  if need <= 0 then return 0 end
  for _, m in ipairs(redis.call('ZRANGE', win, 0, -1)) do
    local at, w, _, _, pr = parse(m)
    if counts(pr) then
      if weighted then freed = freed + w else freed = freed + 1 end
      if freed >= need then return at + window_ms - now end
    end
  end
  return 0
end
if limit >= 0 then
  if cap > 0 then
    local n = tonumber(redis.call('HGET', totals, 'n:' .. endpoint) or '0')
    if n >= cap then
      local k, seen = n - cap, 0
      for _, m in ipairs(redis.call('ZRANGE', win, 0, -1)) do
        local at, _, _, ep = parse(m)
        if ep == endpoint then
          if seen == k then consider(at + window_ms - now, 'cap') break end
          seen = seen + 1
        end
      end
    end
  end
  consider(until_room(used, limit, function(_) return true end), 'limit')
  if priority ~= 0 then
    local shared = tonumber(redis.call('HGET', totals, weighted and 'qr_w' or 'qr_req') or '0')
    consider(until_room(shared, share, function(pr) return pr ~= 0 end), 'reserve')
  end
end
if wait > 0 then return {0, wait, reason, used, step, now} end

local seq = redis.call('HINCRBY', totals, 'seq', 1)
redis.call('ZADD', win, now, now .. '|' .. seq .. '|' .. priority .. '|' .. weight .. '|' .. process .. '|' .. endpoint)
add(totals, weight, process, endpoint, priority, 1)
redis.call('PEXPIRE', win, 2 * window_ms)
redis.call('PEXPIRE', totals, 2 * window_ms)
return {1, 0, '', used + cost, step, now}
"""

# KEYS: backoff, stats. ARGV: now_ms ('' = Redis TIME), process, first_ms, max_ms, ttl_ms.
# hedge.budget.after_refusal: a 429 during a running backoff does not escalate it again.
_REFUSED = _LUA_COMMON + r"""
local backoff, stats = KEYS[1], KEYS[2]
local now = clock(ARGV[1])
local until_ms = tonumber(redis.call('HGET', backoff, 'until_ms') or '0')
local step = tonumber(redis.call('HGET', backoff, 'step_ms') or '0')
if until_ms <= now then
  if step <= 0 then step = tonumber(ARGV[3]) else step = math.min(step * 2, tonumber(ARGV[4])) end
  until_ms = now + step
  redis.call('HSET', backoff, 'until_ms', until_ms, 'step_ms', step)
end
redis.call('PEXPIRE', backoff, tonumber(ARGV[5]))
redis.call('HINCRBY', stats, 'http_429', 1)
redis.call('HINCRBY', stats, 'http_429:' .. ARGV[2], 1)
redis.call('HSET', stats, 'last_429_ms', now)
return {until_ms - now, step}
"""

# KEYS: window, totals, backoff, stats. ARGV: now_ms ('' = Redis TIME), window_ms.
_USAGE = _LUA_COMMON + r"""
local now = clock(ARGV[1])
settle(KEYS[1], KEYS[2], now, tonumber(ARGV[2]))
return {now, redis.call('HGETALL', KEYS[2]), redis.call('HGETALL', KEYS[3]), redis.call('HGETALL', KEYS[4])}
"""


_REASONS = {"backoff": "backing off after the venue answered 429",
            "cap": "the endpoint's per-minute cap is reached",
            "limit": "the limit is used",
            "reserve": "quotes and reads have used their share; the rest is kept for hedges"}


class BudgetWaitTimeout(Exception):
    """No room within the wait the caller allowed (only with `max_wait_ms`; plain acquire waits)."""

    def __init__(self, endpoint: str, priority: Priority, wait_ms: int, reason: str):
        super().__init__(f"request budget: no room for {endpoint} ({priority.name.lower()}) within the wait "
                         f"allowed: {_REASONS.get(reason, reason)}; room in {wait_ms} ms")
        self.endpoint, self.priority, self.wait_ms, self.reason = endpoint, priority, wait_ms, reason


@dataclass(frozen=True)
class Grant:
    """One answer of the script: admitted, or the wait until it would be."""

    admitted: bool
    wait_ms: int
    reason: str               # backoff | cap | limit | reserve ('' when admitted)
    used: int                 # the window's use in the limit's unit (after this request when admitted)
    backoff_step_ms: int      # > 0 while a backoff after a 429 is remembered
    now_ms: int               # Redis's clock at the decision (the entry's time when admitted)


@dataclass
class LocalStats:
    """What this process did with the budget (for its Prometheus endpoint)."""

    acquired: dict[Priority, int] = field(default_factory=lambda: {p: 0 for p in Priority})
    paced: dict[Priority, int] = field(default_factory=lambda: {p: 0 for p in Priority})   # had to wait
    waited_ms: dict[Priority, int] = field(default_factory=lambda: {p: 0 for p in Priority})
    http_429: int = 0
    unavailable: int = 0


def budget_key(a_index: int, b_index: int) -> str:
    return f"lh:budget:{a_index}:{b_index}"


def budget_from_config(cfg: Any, client: redis.Redis) -> "RequestBudget":
    """The budget of the config's A and B (`cfg`: hedge.config.Config) in `client`'s Redis db
    (e.g. `Store.from_url(cfg.redis_url).r`)."""
    alerts = getattr(cfg, "alerts", None)
    db = int(client.connection_pool.connection_kwargs.get("db") or 0)
    return RequestBudget(client, budget_key(cfg.account_a.account_index, cfg.account_b.account_index),
                         cfg.rate_limit, exhausted_wait_ms=int(alerts.budget_wait_s * 1000) if alerts else None,
                         # tasks.store.events_channel(db), named here: venue/ does not import tasks/ (Celery).
                         events_channel=f"lh:{db}:events")


class RequestBudget:
    def __init__(self, client: redis.Redis, name: str, limit: RateLimit, *,
                 first_backoff_ms: int = FIRST_BACKOFF_MS, max_backoff_ms: int = MAX_BACKOFF_MS,
                 exhausted_wait_ms: int | None = None, events_channel: str | None = None):
        """`exhausted_wait_ms` and `events_channel`: a request that waits at least that long for room
        publishes {"event": "budget.exhausted", ...} there (the alerter's budget_exhausted;
        alerts.budget_wait_s), at most once per EXHAUSTED_EVERY_S per process."""
        self.r = client
        self.exhausted_wait_ms = exhausted_wait_ms
        self.events_channel = events_channel
        self._exhausted_said_at: float | None = None
        self.name = name
        self.limit = limit
        self.first_backoff_ms = first_backoff_ms
        self.max_backoff_ms = max_backoff_ms
        self.keys = {k: f"{name}:{k}" for k in ("window", "totals", "backoff", "stats")}
        self._acquire = client.register_script(_ACQUIRE)
        self._refused = client.register_script(_REFUSED)
        self._usage = client.register_script(_USAGE)
        self._backoff_seen = False
        self.local = LocalStats()
        self.last_grant: Grant | None = None    # the last admission of this object (tests, debugging)

    # ---- asking -----------------------------------------------------------------------------

    def try_acquire(self, endpoint: str, priority: Priority, process: str, now_ms: int | None = None) -> Grant:
        """One atomic decision: admitted (and recorded), or the wait until it would be.
        `now_ms` only for tests; the clock is Redis's."""
        _check_name("endpoint", endpoint)
        _check_name("process", process)
        allowance = self.limit.allowance(priority)
        cost = self.limit.cost(endpoint)
        if allowance is not None and cost > allowance:
            raise BudgetError(f"{endpoint} costs {cost} {self.limit.unit}, more than {priority.name}'s share "
                              f"of the {self.limit.tier} limit ({allowance})")
        k = self.keys
        limit = self.limit.limit
        reply = self._acquire(
            keys=[k["window"], k["totals"], k["backoff"]],
            args=["" if now_ms is None else now_ms, self.limit.window_ms, -1 if limit is None else limit,
                  int(self.limit.weighted), self.limit.allowance(Priority.QUOTE) or 0, endpoint,
                  endpoint_weight(endpoint), endpoint_cap(endpoint) or 0, int(priority), process])
        admitted, wait_ms, reason, used, step, at_ms = reply
        return Grant(bool(int(admitted)), int(wait_ms), _text(reason), int(used), int(step), int(at_ms))

    def hedge_has_room(self, endpoint: str) -> bool:
        """Whether a hedge may go out first and be recorded right after (see VenueClient._deliver):
        no backoff after a 429 is running, and the last window this process saw had room for it.
        Quotes and reads never use the hedge reserve, so a hedge finds room unless hedges filled it."""
        if self._backoff_seen:
            return False
        if self.limit.limit is None or self.last_grant is None:
            return True
        return self.last_grant.used + self.limit.cost(endpoint) <= self.limit.limit

    async def acquire(self, endpoint: str, priority: Priority, process: str, max_wait_ms: int | None = None) -> int:
        """Wait until the request fits, record it, and return how long it waited for room (ms; 0
        when it fitted at once: the Redis round trip itself is not a wait).

        Never refuses; with `max_wait_ms` it raises BudgetWaitTimeout instead of waiting longer
        (used by callers that have something better to do, e.g. `status --watch`)."""
        started = time.monotonic()
        slept = False
        said = False
        while True:
            try:
                grant = self.try_acquire(endpoint, priority, process)
            except redis.RedisError as exc:
                self.local.unavailable += 1
                log.warning("event=budget.unavailable endpoint=%s priority=%s process=%s error=%r "
                            "action=going_ahead (the venue's own limit still applies)",
                            endpoint, priority.name.lower(), process, exc)
                return _ms_since(started)
            waited_ms = _ms_since(started)
            if grant.admitted:
                self.last_grant = grant
                self.local.acquired[priority] += 1
                self.local.paced[priority] += int(slept)
                self._backoff_seen = self._backoff_seen or grant.backoff_step_ms > 0
                if not slept:
                    return 0
                self.local.waited_ms[priority] += waited_ms
                return waited_ms
            if max_wait_ms is not None and waited_ms + grant.wait_ms > max_wait_ms:
                raise BudgetWaitTimeout(endpoint, priority, grant.wait_ms, grant.reason)
            if not said and self.exhausted_wait_ms is not None and waited_ms + grant.wait_ms >= self.exhausted_wait_ms:
                said = True
                self._say_exhausted(endpoint, priority, process, waited_ms + grant.wait_ms, grant)
            slept = True
            await asyncio.sleep(grant.wait_ms / 1000)

    def _say_exhausted(self, endpoint: str, priority: Priority, process: str, wait_ms: int, grant: Grant) -> None:
        """This request waits at least `wait_ms` for room: logged and published once per EXHAUSTED_EVERY_S."""
        now = time.monotonic()
        if self._exhausted_said_at is not None and now - self._exhausted_said_at < EXHAUSTED_EVERY_S:
            return
        self._exhausted_said_at = now
        log.warning("event=budget.exhausted process=%s endpoint=%s priority=%s wait_ms=%d reason=%s used=%d limit=%s",
                    process, endpoint, priority.name.lower(), wait_ms, grant.reason, grant.used, self.limit.limit)
        if self.events_channel is None:
            return
        try:
            self.r.publish(self.events_channel, json.dumps({
                "event": "budget.exhausted", "process": process, "endpoint": endpoint,
                "priority": priority.name.lower(), "wait_ms": wait_ms, "reason": grant.reason,
                "why": _REASONS.get(grant.reason, grant.reason), "used": grant.used, "limit": self.limit.limit,
                "unit": self.limit.unit, "tier": self.limit.tier}))
        except redis.RedisError as exc:
            log.warning("event=budget.unavailable action=exhausted_not_published error=%r", exc)

    # ---- what the venue said -----------------------------------------------------------------

    def venue_refused(self, endpoint: str, process: str, now_ms: int | None = None) -> int:
        """The venue answered 429: its window disagrees with ours. Starts (or keeps) the shared
        backoff and counts the refusal; returns the ms to wait before trying again."""
        _check_name("process", process)
        self.local.http_429 += 1
        self._backoff_seen = True
        try:
            wait_ms, _step = self._refused(
                keys=[self.keys["backoff"], self.keys["stats"]],
                args=["" if now_ms is None else now_ms, process, self.first_backoff_ms, self.max_backoff_ms,
                      BACKOFF_TTL_MS])
        except redis.RedisError as exc:
            log.warning("event=budget.unavailable endpoint=%s process=%s error=%r action=local_backoff_ms=%d",
                        endpoint, process, exc, self.first_backoff_ms)
            return self.first_backoff_ms
        return int(wait_ms)

    def venue_ok(self) -> None:
        """A request succeeded: end the backoff (one Redis call, only when one was seen)."""
        if not self._backoff_seen:
            return
        self._backoff_seen = False
        try:
            self.r.delete(self.keys["backoff"])
        except redis.RedisError as exc:
            log.warning("event=budget.unavailable action=backoff_not_reset error=%r", exc)

    # ---- looking -----------------------------------------------------------------------------

    def usage(self, now_ms: int | None = None) -> Usage:
        """The rolling window now: used/limit in the limit's unit, by process, and 429s seen."""
        k = self.keys
        now, totals, backoff, stats = self._usage(
            keys=[k["window"], k["totals"], k["backoff"], k["stats"]],
            args=["" if now_ms is None else now_ms, self.limit.window_ms])
        totals, backoff, stats = _pairs(totals), _pairs(backoff), _pairs(stats)
        processes = {f.split(":", 1)[1] for f in totals if f.startswith("req:")}
        processes |= {f.split(":", 1)[1] for f in stats if f.startswith("http_429:")}
        by_process = {p: ProcessUsage(int(totals.get(f"req:{p}", 0)), int(totals.get(f"w:{p}", 0)),
                                      int(stats.get(f"http_429:{p}", 0))) for p in processes}
        requests, weight = int(totals.get("req", 0)), int(totals.get("w", 0))
        return Usage(tier=self.limit.tier, limit=self.limit.limit, unit=self.limit.unit,
                     window_ms=self.limit.window_ms, hedge_reserve=self.limit.hedge_reserve,
                     used=weight if self.limit.weighted else requests, requests=requests, weight=weight,
                     http_429=int(stats.get("http_429", 0)),
                     backoff_left_ms=max(0, int(backoff.get("until_ms", 0)) - int(now)), by_process=by_process)


    def window_entries(self) -> list[WindowEntry]:
        """The window's entries as stored, oldest first (expired ones included until the next call
        drops them). For tests and debugging; `usage()` is the cheap view."""
        entries = []
        for member in self.r.zrange(self.keys["window"], 0, -1):
            at_ms, _seq, priority, weight, process, endpoint = _text(member).split("|", 5)
            entries.append(WindowEntry(int(at_ms), endpoint, int(weight), process, Priority(int(priority))))
        return entries


def _check_name(what: str, value: str) -> None:
    if not isinstance(value, str) or not _NAME.fullmatch(value):
        raise ValueError(f"budget {what}: expected letters, digits or _.:/- only, got {value!r}")


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _pairs(flat: list[Any]) -> dict[str, str]:
    """HGETALL's flat [field, value, ...] from a script, as a dict of str."""
    items = [_text(v) for v in flat]
    return dict(zip(items[0::2], items[1::2]))


def _ms_since(started: float) -> int:
    return int((time.monotonic() - started) * 1000)
