"""The maker process: one A client, one account stream, one quote loop per market."""
from __future__ import annotations

import asyncio
import json
import logging
import signal
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal

import redis.asyncio as aioredis

from hedge.accounts import same_master_problem
from hedge.budget import Priority
from hedge.config import Config, ConfigError
from hedge.fill import Fill
from hedge.flatten import FLATTEN_A_EVENT, FlattenError
from hedge.money import AmountError
from hedge.plan import quote_size_problem
from maker.dead_man import run_dead_man
from maker.hedges import HedgeDispatcher
from maker.market_loop import MarketLoop
from tasks import memtrace, metrics
from tasks.flatten_task import request_body, verify_request
from tasks.key_lease import KeyLeaseHolder
from tasks.retention import LedgerRetention, run_retention
from tasks.signing import MessageSigner, UnauthenticatedMessage
from tasks.store import Store, control_channel
from venue import errors
from venue.budget import budget_from_config
from venue.client import VenueClient
from venue.feed import VenueFeed
from venue.keys import private_key, task_signing_key
from venue.stream import AccountStream

log = logging.getLogger("maker.app")
GENERATION_CHECK_S = 1.0      # one Redis GET a second; no venue request
STOP_CANCEL_TIMEOUT_S = 15.0   # supervisord waits 30 s (stopwaitsecs) before it kills
STOP_NONCE_RETRIES = 2        # cancel-alls after the first one refused for its nonce (see _stop)
IO_THREADS = 4                # the default executor: Redis checks, retention, Celery's inspect


def _start_io_threads(loop: asyncio.AbstractEventLoop) -> ThreadPoolExecutor:
    """A fixed default executor whose threads all start now. asyncio's own starts threads lazily, up to
    six, the first time that many calls overlap: each new thread gets a glibc malloc arena of its own,
    so the maker's memory stepped up by about 0.4 MB well into a run (seen in `bench soak`)."""
    executor = ThreadPoolExecutor(max_workers=IO_THREADS, thread_name_prefix="maker-io")
    barrier = threading.Barrier(IO_THREADS)
    for started in [executor.submit(barrier.wait, 5.0) for _ in range(IO_THREADS)]:
        started.result()
    loop.set_default_executor(executor)
    return executor


