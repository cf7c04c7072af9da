"""Re-run failed hedges with their original fill, under the same task id.

The fill comes from the failed-hedge record (written by the task's on_failure) or, failing
that, from the result backend (result_extended keeps the task's args).
"""
from __future__ import annotations

import logging

from celery.result import AsyncResult

from hedge.config import Config
from tasks import app
from tasks.hedge_task import send_hedge
from tasks.signing import MessageSigner
from tasks.store import Store
from venue.keys import task_signing_key

log = logging.getLogger("ops.requeue")


def requeue(cfg: Config, store: Store, markets: list[str], task_id: str | None) -> list[str]:
    """Signed for the ledger generation Redis holds now: the failed record is in this generation
    (a wipe takes it along), and its fill is counted at most once whatever the message says."""
    signer = MessageSigner(task_signing_key(cfg))
    done = []
    for market in markets:
        for failed_id, info in store.failed(market).items():
            if task_id and failed_id != task_id:
                continue
            fill = info.get("fill") or _args_from_backend(failed_id)
            if not fill:
                log.error("event=requeue.no_fill task_id=%s", failed_id)
                continue
            store.mark_inflight(market, failed_id)
            store.forget_failed(market, failed_id)
            send_hedge(fill, failed_id, signer.sign(fill, store.ensure_generation()))
            log.info("event=requeue fill_id=%s market=%s task_id=%s", fill.get("fill_id"), market, failed_id)
            done.append(failed_id)
    return done


def _args_from_backend(task_id: str) -> dict | None:
    args = AsyncResult(task_id, app=app).args
    return args[0] if args else None
