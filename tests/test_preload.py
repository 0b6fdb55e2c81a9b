"""workers/preload.py: users' rows cached ahead of their requests, within a memory budget,
never served once stale, on real PostgreSQL and Redis (the tiny preset)."""
import redis

from deploy.localproc import RedisServer, free_port
from shared.cache import LIKED, Cache, decode_user_row, user_row_field
from shared.db import connect_recs
from shared.settings import load_settings
from shared.store import SqlSource, prepare, user_row
from tests.conftest import make_env, query
from workers import preload


def _cache(url: str) -> Cache:
    return Cache(redis.Redis.from_url(url))


def _gens(cache: Cache) -> dict:
    return cache.generations(fresh=True)


def test_preloaded_rows_equal_the_database_rows_and_replace_older_ones(tiny_env):
    settings = load_settings(tiny_env)
    cache = _cache(settings.recommendations_redis_url)
    cache.client.flushdb()
    gens = {"popular": "1", "profiles": "2", "similarities": "3"}
    done = preload.preload_rows(settings, cache, gens)
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    profiled = [u for (u,) in query(recs, "SELECT user_id FROM user_profiles ORDER BY user_id")]
    listed = {u: n for u, n in query(recs, "SELECT user_id, cardinality(item_ids) FROM user_lists")}
    assert done["users"] == done["profiled"] == len(profiled) > len(listed) > 50 and "stopped" not in done, done
    conn = prepare(connect_recs(settings))
    source = SqlSource(lambda fn: fn(conn.cursor()))
    field = user_row_field({"profiles": "2", "lists": "1.2.3"})  # profiles 2, lists basis 1.2.3
    for user_id in profiled[:: max(1, len(profiled) // 30)]:
        key = f"recs:u:{user_id}"
        stored = cache.client.hget(key, field)
        assert stored.startswith(b"|")  # under the version the user had: none
        assert decode_user_row(user_id, stored[1:]) == user_row(user_id, source.user_raw(user_id))
        assert 0 < cache.client.ttl(key) <= 2 * settings.user_lists_refresh_minutes * 60
    conn.close()
    full = min(u for u, n in listed.items() if n == settings.recommendation_list_size)
    assert len(cache.client.hget(f"recs:u:{full}", field)) < 1000  # 200 ids packed: 4 bytes each, not 12
    # The next lists run's preload replaces each row: the older generation's field is deleted.
    preload.preload_rows(settings, cache, {**gens, "similarities": "4"})
    fields = cache.client.hkeys(f"recs:u:{profiled[0]}")
    assert fields == [user_row_field({"profiles": "2", "lists": "1.2.4"}).encode()], fields


def test_a_row_read_before_an_invalidation_is_never_served(tiny_env):
    settings = load_settings(tiny_env)
    cache = _cache(settings.recommendations_redis_url)
    cache.client.flushdb()
    gens = _gens(cache)
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    (user_id,), = query(recs, "SELECT user_id FROM user_profiles ORDER BY user_id LIMIT 1")
    versions = cache.user_versions([user_id, user_id + 10**9])
    assert versions == [b"", b""]  # no hash yet
    cache.record_feedback([(user_id, 1, LIKED)], ttl_s=600)  # an event between the version read and the write
    cache.preload_rows([(user_id, versions[0], b"stale-row")], gens, 600)
    assert cache.lookup_user(user_id, 0, "x").row is None
    # Under the version it read after the event, the row is served.
    (version,) = cache.user_versions([user_id])
    cache.preload_rows([(user_id, version, b"fresh-row")], gens, 600)
    assert cache.lookup_user(user_id, 0, "x").row == b"fresh-row"


def test_the_preload_stops_at_its_share_of_maxmemory_most_active_users_first(tiny_env, monkeypatch):
    server = RedisServer(maxmemory="4mb").start()
    try:
        settings = load_settings(make_env(tiny_env["MAIN_DATABASE_URL"], tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                                          server.url, PRELOAD_MEMORY_SHARE="0.05"))
        cache = _cache(settings.recommendations_redis_url)
        cap = cache.memory()[1]
        assert cap == 4 * 1024 * 1024
        monkeypatch.setattr(preload, "BATCH", 25)
        done = preload.preload_rows(settings, cache, {"popular": "1", "profiles": "2", "similarities": "3"})
        assert 0 < done["users"] < done["profiled"], done
        assert done["stopped"] == f"rows reached 0.05 x maxmemory {cap}", done
        # It stopped at the first batch past the budget: the rows' estimated size.
        assert 0.05 * cap <= done["bytes"] + preload.ROW_OVERHEAD * done["users"] < 0.05 * cap + 25 * 2048
        recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
        counts = dict(query(recs, "SELECT user_id, interaction_count FROM user_profiles"))
        loaded = {int(k.split(b":")[-1]) for k in cache.client.scan_iter(match="recs:u:*")}
        assert len(loaded) == done["users"]
        assert min(counts[u] for u in loaded) >= max(counts[u] for u in counts if u not in loaded)
        # A Redis already near its cap gets no rows (it would start evicting).
        monkeypatch.setattr(preload, "FULL", cache.memory()[0] / cap)
        again = preload.preload_rows(settings, cache, {"popular": "1", "profiles": "2", "similarities": "4"})
        assert again["users"] == 0 and again["stopped"].startswith("redis used_memory"), again
    finally:
        server.stop()


def test_a_redis_outage_stops_the_preload_not_the_job(tiny_env):
    settings = load_settings(make_env(tiny_env["MAIN_DATABASE_URL"], tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                                      f"redis://127.0.0.1:{free_port()}"))
    done = preload.preload_rows(settings, Cache(redis.Redis.from_url(settings.recommendations_redis_url,
                                                                     socket_connect_timeout=0.5)),
                                {"popular": "1", "profiles": "2", "similarities": "3"})
    assert done["users"] == 0 and done["stopped"].startswith("redis unavailable"), done


def test_no_preload_with_a_share_of_zero(tiny_env):
    settings = load_settings({**tiny_env, "PRELOAD_MEMORY_SHARE": "0"})
    cache = _cache(settings.recommendations_redis_url)
    cache.client.flushdb()
    done = preload.preload_rows(settings, cache, {"popular": "1", "profiles": "2", "similarities": "3"})
    assert done["users"] == 0 and cache.client.dbsize() == 0
