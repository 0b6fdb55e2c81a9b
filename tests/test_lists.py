"""Precomputed personal lists and the catalogue snapshot: a miss served from them equals
what shared.serving computes over the recommendations DB (the SQL source), on the tiny preset."""
import psycopg2
import pytest
import redis

from api import create_app
from shared.cache import Cache
from shared.catalogue import Catalogue
from shared.db import connect_recs
from shared.serving import Filters, Item, algorithm_label, personalized_list, popular_list
from shared.settings import load_settings
from shared.store import SqlSource, prepare
from tests.conftest import query
from tests.test_live_sync import add_like, env, main_exec  # noqa: F401 (env: the live sync's fixture)

SIZE = 200


@pytest.fixture
def lists_env(tiny_env):
    """Redis flushed (so nothing is cached), then the lists job run alone: it reads the
    recommendations DB and records the current generations as the lists' basis. Without
    its preload (workers/preload.py): no user's row is cached."""
    from shared.cache import Cache
    from workers import pipeline

    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    settings = load_settings({**tiny_env, "PRELOAD_MEMORY_SHARE": "0"})
    pipeline.update_user_lists(settings, Cache(redis.Redis.from_url(settings.recommendations_redis_url)))
    return tiny_env


@pytest.fixture
def sql_source(lists_env):
    conn = prepare(connect_recs(load_settings(lists_env)))

    def run(fn):
        with conn.cursor() as cur:
            return fn(cur)

    yield SqlSource(run)
    conn.close()


def whole_list(client, path, body):
    """Every item of the answer (two pages of 100) and each page's algorithm label."""
    ids, labels, hits = [], [], []
    for page in (1, 2):
        r = client.post(path, json={**body, "pagination": {"page": page, "limit": 100}})
        assert r.status_code == 200, r.get_json()
        data = r.get_json()
        ids += data["items"]
        labels.append(data["algorithm_used"])
        hits.append(data["cache_hit"])
    return ids, labels, hits


def reference_labels(ranked, algorithm):
    return [algorithm_label(ranked.sections, len(ranked.ids), start, start + 100, algorithm) for start in (0, 100)]


def count_reads(app):
    """Wrap the app's recommendations-DB runner: a list that grows by one per query."""
    services = app.extensions["recs"]
    reads, run = [], services.recs_db.run

    def counting(fn):
        reads.append(1)
        return run(fn)

    services.recs_db.run = counting
    services.__dict__.pop("source", None)
    services.__dict__.pop("snapshot", None)
    return reads


def filtered_reference(recs, sql_source, user_id, geo_id, filters):
    """What a request the precomputed list narrows (shared.serving.narrows) gets, built
    from SQL: the stored list's items that pass the filters (checked one by one on items
    rows), in its sections, then popular items of the request's segment, read by SQL."""
    from shared.serving import Ranked, add_popular, user_segment
    from shared.store import ITEM_COLS, decode_sections

    profile = sql_source.profile(user_id)
    (ids, sections, algorithm), = query(recs, "SELECT item_ids, sections, algorithm FROM user_lists WHERE user_id = %s",
                                        (user_id,))
    sections = decode_sections(sections)
    items = {row[0]: Item._make(row) for row in
             query(recs, f"SELECT {ITEM_COLS} FROM items i WHERE i.item_id = ANY(%s)", (ids,))}
    ranked = Ranked(SIZE, filters, profile.liked)
    bounds = [first for _, first in sections[1:]] + [len(ids)]
    for (name, first), end in zip(sections, bounds):
        ranked.extend(name, [items[i] for i in ids[first:end] if i in items])
    add_popular(ranked, sql_source, user_segment(profile, geo_id, filters))
    return ranked, algorithm


