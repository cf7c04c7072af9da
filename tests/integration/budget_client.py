"""A process that draws on the request budget, for tests/integration/test_budget.py.

    python -m tests.integration.budget_client REDIS_URL NAME LIMIT_JSON PROCESS PLAN

PLAN: comma-separated `priority:endpoint`, acquired in order (e.g. `quote:sendTx,read:account`).
Prints `ready`, waits for a token on the list `<NAME>:go` (so several processes start together),
then one JSON line per admission: {"at_ms": Redis time of the decision, "priority", "endpoint",
"waited_ms", "paced"}, and a last line {"done": true, "paced": {...}, "waited_ms": {...}}.
"""
from __future__ import annotations

import asyncio
import json
import sys

import redis

from hedge.budget import Priority, RateLimit
from venue.budget import RequestBudget


async def main(url: str, name: str, limit_json: str, process: str, plan: str) -> None:
    client = redis.Redis.from_url(url, decode_responses=True)
    budget = RequestBudget(client, name, RateLimit(**json.loads(limit_json)))
    print("ready", flush=True)
    client.blpop([f"{name}:go"], timeout=30)
    for step in plan.split(","):
        priority, endpoint = step.split(":")
        paced_before = budget.local.paced[Priority[priority.upper()]]
        waited = await budget.acquire(endpoint, Priority[priority.upper()], process)
        assert budget.last_grant is not None
        print(json.dumps({"at_ms": budget.last_grant.now_ms, "priority": priority, "endpoint": endpoint,
                          "waited_ms": waited,
                          "paced": budget.local.paced[Priority[priority.upper()]] > paced_before}), flush=True)
    print(json.dumps({"done": True, "paced": {p.name.lower(): n for p, n in budget.local.paced.items()},
                      "waited_ms": {p.name.lower(): n for p, n in budget.local.waited_ms.items()}}), flush=True)


if __name__ == "__main__":
    asyncio.run(main(*sys.argv[1:6]))
