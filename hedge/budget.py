"""Lighter's request budget as pure rules: tiers, endpoint weights and caps, and who may use what.

Lighter limits REST requests per rolling minute per L1 address (apidocs "Rate Limits"). Accounts
A (the maker) and B (the hedger) sit under one master, so they share one budget:

| tier       | limit per rolling minute | counts                                       |
|------------|--------------------------|----------------------------------------------|
| `standard` | 60                       | requests (every request costs 1)             |
| `premium`  | 24,000                   | weight                                       |
| `plus`     | 120,000                  | weight                                       |
| `builder`  | 240,000                  | weight (granted for reads; see below)        |

Weights: sendTx, sendTxBatch, nextNonce 6; publicPools, txFromL1TxHash 50; accountInactiveOrders,
deposit/latest 100; apikeys 150; transferFeeInfo 500; trades, recentTrades 600; a few account
administration endpoints 3,000; every other endpoint 300. Whenever 24,000 / weight < 60, that
count caps the endpoint on every tier (`trades`: 40 a minute). Over the limit the venue answers
HTTP 429 `{"code": 23000}` and does nothing. (`builder` is granted to read-only endpoints; this
one window also counts our sendTx in it at weight 6. Give `lighter.rate_limit` explicitly when
your transactions must stay under a smaller figure.)

Who may use what. Every request has a priority:

- `HEDGE`: B's hedge `sendTx` (and the nonce it needs): may use the whole limit;
- `QUOTE`: A's order and cancel `sendTx`;
- `READ`: every REST read, whoever makes it.

Everyone together may use the limit; QUOTE and READ together only the limit minus
`hedge_reserve`. So the reserve is never touched by A's quoting or anyone's reads, and B's hedge
sends never wait behind them: as long as hedges alone use less than the reserve per minute, a
hedge is admitted at once (and hedges do not shrink the quotes' share: they count against the
limit, not against the share). After the venue refused us (a 429: its window disagrees
with ours, e.g. someone else uses the address), QUOTE and READ also wait out a backoff (1 s,
doubling to 30 s, reset by the next success); a hedge does not wait behind a refusal it did not
get, and waits out its own backoff when it gets one.

`decide(window, request, limit, now_ms)` is the admission decision, a pure function of the
window's entries: `Admit()` or `Wait(wait_ms)`, the time until it would be admitted if nothing
else arrived. venue/budget.py applies the same rule atomically in Redis (a Lua script fed with
this module's figures); tests/unit/test_budget.py pins the rule and
tests/integration/test_budget.py checks that the script agrees with it.

Times are integer milliseconds (`*_ms`); nothing here reads a clock.
"""
from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Iterable, Mapping, Sequence

WINDOW_MS = 60_000                  # Lighter's rolling minute
CAP_BASE_WEIGHT = 24_000            # premium's limit: an endpoint with 24,000 / weight < 60 ...
CAP_BELOW = 60                      # ... is capped at that many requests a minute on every tier
DEFAULT_WEIGHT = 300
FIRST_BACKOFF_MS = 1_000
MAX_BACKOFF_MS = 30_000

_WEIGHTS: Mapping[str, int] = {
    "sendTx": 6, "sendTxBatch": 6, "nextNonce": 6,
    "publicPools": 50, "txFromL1TxHash": 50,
    "accountInactiveOrders": 100, "deposit/latest": 100,
    "apikeys": 150,
    "transferFeeInfo": 500,
    "trades": 600, "recentTrades": 600,
    "changeAccountTier": 3000, "setAccountMetadata": 3000, "notification/ack": 3000,
    "createIntentAddress": 3000, "fastwithdraw": 3000,
}
_HEAVY_PREFIXES = ("tokens/", "referral/")     # 3,000 each
# The heaviest request this service makes (`trades`): the QUOTE/READ share must fit one of it.
HEAVIEST_WEIGHT_USED = 600
HEDGE_ENDPOINT = "sendTx"


class BudgetError(ValueError):
    """A rate limit that cannot work (e.g. a request that no share of the limit could ever admit)."""


