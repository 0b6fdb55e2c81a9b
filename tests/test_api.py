"""The HTTP API on the tiny preset, through Flask's test client, against real PostgreSQL and Redis."""
import base64
import io
import json
import re
import subprocess
import sys

import pytest
import redis

from api import create_app
from tests.conftest import query

POPULAR_BODY = {"user_params": {"gender": "f", "age": "25-34", "category": "fashion", "geo_id": 213},
                "filters": {"price_from": 500, "price_to": 20000}, "pagination": {"page": 1, "limit": 20}}


@pytest.fixture
def client(tiny_env):
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    return create_app(tiny_env).test_client()


def users_by_count(env):
    rows = query(env["RECOMMENDATIONS_DATABASE_URL"],
                 "SELECT user_id, interaction_count FROM user_profiles ORDER BY user_id")
    pick = lambda pred: next(u for u, n in rows if pred(n))  # noqa: E731
    return {"zero": pick(lambda n: n == 0), "few": pick(lambda n: 1 <= n <= 2), "many": pick(lambda n: n >= 5)}


def item_rows(env, ids):
    rows = query(env["RECOMMENDATIONS_DATABASE_URL"],
                 "SELECT item_id, price, category, geo_id, in_stock FROM items WHERE item_id = ANY(%s)", (list(ids),))
    return {r[0]: r for r in rows}


def test_popular_contract_and_filters(client, tiny_env):
    r = client.post("/popular", json=POPULAR_BODY)
    assert r.status_code == 200
    body = r.get_json()
    assert set(body) == {"items", "pagination", "computation_time_ms", "algorithm_used", "cache_hit"}
    assert set(body["pagination"]) == {"page", "limit", "total_pages", "has_next", "has_previous"}
    assert body["algorithm_used"] == "popular" and body["cache_hit"] is False and body["items"]
    for item_id, price, category, geo, in_stock in item_rows(tiny_env, body["items"]).values():
        assert 500 <= price <= 20000 and category == "fashion" and geo in (None, 213) and in_stock
    again = client.post("/popular", json=POPULAR_BODY).get_json()
    assert again["cache_hit"] is True and again["items"] == body["items"]


def test_popular_aliases_and_integer_age(client):
    a = client.post("/popular", json={"user_params": {"gender": "female", "age": 29}}).get_json()
    b = client.post("/popular", json={"user_params": {"gender": "f", "age": "25-34"}}).get_json()
    assert a["items"] == b["items"] and a["items"]


def test_popular_never_shows_items_tagged_for_another_gender(client, tiny_env):
    body = client.post("/popular", json={"user_params": {"gender": "m"}, "pagination": {"limit": 100}}).get_json()
    tagged_f = {r[0] for r in query(tiny_env["MAIN_DATABASE_URL"],
                                    "SELECT id FROM handpicked_presents WHERE categories->>'gender' = 'f'")}
    assert tagged_f and not tagged_f & set(body["items"])


def test_empty_body_is_global_popular(client):
    r = client.post("/popular", data="")
    assert r.status_code == 200 and r.get_json()["items"]


def test_prepared_statements_survive_a_table_swap(client, tiny_env):
    from shared.cache import Cache
    from shared.settings import load_settings
    from workers import pipeline

    assert client.post("/popular", json={"user_params": {"geo_id": 2}}).status_code == 200
    settings = load_settings(tiny_env)
    pipeline.refresh_popular_items(settings, Cache(redis.Redis.from_url(settings.recommendations_redis_url)))
    r = client.post("/popular", json={"user_params": {"geo_id": 54}, "filters": {"price_to": 99999}})
    assert r.status_code == 200 and r.get_json()["items"] and r.get_json()["cache_hit"] is False


def test_pages_never_overlap_or_skip(client, tiny_env):
    user = users_by_count(tiny_env)["many"]
    whole = client.post("/personalized", json={"user_id": user, "geo_id": 213,
                                               "pagination": {"page": 1, "limit": 100}}).get_json()
    pages, page = [], 1
    while True:
        body = client.post("/personalized", json={"user_id": user, "geo_id": 213,
                                                  "pagination": {"page": page, "limit": 7}}).get_json()
        if not body["items"]:
            assert body["pagination"]["has_next"] is False
            break
        pages.extend(body["items"])
        assert body["pagination"]["has_previous"] is (page > 1)
        page += 1
    assert len(pages) == len(set(pages))
    assert pages[:100] == whole["items"]
    assert body["pagination"]["total_pages"] == page - 1


