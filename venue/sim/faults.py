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
accounts             list of account indexes; when set, only their txs get faults/latency.
seed                 int; default the simulator's seed. The plan owns random.Random(seed).

Reproducibility: every eligible sendTx draws exactly one number from the plan's RNG (and
one more for timeout_mode "random"), and the outcome is the band it falls in, in the fixed
order rate_limit, invalid_nonce, http_5xx, http_5xx_after, timeout, slippage. The same
seed and the same sequence of eligible txs give the same sequence of outcomes.
"""
from __future__ import annotations

import random
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

RATE_KEYS = ("rate_limit_rate", "invalid_nonce_rate", "http_5xx_rate", "http_5xx_after_rate",
             "timeout_rate", "slippage_rate")
OUTCOME_BY_KEY = {"rate_limit_rate": "rate_limit", "invalid_nonce_rate": "invalid_nonce",
                  "http_5xx_rate": "http_5xx", "http_5xx_after_rate": "http_5xx_after",
                  "timeout_rate": "timeout", "slippage_rate": "slippage"}
TIMEOUT_MODES = ("before", "after", "never", "random")


class FaultConfigError(ValueError):
    """A fault setting is wrong; the message names the field and the expected form."""


@dataclass(frozen=True)
class FaultDecision:
    outcome: str = "none"            # none|rate_limit|invalid_nonce|http_5xx|http_5xx_after|timeout|slippage
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
    rng: random.Random = field(default_factory=random.Random, repr=False)

    @classmethod
    def from_settings(cls, raw: Any, default_seed: int) -> "FaultPlan":
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise FaultConfigError(f"faults: expected a JSON object of settings, got {raw!r:.80}")
        known = {"seed", "latency_ms", "timeout_s", "timeout_mode", "accounts", *RATE_KEYS}
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
        return cls(seed=seed, latency_ms=latency, rates=rates, timeout_s=timeout_s,
                   timeout_mode=mode, accounts=accounts, rng=random.Random(seed))

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"seed": self.seed, "latency_ms": self.latency_ms,
                               "timeout_s": str(self.timeout_s), "timeout_mode": self.timeout_mode,
                               "accounts": sorted(self.accounts) if self.accounts is not None else None}
        out.update({k: str(v) for k, v in self.rates.items()})
        return out

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


def _rate(value: Any, name: str) -> Decimal:
    dec = _decimal(value, name)
    if not 0 <= dec <= 1:
        raise FaultConfigError(f"{name}: expected a rate 0..1, got {value!r}")
    return dec