@pytest.mark.parametrize("preloaded", [False, True], ids=["rows-read-on-first-request", "rows-preloaded"])
def test_personalized_answers_equal_the_sql_computation(preloaded, lists_env, sql_source):
    from workers.preload import preload_rows

    recs = lists_env["RECOMMENDATIONS_DATABASE_URL"]
    users = [u for (u,) in query(recs, "SELECT DISTINCT ON (LEAST(interaction_count, 3)) user_id FROM user_profiles "
                                       "ORDER BY LEAST(interaction_count, 3), user_id")]
    users += [u for (u,) in query(recs, "SELECT user_id FROM user_profiles WHERE interaction_count >= 3 "
                                        "AND geo_id IS NOT NULL ORDER BY user_id DESC LIMIT 3")]
    users.append(10**9)  # unknown: popular without demographics
    geos = dict(query(recs, "SELECT user_id, geo_id FROM user_profiles WHERE user_id = ANY(%s)", (users,)))
    safe = {u for (u,) in query(recs, "SELECT user_id FROM user_lists WHERE geo_safe AND geo_id IS NOT NULL")}
    priced = dict((u, (lo, hi)) for u, lo, hi in query(recs, "SELECT user_id, price_lo, price_hi FROM user_lists"))
    categories = [c for (c,) in query(recs, "SELECT DISTINCT category FROM items ORDER BY 1 LIMIT 2")]
    assert len(users) == 8 and len(categories) == 2
    app = create_app(lists_env)
    client = app.test_client()
    reads = count_reads(app)
    assert client.post("/popular", json={}).status_code == 200  # loads the catalogue snapshot
    plain_single_reads = plain_without_read = 0
    rows_cached = set()
    if preloaded:  # the lists job's preload: every profiled user's row cached before any request
        cache = Cache(redis.Redis.from_url(lists_env["RECOMMENDATIONS_REDIS_URL"]))
        done = preload_rows(load_settings(lists_env), cache, cache.generations(fresh=True))
        rows_cached = {u for (u,) in query(recs, "SELECT user_id FROM user_profiles")}
        assert done["users"] == done["profiled"] == len(rows_cached) and "stopped" not in done, done
    answered = {"stored": 0, "filtered": 0, "computed": 0}
    for user_id in users:
        own = geos.get(user_id)
        requests = [
            (None, {}), (own, {}), (213, {}), (None, {"geo_id": own or 2}),
            (None, {"price_to": 3000}), (own, {"price_from": 900, "price_to": 20000}),
            (None, {"category": categories[0]}), (own, {"category": categories[1], "price_to": 5000}),
            (54, {"price_from": 5, "price_to": 15}),  # narrow: the fill-in reaches the global list
            (own, {"price_from": 0.001, "price_to": 10**9}),  # holds every price: the stored list
        ]
        seen = []
        for geo_id, f in requests:
            if (geo_id, f) in seen:  # the user has no geo: the same request twice
                continue
            seen.append((geo_id, f))
            body = {"user_id": user_id, "filters": f, **({"geo_id": geo_id} if geo_id else {})}
            filters = Filters(f.get("price_from"), f.get("price_to"), f.get("category"), geo_id or f.get("geo_id"))
            # The stored list is the answer for the user's own geo (segment and filter); a
            # request without the geo filter, or with a price range holding all its items, gets it too.
            geo_filter = geo_id or f.get("geo_id")
            lo, hi = priced.get(user_id, (None, None))
            listed = user_id in priced
            plain = (listed and "category" not in f and geo_id in (None, own)
                     and (geo_filter == own or geo_filter is None and (own is None or user_id in safe))
                     and ("price_from" not in f or lo is not None and f["price_from"] <= lo)
                     and ("price_to" not in f or hi is not None and f["price_to"] >= hi))
            # Any other filter narrows the stored list when the geo filter is the list's
            # (any, when the user has no geo; none, when the list's geo filter removed nothing).
            narrowed = listed and not plain and (geo_filter == own or own is None
                                                 or geo_filter is None and user_id in safe)
            if narrowed:
                reference, algorithm = filtered_reference(recs, sql_source, user_id, geo_id, filters)
            else:
                reference, algorithm = personalized_list(sql_source, user_id, geo_id, filters, SIZE)
            way = "stored" if plain else "filtered" if narrowed else "computed"
            answered[way] += 1
            reads.clear()
            ids, labels, hits = whole_list(client, "/personalized", body)
            # The user's first request reads their row, unless preloaded, and caches it with the
            # list (page 2 is a hit); later ones read the row from the cache, and cache only
            # filtered and computed lists (the stored list as is is derived from the row again).
            first = user_id not in rows_cached
            rows_cached.add(user_id)
            assert hits == [False, first or way != "stored"], (user_id, geo_id, f, way)
            assert ids == reference.ids, (user_id, geo_id, f)
            assert labels == reference_labels(reference, algorithm), (user_id, geo_id, f)
            profile = sql_source.profile(user_id)
            assert len(set(ids)) == len(ids) and not (profile and set(ids) & profile.liked)
            # The user's row, on their first request. Then only a computed answer for a user with
            # history reads: the profile's preferences and the collaborative list, and segment
            # lists' scores in one query (unless this process has them). Filtering and the popular
            # fill-in read nothing: the catalogue snapshot holds every segment's ids.
            row_reads = 1 if first else 0
            detail = way == "computed" and profile is not None and profile.interaction_count > 0
            if detail:
                assert row_reads + 1 <= len(reads) <= row_reads + 2, (user_id, geo_id, f, way)
            else:
                assert len(reads) == row_reads, (user_id, geo_id, f, way)
            if plain:
                assert len(reads) == row_reads, (user_id, geo_id)  # the user's row (profile + list): nothing else
                plain_single_reads += 1
                plain_without_read += not first
    assert plain_single_reads >= 12  # 6 users with lists: their own geo, and a price range holding all
    assert plain_without_read >= (12 if preloaded else 6)  # answered from the row cached by the preload, or
    # by the user's first request
    assert answered["filtered"] >= 12 and answered["computed"] >= 8, answered  # each way is exercised