def test_personalized_algorithm_by_history_and_liked_excluded(client, tiny_env):
    users = users_by_count(tiny_env)
    expected = {"zero": "popular", "few": "content_based", "many": "collaborative"}
    for kind, user in users.items():
        body = client.post("/personalized", json={"user_id": user, "geo_id": 213,
                                                  "pagination": {"limit": 100}}).get_json()
        assert body["algorithm_used"].split("+")[0] == expected[kind], (kind, body["algorithm_used"])
        liked = query(tiny_env["MAIN_DATABASE_URL"],
                      "SELECT handpicked_present_id FROM handpicked_likes WHERE user_id = %s", (user,))
        assert not {r[0] for r in liked} & set(body["items"])
        rows = item_rows(tiny_env, body["items"])
        assert len(rows) == len(body["items"])  # every id is a public catalogue item ...
        assert all(r[4] for r in rows.values())  # ... in stock


def test_unknown_user_gets_popular(client):
    body = client.post("/personalized", json={"user_id": 987654321, "geo_id": 213}).get_json()
    assert body["algorithm_used"] == "popular" and body["items"]


def test_short_list_is_filled_and_labelled(client, tiny_env):
    user = users_by_count(tiny_env)["many"]
    # One category: the user's neighbours and segment cover few items, broader segments fill the rest.
    labels, seen, page = [], [], 1
    while True:
        body = client.post("/personalized", json={"user_id": user, "geo_id": 213, "filters": {"category": "books"},
                                                  "pagination": {"page": page, "limit": 10}}).get_json()
        if not body["items"]:
            break
        labels.append(body["algorithm_used"])
        seen.extend(body["items"])
        page += 1
    assert labels[0].startswith("collaborative")
    assert any(label == "collaborative+popular" for label in labels), labels
    assert len(seen) == len(set(seen))
    categories = {r[2] for r in item_rows(tiny_env, seen).values()}
    assert categories == {"books"}


def test_page_past_the_end_is_empty_not_an_error(client):
    r = client.post("/popular", json={"pagination": {"page": 5000, "limit": 100}})
    assert r.status_code == 200
    assert r.get_json()["items"] == [] and r.get_json()["pagination"]["has_next"] is False


BAD = [
    ("/popular", b"{not json", "body"),
    ("/popular", [1, 2], "body"),
    ("/popular", {"user_params": {"gender": "robot"}}, "user_params.gender"),
    ("/popular", {"user_params": {"age": "teen"}}, "user_params.age"),
    ("/popular", {"user_params": {"age": -3}}, "user_params.age"),
    ("/popular", {"user_params": {"geo_id": "Moscow"}}, "user_params.geo_id"),
    ("/popular", {"user_params": "f"}, "user_params"),
    ("/popular", {"filters": {"price_from": 2000, "price_to": 500}}, "filters.price_from"),
    ("/popular", {"filters": {"price_from": -1}}, "filters.price_from"),
    ("/popular", {"filters": {"price_to": True}}, "filters.price_to"),
    ("/popular", {"pagination": {"limit": 101}}, "pagination.limit"),
    ("/popular", {"pagination": {"limit": 0}}, "pagination.limit"),
    ("/popular", {"pagination": {"page": 0}}, "pagination.page"),
    ("/popular", {"pagination": {"page": "2"}}, "pagination.page"),
    ("/personalized", {"geo_id": 213}, "user_id"),
    ("/personalized", {"user_id": -5}, "user_id"),
    ("/personalized", {"user_id": True}, "user_id"),
    ("/personalized", {"user_id": 10**30}, "user_id"),
    ("/personalized", {"user_id": "١٢٣"}, "user_id"),  # Arabic-Indic digits are not an id
    ("/personalized", {"user_id": "9" * 5000}, "user_id"),
    ("/personalized", {"user_id": "1" * 30}, "user_id"),
    ("/personalized", {"user_id": 5, "geo_id": 1.5}, "geo_id"),
]


@pytest.mark.parametrize("path,body,field", BAD)
def test_bad_input_is_a_4xx_naming_the_field(client, path, body, field):
    data = body if isinstance(body, bytes) else json.dumps(body)
    r = client.post(path, data=data, content_type="application/json")
    assert r.status_code == 400, r.get_data(as_text=True)
    payload = r.get_json()
    assert payload["error"] == "invalid_request"
    assert field in [e["field"] for e in payload["errors"]], payload
    assert all(e["rule"] for e in payload["errors"])
    text = r.get_data(as_text=True)
    assert "sys." not in text and "int_max_str_digits" not in text and "Traceback" not in text


