"""B's close for `lighter-hedge flatten`, sent by the worker: the only sender on B's key.

Lighter's nonces are per API key and sequential, and the worker keeps B's next nonce locally, so
nothing else may sign with B's key while it runs (tasks/key_lease.py). `flatten` therefore sends
B's close through the worker: the task tasks.flatten_b on queue hedge.b, run between hedges by the
worker's own client. The close is one reduce-only market order written ahead as a ledger leg with
its nonce (like a hedge leg), so a close left in doubt is resolved by the nonce witness like any
leg, and A+B, the ledger and the venue agree afterwards.

The worker holds B's key lease from before its warm-up (it waits while a flatten that found no
worker holds it) until it shuts down.

A flatten request is signed with the task signing key (tasks.signing), apart from hedge messages,
and only honoured while the market is paused, before its deadline, and while it is the request the
CLI waits for (`lh:flatten_request:<market>`): a forged, stale or late message sends nothing.
"""
from __future__ import annotations

import logging
from typing import Any

from celery import Task
from celery.signals import celeryd_after_setup, worker_shutdown

from hedge.config import Config, ConfigError
from hedge.flatten import CloseResult, FlattenError
from hedge.leg import TX_EXPIRY_BOUND_MS, Leg
from hedge.plan import worst_price_int
from tasks import runtime
from tasks.celery_app import app
from tasks.key_lease import KeyLeaseHolder
from tasks.signing import MessageSigner, UnauthenticatedMessage
from tasks.store import Store, now_ms
from venue import errors
from venue.client import VenueClient
from venue.feed import VenueFeed, order_final

log = logging.getLogger("tasks.flatten")

HEDGE_QUEUE = "hedge.b"
# The "generation" a flatten request is signed for: never a ledger generation, so a flatten
# signature can never pass for a hedge message's, nor the other way round.
FLATTEN_AUTH_GENERATION = "flatten"
CLOSE_FINAL_TIMEOUT_S = 10.0   # a market order settles after the venue's taker delay (~300 ms)


# ---- the request, signed -------------------------------------------------------------------------

def request_body(account: str, market: str, request_id: str, deadline_ms: int) -> dict[str, Any]:
    return {"flatten": account, "market": market, "request_id": request_id, "deadline_ms": int(deadline_ms)}


def sign_request(signer: MessageSigner, body: dict[str, Any]) -> dict[str, Any]:
    return signer.sign(body, FLATTEN_AUTH_GENERATION)


def verify_request(signer: MessageSigner, body: dict[str, Any], auth: Any) -> None:
    """UnauthenticatedMessage unless `auth` is our signature of this very flatten request."""
    if signer.verify(body, auth) != FLATTEN_AUTH_GENERATION:
        raise UnauthenticatedMessage("not a flatten request's signature")


# ---- B's close (the worker's task; the CLI's own client only while no worker holds B's key) -------

