"""GET /categories lists what a request can name, from the recommendations DB's items."""
import pytest
import redis

from api import create_app
from tests.conftest import query


@pytest.fixture
def client(tiny_env):
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    return create_app(tiny_env).test_client()


def test_categories_with_in_stock_counts(client, tiny_env):
    r = client.get("/categories")
    assert r.status_code == 200
    got = {c["category"]: c["items"] for c in r.get_json()["categories"]}
    expected = dict(query(tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                          "SELECT category, count(*) FROM items WHERE in_stock GROUP BY category"))
    assert got == expected and len(got) > 3
    names = [c["category"] for c in r.get_json()["categories"]]
    assert names == sorted(names)


def test_every_listed_category_can_be_requested(client):
    for entry in client.get("/categories").get_json()["categories"][:5]:
        body = client.post("/popular", json={"user_params": {"category": entry["category"]}}).get_json()
        assert body["items"], entry


def test_unknown_category_is_an_empty_list_not_an_error(client):
    # The documented choice: 200 and no items, as for a category whose items are all sold out.
    for body in ({"user_params": {"category": "spaceships"}}, {"filters": {"category": "spaceships"}}):
        r = client.post("/popular", json=body)
        assert r.status_code == 200 and r.get_json()["items"] == []


def test_categories_is_a_503_when_the_recommendations_db_is_down(tiny_env):
    env = dict(tiny_env, RECOMMENDATIONS_DATABASE_URL="postgresql://127.0.0.1:1/nowhere", DB_TIMEOUT_MS="500")
    r = create_app(env).test_client().get("/categories")
    assert r.status_code == 503 and r.get_json()["error"] == "unavailable"
