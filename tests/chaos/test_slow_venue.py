"""A slow venue, as Lighter is in production, on the simulator's Standard profile: 60 requests a
rolling minute per L1 address (A and B share it), speed bumps (300 ms taker, 200 ms maker and
cancel), nextNonce behind by `nonce_lag_ms` -- and, injected, seeded:

* a tx answered 200, timed out (the engine's own send timeout) or 5xx'd *after being taken* that
  executes 5 s .. 2 min later (it stays executable until its ExpiredAt, ~10 min): on B's hedges
  (`late_after_ok`, `late_after_timeout`, `late_after_5xx`) and on A's orders and cancels
  (`late_on_a`: A's order shows on the book seconds later, its cancel takes effect late and a fill
  can race it);
* a large nonce lag (2-5 s) with answers in doubt that were *not* taken (5xx before applying,
  timeouts never applied) and some that were (`nonce_lag`): a lost tx must not be taken for a
  taken one, nor the other way round;
* 429 bursts on both accounts, and the real Standard budget used up by the engine's own traffic
  (a fill of A in many spaced chunks, one hedge each) (`rate_limit_burst`);
* plain Standard rounds, several partial fills per order landing inside the speed bumps
  (`speed_bumps`).

Every kind runs on clusters of its own, side by side in threads (each cluster: its simulator, so
its own L1 budget, its own Redis db, its own worker and maker). After every round the venue is
first *drained* (every taken tx executed or failed: a late hedge executes before we judge), then
`check_slow_round` asserts: no double execution across client order indexes (B's total executed
size equals A's total filled size within dust; no B order the ledger voided / rejected / expired
traded), exposure within dust, nothing in flight or in doubt, no process died, A never has two
orders at the venue, and no pause (a slow venue is not a reason to call an operator).

Most late executions are 5-20 s late; one per late kind (CHAOS_SOAK: three) is 100-115 s late.
Every count comes from the simulator's own log (`event=tx result=taken ... late=True` and the
`event=fault kind=...` line before it), not from intent.
"""
from __future__ import annotations

import inspect
import random
import threading
import time
import traceback
from contextlib import ExitStack
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Callable

import pytest

from tests.chaos.harness import (A, B, ChaosCluster, PrivateRedis, TX_CANCEL, TX_CANCEL_ALL,
                                 check_slow_round, close_all, dump_logs, executed_b_orders, l1_budget_used, last_trade_id,
                                 late_txs, record_slow, rounds, spare_redis_dbs, split_sizes, taken_txs,
                                 venue_late_count, venue_stats, wait_until)
from venue.sim.harness import AdminCallError

HEDGE_TX = 14
SHORT_MS = (5_000, 20_000)        # most late executions
LONG_MS = (100_000, 115_000)      # one per late kind (CHAOS_SOAK: three): near the 2-minute end
UNIT = Decimal("0.0001")


def engine_send_timeout_s() -> float:
    """The engine's own sendTx timeout (VenueClient.open's send_timeout_s, 10 s today)."""
    from venue.client import VenueClient
    default = inspect.signature(VenueClient.open).parameters["send_timeout_s"].default
    return float(default) if isinstance(default, (int, float)) else 10.0


SEND_TIMEOUT_S = engine_send_timeout_s()
# The venue holds the request a little longer than the engine waits: the engine's timeout fires.
HANG_S = round(SEND_TIMEOUT_S + 0.5, 1)

# Late hedges may take up to LONG_MS to execute: the maker must not give up on a hedge before.
STRATEGY = {"hedge_wait_timeout_s": 180, "maker_order_timeout_s": 30}


# ---- lanes: one cluster each, run side by side ---------------------------------------------------