async def run_maker(cfg: Config, symbols: list[str]) -> None:
    _start_io_threads(asyncio.get_running_loop())
    store = Store.from_url(cfg.redis_url)
    # The only sender on A's key (tasks/key_lease.py): a flatten holding it (no maker ran) is waited for.
    a_lease = KeyLeaseHolder(store, cfg.account_a, "maker")
    await asyncio.to_thread(a_lease.take_waiting, ("maker",))
    a_lease.start_renewing()
    # One request budget with the worker and the CLI (Lighter counts A and B together).
    budget = budget_from_config(cfg, store.r)
    client = await VenueClient.open(cfg.base_url, cfg.account_a, private_key(cfg, cfg.account_a),
                                    chain_id=cfg.chain_id, budget=budget, process="maker")
    client.order_expiry_s = cfg.strategy.order_expiry_s
    # The ledger generation this maker works in: if Redis loses its data, the ledger scripts refuse
    # its writes (LedgerLostError) and the maker exits, to start over with the reconcile at start.
    store.expected_generation = store.ensure_generation()
    dispatcher = HedgeDispatcher(store, MessageSigner(task_signing_key(cfg)))
    loops: dict[int, MarketLoop] = {}
    resumed: dict[str, asyncio.Event] = {}
    # A's positions from account_all's snapshot and position frames, with when they arrived.
    a_positions: dict[int, tuple[Decimal, float]] = {}

    def on_positions(positions: dict[int, Decimal]) -> None:
        now_s = time.monotonic()
        a_positions.update({market: (value, now_s) for market, value in positions.items()})

    def on_order(view) -> None:
        if view.market_index in loops:
            loops[view.market_index].on_order(view)

    try:
        if cfg.mode == "live":  # B's self-trade prevention (master equality) protects A only under one master
            problem = same_master_problem(await client.account_identity(cfg.account_a.account_index),
                                          await client.account_identity(cfg.account_b.account_index))
            if problem:
                raise ConfigError(problem)
        for symbol in symbols:
            market = cfg.market(symbol)
            spec = await client.market_spec(market.market_index)
            if spec.symbol != symbol:
                log.warning("event=maker.symbol_mismatch config=%s venue=%s market_index=%d",
                            symbol, spec.symbol, market.market_index)
            try:   # a size finer than the market's step would be refused (or rounded) by the venue
                spec.base_to_int(market.quantity)
            except AmountError as exc:
                raise ConfigError(f"markets.{symbol}.quantity: {exc}") from None
            # Refuse a quantity the venue would refuse (21706) at today's price, rather than pause later.
            bids, asks = await client.book_prices(market.market_index, limit=1)
            touch = bids[0] if bids else asks[0] if asks else None  # A opens with a buy
            if touch is not None and (problem := quote_size_problem(market.quantity, touch, spec,
                                                                     f"markets.{symbol}.quantity")):
                raise ConfigError(problem)
            resumed[symbol] = asyncio.Event()
            loops[market.market_index] = MarketLoop(
                cfg, market, spec, client, _b_position(client, cfg.account_b.account_index, market.market_index),
                store, dispatcher, resumed[symbol], feed=None, a_positions=a_positions)
        # A's order states and the books from WebSockets: no REST polling (Lighter's budget).
        feed = VenueFeed(cfg.ws_url, cfg.account_a.account_index, client.auth_token,
                         book_markets=list(loops), on_order=on_order)
        for loop in loops.values():
            loop.feed = feed

        async def on_fill(fill: Fill) -> None:
            loops[fill.market_index].on_fill(fill)

        async def on_fills(fills: list[Fill]) -> None:
            by_market: dict[int, list[Fill]] = {}
            for fill in fills:
                by_market.setdefault(fill.market_index, []).append(fill)
            for market_index, group in by_market.items():
                loops[market_index].on_fills(group)

        def on_connect(connects: int) -> None:
            if connects > 1:
                metrics.STREAM_RECONNECTS.labels(str(cfg.account_a.account_index)).inc()

        async def on_cutoff(trade_id: int) -> None:
            store.set_cutoff(cfg.account_a.account_index, trade_id)

        async def on_reconnect() -> None:
            for loop in loops.values():
                loop.request_reconcile()

        # REST backfill only after a reconnect and when a reconcile finds a gap (no periodic
        # backfill: `trades` weighs 600 and is capped at 40 a minute on every tier).
        stream = AccountStream(cfg.ws_url, cfg.account_a.account_index, on_fill,
                               backfill=lambda: client.trades(None, 100), markets=set(loops),
                               history_cutoff_trade_id=store.cutoff(cfg.account_a.account_index),
                               on_cutoff=on_cutoff, on_reconnect=on_reconnect, on_fills=on_fills,
                               on_connect=on_connect, backfill_interval_s=None,
                               on_positions=on_positions, token=client.auth_token)
        for loop in loops.values():
            loop.backfill_now = stream.backfill_now
            loop.stream_connected = stream.connected
        metrics.serve(cfg.metrics.maker_port, cfg.metrics.host, "maker")
        metrics.watch_budget(budget, "maker")
        flatten_auth = MessageSigner(task_signing_key(cfg))
        flattens: set[asyncio.Task] = set()

        def on_flatten(event: dict) -> None:
            """`lighter-hedge flatten` asks this maker, the only sender on A's key, to close A."""
            task = asyncio.create_task(_flatten_a(store, flatten_auth, loops, event), name="flatten")
            flattens.add(task)
            task.add_done_callback(flattens.discard)

        log.info("event=maker.start markets=%s account=%d mode=%s", ",".join(symbols),
                 cfg.account_a.account_index, cfg.mode)
        jobs = [asyncio.create_task(stream.run(), name="stream"), asyncio.create_task(feed.run(), name="feed"),
                asyncio.create_task(_control_listener(cfg.redis_url, resumed, loops, on_flatten), name="control")]
        jobs += [asyncio.create_task(loop.run(stream.connected), name=f"loop-{loop.symbol}")
                 for loop in loops.values()]
        # The ledger's history out of Redis (config ledger:), off the event loop.
        jobs.append(asyncio.create_task(run_retention(LedgerRetention(store, list(symbols), cfg.ledger),
                                                      cfg.ledger.prune_interval_s), name="retention"))

        def not_alive() -> str | None:
            """The dead-man re-arms only while every job of this maker runs and the worker beats."""
            ended = [job.get_name() for job in jobs if job.done()]
            if ended:
                return f"maker_task_ended:{ended[0]}"
            return None if store.worker_alive() else "worker_heartbeat_expired"
        jobs.append(asyncio.create_task(run_dead_man(client, cfg.strategy.dead_man_s, not_alive), name="dead_man"))
        jobs.append(asyncio.create_task(_watch_generation(store), name="generation"))
        stop = asyncio.Event()
        for sig in (signal.SIGTERM, signal.SIGINT):   # supervisorctl stop, lighter-hedge down, Ctrl-C
            asyncio.get_running_loop().add_signal_handler(sig, stop.set)
        memtrace.install(asyncio.get_running_loop())   # SIGUSR2: gc, give freed memory back, log RSS
        stopping = asyncio.create_task(stop.wait(), name="stop")
        pending: set[asyncio.Task] = {*jobs, stopping}
        try:
            while True:
                done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
                if stopping in done:
                    break
                for job in done:
                    job.result()  # re-raise: supervisord restarts a maker that died, and the log says why
        finally:
            stopping.cancel()
            await _stop(client, jobs)   # stopped or died: nothing of A rests behind it
    finally:
        dispatcher.close()
        await client.close()
        a_lease.release()


