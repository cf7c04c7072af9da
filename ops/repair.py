"""`lighter-hedge repair MARKET`: rebuild a market's ledger from the venue.

The venue is the truth about what A and B hold; the ledger is our count of how we got there. When
the two disagree for a reason the ledger cannot explain (a forged fill counted, Redis wiped, a bug),
repair sets the ledger to what the venue implies:

    a_filled := A's position (venue units, signed)
    hedged   := -(B's position), in A's direction          so unhedged = A + B at the venue

It refuses unless the market is paused and nothing is in flight on it (no hedge task, no open leg,
no order of A written ahead or resting): then neither position can move while it reads and writes.
The write is one Lua script that first checks the ledger still equals what was read before the
venue was asked (Store.repair_ledger), so a fill or leg that slipped in makes it write nothing.

Fill dedupe is kept, never rebuilt: every fill record stays (a forged id is harmless there, and a
real one forgotten would be counted twice if the stream replayed it), and A's recent trades on the
market that the record does not know (Redis lost them, or the stream has not delivered them yet) are
marked counted without being added: the position already has them. These are the trades the
stream's REST backfill could replay (its last 100 trades of A, any market, are among the market's
last 100). Older trades are below the stream's history cutoff or never re-read.

A's trades are read before and after the positions; the positions are used only if both reads list
the same trades (no trade of A happened in between, so the position has exactly those).

Reads go through the request budget as process `cli` (READ). Nothing is signed or sent: only A's
auth token is made, for its trades and orders.
"""
from __future__ import annotations

import asyncio
import logging
import sys
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

import aiohttp
import click
import lighter

from hedge.config import Config, ConfigError, MarketConfig
from hedge.fill import Fill, InvalidFill, fill_from_trade
from hedge.money import AmountError, MarketSpec
from ops.logs import FORMAT
from ops.status import CLI_PROCESS
from tasks.store import LedgerSnapshot, Store, now_ms
from venue import log_filters
from venue.budget import budget_from_config
from venue.client import VenueClient
from venue.keys import private_key

log = logging.getLogger("ops.repair")

TRADES_READ = 100     # as the stream's backfill reads them (maker/app.py)
STABLE_ATTEMPTS = 3   # positions read between two equal trade lists, tried this often


class RepairRefused(Exception):
    """The market is not in a state to repair (exit 2); nothing was written."""


class RepairFailed(Exception):
    """The venue or the ledger moved while repair read them (exit 1); nothing was written."""


@dataclass(frozen=True)
class VenueView:
    a_position: Decimal
    b_position: Decimal
    a_trades: tuple[Fill, ...]   # A's recent fills on the market, as the stream would deliver them


@dataclass(frozen=True)
class RepairPlan:
    market: str
    spec: MarketSpec
    before: LedgerSnapshot
    venue: VenueView
    a_filled: int                 # venue units
    hedged: int
    stale_legs: tuple[int, ...]   # pending-set members already closed (or without a record)
    remark: tuple[Fill, ...]      # recent fills of A the record does not know: marked counted

    @property
    def unhedged(self) -> int:
        return self.a_filled - self.hedged

    @property
    def changes(self) -> bool:
        return (self.a_filled, self.hedged) != (self.before.a_filled, self.before.hedged) \
            or bool(self.stale_legs) or bool(self.remark)

    def base(self, units: int) -> str:
        value = self.spec.base_from_int(units)
        return "0" if value == 0 else str(value)

    def diff_lines(self) -> list[str]:
        b, v = self.before, self.venue
        rows = [
            ("a_filled", self.base(b.a_filled), self.base(self.a_filled), f"A's position {_num(v.a_position)}"),
            ("hedged", self.base(b.hedged), self.base(self.hedged), f"-(B's position {_num(v.b_position)})"),
            ("unhedged", self.base(b.unhedged), self.base(self.unhedged), "A+B at the venue"),
            ("pending_legs", str(len(b.pending)), str(len(b.pending) - len(self.stale_legs)),
             f"closed legs cleared: {','.join(map(str, self.stale_legs))}" if self.stale_legs else "none open"),
            ("fills_known", str(b.fills), str(b.fills + len(self.remark)),
             f"{len(self.remark)} recent trade(s) of A marked counted, none forgotten"),
        ]
        width = max(len(r[i]) for r in rows for i in (1, 2))
        return [f"  {name:<12} {now:>{width}} -> {after:<{width}}  {'unchanged ' if now == after else ''}({why})"
                for name, now, after, why in rows]

    def summary(self, which: str) -> dict[str, Any]:
        """The ledger before or after, in venue units (the log line and the event)."""
        if which == "before":
            return {"a_filled": self.before.a_filled, "hedged": self.before.hedged,
                    "unhedged": self.before.unhedged, "pending_legs": len(self.before.pending),
                    "fills": self.before.fills}
        return {"a_filled": self.a_filled, "hedged": self.hedged, "unhedged": self.unhedged,
                "pending_legs": len(self.before.pending) - len(self.stale_legs),
                "fills": self.before.fills + len(self.remark)}


