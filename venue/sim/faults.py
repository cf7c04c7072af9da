"""A seeded fault plan for sendTx / sendTxBatch, plus the stream fault switches.

Settings (all optional; a plan replaces the previous one as a whole):

latency_ms           int >= 0. Added to every eligible sendTx before anything else.
http_5xx_rate        0..1. HTTP 502, tx NOT applied.
http_5xx_after_rate  0..1. Tx applied, then HTTP 502 (the "in doubt" case).
timeout_rate         0..1. The request hangs `timeout_s`, then the connection is closed
                     without a response.
timeout_s            decimal > 0, default 10.
timeout_mode         "before" (tx applied before the hang), "after" (applied at the end of
                     the hang, just before the close), "never" (not applied; simulator
                     extension), "random" (seeded choice of before/after/never).
rate_limit_rate      0..1. HTTP 429 {"code":23000,"message":"too many requests"}, not applied.
invalid_nonce_rate   0..1. HTTP 400 {"code":21104,"message":"invalid nonce"}, not applied,
                     nonce not consumed.
slippage_rate        0..1. A market order is accepted (200) but ends
                     canceled-too-much-slippage with zero fill (other txs: no effect).
reject_rate          0..1. HTTP 400 with `reject_code` and Lighter's message for it, not applied,
                     nonce not consumed (a definite reject the engine must tell from "in doubt").
reject_code          one of DEFINITE_REJECTS below, default 21739.
late_rate            0..1. Share of taken txs (answered 200, timed out or 5xx'd after being taken)
                     that execute late: `late_min_ms`..`late_max_ms` after being taken instead of
                     after their tier's delay. A tx that would execute after its ExpiredAt fails
                     then instead (21711). Drawn from its own RNG (seed + 1), so turning it on does
                     not change the sequence of the other outcomes.
late_min_ms          int >= 0, default 5000.
late_max_ms          int >= late_min_ms, default 120000 (2 minutes; the SDK's ExpiredAt is ~10 min).
accounts             list of account indexes; when set, only their txs get faults/latency.
seed                 int; default the simulator's seed. The plan owns random.Random(seed).

Reproducibility: every eligible sendTx draws exactly one number from the plan's RNG (and
one more for timeout_mode "random"), and the outcome is the band it falls in, in the fixed
order rate_limit, invalid_nonce, http_5xx, http_5xx_after, timeout, slippage, reject. The same
seed and the same sequence of eligible txs give the same sequence of outcomes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

RATE_KEYS = ("rate_limit_rate", "invalid_nonce_rate", "http_5xx_rate", "http_5xx_after_rate",
             "timeout_rate", "slippage_rate", "reject_rate")
OUTCOME_BY_KEY = {"rate_limit_rate": "rate_limit", "invalid_nonce_rate": "invalid_nonce",
                  "http_5xx_rate": "http_5xx", "http_5xx_after_rate": "http_5xx_after",
                  "timeout_rate": "timeout", "slippage_rate": "slippage", "reject_rate": "reject"}
# Lighter's documented definite rejects (apidocs errors page; lighter-api-notes.md section 8).
DEFINITE_REJECTS = {
    21111: "account is in pre-liquidation", 21112: "account is in liquidation",
    21507: "account is below maintenance margin", 21508: "account is below initial margin",
    21601: "order book is full", 21605: "market is not active",
    21717: "too many active orders in this market", 21718: "too many active orders",
    21719: "too many pending orders in this market", 21720: "too many pending orders",
    21732: "reduce only order increases position", 21738: "reduce only order has no position",
    21739: "not enough margin to create the order",
}
TIMEOUT_MODES = ("before", "after", "never", "random")


class FaultConfigError(ValueError):
    """A fault setting is wrong; the message names the field and the expected form."""


@dataclass(frozen=True)
class FaultDecision:
    outcome: str = "none"            # none|rate_limit|invalid_nonce|http_5xx|http_5xx_after|timeout|slippage|reject
    latency_ms: int = 0
    timeout_s: Decimal = Decimal(0)
    timeout_applies: str = "never"   # before|after|never (for outcome "timeout")


@dataclass
class FaultPlan:
    seed: int = 1
    latency_ms: int = 0
    rates: dict[str, Decimal] = field(default_factory=lambda: {k: Decimal(0) for k in RATE_KEYS})
    timeout_s: Decimal = Decimal(10)
    timeout_mode: str = "before"
    accounts: frozenset[int] | None = None
    reject_code: int = 21739
    late_rate: Decimal = Decimal(0)
    late_min_ms: int = 5_000
    late_max_ms: int = 120_000
    rng: random.Random = field(default_factory=random.Random, repr=False)
    late_rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(cls, raw: Any, default_seed: int) -> "FaultPlan":
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise FaultConfigError(f"faults: expected a JSON object of settings, got {raw!r:.80}")
        known = {"seed", "latency_ms", "timeout_s", "timeout_mode", "accounts", "reject_code",
                 "late_rate", "late_min_ms", "late_max_ms", *RATE_KEYS}
        unknown = set(raw) - known
        if unknown:
            raise FaultConfigError(f"faults: unknown keys {sorted(unknown)}; known: {sorted(known)}")
        seed = raw.get("seed", default_seed)
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise FaultConfigError(f"faults.seed: expected an integer, got {seed!r}")
        latency = raw.get("latency_ms", 0)
        if isinstance(latency, bool) or not isinstance(latency, int) or not 0 <= latency <= 600_000:
            raise FaultConfigError(f"faults.latency_ms: expected an integer 0..600000, got {latency!r}")
        rates = {k: _rate(raw.get(k, 0), f"faults.{k}") for k in RATE_KEYS}
        if sum(rates.values()) > 1:
            raise FaultConfigError(f"faults: the rates add up to {sum(rates.values())}, expected <= 1")
        timeout_s = _decimal(raw.get("timeout_s", 10), "faults.timeout_s")
        if timeout_s <= 0 or timeout_s > 600:
            raise FaultConfigError(f"faults.timeout_s: expected a number 0 < x <= 600, got {timeout_s}")
        mode = raw.get("timeout_mode", "before")
        if mode not in TIMEOUT_MODES:
            raise FaultConfigError(f"faults.timeout_mode: expected one of {list(TIMEOUT_MODES)}, "
                                   f"got {mode!r}")
        accounts = raw.get("accounts")
        if accounts is not None:
            if not isinstance(accounts, list) or any(
                    isinstance(a, bool) or not isinstance(a, int) for a in accounts):
                raise FaultConfigError(f"faults.accounts: expected a list of account indexes, "
                                       f"got {accounts!r}")
            accounts = frozenset(accounts)
        reject_code = raw.get("reject_code", 21739)
        if reject_code not in DEFINITE_REJECTS:
            raise FaultConfigError(f"faults.reject_code: expected one of {sorted(DEFINITE_REJECTS)}, "
                                   f"got {reject_code!r}")
        late_min = _ms(raw.get("late_min_ms", 5_000), "faults.late_min_ms")
        late_max = _ms(raw.get("late_max_ms", 120_000), "faults.late_max_ms")
        if late_max < late_min:
            raise FaultConfigError(f"faults.late_max_ms: expected >= late_min_ms ({late_min}), "
                                   f"got {late_max}")
        return cls(seed=seed, latency_ms=latency, rates=rates, timeout_s=timeout_s,
                   timeout_mode=mode, accounts=accounts, reject_code=reject_code,
                   late_rate=_rate(raw.get("late_rate", 0), "faults.late_rate"),
                   late_min_ms=late_min, late_max_ms=late_max, rng=random.Random(seed),
                   late_rng=random.Random(seed + 1))

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "latency_ms": self.latency_ms,
                               "timeout_s": str(self.timeout_s), "timeout_mode": self.timeout_mode,
                               "accounts": sorted(self.accounts) if self.accounts is not None else None}
        out.update({k: str(v) for k, v in self.rates.items()})
        out.update(reject_code=self.reject_code, late_rate=str(self.late_rate),
                   late_min_ms=self.late_min_ms, late_max_ms=self.late_max_ms)
        return out

    def reject_message(self) -> str:
        return DEFINITE_REJECTS[self.reject_code]

    def late_delay_ms(self, account_index: int | None) -> int | None:
        """For one taken tx: how late it executes, or None for on time (its tier's delay)."""
        if not self.late_rate or not self.applies_to(account_index):
            return None
        if Decimal(self.late_rng.random()) >= self.late_rate:
            return None
        return self.late_rng.randint(self.late_min_ms, self.late_max_ms)

    def applies_to(self, account_index: int | None) -> bool:
        return self.accounts is None or account_index in self.accounts

    def decide(self, account_index: int | None) -> FaultDecision:
        """The fault for one sendTx (draws from the plan's RNG only for eligible txs)."""
        if not self.applies_to(account_index):
            return FaultDecision()
        if not any(self.rates.values()):
            return FaultDecision(latency_ms=self.latency_ms)
        draw = Decimal(self.rng.random())
        edge = Decimal(0)
        outcome = "none"
        for key in RATE_KEYS:
            edge += self.rates[key]
            if self.rates[key] and draw < edge:
                outcome = OUTCOME_BY_KEY[key]
                break
        applies = "never"
        if outcome == "timeout":
            applies = self.timeout_mode
            if applies == "random":
                applies = self.rng.choice(("before", "after", "never"))
        return FaultDecision(outcome, self.latency_ms, self.timeout_s, applies)


def _decimal(value: Any, name: str) -> Decimal:
    if isinstance(value, bool):
        raise FaultConfigError(f"{name}: expected a number, got {value!r}")
    try:
        dec = Decimal(str(value))
    except (InvalidOperation, ValueError):
        raise FaultConfigError(f"{name}: expected a number, got {value!r}") from None
    if not dec.is_finite():
        raise FaultConfigError(f"{name}: expected a finite number, got {value!r}")
    return dec


def _ms(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 3_600_000:
        raise FaultConfigError(f"{name}: expected an integer 0..3600000 (ms), got {value!r}")
    return value


def _rate(value: Any, name: str) -> Decimal:
    dec = _decimal(value, name)
    if not 0 <= dec <= 1:
        raise FaultConfigError(f"{name}: expected a rate 0..1, got {value!r}")
    return dec