def test_popular_answers_equal_the_sql_computation(lists_env, sql_source):
    client = create_app(lists_env).test_client()
    cases = [({}, {}), ({"gender": "f", "age": "25-34", "geo_id": 213}, {}),
             ({"gender": "m", "geo_id": 54}, {"price_from": 500, "price_to": 20000}),
             ({"category": "fashion"}, {"geo_id": 2}), ({"age": 41}, {"price_from": 900, "price_to": 1000})]
    for params, f in cases:
        body = {"user_params": params, "filters": f}
        segment = (params.get("geo_id") or f.get("geo_id") or 0, params.get("gender", "any"),
                   {41: "35-44"}.get(params.get("age"), params.get("age", "any")), params.get("category", "any"))
        filters = Filters(f.get("price_from"), f.get("price_to"), params.get("category"),
                          f.get("geo_id") or params.get("geo_id"))
        reference = popular_list(sql_source, segment, filters, SIZE)
        ids, labels, _ = whole_list(client, "/popular", body)
        assert ids == reference.ids and ids, (params, f)


def test_stored_lists_match_a_recompute_from_the_database(tiny_env):
    """refresh_all precomputes from the frames it just wrote; the lists job alone reads
    them back from the DB. Both must store the same lists (scores as the DB holds them)."""
    from shared.cache import Cache
    from workers import pipeline

    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    sql = "SELECT * FROM user_lists ORDER BY user_id"
    settings = load_settings(tiny_env)
    cache = Cache(redis.Redis.from_url(settings.recommendations_redis_url))
    pipeline.refresh_all(settings, cache)
    from_frames = query(recs, sql)
    active = query(recs, "SELECT count(*) FROM user_profiles WHERE interaction_count > 0")[0][0]
    assert len(from_frames) == active > 0
    assert {row[3] for row in from_frames} == {"content_based", "collaborative"}
    pipeline.update_user_lists(settings, cache)
    assert query(recs, sql) == from_frames
    gens = cache.generations(fresh=True)
    assert gens["lists"] == f"{gens['popular']}.{gens['profiles']}.{gens['similarities']}"


def test_catalogue_holds_every_popular_list(lists_env, monkeypatch):
    """load_catalogue reads popular_lists' ids (in pages along the key) with the items: each
    segment's ids as stored, in rank order; a segment without a list has none."""
    from shared import catalogue

    monkeypatch.setattr(catalogue, "PAGE_ROWS", 7)  # many pages, so paging along the text key is exercised
    recs = lists_env["RECOMMENDATIONS_DATABASE_URL"]
    stored = {tuple(row[:4]): row[4] for row in query(recs, "SELECT geo_id, gender, age_group, category, item_ids "
                                                           "FROM popular_lists")}
    conn = psycopg2.connect(recs)
    try:
        with conn.cursor() as cur:
            cat = catalogue.load_catalogue(cur, "g")
    finally:
        conn.close()
    assert len(stored) > 3 * 7
    for segment, ids in stored.items():
        got, summary = cat.segment(segment)
        assert list(got) == ids and summary == cat.summarise(ids), segment
    assert cat.segment((999999, "f", "25-34", "any")) == ((), None)
    # Ids past int32 widen the array, earlier lists included.
    wide = Catalogue.of([], segments=[((1, "f", "any", "any"), [5, 3]), ((2, "m", "any", "any"), [2**40, 7])])
    assert list(wide.segment((1, "f", "any", "any"))[0]) == [5, 3]
    assert list(wide.segment((2, "m", "any", "any"))[0]) == [2**40, 7]


