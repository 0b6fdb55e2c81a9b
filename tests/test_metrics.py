"""GET /metrics: request counters from the WSGI layer, multiprocess aggregation under real
gunicorn, dependency errors from a really stopped Redis, job metrics read from job_runs."""
import base64
import urllib.request

import psycopg2
import pytest
import redis
from prometheus_client.parser import text_string_to_metric_families

from api import create_app
from tests.conftest import query
from tests.live import start_api


def samples(text: str) -> list:
    return [s for family in text_string_to_metric_families(text) for s in family.samples]


def value(text: str, name: str, **labels) -> float:
    """Sum of the samples called `name` whose labels include `labels`."""
    return sum(s.value for s in samples(text) if s.name == name and labels.items() <= s.labels.items())


def get(url: str, headers=None) -> tuple[int, str]:
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as resp:
        return resp.status, resp.read().decode()


def post(url: str, body: bytes) -> int:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=10) as resp:
        resp.read()
        return resp.status


def test_counts_requests_by_endpoint_status_algorithm_and_hit(tiny_env):
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    client = create_app(tiny_env).test_client()
    before = client.get("/metrics").get_data(as_text=True)
    body = {"user_params": {"gender": "m", "age": "45-54"}}
    for _ in range(3):
        assert client.post("/popular", json=body).status_code == 200
    assert client.post("/popular", json={"pagination": {"page": 0}}).status_code == 400
    assert client.get("/no/such/path/123").status_code == 404
    r = client.get("/metrics")
    assert r.status_code == 200 and r.content_type.startswith("text/plain")
    after = r.get_data(as_text=True)

    def delta(name, **labels):
        return value(after, name, **labels) - value(before, name, **labels)

    name = "recs_http_requests_total"
    assert delta(name, endpoint="/popular", status="200", algorithm="popular", cache_hit="false") == 1
    assert delta(name, endpoint="/popular", status="200", algorithm="popular", cache_hit="true") == 2
    assert delta(name, endpoint="/popular", status="400") == 1
    # An unknown path is counted without becoming a label value of its own.
    assert delta(name, endpoint="other", status="404") >= 1
    assert not any("/no/such" in str(s.labels) for s in samples(after))
    # Listed from the start (0 until a web worker's queue of stores for Redis overflows).
    assert any(s.name == "recs_cache_stores_dropped_total" for s in samples(after))
    assert delta("recs_http_request_duration_seconds_count", endpoint="/popular", cache_hit="true") == 2


def test_metrics_off_answers_404_and_counts_nothing(tiny_env):
    client = create_app(dict(tiny_env, METRICS_ENABLED="0")).test_client()
    assert client.get("/metrics").status_code == 404
    on = create_app(tiny_env).test_client()
    before = value(on.get("/metrics").get_data(as_text=True), "recs_http_requests_total", endpoint="/personalized")
    assert client.post("/personalized", json={"user_id": 3}).status_code == 200
    after = value(on.get("/metrics").get_data(as_text=True), "recs_http_requests_total", endpoint="/personalized")
    assert after == before


def test_job_metrics_come_from_job_runs(tiny_env):
    text = create_app(tiny_env).test_client().get("/metrics").get_data(as_text=True)
    assert value(text, "recs_job_metrics_up") == 1
    rows = query(tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                 "SELECT DISTINCT ON (job) job, extract(epoch FROM finished_at), rows_written FROM job_runs "
                 "WHERE status = 'success' ORDER BY job, finished_at DESC")
    assert {r[0] for r in rows} >= {"popular_items", "user_profiles", "user_similarities"}
    for job, finished, rows_written in rows:
        assert value(text, "recs_job_last_success_timestamp_seconds", job=job) == pytest.approx(float(finished))
        assert value(text, "recs_job_last_success_rows", job=job) == rows_written
        assert value(text, "recs_job_last_success_duration_seconds", job=job) > 0
    failures = dict(query(tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                          "SELECT job, count(*) FILTER (WHERE status = 'failed') FROM job_runs GROUP BY job"))
    for job, n in failures.items():
        assert value(text, "recs_job_failures_total", job=job) == n