@dataclass
class Lane:
    kind: str                                  # FIGURES kind: "slow_venue.<kind>"
    seed: int
    drive: Callable[["ChaosCluster", "Lane", float], None]
    duration_s: float                          # rounds start until this long after the cluster is up
    sim: dict = field(default_factory=dict)
    strategy: dict = field(default_factory=dict)
    params: dict = field(default_factory=dict)
    longs: int = 0                             # 100-115 s late executions to run first
    # results
    rounds: int = 0
    scenarios: int = 0
    faults: int = 0
    notes: dict = field(default_factory=dict)
    seconds: float = 0.0
    failure: str | None = None

    @property
    def label(self) -> str:
        return f"slow_venue.{self.kind}"

    def line(self) -> str:
        notes = " ".join(f"{k}={v}" for k, v in sorted(self.notes.items()))
        return (f"lane kind={self.label} seed={self.seed} rounds={self.rounds} scenarios={self.scenarios} "
                f"faults={self.faults} seconds={self.seconds:.0f} {notes}"
                + (" FAILED" if self.failure else ""))


@pytest.fixture
def run_lanes(tmp_path, redis_url, keys_file):
    """run(lanes) -> the lanes, each driven on a fresh Standard-profile cluster of its own (own
    simulator, own Redis db from spare_redis_dbs, else a throwaway redis-server), all at once.
    Every cluster, db and server is released at teardown."""
    stack = ExitStack()
    made: list = []

    def run(lanes: list[Lane], join_timeout_s: float) -> list[Lane]:
        urls = stack.enter_context(spare_redis_dbs(len(lanes), redis_url))
        threads = []
        for i, lane in enumerate(lanes):
            url = urls[i] if i < len(urls) else None
            t = threading.Thread(target=_run_lane, args=(lane, i, url, tmp_path, keys_file, made),
                                 name=f"lane-{lane.kind}-{lane.seed}", daemon=True)
            t.start()
            threads.append(t)
        deadline = time.monotonic() + join_timeout_s
        for t, lane in zip(threads, lanes):
            t.join(max(0.0, deadline - time.monotonic()))
            if t.is_alive() and lane.failure is None:
                lane.failure = f"lane did not finish within {join_timeout_s:.0f}s"
        for lane in lanes:
            print(lane.line())
        return lanes

    yield run
    close_all(made)
    stack.close()


def _run_lane(lane: Lane, i: int, url: str | None, tmp_path, keys_file: str, made: list) -> None:
    c = None
    try:
        workdir = tmp_path / f"lane{i}-{lane.kind}-seed{lane.seed}"
        workdir.mkdir()
        if url is None:   # no spare db left on the shared Redis: a redis-server of its own
            server = PrivateRedis(workdir)
            made.append(server)
            url = server.url(0)
        c = ChaosCluster(workdir, url, keys_file, seed=lane.seed, profile="standard",
                         strategy={**STRATEGY, **lane.strategy}, sim=lane.sim)
        made.append(c)
        c.start_worker()
        c.start_maker()
        started = time.monotonic()
        lane.drive(c, lane, started + lane.duration_s)
        c.set_faults()
        check_slow_round(c, lane.label, settle_timeout_s=LONG_MS[1] / 1000 + 60)   # the end: all drained
        lane.seconds = time.monotonic() - started
        record_slow(lane.label, scenarios=lane.scenarios, faults=lane.faults,
                    hedges=len(executed_b_orders(c)), seconds=lane.seconds)
    except BaseException as exc:  # noqa: BLE001 - reported by the test, with the cluster's logs
        lane.failure = (f"{lane.label} seed={lane.seed} after {lane.rounds} rounds: {type(exc).__name__}: {exc}\n"
                        + "".join(traceback.format_exception(exc)[-3:])
                        + (dump_logs(c) if c is not None else ""))
        if c is not None:
            try:
                _count(c, lane)   # what was injected before it failed
                record_slow(lane.label, scenarios=lane.scenarios, faults=lane.faults,
                            hedges=len(executed_b_orders(c)))
            except Exception:
                pass