def test_huge_body_is_413(client):
    r = client.post("/popular", data=b'{"x": "' + b"a" * 200_000 + b'"}', content_type="application/json")
    assert r.status_code == 413 and r.get_json()["errors"][0]["field"] == "body"


def test_extra_fields_are_ignored(client):
    body = dict(POPULAR_BODY, utf8="✓", controller="gifts", user_params=dict(POPULAR_BODY["user_params"], extra=1))
    assert client.post("/popular", json=body).status_code == 200


def test_unknown_route_and_method_are_json(client):
    assert client.get("/nope").get_json()["error"] == "not_found"
    r = client.get("/popular")
    assert r.status_code == 405 and r.is_json and set(r.headers["Allow"].split(", ")) >= {"POST"}
    r = client.post("/stats")
    assert r.status_code == 405 and "GET" in r.headers["Allow"] and r.get_json()["error"] == "method_not_allowed"


def test_stats_redacts_passwords_in_the_query_string_too(tiny_env):
    url = tiny_env["MAIN_DATABASE_URL"] + "?password=SECRET1&application_name=x"
    redis_url = tiny_env["RECOMMENDATIONS_REDIS_URL"].replace("redis://", "redis://:SECRET2@")
    config = create_app(dict(tiny_env, MAIN_DATABASE_URL=url, CELERY_RESULT_BACKEND=redis_url)).test_client() \
        .get("/stats").get_json()["config"]
    assert config["main_database_url"].endswith("?password=***&application_name=x")
    assert ":***@" in config["celery_result_backend"]
    assert "SECRET" not in json.dumps(config)


def test_request_path_never_imports_pandas_or_sklearn(tiny_env):
    code = (
        "import sys, json\n"
        "from api import create_app\n"
        f"app = create_app({tiny_env!r})\n"
        "c = app.test_client()\n"
        "assert c.post('/popular', json={}).status_code == 200\n"
        "assert c.post('/personalized', json={'user_id': 3}).status_code == 200\n"
        "heavy = sorted(m for m in sys.modules if m.split('.')[0] in ('pandas', 'sklearn', 'scipy'))\n"
        "print(json.dumps(heavy))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert json.loads(out.stdout.strip().splitlines()[-1]) == []


def test_stats(client, tiny_env):
    client.post("/popular", json={})
    client.post("/popular", json={})
    body = client.get("/stats").get_json()
    assert body["main_db"]["counts"]["presents_public"] == 500
    assert body["main_db"]["counts"]["presents_private"] > 0
    assert body["recommendations_db"]["tables"]["items"] == 500
    jobs = body["recommendations_db"]["jobs"]
    assert jobs["popular_items"]["status"] == "success" and jobs["popular_items"]["duration_ms"] > 0
    assert all(type(job["age_s"]) is float and job["age_s"] >= 0 for job in jobs.values())  # numbers, as in /health
    cache = body["cache"]["today"]
    assert cache["hits"] >= 1 and cache["misses"] >= 1 and 0 < cache["hit_rate"] < 1
    assert body["config"]["max_page_size"] == 100 and "basic_auth_password" not in body["config"]


def test_health_ok_then_degraded_when_a_job_is_late(client, tiny_env):
    body = client.get("/health").get_json()
    assert body["status"] == "ok" and all(c["status"] == "up" for c in body["checks"].values())
    assert all("latency_ms" in c for c in body["checks"].values())
    url = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    import psycopg2

    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("UPDATE job_runs SET finished_at = finished_at - interval '1 hour', "
                    "started_at = started_at - interval '1 hour' WHERE job = 'popular_items' RETURNING id")
        ids = [r[0] for r in cur.fetchall()]
    conn.commit()
    try:
        client = create_app(tiny_env).test_client()  # a new process: /health results are cached per process
        r = client.get("/health")
        assert r.status_code == 200 and r.get_json()["status"] == "degraded"
        assert r.get_json()["late_jobs"] == ["popular_items"]  # 15-minute job, an hour old
    finally:
        with conn.cursor() as cur:
            cur.execute("UPDATE job_runs SET finished_at = finished_at + interval '1 hour', "
                        "started_at = started_at + interval '1 hour' WHERE id = ANY(%s)", (ids,))
        conn.commit()
        conn.close()


def test_openapi_covers_every_route(client):
    doc = client.get("/openapi.json").get_json()
    assert doc["openapi"].startswith("3.")
    # Static files (Swagger UI's assets under /docs/static) are not API operations.
    app_routes = {str(r) for r in client.application.url_map.iter_rules() if not r.endpoint.endswith("static")}
    documented = {re.sub(r"\{(\w+)\}", r"<\1>", p) for p in doc["paths"]}
    admin = {"/admin/" + p for p in ("refresh-popular-items", "update-user-profiles", "update-user-similarities",
                                     "cleanup-cache", "refresh-all")}
    assert admin <= documented
    assert {r for r in app_routes if "<action>" not in r} <= documented
    assert "user_id" in doc["components"]["schemas"]["PersonalizedRequest"]["properties"]


def test_admin_is_loopback_only_without_credentials(client):
    r = client.post("/admin/refresh-popular-items", environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 403 and r.is_json


def test_admin_conflict_when_running_and_unknown_action(client, tiny_env):
    from shared import jobs

    lease = jobs.Lease(redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]), jobs.JOBS["user_profiles"], 30,
                       "the-running-task").acquire()
    try:
        r = client.post("/admin/update-user-profiles")
        assert r.status_code == 409 and r.get_json()["status"] == "already_running"
        assert r.get_json()["task_id"] == "the-running-task"
    finally:
        lease.release()
    assert client.post("/admin/rebuild-everything").status_code == 404


