"""The precompute jobs: names, schedules, leases, run records and their health.

One table of jobs serves celery beat, the admin API, /health and /stats alike.

A running job holds a *lease*: its Redis lock with a short TTL (JOB_LEASE_SECONDS)
that a daemon thread renews while the job runs, so a killed worker's lock is gone
within one TTL. The lease's value is the run's token (the Celery task id, or a fresh
id outside Celery), so /admin can name the running task and only the owner renews
or releases it. The same thread writes a heartbeat on the run's job_runs row, so a
`running` row whose heartbeat is stale is known to be dead (marked `abandoned`).
"""
from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass

import redis
from redis.exceptions import LockError, LockNotOwnedError

log = logging.getLogger("recs.jobs")

LOCK_PREFIX = "recs:lock:"  # the lease of a running job; value: the run's token
QUEUED_PREFIX = "recs:queued:"  # a task enqueued by /admin or the reaper and not started yet; value: its id
ISSUED_PREFIX = "recs:issued:"  # ids /admin handed out, so GET /admin/tasks/<id> can 404 the others
QUEUE = "recs"  # the Celery queue every job runs on
# A queued marker outlives a task lost from the broker by at most this long.
QUEUED_TTL_S = 3600
ISSUED_TTL_S = 86400  # as long as Celery keeps results (celeryconfig.result_expires)
# /health calls a run stuck when its heartbeat is older than this many lease TTLs.
STALE_LEASES = 2


@dataclass(frozen=True)
class Job:
    name: str  # job_runs.job and the lease name
    task: str  # Celery task name
    admin_path: str  # POST /admin/<admin_path>
    interval_setting: str | None  # Settings attribute holding the schedule
    interval_unit_s: int
    time_limit_s: int  # hard time limit of its task; a run older than this is stuck
    steps: tuple[str, ...] = ()  # jobs this one runs as its own steps (it holds their leases too)


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
    "refresh_all": Job("refresh_all", "recs.refresh_all", "refresh-all", None, 0, 7200,
                       ("popular_items", "user_profiles", "user_similarities", "user_lists", "cleanup_cache")),
}
# Tasks that are parts of a sharded similarity run (workers/tasks.py).
SHARD_TIME_LIMIT_S = 3600
MERGE_TIME_LIMIT_S = 1800
REAPER_TASK = "recs.reap_abandoned_runs"
REAPER_INTERVAL_S = 60


def interval_seconds(job: Job, settings) -> int | None:
    if job.interval_setting is None:
        return None
    return getattr(settings, job.interval_setting) * job.interval_unit_s


def longest_time_limit_s() -> int:
    return max([job.time_limit_s for job in JOBS.values()] + [SHARD_TIME_LIMIT_S, MERGE_TIME_LIMIT_S])


def stale_after_s(settings) -> float:
    return STALE_LEASES * settings.job_lease_seconds


class AlreadyRunning(Exception):
    """The lease of `job` is held by another run, whose token is `holder` (None if it just ended)."""

    def __init__(self, job: str, holder: str | None):
        super().__init__(job)
        self.job, self.holder = job, holder


class LeaseLost(RuntimeError):
    """The run's lease expired or was taken by another run: it must not write any more."""


def holder(client: redis.Redis, job_name: str) -> str | None:
    """The token of the run holding the job's lease, if any."""
    value = client.get(LOCK_PREFIX + job_name)
    return value.decode() if value is not None else None


def is_running(client: redis.Redis, job: Job) -> bool:
    return bool(client.exists(LOCK_PREFIX + job.name))


