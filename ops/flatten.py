"""`lighter-hedge flatten`: cancel A's orders and close A and B with reduce-only market orders.

One sender per key (tasks/key_lease.py): Lighter's nonces are per API key and sequential, so this
command never signs beside the process that holds a key. Who sends is read from the keys' leases:

- A's key held by the maker: the maker is asked over the control channel (hedge.flatten,
  MarketLoop.flatten) and answers in Redis. Its close of A reaches its account stream like any
  fill and is hedged on B by the worker.
- B's key held by the worker: B's close is the task tasks.flatten_b on hedge.b, run by the worker
  between hedges with its own client (tasks/flatten_task.py).
- A key nobody holds: this command takes its lease (a maker or worker starting meanwhile waits)
  and sends itself. A's close is then recorded as A's fill here, B's close covers it.
- The maker runs but no worker does: refused before anything changes (A's close could not be
  hedged). Hedges in flight and no worker to finish them: refused too.

The market is paused first and in-flight hedges finish before B is closed. B's close is a ledger
leg written ahead with its nonce like a hedge, so A+B, the ledger and the venue agree afterwards,
and a close left in doubt is resolved like any hedge leg.

Its own requests count in the request budget A and B share, as process `cli`: the closes as HEDGE
(market orders that take exposure off), the cancels as QUOTE, the reads as READ.
"""
from __future__ import annotations

import asyncio
import json
import logging
import secrets
import time
from dataclasses import dataclass
from decimal import Decimal

import celery.exceptions

from hedge.config import Config, ConfigError
from hedge.fill import BUY, SELL, Fill, signed
from hedge.flatten import FLATTEN_A_EVENT, CloseResult, FlattenError
from hedge.plan import MAX_CLIENT_ORDER_INDEX, worst_price_int
from ops.status import CLI_PROCESS
from tasks.key_lease import KeyBusy, KeyLeaseHolder
from tasks.store import Store, now_ms
from venue.budget import RequestBudget, budget_from_config
from venue.client import VenueClient, fill_trades_of_order, public_positions
from venue.keys import private_key, task_signing_key

log = logging.getLogger("ops.flatten")
SETTLE_TIMEOUT_S = 60.0
REPLY_TIMEOUT_S = 30.0   # the maker's close of A, the worker's close of B: seconds when all is well
CLOSE_MARGIN_S = 15.0    # a close started just before its deadline still finishes (and is heard) inside this


@dataclass(frozen=True)
class Route:
    """Who sends on each key for this flatten: A's "maker" or "cli", B's "worker" or "cli"."""

    a: str
    b: str


def confirm_question(cfg: Config, symbols: list[str]) -> str:
    """What `lighter-hedge flatten` and the console's Flatten ask before anything is sent."""
    return (f"Close every position of accounts {cfg.account_a.account_index} and {cfg.account_b.account_index} "
            f"on {', '.join(symbols)} ({cfg.mode} mode) with market orders, and pause?")


def choose_route(cfg: Config, store: Store) -> Route:
    """From the keys' leases; FlattenError (nothing changed) when no safe route exists."""
    a = store.key_lease(cfg.account_a.account_index, cfg.account_a.api_key_index)
    b = store.key_lease(cfg.account_b.account_index, cfg.account_b.api_key_index)
    for account, lease, owner in ((cfg.account_a, a, "maker"), (cfg.account_b, b, "worker")):
        if lease is not None and lease.role != owner:
            raise FlattenError(f"{account.name}'s key {account.account_index}:{account.api_key_index} is held by "
                               f"{lease.role} ({lease.owner}): another flatten runs; wait for it to finish")
    if a is not None and b is None:
        raise FlattenError("the maker runs but no hedge worker does (B's key has no lease): A's close could not be "
                           "hedged. Start the worker (`supervisorctl start worker`), or stop the maker too to "
                           "flatten with the keys directly; nothing was changed")
    return Route("maker" if a is not None else "cli", "worker" if b is not None else "cli")


