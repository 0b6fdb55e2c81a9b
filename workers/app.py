"""The Celery app, configured from celeryconfig.py. `celery -A workers.app worker|beat|flower`."""
import logging
import os

from celery import Celery
from celery.signals import beat_init, worker_process_init

app = Celery("recs")
app.config_from_object("celeryconfig")
app.autodiscover_tasks(["workers"], related_name="tasks", force=True)


@worker_process_init.connect
def _reset_clients(**_):
    # Workers own their connections: anything cached before fork is dropped.
    from workers import tasks

    tasks.reset_clients()


@beat_init.connect
def _log_schedule(sender, **_):
    # What beat will run and how often, and where it keeps its state: the first lines of its log.
    log = logging.getLogger("recs.beat")
    for name, entry in sorted(sender.app.conf.beat_schedule.items()):
        every = entry["schedule"]
        every_s = int(every.total_seconds()) if hasattr(every, "total_seconds") else every
        log.info("beat_schedule entry=%s task=%s every_s=%s", name, entry["task"], every_s)
    log.info("beat_schedule_file path=%s", os.path.abspath(sender.schedule_filename))


logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")
