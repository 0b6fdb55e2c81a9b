"""The precompute jobs: names, schedules, locks and run records.

One table of jobs serves celery beat, the admin API, /health and /stats alike.
"""
from __future__ import annotations

from dataclasses import dataclass

import redis
from redis.exceptions import LockNotOwnedError

LOCK_PREFIX = "recs:lock:"
QUEUE = "recs"  # the Celery queue every job runs on


@dataclass(frozen=True)
class Job:
    name: str  # job_runs.job and the lock name
    task: str  # Celery task name
    admin_path: str  # POST /admin/<admin_path>
    interval_setting: str | None  # Settings attribute holding the schedule
    interval_unit_s: int
    lock_ttl_s: int  # also the hard time limit: a lock outliving its task cannot exist


JOBS = {
    "popular_items": Job("popular_items", "recs.refresh_popular_items", "refresh-popular-items",
                         "popular_items_refresh_minutes", 60, 1800),
    "user_profiles": Job("user_profiles", "recs.update_user_profiles", "update-user-profiles",
                         "user_profiles_refresh_minutes", 60, 1800),
    "user_similarities": Job("user_similarities", "recs.update_user_similarities", "update-user-similarities",
                             "user_similarities_refresh_minutes", 60, 3600),
    "user_lists": Job("user_lists", "recs.update_user_lists", "update-user-lists", "user_lists_refresh_minutes", 60,
                      1800),
    "cleanup_cache": Job("cleanup_cache", "recs.cleanup_cache", "cleanup-cache", "cache_cleanup_hours", 3600, 900),
    "refresh_all": Job("refresh_all", "recs.refresh_all", "refresh-all", None, 0, 7200),
}


def interval_seconds(job: Job, settings) -> int | None:
    if job.interval_setting is None:
        return None
    return getattr(settings, job.interval_setting) * job.interval_unit_s


def lock(client: redis.Redis, job: Job):
    """A non-blocking Redis lock with a TTL, so a killed worker cannot hold it forever."""
    return client.lock(LOCK_PREFIX + job.name, timeout=job.lock_ttl_s, blocking=False)


def lock_for_run(client: redis.Redis, job: Job, run_tag: str) -> bool:
    """Take the job's lock for a run that other tasks finish (a sharded run); False if held.

    The run tag is the lock's token, so whichever task ends the run can release it.
    """
    return lock(client, job).acquire(token=run_tag)


def release_run(client: redis.Redis, job: Job, run_tag: str) -> None:
    """Release a lock taken by lock_for_run, if that run still holds it."""
    try:
        lock(client, job).do_release(run_tag)
    except LockNotOwnedError:  # expired, or taken since by another run
        pass


def is_running(client: redis.Redis, job: Job) -> bool:
    return bool(client.exists(LOCK_PREFIX + job.name))


def record_start(conn, job: str) -> int:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (job) VALUES (%s) RETURNING id", (job,))
        run_id = cur.fetchone()[0]
    conn.commit()
    return run_id


def record_finish(conn, run_id: int, status: str, rows: int | None = None, error: str | None = None) -> None:
    with conn.cursor() as cur:
        cur.execute(
            """UPDATE job_runs SET finished_at = clock_timestamp(), status = %s, rows_written = %s, error = %s,
                   duration_ms = extract(epoch FROM clock_timestamp() - started_at) * 1000
               WHERE id = %s""",
            (status, rows, error, run_id),
        )
    conn.commit()


LAST_RUNS_SQL = """
SELECT DISTINCT ON (job) job, started_at, finished_at, duration_ms, rows_written, status, error,
       extract(epoch FROM now() - started_at) AS age_s
FROM job_runs ORDER BY job, started_at DESC
"""

LAST_SUCCESS_SQL = """
SELECT job, max(finished_at) AS finished_at, extract(epoch FROM now() - max(finished_at)) AS age_s
FROM job_runs WHERE status = 'success' GROUP BY job
"""
