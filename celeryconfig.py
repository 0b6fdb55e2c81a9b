"""Celery configuration only: broker, result backend, limits, routes and beat_schedule.

Values come from shared.settings (the environment), validated at import.
"""
from datetime import timedelta

from shared.jobs import JOBS, QUEUE, interval_seconds
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

beat_schedule_filename = _settings.celery_beat_schedule_file

task_routes = {"recs.*": {"queue": QUEUE}}
task_default_queue = QUEUE

beat_schedule = {
    job.task: {"task": job.task, "schedule": timedelta(seconds=interval_seconds(job, _settings))}
    for job in JOBS.values()
    if job.interval_setting is not None
}
