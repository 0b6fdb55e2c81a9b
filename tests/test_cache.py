"""The cache layer on fakeredis (fast unit tests; the API tests use a real Redis)."""
import time

import fakeredis
import pytest

from shared.cache import (PERSONALIZED, POPULAR, Cache, CacheUnavailable, personalized_suffix, popular_suffix,
                          profile_key)


@pytest.fixture
def cache():
    return Cache(fakeredis.FakeRedis())


def test_lookup_misses_then_hits(cache):
    key, value, gens = cache.lookup(POPULAR, popular_suffix((213, "f", "any", "any"), "f"))
    assert value is None and key == "recs:pop:0:213:f:any:any:f" and gens == {
        "popular": "0", "profiles": "0", "similarities": "0", "lists": ""}
    cache.store_miss(key, b"[1,2]", 900)
    assert cache.lookup(POPULAR, popular_suffix((213, "f", "any", "any"), "f"))[1] == b"[1,2]"


def test_store_miss_writes_the_list_with_its_ttl_and_counts_the_miss(cache):
    cache.store_miss("recs:pop:0:y", b"[3]", 900)
    assert cache.client.get("recs:pop:0:y") == b"[3]" and 0 < cache.client.ttl("recs:pop:0:y") <= 900
    assert cache._misses == 1


def test_list_encoding_round_trips():
    from shared.cache import decode_list, encode_list

    raw = encode_list([5, 3, 9], [("collaborative", 0), ("popular", 2)], "collaborative")
    assert decode_list(raw) == ([5, 3, 9], [("collaborative", 0), ("popular", 2)], "collaborative")
    assert decode_list(encode_list([], [], "popular")) == ([], [], "popular")
    big = [2**40, 7]  # past int32: 8 bytes an id
    assert decode_list(encode_list(big, [("popular", 0)], "popular")) == (big, [("popular", 0)], "popular")


def test_a_cached_list_packs_its_ids_and_lists_cached_as_json_still_decode():
    import orjson

    from shared.cache import decode_list, encode_list

    ids, sections = list(range(100_000, 100_200)), [("content_based", 0), ("popular", 150)]
    as_json = orjson.dumps({"i": ids, "s": sections, "a": "content_based"})  # the format before packed ids
    packed = encode_list(ids, sections, "content_based")
    assert len(packed) < 0.6 * len(as_json)  # 861 bytes against 1,469 for 200 six-digit ids
    assert decode_list(packed) == decode_list(as_json) == (ids, sections, "content_based")


def test_stored_lists_are_current_only_for_the_generations_they_were_built_from(cache):
    from shared.cache import lists_current

    assert not lists_current(cache.generations(fresh=True)) and not lists_current(None)
    cache.set_lists_basis(cache.generations(fresh=True))
    assert lists_current(cache.generations(fresh=True))
    cache.bump("profiles")
    assert not lists_current(cache.generations(fresh=True))


def test_bump_changes_keys(cache):
    suffix = popular_suffix((213, "f", "any", "any"), "f")
    k1 = cache.lookup(POPULAR, suffix)[0]
    cache.bump("popular")
    assert cache.lookup(POPULAR, suffix)[0] != k1
    # Personalized keys depend on all three kinds.
    psuffix = personalized_suffix(5, 213, "f")
    p = cache.lookup(PERSONALIZED, psuffix)[0]
    cache.bump("similarities")
    assert cache.lookup(PERSONALIZED, psuffix)[0] != p


def test_every_key_has_a_ttl(cache):
    cache.bump("profiles")
    key, _, _ = cache.lookup(POPULAR, popular_suffix((0, "any", "any", "any"), "f"))
    cache.store_miss(key, b"[]", 900)
    cache.stats()  # flushes the counters
    keys = list(cache.client.scan_iter("*"))
    assert len(keys) == 4  # generation, counters, this minute's series, the list
    for key in keys:
        assert cache.client.ttl(key) > 0, key


