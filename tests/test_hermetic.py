"""A test run touches only what it created, whatever the shell exports; the Redis cap spares the broker."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import redis

from api import create_app
from deploy.localproc import RedisServer
from shared.cache import Cache
from tests.live import ROOT, clean_env

CLOSED = "postgresql://127.0.0.1:1/poison"


def test_a_test_run_ignores_service_settings_in_the_shell(redis_server_factory):
    """Run real tests (an admin enqueue, a live Celery worker) with a deployed host's variables exported."""
    poison = redis_server_factory()
    try:
        shell = {"CELERY_BROKER_URL": f"{poison.url}/15", "CELERY_RESULT_BACKEND": f"{poison.url}/15",
                 "RECOMMENDATIONS_REDIS_URL": f"{poison.url}/15", "MAIN_DATABASE_URL": CLOSED,
                 "RECOMMENDATIONS_DATABASE_URL": CLOSED, "BASIC_AUTH_USERNAME": "u", "BASIC_AUTH_PASSWORD": "p",
                 "DB_TIMEOUT_MS": "50", "SIMILARITY_SHARDS": "7"}
        if "TEST_POSTGRES_URL" in os.environ:
            shell["TEST_POSTGRES_URL"] = os.environ["TEST_POSTGRES_URL"]
        out = subprocess.run(
            [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider",
             "tests/test_api.py::test_admin_enqueues_the_named_task",
             "tests/test_live.py::test_celery_worker_runs_refresh_all_and_sharded_similarities"],
            cwd=ROOT, env=clean_env(shell), capture_output=True, text=True, timeout=600)
        assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-2000:]
        assert "2 passed" in out.stdout
        written = {db: redis.Redis.from_url(f"{poison.url}/{db}").dbsize() for db in range(16)}
        assert written == {db: 0 for db in range(16)}
    finally:
        poison.stop()


def test_cache_past_the_memory_cap_evicts_cache_keys_only(tiny_env):
    server = RedisServer(maxmemory="8mb").start()
    try:
        env = dict(tiny_env, RECOMMENDATIONS_REDIS_URL=f"{server.url}/1", CELERY_BROKER_URL=f"{server.url}/2",
                   CELERY_RESULT_BACKEND=f"{server.url}/3")
        client = create_app(env).test_client()
        queued = client.post("/admin/refresh-popular-items")  # a real Celery message, no TTL
        assert queued.status_code == 202
        broker = redis.Redis.from_url(env["CELERY_BROKER_URL"])
        assert broker.llen("recs") == 1
        cache_client = redis.Redis.from_url(env["RECOMMENDATIONS_REDIS_URL"])
        cache = Cache(cache_client)
        served = client.post("/popular", json={"user_params": {"gender": "f"}}).get_json()
        for i in range(400):  # ~20 MB of cache entries into an 8 MB server
            cache.store_miss(f"recs:pop:filler:{i}", b"x" * 50_000, 3600)
        info = cache_client.info()
        assert info["evicted_keys"] > 0 and info["used_memory"] <= 9 * 1024 * 1024
        # The broker's queue (no TTL) is intact; serving still works, from cache or DB.
        message = json.loads(broker.lindex("recs", 0))
        assert broker.llen("recs") == 1 and message["headers"]["id"] == queued.get_json()["task_id"]
        again = client.post("/popular", json={"user_params": {"gender": "f"}})
        assert again.status_code == 200 and again.get_json()["items"] == served["items"]
        # Every key the service wrote carries a TTL, so every one of them is evictable.
        # (-1: no TTL; -2: evicted or expired between the SCAN and the TTL call, which is fine.)
        assert all(cache_client.ttl(k) != -1 for k in cache_client.scan_iter("recs:*"))
    finally:
        server.stop()
