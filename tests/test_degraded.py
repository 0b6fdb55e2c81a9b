"""Broken dependencies, really broken: a stopped Redis server, closed database ports."""
import pytest

from api import create_app

CLOSED = "postgresql://127.0.0.1:1/nowhere"


@pytest.fixture
def own_redis(redis_server_factory):
    server = redis_server_factory()
    yield server
    server.stop()


def env_with_redis(env, server):
    return dict(env, RECOMMENDATIONS_REDIS_URL=f"{server.url}/1", CELERY_BROKER_URL=f"{server.url}/2")


def test_redis_down_serves_from_the_database(tiny_env, own_redis):
    client = create_app(env_with_redis(tiny_env, own_redis)).test_client()
    warm = client.post("/popular", json={"user_params": {"gender": "f"}}).get_json()
    assert client.post("/popular", json={"user_params": {"gender": "f"}}).get_json()["cache_hit"] is True
    own_redis.stop()
    cold = client.post("/popular", json={"user_params": {"gender": "f"}})
    assert cold.status_code == 200
    assert cold.get_json()["cache_hit"] is False and cold.get_json()["items"] == warm["items"]
    pers = client.post("/personalized", json={"user_id": 5, "geo_id": 213})
    assert pers.status_code == 200 and pers.get_json()["items"]
    # Still serving (from the DB): degraded, not out of rotation.
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "degraded"
    assert health.get_json()["failing"] == ["redis"]
    assert health.get_json()["serving"] == {"cache_hits": False, "cache_misses": True}
    assert client.get("/readyz").status_code == 200
    assert client.get("/stats").status_code == 200
    assert client.post("/admin/refresh-all").status_code == 503


def test_recommendations_db_down_serves_cache_and_503s_a_miss(tiny_env, own_redis):
    env = env_with_redis(tiny_env, own_redis)
    good = create_app(env).test_client()
    body = {"user_params": {"gender": "m", "age": "35-44"}}
    cached = good.post("/popular", json=body).get_json()
    down = create_app(dict(env, RECOMMENDATIONS_DATABASE_URL=CLOSED)).test_client()
    hit = down.post("/popular", json=body)
    assert hit.status_code == 200 and hit.get_json()["cache_hit"] is True
    assert hit.get_json()["items"] == cached["items"]
    miss = down.post("/popular", json={"user_params": {"gender": "f", "age": "55+"}})
    assert miss.status_code == 503
    assert miss.get_json()["error"] == "unavailable" and "recommendations database" in miss.get_json()["message"]
    assert down.post("/personalized", json={"user_id": 3}).status_code == 503
    # Cache hits are still served: degraded, ready.
    health = down.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "degraded"
    assert health.get_json()["failing"] == ["recommendations_db"]
    assert down.get("/readyz").status_code == 200
    stats = down.get("/stats")
    assert stats.status_code == 200 and "error" in stats.get_json()["recommendations_db"]


def test_main_db_down_leaves_requests_unaffected(tiny_env, own_redis):
    client = create_app(dict(env_with_redis(tiny_env, own_redis), MAIN_DATABASE_URL=CLOSED)).test_client()
    assert client.post("/popular", json={}).status_code == 200
    assert client.post("/personalized", json={"user_id": 3, "geo_id": 213}).status_code == 200
    health = client.get("/health")
    assert health.status_code == 200 and health.get_json()["status"] == "degraded"
    assert health.get_json()["failing"] == ["main_db"] and health.get_json()["checks"]["redis"]["status"] == "up"
    ready = client.get("/readyz")
    assert ready.status_code == 200 and ready.get_json()["status"] == "ready"


def test_redis_and_recommendations_db_down_cannot_serve(tiny_env, own_redis):
    client = create_app(dict(env_with_redis(tiny_env, own_redis), RECOMMENDATIONS_DATABASE_URL=CLOSED)).test_client()
    own_redis.stop()
    assert client.post("/popular", json={}).status_code == 503
    health = client.get("/health")
    assert health.status_code == 503 and health.get_json()["status"] == "unavailable"
    assert set(health.get_json()["failing"]) == {"redis", "recommendations_db"}
    ready = client.get("/readyz")
    assert ready.status_code == 503 and ready.get_json()["status"] == "unavailable"
    live = client.get("/livez")
    assert live.status_code == 200 and live.get_json() == {"status": "ok"}


def test_admin_task_state_is_a_bounded_503_when_the_result_backend_is_frozen(tiny_env, own_redis):
    import signal
    import time

    env = dict(env_with_redis(tiny_env, own_redis), CELERY_RESULT_BACKEND=f"{own_redis.url}/3")
    client = create_app(env).test_client()
    queued = client.post("/admin/cleanup-cache")
    assert queued.status_code == 202
    task = f"/admin/tasks/{queued.get_json()['task_id']}"
    assert client.get(task).get_json()["state"] == "PENDING"
    own_redis.proc.send_signal(signal.SIGSTOP)  # accepts connections, answers nothing
    try:
        started = time.monotonic()
        r = client.get(task)
        elapsed = time.monotonic() - started
    finally:
        own_redis.proc.send_signal(signal.SIGCONT)
    assert r.status_code == 503 and r.get_json()["error"] == "unavailable", r.get_data()
    assert elapsed < 1.0 + 1.5, elapsed  # one 1 s socket timeout, no retry loop
    assert client.get(task).status_code == 200  # and back once Redis answers