def test_a_dead_recommendations_db_leaves_the_scrape_up(tiny_env):
    client = create_app(dict(tiny_env, RECOMMENDATIONS_DATABASE_URL="postgresql://127.0.0.1:1/nowhere")).test_client()
    r = client.get("/metrics")
    assert r.status_code == 200
    text = r.get_data(as_text=True)
    assert value(text, "recs_job_metrics_up") == 0
    assert value(text, "recs_dependency_errors_total", dependency="recommendations_db") >= 1


@pytest.fixture
def own_redis(redis_server_factory):
    server = redis_server_factory()
    yield server
    server.stop()


def test_gunicorn_workers_add_up_and_a_stopped_redis_is_counted(tiny_env, own_redis, tmp_path):
    env = dict(tiny_env, RECOMMENDATIONS_REDIS_URL=f"{own_redis.url}/1", TMPDIR=str(tmp_path))
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    proc, url = start_api(env)
    try:
        owned = list(tmp_path.glob("recs-metrics-*"))
        assert len(owned) == 1, "gunicorn makes its own multiprocess directory when none is set"
        body = b'{"user_params": {"gender": "f", "age": "18-24"}}'
        for _ in range(40):  # two workers: the requests land on both
            assert post(url + "/popular", body) == 200
        assert list(owned[0].glob("counter_*.db")), "workers write their counters to files there"
        for _ in range(4):  # whichever worker answers the scrape reports both workers' counts
            text = get(url + "/metrics")[1]
            assert value(text, "recs_http_requests_total", endpoint="/popular", status="200") == 40
        own_redis.stop()
        for _ in range(4):
            assert post(url + "/popular", body) == 200  # served from the database
        status, text = get(url + "/metrics")
        assert value(text, "recs_dependency_errors_total", dependency="redis") >= 1
        assert value(text, "recs_http_requests_total", endpoint="/popular", cache_hit="false") >= 4
    finally:
        proc.stop()
    assert not list(tmp_path.glob("recs-metrics-*")), "the directory is removed when gunicorn exits"


def test_a_given_multiprocess_dir_is_cleared_at_start(tiny_env, tmp_path):
    stale = tmp_path / "counter_999999.db"
    stale.write_bytes(b"left over from an earlier run")
    proc, url = start_api(dict(tiny_env, PROMETHEUS_MULTIPROC_DIR=str(tmp_path)))
    try:
        assert not stale.exists()
        assert get(url + "/metrics")[0] == 200
    finally:
        proc.stop()
    assert tmp_path.exists(), "a directory the operator chose is not deleted"


def test_metrics_need_credentials_when_basic_auth_is_on(tiny_env):
    client = create_app(dict(tiny_env, BASIC_AUTH_USERNAME="ops", BASIC_AUTH_PASSWORD="pw")).test_client()
    assert client.get("/metrics").status_code == 401
    token = base64.b64encode(b"ops:pw").decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {token}"}).status_code == 200
    # Without credentials configured it is open to any client: Prometheus scrapes from another host.
    open_client = create_app(tiny_env).test_client()
    assert open_client.get("/metrics", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 200



def test_live_sync_lag_is_exported_after_a_sync(tiny_env):
    import redis as redis_lib

    from shared.cache import Cache
    from shared.settings import load_settings
    from workers import live

    settings = load_settings(tiny_env)
    url = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    try:
        live.sync_recent_activity(settings, Cache(redis_lib.Redis.from_url(settings.recommendations_redis_url)))
        client = create_app(tiny_env).test_client()
        text = client.get("/metrics").get_data(as_text=True)
        since = value(text, "recs_live_sync_since_last_run_seconds")
        assert 0 <= since < 60
        assert 0 <= value(text, "recs_live_sync_lag_seconds") < 60
        assert client.get("/stats").get_json()["recommendations_db"]["live_sync"]["caught_up"] is True
    finally:
        conn = psycopg2.connect(url)
        with conn.cursor() as cur:
            cur.execute("TRUNCATE live_sync_state, live_touched_users")  # the shared tiny DB as it was
        conn.commit()
        conn.close()