def test_admin_enqueues_the_named_task(client, tiny_env):
    broker = redis.Redis.from_url(tiny_env["CELERY_BROKER_URL"])
    broker.delete("recs")
    r = client.post("/admin/refresh-popular-items")
    assert r.status_code == 202
    body = r.get_json()
    assert body["task"] == "recs.refresh_popular_items" and body["task_id"]
    queued = [json.loads(m) for m in broker.lrange("recs", 0, -1)]
    assert any(m["headers"]["task"] == "recs.refresh_popular_items" and m["headers"]["id"] == body["task_id"]
               for m in queued)
    state = client.get(f"/admin/tasks/{body['task_id']}").get_json()
    assert state["state"] == "PENDING"
    # Asked again while it waits in the queue: 409 naming the queued task, nothing sent.
    again = client.post("/admin/refresh-popular-items")
    assert again.status_code == 409
    assert again.get_json() == {"status": "already_queued", "task": "recs.refresh_popular_items",
                                "task_id": body["task_id"]}
    assert broker.llen("recs") == len(queued)
    # Another job is not affected.
    other = client.post("/admin/cleanup-cache")
    assert other.status_code == 202 and other.get_json()["task_id"] != body["task_id"]
    broker.delete("recs")
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).delete("recs:queued:popular_items",
                                                                       "recs:queued:cleanup_cache")


def test_admin_task_state_is_404_for_an_id_never_issued(client):
    import uuid

    r = client.get(f"/admin/tasks/{uuid.uuid4()}")
    assert r.status_code == 404 and r.get_json()["error"] == "not_found"
    assert client.get("/admin/tasks/not-even-a-uuid").status_code == 404


def basic(user: bytes, password: bytes, scheme: str = "Basic") -> dict:
    return {"Authorization": f"{scheme} " + base64.b64encode(user + b":" + password).decode()}