def refusal(symbol: str, snap: LedgerSnapshot) -> str | None:
    """Why the ledger cannot be repaired now (one line naming what to do), or None."""
    if not snap.paused:
        return (f"repair: market={symbol} is not paused; `lighter-hedge pause --market {symbol}` first "
                f"(repair rewrites the ledger the maker and worker trade on)")
    if snap.inflight:
        return (f"repair: market={symbol} has {len(snap.inflight)} hedge(s) in flight "
                f"({', '.join(sorted(snap.inflight))}); wait for them (`lighter-hedge status`), then repair")
    if snap.open_legs:
        legs = ", ".join(f"{leg.leg}({leg.state.value})" for leg in snap.open_legs)
        return (f"repair: market={symbol} has hedge leg(s) {legs} open at the venue; wait until the worker "
                f"resolves them (`lighter-hedge status` shows legs_in_doubt=0), then repair")
    if snap.maker_order:
        return (f"repair: market={symbol} has an order of A written ahead and not yet resolved; wait for the "
                f"maker to resolve it (`lighter-hedge status`), then repair")
    return None


async def plan_repair(cfg: Config, store: Store, symbol: str) -> RepairPlan:
    """The ledger the venue implies for `symbol`. RepairRefused / RepairFailed say why not."""
    market = cfg.market(symbol)
    before = store.ledger_snapshot(symbol)
    if (why := refusal(symbol, before)) is not None:
        raise RepairRefused(why)
    budget = budget_from_config(cfg, store.r)
    a = await VenueClient.open(cfg.base_url, cfg.account_a, private_key(cfg, cfg.account_a), chain_id=cfg.chain_id,
                               budget=budget, process=CLI_PROCESS)
    try:
        spec = await a.market_spec(market.market_index)
        resting = await a.active_orders(market.market_index)
        if resting:
            raise RepairRefused(f"repair: market={symbol}: A has {len(resting)} order(s) resting at the venue; the "
                                f"maker cancels them once paused - wait, check `lighter-hedge status`, then repair")
        venue = await _stable_view(cfg, a, market)
    finally:
        await a.close()
    known = store.known_fill_ids(symbol, [f.fill_id for f in venue.a_trades])
    return RepairPlan(
        market=symbol, spec=spec, before=before, venue=venue,
        a_filled=spec.base_to_int(venue.a_position), hedged=-spec.base_to_int(venue.b_position),
        stale_legs=tuple(before.stale_legs), remark=tuple(f for f in venue.a_trades if f.fill_id not in known))


async def _stable_view(cfg: Config, a: VenueClient, market: MarketConfig) -> VenueView:
    mi = market.market_index
    for _ in range(STABLE_ATTEMPTS):
        first = await a.trades(mi, TRADES_READ)
        a_position = (await a.positions()).get(mi, Decimal(0))
        b_position = (await a.positions(cfg.account_b.account_index)).get(mi, Decimal(0))
        second = await a.trades(mi, TRADES_READ)
        if [t["trade_id"] for t in first] == [t["trade_id"] for t in second]:
            return VenueView(a_position, b_position, tuple(_fills(second, cfg.account_a.account_index, mi)))
    raise RepairFailed(f"repair: market={market.symbol}: A kept trading while repair read the venue "
                       f"({STABLE_ATTEMPTS} tries); is the market paused and the maker's order cancelled? "
                       f"Nothing written")


def _fills(trades: list[dict[str, Any]], account_index: int, market_index: int) -> list[Fill]:
    seen_ms = now_ms()
    fills = []
    for trade in trades:
        try:
            fill = fill_from_trade(trade, account_index, ts_seen_ms=seen_ms)
        except InvalidFill as exc:   # the stream refuses it too: nothing it could replay
            log.warning("event=repair.bad_trade trade_id=%s error=%s", trade.get("trade_id"), exc)
            continue
        if fill is not None and fill.market_index == market_index:
            fills.append(fill)
    return fills


