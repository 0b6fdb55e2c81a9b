"""/dashboard and its JSON reads on the tiny preset: protection, real figures, and a user
preview that matches what /personalized serves and explains it from the stored data."""
import base64

import pytest
import redis

from api import create_app
from shared.cache import Cache, LATENCY_BOUNDS_MS
from tests.conftest import query
from tests.test_api import users_by_count


@pytest.fixture
def client(tiny_env):
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    return create_app(tiny_env).test_client()


def test_loopback_only_without_credentials(client, tiny_env):
    for path in ("/dashboard", "/dashboard/api/overview", "/dashboard/api/user/5"):
        assert client.get(path).status_code == 200
        far = client.get(path, environ_base={"REMOTE_ADDR": "10.1.2.3"})
        assert far.status_code == 403 and far.get_json()["error"] == "forbidden"
    authed = create_app(dict(tiny_env, BASIC_AUTH_USERNAME="ops", BASIC_AUTH_PASSWORD="pw")).test_client()
    assert authed.get("/dashboard", environ_base={"REMOTE_ADDR": "10.1.2.3"}).status_code == 401
    token = base64.b64encode(b"ops:pw").decode()
    ok = authed.get("/dashboard", headers={"Authorization": f"Basic {token}"}, environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert ok.status_code == 200 and b"User preview" in ok.data


def test_page_loads_nothing_from_another_host(client):
    html = client.get("/dashboard").get_data(as_text=True)
    assert "<script src" not in html and "<link" not in html and "://" not in html.replace(
        "http://www.w3.org/2000/svg", "")


def test_overview_has_jobs_series_and_volumes(client, tiny_env):
    for _ in range(3):
        assert client.post("/popular", json={"user_params": {"gender": "f"}}).status_code == 200
    body = client.get("/dashboard/api/overview").get_json()
    jobs = body["jobs"]
    assert set(jobs) >= {"popular_items", "user_profiles", "user_similarities", "cleanup_cache"}
    pop = jobs["popular_items"]
    assert pop["runs"] and pop["runs"][0]["status"] == "success" and pop["late"] is False and pop["age_s"] >= 0
    minutes = body["series"]["minutes"]
    assert len(minutes) == 60 and minutes[-1]["minute"] > minutes[0]["minute"]
    assert sum(m.get("requests", 0) for m in minutes) >= 3 and sum(m.get("misses", 0) for m in minutes) >= 1
    assert sum(m.get("n", 0) for m in minutes) == 3 and sum(m.get("ms", 0) for m in minutes) > 0
    vols = body["volumes"]["recommendations_db"]
    items = query(tiny_env["RECOMMENDATIONS_DATABASE_URL"], "SELECT count(*) FROM items")[0][0]
    assert vols["items"] == items and vols["job_runs"] >= 4
    assert body["volumes"]["main_db"]["counts"]["users"] == 600


def test_minute_series_survives_a_failed_flush(redis_server_factory):
    server = redis_server_factory()
    cache = Cache(redis.Redis.from_url(f"{server.url}/1", socket_timeout=0.5), breaker_s=0)
    cache.note_latency(0.0004)
    cache.note_latency(0.030)
    server.stop()
    with pytest.raises(Exception):
        cache.generations()
    server2 = redis_server_factory()
    try:
        cache.client = redis.Redis.from_url(f"{server2.url}/1")
        row = cache.minute_series(2)[-1]
        assert row["n"] == 2 and row["ms"] == pytest.approx(30.4)
        assert row["b0"] == 1 and row[f"b{LATENCY_BOUNDS_MS.index(50)}"] == 1
        ttl = cache.client.ttl(f"recs:ts:{row['minute']}")
        assert 0 < ttl <= 7200
    finally:
        server2.stop()


def test_user_preview_is_the_served_list_with_reasons(client, tiny_env):
    users = users_by_count(tiny_env)
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    for kind, algorithm in (("many", "collaborative"), ("few", "content_based"), ("zero", "popular")):
        user_id = users[kind]
        served = client.post("/personalized", json={"user_id": user_id, "pagination": {"limit": 20}}).get_json()
        body = client.get(f"/dashboard/api/user/{user_id}").get_json()
        assert body["algorithm"] == algorithm and served["algorithm_used"].startswith(algorithm)
        assert [i["item_id"] for i in body["items"]] == served["items"]
        titles = dict(query(recs, "SELECT item_id, title FROM items WHERE item_id = ANY(%s)", (served["items"],)))
        for item in body["items"]:
            assert item["title"] == titles[item["item_id"]] and item["title"]
            assert item["price"] is not None and item["category"]
        assert body["bucket"]["interactions"] == {"many": "3+", "few": "1-2", "zero": "0"}[kind]
    many = client.get(f"/dashboard/api/user/{users['many']}").get_json()
    neighbours = query(recs, "SELECT similar_user_id FROM user_similarities WHERE user_id = %s", (users["many"],))
    assert many["neighbour_count"] == len(neighbours) > 0
    liked = dict(query(recs, "SELECT user_id, liked_item_ids FROM user_profiles WHERE user_id = ANY(%s)",
                       ([n for n, in neighbours],)))
    explained = 0
    for item in many["items"]:
        by = {n["user_id"] for n in item["why"]["liked_by_neighbours"]}
        assert by == {u for u, ids in liked.items() if item["item_id"] in ids}
        explained += bool(by) or "collaborative_score" in item["why"] or "popular_in" in item["why"]
    assert explained == len(many["items"])
    few = client.get(f"/dashboard/api/user/{users['few']}").get_json()
    assert few["profile"]["categories"] and few["profile"]["avg_price"]
    assert any(i["why"]["category_weight"] > 0 for i in few["items"])
    assert all(0 < i["why"]["price_match"] <= 1 for i in few["items"])


def test_user_preview_rejects_a_bad_id(client):
    r = client.get("/dashboard/api/user/abc")
    assert r.status_code == 400 and r.get_json()["errors"][0]["field"] == "user_id"
    unknown = client.get("/dashboard/api/user/99999999").get_json()
    assert unknown["known"] is False and unknown["algorithm"] == "popular" and unknown["items"]
