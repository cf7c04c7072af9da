"""The floor: what any hedger on this machine pays at least, from a plain script.

One sample = a bare Redis publish -> subscribe hop, then one signed sendTx (the SDK's
create_market_order: sign + POST, its own kept-alive session and nonce manager) of account C;
measured from just before the publish to the sendTx's arrival at the venue (the simulator's
order-log ts_us), on the same clock.

Runs as its own process (`python -m bench.floor ...`: the Go signer is loaded here and nowhere in
the benchmark driver) and serves samples on request, so the benchmark can interleave floor
samples with the hedges it times: both then see the same machine, minute by minute. Each line
"N" on stdin takes N samples and answers one JSON line {"samples_us": [...]}; EOF ends it.
"""
from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
import urllib.request

import lighter
import redis

from venue.keys import read_key_file


def _get(url: str) -> dict:
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    return json.loads(opener.open(url, timeout=30).read().decode())


class FloorProbe:
    def __init__(self, base_url: str, redis_url: str, keys_file: str, account: int, coi_base: int):
        entry = read_key_file(keys_file)[str(account)]
        self.base_url, self.account = base_url, account
        self.signer = lighter.SignerClient(url=base_url, account_index=account,
                                           api_private_keys={int(entry["api_key_index"]): entry["private_key"]})
        self.pub = redis.Redis.from_url(redis_url)
        self.sub = redis.Redis.from_url(redis_url).pubsub(ignore_subscribe_messages=True)
        self.channel = f"lh:bench:floor:{account}"
        self.next_coi = coi_base
        self.n = 0

    def _coi(self) -> int:
        self.next_coi += 1
        return self.next_coi

    async def warm_up(self) -> None:
        """Nonce fetched, HTTP session open, signer loaded, subscribed."""
        self.sub.subscribe(self.channel)
        while self.sub.get_message(timeout=0.1) is not None:
            pass
        book = _get(f"{self.base_url}/api/v1/orderBookOrders?market_id=0&limit=1")
        bid = int(book["bids"][0]["price"].replace(".", ""))
        ask = int(book["asks"][0]["price"].replace(".", ""))
        self.worst = {True: bid - bid // 100, False: ask + ask // 100}  # is_ask -> worst price
        await self.signer.create_market_order(0, self._coi(), 50, self.worst[True], True)
        await self.signer.create_market_order(0, self._coi(), 50, self.worst[False], False)

    async def samples(self, n: int) -> list[int]:
        starts: dict[int, int] = {}
        for _ in range(n):
            coi = self._coi()
            is_ask = self.n % 2 == 0  # alternate so C stays flat
            self.n += 1
            t0 = time.time_ns() // 1000
            self.pub.publish(self.channel, str(t0))
            msg = None
            while msg is None:
                msg = self.sub.get_message(timeout=1.0)
            _tx, resp, err = await self.signer.create_market_order(0, coi, 50, self.worst[is_ask], is_ask)
            if err is not None or resp.code != 200:
                raise RuntimeError(f"floor order refused: {err or resp}")
            starts[coi] = t0
            time.sleep(0.003)
        log = _get(f"{self.base_url}/admin/orders_log?account_index={self.account}")["orders_log"]
        arrived = {e["client_order_index"]: e["ts_us"] for e in log if e["tx_type"] == 14}
        return [arrived[c] - t0 for c, t0 in starts.items() if c in arrived]

    async def close(self) -> None:
        await self.signer.close()
        self.sub.close()


async def serve(a: argparse.Namespace) -> None:
    probe = FloorProbe(a.base_url, a.redis_url, a.keys_file, a.account, a.coi_base)  # in the loop: aiohttp
    await probe.warm_up()
    try:
        print(json.dumps({"ready": True}), flush=True)
        for line in sys.stdin:
            if line.strip():
                print(json.dumps({"samples_us": await probe.samples(int(line))}), flush=True)
    finally:
        await probe.close()


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--base-url", required=True)
    p.add_argument("--redis-url", required=True)
    p.add_argument("--keys-file", required=True)
    p.add_argument("--account", type=int, required=True)
    p.add_argument("--coi-base", type=int, default=1_000_000)
    a = p.parse_args()
    asyncio.run(serve(a))


if __name__ == "__main__":
    main()
