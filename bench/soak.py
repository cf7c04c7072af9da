"""`python -m bench soak --fills 20000`: memory under a long run, through the real stack.

The simulator (instant profile), `lighter-hedge worker` and `maker` as in the other benchmarks, on a
Redis server of the run's own (so `used_memory` counts nothing but this run; the shared server when
`redis-server` is not installed). Each of A's orders is filled by --per-order trades of ETH's
minimum size in one frame (as Lighter batches an order's trades): every trade is one fill and one
hedge task, and B hedges the order's fills together.

Measured at three settled points: the start (A's first order resting), the warm point (after
--warm-share of the fills) and the end. Settled: filling stops, every fill is hedged (A + B = 0, no
hedge in flight), then the run waits out the ledger's retention (plus two prune passes) and the
results' lifetime, so Redis holds only what stays for good, and the maker and the worker get SIGUSR2:
a gc and a malloc_trim, so their RSS is what they hold, not a peak they once reached (with
--memtrace they also log their allocation growth since the warm point; tasks/memtrace.py). Growth is (end - warm)
per 1,000 fills in between. RSS is VmRSS of each process and its session (maker, worker,
simulator; Flower with --flower), Redis is INFO used_memory.

A process's growth is the least-squares slope of its RSS over TREND_POINTS + 1 settled samples
spread evenly from the warm point to the end (each: every fill hedged, then SIGUSR2), not the
difference of two: a settled RSS moves by a few hundred KB from one sample to the next (glibc and
pymalloc keep what they keep), which at 10,000 fills of run is as large as the target itself.
Redis's growth is end - warm (both waited out: retention and results' lifetime).
"""
from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import redis
import yaml

import bench.cluster as cluster
from bench.cluster import BIN, BenchCluster, wait_until
from ops.settings import RESULT_TTL_S
from tasks.memtrace import SIGNAL as memtrace_signal
from tasks.store import Store
from venue.sim.harness import PROJECT_ROOT, fill_new_orders, free_port

FILL = "0.0050"            # ETH's min_base_amount on the simulator: every trade is hedgeable alone
TARGETS_MB_PER_1K = {"maker": 0.05, "worker": 0.05, "redis": 0.1}
FLOWER_MAX_TASKS = 10_000  # as supervisord.conf
TREND_POINTS = 10          # settled samples between the warm point and the end, for the processes' slope


def slope_per_1k(points: list[tuple[int, float]]) -> float:
    """Least-squares slope of (fills, MB) points, in MB per 1,000 fills."""
    n = len(points)
    mean_x = sum(x for x, _ in points) / n
    mean_y = sum(y for _, y in points) / n
    var_x = sum((x - mean_x) ** 2 for x, _ in points)
    cov = sum((x - mean_x) * (y - mean_y) for x, y in points)
    return cov / var_x * 1000


@dataclass(frozen=True)
class Sample:
    fills: int
    at_s: float
    rss_mb: dict[str, float]
    redis_mb: float


def emit(key: str, value: object) -> None:
    if isinstance(value, float):
        value = f"{value:.3f}"
    print(f"{key}={value}", flush=True)


def rss_mb(pid: int) -> float:
    """VmRSS of a process and the processes of its session (a child it may have spawned), in MB."""
    total_kb = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            status = (entry / "status").read_text()
            if int(entry.name) != pid and os.getsid(int(entry.name)) != pid:
                continue
        except (OSError, ValueError):
            continue   # gone meanwhile
        for line in status.splitlines():
            if line.startswith("VmRSS:"):
                total_kb += int(line.split()[1])
    return total_kb / 1024


GO_ARENA = range(0xC000000000, 0xC100000000)   # where Go's heap sits on linux/amd64 (the signer's)


def rss_parts_mb(pid: int) -> dict[str, float]:
    """A process's resident memory by kind of mapping, in MB, from /proc/<pid>/smaps: `file` (code and
    data of binaries and libraries), `brk` (glibc malloc's main heap), `go` (the Go signer's heap) and
    `anon` (the rest: pymalloc's arenas, other malloc arenas, thread stacks)."""
    parts = dict.fromkeys(("file", "brk", "go", "anon"), 0)
    kind = "anon"
    try:
        lines = Path(f"/proc/{pid}/smaps").read_text().splitlines()
    except OSError:
        return {}
    for line in lines:
        fields = line.split()
        if "-" in fields[0] and not fields[0].endswith(":"):   # a mapping's header line
            start = int(fields[0].split("-")[0], 16)
            name = fields[5] if len(fields) > 5 else ""
            kind = ("brk" if name == "[heap]" else "go" if start in GO_ARENA
                    else "file" if name.startswith("/") else "anon")
        elif fields[0] == "Rss:":
            parts[kind] += int(fields[1])
    return {k: v / 1024 for k, v in parts.items()}