async def flatten(cfg: Config, store: Store, symbols: list[str], echo) -> bool:
    route = choose_route(cfg, store)
    for symbol in symbols:
        if route.b == "cli" and (store.inflight(symbol) or store.ledger(symbol).pending):
            raise FlattenError(f"hedges in flight on {symbol} and no worker runs to finish them: start the worker, "
                               f"then flatten again; nothing was changed")
    leases: list[KeyLeaseHolder] = []
    clients: dict[str, VenueClient] = {}
    budget = budget_from_config(cfg, store.r)
    try:
        try:
            signer = _signer(cfg) if route != Route("cli", "cli") else None   # requests to the maker/worker are signed
            for name, account, via in (("a", cfg.account_a, route.a), ("b", cfg.account_b, route.b)):
                if via != "cli":
                    continue
                lease = KeyLeaseHolder(store, account, "flatten")
                lease.take()   # atomic: a maker or worker that started meanwhile holds it, or waits for us
                lease.start_renewing()
                leases.append(lease)
                clients[name] = await VenueClient.open(cfg.base_url, account, private_key(cfg, account),
                                                       chain_id=cfg.chain_id, budget=budget, process=CLI_PROCESS)
        except KeyBusy as exc:
            raise FlattenError(f"{exc}: it started meanwhile; flatten again") from None
        except ConfigError as exc:
            raise FlattenError(str(exc)) from None
        ok = True
        for symbol in symbols:
            ok = await _flatten_market(cfg, store, symbol, route, clients, signer, budget, echo) and ok
        return ok
    finally:
        for client in clients.values():
            await client.close()
        for lease in leases:
            lease.release()


def _signer(cfg: Config):
    from tasks.signing import MessageSigner
    return MessageSigner(task_signing_key(cfg))


async def _flatten_market(cfg: Config, store: Store, symbol: str, route: Route, clients: dict[str, VenueClient],
                          signer, budget: RequestBudget, echo) -> bool:
    mi = cfg.market(symbol).market_index
    store.pause(symbol, "flattened by operator", by="flatten")
    if route.a == "maker":
        closed_a = await _ask_maker(store, signer, symbol)
    else:
        closed_a = await _close_a_here(cfg, store, clients["a"], symbol)
    echo(closed_a.describe())
    await _wait_no_hedges(store, symbol)   # the hedge of A's close, when the maker's stream enqueued it
    if route.b == "worker":
        closed_b = await _ask_worker(store, signer, symbol)
    else:
        from tasks.flatten_task import close_b
        closed_b = await close_b(cfg, store, clients["b"], symbol, _request_id(), "cli")
    echo(closed_b.describe())

    positions = await public_positions(cfg.base_url, [cfg.account_a.account_index, cfg.account_b.account_index],
                                       budget, CLI_PROCESS)
    a_after = positions[cfg.account_a.account_index].get(mi, Decimal(0))
    b_after = positions[cfg.account_b.account_index].get(mi, Decimal(0))
    echo(f"market={symbol} flattened a_position={_num(a_after)} b_position={_num(b_after)} "
         f"net_exposure={_num(a_after + b_after)} (paused: resume to trade again)")
    return a_after == 0 and b_after == 0


def _request_id() -> str:
    return secrets.token_hex(8)


async def _ask_maker(store: Store, signer, symbol: str) -> CloseResult:
    """A's close by the maker, the only sender on A's key: a signed request on the control channel,
    the answer in Redis."""
    from tasks.flatten_task import request_body, sign_request
    request_id = _request_id()
    body = request_body("A", symbol, request_id, now_ms() + int(REPLY_TIMEOUT_S * 1000))
    message = {"event": FLATTEN_A_EVENT, "market": symbol, "request_id": request_id,
               "deadline_ms": body["deadline_ms"], "auth": sign_request(signer, body)}
    if not store.r.publish(store.control_channel, json.dumps(message)):
        raise FlattenError("the maker holds A's key but does not listen on the control channel (starting or "
                           "stopping?); flatten again in a few seconds")
    log.info("event=flatten.asked market=%s request_id=%s of=maker", symbol, request_id)
    # The maker gives up at the deadline and says so: its answer comes before ours runs out.
    reply = await asyncio.to_thread(store.wait_flatten_reply, request_id, REPLY_TIMEOUT_S + CLOSE_MARGIN_S)
    if reply is None:
        raise FlattenError(f"no answer from the maker within {REPLY_TIMEOUT_S + CLOSE_MARGIN_S:.0f}s "
                           f"(request_id={request_id}; is it stuck? its log says)")
    if "error" in reply:
        raise FlattenError(f"the maker did not close A on {symbol}: {reply['error']}")
    return CloseResult.from_message(reply)