def test_cleanup_drops_dead_generations_only(cache):
    dead = [cache.lookup(POPULAR, popular_suffix((i, "any", "any", "any"), "f"))[0] for i in range(2500)]
    for k in dead:
        cache.client.set(k, b"x", ex=900)
    cache.bump("popular")
    live = cache.lookup(POPULAR, popular_suffix((1, "any", "any", "any"), "f"))[0]
    live_pers = cache.lookup(PERSONALIZED, personalized_suffix(7, 0, "f"))[0]
    cache.client.set(live, b"x", ex=900)
    cache.client.set(live_pers, b"x", ex=900)
    gens = cache.generations()
    cache.client.set(profile_key(gens, 7), b"{}", ex=900)
    cache.client.set(profile_key(dict(gens, profiles="old"), 7), b"{}", ex=900)
    assert cache.cleanup(batch=100) == 2501
    assert cache.client.exists(profile_key(gens, 7))
    assert cache.client.exists(live) and cache.client.exists(live_pers)
    assert not any(cache.client.exists(k) for k in dead[:50])


def test_generations_are_reread_after_the_check_interval():
    client = fakeredis.FakeRedis()
    slow = Cache(client, generation_check_s=3600)
    first = slow.lookup(POPULAR, "x")[0]
    Cache(client).bump("popular")
    assert slow.lookup(POPULAR, "x")[0] == first  # within the interval: the process's snapshot
    assert Cache(client).lookup(POPULAR, "x")[0] != first  # a fresh check sees the bump


def test_hit_rate(cache):
    for _ in range(4):
        cache.lookup(POPULAR, "x")
    cache.store_miss("recs:pop:0:x", b"[]", 60)
    stats = cache.stats()
    assert stats["today"] == {"requests": 4, "hits": 3, "misses": 1, "hit_rate": 0.75}


def test_unreachable_redis_raises_quickly_and_breaker_opens():
    import redis

    cache = Cache(redis.Redis(port=1, socket_connect_timeout=0.2, socket_timeout=0.2), breaker_s=5)
    with pytest.raises(CacheUnavailable):
        cache.get("k")
    start = time.perf_counter()
    with pytest.raises(CacheUnavailable, match="recent failure"):
        cache.get("k")
    assert time.perf_counter() - start < 0.05  # the breaker answers without touching the network


def test_feedback_is_kept_with_a_ttl_and_drops_the_users_cached_lists(cache):
    from shared.cache import INVALIDATED_TTL_S, LIKED, UNLIKED, live_exclusions, user_key

    slot = cache.lookup_user(7, 213, "f")
    assert slot.value is None and slot.feedback == {}
    cache.store_user(slot, b"[1]", 900)
    cache.store_user(cache.lookup_user(7, 213, "g"), b"[2]", 900)
    assert cache.lookup_user(7, 213, "f").value == b"[1]" and cache.lookup_user(7, 213, "g").value == b"[2]"
    cache.store_user(cache.lookup_user(8, 213, "f"), b"[2]", 900)
    cache.record_feedback([(7, 42, LIKED), (7, 43, UNLIKED), (7, 44, None)], ttl_s=600)
    after = cache.lookup_user(7, 213, "f")
    # The new version dropped every list of the user at once.
    assert after.value is None and cache.lookup_user(7, 213, "g").value is None
    assert live_exclusions(after.feedback) == (frozenset({42}), frozenset({43}))  # a click marks nothing
    # The hash outlives the feedback and the invalidation's margin; the other user is untouched.
    assert 600 < cache.client.ttl(user_key(7)) <= INVALIDATED_TTL_S and cache.lookup_user(8, 213, "f").value == b"[2]"
    assert sorted(cache.pop_touched()) == [7] and cache.pop_touched() == []