def apply_repair(store: Store, plan: RepairPlan) -> None:
    """Write the plan atomically (only onto the ledger it was planned from), then log and publish."""
    why = store.repair_ledger(plan.market, plan.before, plan.a_filled, plan.hedged, list(plan.stale_legs),
                              [f.to_message() for f in plan.remark])
    if why == "not paused":
        raise RepairRefused(f"repair: market={plan.market} was resumed meanwhile; nothing written - pause it "
                            f"and run repair again")
    if why is not None:
        raise RepairFailed(f"repair: the ledger of {plan.market} changed while repair read the venue ({why}: a "
                           f"fill, a hedge or an order of A); nothing written - run repair again")
    before, after = plan.summary("before"), plan.summary("after")
    log.warning("event=ledger.repaired market=%s before=%s after=%s a_position=%s b_position=%s stale_legs=%s "
                "remarked_fills=%s", plan.market, _kv(before), _kv(after), _num(plan.venue.a_position),
                _num(plan.venue.b_position), ",".join(map(str, plan.stale_legs)) or "-",
                ",".join(f.fill_id for f in plan.remark) or "-")
    store.publish_event({"event": "ledger.repaired", "market": plan.market, "before": before, "after": after,
                         "a_position": plan.venue.a_position, "b_position": plan.venue.b_position,
                         "stale_legs": list(plan.stale_legs), "remarked_fills": [f.fill_id for f in plan.remark],
                         "ts_ms": now_ms()})


def run_repair(cfg: Config, store: Store, symbol: str, yes: bool) -> int:
    """The command: plan, show the diff, ask, write. Returns the exit code."""
    _log_to_stderr()
    try:
        plan = asyncio.run(plan_repair(cfg, store, symbol))
        if not plan.changes:
            click.echo(f"market={symbol} ledger already matches the venue (unhedged={plan.base(plan.unhedged)} "
                       f"= A+B): nothing to repair")
            return 0
        click.echo(f"market={symbol} ledger now -> venue implies ({symbol}, base units):")
        for line in plan.diff_lines():
            click.echo(line)
        if not yes:
            click.confirm(f"Write this ledger for {symbol} (the market stays paused)?", abort=True)
            # The operator approved this diff: write it only if a fresh read still gives it.
            fresh = asyncio.run(plan_repair(cfg, store, symbol))
            if _key(fresh) != _key(plan):
                raise RepairFailed(f"repair: the venue or the ledger of {symbol} changed while the diff was "
                                   f"shown; nothing written - run repair again")
            plan = fresh
        apply_repair(store, plan)
    except RepairRefused as exc:
        click.echo(str(exc), err=True)
        return 2
    except RepairFailed as exc:
        click.echo(str(exc), err=True)
        return 1
    except ConfigError as exc:
        click.echo(f"config error: {exc}", err=True)
        return 2
    except AmountError as exc:   # a position finer than the market's size step: not ours to round
        click.echo(f"venue error: repair of {symbol}: {exc}; nothing written", err=True)
        return 1
    except (lighter.ApiException, aiohttp.ClientError, ConnectionError, LookupError, asyncio.TimeoutError) as exc:
        click.echo(f"venue error: repair of {symbol} read nothing usable from {cfg.base_url} "
                   f"({type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}); nothing written",
                   err=True)
        return 1
    click.echo(f"market={symbol} ledger repaired: unhedged={plan.base(plan.unhedged)} (A+B at the venue)")
    if plan.unhedged:
        click.echo(f"  {plan.base(plan.unhedged)} is unhedged at the venue: the next hedge on {symbol} covers it "
                   f"(a maker start hedges it at once)")
    failed = store.failed(symbol)
    if failed:
        click.echo(f"  {len(failed)} failed hedge(s) remain ({', '.join(sorted(failed))}): `lighter-hedge requeue "
                   f"--all-failed` (each hedges only what A+B leaves) before resume")
    click.echo(f"market={symbol} still paused: `lighter-hedge resume --market {symbol}` to trade again")
    return 0


def _key(plan: RepairPlan) -> tuple:
    """What the operator saw and approved."""
    return (plan.before, plan.a_filled, plan.hedged, plan.stale_legs, tuple(f.fill_id for f in plan.remark))


def _log_to_stderr() -> None:
    """The event line goes to stderr in the deployment's log format (the CLI sets up no logging)."""
    if not log.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(FORMAT))
        log_filters.install(handler)
        log.addHandler(handler)
        log.setLevel(logging.INFO)
        log.propagate = False


def _kv(values: dict[str, Any]) -> str:
    return ",".join(f"{k}:{v}" for k, v in values.items())


def _num(value: Decimal) -> str:
    return "0" if value == 0 else str(value)