class PrivateRedis:
    """redis-server on a free loopback port, no persistence; None when the binary is missing."""

    def __init__(self) -> None:
        self.dir = tempfile.mkdtemp(prefix="lh-soak-redis-")
        self.port = free_port()
        self.proc = subprocess.Popen(
            ["redis-server", "--bind", "127.0.0.1", "--port", str(self.port), "--save", "", "--appendonly", "no",
             "--dir", self.dir], stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        self.url = f"redis://127.0.0.1:{self.port}"
        client = redis.Redis.from_url(f"{self.url}/0", socket_connect_timeout=1)

        def up() -> bool:
            try:
                return bool(client.ping())
            except redis.exceptions.ConnectionError:
                return False
        wait_until(up, 10, "the soak's redis-server answering", 0.05)

    @staticmethod
    def start() -> "PrivateRedis | None":
        return PrivateRedis() if shutil.which("redis-server") else None

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        shutil.rmtree(self.dir, ignore_errors=True)


def soak(n_fills: int, per_order: int, retention_s: float, prune_interval_s: float, warm_share: float,
         flower: bool, memtrace: bool, keep: bool) -> int:
    private = PrivateRedis.start()
    if private is not None:
        cluster.BASE_REDIS = private.url   # read by lock_redis_db when the cluster starts
    try:
        return _soak(n_fills, per_order, retention_s, prune_interval_s, warm_share, flower, memtrace, keep,
                     private is not None)
    finally:
        if private is not None:
            private.stop()


def _soak(n_fills: int, per_order: int, retention_s: float, prune_interval_s: float, warm_share: float,
          flower: bool, memtrace: bool, keep: bool, private_redis: bool) -> int:
    quantity = str(Decimal(FILL) * per_order)
    with BenchCluster(quantity=quantity, keep_dir=keep, metrics=False,
                      strategy={"reconcile_interval_s": 30}) as c:
        # The ledger's retention, short enough that pruning reaches its steady state within the run.
        if retention_s:   # 0: the config's defaults (a run without pruning, for comparison)
            c.config["ledger"] = {"retention_s": retention_s, "prune_interval_s": prune_interval_s,
                                  "archive_path": str(c.workdir / "ledger-archive.jsonl")}
            c.config_path.write_text(yaml.safe_dump(c.config))
        if memtrace:
            os.environ["LH_MEMTRACE"] = "1"   # maker and worker start tracemalloc (tasks/memtrace.py)
        c.start_worker()
        c.start_maker()
        os.environ.pop("LH_MEMTRACE", None)
        if flower:
            _start_flower(c)
        store = Store(c.r)
        wait_until(lambda: c.active_orders(), 120, "A's first resting order", 0.05)
        procs = {"maker": c.procs["maker"].pid, "worker": c.procs["worker"].pid, "sim": c.sim.proc.pid}
        if flower:
            procs["flower"] = c.procs["flower"].pid

        settle_s = max(retention_s + 2 * prune_interval_s, RESULT_TTL_S) + 2 if retention_s else RESULT_TTL_S + 2

        def sample(fills: int, settle: bool = True) -> Sample:
            def hedged() -> bool:
                a, b = c.positions()
                return a + b == 0 and not store.inflight("ETH")
            wait_until(hedged, 120, "every fill hedged (A + B = 0, nothing in flight)", 0.05)
            at_s = time.monotonic()
            if settle:
                time.sleep(settle_s)   # retention and result expiry catch up: only lasting state is left
            for name in ("maker", "worker"):   # gc and malloc_trim (tasks/memtrace.py): what they hold
                if fills or not memtrace:            # with --memtrace: baseline at the warm point
                    os.kill(procs[name], memtrace_signal)
            wait_until(lambda: all(c.log(name).count("event=memory.settled") >= settled[name] + 1
                                   for name in ("maker", "worker") if fills or not memtrace), 30,
                       "maker and worker settled", 0.1)
            for name in settled:
                settled[name] = c.log(name).count("event=memory.settled")
            return Sample(fills, at_s, {name: rss_mb(pid) for name, pid in procs.items()},
                          int(c.r.info("memory")["used_memory"]) / 2**20)

        settled = {"maker": 0, "worker": 0}
        start = sample(0, settle=False)
        t0 = time.monotonic()
        warm: Sample | None = None
        trend: list[Sample] = []   # warm, TREND_POINTS - 1 samples in between, end
        next_trend = trend_step = 0.0
        paused_s = 0.0
        filled: set[int] = set()
        fills = 0
        next_progress = n_fills // 10
        while fills < n_fills:
            made = fill_new_orders(c, filled, chunk=FILL, one_frame=True)
            fills += made
            if not made:
                time.sleep(0.002)
            if fills >= next_progress:   # under load, unsettled: the shape of the growth
                next_progress += n_fills // 10
                print("progress fills=%d %s redis_used_memory_mb=%.2f" % (
                    fills, " ".join(f"{name}_rss_mb={rss_mb(pid):.2f}" for name, pid in procs.items()),
                    int(c.r.info("memory")["used_memory"]) / 2**20), flush=True)
            if warm is None and fills >= n_fills * warm_share:
                t_pause = time.monotonic()
                warm = sample(fills)
                trend.append(warm)
                trend_step = (n_fills - fills) / TREND_POINTS
                next_trend = fills + trend_step
                paused_s += time.monotonic() - t_pause
            elif warm is not None and fills >= next_trend and fills < n_fills:
                t_pause = time.monotonic()
                trend.append(sample(fills, settle=False))   # hedged, gc'd and trimmed; Redis not waited out
                print("trend fills=%d %s %s" % (fills, " ".join(
                    f"{name}_rss_mb={mb:.2f}" for name, mb in trend[-1].rss_mb.items()), " ".join(
                    f"{name}_{part}_mb={mb:.2f}" for name in ("maker", "worker")
                    for part, mb in rss_parts_mb(procs[name]).items())), flush=True)
                next_trend += trend_step
                paused_s += time.monotonic() - t_pause
        assert warm is not None   # fills >= n_fills > n_fills * warm_share
        end = sample(fills)
        trend.append(end)
        elapsed = end.at_s - t0 - paused_s
        a, b = c.positions()
        by_pattern = _redis_bytes_by_pattern(c.r)
        archive = c.workdir / "ledger-archive.jsonl"
        archived = sum(1 for _ in archive.open()) if archive.exists() else 0
        kept = {"fills": c.r.hlen("lh:fills:ETH"), "legs": c.r.hlen("lh:legs:ETH"),
                "hedged_fills": c.r.scard("lh:hedged_fills:ETH")}
        stats = store.stats("ETH")

    emit("fills", fills)
    emit("seconds", elapsed)
    emit("fills_per_s", fills / elapsed)
    emit("redis", "private" if private_redis else "shared (used_memory includes other users)")
    emit("retention_s", retention_s)
    emit("settle_s", settle_s)
    emit("warm_fills", warm.fills)
    for name in start.rss_mb:
        for label, s in (("start", start), ("warm", warm), ("end", end)):
            emit(f"{name}_rss_mb_{label}", s.rss_mb[name])
    for label, s in (("start", start), ("warm", warm), ("end", end)):
        emit(f"redis_used_memory_mb_{label}", s.redis_mb)
    per_1k = (end.fills - warm.fills) / 1000
    emit("trend_samples", len(trend))
    growth = {name: slope_per_1k([(s.fills, s.rss_mb[name]) for s in trend]) for name in start.rss_mb}
    growth["redis"] = (end.redis_mb - warm.redis_mb) / per_1k
    for name, value in growth.items():
        emit(f"{name}_mb_per_1k_fills", value)
    for name in start.rss_mb:   # the two-point figure, for comparison with older runs
        emit(f"{name}_mb_per_1k_fills_end_minus_warm", (end.rss_mb[name] - warm.rss_mb[name]) / per_1k)
    for pattern, size in by_pattern[:8]:
        emit(f"redis_kb_{pattern}", size / 1024)
    emit("redis_kept_fills", kept["fills"])
    emit("redis_kept_legs", kept["legs"])
    emit("redis_kept_hedged_markers", kept["hedged_fills"])
    emit("ledger_archive_lines", archived)
    emit("hedges_counted", stats.get("hedges", 0))
    emit("net_exposure_end", a + b)
    ok = True
    for name, target in TARGETS_MB_PER_1K.items():
        met = growth[name] <= target
        ok &= met
        emit(f"{name}_target_met", f"{str(met).lower()} (<= {target})")
    ok &= a + b == 0
    emit("target_met", str(ok).lower())
    return 0 if ok else 1


def _start_flower(c: BenchCluster) -> None:
    port = free_port()
    log = open(c.workdir / "flower.log", "ab")
    env = dict(c.env(), FLOWER_BASIC_AUTH="soak:soak")
    c.procs["flower"] = subprocess.Popen(
        [str(BIN / "celery"), "-A", "tasks", "flower", "--address=127.0.0.1", f"--port={port}",
         "--persistent=False", f"--max_tasks={FLOWER_MAX_TASKS}"],
        stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True, cwd=str(PROJECT_ROOT))
    log.close()
    wait_until(lambda: "Visit me at" in c.log("flower") or c.procs["flower"].poll() is not None, 60,
               "Flower listening", 0.1)


def _redis_bytes_by_pattern(r: redis.Redis) -> list[tuple[str, int]]:
    """MEMORY USAGE summed per key pattern (ids replaced by *), largest first."""
    import re
    sizes: dict[str, int] = {}
    for key in r.scan_iter(count=1000):
        pattern = re.sub(r"[0-9a-f]{8}-[0-9a-f-]{27}|\d+", "*", key)
        sizes[pattern] = sizes.get(pattern, 0) + int(r.memory_usage(key, samples=0) or 0)
    return sorted(sizes.items(), key=lambda kv: -kv[1])
