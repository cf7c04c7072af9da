"""Account B: the Celery app and the hedge_fill task (worker: `celery -A tasks worker -Q hedge.b -P solo`)."""
from tasks.celery_app import app
from tasks.hedge_task import hedge_fill
from tasks import flatten_task  # noqa: F401,E402 - tasks.flatten_b and the worker's lease on B's key
from tasks import requeue_task  # noqa: F401,E402 - tasks.requeue_hedge, and what Revoke does to a hedge
from tasks import worker_guard  # noqa: F401,E402 - the worker keeps consuming hedge.b whatever Flower does

__all__ = ["app", "hedge_fill"]
