"""`python -m bench latency|burst|cycle|requests|soak`: benchmarks on the simulator with the real Redis and real
`lighter-hedge worker` / `maker` processes. Each prints one `key=value` per line.

Each run starts its own simulator, worker and maker on loopback, in a Redis db of its own (1..15,
locked like the test suite's), and stops them and flushes that db at the end. Needs Redis on
127.0.0.1:6379 (LH_BENCH_REDIS overrides). Targets (2-core machine): p50 <= 1.5x floor, p99 <= 3x
floor; a 1,000-fill burst back to zero exposure in <= 2 s with <= 20 hedge orders; `requests` on
Lighter's Standard tier: no 429, at most 1 read per round, flat at the end (Premium: no 429 and
at most 330 weight per round).
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from decimal import Decimal

from bench.cluster import B, C, BenchCluster, percentile, wait_until
from tasks.store import Store

FILL = Decimal("0.0050")  # ETH's min_base_amount on the simulator: every fill can be hedged alone
FILL_DELAY_MS = 5
FLOOR_BLOCK = 20  # floor samples taken together, between hedges
TARGETS = {"ratio_p50": 1.5, "ratio_p99": 3.0, "burst_time_to_zero_s": 2.0, "burst_hedge_orders": 20}


def emit(key: str, value: object) -> None:
    if isinstance(value, float):
        value = f"{value:.3f}"
    print(f"{key}={value}", flush=True)


class Floor:
    """The floor probe (bench/floor.py) as a child process, asked for samples between hedges."""

    def __init__(self, c: BenchCluster, coi_base: int = 1_000_000):
        self._log = open(c.workdir / "floor.log", "ab")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.floor", "--base-url", c.sim.base_url, "--redis-url", c.redis_url,
             "--keys-file", c.keys_file, "--account", str(C), "--coi-base", str(coi_base)],
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log, text=True, env=c.env())
        self._answer()  # warmed up

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(30)
            raise RuntimeError(f"floor probe exited with {self.proc.returncode}; see {self._log.name}")
        return json.loads(line)

    def samples(self, n: int) -> list[float]:
        """n samples now, in milliseconds."""
        self.proc.stdin.write(f"{n}\n")
        self.proc.stdin.flush()
        return [us / 1000 for us in self._answer()["samples_us"]]

    def close(self) -> None:
        self.proc.stdin.close()
        try:
            self.proc.wait(30)
        finally:
            self._log.close()


def _final(raw: str | None) -> dict | None:
    meta = json.loads(raw) if raw else None
    return meta if meta and meta.get("status") in ("SUCCESS", "FAILURE") else None


def _next_result(results, timeout_s: float = 30) -> dict:
    """Block on the result backend's pub/sub (no polling: it would steal CPU from the processes
    measured) until a hedge task's final result arrives."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        msg = results.get_message(timeout=max(0.0, deadline - time.monotonic()))
        meta = _final(msg["data"]) if msg and msg.get("type") == "pmessage" else None
        if meta is not None:
            return meta
    raise TimeoutError(f"no hedge result within {timeout_s}s")


# ---- latency ------------------------------------------------------------------------------------

