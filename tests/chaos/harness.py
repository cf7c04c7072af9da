"""Chaos harness: a real cluster (simulator + Redis + `lighter-hedge worker` + `lighter-hedge maker`)
plus the knobs the chaos suite needs.

* `ChaosCluster` extends tests/integration/cluster.Cluster (not modified): kill -9 of a process
  group, a per-process config (the worker can reach Redis through a `RedisTap`), log cursors,
  venue-side invariant checks.
* `RedisTap`: a TCP proxy between the worker and Redis that can *hold* the first client command
  containing a marker (e.g. ``lh:leg_seq`` = the first command of the write-ahead, or
  ``celery-task-meta-`` = storing the task's result). The worker then blocks on Redis at exactly
  that step, and the test kills it there: a deterministic crash point, no timing luck.
* `PrivateRedis`: a throwaway `redis-server --port <free> --save "" --appendonly no` that the
  Redis-loss scenarios kill and restart empty (the machine's shared Redis is never touched).
* `check_invariants`: what must hold after every scenario, read from the venue's side
  (/admin/state, /admin/trades) and from Redis.
* `FIGURES`: per-kind counters printed as one `chaos kind=...` line each at the end of the run.
"""
from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import threading
import time
from collections import defaultdict
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any, Callable, Iterator

import yaml

from tests.integration.cluster import A, B, BIN, ETH, Cluster, wait_until
from venue.sim.harness import free_port

MIN_BASE = Decimal("0.0050")      # the simulator's ETH min_base_amount (dust bound)
HEDGE_TX = 14                      # create-order tx type in the orders log
SOAK = os.environ.get("CHAOS_SOAK", "") not in ("", "0")


def rounds(default: int, soak: int) -> int:
    return soak if SOAK else default


# ---- figures ------------------------------------------------------------------------------------

@dataclass
class KindFigures:
    scenarios: int = 0
    faults_injected: int = 0
    hedges: int = 0
    double_hedges: int = 0
    max_unhedged_after: Decimal = Decimal(0)
    longest_unhedged_window_s: float = 0.0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self, kind: str) -> str:
        return (f"chaos kind={kind} scenarios={self.scenarios} faults_injected={self.faults_injected} "
                f"hedges={self.hedges} double_hedges={self.double_hedges} "
                f"max_unhedged_after={self.max_unhedged_after} "
                f"longest_unhedged_window_s={self.longest_unhedged_window_s:.2f} "
                f"seconds={self.seconds:.0f}")


FIGURES: dict[str, KindFigures] = defaultdict(KindFigures)


# ---- a TCP tap in front of Redis -----------------------------------------------------------------

class RedisTap:
    """Forwards bytes between clients and Redis; `hold(marker)` freezes the first connection whose
    next client->server chunk contains `marker` (that chunk is never forwarded)."""

    def __init__(self, upstream_port: int):
        self.upstream_port = upstream_port
        self.port = free_port()
        self._marker: bytes | None = None
        self.held = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._writers: set[asyncio.StreamWriter] = set()
        self._ready = threading.Event()
        self._thread = threading.Thread(target=self._run, name="redis-tap", daemon=True)
        self._thread.start()
        self._ready.wait(10)

    def url(self, db: int) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def hold(self, marker: str) -> None:
        self.held.clear()
        self._marker = marker.encode()

    def release_all(self) -> None:
        """Stop holding: drop every proxied connection (their clients are dead or will reconnect)."""
        self._marker = None
        self._loop.call_soon_threadsafe(self._close_all)

    def close(self) -> None:
        self._marker = None
        self._loop.call_soon_threadsafe(self._close_all)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def _close_all(self) -> None:
        for writer in list(self._writers):
            writer.close()
        self._writers.clear()

    def _run(self) -> None:
        asyncio.set_event_loop(self._loop)
        server = self._loop.run_until_complete(asyncio.start_server(self._client, "127.0.0.1", self.port))
        self._ready.set()
        try:
            self._loop.run_forever()
        finally:
            server.close()

    async def _client(self, c_reader: asyncio.StreamReader, c_writer: asyncio.StreamWriter) -> None:
        try:
            u_reader, u_writer = await asyncio.open_connection("127.0.0.1", self.upstream_port)
        except OSError:
            c_writer.close()
            return
        self._writers.update((c_writer, u_writer))

        async def pump(reader, writer, inspect: bool) -> None:
            try:
                while True:
                    data = await reader.read(65536)
                    if not data:
                        break
                    marker = self._marker
                    if inspect and marker is not None and marker in data:
                        self._marker = None
                        self.held.set()
                        await asyncio.Event().wait()  # frozen until the connection is dropped
                    writer.write(data)
                    await writer.drain()
            except (OSError, asyncio.CancelledError):
                pass
            finally:
                writer.close()

        await asyncio.gather(pump(c_reader, u_writer, True), pump(u_reader, c_writer, False),
                             return_exceptions=True)
        self._writers.discard(c_writer)
        self._writers.discard(u_writer)


