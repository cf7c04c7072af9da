"""The floor: what any hedger on this machine pays at least, from a plain script.

One sample = a bare Redis publish -> subscribe hop, then one signed sendTx (the SDK's
create_market_order: sign + POST, its own kept-alive session and nonce manager) of account C;
measured from just before the publish to the sendTx's arrival at the venue (the simulator's
order-log ts_us), on the same clock. Run as `python -m bench.floor ...` (its own process: the
Go signer is loaded here and nowhere in the benchmark driver). Prints one JSON object.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import time
import urllib.request

import lighter
import redis

from venue.keys import read_key_file


def _get(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=30).read().decode())


async def run(base_url: str, redis_url: str, keys_file: str, account: int, n: int, coi_base: int) -> dict:
    entry = read_key_file(keys_file)[str(account)]
    signer = lighter.SignerClient(url=base_url, account_index=account,
                                  api_private_keys={int(entry["api_key_index"]): entry["private_key"]})
    pub = redis.Redis.from_url(redis_url)
    sub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
    channel = f"lh:bench:floor:{account}"
    sub.subscribe(channel)
    while sub.get_message(timeout=0.1) is not None:
        pass
    book = _get(f"{base_url}/api/v1/orderBookOrders?market_id=0&limit=1")
    bid = int(book["bids"][0]["price"].replace(".", ""))
    ask = int(book["asks"][0]["price"].replace(".", ""))
    starts: dict[int, int] = {}
    try:
        # warm up: nonce fetched, HTTP session open, signer loaded
        await signer.create_market_order(0, coi_base, 50, bid - bid // 100, True)
        await signer.create_market_order(0, coi_base + 1, 50, ask + ask // 100, False)
        for i in range(n):
            coi = coi_base + 2 + i
            is_ask = i % 2 == 0  # alternate so C stays flat
            worst = bid - bid // 100 if is_ask else ask + ask // 100
            t0 = time.time_ns() // 1000
            pub.publish(channel, str(t0))
            msg = None
            while msg is None:
                msg = sub.get_message(timeout=1.0)
            _tx, resp, err = await signer.create_market_order(0, coi, 50, worst, is_ask)
            if err is not None or resp.code != 200:
                raise RuntimeError(f"floor order refused: {err or resp}")
            starts[coi] = t0
            time.sleep(0.003)
    finally:
        await signer.close()
        sub.close()
    log = _get(f"{base_url}/admin/orders_log?account_index={account}")["orders_log"]
    arrived = {e["client_order_index"]: e["ts_us"] for e in log if e["tx_type"] == 14}
    return {"samples_us": [arrived[c] - t0 for c, t0 in starts.items() if c in arrived]}


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--keys-file", required=True)
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--n", type=int, default=300)
    p.add_argument("--coi-base", type=int, default=1_000_000)
    a = p.parse_args()
    print(json.dumps(asyncio.run(run(a.base_url, a.redis_url, a.keys_file, a.account, a.n, a.coi_base))))


if __name__ == "__main__":
    main()
