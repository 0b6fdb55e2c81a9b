"""Celery tasks: thin wrappers around workers.pipeline with stable names, limits and retries."""
from __future__ import annotations

import logging

import psycopg2
import redis
from celery import chord, current_app, shared_task

from shared import jobs
from shared.cache import Cache, make_client
from shared.jobs import JOBS, QUEUE
from shared.live import LIVE_SYNC_TASK
from shared.settings import get_settings
from workers import pipeline

log = logging.getLogger("recs.tasks")
_cache: Cache | None = None
SHARD_TASK = "recs.user_similarities_shard"
MERGE_TASK = "recs.merge_user_similarities"
FAILED_TASK = "recs.similarity_run_failed"
TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError, redis.ConnectionError, redis.TimeoutError)
# A task waiting for a lease retries every JOB_LEASE_SECONDS, this many times at most.
LEASE_WAIT_RETRIES = 30


def reset_clients():
    global _cache
    _cache = None


def _cache_client() -> Cache:
    global _cache
    if _cache is None:
        _cache = Cache(make_client(get_settings().recommendations_redis_url, timeout_s=30))
    return _cache


def _run(task, fn, job_name: str):
    settings = get_settings()
    token = task.request.id
    try:
        result = fn(settings, _cache_client(), token=token)
    except jobs.AlreadyRunning as exc:
        if exc.holder == token or exc.job != job_name:
            # This task's own earlier delivery holds the lease: its worker died, and the
            # lease lapses within one TTL. Or a step of refresh_all is held by a scheduled
            # run of that job. Either way the job must still run: try again after a TTL.
            log.info("job=%s status=waiting_for_lease held=%s by=%s", job_name, exc.job, exc.holder)
            raise task.retry(exc=exc, countdown=settings.job_lease_seconds, max_retries=LEASE_WAIT_RETRIES)
        log.info("job=%s status=already_running by=%s", job_name, exc.holder)
        jobs.clear_queued(_cache_client().client, job_name, token)  # this task will not run: not queued any more
        return {"status": "already_running", "job": job_name, "task_id": exc.holder}
    return {"status": "success", "job": job_name, **{k: v for k, v in result.items() if not isinstance(v, dict)}}


def _task(job_name: str, fn):
    job = JOBS[job_name]

    @shared_task(
        name=job.task,
        bind=True,
        acks_late=True,
        soft_time_limit=job.time_limit_s - 60,
        time_limit=job.time_limit_s,
        autoretry_for=TRANSIENT,
        retry_backoff=10,
        retry_backoff_max=300,
        retry_jitter=True,
        max_retries=3,
    )
    def task(self):
        return _run(self, fn, job_name)

    return task


def _shard_dispatcher(settings):
    """SIMILARITY_SHARDS > 1: the similarity computation of a run (the scheduled job's or
    refresh_all's) as one task per shard, any worker on any machine, and a merge that
    finishes the run."""
    shards = settings.similarity_shards

    def dispatch(handle: dict) -> None:
        chord(similarity_shard.s(shard, shards, handle) for shard in range(shards))(
            merge_similarities.s(handle, shards).on_error(similarity_run_failed.s(handle)))
        log.info("job=%s status=dispatched shards=%s run=%s", handle["job"], shards, handle["token"])

    return dispatch


def _update_user_similarities(settings, cache, token=None):
    if settings.similarity_shards == 1:
        return pipeline.update_user_similarities(settings, cache, token=token)
    return pipeline.dispatch_user_similarities(settings, cache, _shard_dispatcher(settings), token)


def _refresh_all(settings, cache, token=None):
    dispatch = _shard_dispatcher(settings) if settings.similarity_shards > 1 else None
    return pipeline.refresh_all(settings, cache, token=token, dispatch_similarities=dispatch)


refresh_popular_items = _task("popular_items", pipeline.refresh_popular_items)
update_user_profiles = _task("user_profiles", pipeline.update_user_profiles)
update_user_similarities = _task("user_similarities", _update_user_similarities)
update_user_lists = _task("user_lists", pipeline.update_user_lists)
cleanup_cache = _task("cleanup_cache", pipeline.cleanup_cache)
refresh_all = _task("refresh_all", _refresh_all)


@shared_task(name=SHARD_TASK, bind=True, acks_late=True, soft_time_limit=jobs.SHARD_TIME_LIMIT_S - 300,
             time_limit=jobs.SHARD_TIME_LIMIT_S, autoretry_for=TRANSIENT, retry_backoff=10, retry_backoff_max=300,
             max_retries=3)
def similarity_shard(self, shard: int, shards: int, handle: dict):
    return pipeline.compute_similarity_shard(get_settings(), _cache_client(), shard, shards, handle)


@shared_task(name=MERGE_TASK, bind=True, acks_late=True, soft_time_limit=jobs.MERGE_TIME_LIMIT_S - 100,
             time_limit=jobs.MERGE_TIME_LIMIT_S, autoretry_for=TRANSIENT, retry_backoff=10, retry_backoff_max=300,
             max_retries=3)
def merge_similarities(self, shard_rows, handle: dict, shards: int):
    return _run(self, lambda settings, cache, token: pipeline.merge_similarity_shards(settings, cache, handle, shards),
                handle["job"])


@shared_task(name=FAILED_TASK)
def similarity_run_failed(request, exc, traceback, handle: dict):
    """Errback of the merge: Celery calls it when a shard fails for good (a ChordError) or
    the merge itself does, with the failing request, the exception and its traceback."""
    pipeline.fail_similarity_run(get_settings(), _cache_client(), handle, f"{type(exc).__name__}: {exc}")


def _send(task_name: str, task_id: str) -> None:
    current_app.send_task(task_name, task_id=task_id, queue=QUEUE)


@shared_task(name=jobs.REAPER_TASK, ignore_result=True, soft_time_limit=45, time_limit=55)
def reap_abandoned_runs():
    """The watchdog (beat, every minute): a run whose worker died is marked abandoned and
    its job queued again, unless it is queued or running already."""
    settings, cache = get_settings(), _cache_client()
    for name in pipeline.reap_abandoned_runs(settings, cache):
        task_id, status = jobs.enqueue(cache.client, current_app.backend.client, _send, JOBS[name])
        log.warning("job=%s status=requeued task=%s enqueue=%s", name, task_id, status)


@shared_task(name=LIVE_SYNC_TASK, soft_time_limit=540, time_limit=600)
def sync_recent_activity():
    """Beat runs it every LIVE_SYNC_SECONDS; a run that finds another one running returns at once."""
    from workers import live

    try:
        return {"status": "success", **live.sync_recent_activity(get_settings(), _cache_client())}
    except live.AlreadyRunning:
        return {"status": "already_running", "job": "live_sync"}
