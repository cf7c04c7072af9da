"""The Celery app, configured from celeryconfig.py."""
from celery import Celery

from tasks import broker

broker.install()
app = Celery("lighter_hedge")
app.config_from_object("celeryconfig")