async def _ask_worker(store: Store, signer, symbol: str) -> CloseResult:
    """B's close by the worker, the only sender on B's key: tasks.flatten_b on hedge.b."""
    from tasks.flatten_task import HEDGE_QUEUE, flatten_b, request_body, sign_request
    request_id = _request_id()
    deadline_ms = now_ms() + int(REPLY_TIMEOUT_S * 1000)
    # The worker honours only the request this command waits for: a late or stale one sends nothing.
    store.set_flatten_request(symbol, request_id, int(REPLY_TIMEOUT_S * 1000) + 5_000)
    try:
        auth = sign_request(signer, request_body("B", symbol, request_id, deadline_ms))
        result = flatten_b.apply_async(args=[symbol, request_id, deadline_ms], kwargs={"auth": auth},
                                       task_id=f"flatten-{symbol}-{request_id}", queue=HEDGE_QUEUE,
                                       expires=REPLY_TIMEOUT_S)
        log.info("event=flatten.asked market=%s request_id=%s of=worker task_id=%s", symbol, request_id, result.id)
        try:
            # The worker starts the close only before the deadline, and a close ends within the margin.
            reply = await asyncio.to_thread(result.get, timeout=REPLY_TIMEOUT_S + CLOSE_MARGIN_S, propagate=False)
        except celery.exceptions.TimeoutError:
            raise FlattenError(f"no answer from the worker within {REPLY_TIMEOUT_S + CLOSE_MARGIN_S:.0f}s (task "
                               f"{result.id}): is it busy or stuck? B was not closed; `lighter-hedge status`") from None
        if not result.successful() or not isinstance(reply, dict):
            raise FlattenError(f"the worker's close of B failed: {result.state} {reply!r}")
        if "error" in reply:
            raise FlattenError(f"the worker did not close B on {symbol}: {reply['error']}")
        return CloseResult.from_message(reply)
    finally:
        store.clear_flatten_request(symbol, request_id)


async def _close_a_here(cfg: Config, store: Store, a: VenueClient, symbol: str) -> CloseResult:
    """A's close with this command's own client, under A's lease (no maker runs). A's fills are
    recorded here (no maker's stream to see them); B's close then covers them."""
    mi = cfg.market(symbol).market_index
    spec = await a.market_spec(mi)
    cancelled = 0
    for order in await a.active_orders(mi):
        outcome = await a.cancel(mi, order.order_index)
        log.info("event=flatten.cancel market=%s account=%d order_index=%d %s", symbol, a.account_index,
                 order.order_index, outcome.describe())
        cancelled += 1 if outcome.accepted else 0
    await _wait_no_hedges(store, symbol)

    before = await a.position(mi)
    if before == 0:
        return CloseResult("A", symbol, "cli", True, before, before, cancelled=cancelled)
    coi = (now_ms() * 16) % MAX_CLIENT_ORDER_INDEX + 1
    order = await _close(cfg, a, spec, before, coi)
    for trade in fill_trades_of_order(await a.trades(mi, 100), order.order_index) if order else []:
        fill = Fill.from_message({"fill_id": trade["trade_id"], "market_index": mi,
                                  "side": SELL if before > 0 else BUY, "base_amount": trade["size"],
                                  "price": trade["price"], "order_index": order.order_index,
                                  "client_order_index": coi, "ts_exchange_ms": trade.get("timestamp") or 0,
                                  "ts_seen_ms": now_ms()})
        store.record_fill(symbol, fill.to_message(), spec.base_to_int(signed(fill.side, fill.base_amount)))
    after = await a.position(mi)
    return CloseResult("A", symbol, "cli", after == 0, before, after, coi, order.status if order else "not found",
                       order.filled_base if order else Decimal(0), cancelled,
                       "" if after == 0 else f"A still holds {after} after its close")


async def _close(cfg: Config, client: VenueClient, spec, position: Decimal, coi: int):
    is_ask = position > 0
    bids, asks = await client.book_prices(spec.market_index, limit=1)
    best = (bids if is_ask else asks) or (asks if is_ask else bids)
    if not best:
        raise FlattenError(f"no price on {spec.symbol} to close {position} at")
    worst = worst_price_int(best[0], is_ask, cfg.strategy.max_slippage_bps, spec)
    outcome = await client.place_market(spec, coi, is_ask, abs(position), worst, reduce_only=True)
    log.info("event=flatten.order account=%d market=%s client_order_index=%d %s", client.account_index,
             spec.symbol, coi, outcome.describe())
    if outcome.kind in ("rejected", "retryable"):
        raise FlattenError(f"venue refused the close of {position} on account {client.account_index}: "
                           f"{outcome.describe()}")
    return await client.wait_order_final(coi, 10.0)


async def _wait_no_hedges(store: Store, symbol: str) -> None:
    deadline = time.monotonic() + SETTLE_TIMEOUT_S
    while store.inflight(symbol) or store.ledger(symbol).pending:
        if time.monotonic() > deadline:
            raise FlattenError(f"hedges still in flight on {symbol} after {SETTLE_TIMEOUT_S:.0f}s; "
                               f"check `lighter-hedge status` and the worker")
        await asyncio.sleep(0.2)


def _num(value: Decimal) -> str:
    return "0" if value == 0 else str(value)