def assert_lanes(lanes: list[Lane], min_scenarios: dict[str, int]) -> None:
    failures = [lane.failure for lane in lanes if lane.failure]
    by_kind: dict[str, int] = {}
    for lane in lanes:
        by_kind[lane.kind] = by_kind.get(lane.kind, 0) + lane.scenarios
    assert not failures, f"{len(failures)} of {len(lanes)} slow-venue lanes failed:\n\n" + "\n\n".join(failures)
    short = {k: (by_kind.get(k, 0), n) for k, n in min_scenarios.items() if by_kind.get(k, 0) < n}
    assert not short, f"too few scenarios (got, wanted) per kind: {short}"


# ---- counting, from the simulator's own log ------------------------------------------------------

def _count(c: ChaosCluster, lane: Lane) -> None:
    """Scenarios of the lane's kind so far (each a fault the venue injected), set on the lane."""
    counter = COUNTERS[lane.kind]
    counter(c, lane)


def _count_b_late(c: ChaosCluster, lane: Lane) -> None:
    late = late_txs(c, B, answer=lane.params["answer"], tx_types=(HEDGE_TX,))
    lane.scenarios = lane.faults = len(late)
    lane.notes.update(long_late=sum(1 for t in late if t.execute_in_ms >= LONG_MS[0]),
                      max_late_ms=max((t.execute_in_ms for t in late), default=0),
                      b_late_any_answer=len(late_txs(c, B)))


def _count_a_late(c: ChaosCluster, lane: Lane) -> None:
    late = late_txs(c, A)
    lane.scenarios = lane.faults = len(late)
    lane.notes.update(late_orders=sum(1 for t in late if t.tx_type == HEDGE_TX),
                      late_cancels=sum(1 for t in late if t.tx_type == TX_CANCEL),
                      late_cancel_alls=sum(1 for t in late if t.tx_type == TX_CANCEL_ALL),
                      late_after_5xx=sum(1 for t in late if t.answer == "http_5xx_after"),
                      long_late=sum(1 for t in late if t.execute_in_ms >= LONG_MS[0]),
                      max_late_ms=max((t.execute_in_ms for t in late), default=0))


def _count_in_doubt(c: ChaosCluster, lane: Lane) -> None:
    kinds = {k: c.faults_injected(k) for k in ("http_5xx", "http_5xx_after", "timeout")}
    lane.scenarios = lane.faults = sum(kinds.values())
    lane.notes.update({f"faults_{k}": n for k, n in kinds.items()},
                      nonce_lag_ms=lane.sim.get("nonce_lag_ms"), late=len([t for t in taken_txs(c) if t.late]))


def _count_429(c: ChaosCluster, lane: Lane) -> None:
    stats = venue_stats(c)
    venue_429 = sum(int(e.get("http_429", 0)) for per in stats["requests"].values() for e in per.values())
    injected = c.faults_injected("rate_limit")
    lane.notes.update(injected_429=injected, venue_limit_429=venue_429)
    if lane.params.get("mode") == "bursts":
        lane.scenarios = lane.faults = injected
    # "exhaust": scenarios are counted per round by the driver (rounds run at the budget's edge)


def _count_rounds(c: ChaosCluster, lane: Lane) -> None:
    lane.scenarios = lane.rounds


COUNTERS: dict[str, Callable[[ChaosCluster, Lane], None]] = {
    "late_after_ok": _count_b_late, "late_after_timeout": _count_b_late, "late_after_5xx": _count_b_late,
    "late_on_a": _count_a_late, "nonce_lag": _count_in_doubt, "rate_limit_burst": _count_429,
    "speed_bumps": _count_rounds,
}


# ---- driving rounds --------------------------------------------------------------------------------

def _settle_timeout(late_ms: tuple[int, int]) -> float:
    return late_ms[1] / 1000 + 45