class Priority(enum.IntEnum):
    """Who asks. Lower value = more important; the value is what the Redis script receives."""

    HEDGE = 0   # B's hedge sendTx: the whole limit
    QUOTE = 1   # A's order / cancel sendTx: with READ, limit - hedge_reserve (and the limit)
    READ = 2    # every REST read: with QUOTE, limit - hedge_reserve (and the limit)


@dataclass(frozen=True)
class Tier:
    name: str
    limit: int          # per rolling minute
    weighted: bool      # True: weights are summed; False: every request counts 1


TIERS: Mapping[str, Tier] = {t.name: t for t in (
    Tier("standard", 60, weighted=False),
    Tier("premium", 24_000, weighted=True),
    Tier("plus", 120_000, weighted=True),
    Tier("builder", 240_000, weighted=True),
)}
UNLIMITED = "unlimited"   # not a Lighter tier: the simulator's `instant` (usage counted, nothing waits)
CUSTOM = "custom"         # explicit lighter.rate_limit figures


def endpoint_weight(endpoint: str) -> int:
    """Lighter's weight of an endpoint (`sendTx`, `accountOrders`, `deposit/latest`, ...)."""
    if endpoint in _WEIGHTS:
        return _WEIGHTS[endpoint]
    if endpoint.startswith(_HEAVY_PREFIXES):
        return 3000
    return DEFAULT_WEIGHT


def endpoint_cap(endpoint: str) -> int | None:
    """Requests a minute allowed on every tier when the weight makes 24,000 / weight < 60, else None."""
    cap = CAP_BASE_WEIGHT // endpoint_weight(endpoint)
    return cap if cap < CAP_BELOW else None


@dataclass(frozen=True)
class RateLimit:
    """The budget one L1 address has, and the part of it kept for hedges.

    `limit` None = no limit (the simulator's instant tier): usage is still counted, nothing waits.
    `window_ms` is Lighter's rolling minute; a shorter window exists for tests only.
    """

    tier: str
    limit: int | None
    weighted: bool
    hedge_reserve: int
    window_ms: int = WINDOW_MS

    def __post_init__(self) -> None:
        if self.window_ms <= 0:
            raise BudgetError(f"window_ms: expected a positive number of ms, got {self.window_ms}")
        if self.limit is None:
            return
        if self.limit < 1:
            raise BudgetError(f"limit: expected a positive integer, got {self.limit}")
        if not self.hedge_reserve_min <= self.hedge_reserve <= self.hedge_reserve_max:
            raise BudgetError(
                f"hedge_reserve: expected {self.hedge_reserve_min}..{self.hedge_reserve_max} ({self.unit} of "
                f"{self.tier}'s {self.limit}: at least one hedge sendTx, and room left for one "
                f"{self._heaviest_name} request for quotes and reads), got {self.hedge_reserve}")

    @property
    def unit(self) -> str:
        return "weight" if self.weighted else "requests"

    @property
    def hedge_reserve_min(self) -> int:
        return self.cost(HEDGE_ENDPOINT)

    @property
    def hedge_reserve_max(self) -> int:
        return (self.limit or 0) - (HEAVIEST_WEIGHT_USED if self.weighted else 1)

    @property
    def _heaviest_name(self) -> str:
        return "trades (weight 600)" if self.weighted else "more"

    def cost(self, endpoint: str) -> int:
        """What one request of `endpoint` uses of the limit."""
        return endpoint_weight(endpoint) if self.weighted else 1

    def allowance(self, priority: Priority) -> int | None:
        """How much a priority's class may use (None: no limit): HEDGE the whole limit (counting
        everyone), QUOTE and READ the limit minus the reserve (counting QUOTE and READ)."""
        if self.limit is None:
            return None
        return self.limit if priority is Priority.HEDGE else self.limit - self.hedge_reserve


def smallest_limit(weighted: bool) -> int:
    """The smallest limit that works: one hedge sendTx in the reserve, plus the heaviest request
    this service makes (a `trades` read) in the rest."""
    return endpoint_weight(HEDGE_ENDPOINT) + HEAVIEST_WEIGHT_USED if weighted else 2


