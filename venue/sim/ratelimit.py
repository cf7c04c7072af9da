"""Rolling-minute request budgets, one per bucket (an L1 address or a client IP). Pure: every
call takes `now_ms`.

A request is admitted when its bucket's tier allows it: Standard counts requests (60), Premium
sums weights (24,000), and on both an endpoint whose weight makes 24,000 / weight < 60 is capped
at that count. Refused requests (429) use no budget; they are counted apart.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field
from typing import Any

from .tiers import WINDOW_MS, Tier, endpoint_cap, endpoint_weight


@dataclass
class Bucket:
    tier: Tier
    window: deque = field(default_factory=deque)   # (t_ms, endpoint, weight), oldest first
    refused: int = 0

    def expire(self, now_ms: int) -> None:
        while self.window and self.window[0][0] <= now_ms - WINDOW_MS:
            self.window.popleft()

    def used(self) -> int:
        """What the tier counts: weight on a weighted tier, requests otherwise."""
        return sum(w for _, _, w in self.window) if self.tier.weighted else len(self.window)

    def endpoint_count(self, endpoint: str) -> int:
        return sum(1 for _, e, _ in self.window if e == endpoint)


@dataclass(frozen=True)
class Admission:
    admitted: bool
    reason: str = ""


class RateLimiter:
    def __init__(self) -> None:
        self.buckets: dict[str, Bucket] = {}

    def admit(self, bucket_key: str, tier: Tier, endpoint: str, now_ms: int) -> Admission:
        bucket = self.buckets.get(bucket_key)
        if bucket is None:
            bucket = self.buckets[bucket_key] = Bucket(tier)
        bucket.tier = tier                                  # a tier change applies at once
        if tier.limit is None:
            return Admission(True)
        bucket.expire(now_ms)
        weight = endpoint_weight(endpoint)
        cap = endpoint_cap(endpoint)
        if cap is not None and bucket.endpoint_count(endpoint) >= cap:
            bucket.refused += 1
            return Admission(False, f"{endpoint} is limited to {cap} requests per rolling minute "
                                    f"(weight {weight}) for {bucket_key}")
        cost = weight if tier.weighted else 1
        if bucket.used() + cost > tier.limit:
            bucket.refused += 1
            unit = "weighted requests" if tier.weighted else "requests"
            return Admission(False, f"{tier.name} limit of {tier.limit} {unit} per rolling minute "
                                    f"reached for {bucket_key}")
        bucket.window.append((now_ms, endpoint, weight))
        return Admission(True)

    def usage(self, now_ms: int) -> dict[str, dict[str, Any]]:
        out = {}
        for key, bucket in sorted(self.buckets.items()):
            bucket.expire(now_ms)
            out[key] = {"tier": bucket.tier.name, "used": bucket.used(), "limit": bucket.tier.limit,
                        "unit": "weight" if bucket.tier.weighted else "requests",
                        "requests": len(bucket.window), "http_429": bucket.refused}
        return out
