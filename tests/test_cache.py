"""The cache layer on fakeredis (fast unit tests; the API tests use a real Redis)."""
import fakeredis
import pytest

from shared.cache import Cache, CacheUnavailable, personalized_key, popular_key


@pytest.fixture
def cache():
    return Cache(fakeredis.FakeRedis())


def test_bump_changes_keys(cache):
    g1 = cache.generations_and_count()
    k1 = popular_key(g1, (213, "f", "any", "any"), "f")
    cache.bump("popular")
    g2 = cache.generations_and_count()
    assert popular_key(g2, (213, "f", "any", "any"), "f") != k1
    # Personalized keys depend on all three kinds.
    p = personalized_key(g2, 5, 213, "f")
    cache.bump("similarities")
    assert personalized_key(cache.generations_and_count(), 5, 213, "f") != p


def test_every_key_has_a_ttl(cache):
    gens = cache.generations_and_count()
    cache.bump("profiles")
    cache.store_miss(popular_key(gens, (0, "any", "any", "any"), "f"), b"[]", 900)
    for key in cache.client.scan_iter("*"):
        assert cache.client.ttl(key) > 0, key


def test_cleanup_drops_dead_generations_only(cache):
    old = cache.generations_and_count()
    dead = [popular_key(old, (i, "any", "any", "any"), "f") for i in range(2500)]
    for k in dead:
        cache.client.set(k, b"x", ex=900)
    cache.bump("popular")
    live_gens = cache.generations_and_count()
    live = popular_key(live_gens, (1, "any", "any", "any"), "f")
    cache.client.set(live, b"x", ex=900)
    live_pers = personalized_key(live_gens, 7, 0, "f")
    cache.client.set(live_pers, b"x", ex=900)
    assert cache.cleanup(batch=100) == 2500
    assert cache.client.exists(live) and cache.client.exists(live_pers)
    assert not any(cache.client.exists(k) for k in dead[:50])


def test_hit_rate(cache):
    for _ in range(4):
        cache.generations_and_count()
    cache.store_miss("recs:pop:0:x", b"[]", 60)
    stats = cache.stats()
    assert stats["today"] == {"requests": 4, "hits": 3, "misses": 1, "hit_rate": 0.75}


def test_unreachable_redis_raises_quickly_and_breaker_opens():
    import redis
    import time

    cache = Cache(redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2), breaker_s=5)
    with pytest.raises(CacheUnavailable):
        cache.get("k")
    start = time.perf_counter()
    with pytest.raises(CacheUnavailable, match="recent failure"):
        cache.get("k")
    assert time.perf_counter() - start < 0.05  # the breaker answers without touching the network
