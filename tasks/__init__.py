"""Account B: the Celery app and the hedge_fill task (worker: `celery -A tasks worker -Q hedge.b -P solo`)."""
from tasks.celery_app import app
from tasks.hedge_task import hedge_fill

__all__ = ["app", "hedge_fill"]
