"""The Celery task: routing, retry policy and bookkeeping around tasks.hedge.hedge_one."""
from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from celery import Task
from celery.utils.time import get_exponential_backoff_interval
from celery.signals import after_setup_logger, after_setup_task_logger, worker_ready, worker_shutdown

from hedge.price_bound import InvalidPriceBound, PriceBound
from tasks import display, heartbeat, memtrace, metrics, runtime
from venue import log_filters
from tasks.celery_app import app
from tasks.hedge import (RETRY_ON, LedgerGoneError, LegPendingError, PermanentHedgeError, RefusedMessageError,
                         hedge_one, market_symbol)
from tasks.signing import UnauthenticatedMessage
from tasks.store import LedgerLostError

log = logging.getLogger("tasks.hedge_task")
FEED_WARM_S = 5.0   # the warm-up waits this long for B's order stream (hedges fall back to REST meanwhile)
_strategy = runtime.config().strategy


class HedgeTask(Task):
    """Records the outcome where the maker and the CLI look: in-flight, failed, counters."""

    def on_success(self, retval: Any, task_id: str, args: tuple, kwargs: dict) -> None:
        fill = _fill_arg(args, kwargs)
        runtime.store().hedge_finished(market_symbol(runtime.config(), fill), task_id,
                                       str((fill or {}).get("fill_id")), ok=True)

    def on_failure(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        if isinstance(exc, RefusedMessageError):   # recorded by hedge_fill already (_record_refusal)
            return
        fill = _fill_arg(args, kwargs)
        market, fill_id, reason = _described(fill, exc)
        log.error("event=hedge.failed fill_id=%s market=%s task_id=%s reason=%s", fill_id, market, task_id, reason)
        metrics.HEDGES.labels(market, "failed").inc()
        store = runtime.store()
        auth, price = kwargs.get("auth"), kwargs.get("price")
        store.hedge_finished(market, task_id, fill_id, ok=False, reason=reason,
                             fill_msg=fill if isinstance(fill, dict) else None,
                             auth=auth if isinstance(auth, dict) else None,
                             price=price if isinstance(price, dict) else None)
        store.publish_event({"event": "hedge.failed", "market": market, "fill_id": fill_id,
                             "task_id": task_id, "reason": reason})

    def on_retry(self, exc: BaseException, task_id: str, args: tuple, kwargs: dict, einfo: Any) -> None:
        fill = _fill_arg(args, kwargs) or {}
        if isinstance(exc, LegPendingError):
            return   # a wait on a taken leg (logged as event=hedge.waiting), not a failed attempt
        metrics.RETRIES.labels(market_symbol(runtime.config(), fill)).inc()
        log.warning("event=hedge.retry fill_id=%s task_id=%s retries=%d reason=%s",
                    fill.get("fill_id") if isinstance(fill, dict) else None, task_id,
                    self.request.retries, exc)


def _described(fill: Any, exc: BaseException) -> tuple[str, str, str]:
    """The market, fill id and reason a failed or refused message is recorded and logged under."""
    return (market_symbol(runtime.config(), fill), str(fill.get("fill_id")) if isinstance(fill, dict) else "unknown",
            f"{type(exc).__name__}: {exc}")


def _record_refusal(task_id: str, fill: Any, exc: RefusedMessageError) -> None:
    """Nothing traded: not a failed hedge, no market halts. Recorded by the task itself, before Celery
    stores its FAILURE result (on_failure runs after that): whoever sees the result finds the refusal."""
    market, fill_id, reason = _described(fill, exc)
    log.warning("event=hedge.refused fill_id=%s market=%s task_id=%s reason=%s", fill_id, market, task_id, reason)
    metrics.HEDGES.labels(market, "refused").inc()
    store = runtime.store()
    store.record_refused(task_id, reason, fill, None if market == "unknown" else market)
    store.publish_event({"event": "hedge.refused", "market": market, "task_id": task_id, "reason": reason})


def _fill_arg(args: tuple, kwargs: dict) -> Any:
    if args:
        return args[0]
    return kwargs.get("fill")


def send_hedge(fill_msg: dict, task_id: str, auth: dict, hint: dict | None = None, price: dict | None = None) -> None:
    """apply_async of tasks.hedge_fill, routed to hedge.b; `auth` from tasks.signing.MessageSigner.sign
    (of the fill and, when given, `price`: an operator's price bound, hedge.price_bound.PriceBound).

    Flower shows the arguments as tasks.display.hedge_reprs writes them (JSON with the symbol, A's
    and B's sides and ISO times; a few microseconds), never through Celery's saferepr (about 0.1 ms
    per task, before the message is published).
    """
    args, kwargs = [fill_msg], {"auth": auth, **({"hint": hint} if hint is not None else {}),
                                **({"price": price} if price is not None else {})}
    hedge_fill.apply_async(args=args, kwargs=kwargs, task_id=task_id,
                           **display.hedge_reprs(args, kwargs, runtime.config().markets))


@app.task(bind=True, base=HedgeTask, name="tasks.hedge_fill", max_retries=_strategy.max_retries)
def hedge_fill(self: Task, fill: dict, hint: dict | None = None, waits: int = 0, auth: dict | None = None,
               price: dict | None = None) -> dict:
    """Hedge one fill of account A with the opposite market order on account B.

    `auth`: the maker's signature of the fill and its ledger generation (tasks.signing); a message
    without a valid one is refused before anything else in it is read.
    `hint`: the market's ledger as the maker saw it when it counted the fill (hedge.plan.LedgerHint);
    it only lets the worker sign sooner, and a stale or missing one changes nothing else.
    `waits`: how many of this task's retries were waits on a leg the venue took (LegPendingError):
    they do not count against max_retries (a taken leg executes or expires; its ExpiredAt bounds
    them). Other failures retry with Celery's exponential backoff and jitter, up to max_retries.
    `price`: an operator's bound on B's worst price (ops/requeue.py, --max-slippage-bps), covered by
    `auth` like the fill; retries keep it.
    """
    try:
        return _hedge_fill(self, fill, hint, waits, auth, price)
    except RefusedMessageError as exc:
        _record_refusal(self.request.id, fill, exc)
        raise


def _hedge_fill(self: Task, fill: Any, hint: Any, waits: int, auth: Any, price: Any) -> dict:
    try:
        generation = runtime.signer().verify(fill, auth, price)
    except UnauthenticatedMessage as exc:
        raise RefusedMessageError(f"refused: {exc}; nothing counted or sent") from None
    try:
        bound = None if price is None else PriceBound.from_message(price)
    except InvalidPriceBound as exc:
        raise RefusedMessageError(f"refused: {exc}; nothing counted or sent") from None
    # Every ledger write of this hedge checks that Redis still holds the ledger the fill was counted in.
    runtime.store().expected_generation = generation
    attempt = self.request.retries - waits + 1
    kept = {"waits": waits, "auth": auth, **({"price": price} if price is not None else {})}
    try:
        return runtime.run(lambda: _run(fill, attempt, hint, bound))
    except LedgerLostError as exc:
        log.error("event=hedge.ledger_lost fill_id=%s task_id=%s reason=%s (stopped; nothing more is sent)",
                  fill.get("fill_id") if isinstance(fill, dict) else None, self.request.id, exc)
        raise LedgerGoneError(f"{exc}: stopped without sending; the maker's reconcile at start measures A+B "
                              f"at the venue and hedges what is left") from None
    except LegPendingError as exc:
        log.info("event=hedge.waiting fill_id=%s task_id=%s retry_in_s=%.1f reason=%s",
                 fill.get("fill_id") if isinstance(fill, dict) else None, self.request.id, exc.retry_in_s, exc)
        raise self.retry(exc=exc, countdown=exc.retry_in_s, args=(fill, None), kwargs={**kept, "waits": waits + 1},
                         max_retries=self.request.retries + 1)
    except PermanentHedgeError:
        raise
    except RETRY_ON as exc:
        countdown = get_exponential_backoff_interval(factor=1, retries=attempt - 1,
                                                     maximum=_strategy.retry_backoff_max_s, full_jitter=True)
        raise self.retry(exc=exc, countdown=countdown, args=(fill, None), kwargs=kept,
                         max_retries=_strategy.max_retries + waits)


async def _run(fill: Any, attempt: int, hint: Any, bound: PriceBound | None = None) -> dict:
    return await hedge_one(runtime.config(), runtime.store(), await runtime.client(), fill, attempt, hint,
                           feed=await runtime.feed(), price=bound)


@after_setup_logger.connect
@after_setup_task_logger.connect
def _safe_log_lines(logger: logging.Logger, **_: Any) -> None:
    """Celery's own handlers get the same filters as the maker's (venue.log_filters)."""
    for handler in logger.handlers:
        log_filters.install(handler)


@worker_ready.connect
def _warm_up(**_: Any) -> None:
    """Open B's client, learn every market and the nonce before the first fill arrives.

    The solo pool runs tasks in this same process, so what is created here is reused.
    """
    memtrace.install()   # SIGUSR2: gc, give freed memory back, log RSS (Celery keeps SIGUSR1)
    specs = {}

    async def warm() -> None:
        client = await runtime.client()
        for market in runtime.config().markets.values():
            specs[market.symbol] = await client.market_spec(market.market_index)
        await client.resync_nonce()
        await asyncio.wait_for((await runtime.feed()).connected.wait(), FEED_WARM_S)
    cfg = runtime.config()
    metrics.serve(cfg.metrics.worker_port, cfg.metrics.host, "worker")
    if runtime.venue_client() is not None:
        metrics.watch_budget(runtime.venue_client().budget, "worker")
    # Celery's own "Task ... received" / "succeeded in ...: <result>" INFO lines: the first is
    # written between a hedge's arrival and its signing, and both repeat what the hedge.* lines say
    # with the fill_id. Warnings and errors (failures, exceptions) still come through.
    for per_task in ("celery.worker.strategy", "celery.app.trace"):
        logging.getLogger(per_task).setLevel(logging.WARNING)
    try:
        runtime.run(warm)
        log.info("event=worker.warm account=%d markets=%s", runtime.config().account_b.account_index,
                 ",".join(runtime.config().markets))
    except Exception as exc:  # the first task retries the same steps and reports properly
        log.warning("event=worker.warm_failed error=%s", f"{type(exc).__name__}: {exc}")
    heartbeat.start(runtime.store)  # the maker's dead-man's switch stays armed only while this beats
    _recover(specs)


def _recover(specs: dict) -> None:
    """After a crash the unacked hedge comes back only after the broker's visibility timeout:
    hedge now every market whose ledger has a leg in doubt or an orderable unhedged amount."""
    store = runtime.store()
    for market, spec in specs.items():
        ledger = store.ledger(market)
        latest = store.latest_fill(market)   # also once retention moved the records out of Redis
        if latest is None or not (ledger.pending or spec.is_orderable(spec.base_from_int(ledger.unhedged))):
            continue
        task_id = f"hedge-{market}-recover-{int(time.time() * 1000)}"
        log.warning("event=worker.recover fill_id=%s market=%s pending_legs=%d unhedged_units=%d task_id=%s",
                    latest["fill_id"], market, len(ledger.pending), ledger.unhedged, task_id)
        store.mark_inflight(market, task_id)
        send_hedge(latest, task_id, runtime.signer().sign(latest, store.ensure_generation()))


@worker_shutdown.connect
def _close_client(**_: Any) -> None:
    heartbeat.stop()
    runtime.shutdown()