async def close_b(cfg: Config, store: Store, client: VenueClient, symbol: str, request_id: str, via: str,
                  feed: VenueFeed | None = None) -> CloseResult:
    """Close B's position on `symbol` with one reduce-only market order, written ahead as a leg.

    Refuses (FlattenError) while a leg of the market is open: its fate decides B's position.
    """
    mi = cfg.market(symbol).market_index
    spec = await client.market_spec(mi)
    ctx = f"market={symbol} request_id={request_id}"
    open_legs = store.ledger(symbol).pending
    if open_legs:
        raise FlattenError(f"{len(open_legs)} hedge leg(s) still open on {symbol} (`lighter-hedge status`): the "
                           f"worker settles them with its next hedge of {symbol} or at its restart; flatten again then")
    before = await client.position(mi)
    if before == 0:
        log.info("event=flatten.b_flat %s account=%d", ctx, client.account_index)
        return CloseResult("B", symbol, via, True, before, before)
    is_ask = before > 0
    bids, asks = await client.book_prices(mi, limit=1)
    touch = bids if is_ask else asks
    if not touch:
        raise FlattenError(f"no {'bid' if is_ask else 'ask'} on {symbol} to close B's {before} into")
    worst = worst_price_int(touch[0], is_ask, cfg.strategy.max_slippage_bps, spec)
    base = abs(before)
    nonce = await client.take_nonce()   # recorded in the write-ahead before anything is signed
    written = now_ms()
    try:
        leg, _ = store.open_leg_checked(symbol, Leg(
            leg=0, client_order_index=0, is_ask=is_ask, base_int=spec.base_to_int(base), worst_price_int=worst,
            fill_id=f"flatten-{request_id}", written_ms=written, api_key_index=client.api_key_index, nonce=nonce,
            expires_by_ms=written + TX_EXPIRY_BOUND_MS), mi, limit_per_minute=10**9)   # a close is never rate-limited
        assert leg is not None
        signed_tx = await client.sign_market(spec, leg.client_order_index, is_ask, base, worst, reduce_only=True,
                                             nonce=nonce)
    except BaseException:
        client.give_back_nonce(nonce)
        raise
    coi = leg.client_order_index
    log.info("event=flatten.sending %s account=%d leg=%d client_order_index=%d nonce=%d side=%s base=%s "
             "worst_price=%s", ctx, client.account_index, leg.leg, coi, nonce, "sell" if is_ask else "buy", base,
             spec.price_from_int(worst))
    sent_ms = now_ms()
    outcome = await client.send_signed(signed_tx)
    log.info("event=flatten.sent %s account=%d leg=%d client_order_index=%d %s", ctx, client.account_index, leg.leg,
             coi, outcome.describe())
    if outcome.kind == errors.ACCEPTED:
        leg = leg.sent(sent_ms, signed_tx.tx_hash, signed_tx.expired_at_ms).taken("answered 200",
                                                                                 outcome.tx_hash or None)
        store.update_leg(symbol, leg)
        taker = f"coi={coi}"   # the venue took this tx with its nonce: any other tx with it never executes
        client.note_nonce_used(nonce, taker)
        store.note_nonce_taker(client.account_index, client.api_key_index, nonce, taker)
        order = await order_final(feed, client, coi, CLOSE_FINAL_TIMEOUT_S)
        if order is None or not order.is_final:
            raise FlattenError(f"B's close {coi} was taken but is not final after {CLOSE_FINAL_TIMEOUT_S:.0f}s; it "
                               f"stays a leg in flight, settled by the worker's next hedge of {symbol} or at its "
                               f"restart; flatten again then")
        store.close_leg(symbol, leg.executed(order.status, order.order_index, spec.base_to_int(order.filled_base),
                                             str(order.filled_quote)))
        after = await client.position(mi)
        log.info("event=flatten.b_done %s account=%d client_order_index=%d status=%s filled=%s b_before=%s "
                 "b_after=%s", ctx, client.account_index, coi, order.status, order.filled_base, before, after)
        return CloseResult("B", symbol, via, after == 0, before, after, coi, order.status, order.filled_base,
                           reason="" if after == 0 else f"B still holds {after} after its close")
    if outcome.kind == errors.IN_DOUBT:
        store.update_leg(symbol, leg.sent(sent_ms, signed_tx.tx_hash, signed_tx.expired_at_ms))
        raise FlattenError(f"B's close {coi} is in doubt ({outcome.describe()}); it stays a leg in flight, resolved "
                           f"by its nonce at the worker's next hedge of {symbol} or its restart; flatten again then")
    store.close_leg(symbol, leg.rejected(outcome.describe()))
    raise FlattenError(f"the venue refused B's close of {before}: {outcome.describe()}")


@app.task(bind=True, name="tasks.flatten_b", queue=HEDGE_QUEUE, max_retries=0)
def flatten_b(self: Task, symbol: str, request_id: str, deadline_ms: int, auth: dict | None = None) -> dict:
    """Close B's position on `symbol` for `lighter-hedge flatten` (request `request_id`).

    Returns a CloseResult message, or {"error": why} when nothing (or not all) could be done: a
    refusal is an answer to the CLI, not a task failure.
    """
    try:
        verify_request(runtime.signer(), request_body("B", symbol, request_id, deadline_ms), auth)
        store = runtime.store()
        if now_ms() > deadline_ms:
            raise FlattenError("the request's deadline passed before the worker got to it")
        if store.flatten_request(symbol) != request_id:
            raise FlattenError(f"no flatten of {symbol} waits for request {request_id} (stale or forged)")
        if store.paused(symbol) is None:
            raise FlattenError(f"{symbol} is not paused")
        cfg = runtime.config()
        cfg.market(symbol)
        # B's close is written into the ledger Redis holds now (hedges check theirs per message).
        store.expected_generation = store.ensure_generation()
        result = runtime.run(lambda: _run(cfg, store, symbol, request_id))
    except (FlattenError, UnauthenticatedMessage, ConfigError) as exc:
        log.warning("event=flatten.refused market=%s request_id=%s task_id=%s reason=%s", symbol, request_id,
                    self.request.id, exc)
        return {"error": str(exc)}
    return result.to_message()


async def _run(cfg: Config, store: Store, symbol: str, request_id: str) -> CloseResult:
    return await close_b(cfg, store, await runtime.client(), symbol, request_id, "worker", feed=await runtime.feed())


# ---- the worker's lease on B's key ---------------------------------------------------------------

_b_lease: KeyLeaseHolder | None = None


@celeryd_after_setup.connect
def _hold_b_key(**_: Any) -> None:
    """Before the worker's warm-up reads B's nonce and before it takes any task: B's key is ours.
    A lease of an earlier worker (killed before it expired) is taken over; a flatten's is waited for."""
    global _b_lease
    cfg = runtime.config()
    _b_lease = KeyLeaseHolder(runtime.store(), cfg.account_b, "worker")
    try:
        _b_lease.take_waiting(over_roles=("worker",))
    except Exception as exc:  # Redis away at start: the renewing thread takes the lease once it answers
        log.warning("event=key_lease.take_failed account=%d error=%s", cfg.account_b.account_index,
                    f"{type(exc).__name__}: {exc}")
    _b_lease.start_renewing()


@worker_shutdown.connect
def _release_b_key(**_: Any) -> None:
    if _b_lease is not None:
        _b_lease.release()