def latency(n_fills: int, per_order: int, floor_n: int, gap_s: float, keep: bool) -> int:
    with BenchCluster(quantity=str(FILL * per_order), keep_dir=keep) as c:
        c.start_worker()
        probe = Floor(c)
        c.start_maker()
        # Celery's Redis backend publishes each result on a channel named like its key (in our
        # own db's prefix, so no other run's results arrive here).
        results = c.r.pubsub(ignore_subscribe_messages=True)
        result_key = Store(c.r).result_key
        results.psubscribe(result_key("hedge-ETH-*"))
        # Floor samples in blocks spread over the run, between hedges, so that the floor and the
        # hedges see the same machine (its speed drifts by tens of percent over minutes here).
        blocks = max(1, floor_n // FLOOR_BLOCK)
        fills_per_block = max(1, n_fills // blocks)
        floor: list[float] = []
        done = 0
        t_start = time.monotonic()
        while done < n_fills:
            order = wait_until(lambda: c.active_orders(), 120, "A's resting order", 0.005)[0]
            remaining = Decimal(order["remaining_base_amount"])
            while remaining >= FILL and done < n_fills:
                if done % fills_per_block == 0 and len(floor) < floor_n:
                    floor += probe.samples(min(FLOOR_BLOCK, floor_n - len(floor)))
                # Filled by the simulator a moment after it answers: this driver is idle, waiting on
                # the result, while the fill is hedged; its own HTTP round trip would compete for the
                # two cores with the maker and the worker.
                c.fill(order, [str(FILL)], delay_ms=FILL_DELAY_MS)
                meta = _next_result(results)
                if meta.get("status") != "SUCCESS":
                    raise RuntimeError(f"hedge {meta.get('task_id')} failed: {meta}\n{c.log('worker')[-3000:]}")
                remaining -= FILL
                done += 1
                time.sleep(gap_s)
        if len(floor) < floor_n:
            floor += probe.samples(floor_n - len(floor))
        probe.close()
        run_s = time.monotonic() - t_start

        lat = fill_to_sendtx_ms(c)
        try:
            worker = c.metrics("worker")
        except OSError:
            worker = {}
        confirmed_sum = sum(v for k, v in worker.items() if k.startswith("lh_fill_to_hedge_confirmed_seconds_sum"))
        confirmed_n = sum(v for k, v in worker.items() if k.startswith("lh_fill_to_hedge_confirmed_seconds_count"))

    p50, p99, f50, f99 = percentile(lat, 50), percentile(lat, 99), percentile(floor, 50), percentile(floor, 99)
    emit("fills", len(lat))
    emit("p50_ms", p50)
    emit("p90_ms", percentile(lat, 90))
    emit("p99_ms", p99)
    emit("max_ms", max(lat))
    emit("floor_samples", len(floor))
    emit("floor_p50_ms", f50)
    emit("floor_p90_ms", percentile(floor, 90))
    emit("floor_p99_ms", f99)
    emit("ratio_p50", p50 / f50)
    emit("ratio_p99", p99 / f99)
    if confirmed_n:
        emit("fill_to_confirmed_mean_ms", confirmed_sum / confirmed_n * 1000)
    emit("run_s", run_s)
    ok = p50 / f50 <= TARGETS["ratio_p50"] and p99 / f99 <= TARGETS["ratio_p99"]
    emit("target_met", str(ok).lower())
    return 0


def fill_to_sendtx_ms(c: BenchCluster) -> list[float]:
    """Per hedged fill: its frame seen at the maker -> its first hedge leg's sendTx at the venue."""
    fills = {k: json.loads(v) for k, v in c.r.hgetall("lh:fills:ETH").items()}
    legs = [json.loads(v) for v in c.r.hvals("lh:legs:ETH")]
    arrived = {e["client_order_index"]: e["ts_us"] for e in c.orders_log(B) if e["tx_type"] == 14}
    first_leg: dict[str, dict] = {}
    for leg in sorted(legs, key=lambda lg: lg["leg"]):
        first_leg.setdefault(str(leg["fill_id"]), leg)
    lat = []
    for fill_id, leg in first_leg.items():
        seen_us = fills.get(fill_id, {}).get("ts_seen_us")
        if seen_us and leg["client_order_index"] in arrived:
            lat.append((arrived[leg["client_order_index"]] - seen_us) / 1000)
    return lat


# ---- burst --------------------------------------------------------------------------------------

def burst(sizes: list[int], keep: bool) -> int:
    all_ok = True
    for n in sizes:
        with BenchCluster(quantity=str(FILL * n), keep_dir=keep) as c:
            c.start_worker()
            c.start_maker()
            order = wait_until(lambda: c.active_orders(), 120, "A's resting order", 0.01)[0]
            wait_until(lambda: (c.r.hget("lh:state", "ETH") or "").find("QUOTING_OPEN") >= 0, 30,
                       "the maker resting", 0.01)
            time.sleep(0.5)
            a0, _ = c.positions()
            before = len(c.orders_log(B))
            t0 = time.perf_counter()
            c.fill(order, [str(FILL)] * n, one_frame=True)
            target = a0 + FILL * n

            def flat() -> bool:
                a, b = c.positions()
                return a == target and a + b == 0
            wait_until(flat, 60, f"B's position at -A after a {n}-fill burst", 0.002)
            t_zero = time.perf_counter() - t0
            wait_until(lambda: not c.r.smembers("lh:inflight:ETH"), 120, "every hedge task done", 0.01)
            t_tasks = time.perf_counter() - t0
            creates = [e for e in c.orders_log(B)[before:] if e["tx_type"] == 14 and e["result"] == "accepted"]
        emit("burst_n", n)
        emit("time_to_zero_s", t_zero)
        emit("hedge_orders", len(creates))
        emit("fills_per_hedge_order", n / max(1, len(creates)))
        emit("all_tasks_done_s", t_tasks)
        if n == 1000:
            all_ok &= t_zero <= TARGETS["burst_time_to_zero_s"] and len(creates) <= TARGETS["burst_hedge_orders"]
    emit("target_met", str(all_ok).lower())
    return 0


# ---- cycle --------------------------------------------------------------------------------------

def cycle(seconds: float, keep: bool) -> int:
    with BenchCluster(quantity="0.0500", keep_dir=keep) as c:
        c.start_worker()
        c.start_maker()
        wait_until(lambda: c.active_orders(), 120, "A's first resting order", 0.01)
        try:
            m0 = c.metrics("maker")
        except OSError:
            m0 = {}
        rounds0 = int(c.r.hget("lh:stats:ETH", "rounds") or 0)
        t0 = time.monotonic()
        filled: set[int] = set()
        while time.monotonic() - t0 < seconds:
            c.fill_new_orders(filled)
            time.sleep(0.002)
        elapsed = time.monotonic() - t0
        rounds = int(c.r.hget("lh:stats:ETH", "rounds") or 0) - rounds0
        try:
            m1 = c.metrics("maker")
        except OSError:
            m1 = {}

    def delta(name: str) -> float:
        return sum(v - m0.get(k, 0.0) for k, v in m1.items() if k.startswith(name))
    phases = {p: delta(f'lh_maker_round_phase_seconds_total{{market="ETH",phase="{p}"}}')
              for p in ("own", "venue", "resting", "hedge_wait")}
    total = sum(phases.values()) or 1.0
    orders = delta("lh_maker_round_seconds_count")
    emit("seconds", elapsed)
    emit("rounds", rounds)  # a round = open + close (two orders, two hedges)
    emit("rounds_per_minute", rounds / elapsed * 60)
    emit("orders_per_minute", orders / elapsed * 60)
    emit("order_cycle_mean_ms", (delta("lh_maker_round_seconds_sum") / orders * 1000) if orders else float("nan"))
    for p, v in phases.items():
        emit(f"share_{p}", v / total)
    return 0


# ---- requests -----------------------------------------------------------------------------------

def _counted(stats: dict) -> dict[str, dict[str, int]]:
    """The venue's counts summed over accounts and IPs: endpoint -> requests / weight / http_429."""
    out: dict[str, dict[str, int]] = {}
    for per_endpoint in stats["requests"].values():
        for endpoint, counts in per_endpoint.items():
            row = out.setdefault(endpoint, {"requests": 0, "weight": 0, "http_429": 0})
            for key in row:
                row[key] += counts.get(key, 0)
    return out


def requests_per_round(tier: str, n_rounds: int, max_seconds: float, keep: bool) -> int:
    """Open/close rounds on a Lighter tier; what the venue counted per round."""
    with BenchCluster(quantity="0.0500", keep_dir=keep, profile=tier, lighter={"tier": tier},
                      strategy={"reconcile_interval_s": 30}) as c:
        c.start_worker()
        c.start_maker()
        wait_until(lambda: c.active_orders(), 120, "A's first resting order", 0.05)
        # Counted from here: start-up reads (market details, positions, open orders) are not per round.
        before = _counted(c.sim.admin("/admin/stats"))
        store = Store(c.r)
        rounds0 = int(store.stats("ETH").get("rounds", 0))
        t0 = time.monotonic()
        filled: set[int] = set()
        done = 0
        while done < n_rounds and time.monotonic() - t0 < max_seconds:
            c.fill_new_orders(filled)
            done = int(store.stats("ETH").get("rounds", 0)) - rounds0
            time.sleep(0.05)
        elapsed = time.monotonic() - t0
        after = _counted(c.sim.admin("/admin/stats"))
        wait_until(lambda: not Store(c.r).inflight("ETH"), 60, "hedges finished", 0.05)
        a, b = c.positions()
        lat = fill_to_sendtx_ms(c)

    def delta(endpoints, key: str) -> int:
        return sum(after.get(e, {}).get(key, 0) - before.get(e, {}).get(key, 0) for e in endpoints)
    every = set(before) | set(after)
    sends = {"sendTx", "sendTxBatch"}
    per = max(done, 1)
    emit("tier", tier)
    emit("rounds", done)
    emit("seconds", elapsed)
    emit("rounds_per_min", done / elapsed * 60)
    emit("sendtx_per_round", delta(sends, "requests") / per)
    emit("reads_per_round", delta(every - sends, "requests") / per)
    emit("requests_per_round", delta(every, "requests") / per)
    emit("weight_per_round", delta(every, "weight") / per)
    emit("http_429", delta(every, "http_429"))
    emit("hedge_p50_ms", percentile(lat, 50))
    emit("net_exposure_end", a + b)
    for endpoint in sorted(every):
        if delta([endpoint], "requests") or delta([endpoint], "http_429"):
            emit(f"requests_{endpoint}", delta([endpoint], "requests"))
    if tier == "premium":
        ok = delta(every, "http_429") == 0 and delta(every, "weight") / per <= 330
    else:
        ok = delta(every, "http_429") == 0 and delta(every - sends, "requests") / per <= 1
    ok = ok and a + b == 0 and done >= n_rounds
    emit("target_met", str(ok).lower())
    return 0


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--keep", action="store_true", help="keep the run's directory (logs) in /tmp")
    sub = p.add_subparsers(dest="cmd", required=True)
    lat = sub.add_parser("latency", help="fill frame at the maker -> hedge sendTx at the venue, vs the floor")
    lat.add_argument("--fills", type=int, default=1000)
    lat.add_argument("--per-order", type=int, default=250, help="fills per resting order of A")
    lat.add_argument("--floor-samples", type=int, default=400)
    lat.add_argument("--gap-ms", type=float, default=3.0, help="pause after each hedge before the next fill")
    bur = sub.add_parser("burst", help="one order of A filled by N trades in one frame")
    bur.add_argument("--n", type=int, action="append", help="default: 100 and 1000")
    cyc = sub.add_parser("cycle", help="maker rounds per minute and where a round's time goes")
    cyc.add_argument("--seconds", type=float, default=30.0)
    req = sub.add_parser("requests", help="requests per open/close round on a Lighter tier (the venue's count)")
    req.add_argument("--tier", choices=("standard", "premium"), default="standard")
    req.add_argument("--rounds", type=int, default=10)
    req.add_argument("--max-seconds", type=float, default=300.0)
    soak = sub.add_parser("soak", help="memory growth per 1,000 fills through the real stack (bench/soak.py)")
    soak.add_argument("--fills", type=int, default=20_000)
    soak.add_argument("--per-order", type=int, default=20, help="fills (trades) per order of A")
    soak.add_argument("--retention-s", type=float, default=60.0,
                      help="ledger.retention_s of the run (0: the config's default)")
    soak.add_argument("--prune-interval-s", type=float, default=5.0)
    soak.add_argument("--warm-share", type=float, default=0.5,
                      help="share of the fills before the warm point (the maker's bounded maps fill in the first half)")
    soak.add_argument("--flower", action="store_true", help="also run Flower (--max_tasks as supervisord.conf)")
    soak.add_argument("--memtrace", action="store_true",
                      help="tracemalloc in the maker: its log compares the end with the warm point")
    a = p.parse_args(argv)
    if a.cmd == "soak":
        from bench.soak import soak as run_soak
        return run_soak(a.fills, a.per_order, a.retention_s, a.prune_interval_s, a.warm_share, a.flower,
                        a.memtrace, a.keep)
    if a.cmd == "latency":
        return latency(a.fills, a.per_order, a.floor_samples, a.gap_ms / 1000, a.keep)
    if a.cmd == "burst":
        return burst(a.n or [100, 1000], a.keep)
    if a.cmd == "requests":
        return requests_per_round(a.tier, a.rounds, a.max_seconds, a.keep)
    return cycle(a.seconds, a.keep)


if __name__ == "__main__":
    sys.exit(main())