def test_catalogue_reload_keeps_the_lists_until_a_refresh_swaps_them(lists_env):
    """A reload (the live worker's, after the sync changed items) keeps the segment lists it
    has while popular_lists is the same table; after a popular refresh, which swaps in a new
    one, it reads them again. Summaries are made again for each catalogue."""
    from shared import catalogue
    from workers import pipeline

    recs = lists_env["RECOMMENDATIONS_DATABASE_URL"]
    conn = psycopg2.connect(recs)
    conn.autocommit = True
    try:
        def run(fn):
            with conn.cursor() as cur:
                return fn(cur)

        snapshot = catalogue.Snapshot(run)
        first = snapshot.current("v1")
        segment = next(iter(first._segments))
        first.segment(segment)
        second = snapshot.current("v2")
        assert second is not first and second._segment_ids is first._segment_ids
        assert second._summaries[first._segments[segment]] is None and second.segment(segment) == first.segment(segment)
        settings = load_settings(lists_env)
        pipeline.refresh_popular_items(settings, Cache(redis.Redis.from_url(settings.recommendations_redis_url)))
        third = snapshot.current("v3")
        assert third._segment_ids is not first._segment_ids and third.lists_table != first.lists_table
        stored = query(recs, "SELECT geo_id, gender, age_group, category, item_ids FROM popular_lists")
        assert all(list(third.segment(tuple(row[:4]))[0]) == row[4] for row in stored) and stored
    finally:
        conn.close()


def test_catalogue_rebuilds_items_for_dense_and_sparse_ids():
    rows = [(3, 10.5, "books", "ozon", None, True), (7, None, "toys", None, 213, False)]
    for offset in (0, 10**12):  # sparse ids take the dict index
        cat = Catalogue.of([(i + offset, *rest) for i, *rest in rows], generation="g1")
        assert cat.item(3 + offset) == Item(3 + offset, 10.5, "books", "ozon", None, True)
        assert cat.item(7 + offset) == Item(7 + offset, None, "toys", None, 213, False)
        assert cat.item(5 + offset) is None and cat.item(10**13) is None and cat.generation == "g1"


def test_catalogue_select_is_take_over_its_items():
    """select/passing filter from the arrays what take() keeps from the rebuilt Items:
    absent and out-of-stock ids, skipped ids, each filter, the limit; prices not exact in
    float32 come back exact."""
    from shared.serving import take

    rows = [(i, None if i % 7 == 0 else 100.0 * i + (0.1 if i % 5 == 0 else 0.0), ("books", "toys")[i % 2],
             "ozon", (None, 213, 54)[i % 3], i % 11 != 0) for i in range(1, 60)]
    ids = [i for i in range(70, 0, -1) if i != 30]  # ids 60..70 are not in the catalogue
    filters = [Filters(), Filters(price_from=500), Filters(price_to=2000.5), Filters(category="toys"),
               Filters(geo_id=213), Filters(1000, 4000, "books", 54)]
    for offset in (0, 10**12):  # dense and sparse ids
        cat = Catalogue.of([(i + offset, *rest) for i, *rest in rows])
        shifted = [i + offset for i in ids]
        assert cat.item(5 + offset).price == 500.1
        # Every id in stock and priced: filters holding its summary pass it whole, without a check per id.
        stocked = [i + offset for i in range(58, 0, -1) if i % 11 and i % 7]
        # ... and filters the summary holds in part (one category, one geo) check only the rest id by id.
        toys = [i for i in stocked if i % 2]
        geo213 = [i for i in stocked if (i - offset) % 3 == 1]
        for f in filters + [Filters(price_from=100, price_to=5800), Filters(price_from=101), Filters(price_from=50),
                            Filters(price_from=1000, category="toys", geo_id=213), Filters(category="books")]:
            for limit, skip in ((None, frozenset()), (7, frozenset()), (None, frozenset({offset + 40, offset + 3}))):
                for listed in (shifted, stocked, toys, geo213):
                    items = [(cat.item(i), float(i)) for i in listed]
                    expected = take([pair for pair in items if pair[0] is not None], f, limit, skip)
                    got = [cat.select(listed, [float(i) for i in listed], f, limit, skip, summary)
                           for summary in (None, cat.summarise(listed))]
                    assert got == [expected, expected], (offset, f, limit)
                    assert [listed[k] for k in cat.passing(listed, f, limit, skip)] == [p[0][0] for p in expected]
        summary = cat.summarise(stocked)  # two categories, geos 213 and 54 (and none)
        assert summary[:3] == (True, 100.0, 5800.0) and len(summary.categories) == 2 and summary.geos == {213, 54}
        assert cat.summarise(shifted).in_stock is False and cat.summarise(shifted).price_lo is None
        kept = cat.select(shifted, [float(i) for i in shifted], Filters(price_from=500), None, frozenset())
        assert 0 < len(kept) < len(ids) and kept[0][0].item_id == 59 + offset  # absent 60..70, out of stock, cheap