def default_hedge_reserve(limit: int, weighted: bool) -> int:
    """A quarter of the limit, within what RateLimit accepts.

    Why a quarter: on standard that keeps 15 of the 60 requests a minute for B's hedge sends. A
    hedge task sends one order per burst of fills (the ledger aggregates them), so 15 covers a
    minute far busier than the maker can cause, while A's quoting and all reads keep 45.
    """
    heaviest = HEAVIEST_WEIGHT_USED if weighted else 1
    smallest = endpoint_weight(HEDGE_ENDPOINT) if weighted else 1
    return max(smallest, min(limit // 4, limit - heaviest))


def rate_limit_for_tier(tier: str, hedge_reserve: int | None = None, window_ms: int = WINDOW_MS) -> RateLimit:
    """A tier by name (TIERS, or UNLIMITED), with the default reserve unless one is given."""
    if tier == UNLIMITED:
        return RateLimit(UNLIMITED, None, weighted=False, hedge_reserve=0, window_ms=window_ms)
    if tier not in TIERS:
        raise BudgetError(f"tier: expected one of {', '.join(TIERS)}, got {tier!r}")
    t = TIERS[tier]
    reserve = default_hedge_reserve(t.limit, t.weighted) if hedge_reserve is None else hedge_reserve
    return RateLimit(t.name, t.limit, t.weighted, reserve, window_ms)


# ---- the window and the decision ------------------------------------------------------------------

@dataclass(frozen=True)
class WindowEntry:
    """One admitted request: when (ms), what, its weight, who and why."""

    at_ms: int
    endpoint: str
    weight: int
    process: str
    priority: Priority


@dataclass(frozen=True)
class Request:
    endpoint: str
    priority: Priority


@dataclass(frozen=True)
class Admit:
    """Go now (the caller records the request in the window)."""


@dataclass(frozen=True)
class Wait:
    """Not now: in `wait_ms` at the earliest. `reason` (of the longest wait): backoff (after a 429),
    cap (the endpoint's count), limit (everyone's use), reserve (QUOTE and READ's share is used)."""

    wait_ms: int
    reason: str


Decision = Admit | Wait


def live_entries(window: Iterable[WindowEntry], window_ms: int, now_ms: int) -> list[WindowEntry]:
    """Entries still inside the rolling window, oldest first (an entry leaves at at_ms + window_ms)."""
    cutoff = now_ms - window_ms
    return sorted((e for e in window if e.at_ms > cutoff), key=lambda e: e.at_ms)


def decide(window: Sequence[WindowEntry], request: Request, limit: RateLimit, now_ms: int,
           backoff_until_ms: int = 0) -> Decision:
    """Admit the request now, or say how long until it would be admitted.

    `backoff_until_ms`: the shared backoff after a 429 (see `after_refusal`); QUOTE and READ wait
    it out, HEDGE does not. Each wait is until enough of the oldest entries have left the window.
    """
    waits: list[tuple[int, str]] = []
    if request.priority is not Priority.HEDGE and backoff_until_ms > now_ms:
        waits.append((backoff_until_ms - now_ms, "backoff"))
    allowance = limit.allowance(request.priority)
    if allowance is not None:
        live = live_entries(window, limit.window_ms, now_ms)
        cap = endpoint_cap(request.endpoint)
        if cap is not None:
            same = [e for e in live if e.endpoint == request.endpoint]
            if len(same) >= cap:
                # The count drops below the cap when the (len - cap)-th oldest of them leaves.
                waits.append((same[len(same) - cap].at_ms + limit.window_ms - now_ms, "cap"))
        cost = limit.cost(request.endpoint)
        if cost > allowance:
            raise BudgetError(f"{request.endpoint} costs {cost} {limit.unit}, more than "
                              f"{request.priority.name}'s share of the limit ({allowance})")
        assert limit.limit is not None
        wait = _until_room(live, cost, limit.limit, limit, now_ms)
        if wait:
            waits.append((wait, "limit"))
        if request.priority is not Priority.HEDGE:
            shared = [e for e in live if e.priority is not Priority.HEDGE]
            wait = _until_room(shared, cost, allowance, limit, now_ms)
            if wait:
                waits.append((wait, "reserve"))
    if not waits:
        return Admit()
    wait_ms = max(w for w, _ in waits)
    # The reason of the first longest wait, in the order backoff, cap, limit, reserve (the script's).
    return Wait(wait_ms, next(r for w, r in waits if w == wait_ms))


def _until_room(entries: list[WindowEntry], cost: int, room: int, limit: RateLimit, now_ms: int) -> int:
    """0 if `cost` fits beside `entries` within `room`, else the ms until enough of the oldest left."""
    used = sum(_entry_cost(e, limit) for e in entries)
    need, freed = used + cost - room, 0
    if need <= 0:
        return 0
    for e in entries:
        freed += _entry_cost(e, limit)
        if freed >= need:
            return e.at_ms + limit.window_ms - now_ms
    raise BudgetError(f"a request costing {cost} cannot fit in {room}")   # excluded by the callers' checks


def _entry_cost(entry: WindowEntry, limit: RateLimit) -> int:
    return entry.weight if limit.weighted else 1


# ---- backoff after the venue refused us ----------------------------------------------------------

@dataclass(frozen=True)
class Backoff:
    """The shared backoff: QUOTE and READ wait until `until_ms`; `step_ms` is the last pause (0 = none)."""

    until_ms: int = 0
    step_ms: int = 0


def after_refusal(backoff: Backoff, now_ms: int, first_ms: int = FIRST_BACKOFF_MS,
                  max_ms: int = MAX_BACKOFF_MS) -> Backoff:
    """The backoff after a 429: 1 s, then doubling up to 30 s.

    A refusal while a backoff is still running changes nothing: the processes one burst of 429s
    hits at once count as one refusal, not as one doubling each.
    """
    if backoff.until_ms > now_ms:
        return backoff
    step = first_ms if backoff.step_ms <= 0 else min(backoff.step_ms * 2, max_ms)
    return Backoff(until_ms=now_ms + step, step_ms=step)


# ---- usage -----------------------------------------------------------------------------------------

@dataclass(frozen=True)
class ProcessUsage:
    requests: int = 0
    weight: int = 0
    http_429: int = 0


@dataclass(frozen=True)
class Usage:
    """The rolling window as an operator reads it: `used` of `limit` in `unit`, by process."""

    tier: str
    limit: int | None
    unit: str
    window_ms: int
    hedge_reserve: int
    used: int
    requests: int
    weight: int
    http_429: int
    backoff_left_ms: int = 0
    by_process: Mapping[str, ProcessUsage] = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"tier": self.tier, "used": self.used, "limit": self.limit, "unit": self.unit,
                "window_ms": self.window_ms, "hedge_reserve": self.hedge_reserve,
                "requests": self.requests, "weight": self.weight, "http_429": self.http_429,
                "backoff_left_ms": self.backoff_left_ms,
                "by_process": {p: {"requests": u.requests, "weight": u.weight, "http_429": u.http_429}
                               for p, u in sorted(self.by_process.items())}}


def summarize(window: Iterable[WindowEntry], limit: RateLimit, now_ms: int,
              http_429_by_process: Mapping[str, int] | None = None, backoff: Backoff = Backoff()) -> Usage:
    """Usage of the live window (what venue/budget.py keeps as running totals in Redis)."""
    live = live_entries(window, limit.window_ms, now_ms)
    refused = dict(http_429_by_process or {})
    by_process: dict[str, ProcessUsage] = {}
    for process in {e.process for e in live} | set(refused):
        mine = [e for e in live if e.process == process]
        by_process[process] = ProcessUsage(len(mine), sum(e.weight for e in mine), refused.get(process, 0))
    weight = sum(e.weight for e in live)
    return Usage(tier=limit.tier, limit=limit.limit, unit=limit.unit, window_ms=limit.window_ms,
                 hedge_reserve=limit.hedge_reserve, used=weight if limit.weighted else len(live),
                 requests=len(live), weight=weight, http_429=sum(refused.values()),
                 backoff_left_ms=max(0, backoff.until_ms - now_ms), by_process=by_process)
