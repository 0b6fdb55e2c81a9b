"""The Celery app, configured from celeryconfig.py. `celery -A workers.app worker|beat|flower`."""
import logging

from celery import Celery
from celery.signals import worker_process_init

app = Celery("recs")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@worker_process_init.connect
def _reset_clients(**_):
    # Workers own their connections: anything cached before fork is dropped.
    from workers import tasks

    tasks.reset_clients()


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