def test_basic_auth_guards_everything_but_the_probes(tiny_env):
    client = create_app(dict(tiny_env, BASIC_AUTH_USERNAME="ops", BASIC_AUTH_PASSWORD="s3cret")).test_client()
    r = client.post("/popular", json={})
    assert r.status_code == 401 and r.is_json and r.headers["WWW-Authenticate"].startswith("Basic ")
    assert client.get("/stats").status_code == 401
    assert client.post("/personalized", json={"user_id": 3}).status_code == 401
    for probe in ("/health", "/livez", "/readyz"):
        assert client.get(probe).status_code == 200, probe
    assert client.post("/popular", json={}, headers=basic(b"ops", b"nope")).status_code == 401
    assert client.post("/popular", json={}, headers=basic(b"ops", b"s3cret", "Bearer")).status_code == 401
    assert client.post("/popular", json={}, headers={"Authorization": "Basic !!notbase64"}).status_code == 401
    for scheme in ("Basic", "basic", "BASIC"):  # RFC 7617: the scheme is case-insensitive
        assert client.post("/popular", json={}, headers=basic(b"ops", b"s3cret", scheme)).status_code == 200, scheme
    # With credentials, admin is reachable from other hosts.
    r = client.post("/admin/rebuild", headers=basic(b"ops", b"s3cret"), environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert r.status_code == 404


def test_authenticated_requests_take_the_fast_path(tiny_env):
    from flask import request_started

    app = create_app(dict(tiny_env, BASIC_AUTH_USERNAME="ops", BASIC_AUTH_PASSWORD="pw"))
    client, seen = app.test_client(), []

    def started(sender, **extra):
        seen.append(1)

    request_started.connect(started, app)
    try:
        r = client.post("/popular", json=POPULAR_BODY, headers=basic(b"ops", b"pw"))
        assert r.status_code == 200 and seen == []  # answered without Flask's request machinery
        assert client.get("/stats", headers=basic(b"ops", b"pw")).status_code == 200 and seen == [1]
    finally:
        request_started.disconnect(started, app)


def test_fast_path_and_flask_views_answer_alike(tiny_env):
    # The fast path serves the two endpoints; the Flask views (the same logic) stay registered.
    fast = create_app(tiny_env).test_client()
    views = create_app(tiny_env)
    del views.wsgi_app  # Flask's own WSGI app: no middleware, no fast path
    flask_views = views.test_client()
    for path, body in [("/popular", POPULAR_BODY), ("/personalized", {"user_id": 3, "pagination": {"limit": 5}}),
                       ("/popular", {"pagination": {"limit": 0}}), ("/personalized", {"user_id": "x"})]:
        a, b = fast.post(path, json=body), flask_views.post(path, json=body)
        assert a.status_code == b.status_code and a.mimetype == b.mimetype == "application/json"
        ja, jb = a.get_json(), b.get_json()
        for j in (ja, jb):
            j.pop("computation_time_ms", None)
            j.pop("cache_hit", None)
        assert ja == jb, path


def test_chunked_bodies_are_sized_before_any_view(client):
    # A chunked upload has no Content-Length: it is read up to the limit, then served, or refused whole.
    body = json.dumps(POPULAR_BODY).encode()
    sized = client.post("/popular", data=body, content_type="application/json").get_json()
    chunked = {"wsgi.input_terminated": True, "CONTENT_LENGTH": "", "HTTP_TRANSFER_ENCODING": "chunked"}
    r = client.post("/popular", input_stream=io.BytesIO(body), content_type="application/json",
                    environ_overrides=chunked)
    assert r.status_code == 200 and r.get_json()["items"] == sized["items"]
    big = b'{"x": "' + b"a" * (70 * 1024) + b'"}'
    for path in ("/popular", "/admin/refresh-all"):
        r = client.post(path, input_stream=io.BytesIO(big), content_type="application/json", environ_overrides=chunked)
        assert r.status_code == 413 and r.get_json()["errors"][0]["field"] == "body", path


def test_unexpected_error_is_a_json_500_without_a_trace(client, monkeypatch):
    import api.recommendations

    def broken(*args, **kwargs):
        raise RuntimeError("secret internals")

    monkeypatch.setattr(api.recommendations, "popular_list", broken)
    r = client.post("/popular", json={"filters": {"price_from": 123.25}})  # a key nobody cached
    assert r.status_code == 500
    assert r.get_json() == {"error": "internal_error", "message": "internal error; see the server log"}
    assert b"secret internals" not in r.get_data() and b"Traceback" not in r.get_data()


def test_personalized_lists_of_a_user_share_one_hash(client, tiny_env):
    from shared.cache import Cache, decode_list, user_key

    user = users_by_count(tiny_env)["many"]
    r = redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"])
    first = client.post("/personalized", json={"user_id": user}).get_json()
    assert first["cache_hit"] is False and r.ttl(user_key(user)) > 0
    # Another filter for the same user is another field of the same hash, next to the user's
    # row (profile and precomputed list) cached by the first request.
    other = client.post("/personalized", json={"user_id": user, "filters": {"price_to": 5000}}).get_json()
    assert other["cache_hit"] is False and other["algorithm_used"].startswith("collaborative")
    cached = r.hgetall(user_key(user))
    # Two lists (no precomputed list is current here: both were computed) and the row,
    # stored under the user's (empty) version.
    assert sorted(name[:4] for name in cached) == [b"l:0.", b"l:0.", b"l:u:"]
    assert all(v.startswith(b"|") for v in cached.values())
    assert any(decode_list(v[1:])[0][:len(first["items"])] == first["items"]
               for name, v in cached.items() if not name.startswith(b"l:u:"))
    assert Cache(r).invalidate_users([user]) == 1
    assert client.post("/personalized", json={"user_id": user}).get_json()["cache_hit"] is False


def test_job_ages_are_numbers_in_stats_and_health(client):
    jobs = client.get("/stats").get_json()["recommendations_db"]["jobs"]
    assert jobs and all(isinstance(run["age_s"], float) for run in jobs.values()), jobs
    fresh = client.get("/health").get_json()["freshness"]
    assert all(isinstance(f["age_s"], float) for f in fresh.values()), fresh