def test_a_popular_refresh_reloads_the_catalogue(lists_env):
    from shared.cache import Cache
    from workers import pipeline

    app = create_app(lists_env)
    client = app.test_client()
    assert client.post("/popular", json={"filters": {"price_to": 1e9}}).status_code == 200
    snapshot = app.extensions["recs"].snapshot
    first = snapshot.catalogue
    assert first is not None and first.count == query(lists_env["RECOMMENDATIONS_DATABASE_URL"],
                                                      "SELECT count(*) FROM items")[0][0]
    settings = load_settings(lists_env)
    pipeline.refresh_popular_items(settings, Cache(redis.Redis.from_url(settings.recommendations_redis_url)))
    app.extensions["recs"].cache._gens = None  # the generation check interval, skipped
    assert client.post("/popular", json={"filters": {"price_to": 2e9}}).status_code == 200
    assert snapshot.catalogue is not first and snapshot.catalogue.generation != first.generation


def test_live_update_rewrites_a_users_list_as_the_full_precompute_does(tiny_env):
    """workers.lists.update_users (for the live sync) computes over the API's catalogue snapshot
    what the refresh computed in memory; a user without interactions loses their row."""
    from workers import lists

    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    picked = [u for (u,) in query(recs, "SELECT DISTINCT ON (algorithm) user_id FROM user_lists "
                                        "ORDER BY algorithm, user_id DESC")]
    (zero,) = query(recs, "SELECT user_id FROM user_profiles WHERE interaction_count = 0 LIMIT 1")[0]
    sql = "SELECT * FROM user_lists WHERE user_id = ANY(%s) ORDER BY user_id"
    before = query(recs, sql, (picked,))
    assert len(before) == 2
    conn = psycopg2.connect(recs)
    with conn, conn.cursor() as cur:
        cur.execute("DELETE FROM user_lists WHERE user_id = ANY(%s)", (picked,))
        cur.execute("INSERT INTO user_lists (user_id, item_ids, sections, algorithm, geo_safe) "
                    "VALUES (%s, '{1}', 'popular:0', 'popular', true)", (zero,))
    conn.close()
    settings = load_settings(tiny_env)
    version = Cache(redis.Redis.from_url(settings.recommendations_redis_url)).catalogue_version()
    assert lists.update_users(settings, picked + [zero], version) == 2
    assert query(recs, sql, (picked + [zero],)) == before


def sql_list(settings, user: int, geo: int):
    """What personalized_list gives over the SQL source for the user's own request (their geo, no filter)."""
    conn = prepare(connect_recs(settings))
    try:
        source = SqlSource(lambda fn: fn(conn.cursor()))
        return personalized_list(source, user, geo, Filters(geo_id=geo), SIZE)[0]
    finally:
        conn.close()


def test_the_live_sync_rewrites_the_lists_of_the_users_it_touches(env, hand_env):  # noqa: F811 (the fixture)
    """A like synced from the main DB: the user's stored list is recomputed at once (without
    the liked item, as the SQL computation gives it), and a miss is served from it."""
    from workers import lists

    ns = env
    user, geo = query(ns.recs, "SELECT user_id, geo_id FROM user_profiles WHERE interaction_count = 1 "
                               "AND geo_id IS NOT NULL ORDER BY user_id LIMIT 1")[0]
    (stored,) = query(ns.recs, "SELECT item_ids FROM user_lists WHERE user_id = %s", (user,))[0]
    add_like(ns.main, user, stored[0])
    assert ns.sync()["relisted"] == 1
    row = query(ns.recs, "SELECT item_ids, algorithm FROM user_lists WHERE user_id = %s", (user,))[0]
    assert stored[0] not in row[0] and row[1] == "content_based"
    reference = sql_list(ns.settings, user, geo)
    assert row[0] == reference.ids
    app = create_app(dict(hand_env, GENERATION_CHECK_MS="0"))
    reads = count_reads(app)
    client = app.test_client()
    assert client.post("/popular", json={}).status_code == 200
    reads.clear()
    body = client.post("/personalized", json={"user_id": user, "geo_id": geo,
                                              "pagination": {"limit": 100}}).get_json()
    assert body["items"] == reference.ids[:100] and len(reads) == 1
    version = Cache(redis.Redis.from_url(ns.settings.recommendations_redis_url)).catalogue_version()
    assert lists.update_users(ns.settings, [user], version) == 1  # idempotent