class Lease:
    """The leases of a job (and of the steps it runs itself), held with one token.

    redis-py's Lock does the atomic parts (SET NX PX, and token-checked extend and
    release); thread_local=False lets the renewal thread use the token.
    """

    def __init__(self, client: redis.Redis, job: Job, ttl_s: float, token: str):
        self.names = (job.name, *job.steps)
        self.token = token
        self.ttl_s = ttl_s
        self.locks = [client.lock(LOCK_PREFIX + name, timeout=ttl_s, blocking=False, thread_local=False)
                      for name in self.names]
        self.client = client
        self.lost: str | None = None
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def acquire(self) -> "Lease":
        """All of the job's leases or none; AlreadyRunning names the one held."""
        taken = []
        for name, lock in zip(self.names, self.locks):
            if not lock.acquire(token=self.token):
                for other in taken:
                    _release(other)
                raise AlreadyRunning(name, holder(self.client, name))
            taken.append(lock)
        return self

    def adopt(self) -> "Lease":
        """Continue the run whose token this is, in another task (a shard or the merge).

        Between two tasks of a run nobody renews the lease (the next task may wait in
        the queue), so a lease that lapsed meanwhile is taken again; one taken by
        another run means this run lost it.
        """
        for name, lock in zip(self.names, self.locks):
            lock.local.token = self.token.encode()
            try:
                lock.reacquire()
            except LockNotOwnedError:
                if not lock.acquire(token=self.token):
                    raise LeaseLost(f"{name}: lease taken by run {holder(self.client, name)}") from None
        return self

    def start_renewing(self, heartbeat=None) -> None:
        """Renew every third of the TTL in a daemon thread; heartbeat() is called after each renewal."""
        self._thread = threading.Thread(target=self._renew, args=(heartbeat,), daemon=True,
                                        name=f"lease-{self.names[0]}")
        self._thread.start()

    def _renew(self, heartbeat) -> None:
        last_ok = time.monotonic()
        while not self._stop.wait(self.ttl_s / 3):
            try:
                for lock in self.locks:
                    lock.reacquire()
                last_ok = time.monotonic()
            except LockNotOwnedError:
                self.lost = f"lease of {self.names[0]} lost (expired or taken by another run)"
            except redis.RedisError as exc:  # a Redis blip: try again until the TTL has passed
                if time.monotonic() - last_ok >= self.ttl_s:
                    self.lost = f"lease of {self.names[0]} not renewed for {self.ttl_s}s: {exc}"
            if self.lost:
                log.error("job=%s status=lease_lost token=%s error=%r", self.names[0], self.token, self.lost)
                return
            if heartbeat is not None:
                try:
                    heartbeat()
                except Exception as exc:  # the lease still protects the run; the reaper checks it too
                    log.warning("job=%s heartbeat_failed error=%r", self.names[0], str(exc)[:200])

    def check(self) -> None:
        """Raise LeaseLost if the renewal found the lease gone: call before writing."""
        if self.lost:
            raise LeaseLost(self.lost)

    def stop_renewing(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)

    def release(self) -> None:
        for lock in self.locks:
            lock.local.token = self.token.encode()
            _release(lock)


def _release(lock) -> None:
    try:
        lock.release()
    except LockError:  # expired, or taken since by another run: not ours to release
        pass


# Deletes a key only if it still holds the given value (the queued marker of this task).
_CLEAR_IF = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def clear_queued(client: redis.Redis, job_name: str, task_id: str) -> None:
    client.eval(_CLEAR_IF, 1, QUEUED_PREFIX + job_name, task_id)


def enqueue(client: redis.Redis, results: redis.Redis, send, job: Job) -> tuple[str, str]:
    """Queue the job's task unless it is queued or running already.

    Returns (task id, "queued"), or the existing task's id with "already_running" or
    "already_queued". `send(task name, task id)` publishes; `client` holds leases and
    queued markers; `results` is the result backend's Redis, where the ids issued here
    live as long as results do.
    """
    running = holder(client, job.name)
    if running:
        return running, "already_running"
    task_id = str(uuid.uuid4())
    key = QUEUED_PREFIX + job.name
    if not client.set(key, task_id, nx=True, ex=QUEUED_TTL_S):
        existing = client.get(key)
        if existing is None:  # it started (and cleared its marker) in between
            return holder(client, job.name) or "", "already_running"
        return existing.decode(), "already_queued"
    try:
        results.set(ISSUED_PREFIX + task_id, job.name, ex=ISSUED_TTL_S)
        send(job.task, task_id)
    except BaseException:
        clear_queued(client, job.name, task_id)
        raise
    return task_id, "queued"


def was_issued(results: redis.Redis, task_id: str) -> bool:
    return bool(results.exists(ISSUED_PREFIX + task_id))


# --- job_runs ---------------------------------------------------------------------------

def record_start(conn, job: str, token: str | None = None, parent_id: int | None = None) -> int:
    with conn.cursor() as cur:
        cur.execute("INSERT INTO job_runs (job, task_id, parent_id) VALUES (%s, %s, %s) RETURNING id",
                    (job, token, parent_id))
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


def check_open(conn, run_id: int) -> None:
    """A task continuing a run (a shard, the merge) only does so while the run's row is
    `running`: one the watchdog abandoned, or that failed, has been replaced by a new run."""
    with conn.cursor() as cur:
        cur.execute("SELECT status FROM job_runs WHERE id = %s", (run_id,))
        row = cur.fetchone()
    conn.commit()
    if row is None or row[0] != "running":
        raise LeaseLost(f"run {run_id} is {row[0] if row else 'gone'}, not running")


def heartbeat(conn, run_id: int) -> None:
    """The run's row and its running step rows are alive."""
    with conn.cursor() as cur:
        cur.execute("UPDATE job_runs SET heartbeat_at = clock_timestamp() "
                    "WHERE (id = %s OR parent_id = %s) AND status = 'running'", (run_id, run_id))
    conn.commit()