def test_live_feedback_outlives_a_shorter_list_ttl_and_then_expires(cache, monkeypatch):
    from shared.cache import LIKED, user_key

    cache.record_feedback([(7, 42, LIKED)], ttl_s=600)
    cache.store_user(cache.lookup_user(7, 0, "f"), b"[1]", 60)  # a shorter TTL never shortens the feedback's
    assert cache.client.ttl(user_key(7)) >= 600
    assert cache.lookup_user(7, 0, "g").feedback == {42: LIKED}
    later = time.time() + 601
    monkeypatch.setattr("shared.cache.time.time", lambda: later)
    assert cache.lookup_user(7, 0, "g").feedback == {}  # each mark expires on its own


def test_a_list_stored_after_an_invalidation_is_never_served(cache):
    slow = cache.lookup_user(7, 0, "f")  # a miss reads the version, then computes slowly
    assert cache.invalidate_users([7]) == 1  # an event lands meanwhile
    cache.store_user(slow, b"[1]", 900)
    assert cache.lookup_user(7, 0, "f").value is None
    cache.store_user(cache.lookup_user(7, 0, "f"), b"[2]", 900)
    assert cache.lookup_user(7, 0, "f").value == b"[2]"


def test_an_invalidation_keeps_the_hash_so_a_racing_store_is_never_served(cache):
    from shared.cache import INVALIDATED_TTL_S, user_key

    cache.store_user(cache.lookup_user(7, 0, "f"), b"[1]", 2)  # a hash about to expire, with no version yet
    slow = cache.lookup_user(7, 0, "g")  # reads the empty version
    cache.invalidate_users([7])
    # Had the hash expired now, the version would be gone and the slow store below served.
    assert INVALIDATED_TTL_S - 5 < cache.client.ttl(user_key(7)) <= INVALIDATED_TTL_S
    cache.store_user(slow, b"[stale]", 2)
    assert cache.lookup_user(7, 0, "g").value is None


def test_an_invalidation_deletes_the_lists_and_expired_marks_and_then_the_flag(cache, monkeypatch):
    from shared.cache import LIKED, UNLIKED, user_key

    cache.record_feedback([(7, 42, LIKED)], ttl_s=600)
    monkeypatch.setattr("shared.cache.time.time", lambda: time.time_ns() / 1e9 + 300)
    cache.record_feedback([(7, 43, UNLIKED)], ttl_s=600)  # 42 expires 300 s before 43
    cache.store_user(cache.lookup_user(7, 0, "f"), b"[1]", 900)
    fields = set(cache.client.hkeys(user_key(7)))
    assert {b"f:42", b"f:43", b"f"} <= fields and any(f.startswith(b"l:") for f in fields)
    monkeypatch.setattr("shared.cache.time.time", lambda: time.time_ns() / 1e9 + 700)
    cache.invalidate_users([7])
    assert set(cache.client.hkeys(user_key(7))) == {b"f:43", b"f", b"v"}  # the list and 42's expired mark gone
    assert cache.lookup_user(7, 0, "f").feedback == {43: UNLIKED}
    monkeypatch.setattr("shared.cache.time.time", lambda: time.time_ns() / 1e9 + 1000)
    cache.invalidate_users([7])
    assert set(cache.client.hkeys(user_key(7))) == {b"v"}  # no mark left: no flag, so misses read no feedback


def test_unavailable_set_is_reloaded_only_when_its_version_changes():
    client = fakeredis.FakeRedis()
    worker = Cache(client, generation_check_s=0)
    assert worker.generations() and worker.unavailable == frozenset()
    Cache(client).set_unavailable({5: 100.0, 6: 200.0})
    worker.generations()
    assert worker.unavailable == {5, 6}
    client.hset("recs:live:unavailable", "9", 1.0)  # written without a version bump: not reloaded
    worker.generations()
    assert worker.unavailable == {5, 6}
    Cache(client).set_unavailable({}, back=[5])
    worker.generations()
    assert worker.unavailable == {6, 9}
    assert Cache(client).trim_unavailable(before_ts=150.0) == [9]
    assert set(Cache(client).unavailable_since()) == {6} and client.ttl("recs:live:unavailable") > 0