async def _stop(client: VenueClient, jobs: list[asyncio.Task]) -> None:
    """A stop leaves nothing of A resting: the quote loops end first (nothing new is placed), then
    one cancel-all of A. The dead-man's switch is the backstop when this cannot reach the venue."""
    log.info("event=maker.stopping account=%d", client.account_index)
    for job in jobs:
        job.cancel()
    await asyncio.gather(*jobs, return_exceptions=True)
    try:
        async with asyncio.timeout(STOP_CANCEL_TIMEOUT_S):
            outcome = await client.cancel_all_now()
            for _ in range(STOP_NONCE_RETRIES):
                # A quote loop cancelled between taking a nonce and sending its tx leaves the key's
                # local nonce ahead of the venue's: read it again and cancel once more.
                if outcome.code != errors.INVALID_NONCE:
                    break
                log.warning("event=maker.stop_cancel_nonce account=%d %s (nonce read again; cancelling again)",
                            client.account_index, outcome.describe())
                await client.resync_nonce(Priority.QUOTE)
                outcome = await client.cancel_all_now()
    except Exception as exc:  # noqa: BLE001 - said, and the dead-man's deadline still stands
        log.error("event=maker.stop_cancel_failed account=%d error=%s (the dead-man's switch cancels A's orders "
                  "by its deadline)", client.account_index, f"{type(exc).__name__}: {exc}")
        return
    log.info("event=maker.stopped account=%d cancel_all=%s", client.account_index, outcome.describe())


async def _watch_generation(store: Store) -> None:
    """Ends the maker (LedgerLostError) within a second of Redis losing the ledger, even while an
    order rests and no fill comes: supervisord restarts it, and its reconcile at start measures A+B."""
    while True:
        await asyncio.to_thread(store.check_generation)
        await asyncio.sleep(GENERATION_CHECK_S)


def _b_position(client: VenueClient, b_account: int, market_index: int):
    async def read() -> Decimal:
        return (await client.positions(b_account)).get(market_index, Decimal(0))
    return read


async def _flatten_a(store: Store, signer: MessageSigner, loops: dict[int, MarketLoop], event: dict) -> None:
    """A flatten request from the control channel: close A on one market (MarketLoop.flatten) and
    answer in Redis (the CLI waits there), by the request's deadline."""
    request_id, market = str(event.get("request_id") or ""), str(event.get("market") or "")
    loop = next((loop for loop in loops.values() if loop.symbol == market), None)
    try:
        deadline_ms = int(event.get("deadline_ms") or 0)
        verify_request(signer, request_body("A", market, request_id, deadline_ms), event.get("auth"))
        if loop is None:
            raise FlattenError(f"this maker does not trade {market}")
        left_s = deadline_ms / 1000 - time.time()
        if left_s <= 0:
            raise FlattenError("the request's deadline passed before the maker got to it")
        log.info("event=maker.flatten_start market=%s request_id=%s", market, request_id)
        try:
            reply = (await asyncio.wait_for(loop.flatten(request_id), left_s)).to_message()
        except asyncio.TimeoutError:
            raise FlattenError(f"A's close on {market} did not finish by the deadline (quote loop state "
                               f"{loop.state})") from None
    except (FlattenError, UnauthenticatedMessage, TypeError, ValueError) as exc:
        log.warning("event=maker.flatten_refused market=%s request_id=%s reason=%s", market, request_id, exc)
        reply = {"error": str(exc)}
    except Exception as exc:  # noqa: BLE001 - a venue or Redis error: told to the CLI; the maker goes on
        log.error("event=maker.flatten_failed market=%s request_id=%s error=%s", market, request_id,
                  f"{type(exc).__name__}: {exc}"[:500])
        reply = {"error": f"{type(exc).__name__}: {exc}"}
    if request_id:
        store.put_flatten_reply(request_id, reply)


async def _control_listener(redis_url: str, resumed: dict[str, asyncio.Event],
                            loops: dict[int, MarketLoop], on_flatten=None) -> None:
    """pause/resume publish on the control channel: act on them at once, not at the next round.
    A flatten request goes to `on_flatten` (it runs beside the listener)."""
    by_symbol = {loop.symbol: loop for loop in loops.values()}
    r = aioredis.Redis.from_url(redis_url, decode_responses=True)
    async with r.pubsub() as pubsub:
        await pubsub.subscribe(control_channel(int(r.connection_pool.connection_kwargs.get("db") or 0)))
        async for message in pubsub.listen():
            if message.get("type") != "message":
                continue
            try:
                event = json.loads(message["data"])
            except ValueError:
                log.error("event=control.bad_message data=%r", message.get("data"))
                continue
            market = event.get("market")
            if event.get("event") == "resumed" and market in resumed:
                resumed[market].set()
            elif event.get("event") == "paused" and market in by_symbol:
                by_symbol[market].on_paused()
            elif event.get("event") == FLATTEN_A_EVENT and on_flatten is not None:
                on_flatten(event)
