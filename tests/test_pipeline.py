"""The precompute jobs against real PostgreSQL and Redis."""
import io
from pathlib import Path

import psycopg2
import psycopg2.errors
import pytest
import redis

from shared import bulk, jobs
from shared.cache import Cache
from shared.db import connect_main
from shared.settings import load_settings
from tests.conftest import query
from workers import pipeline

ROOT = Path(__file__).resolve().parent.parent


def cache_for(settings):
    return Cache(redis.Redis.from_url(settings.recommendations_redis_url))


def test_refresh_all_on_tiny_fills_every_table(tiny_env):
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    counts = {t: query(recs, f"SELECT count(*) FROM {t}")[0][0]
              for t in ("items", "popular_items", "user_profiles", "user_similarities", "user_recommendations")}
    assert counts["items"] == 500  # public presents only
    assert all(n > 0 for n in counts.values()), counts
    runs = dict(query(recs, "SELECT job, status FROM job_runs"))
    assert runs == {name: "success" for name in jobs.JOBS}
    # Every user with 3+ interactions has neighbours, never themselves.
    assert query(recs, "SELECT count(*) FROM user_similarities WHERE user_id = similar_user_id")[0][0] == 0
    missing = query(recs, "SELECT count(*) FROM user_profiles p WHERE interaction_count >= 3 AND NOT EXISTS "
                          "(SELECT 1 FROM user_similarities s WHERE s.user_id = p.user_id)")[0][0]
    assert missing == 0
    assert query(recs, "SELECT max(n) FROM (SELECT count(*) n FROM user_similarities GROUP BY user_id) x")[0][0] <= 20


def test_private_and_out_of_stock_items_never_precomputed(tiny_env):
    main, recs = tiny_env["MAIN_DATABASE_URL"], tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    private = {r[0] for r in query(main, "SELECT id FROM handpicked_presents WHERE user_id IS NOT NULL")}
    out = {r[0] for r in query(main, "SELECT id FROM handpicked_presents WHERE user_id IS NULL AND status <> 'in_stock'")}
    assert private and out  # the preset has both
    liked_private = query(main, "SELECT count(*) FROM handpicked_likes l JOIN handpicked_presents p "
                                "ON p.id = l.handpicked_present_id WHERE p.user_id IS NOT NULL")[0][0]
    assert liked_private > 0
    popular = {r[0] for r in query(recs, "SELECT DISTINCT item_id FROM popular_items")}
    listed = {r[0] for r in query(recs, "SELECT DISTINCT unnest(item_ids) FROM user_recommendations")}
    catalogue = {r[0] for r in query(recs, "SELECT item_id FROM items")}
    assert not popular & (private | out)
    assert not listed & (private | out)
    assert not catalogue & private


def test_collaborative_lists_exclude_liked_items(tiny_env):
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    overlap = query(recs, "SELECT count(*) FROM user_recommendations r JOIN user_profiles p USING (user_id) "
                          "WHERE r.item_ids && p.liked_item_ids")[0][0]
    assert overlap == 0


def test_main_db_connection_refuses_writes(tiny_env):
    conn = connect_main(load_settings(tiny_env))
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.ReadOnlySqlTransaction):
            cur.execute("UPDATE handpicked_presents SET price = 1")
    finally:
        conn.close()


def _csv(rows):
    buf = io.StringIO()
    for r in rows:
        buf.write(",".join(map(str, r)) + "\n")
    return buf


def test_failure_during_load_leaves_previous_data_whole(hand_env):
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    conn = psycopg2.connect(url)
    cols = ["user_id", "similar_user_id", "similarity_score"]
    bulk.replace_tables(conn, {"user_similarities": (cols, [_csv([(1, 2, 0.5), (2, 1, 0.5)])])})

    def broken_chunks():
        yield _csv([(i, i + 1, 0.1) for i in range(1, 1000)])
        raise RuntimeError("worker died mid-load")

    with pytest.raises(RuntimeError):
        bulk.replace_tables(conn, {"user_similarities": (cols, broken_chunks())})
    conn.close()
    assert query(url, "SELECT user_id, similar_user_id FROM user_similarities ORDER BY 1") == [(1, 2), (2, 1)]
    assert query(url, "SELECT to_regclass('user_similarities_staging')")[0][0] is None