def test_without_drops_ids_and_reindexes_sections():
    from shared.serving import without

    ids, sections = [1, 2, 3, 4, 5], [("collaborative", 0), ("popular", 3)]
    assert without(ids, sections, frozenset()) == (ids, sections)
    assert without(ids, sections, frozenset({2, 4})) == ([1, 3, 5], [("collaborative", 0), ("popular", 2)])
    assert without(ids, sections, frozenset({4, 5})) == ([1, 2, 3], [("collaborative", 0)])


class _Reentrant(fakeredis.FakeRedis):
    """Runs `during` while a pipeline is in flight, as another greenlet would while this one waits on I/O."""

    during = None

    def pipeline(self, *args, **kwargs):
        pipe = super().pipeline(*args, **kwargs)
        execute, owner = pipe.execute, self

        def execute_with_others(*a, **k):
            hook, owner.during = owner.during, None
            if hook:
                hook()
            return execute(*a, **k)

        pipe.execute = execute_with_others
        return pipe


def test_counters_flushed_while_other_requests_count_and_check_are_never_lost_or_doubled():
    from shared.cache import _stats_key

    cache = Cache(_Reentrant(), generation_check_s=0)  # every request re-checks: the most concurrent flushes
    for _ in range(5):
        cache.lookup(POPULAR, "x")

    def others():  # requests landing while the flush waits on Redis
        for _ in range(3):
            cache.lookup(POPULAR, "x")
    cache.client.during = others
    cache.generations(fresh=True)
    assert int(cache.client.hget(_stats_key(), "requests")) == 5  # their checks did not flush meanwhile
    cache.generations(fresh=True)
    assert int(cache.client.hget(_stats_key(), "requests")) == 8  # the 3 counted during the first flush


def test_counters_survive_a_failed_flush():
    import redis

    from shared.cache import _stats_key

    cache = Cache(_Reentrant(), generation_check_s=60)
    for _ in range(4):
        cache.lookup(POPULAR, "x")

    def fail():
        raise redis.ConnectionError("gone")

    cache.client.during = fail
    with pytest.raises(CacheUnavailable):
        cache.generations(fresh=True)
    cache._failed_at = 0.0  # past the breaker
    cache.generations(fresh=True)
    assert int(cache.client.hget(_stats_key(), "requests")) == 4


def test_user_row_encoding_round_trips_the_row_exactly_and_packs_the_ids():
    from shared.cache import decode_user_row, encode_user_row
    from shared.serving import PersonalList, Profile, UserRow

    profile = Profile(7, 4, liked=frozenset({11, 3, 2**40}), gender="f", age_group="25-34", geo_id=213)
    plist = PersonalList(list(range(1000, 1200)), [("collaborative", 0), ("popular", 150)], "collaborative", 213,
                         True, 0.1 + 0.2, 1e300)
    rows = [UserRow(profile, plist),  # a known user with a list (liked ids past int32: stored as int64)
            UserRow(Profile(7, 0), PersonalList([2**33, 5], [("popular", 0)], "popular", None, False, None, None)),
            UserRow(Profile(7, 0), None),  # a profile without a list
            UserRow(None, None)]  # an unknown user
    for row in rows:
        assert decode_user_row(7, encode_user_row(row)) == row
    assert decode_user_row(7, encode_user_row(rows[0])).plist.price_lo == 0.1 + 0.2  # floats exactly as read
    # 200 ids fitting int32 take 4 bytes each (array_send took 12): the whole row stays under 1 KB.
    assert 800 < len(encode_user_row(rows[0])) < 1000