def _wait_resting_a(c: ChaosCluster, timeout_s: float) -> dict:
    orders = wait_until(lambda: c.active_orders(), timeout_s, "A's resting order", interval_s=0.05)
    assert len(orders) == 1, f"A has {len(orders)} orders at the venue at once: {orders}"
    return orders[0]


def _fill_spaced(c: ChaosCluster, order: dict, sizes: list[str], rng: random.Random, gap_s: tuple[float, float],
                 on_each: Callable[[], None] | None = None) -> bool:
    """Fill A's order chunk by chunk, `gap_s` apart (fills land while earlier hedges sit in their speed
    bump). False when A's order left the book before its last chunk (see below)."""
    for i, size in enumerate(sizes):
        if i:
            time.sleep(rng.uniform(*gap_s))
        try:
            c.fill(order, [size])
        except AdminCallError as exc:
            # B's hedge of the earlier chunks met A's own order at the touch: self-trade prevention
            # (master-account equality) cancelled A's order, the rest of it will not fill
            if "no active order" not in str(exc):
                raise
            return False
        if on_each is not None:
            on_each()
    return True


def _min_chunks(rng: random.Random, total_units: int, n: int, min_units: int) -> list[str]:
    """`n` chunks of at least `min_units` each (each one orderable on its own), seeded."""
    n = max(1, min(n, total_units // min_units))
    parts = [min_units] * n
    for _ in range(total_units - min_units * n):
        parts[rng.randrange(n)] += 1
    return [str((Decimal(p) * UNIT).quantize(UNIT)) for p in parts]


def _units(order: dict) -> int:
    return int(Decimal(order["remaining_base_amount"]) / UNIT)


def _b_round(c: ChaosCluster, lane: Lane, rng: random.Random, late_ms: tuple[int, int],
             on_filled: Callable[[], None] | None = None) -> None:
    since = last_trade_id(c)
    order = _wait_resting_a(c, 60)
    c.fill(order, split_sizes(rng, _units(order), 3))
    if on_filled is not None:
        on_filled()
    check_slow_round(c, lane.label, since_trade_id=since, settle_timeout_s=_settle_timeout(late_ms))
    lane.rounds += 1


def drive_b_late(c: ChaosCluster, lane: Lane, deadline: float) -> None:
    """B's hedges executed late after the answer `lane.params["answer"]`: first `lane.longs` rounds whose
    hedge is 100-115 s late, then 5-20 s late ones (at `late_rate`) until the deadline."""
    rng = random.Random(lane.seed)
    fault = lane.params["faults"]           # the answer's own fault settings (none for a 200)
    c.set_faults(seed=lane.seed, accounts=[B], **fault["short"], late_rate=lane.params["late_rate"],
                 late_min_ms=SHORT_MS[0], late_max_ms=SHORT_MS[1])
    _b_round(c, lane, rng, SHORT_MS)        # one round first: the worker warm, the budget in use
    for i in range(lane.longs):
        c.set_faults(seed=lane.seed + 100 + i, accounts=[B], **fault["long"], late_rate=1,
                     late_min_ms=LONG_MS[0], late_max_ms=LONG_MS[1])
        before = venue_late_count(c, B)

        def back_to_short(before=before) -> None:
            # as soon as the venue has taken the long-late hedge, later txs are short-late again
            wait_until(lambda: venue_late_count(c, B) > before, HANG_S + 20, "B's long-late hedge taken",
                       interval_s=0.02)
            c.set_faults(seed=lane.seed + 200 + i, accounts=[B], **fault["short"],
                         late_rate=lane.params["late_rate"], late_min_ms=SHORT_MS[0], late_max_ms=SHORT_MS[1])
        _b_round(c, lane, rng, LONG_MS, on_filled=back_to_short)
    while time.monotonic() < deadline:
        _b_round(c, lane, rng, SHORT_MS)
    _count(c, lane)


def drive_a_late(c: ChaosCluster, lane: Lane, deadline: float) -> None:
    """A's orders and cancels (and its cancel-alls, if the maker sends them) taken, then executed late:
    A's order shows on the book seconds later; the maker cancels after maker_order_timeout_s and the
    cancel takes effect late; a fill races a late cancel. Each round: fill whole / part / nothing /
    race the cancel (seeded). The first `lane.longs` rounds make A's next order 100-115 s late."""
    rng = random.Random(lane.seed)
    short = dict(seed=lane.seed, accounts=[A], late_rate=lane.params["late_rate"],
                 http_5xx_after_rate=lane.params["http_5xx_after_rate"], late_min_ms=SHORT_MS[0],
                 late_max_ms=SHORT_MS[1])
    raced = 0
    longs_left = lane.longs
    cancel_wait_s = _settle_timeout(SHORT_MS) + lane.strategy["maker_order_timeout_s"]
    c.set_faults(**short)
    while time.monotonic() < deadline or longs_left:
        since = last_trade_id(c)
        order = _wait_resting_a(c, _settle_timeout(SHORT_MS))
        time.sleep(0.3)   # a second order of A, if any, shows by now
        now_active = c.active_orders()
        assert len(now_active) <= 1, f"A has {len(now_active)} orders at the venue at once: {now_active}"
        if not now_active:   # gone meanwhile (a late cancel or scheduled cancel-all executed): next one
            continue
        units = _units(order)
        if longs_left:
            # filled whole, so A's next tx is its next order: taken now, on the book 100-115 s later
            longs_left -= 1
            before = venue_late_count(c, A)
            c.set_faults(seed=lane.seed + 100 + longs_left, accounts=[A], late_rate=1,
                         late_min_ms=LONG_MS[0], late_max_ms=LONG_MS[1])
            c.fill(order, split_sizes(rng, units, 3))
            wait_until(lambda: venue_late_count(c, A) > before, 60, "A's long-late tx taken", interval_s=0.02)
            c.set_faults(**dict(short, seed=lane.seed + 200 + longs_left))
            check_slow_round(c, lane.label, since_trade_id=since, settle_timeout_s=_settle_timeout(LONG_MS))
            lane.rounds += 1
            continue
        choice = rng.choice(("fill", "fill", "part", "none", "race"))
        if choice == "fill":
            c.fill(order, split_sizes(rng, units, 3))
        elif choice == "part":
            part = rng.randint(units // 4, units * 3 // 4)
            c.fill(order, split_sizes(rng, part, 2))
        if choice in ("part", "none", "race"):
            # the maker cancels at maker_order_timeout_s; the cancel may execute seconds later
            if choice == "race" and _race_late_cancel(c, order, cancel_wait_s):
                raced += 1
            wait_until(lambda: all(o["order_index"] != order["order_index"] for o in c.active_orders()),
                       cancel_wait_s, "A's order cancelled (its cancel executed)", interval_s=0.1)
        check_slow_round(c, lane.label, since_trade_id=since, settle_timeout_s=_settle_timeout(SHORT_MS))
        lane.rounds += 1
    lane.notes["fills_raced_a_late_cancel"] = raced
    _count(c, lane)


def _race_late_cancel(c: ChaosCluster, order: dict, timeout_s: float) -> bool:
    """Once the maker's cancel of `order` is taken but not executed (late), fill what rests: the
    fill lands before the cancel. False when the cancel executed on time."""
    def cancel_taken() -> dict | None:
        for e in reversed(c.orders_log(A)):
            if e["tx_type"] == TX_CANCEL and e["result"] == "accepted" and e["order_index"] == order["order_index"]:
                return e
        if all(o["order_index"] != order["order_index"] for o in c.active_orders()):
            return {"tx_status": "gone"}   # filled, or cancelled by self-trade prevention: nothing to race
        return None
    entry = wait_until(cancel_taken, timeout_s, "the maker's cancel of A's order taken", interval_s=0.05)
    if entry["tx_status"] != "pending":
        return False
    resting = [o for o in c.active_orders() if o["order_index"] == order["order_index"]]
    if not resting:
        return False
    try:
        c.fill(resting[0], [resting[0]["remaining_base_amount"]])
    except AdminCallError:
        return False
    return True


def drive_in_doubt_rounds(c: ChaosCluster, lane: Lane, deadline: float) -> None:
    """Rounds under `lane.params["faults"]` on A and B (answers in doubt, 429 bursts), 1-3 fills an order."""
    rng = random.Random(lane.seed)
    burst_rates = lane.params.get("burst_rates")
    c.set_faults(seed=lane.seed, accounts=[A, B], **lane.params["faults"])
    while time.monotonic() < deadline:
        if burst_rates:   # 429s come in bursts: some rounds hit hard, some not at all
            c.set_faults(seed=lane.seed + lane.rounds, accounts=[A, B], rate_limit_rate=rng.choice(burst_rates))
        # a 429 is waited out with the engine's shared backoff (1 s doubling to 30 s), never failed
        _b_round(c, lane, rng, (75_000, 75_000))
    _count(c, lane)


def drive_budget_exhaustion(c: ChaosCluster, lane: Lane, deadline: float) -> None:
    """The engine's own traffic uses up the Standard budget: each order of A filled in 6-10 chunks,
    each orderable, ~0.4 s apart -- one hedge sendTx each -- round after round. A round counts as a
    scenario when the venue's rolling minute for the L1 address reached `lane.params["edge"]`."""
    rng = random.Random(lane.seed)
    edge = lane.params["edge"]
    at_edge = peak = 0
    while time.monotonic() < deadline:
        since = last_trade_id(c)
        order = _wait_resting_a(c, 90)
        sizes = _min_chunks(rng, _units(order), rng.randint(6, 10), 50)
        used = [l1_budget_used(c)]
        if not _fill_spaced(c, order, sizes, rng, (0.3, 0.5), on_each=lambda: used.append(l1_budget_used(c))):
            lane.notes["a_orders_cut_by_self_trade"] = lane.notes.get("a_orders_cut_by_self_trade", 0) + 1
        check_slow_round(c, lane.label, since_trade_id=since, settle_timeout_s=90)
        used.append(l1_budget_used(c))
        peak = max(peak, *used)
        lane.rounds += 1
        if max(used) >= edge:
            at_edge += 1
    lane.scenarios = at_edge
    lane.notes.update(rounds_at_budget_edge=at_edge, peak_budget_used=peak)
    _count(c, lane)


def drive_speed_bumps(c: ChaosCluster, lane: Lane, deadline: float) -> None:
    """No injected fault: Standard's speed bumps alone. Each order of A filled in 2-5 chunks, 0-0.4 s
    apart, so fills land while earlier hedges wait out their 300 ms and A's next order its 200 ms."""
    rng = random.Random(lane.seed)
    while time.monotonic() < deadline:
        since = last_trade_id(c)
        order = _wait_resting_a(c, 60)
        units = _units(order)
        n = rng.randint(2, 5)
        sizes = split_sizes(rng, units, n) if rng.random() < 0.3 else _min_chunks(rng, units, n, 50)
        if not _fill_spaced(c, order, sizes, rng, (0.0, 0.4)):
            lane.notes["a_orders_cut_by_self_trade"] = lane.notes.get("a_orders_cut_by_self_trade", 0) + 1
        check_slow_round(c, lane.label, since_trade_id=since, settle_timeout_s=60)
        lane.rounds += 1
    _count(c, lane)


# ---- the tests -------------------------------------------------------------------------------------

def b_late_lanes(kind: str, seed: int, answer: str, faults: dict, late_rate: float) -> list[Lane]:
    """Two clusters per late kind on B: one starts with the long-late hedge(s), one only short-late."""
    params = dict(answer=answer, faults=faults, late_rate=late_rate)
    return [Lane(kind, seed, drive_b_late, rounds(140, 900), params=params, longs=rounds(1, 3)),
            Lane(kind, seed + 1, drive_b_late, rounds(140, 900), params=params, longs=0)]


def in_doubt_lanes() -> list[Lane]:
    """nonce_lag: nextNonce 2 s and 5 s behind, answers in doubt on A and B that were lost (5xx
    before applying, timeouts never applied) or taken (5xx after applying); rate_limit_burst: 429
    bursts on both accounts, and the Standard budget used up by the engine's own hedges;
    speed_bumps: plain Standard rounds, many partial fills."""
    duration = rounds(80, 600)
    in_doubt = {"http_5xx_rate": 0.15, "timeout_rate": 0.15, "timeout_mode": "never", "timeout_s": 1.0,
                "http_5xx_after_rate": 0.1}
    return [
        Lane("nonce_lag", 5101, drive_in_doubt_rounds, duration, sim={"nonce_lag_ms": 2000},
             params={"faults": in_doubt}),
        Lane("nonce_lag", 5102, drive_in_doubt_rounds, duration, sim={"nonce_lag_ms": 5000},
             params={"faults": in_doubt}),
        Lane("rate_limit_burst", 5201, drive_in_doubt_rounds, duration,
             params={"faults": {"rate_limit_rate": 0.5}, "burst_rates": (0, 0.4, 0.6), "mode": "bursts"}),
        Lane("rate_limit_burst", 5202, drive_budget_exhaustion, duration, params={"edge": 50, "mode": "exhaust"}),
        Lane("speed_bumps", 5301, drive_speed_bumps, duration),
    ]


def late_lanes() -> list[Lane]:
    """Txs taken, then executed 5 s .. 2 min late: B's hedge after a 200, after the engine's own send
    timeout (taken before the hang), after a 5xx; A's orders and cancels."""
    return [
        *b_late_lanes("late_after_ok", 6101, "ok", {"short": {}, "long": {}}, late_rate=0.5),
        *b_late_lanes("late_after_timeout", 6201, "timeout",
                      {"short": {"timeout_rate": 0.5, "timeout_mode": "before", "timeout_s": HANG_S},
                       "long": {"timeout_rate": 1, "timeout_mode": "before", "timeout_s": HANG_S}}, late_rate=0.7),
        *b_late_lanes("late_after_5xx", 6301, "http_5xx_after",
                      {"short": {"http_5xx_after_rate": 0.5}, "long": {"http_5xx_after_rate": 1}}, late_rate=0.7),
        Lane("late_on_a", 6401, drive_a_late, rounds(140, 900), strategy={"maker_order_timeout_s": 4},
             params={"late_rate": 0.5, "http_5xx_after_rate": 0.15}, longs=rounds(1, 3)),
        Lane("late_on_a", 6402, drive_a_late, rounds(140, 900), strategy={"maker_order_timeout_s": 4},
             params={"late_rate": 0.5, "http_5xx_after_rate": 0.15}, longs=0),
    ]


@pytest.mark.timeout(540)
def test_slow_venue_late_execution_nonce_lag_429_bursts_and_speed_bumps_on_a_and_b(run_lanes):
    """Every slow-venue kind at once, each lane on a Standard-tier cluster of its own (13 clusters:
    the lanes wait on speed bumps, late executions and the request budget, not on the CPU). A hedge
    executed late must be counted once, never voided and sent again (B hedged twice)."""
    lanes = in_doubt_lanes() + late_lanes()
    run_lanes(lanes, join_timeout_s=rounds(140, 900) + 280)
    assert_lanes(lanes, {"nonce_lag": 10, "rate_limit_burst": 10, "speed_bumps": 8, "late_after_ok": 6,
                         "late_after_timeout": 4, "late_after_5xx": 6, "late_on_a": 6})