def test_swap_keeps_index_names_so_schema_reapplies_cleanly(hand_env):
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    before = sorted(query(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'popular_items'"))
    conn = psycopg2.connect(url)
    bulk.replace_tables(conn, {"popular_items": (["geo_id", "gender", "age_group", "category", "item_id",
                                                  "popularity_score"], [_csv([(0, "any", "any", "any", 1, 0.5)])])})
    conn.close()
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute((ROOT / "schema.sql").read_text())
    conn.commit()
    conn.close()
    assert sorted(query(url, "SELECT indexname FROM pg_indexes WHERE tablename = 'popular_items'")) == before


def test_second_run_while_one_runs_is_refused(hand_env):
    settings = load_settings(hand_env)
    cache = cache_for(settings)
    held = jobs.Lease(cache.client, jobs.JOBS["popular_items"], 30, "scheduled-run").acquire()
    try:
        with pytest.raises(pipeline.AlreadyRunning) as refused:
            pipeline.refresh_popular_items(settings, cache)
        assert refused.value.holder == "scheduled-run"
        # refresh_all runs popular_items as its own step under its own lease: refused up
        # front (all leases or none), not recorded as a failed refresh_all.
        with pytest.raises(pipeline.AlreadyRunning) as refused:
            pipeline.refresh_all(settings, cache)
        assert (refused.value.job, refused.value.holder) == ("popular_items", "scheduled-run")
        assert not jobs.is_running(cache.client, jobs.JOBS["refresh_all"])
        assert not jobs.is_running(cache.client, jobs.JOBS["user_profiles"])
        assert query(hand_env["RECOMMENDATIONS_DATABASE_URL"], "SELECT count(*) FROM job_runs")[0][0] == 0
    finally:
        held.release()
    assert not jobs.is_running(cache.client, jobs.JOBS["popular_items"])


def test_failed_run_is_recorded_with_its_error(hand_env):
    bad = dict(hand_env, MAIN_DATABASE_URL="postgresql://127.0.0.1:1/nowhere")
    settings = load_settings(bad)
    with pytest.raises(psycopg2.OperationalError):
        pipeline.update_user_profiles(settings, cache_for(settings))
    status, error, finished = query(hand_env["RECOMMENDATIONS_DATABASE_URL"],
                                    "SELECT status, error, finished_at FROM job_runs WHERE job = 'user_profiles'")[0]
    assert status == "failed" and "OperationalError" in error and finished is not None


def test_hand_built_pipeline_results(main_factory, hand_env):
    f = main_factory
    for uid, gender in ((1, "f"), (2, "f"), (3, "f"), (4, "m")):
        f.user(uid, gender=gender, birth_date="1995-05-05", geo_id=213)
    a = f.present(category="books", price=500)
    b = f.present(category="books", price=900)
    c = f.present(category="toys", price=1500)
    gone = f.present(category="toys", status="out_of_stock")
    mine = f.present(category="toys", owner=1)
    for uid in (1, 2, 3):
        f.like(uid, a)
    f.like(1, b), f.like(2, b), f.like(4, c), f.like(1, gone), f.like(2, gone), f.like(3, gone), f.like(1, mine)
    f.like(1, c), f.click(3, c)
    settings = load_settings(hand_env)
    result = pipeline.refresh_all(settings, cache_for(settings))
    assert result["rows"] > 0
    recs = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    order = [r[0] for r in query(recs, "SELECT item_id FROM popular_items WHERE geo_id = 0 AND gender = 'any' "
                                       "AND age_group = 'any' AND category = 'any' ORDER BY popularity_score DESC")]
    # a: 3 likes; c: 2 likes + 1 click; b: 2 likes. Out-of-stock and private never listed.
    assert order == [a, c, b]
    count, liked, cats = query(recs, "SELECT interaction_count, liked_item_ids, preferred_categories "
                                     "FROM user_profiles WHERE user_id = 1")[0]
    assert count == 4 and sorted(liked) == sorted([a, b, c, gone])  # private item 'mine' is not counted
    assert set(cats) == {"books", "toys"}
    # User 3 (a, c) is closest to user 1 (a, b, c).
    top = query(recs, "SELECT similar_user_id FROM user_similarities WHERE user_id = 1 "
                      "ORDER BY similarity_score DESC LIMIT 1")[0][0]
    assert top in (2, 3)
    stats = dict(query(recs, "SELECT name, value FROM main_db_stats"))
    assert stats["presents_private"] == 1 and stats["presents_public"] == 4 and stats["likes"] == 11


def test_cleanup_removes_stale_rows(hand_env):
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    conn = psycopg2.connect(url)
    with conn.cursor() as cur:
        cur.execute("INSERT INTO user_profiles (user_id, interaction_count) VALUES (1, 5), (2, 1)")
        cur.execute("INSERT INTO user_similarities VALUES (1, 2, 0.5), (2, 1, 0.5)")
        cur.execute("INSERT INTO user_recommendations (user_id, item_ids, scores) VALUES (1, '{1}', '{1}'), "
                    "(2, '{1}', '{1}'), (3, '{1}', '{1}')")
    conn.commit()
    conn.close()
    settings = load_settings(hand_env)
    result = pipeline.cleanup_cache(settings, cache_for(settings))
    assert result["deleted_rows"] == 3
    assert query(url, "SELECT user_id FROM user_recommendations") == [(1,)]
    assert query(url, "SELECT user_id FROM user_similarities") == [(1,)]


def test_sharded_similarities_merge_to_the_same_tables(hand_env):
    from deploy.seed import seed

    seed(hand_env["MAIN_DATABASE_URL"], "tiny", 11, replace=True, quiet=True)
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    one = load_settings(hand_env)
    pipeline.update_user_similarities(one, cache_for(one))
    whole = query(url, "SELECT user_id, similar_user_id FROM user_similarities ORDER BY 1, 2")
    whole_recs = query(url, "SELECT user_id, item_ids FROM user_recommendations ORDER BY 1")
    three = load_settings(dict(hand_env, SIMILARITY_SHARDS="3"))
    cache = cache_for(three)
    job = jobs.JOBS["user_similarities"]
    handles = []  # what the Celery chord would carry to the shard tasks and the merge
    dispatched = pipeline.dispatch_user_similarities(three, cache, handles.append, token="t1")
    assert dispatched["status"] == "dispatched" and handles[0]["token"] == "t1"
    run = handles[0]
    # The run holds the job's lease from dispatch on: a second run is refused.
    assert jobs.holder(cache.client, "user_similarities") == "t1"
    with pytest.raises(pipeline.AlreadyRunning):
        pipeline.dispatch_user_similarities(three, cache, handles.append, token="t2")
    pipeline.compute_similarity_shard(three, cache, 0, 3, run)
    pipeline.compute_similarity_shard(three, cache, 2, 3, run)
    with pytest.raises(RuntimeError, match="2 of 3 shards"):
        pipeline.merge_similarity_shards(three, cache, run, 3)
    assert query(url, "SELECT user_id, similar_user_id FROM user_similarities ORDER BY 1, 2") == whole  # untouched
    assert query(url, "SELECT status FROM job_runs WHERE id = %s", (run["run_id"],)) == [("failed",)]
    assert not jobs.is_running(cache.client, job)  # a failed merge ends the run
    with pytest.raises(jobs.LeaseLost):  # and a late task of that run does nothing
        pipeline.compute_similarity_shard(three, cache, 1, 3, run)
    assert not jobs.is_running(cache.client, job)

    dispatched = pipeline.dispatch_user_similarities(three, cache, handles.append, token="t3")
    run = handles[-1]
    for shard in (0, 1, 2, 1):  # a retried shard replaces its output
        pipeline.compute_similarity_shard(three, cache, shard, 3, run)
    assert jobs.holder(cache.client, "user_similarities") == "t3"  # the shards renewed it, never released it
    result = pipeline.merge_similarity_shards(three, cache, run, 3)
    assert not jobs.is_running(cache.client, job)  # the merge took the run's lease over and released it
    assert result["rows"] == len(whole) + len(whole_recs)
    assert query(url, "SELECT status, rows_written, task_id FROM job_runs WHERE id = %s", (run["run_id"],)) == [
        ("success", result["rows"], "t3")]
    assert query(url, "SELECT user_id, similar_user_id FROM user_similarities ORDER BY 1, 2") == whole
    assert query(url, "SELECT user_id, item_ids FROM user_recommendations ORDER BY 1") == whole_recs
    assert query(url, "SELECT count(*) FROM similarity_shard_results WHERE run_tag = 't3'")[0][0] == 0


def test_a_sharded_run_holds_the_job_lease_from_dispatch(hand_env):
    from workers import tasks

    settings = load_settings(dict(hand_env, SIMILARITY_SHARDS="2"))
    cache = cache_for(settings)
    job = jobs.JOBS["user_similarities"]
    earlier = jobs.Lease(cache.client, job, 30, "earlier").acquire()
    with pytest.raises(pipeline.AlreadyRunning):  # refused before anything is dispatched
        tasks._update_user_similarities(settings, cache)
    jobs.Lease(cache.client, job, 30, "another run").release()
    assert jobs.is_running(cache.client, job)  # only the run holding the lease releases it
    with pytest.raises(jobs.LeaseLost):  # nor can another run continue it
        jobs.Lease(cache.client, job, 30, "another run").adopt()
    earlier.release()
    assert not jobs.is_running(cache.client, job)


def _frame(url, sql):
    import pandas as pd

    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql)
            return pd.DataFrame(cur.fetchall(), columns=[d[0] for d in cur.description])
    finally:
        conn.close()


def test_api_source_and_evaluator_source_serve_identical_lists(tiny_env):
    """The SQL source (API) and the in-memory source (evaluator), over the same stored
    refresh, give the same ranked list for users of every bucket and several filters."""
    from shared.db import connect_recs
    from shared.serving import Filters, personalized_list
    from shared.store import SqlSource, prepare
    from workers.memory_source import MemorySource

    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    memory = MemorySource(
        _frame(recs, "SELECT item_id, price, category, platform, geo_id, in_stock FROM items"),
        _frame(recs, "SELECT geo_id, gender, age_group, category, item_id, popularity_score FROM popular_items"),
        _frame(recs, "SELECT user_id, preferred_categories, preferred_platforms, avg_price, interaction_count, "
                     "liked_item_ids, gender, age_group, geo_id FROM user_profiles"),
        _frame(recs, "SELECT user_id, item_ids, scores FROM user_recommendations"))
    conn = prepare(connect_recs(load_settings(tiny_env)))
    reads = []

    def run(fn):
        with conn.cursor() as cur:
            reads.append(1)
            return fn(cur)

    sql = SqlSource(run)
    users = query(recs, "SELECT DISTINCT ON (LEAST(interaction_count, 3)) user_id FROM user_profiles "
                        "ORDER BY LEAST(interaction_count, 3), user_id")
    assert len(users) == 4  # 0, 1, 2 and 3+ interactions
    filters = [Filters(), Filters(price_to=3000.0), Filters(category="fashion"), Filters(geo_id=213, price_from=900.0)]
    try:
        for (user_id,) in users:
            for f in filters:
                api, api_algo = personalized_list(sql, user_id, None, f, 200)
                evaluator, eval_algo = personalized_list(memory, user_id, None, f, 200)
                assert (api.ids, api.sections, api_algo) == (evaluator.ids, evaluator.sections, eval_algo), (user_id, f)
        # A content-based list the popular fill-in completes: the fill reuses the user's
        # segment as read with the candidates, so it is profile + one popular read.
        (few,) = query(recs, "SELECT user_id FROM user_profiles WHERE interaction_count = 1 ORDER BY user_id LIMIT 1")[0]
        content_only = dict(personalized_list(sql, few, None, Filters(), 200)[0].sections)["popular"]
        reads.clear()
        ranked, algorithm = personalized_list(sql, few, None, Filters(), content_only + 5)
        assert algorithm == "content_based" and len(ranked.ids) == content_only + 5
        assert [name for name, _ in ranked.sections] == ["content_based", "popular"]
        assert len(reads) == 2
    finally:
        conn.close()


def _leased(hand_env, seconds=2):
    settings = load_settings(dict(hand_env, JOB_LEASE_SECONDS=str(seconds)))
    return settings, cache_for(settings)


def test_a_running_job_renews_its_lease_and_its_heartbeat(hand_env):
    import threading
    import time

    settings, cache = _leased(hand_env)
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    with pipeline.job_run("cleanup_cache", settings, cache, token="t-renew") as run:
        time.sleep(2 * 2 + 0.5)  # longer than two lease TTLs
        assert jobs.holder(cache.client, "cleanup_cache") == "t-renew"
        assert 0 < cache.client.pttl(jobs.LOCK_PREFIX + "cleanup_cache") <= 2000  # still a short lease
        beat, started, token = query(url, "SELECT heartbeat_at, started_at, task_id FROM job_runs WHERE id = %s",
                                     (run.run_id,))[0]
        assert (beat - started).total_seconds() > 2 and token == "t-renew"
    assert not jobs.is_running(cache.client, jobs.JOBS["cleanup_cache"])
    assert query(url, "SELECT status FROM job_runs WHERE id = %s", (run.run_id,)) == [("success",)]
    assert not [t for t in threading.enumerate() if t.name.startswith("lease-")]  # renewal stopped


def test_a_run_that_lost_its_lease_refuses_its_swap(hand_env):
    import time

    settings, cache = _leased(hand_env)
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    cols = ["user_id", "similar_user_id", "similarity_score"]
    conn = psycopg2.connect(url)
    bulk.replace_tables(conn, {"user_similarities": (cols, [_csv([(1, 2, 0.5), (2, 1, 0.5)])])})
    conn.close()
    with pytest.raises(jobs.LeaseLost):
        with pipeline.job_run("user_similarities", settings, cache, token="t-slow") as run:
            # Its lease lapsed (a long freeze) and another run took it.
            cache.client.set(jobs.LOCK_PREFIX + "user_similarities", "t-next")
            time.sleep(2 / 3 + 0.5)  # the next renewal finds out
            pipeline._write(run, settings, {"user_similarities": (cols, [_csv([(7, 8, 0.1)])])})
    assert query(url, "SELECT user_id, similar_user_id FROM user_similarities ORDER BY 1") == [(1, 2), (2, 1)]
    status, error = query(url, "SELECT status, error FROM job_runs WHERE task_id = 't-slow'")[0]
    assert status == "failed" and error.startswith("LeaseLost")
    assert jobs.holder(cache.client, "user_similarities") == "t-next"  # not released by the loser


def _insert_run(url, job, token, started_ago_s, heartbeat_ago_s, status="running", parent_id=None):
    return query(url, "INSERT INTO job_runs (job, task_id, parent_id, status, started_at, heartbeat_at) VALUES "
                      "(%s, %s, %s, %s, now() - make_interval(secs => %s), now() - make_interval(secs => %s)) "
                      "RETURNING id", (job, token, parent_id, status, started_ago_s, heartbeat_ago_s))[0][0]


def _commit_query(url, sql, params=()):
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
        conn.commit()
    finally:
        conn.close()


def test_dead_runs_are_abandoned_by_the_reaper_and_by_the_next_run(hand_env):
    settings, cache = _leased(hand_env)
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    ids = {}
    for job, token, beat_ago in (("refresh_all", "dead", 60), ("user_similarities", "fresh", 0),
                                 ("cleanup_cache", "renewing", 60)):
        _commit_query(url, "INSERT INTO job_runs (job, task_id, started_at, heartbeat_at) VALUES "
                           "(%s, %s, now() - interval '2 minutes', now() - make_interval(secs => %s))",
                      (job, token, beat_ago))
        ids[job] = query(url, "SELECT id FROM job_runs WHERE task_id = %s", (token,))[0][0]
    _commit_query(url, "INSERT INTO job_runs (job, task_id, parent_id, heartbeat_at) VALUES "
                       "('popular_items', 'dead', %s, now() - interval '1 minute')", (ids["refresh_all"],))
    # cleanup_cache's heartbeat is stale (a DB blip) but its lease is renewed: alive.
    alive = jobs.Lease(cache.client, jobs.JOBS["cleanup_cache"], 30, "renewing").acquire()
    try:
        assert pipeline.reap_abandoned_runs(settings, cache) == ["refresh_all"]
        statuses = dict(query(url, "SELECT coalesce(parent_id::text, job), status FROM job_runs"))
        assert statuses == {"refresh_all": "abandoned", str(ids["refresh_all"]): "abandoned",
                            "user_similarities": "running", "cleanup_cache": "running"}
        assert pipeline.reap_abandoned_runs(settings, cache) == []
    finally:
        alive.release()
    # The next run holds the lease, so any other running row of its job is dead, fresh heartbeat or not.
    with pipeline.job_run("user_similarities", settings, cache):
        assert query(url, "SELECT status FROM job_runs WHERE id = %s", (ids["user_similarities"],)) == [
            ("abandoned",)]
    assert query(url, "SELECT count(*) FROM job_runs WHERE status = 'running' AND job <> 'cleanup_cache'")[0][0] == 0


def test_job_health_reports_stuck_and_late_jobs(hand_env):
    settings = load_settings(hand_env)
    url = hand_env["RECOMMENDATIONS_DATABASE_URL"]
    _commit_query(url, "INSERT INTO job_runs (job, status, started_at, finished_at) VALUES "
                       "('popular_items', 'success', now() - interval '1 minute', now()), "
                       "('user_profiles', 'success', now() - interval '2 days', now() - interval '2 days')")
    # refresh_all's steps count as successes of their jobs.
    _commit_query(url, "INSERT INTO job_runs (job, status, started_at, finished_at, parent_id) VALUES "
                       "('cleanup_cache', 'success', now() - interval '1 minute', now(), 1)")
    _commit_query(url, "INSERT INTO job_runs (job, task_id, started_at, heartbeat_at) VALUES "
                       "('refresh_all', 'dead', now() - interval '5 minutes', now() - interval '4 minutes'), "
                       "('user_similarities', 'slow', now() - interval '2 hours', now())")
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            health = jobs.job_health(cur, settings)
    finally:
        conn.close()
    assert health["late"] == ["user_profiles", "user_similarities", "user_lists"]  # user_lists never ran here
    fresh = health["freshness"]["popular_items"]
    assert isinstance(fresh["age_s"], float) and fresh["age_s"] < 120 and not fresh["late"]
    assert not health["freshness"]["cleanup_cache"]["late"]
    stuck = {s["task_id"]: s["reason"] for s in health["stuck"]}
    assert stuck["dead"].startswith("no heartbeat for 24") and "past its 3600s time limit" in stuck["slow"]


def test_visibility_timeout_outlasts_every_time_limit_and_beat_sends_the_watchdog():
    import celeryconfig
    from workers.app import app

    limits = {name: task.time_limit for name, task in app.tasks.items() if name.startswith("recs.")}
    assert limits["recs.refresh_all"] == jobs.JOBS["refresh_all"].time_limit_s
    # A message redelivered while its task still runs would start a second copy of the job.
    assert all(limit < celeryconfig.broker_transport_options["visibility_timeout"]
               for limit in limits.values() if limit), limits
    assert celeryconfig.beat_schedule[jobs.REAPER_TASK]["schedule"].total_seconds() == 60
    assert app.tasks[jobs.REAPER_TASK].time_limit < 60  # one tick never overlaps the next