def test_a_users_row_is_served_only_under_its_version_and_generations(cache):
    from shared.cache import LIKED

    assert cache.lookup_user(7, 213, "f").row is None
    cache.store_user(cache.lookup_user(7, 213, "f"), b"[1]", 900, row=b"row-1")
    # Any other request of the user finds the row, and the list it was stored with is a hit.
    other = cache.lookup_user(7, 0, "g")
    assert other.value is None and other.row == b"row-1"
    assert cache.lookup_user(7, 213, "f").value == b"[1]"
    # A store without a list (answered from the cached row) writes nothing, and still counts a miss.
    misses = cache._misses
    cache.store_user(other, None, 900)
    assert cache._misses == misses + 1 and cache.lookup_user(7, 0, "g").value is None
    # An invalidation (an event, the live sync re-reading the user) drops the row with the lists;
    # a row stored by a request that read the old version is never served.
    slow = cache.lookup_user(7, 0, "g")
    cache.record_feedback([(7, 42, LIKED)], ttl_s=600)
    cache.store_user(slow, None, 900, row=b"stale")
    after = cache.lookup_user(7, 0, "g")  # the feedback flag is set: read with HGETALL
    assert after.row is None and after.feedback == {42: LIKED}
    cache.store_user(after, None, 900, row=b"row-2")
    assert cache.lookup_user(7, 0, "g").row == b"row-2"
    # New profiles (a full refresh) or new lists swapped in: another field, so the row is re-read.
    cache.bump("profiles")
    cache._gens = None
    assert cache.lookup_user(7, 0, "g").row is None
    cache.store_user(cache.lookup_user(7, 0, "g"), None, 900, row=b"row-3")
    cache.set_lists_basis(cache.generations(fresh=True))
    assert cache.lookup_user(7, 0, "g").row is None


def test_a_users_hash_keeps_at_most_its_cap_of_lists(cache):
    """Ever new filters for one user (each a stored list) do not grow their hash past
    USER_HASH_FIELDS: past it the other lists go; the row, the version, the feedback and the
    list just stored stay, and are served."""
    from shared.cache import LIKED, USER_HASH_FIELDS, user_key

    cache.record_feedback([(7, 42, LIKED)], ttl_s=600)
    cache.store_user(cache.lookup_user(7, 213, "first"), b"[0]", 900, row=b"row-1")
    sizes = []
    for n in range(3 * USER_HASH_FIELDS):
        cache.store_user(cache.lookup_user(7, 213, f"f{n}"), b"[%d]" % n, 900)
        sizes.append(cache.client.hlen(user_key(7)))
    assert max(sizes) <= USER_HASH_FIELDS and sizes[USER_HASH_FIELDS // 2] > USER_HASH_FIELDS // 2
    last = cache.lookup_user(7, 213, f"f{3 * USER_HASH_FIELDS - 1}")
    assert last.value == b"[%d]" % (3 * USER_HASH_FIELDS - 1)
    other = cache.lookup_user(7, 0, "other")  # a miss: it reads the feedback and the row
    assert other.feedback == {42: LIKED} and other.row == b"row-1"
    assert cache.lookup_user(7, 213, "first").value is None  # dropped at the cap: computed again from the row
    assert cache.client.ttl(user_key(7)) > 600


def test_stored_answer_tells_a_users_answers_from_their_row_version_and_feedback():
    from shared.cache import FEEDBACK_FLAG, MARK_PREFIX, VERSION_FIELD, stored_answer, user_list_field, user_row_field

    gens = {"popular": "3", "profiles": "4", "similarities": "5", "lists": "3.4.5"}
    assert stored_answer(user_list_field(gens, 213, "p=0-1000").encode())
    assert stored_answer(user_list_field(gens, 0, "").encode())
    assert not stored_answer(user_row_field(gens).encode())
    assert not stored_answer(VERSION_FIELD) and not stored_answer(FEEDBACK_FLAG)
    assert not stored_answer(MARK_PREFIX + b"42")
