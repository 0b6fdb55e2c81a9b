"""Real processes: gunicorn's access log, and a Celery worker running recs.refresh_all.

The Rails client against gunicorn is in tests/test_ruby_client.py.
"""
import time

import pytest
import redis
from celery import Celery

from deploy.seed import seed
from shared.jobs import JOBS, is_running
from tests.conftest import query
from tests.live import start_api, start_worker


@pytest.fixture(scope="module")
def live_api(tiny_env):
    proc, url = start_api(tiny_env)
    yield proc, url
    proc.stop()


def test_gunicorn_access_log_is_key_value(live_api):
    import re
    import urllib.request

    proc, url = live_api
    req = urllib.request.Request(url + "/popular", data=b'{"user_params": {"geo_id": 2}}',
                                 headers={"Content-Type": "application/json"})
    assert urllib.request.urlopen(req, timeout=5).status == 200
    for _ in range(50):
        if "path=/popular" in proc.output():
            break
        time.sleep(0.1)
    assert re.search(r"method=POST path=/popular status=200 algorithm=popular cache_hit=(true|false) ms=[0-9.]+",
                     proc.output()), proc.output()[-2000:]


def test_celery_worker_runs_refresh_all_and_sharded_similarities(hand_env):
    seed(hand_env["MAIN_DATABASE_URL"], "tiny", 7, replace=True, quiet=True)
    recs = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    worker = start_worker(dict(hand_env, SIMILARITY_SHARDS="2"))
    try:
        app = Celery("test", broker=hand_env["CELERY_BROKER_URL"], backend=hand_env["CELERY_RESULT_BACKEND"])
        outcome = app.send_task("recs.refresh_all", queue="recs").get(timeout=180)
        assert outcome["status"] == "success", worker.output()[-3000:]
        for table in ("items", "popular_items", "user_profiles", "user_similarities", "user_recommendations"):
            assert query(recs, f"SELECT count(*) FROM {table}")[0][0] > 0, table
        # With SIMILARITY_SHARDS=2 the scheduled job fans out to shard tasks and a merge.
        dispatched = app.send_task("recs.update_user_similarities", queue="recs").get(timeout=60)
        assert dispatched["status"] == "dispatched" and dispatched["shards"] == 2
        deadline = time.time() + 120
        while time.time() < deadline:
            done = query(recs, "SELECT count(*) FROM job_runs WHERE job = 'user_similarities' AND status = 'success'")
            if done[0][0] >= 2:
                break
            time.sleep(0.5)
        log = worker.output()
    finally:
        worker.stop()
    assert done[0][0] >= 2, log[-3000:]
    assert "job=refresh_all status=success" in log
    assert "job=user_similarities_shard shard=1/2" in log and "job=user_similarities_shard shard=0/2" in log


def test_a_failed_similarity_shard_is_recorded_as_a_failed_run(hand_env):
    # A main DB without the main tables: each shard fails for good (not a transient error).
    recs = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    worker = start_worker(dict(hand_env, SIMILARITY_SHARDS="2", MAIN_DATABASE_URL=recs))
    try:
        app = Celery("test", broker=hand_env["CELERY_BROKER_URL"], backend=hand_env["CELERY_RESULT_BACKEND"])
        dispatched = app.send_task("recs.update_user_similarities", queue="recs").get(timeout=60)
        assert dispatched["status"] == "dispatched"
        deadline = time.time() + 60
        failed = []
        while time.time() < deadline and not failed:
            failed = query(recs, "SELECT error FROM job_runs WHERE job = 'user_similarities' AND status = 'failed'")
            time.sleep(0.5)
        log = worker.output()
    finally:
        worker.stop()
    assert len(failed) == 1, log[-3000:]
    assert failed[0][0].startswith(f"sharded run {dispatched['run_tag']}: ChordError"), failed[0][0]
    assert "UndefinedTable" in failed[0][0] or "does not exist" in failed[0][0], failed[0][0]
    assert query(recs, "SELECT count(*) FROM job_runs WHERE status = 'running' OR finished_at IS NULL")[0][0] == 0
    assert "job=user_similarities status=failed" in log
    client = redis.Redis.from_url(hand_env["RECOMMENDATIONS_REDIS_URL"])
    assert not is_running(client, JOBS["user_similarities"])  # the failed run released its lock
