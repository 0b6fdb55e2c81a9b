"""Celery tasks: thin wrappers around workers.pipeline with stable names, limits and retries."""
from __future__ import annotations

import logging
import uuid

import psycopg2
import redis
from celery import chord, shared_task

from shared.cache import Cache, make_client
from shared.jobs import JOBS, lock_for_run, release_run
from shared.live import LIVE_SYNC_TASK
from shared.settings import get_settings
from workers import pipeline

log = logging.getLogger("recs.tasks")
_cache: Cache | None = None
SHARD_TASK = "recs.user_similarities_shard"
MERGE_TASK = "recs.merge_user_similarities"
FAILED_TASK = "recs.similarity_run_failed"
TRANSIENT = (psycopg2.OperationalError, psycopg2.InterfaceError, redis.ConnectionError, redis.TimeoutError)


def reset_clients():
    global _cache
    _cache = None


def _cache_client() -> Cache:
    global _cache
    if _cache is None:
        _cache = Cache(make_client(get_settings().recommendations_redis_url, timeout_s=30))
    return _cache


def _run(fn, job_name: str):
    try:
        result = fn(get_settings(), _cache_client())
    except pipeline.AlreadyRunning:
        log.info("job=%s status=already_running", job_name)
        return {"status": "already_running", "job": job_name}
    return {"status": "success", "job": job_name, **{k: v for k, v in result.items() if not isinstance(v, dict)}}


def _task(job_name: str, fn):
    job = JOBS[job_name]

    @shared_task(
        name=job.task,
        bind=True,
        acks_late=True,
        soft_time_limit=job.lock_ttl_s - 60,
        time_limit=job.lock_ttl_s,
        autoretry_for=TRANSIENT,
        retry_backoff=10,
        retry_backoff_max=300,
        retry_jitter=True,
        max_retries=3,
    )
    def task(self):
        return _run(fn, job_name)

    return task


def _update_user_similarities(settings, cache):
    """In this worker, or, with SIMILARITY_SHARDS > 1, as a chord of shard tasks any worker
    (on any machine) can take, merged by recs.merge_user_similarities."""
    shards = settings.similarity_shards
    if shards == 1:
        return pipeline.update_user_similarities(settings, cache)
    run_tag = uuid.uuid4().hex
    job = JOBS["user_similarities"]
    # The run holds the job's lock from here until its merge (or the errback) releases it.
    if not lock_for_run(cache.client, job, run_tag):
        raise pipeline.AlreadyRunning(job.name)
    try:
        chord(similarity_shard.s(shard, shards, run_tag) for shard in range(shards))(
            merge_similarities.s(run_tag, shards).on_error(similarity_run_failed.s(run_tag)))
    except BaseException:
        release_run(cache.client, job, run_tag)
        raise
    log.info("job=user_similarities status=dispatched shards=%s run=%s", shards, run_tag)
    return {"status": "dispatched", "rows": 0, "shards": shards, "run_tag": run_tag}


refresh_popular_items = _task("popular_items", pipeline.refresh_popular_items)
update_user_profiles = _task("user_profiles", pipeline.update_user_profiles)
update_user_similarities = _task("user_similarities", _update_user_similarities)
update_user_lists = _task("user_lists", pipeline.update_user_lists)
cleanup_cache = _task("cleanup_cache", pipeline.cleanup_cache)
refresh_all = _task("refresh_all", pipeline.refresh_all)


@shared_task(name=SHARD_TASK, bind=True, acks_late=True, soft_time_limit=3300, time_limit=3600,
             autoretry_for=TRANSIENT, retry_backoff=10, retry_backoff_max=300, max_retries=3)
def similarity_shard(self, shard: int, shards: int, run_tag: str):
    return pipeline.compute_similarity_shard(get_settings(), shard, shards, run_tag)


@shared_task(name=MERGE_TASK, bind=True, acks_late=True, soft_time_limit=1700, time_limit=1800,
             autoretry_for=TRANSIENT, retry_backoff=10, retry_backoff_max=300, max_retries=3)
def merge_similarities(self, shard_rows, run_tag: str, shards: int):
    return _run(lambda settings, cache: pipeline.merge_similarity_shards(settings, cache, run_tag, shards),
                "user_similarities")


@shared_task(name=FAILED_TASK)
def similarity_run_failed(request, exc, traceback, run_tag: str):
    """Errback of the merge: Celery calls it when a shard fails for good (a ChordError) or
    the merge itself does, with the failing request, the exception and its traceback."""
    pipeline.fail_similarity_run(get_settings(), _cache_client(), run_tag, f"{type(exc).__name__}: {exc}")


@shared_task(name=LIVE_SYNC_TASK, soft_time_limit=540, time_limit=600)
def sync_recent_activity():
    """Beat runs it every LIVE_SYNC_SECONDS; a run that finds another one running returns at once."""
    from workers import live

    try:
        return {"status": "success", **live.sync_recent_activity(get_settings(), _cache_client())}
    except live.AlreadyRunning:
        return {"status": "already_running", "job": "live_sync"}
