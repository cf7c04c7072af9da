"""Account B: the Celery app and the hedge_fill task (worker: `celery -A tasks worker -Q hedge.b -P solo`)."""
from tasks.celery_app import app
from tasks.hedge_task import hedge_fill
from tasks import flatten_task  # noqa: F401,E402 - tasks.flatten_b and the worker's lease on B's key

__all__ = ["app", "hedge_fill"]
