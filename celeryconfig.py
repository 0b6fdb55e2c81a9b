"""Celery configuration only: broker, result backend, limits, routes and beat_schedule.

Values come from shared.settings (the environment), validated at import.
"""
from datetime import timedelta

from shared.jobs import JOBS, QUEUE, interval_seconds
from shared.live import LIVE_QUEUE, LIVE_SYNC_TASK
from shared.settings import get_settings

_settings = get_settings()

broker_url = _settings.celery_broker_url
result_backend = _settings.celery_result_backend
result_expires = 86400
task_serializer = "json"
result_serializer = "json"
accept_content = ["json"]
timezone = "UTC"
enable_utc = True

# A job is acknowledged only after it finishes, so a killed worker's job is redelivered;
# one job at a time per process, since each one is CPU- and memory-heavy.
task_acks_late = True
task_reject_on_worker_lost = True
worker_prefetch_multiplier = 1
task_track_started = True
broker_transport_options = {"visibility_timeout": 7200}
broker_connection_retry_on_startup = True
worker_hijack_root_logger = False

task_routes = {LIVE_SYNC_TASK: {"queue": LIVE_QUEUE}, "recs.*": {"queue": QUEUE}}
task_default_queue = QUEUE

beat_schedule = {
    job.task: {"task": job.task, "schedule": timedelta(seconds=interval_seconds(job, _settings))}
    for job in JOBS.values()
    if job.interval_setting is not None
}

# The live sync, on its own queue (a worker with -Q recs_live): a run queued behind a
# busy worker expires after one period instead of piling up.
beat_schedule[LIVE_SYNC_TASK] = {"task": LIVE_SYNC_TASK, "schedule": timedelta(seconds=_settings.live_sync_seconds),
                                 "options": {"queue": LIVE_QUEUE, "expires": _settings.live_sync_seconds}}
