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


def _wait_for(url, sql, params=(), timeout=120):
    deadline = time.time() + timeout
    while True:
        rows = query(url, sql, params)
        if rows or time.time() > deadline:
            return rows
        time.sleep(0.5)


def test_celery_worker_runs_refresh_all_and_sharded_similarities(hand_env):
    seed(hand_env["MAIN_DATABASE_URL"], "tiny", 7, replace=True, quiet=True)
    recs = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    worker = start_worker(dict(hand_env, SIMILARITY_SHARDS="2"))
    try:
        app = Celery("test", broker=hand_env["CELERY_BROKER_URL"], backend=hand_env["CELERY_RESULT_BACKEND"])
        outcome = app.send_task("recs.refresh_all", queue="recs").get(timeout=180)
        # SIMILARITY_SHARDS means shard tasks on every path: refresh_all hands its similarity
        # step to them, and their merge runs the last step and finishes the refresh_all run.
        assert outcome["status"] == "dispatched" and outcome["shards"] == 2, worker.output()[-3000:]
        finished = _wait_for(recs, "SELECT id, rows_written FROM job_runs WHERE job = 'refresh_all' "
                                   "AND status = 'success'")
        assert finished, worker.output()[-3000:]
        steps = dict(query(recs, "SELECT job, status FROM job_runs WHERE parent_id = %s", (finished[0][0],)))
        assert steps == {name: "success" for name in JOBS["refresh_all"].steps}
        assert finished[0][1] == query(recs, "SELECT sum(rows_written) FROM job_runs WHERE parent_id = %s",
                                       (finished[0][0],))[0][0]
        for table in ("items", "popular_items", "user_profiles", "user_similarities", "user_recommendations"):
            assert query(recs, f"SELECT count(*) FROM {table}")[0][0] > 0, table
        # The scheduled job fans out the same way.
        dispatched = app.send_task("recs.update_user_similarities", queue="recs").get(timeout=60)
        assert dispatched["status"] == "dispatched" and dispatched["shards"] == 2
        done = _wait_for(recs, "SELECT 1 FROM job_runs WHERE job = 'user_similarities' AND parent_id IS NULL "
                               "AND status = 'success'")
        log = worker.output()
    finally:
        worker.stop()
    assert done, log[-3000:]
    assert query(recs, "SELECT count(*) FROM job_runs WHERE status <> 'success'")[0][0] == 0
    assert "job=refresh_all status=success" in log
    assert "job=user_similarities_shard shard=1/2" in log and "job=user_similarities_shard shard=0/2" in log
    assert not is_running(redis.Redis.from_url(hand_env["RECOMMENDATIONS_REDIS_URL"]), JOBS["refresh_all"])


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


KILL_ENV = {"JOB_LEASE_SECONDS": "2"}  # leases lapse (and heartbeats go stale) in seconds, not minutes
ANSWERS = [{"user_params": {"gender": g, "geo_id": 213}, "pagination": {"limit": 50}} for g in ("f", "m", None)]


def _refreshed_env(hand_env):
    """The tiny preset, refreshed once in-process: the data a killed run must leave whole."""
    import redis as redis_lib

    from shared.cache import Cache
    from shared.settings import load_settings
    from workers import pipeline

    seed(hand_env["MAIN_DATABASE_URL"], "tiny", 7, replace=True, quiet=True)
    env = dict(hand_env, **KILL_ENV)
    settings = load_settings(env)
    pipeline.refresh_all(settings, Cache(redis_lib.Redis.from_url(settings.recommendations_redis_url)))
    return env


def _answers(client):
    out = []
    for body in ANSWERS:
        r = client.post("/popular", json=body)
        assert r.status_code == 200
        out.append(r.get_json()["items"])
    return out


def _kill_in_the_middle(env, worker, task_id, kill):
    """Wait until refresh_all `task_id` is between steps, then kill."""
    recs = env["RECOMMENDATIONS_DATABASE_URL"]
    rows = _wait_for(recs, "SELECT r.id FROM job_runs r JOIN job_runs s ON s.parent_id = r.id "
                           "WHERE r.task_id = %s AND r.status = 'running' AND s.status = 'running'",
                     (task_id,), timeout=60)
    assert rows, worker.output()[-3000:]
    kill()
    return rows[0][0]