_ABANDON_SQL = """
UPDATE job_runs SET status = 'abandoned', finished_at = clock_timestamp(), error = %s,
       duration_ms = extract(epoch FROM heartbeat_at - started_at) * 1000
WHERE status = 'running' AND (id = ANY(%s) OR parent_id = ANY(%s))
"""


def abandon_unowned(conn, job_names) -> int:
    """Called holding these jobs' leases: any other `running` row of them is dead."""
    with conn.cursor() as cur:
        cur.execute("SELECT id FROM job_runs WHERE status = 'running' AND job = ANY(%s)", (list(job_names),))
        ids = [r[0] for r in cur.fetchall()]
        if ids:
            cur.execute(_ABANDON_SQL, ("abandoned: its lease had lapsed when the next run started", ids, ids))
    conn.commit()
    if ids:
        log.warning("job=%s status=abandoned runs=%s", ",".join(job_names), ids)
    return len(ids)


def reap_abandoned(conn, client: redis.Redis, settings) -> list[str]:
    """Mark runs whose token no longer holds their job's lease and whose heartbeat is older
    than one lease TTL as abandoned (with their steps). Returns the jobs of those runs.

    The lease is the proof of life (a live run that lost it stops writing), so one TTL of
    silence is enough here; /health waits STALE_LEASES TTLs before it calls a run stuck.
    """
    with conn.cursor() as cur:
        cur.execute("SELECT id, job, task_id FROM job_runs WHERE status = 'running' AND parent_id IS NULL "
                    "AND heartbeat_at < now() - make_interval(secs => %s)", (settings.job_lease_seconds,))
        dead = [(run_id, job) for run_id, job, token in cur.fetchall()
                if token is None or holder(client, job) != token]
        ids = [run_id for run_id, _ in dead]
        if ids:
            cur.execute(_ABANDON_SQL, ("abandoned: its lease lapsed and its heartbeat stopped (worker killed?)",
                                       ids, ids))
    conn.commit()
    for run_id, job in dead:
        log.warning("job=%s status=abandoned run=%s", job, run_id)
    return [job for _, job in dead]


# Numbers, not strings: extract() gives numeric, which JSON encoders render as text.
LAST_RUNS_SQL = """
SELECT DISTINCT ON (job) job, started_at, finished_at, duration_ms, rows_written, status, error,
       extract(epoch FROM now() - started_at)::float8 AS age_s
FROM job_runs ORDER BY job, started_at DESC
"""

LAST_SUCCESS_SQL = """
SELECT job, max(finished_at) AS finished_at, extract(epoch FROM now() - max(finished_at))::float8 AS age_s
FROM job_runs WHERE status = 'success' GROUP BY job
"""

RUNNING_SQL = """
SELECT id, job, task_id, extract(epoch FROM now() - started_at)::float8,
       extract(epoch FROM now() - heartbeat_at)::float8
FROM job_runs WHERE status = 'running' AND parent_id IS NULL ORDER BY started_at
"""


def job_health(cur, settings) -> dict:
    """Freshness of every scheduled job and the runs that are stuck, for /health.

    late: no success for more than twice the job's interval (a step of a successful
    refresh_all is a success of that job). stuck: a running run whose heartbeat is
    stale (its worker died) or that runs past its task's hard time limit.
    """
    cur.execute(LAST_SUCCESS_SQL)
    successes = {job: (finished, age) for job, finished, age in cur.fetchall()}
    freshness = {}
    for job in JOBS.values():
        interval = interval_seconds(job, settings)
        if interval is None:
            continue
        finished, age = successes.get(job.name, (None, None))
        freshness[job.name] = {
            "last_success": finished,
            "age_s": round(age, 1) if age is not None else None,
            "interval_s": interval,
            "late": age is None or age > 2 * interval,
        }
    cur.execute(RUNNING_SQL)
    stuck = []
    for run_id, job, token, age, beat_age in cur.fetchall():  # runs; their steps share their fate
        limit = JOBS[job].time_limit_s if job in JOBS else None
        if beat_age is not None and beat_age > stale_after_s(settings):
            reason = f"no heartbeat for {beat_age:.0f}s"
        elif limit is not None and age > limit:
            reason = f"running for {age:.0f}s, past its {limit}s time limit"
        else:
            continue
        stuck.append({"job": job, "run_id": run_id, "task_id": token, "age_s": round(age, 1), "reason": reason})
    return {"freshness": freshness, "late": [name for name, f in freshness.items() if f["late"]], "stuck": stuck}