def test_the_sync_relists_over_the_catalogue_as_its_own_run_changed_it(env):  # noqa: F811 (the fixture)
    """The sync's relisting keeps a catalogue snapshot between runs; an item it marks out of
    stock in a run is out of the lists it recomputes in that same run, as SQL computes them."""
    ns = env
    user, geo = query(ns.recs, "SELECT user_id, geo_id FROM user_profiles WHERE interaction_count >= 3 "
                               "AND geo_id IS NOT NULL ORDER BY user_id LIMIT 1")[0]
    other = query(ns.recs, "SELECT user_id FROM user_profiles WHERE interaction_count >= 3 AND user_id <> %s "
                           "ORDER BY user_id LIMIT 1", (user,))[0][0]
    (stored,) = query(ns.recs, "SELECT item_ids FROM user_lists WHERE user_id = %s", (user,))[0]
    add_like(ns.main, other, stored[0])  # a run that relists someone: the snapshot is loaded now
    assert ns.sync()["relisted"] == 1
    out = stored[1]
    main_exec(ns.main, "UPDATE handpicked_presents SET status = 'out_of_stock', updated_at = now() WHERE id = %s",
              (out,))
    add_like(ns.main, user, stored[0])
    result = ns.sync()
    assert result["unavailable"] == 1 and result["relisted"] == 1
    (row,) = query(ns.recs, "SELECT item_ids FROM user_lists WHERE user_id = %s", (user,))[0]
    assert out not in row and stored[0] not in row
    reference = sql_list(ns.settings, user, geo)
    assert row == reference.ids


class _EmptySource:
    """Users without history and no popular lists: each gets an empty list."""

    def profile(self, user_id):
        from shared.serving import Profile

        return Profile(user_id, 0)

    def popular(self, segments, filters=None, limit=None, skip=()):
        return {}

    def collaborative(self, user_id):
        return []


def _chunks_in_a_celery_child(_):
    from workers import lists

    lists.CHUNK_USERS = 3  # several chunks: the forked pool is used
    return [line.split(",")[0] for chunk in lists.list_chunks(_EmptySource(), list(range(1, 11)), 5, 2)
            for line in chunk.getvalue().splitlines()]


def test_the_precompute_forks_its_pool_inside_a_celery_prefork_child():
    """Celery's prefork children are daemonic, and multiprocessing refuses children to those."""
    import billiard

    with billiard.Pool(1) as pool:
        assert pool.apply(_chunks_in_a_celery_child, (0,)) == [str(u) for u in range(1, 11)]


_STOPPED_EARLY = """
import signal, sys
signal.signal(signal.SIGTERM, lambda *_: None)  # as a test runner or server may have, inherited by a fork
sys.path.insert(0, ".")
import time
from tests.test_lists import _EmptySource
from workers import lists


class Slow(_EmptySource):
    def profile(self, user_id):  # the pool's processes are still busy when the caller stops
        time.sleep(0.2)
        return super().profile(user_id)


lists.CHUNK_USERS = 2
chunks = lists.list_chunks(Slow(), list(range(1, 41)), 5, 2)
first = next(chunks).getvalue().splitlines()
chunks.close()  # the caller stops early: Pool.terminate, which signals the pool's processes
print(first[0].split(",")[0])
"""


def test_the_precompute_pool_ends_when_its_caller_stops_early_whatever_sigterm_handler_it_inherits():
    import os
    import signal
    import subprocess
    import sys

    from tests.conftest import ROOT

    proc = subprocess.Popen([sys.executable, "-c", _STOPPED_EARLY], cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)  # the stuck pool processes too
        proc.communicate()
        pytest.fail("the pool's processes outlived Pool.terminate: its join waited for them")
    assert proc.returncode == 0, err
    assert out.strip() == "1"