# ---- a throwaway Redis server ------------------------------------------------------------------

class PrivateRedis:
    def __init__(self, workdir: Path):
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen | None = None
        self.start()

    def url(self, db: int = 0) -> str:
        return f"redis://127.0.0.1:{self.port}/{db}"

    def start(self) -> None:
        log = open(self.workdir / "redis.log", "ab")
        self.proc = subprocess.Popen(["redis-server", "--port", str(self.port), "--bind", "127.0.0.1",
                                      "--save", "", "--appendonly", "no", "--dir", str(self.workdir)],
                                     stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        log.close()
        import redis
        wait_until(lambda: _pings(redis.Redis(port=self.port, socket_connect_timeout=0.5)), 10,
                   "private redis-server to answer")

    def kill(self) -> None:
        """kill -9: every key (queue, results, ledger, pause, cutoff) is gone."""
        if self.proc is not None and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        self.proc = None

    def close(self) -> None:
        self.kill()


def _pings(client) -> bool:
    try:
        return bool(client.ping())
    except Exception:
        return False


# ---- the cluster ---------------------------------------------------------------------------------

WORKER_READY_S = 90


class ChaosCluster(Cluster):
    """A Cluster with chaos knobs. `worker_redis_url` lets the worker reach Redis through a tap."""

    def __init__(self, workdir: Path, redis_url: str, keys_file: str, *, seed: int,
                 worker_redis_url: str | None = None, maker_redis_url: str | None = None, strategy: dict | None = None,
                 markets: dict | None = None, sim: dict | None = None, profile: str = "instant"):
        base_strategy = {"maker_order_timeout_s": 30, "max_retries": 8, "retry_backoff_max_s": 1,
                         "max_slippage_bps": 50, "hedge_wait_timeout_s": 20, "reconcile_interval_s": 10,
                         "max_hedges_per_minute": 6000}
        base_strategy.update(strategy or {})
        super().__init__(workdir, redis_url, keys_file, strategy=base_strategy, markets=markets,
                         sim={"seed": seed, **(sim or {})}, profile=profile)
        self.profile = profile
        self.seed = seed
        self.worker_config_path = self.config_path
        if worker_redis_url is not None:
            cfg = dict(self.config, redis=dict(self.config["redis"], url=worker_redis_url))
            self.worker_config_path = workdir / "config-worker.yaml"
            self.worker_config_path.write_text(yaml.safe_dump(cfg))
        self.maker_config_path = self.config_path
        if maker_redis_url is not None:
            cfg = dict(self.config, redis=dict(self.config["redis"], url=maker_redis_url))
            self.maker_config_path = workdir / "config-maker.yaml"
            self.maker_config_path.write_text(yaml.safe_dump(cfg))
        self._log_marks: dict[str, int] = {}

    # processes --------------------------------------------------------------------------------

    def _spawn(self, name: str, *args: str):  # noqa: D401 - same as Cluster, per-process config
        path = {"worker": self.worker_config_path, "maker": self.maker_config_path}.get(name, self.config_path)
        log = open(self.workdir / f"{name}.log", "ab")
        env = dict(self.env(), LH_CONFIG=str(path))
        proc = subprocess.Popen([str(BIN / "lighter-hedge"), *args, "--config", str(path)],
                                stdout=log, stderr=subprocess.STDOUT, env=env, start_new_session=True)
        log.close()
        self.procs[name] = proc
        return proc

    def start_worker(self) -> None:
        self.mark("worker")
        self._spawn("worker", "worker")
        # Up to 13 lanes start their workers at once on 2 cores, each importing the SDK twice (CLI, then
        # Celery): startup is CPU-bound there, not a hedge timing.
        wait_until(lambda: "ready." in self.log_since("worker") or self._died("worker"), WORKER_READY_S, "worker ready")
        assert not self._died("worker"), self.log("worker")[-3000:]

    def kill9(self, name: str) -> None:
        """SIGKILL the whole process group (for the worker: the celery solo process and its parent)."""
        proc = self.procs.pop(name, None)
        assert proc is not None, f"{name} is not running"
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(10)

    def mark(self, name: str) -> None:
        path = self.workdir / f"{name}.log"
        self._log_marks[name] = path.stat().st_size if path.exists() else 0

    def log_since(self, name: str) -> str:
        path = self.workdir / f"{name}.log"
        if not path.exists():
            return ""
        with open(path, "rb") as f:
            f.seek(self._log_marks.get(name, 0))
            return f.read().decode(errors="replace")

    def sim_log(self) -> str:
        return Path(self.sim.log_path).read_text(errors="replace")

    def faults_injected(self, kind: str | None = None) -> int:
        text = self.sim_log()
        needle = f"event=fault kind={kind} " if kind else "event=fault kind="
        return text.count(needle)

    def set_faults(self, **settings: Any) -> None:
        self.sim.admin("/admin/faults", settings)

    # the venue's view ----------------------------------------------------------------------------

    def positions(self) -> tuple[Decimal, Decimal]:
        state = self.sim.admin("/admin/state")["accounts"]
        return (Decimal(state[str(A)]["markets"][str(ETH)]["position"]),
                Decimal(state[str(B)]["markets"][str(ETH)]["position"]))

    def trades(self, account: int | None = None) -> list[dict]:
        path = "/admin/trades" + (f"?account_index={account}" if account is not None else "")
        return self.sim.admin(path)["trades"]

    def resting_order(self, timeout_s: float = 30) -> dict:
        orders = wait_until(lambda: self.active_orders(), timeout_s, "A's resting order")
        assert len(orders) == 1, orders
        return orders[0]

    def fill_resting(self, sizes: list[str], timeout_s: float = 30) -> tuple[dict, list[int]]:
        order = self.resting_order(timeout_s)
        return order, self.fill(order, sizes)["trade_ids"]

    def b_hedge_orders(self) -> list[dict]:
        return [e for e in self.orders_log(B) if e["tx_type"] == HEDGE_TX and e["result"] == "accepted"]

    def quiescent(self) -> bool:
        """No hedge in flight, no leg in doubt, no B order in the venue's order book."""
        ledger = self.store.ledger("ETH")
        return not self.store.inflight("ETH") and not ledger.pending

    def paused_reason(self) -> str | None:
        pause = self.store.paused("ETH")
        return pause.get("reason") if pause else None


# ---- driving rounds ------------------------------------------------------------------------------

def split_sizes(rng, total_units: int, max_chunks: int = 3, unit: Decimal = Decimal("0.0001")) -> list[str]:
    """Seeded split of an order's remainder into 1..max_chunks fills (some below min_base_amount)."""
    chunks = rng.randint(1, max_chunks)
    cuts = sorted(rng.sample(range(1, total_units), chunks - 1)) if chunks > 1 and total_units > chunks else []
    parts = [b - a for a, b in zip([0, *cuts], [*cuts, total_units])]
    return [str((Decimal(p) * unit).quantize(unit)) for p in parts if p > 0]


def fill_round(c: "ChaosCluster", rng, max_chunks: int = 3, timeout_s: float = 30) -> list[int]:
    """Fill A's resting order completely, in a seeded number of chunks; returns the trade ids."""
    order = c.resting_order(timeout_s)
    units = int(Decimal(order["remaining_base_amount"]) * 10_000)
    return c.fill(order, split_sizes(rng, units, max_chunks))["trade_ids"]


# ---- invariants ----------------------------------------------------------------------------------

@dataclass
class Check:
    net: Decimal
    a: Decimal
    b: Decimal
    double_coi: dict[int, list[int]]
    hedges: int
    longest_window_s: float
    paused_reason: str | None


def double_executed_cois(trades: list[dict]) -> dict[int, list[int]]:
    """B's client_order_index -> the distinct B orders that traded under it (more than one = executed twice)."""
    orders: dict[int, set[int]] = defaultdict(set)
    for t in trades:
        for side in ("ask", "bid"):
            if t[f"{side}_account_id"] == B:
                orders[int(t[f"{side}_client_id"])].add(int(t[f"{side}_id"]))
    return {coi: sorted(ids) for coi, ids in orders.items() if len(ids) > 1}


def longest_unhedged_window_s(trades: list[dict], since_trade_id: int = 0) -> float:
    """From the venue's trades (A's and B's, in trade order): the longest stretch during which
    |A + B| was at least min_base_amount (counting only stretches opened after since_trade_id)."""
    net = Decimal(0)
    opened: int | None = None
    longest = 0
    last_ts = None
    for t in sorted(trades, key=lambda t: int(t["trade_id"])):
        size = Decimal(t["size"])
        ts = int(t["timestamp"])
        last_ts = ts
        for side, sign in (("bid", 1), ("ask", -1)):
            if t[f"{side}_account_id"] in (A, B):
                net += sign * size
        if abs(net) >= MIN_BASE and opened is None:
            if int(t["trade_id"]) <= since_trade_id:
                continue
            opened = ts
        elif abs(net) < MIN_BASE and opened is not None:
            longest = max(longest, ts - opened)
            opened = None
    if opened is not None and last_ts is not None:
        longest = max(longest, int(time.time() * 1000) - opened)
    return longest / 1000


def last_trade_id(c: "ChaosCluster") -> int:
    return max((int(t["trade_id"]) for t in c.trades()), default=0)


def executed_b_orders(c: "ChaosCluster") -> set[int]:
    """B orders that executed something (one per hedge order that traded)."""
    return {int(t["ask_id"] if t["ask_account_id"] == B else t["bid_id"])
            for t in c.trades(B)}


def check_invariants(c: ChaosCluster, kind: str, *, timeout_s: float = 40, expect_trading: bool = True,
                     record: bool = True, since_trade_id: int = 0, check_coi: bool = True) -> Check:
    """After a scenario, with every process running again: wait (bounded) until the system settles,
    then assert the invariants of issue 4. Returns what was measured."""
    def settled() -> bool:
        if not c.quiescent():
            return False
        a, b = c.positions()
        return abs(a + b) < MIN_BASE or c.paused_reason() is not None

    try:
        wait_until(settled, timeout_s, f"[{kind}] exposure back under min_base_amount (or a stated pause), "
                                       f"no hedge in flight, no leg in doubt", interval_s=0.1)
    except AssertionError:
        pass  # asserted below with the details
    a, b = c.positions()
    trades = c.trades()
    b_trades = [t for t in trades if B in (t["ask_account_id"], t["bid_account_id"])]
    check = Check(net=a + b, a=a, b=b, double_coi=double_executed_cois(b_trades),
                  hedges=len({t["ask_id"] if t["ask_account_id"] == B else t["bid_id"] for t in b_trades}),
                  longest_window_s=longest_unhedged_window_s(trades, since_trade_id), paused_reason=c.paused_reason())
    ledger = c.store.ledger("ETH")
    detail = (f"[{kind} seed={c.seed}] A={a} B={b} net={a + b} paused={check.paused_reason!r} "
              f"inflight={sorted(c.store.inflight('ETH'))} pending_legs={len(ledger.pending)} "
              f"failed={sorted(c.store.failed('ETH'))} maker_state={c.maker_state()} "
              f"double_coi={check.double_coi}")
    if record:
        fig = FIGURES[kind]
        fig.double_hedges += len(check.double_coi)
        fig.max_unhedged_after = max(fig.max_unhedged_after, abs(check.net))
        fig.longest_unhedged_window_s = max(fig.longest_unhedged_window_s, check.longest_window_s)
    # 1. no client_order_index of B executed twice
    if check_coi:
        assert not check.double_coi, f"B client_order_index executed twice: {detail}"
    # 2. B's executed size equals A's filled size within dust (no hedge lost, none doubled)
    assert abs(check.net) < MIN_BASE, f"exposure left after recovery: {detail}"
    # 3. nothing in flight or in doubt is left behind
    assert not c.store.inflight("ETH") and not ledger.pending, f"hedge left in flight / in doubt: {detail}"
    # 4. no process died (silently or not) and the maker is trading, or paused with a stated reason
    dead = [name for name, proc in c.procs.items() if proc.poll() is not None]
    assert not dead, f"process(es) died: {dead}: {detail}"
    if check.paused_reason is None and expect_trading:
        wait_until(lambda: c.active_orders() or c.paused_reason(), 30,
                   f"[{kind}] the maker to trade again (a resting order of A) or to pause with a reason: {detail}")
    if check.paused_reason is not None:
        assert check.paused_reason.strip(), f"paused without a reason: {detail}"
    return check


def record_scenario(kind: str, c: ChaosCluster | None = None, faults: int = 0, n: int = 1) -> None:
    FIGURES[kind].scenarios += n
    FIGURES[kind].faults_injected += faults


def record_hedges(kind: str, c: ChaosCluster, before: set[int] | None = None) -> None:
    FIGURES[kind].hedges += len(executed_b_orders(c) - (before or set()))


def record_recovered(kind: str, c: ChaosCluster, executed_before: set[int], started: float) -> None:
    """One injected fault and its recovery: counted, the hedges it took, how long it lasted."""
    record_scenario(kind, faults=1)
    record_hedges(kind, c, executed_before)
    FIGURES[kind].seconds += time.monotonic() - started


def summary_lines() -> list[str]:
    lines = [FIGURES[k].line(k) for k in sorted(FIGURES)]
    total = sum(f.scenarios for f in FIGURES.values())
    hedges = sum(f.hedges for f in FIGURES.values())
    doubles = sum(f.double_hedges for f in FIGURES.values())
    longest = max((f.longest_unhedged_window_s for f in FIGURES.values()), default=0.0)
    max_after = max((f.max_unhedged_after for f in FIGURES.values()), default=Decimal(0))
    lines.append(f"chaos total scenarios={total} hedges={hedges} double_hedges={doubles} "
                 f"max_unhedged_after={max_after} longest_unhedged_window_s={longest:.2f} soak={SOAK}")
    return lines


def figures_state() -> dict[str, dict[str, object]]:
    """FIGURES as plain values: what an xdist worker hands the controller (tests/conftest.py)."""
    return {kind: {**vars(f), "max_unhedged_after": str(f.max_unhedged_after)} for kind, f in FIGURES.items()}


def merge_figures(state: dict[str, dict[str, object]]) -> None:
    """Adds another process's figures_state() to FIGURES: counts add up, the worst case wins."""
    for kind, theirs in state.items():
        fig = FIGURES[kind]
        fig.scenarios += int(theirs["scenarios"])
        fig.faults_injected += int(theirs["faults_injected"])
        fig.hedges += int(theirs["hedges"])
        fig.double_hedges += int(theirs["double_hedges"])
        fig.max_unhedged_after = max(fig.max_unhedged_after, Decimal(str(theirs["max_unhedged_after"])))
        fig.longest_unhedged_window_s = max(fig.longest_unhedged_window_s, float(theirs["longest_unhedged_window_s"]))
        fig.violations.extend(theirs["violations"])
        fig.seconds += float(theirs["seconds"])


def shuffled_plan(seed: int, variants, default: int, soak: int) -> tuple[random.Random, list[str]]:
    """Each variant rounds(default, soak) times in a seeded order; the same rng then drives the fills."""
    rng = random.Random(seed)
    plan = [v for v in variants for _ in range(rounds(default, soak))]
    rng.shuffle(plan)
    return rng, plan


@contextmanager
def logs_on_failure(c: ChaosCluster, note: Callable[[], str] | None = None) -> Iterator[None]:
    """On any failure inside: print `note()` (the plan, the state) and the processes' logs, re-raise."""
    try:
        yield
    except BaseException:
        if note is not None:
            print(note())
        print(dump_logs(c))
        raise


def close_all(things: list) -> None:
    """Tear down what a fixture made (clusters, taps, Redis servers), newest first; one failing
    to close does not keep the rest running."""
    for thing in reversed(things):
        try:
            thing.close()
        except Exception:  # keep tearing the rest down
            pass


def dump_logs(c: ChaosCluster, names=("worker", "maker")) -> str:
    out = []
    for name in names:
        out.append(f"----- {name}.log (tail) -----\n" + c.log(name)[-4000:])
    return "\n".join(out)


__all__ = ["A", "B", "ETH", "ChaosCluster", "RedisTap", "PrivateRedis", "check_invariants", "FIGURES",
           "record_scenario", "record_hedges", "record_recovered", "summary_lines", "wait_until", "rounds", "SOAK", "MIN_BASE",
           "dump_logs", "logs_on_failure", "shuffled_plan", "json", "Callable"]


# ---- slow venue (tests/chaos/test_slow_venue.py): late execution, nonce lag, budget -------------
# Added for Lighter's "taken is not executed": a tx answered 200, timed out or 5xx'd can execute
# seconds to minutes later, so every check below first waits until the venue has nothing pending.

import re  # noqa: E402 - kept with the section that uses it
from collections.abc import Mapping  # noqa: E402

FIGURES_LOCK = threading.Lock()   # several clusters record into FIGURES from their own threads
TX_CANCEL = 15                      # cancel-order tx type in the orders log / sim log
TX_CANCEL_ALL = 16
# Ledger states (either shape of Store.legs) of a B leg the engine holds as never executed.
NOT_EXECUTED_LEG_STATES = frozenset({"VOID", "REJECTED", "EXPIRED", "FENCED"})


def leg_fields(leg: Any) -> tuple[str, int | None]:
    """(state name, client_order_index) of one entry of `Store.legs(market)`, in either shape:
    a dict {"state": "PENDING"|"DONE"|"VOID", "client_order_index": ...}, or a typed record with
    `.state` (an enum: its `.name`, e.g. TAKEN / EXECUTED / EXPIRED) and `.client_order_index`."""
    if isinstance(leg, Mapping):
        state, coi = leg.get("state"), leg.get("client_order_index")
    else:
        state, coi = getattr(leg, "state", None), getattr(leg, "client_order_index", None)
    name = getattr(state, "name", state)
    return ("" if name is None else str(name).upper()), (None if coi is None else int(coi))


def ledger_legs(c: "ChaosCluster", market: str = "ETH") -> list[tuple[str, int | None]]:
    """Every B leg the ledger knows, as (state name, client_order_index), through the store's accessor."""
    return [leg_fields(leg) for leg in c.store.legs(market)]


@dataclass
class Executions:
    a_filled: Decimal          # A's total filled size at the venue (both sides, absolute)
    b_executed: Decimal        # B's total executed size at the venue (both sides, absolute)
    b_by_coi: dict[int, Decimal]
    not_executed_traded: dict[int, tuple[str, Decimal]]   # coi -> (ledger state, size B traded under it)
    # B trades that took |A + B| further from zero, to min_base_amount or more: B executed more than
    # A's fills had left unhedged at that moment (a second hedge of the same fills, whatever its coi)
    beyond_unhedged: list[tuple[int, int, Decimal]]       # (trade_id, coi, size beyond)

    @property
    def over_hedged(self) -> bool:
        return bool(self.beyond_unhedged)

    def describe(self) -> str:
        beyond = sum((x for _, _, x in self.beyond_unhedged), Decimal(0))
        return (f"A filled {self.a_filled} in total, B executed {self.b_executed} in total; "
                f"B executed {beyond} beyond what A's fills had left unhedged"
                + (" (" + ", ".join(f"trade {t} coi={coi} +{x}" for t, coi, x in self.beyond_unhedged[:6]) + ")"
                   if self.beyond_unhedged else "")
                + "; B orders the ledger holds as not executed but traded at the venue: "
                + (", ".join(f"coi={coi} state={st} traded={size}"
                             for coi, (st, size) in sorted(self.not_executed_traded.items())) or "none"))


def executions(c: "ChaosCluster", market: str = "ETH") -> Executions:
    """From /admin/trades and the ledger: what A filled and B executed, B executions beyond what was
    unhedged, and B orders that traded although the ledger says they never executed (voided /
    rejected / expired / fenced legs).

    B's total equals A's total within dust only while no dust is carried across a change of side
    (the engine nets a dust remainder left after A's buy against A's next sell, so B then executes
    up to twice the dust less than A). The exact form of "B executed what A filled, once": walking
    the venue's trades in order, no B trade takes |A + B| further from zero to min_base_amount or
    more."""
    a_total = b_total = Decimal(0)
    b_by_coi: dict[int, Decimal] = defaultdict(Decimal)
    net = Decimal(0)
    beyond: list[tuple[int, int, Decimal]] = []
    for t in sorted(c.trades(), key=lambda t: int(t["trade_id"])):
        size = Decimal(t["size"])
        for side, sign in (("bid", 1), ("ask", -1)):
            account = t[f"{side}_account_id"]
            if account == A:
                a_total += size
                net += sign * size
            elif account == B:
                b_total += size
                coi = int(t[f"{side}_client_id"])
                b_by_coi[coi] += size
                before = abs(net)
                net += sign * size
                if abs(net) >= MIN_BASE and abs(net) > before:
                    beyond.append((int(t["trade_id"]), coi, abs(net) - before))
    bad = {coi: (state, b_by_coi[coi]) for state, coi in ledger_legs(c, market)
           if state in NOT_EXECUTED_LEG_STATES and coi is not None and b_by_coi.get(coi)}
    return Executions(a_total, b_total, dict(b_by_coi), bad, beyond)


def assert_no_double_execution(c: "ChaosCluster", kind: str, note: str = "") -> Executions:
    """The double-execution check, across client order indexes: B never executed more than A's fills
    had left unhedged (so B's total is A's total, less dust netted across sides), and no B order the
    ledger considers not executed traded at the venue."""
    ex = executions(c)
    if ex.over_hedged or ex.not_executed_traded:
        with FIGURES_LOCK:
            FIGURES[kind].double_hedges += max(len(ex.beyond_unhedged), len(ex.not_executed_traded))
    detail = f"[{kind} seed={c.seed}] {ex.describe()}{' ' + note if note else ''}"
    assert not ex.not_executed_traded, f"B order executed at the venue that the ledger voided/rejected/expired: {detail}"
    assert not ex.beyond_unhedged, f"B executed more than A's fills left unhedged (hedged twice): {detail}"
    return ex


def venue_stats(c: "ChaosCluster") -> dict:
    return c.sim.admin("/admin/stats")


def venue_pending_txs(c: "ChaosCluster") -> int:
    """Taken txs the venue has not executed yet (speed bumps, late executions)."""
    return int(venue_stats(c)["txs_pending"])


def venue_late_count(c: "ChaosCluster", account: int) -> int:
    """Taken txs of `account` that were (or will be) executed late (/admin/stats)."""
    return int(venue_stats(c)["txs"].get(str(account), {}).get("late", 0))


def l1_budget_used(c: "ChaosCluster") -> int:
    """The fullest L1-address bucket's rolling minute at the venue (requests on Standard)."""
    return max((int(b["used"]) for key, b in venue_stats(c)["rolling_minute"].items() if key.startswith("l1:")),
               default=0)


_TAKEN_RE = re.compile(r"event=tx result=taken tx_type=(\d+) account=(\d+) nonce=(\d+) tx_hash=\w+ "
                       r"execute_in_ms=(-?\d+) late=(True|False)")
_FAULT_RE = re.compile(r"event=fault kind=(\w+) account=(\S+) timeout_applies=(\S+)")
_REJECTED_RE = re.compile(r"event=tx result=rejected .*account=(\d+)\s*$")


@dataclass(frozen=True)
class TakenTx:
    tx_type: int
    account: int
    nonce: int
    execute_in_ms: int
    late: bool
    answer: str     # what the API answered: "ok" (200), "http_5xx_after", "timeout" (taken before the hang)


def taken_txs(c: "ChaosCluster") -> list[TakenTx]:
    """Every tx the simulator took, from its own log, with the answer the client got for it.

    A fault that takes the tx (5xx after, timeout "before") is logged right before the tx is taken,
    with no await in between, so it belongs to the next take (or reject) of that account. (Timeouts
    "after" are taken at the end of the hang, after other requests: they are counted as "ok".)"""
    answer_next: dict[str, str] = {}
    out: list[TakenTx] = []
    for line in c.sim_log().splitlines():
        if "event=fault" in line:
            m = _FAULT_RE.search(line)
            if m and (m[1] == "http_5xx_after" or (m[1] == "timeout" and m[3] == "before")):
                answer_next[m[2]] = "http_5xx_after" if m[1] == "http_5xx_after" else "timeout"
            continue
        if "event=tx result=taken" in line:
            m = _TAKEN_RE.search(line)
            if m:
                out.append(TakenTx(int(m[1]), int(m[2]), int(m[3]), int(m[4]), m[5] == "True",
                                   answer_next.pop(m[2], "ok")))
            continue
        if "event=tx result=rejected" in line:
            m = _REJECTED_RE.search(line)
            if m:
                answer_next.pop(m[1], None)
    return out


def late_txs(c: "ChaosCluster", account: int, answer: str | None = None, tx_types: tuple[int, ...] | None = None,
             min_ms: int = 0) -> list[TakenTx]:
    """Late executions of `account` (optionally: only after `answer`, of `tx_types`, at least `min_ms` late)."""
    return [t for t in taken_txs(c) if t.account == account and t.late and t.execute_in_ms >= min_ms
            and (answer is None or t.answer == answer) and (tx_types is None or t.tx_type in tx_types)]


def settle_slow(c: "ChaosCluster", timeout_s: float) -> bool:
    """Wait (bounded) until the venue has executed everything it took, no hedge is in flight or in
    doubt, and exposure is back within dust; stop early when B is already over-hedged or the market
    paused (the checks then say why). Returns whether it settled."""
    def done() -> bool:
        if venue_pending_txs(c) or not c.quiescent():
            return False
        a, b = c.positions()
        return abs(a + b) < MIN_BASE or c.paused_reason() is not None or executions(c).over_hedged
    try:
        wait_until(done, timeout_s, "venue drained and hedges settled", interval_s=0.1)
        return True
    except AssertionError:
        return False


def check_slow_round(c: "ChaosCluster", kind: str, *, since_trade_id: int = 0, settle_timeout_s: float = 60,
                     allow_pause: bool = False) -> Check:
    """After a round on a slow venue: drain the venue (every taken tx executed or failed), then the
    double-execution check, then `check_invariants`; A never has more than one order at the venue,
    and a slow venue is never a reason to pause. Records the kind's figures (thread-safe)."""
    settle_slow(c, settle_timeout_s)
    assert_no_double_execution(c, kind)
    check = check_invariants(c, kind, timeout_s=10, expect_trading=False, record=False,
                             since_trade_id=since_trade_id)
    with FIGURES_LOCK:
        fig = FIGURES[kind]
        fig.double_hedges += len(check.double_coi)
        fig.max_unhedged_after = max(fig.max_unhedged_after, abs(check.net))
        fig.longest_unhedged_window_s = max(fig.longest_unhedged_window_s, check.longest_window_s)
    a_orders = c.active_orders()
    assert len(a_orders) <= 1, (f"[{kind} seed={c.seed}] A has {len(a_orders)} orders at the venue at once: "
                                f"{[(o.get('client_order_index'), o.get('order_index')) for o in a_orders]}")
    if not allow_pause:
        assert check.paused_reason is None, f"[{kind} seed={c.seed}] paused on a slow venue: {check.paused_reason!r}"
    return check


def record_slow(kind: str, *, scenarios: int = 0, faults: int = 0, hedges: int = 0, seconds: float = 0.0) -> None:
    with FIGURES_LOCK:
        fig = FIGURES[kind]
        fig.scenarios += scenarios
        fig.faults_injected += faults
        fig.hedges += hedges
        fig.seconds = max(fig.seconds, seconds)   # clusters of one kind run side by side: wall time


@contextmanager
def spare_redis_dbs(n: int, base_url: str) -> Iterator[list[str]]:
    """Up to `n` more Redis db numbers (1..15) for clusters running side by side, locked like
    tests/conftest.py locks the run's own db (a key in db 0), flushed before and after; fewer when
    other runs hold them (the caller falls back to a PrivateRedis)."""
    import redis as _redis
    base = base_url.rsplit("/", 1)[0]
    admin = _redis.Redis.from_url(f"{base}/0", socket_connect_timeout=2)
    held: list[tuple[int, str]] = []
    try:
        for db in range(1, 16):
            if len(held) >= n:
                break
            key = f"lighter-hedge:test-db-lock:{db}"
            if admin.set(key, f"{os.getpid()}:slow-venue", nx=True, ex=3600):
                _redis.Redis.from_url(f"{base}/{db}").flushdb()
                held.append((db, key))
        yield [f"{base}/{db}" for db, _ in held]
    finally:
        for db, key in held:
            try:
                _redis.Redis.from_url(f"{base}/{db}").flushdb()
            finally:
                admin.delete(key)


__all__ += ["FIGURES_LOCK", "NOT_EXECUTED_LEG_STATES", "leg_fields", "ledger_legs", "Executions", "executions",
            "assert_no_double_execution", "venue_stats", "venue_pending_txs", "venue_late_count", "l1_budget_used",
            "TakenTx", "taken_txs", "late_txs", "settle_slow", "check_slow_round", "record_slow", "spare_redis_dbs",
            "figures_state", "merge_figures"]