def test_kill_9_of_the_worker_mid_refresh_all_heals_without_anyone(hand_env):
    import os
    import signal

    from api import create_app

    env = _refreshed_env(hand_env)
    recs = env["RECOMMENDATIONS_DATABASE_URL"]
    client = create_app(env).test_client()
    before = _answers(client)
    app = Celery("test", broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    worker = start_worker(env)
    try:
        task_id = app.send_task("recs.refresh_all", queue="recs").id
        killed = time.time()

        def kill_all():  # the worker and its pool process, as an OOM kill of the container would
            os.killpg(worker.proc.pid, signal.SIGKILL)
            worker.proc.wait()

        run_id = _kill_in_the_middle(env, worker, task_id, kill_all)
        assert _answers(client) == before  # the old data is served
        # Its heartbeat goes stale (2 leases): /health reports the run as stuck.
        time.sleep(2 * 2 + 1)
        health = client.get("/health").get_json()
        assert health["status"] == "degraded", health
        assert [(s["job"], s["run_id"]) for s in health["stuck_jobs"]] == [("refresh_all", run_id)]
        # A supervisor restarts the worker; beat sends the watchdog every minute (here: sooner).
        worker.stop()
        worker = start_worker(env)
        deadline = time.time() + 300
        done = []
        while time.time() < deadline and not done:
            app.send_task("recs.reap_abandoned_runs", queue="recs")
            assert _answers(client) == before  # identical lists throughout
            done = query(recs, "SELECT id FROM job_runs WHERE job = 'refresh_all' AND status = 'success' "
                               "AND id > %s", (run_id,))
            time.sleep(1)
        log = worker.output()
    finally:
        worker.stop()
    assert done, log[-3000:]
    assert time.time() - killed < 300
    assert _answers(client) == before
    assert query(recs, "SELECT status FROM job_runs WHERE id = %s OR parent_id = %s", (run_id, run_id)) and all(
        status == "abandoned" for (status,) in
        query(recs, "SELECT status FROM job_runs WHERE id = %s OR parent_id = %s", (run_id, run_id)))
    assert query(recs, "SELECT count(*) FROM job_runs WHERE status = 'running'")[0][0] == 0
    assert "job=refresh_all status=requeued" in log
    assert not is_running(redis.Redis.from_url(env["RECOMMENDATIONS_REDIS_URL"]), JOBS["refresh_all"])
    health = client.get("/health").get_json()
    assert health["status"] == "ok" and "stuck_jobs" not in health, health


def test_a_redelivered_task_after_a_killed_pool_process_runs_the_job(hand_env):
    import os
    import signal
    from pathlib import Path

    # A lease long enough that the redelivery (within a second or two) finds it still held.
    env = dict(_refreshed_env(hand_env), JOB_LEASE_SECONDS="8")
    recs = env["RECOMMENDATIONS_DATABASE_URL"]
    app = Celery("test", broker=env["CELERY_BROKER_URL"], backend=env["CELERY_RESULT_BACKEND"])
    worker = start_worker(env)
    try:
        result = app.send_task("recs.refresh_all", queue="recs")

        def kill_pool_process():  # the worker's main process sees it die and re-queues the task
            pid = worker.proc.pid
            children = Path(f"/proc/{pid}/task/{pid}/children").read_text().split()
            assert len(children) == 1
            os.kill(int(children[0]), signal.SIGKILL)

        run_id = _kill_in_the_middle(env, worker, result.id, kill_pool_process)
        outcome = result.get(timeout=180)
        log = worker.output()
    finally:
        worker.stop()
    # Not "already_running": the redelivery waited for its dead lease to lapse, then ran.
    assert outcome["status"] == "success", log[-3000:]
    runs = query(recs, "SELECT id, status FROM job_runs WHERE task_id = %s AND parent_id IS NULL ORDER BY id",
                 (result.id,))
    assert runs[0] == (run_id, "abandoned") and runs[-1][1] == "success", runs
    assert "job=refresh_all status=waiting_for_lease held=refresh_all by=" + result.id in log, log[-4000:]
    assert query(recs, "SELECT count(*) FROM job_runs WHERE status = 'running'")[0][0] == 0
