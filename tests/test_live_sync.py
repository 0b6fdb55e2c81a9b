"""Live interactions on real PostgreSQL and Redis: the sync (recs.sync_recent_activity) and POST /events."""
from __future__ import annotations

import threading
from types import SimpleNamespace

import psycopg2
import pytest
import redis

from api import create_app
from deploy.seed import seed
from shared.cache import Cache, encode_list, user_key
from shared.settings import load_settings
from tests.conftest import query
from workers import live, pipeline


@pytest.fixture
def env(hand_env):
    """The tiny preset, fully refreshed, and a first sync that sets the watermark."""
    seed(hand_env["MAIN_DATABASE_URL"], "tiny", 42, replace=True, quiet=True)
    conn = psycopg2.connect(hand_env["RECOMMENDATIONS_DATABASE_URL"])
    with conn.cursor() as cur:
        cur.execute("TRUNCATE live_sync_state, live_touched_users")
    conn.commit()
    conn.close()
    settings = load_settings(hand_env)
    cache = Cache(redis.Redis.from_url(settings.recommendations_redis_url))
    pipeline.refresh_all(settings, cache)
    app_env = dict(hand_env, GENERATION_CHECK_MS="0")
    ns = SimpleNamespace(env=hand_env, app_env=app_env, settings=settings, cache=cache, main=hand_env["MAIN_DATABASE_URL"],
                         recs=hand_env["RECOMMENDATIONS_DATABASE_URL"], client=create_app(app_env).test_client(),
                         sync=lambda: live.sync_recent_activity(settings, cache))
    ns.sync()
    return ns


def main_exec(url, sql, params=None):
    conn = psycopg2.connect(url)
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute(sql, params)
            return cur.fetchall() if cur.description else None
    finally:
        conn.close()


def add_like(url, user, item, like_id=None):
    """What the Rails app does when a user taps like: a row in handpicked_likes, committed."""
    return main_exec(url, "INSERT INTO handpicked_likes (id, user_id, handpicked_present_id, created_at) "
                          "SELECT coalesce(%s, max(id) + 1), %s, %s, now() FROM handpicked_likes RETURNING id",
                     (like_id, user, item))[0][0]


def personalized(client, user, **extra):
    r = client.post("/personalized", json={"user_id": user, "pagination": {"limit": 100}, **extra})
    assert r.status_code == 200, r.get_json()
    return r.get_json()


def user_with(recs_url, condition):
    return query(recs_url, f"SELECT user_id FROM user_profiles WHERE {condition} ORDER BY user_id LIMIT 1")[0][0]


def profile_row(recs_url, user):
    return query(recs_url, "SELECT interaction_count, liked_item_ids, preferred_categories, avg_price "
                           "FROM user_profiles WHERE user_id = %s", (user,))[0]


def test_a_like_in_the_main_db_leaves_a_cached_list_at_the_next_sync(env):
    user = user_with(env.recs, "interaction_count >= 3")
    before = personalized(env.client, user)
    assert personalized(env.client, user)["cache_hit"] is True
    item = before["items"][0]
    count = profile_row(env.recs, user)[0]
    add_like(env.main, user, item)
    result = env.sync()
    assert result["events"] == 1 and result["users"] == 1
    after = personalized(env.client, user)
    assert item not in after["items"] and after["cache_hit"] is False  # the user's cached lists were dropped
    assert profile_row(env.recs, user)[0] == count + 1 and item in profile_row(env.recs, user)[1]


def test_applying_twice_changes_nothing_and_matches_the_full_job(env):
    user = user_with(env.recs, "interaction_count BETWEEN 1 AND 2")
    item = query(env.recs, "SELECT item_id FROM popular_items WHERE geo_id = 0 AND gender = 'any' AND age_group = 'any' "
                           "AND category = 'any' ORDER BY popularity_score DESC LIMIT 1")[0][0]
    add_like(env.main, user, item)
    env.sync()
    once = profile_row(env.recs, user)
    main_exec(env.recs, "UPDATE live_sync_state SET max_id = max_id - 1 WHERE source = 'likes'")  # replay it
    assert env.sync()["events"] == 1
    assert profile_row(env.recs, user) == once
    pipeline.update_user_profiles(env.settings, env.cache)  # the source of truth agrees
    full = profile_row(env.recs, user)
    assert full[:2] == once[:2] and full[2] == once[2] and full[3] == pytest.approx(once[3])


def third_like(env, offset=0):
    """A user with 2 interactions and a popular item they have not seen: liking it makes 3."""
    user = query(env.recs, "SELECT user_id FROM user_profiles WHERE interaction_count = 2 ORDER BY user_id "
                           "OFFSET %s LIMIT 1", (offset,))[0][0]
    seen = {r[0] for r in query(env.main, "SELECT handpicked_present_id FROM handpicked_likes WHERE user_id = %s "
                                          "UNION SELECT handpicked_present_id FROM handpicked_present_clicks "
                                          "WHERE user_id = %s", (user, user))}
    item = next(r[0] for r in query(env.recs, "SELECT item_id FROM popular_items WHERE geo_id = 0 AND gender = 'any' "
                                              "AND age_group = 'any' AND category = 'any' "
                                              "ORDER BY popularity_score DESC") if r[0] not in seen)
    return user, item


def neighbours(recs_url, user):
    return {r[0] for r in query(recs_url, "SELECT similar_user_id FROM user_similarities WHERE user_id = %s", (user,))}


def test_a_user_reaching_three_interactions_gets_collaborative_with_the_full_jobs_neighbours(env):
    user, item = third_like(env)
    assert personalized(env.client, user)["algorithm_used"].startswith("content_based")
    add_like(env.main, user, item)
    assert env.sync()["folded_in"] == 1
    after = personalized(env.client, user)
    assert after["algorithm_used"].startswith("collaborative"), after
    folded = {r[0] for r in query(env.recs, "SELECT similar_user_id FROM user_similarities WHERE user_id = %s", (user,))}
    assert folded
    pipeline.update_user_similarities(env.settings, env.cache)
    full = {r[0] for r in query(env.recs, "SELECT similar_user_id FROM user_similarities WHERE user_id = %s", (user,))}
    assert len(folded & full) / len(full) >= 0.8, (folded, full)


def test_fold_ins_of_one_run_are_one_batch_and_a_killed_run_leaves_them_to_the_next(env, monkeypatch):
    (first, item1), (second, item2) = third_like(env), third_like(env, 1)
    add_like(env.main, first, item1)
    add_like(env.main, second, item2)
    batches = []
    real = live.fold_in

    def killed(main, cur, settings, users, ref_ts):
        batches.append(list(users))
        raise RuntimeError("worker killed before the fold-in committed")

    monkeypatch.setattr(live, "fold_in", killed)
    with pytest.raises(RuntimeError):
        env.sync()
    assert batches == [sorted([first, second])]
    assert profile_row(env.recs, first)[0] == 3 and profile_row(env.recs, second)[0] == 3  # the round committed
    assert not neighbours(env.recs, first) and not neighbours(env.recs, second)
    personalized(env.client, first)  # cached while content-based: the fold-in must drop it
    monkeypatch.setattr(live, "fold_in", real)
    result = env.sync()
    assert result["events"] == 0 and result["folded_in"] == 2
    assert neighbours(env.recs, first) and neighbours(env.recs, second)
    after = personalized(env.client, first)
    assert after["algorithm_used"].startswith("collaborative") and not after["cache_hit"], after
    assert env.sync()["folded_in"] == 0  # done: not folded in again


def test_a_fold_in_reading_everything_or_only_its_candidates_gives_the_same_neighbours(env, monkeypatch, caplog):
    user, item = third_like(env)
    add_like(env.main, user, item)

    def folded(share):
        monkeypatch.setattr(live, "FULL_READ_SHARE", share)
        caplog.clear()
        with caplog.at_level("INFO", logger="recs.live"):
            assert env.sync()["folded_in"] == 1
        assert f"full_read={share == 0}" in caplog.text
        sims = dict(query(env.recs, "SELECT similar_user_id, similarity_score FROM user_similarities "
                                    "WHERE user_id = %s", (user,)))
        recs = query(env.recs, "SELECT item_ids, scores FROM user_recommendations WHERE user_id = %s", (user,))[0]
        main_exec(env.recs, "DELETE FROM user_similarities WHERE user_id = %s", (user,))
        env.cache.add_fold_ins([user])  # due again
        return sims, recs

    (by_id, recs_by_id), (everything, recs_everything) = folded(2.0), folded(0.0)
    assert by_id and by_id.keys() == everything.keys()
    assert everything == pytest.approx(by_id, rel=1e-5)
    assert recs_everything[0] == recs_by_id[0] and recs_everything[1] == pytest.approx(recs_by_id[1], rel=1e-4)


def test_an_item_out_of_stock_or_private_or_deleted_disappears_everywhere(env):
    user = user_with(env.recs, "interaction_count >= 3")
    popular = env.client.post("/popular", json={"pagination": {"limit": 100}}).get_json()["items"]
    mine = personalized(env.client, user)["items"]
    out, private = popular[0], popular[1]
    deleted = next(i for i in mine if i not in (out, private))
    main_exec(env.main, "UPDATE handpicked_presents SET status = 'out_of_stock', updated_at = now() WHERE id = %s",
              (out,))
    main_exec(env.main, "UPDATE handpicked_presents SET user_id = 1, updated_at = now() WHERE id = %s", (private,))
    main_exec(env.main, "DELETE FROM handpicked_likes WHERE handpicked_present_id = %s", (deleted,))
    main_exec(env.main, "DELETE FROM handpicked_present_clicks WHERE handpicked_present_id = %s", (deleted,))
    main_exec(env.main, "DELETE FROM handpicked_presents WHERE id = %s", (deleted,))
    assert env.sync()["unavailable"] == 3
    gone = {out, private, deleted}
    # Cached lists (both were cached above) and fresh ones alike.
    hit = env.client.post("/popular", json={"pagination": {"limit": 100}}).get_json()
    assert hit["cache_hit"] is True and not gone & set(hit["items"])
    assert not gone & set(personalized(env.client, user)["items"])
    fresh = env.client.post("/popular", json={"pagination": {"limit": 100}, "filters": {"price_from": 0}}).get_json()
    assert fresh["cache_hit"] is False and fresh["items"] and not gone & set(fresh["items"])
    assert query(env.recs, "SELECT count(*) FROM popular_items WHERE item_id = ANY(%s)", (list(gone),))[0][0] == 0
    # Back in stock: served again once the popular refresh lists it; the refresh also empties the live set.
    main_exec(env.main, "UPDATE handpicked_presents SET status = 'in_stock', updated_at = now() WHERE id = %s", (out,))
    assert env.sync()["available"] == 1
    pipeline.refresh_popular_items(env.settings, env.cache)
    env.sync()
    assert out not in env.cache.unavailable_since()
    assert out in env.client.post("/popular", json={"pagination": {"limit": 100}}).get_json()["items"]


def test_a_hard_deleted_item_is_found_within_a_few_runs_when_each_checks_a_window(env, monkeypatch):
    """Each run checks DELETION_CHECK_IDS served items for a hard delete, the next ones by id,
    wrapping around: every item is checked within ceil(items / window) runs."""
    served = [i for (i,) in query(env.recs, "SELECT item_id FROM items WHERE in_stock ORDER BY item_id")]
    window = max(1, len(served) // 4 + 1)
    monkeypatch.setattr(live, "DELETION_CHECK_IDS", window)
    monkeypatch.setattr(live, "_deletion_cursor", 0)
    deleted = served[-1]  # in the fourth (last) window
    for table in ("handpicked_likes", "handpicked_present_clicks"):
        main_exec(env.main, f"DELETE FROM {table} WHERE handpicked_present_id = %s", (deleted,))
    main_exec(env.main, "DELETE FROM handpicked_presents WHERE id = %s", (deleted,))
    found = [env.sync()["unavailable"] for _ in range(4)]
    assert found == [0, 0, 0, 1]
    assert deleted in env.cache.unavailable_since()
    assert live._deletion_cursor == 0  # the last window reached the end: the next run starts over


def test_deleted_presents_reads_each_ascending_run_of_a_wrapped_window(env):
    from shared import main_queries

    presents = [i for (i,) in query(env.main, "SELECT id FROM handpicked_presents ORDER BY id")]
    head, tail = presents[:5], presents[-5:]
    for gone in (head[1], tail[3]):
        for table in ("handpicked_likes", "handpicked_present_clicks"):
            main_exec(env.main, f"DELETE FROM {table} WHERE handpicked_present_id = %s", (gone,))
        main_exec(env.main, "DELETE FROM handpicked_presents WHERE id = %s", (gone,))
    window = tail + head[::2]  # a window wrapping around, with a gap; ids past the end never existed
    with psycopg2.connect(env.main) as conn:
        assert main_queries.deleted_presents(conn, window + [presents[-1] + 7]) == [tail[3], presents[-1] + 7]
        assert main_queries.deleted_presents(conn, head) == [head[1]]
        assert main_queries.deleted_presents(conn, []) == []


def test_post_events_like_is_gone_on_the_next_request_and_unlike_brings_it_back(env):
    user = user_with(env.recs, "interaction_count >= 3")
    before = personalized(env.client, user)
    item = before["items"][0]
    r = env.client.post("/events", json={"user_id": user, "item_id": item, "type": "like"})
    assert r.status_code == 200 and r.get_json() == {"accepted": 1}
    assert item not in personalized(env.client, user)["items"]
    # Also from a list cached before the event (a request that raced it).
    stale = [k for k in env.cache.client.hkeys(user_key(user))]
    assert stale  # the list just computed is cached again
    assert item not in personalized(env.client, user)["items"]
    r = env.client.post("/events", json={"events": [{"user_id": user, "item_id": item, "type": "unlike"}]})
    assert r.status_code == 200
    assert personalized(env.client, user)["items"] == before["items"]
    # Nothing was written to the main DB; the sync re-reads the user (the main DB is the truth).
    assert query(env.main, "SELECT count(*) FROM handpicked_likes WHERE user_id = %s AND handpicked_present_id = %s",
                 (user, item))[0][0] == 0
    assert env.sync()["users"] == 1


def test_a_list_computed_before_a_live_like_is_never_served_after_it(env):
    user = user_with(env.recs, "interaction_count >= 3")
    items = personalized(env.client, user)["items"]
    fields = env.cache.client.hkeys(user_key(user))
    (field,) = [f for f in fields if not f.startswith(b"l:u:")]  # the list, beside the user's row
    assert len(fields) == 2
    _, _, geo, filters_key = field.decode().split(":", 3)
    env.cache.client.delete(user_key(user))
    # A slow request misses and reads the user's live state; then the like lands; then the
    # slow request tries to cache the list it computed from the old state.
    slow = env.cache.lookup_user(user, int(geo), filters_key)
    assert slow.value is None
    r = env.client.post("/events", json={"user_id": user, "item_id": items[0], "type": "like"})
    assert r.status_code == 200
    env.cache.store_user(slow, encode_list(items, [("collaborative", 0)], "collaborative"), 600)
    assert env.cache.lookup_user(user, int(geo), filters_key).value is None  # stored, but never served
    first, second = personalized(env.client, user), personalized(env.client, user)
    assert first["cache_hit"] is False and second["cache_hit"] is True
    assert items[0] not in first["items"] and second["items"] == first["items"]


@pytest.mark.parametrize("body, field", [
    ({"user_id": 1, "item_id": 2}, "type"),
    ({"user_id": 1, "item_id": 2, "type": "love"}, "type"),
    ({"user_id": "x", "item_id": 2, "type": "like"}, "user_id"),
    ({"user_id": 1, "item_id": -4, "type": "like"}, "item_id"),
    ({"user_id": 1, "item_id": 2, "type": "like", "at": "yesterday"}, "at"),
    ({"events": []}, "events"),
    ({"events": [{"user_id": 1, "item_id": 2, "type": "like"}, {"user_id": 1, "type": "like"}]}, "events.1.item_id"),
    ([1, 2], "body"),
])
def test_bad_events_get_a_400_naming_the_field(env, body, field):
    r = env.client.post("/events", json=body)
    assert r.status_code == 400
    assert field in [e["field"] for e in r.get_json()["errors"]], r.get_json()


def test_events_are_protected_like_admin(env):
    remote = env.client.post("/events", json={"user_id": 1, "item_id": 2, "type": "like"},
                             environ_base={"REMOTE_ADDR": "10.1.2.3"})
    assert remote.status_code == 403
    authed = create_app(dict(env.env, BASIC_AUTH_USERNAME="u", BASIC_AUTH_PASSWORD="p")).test_client()
    assert authed.post("/events", json={"user_id": 1, "item_id": 2, "type": "like"}).status_code == 401


def test_a_late_committing_like_is_not_skipped(env):
    user = user_with(env.recs, "interaction_count >= 3")
    liked = set(profile_row(env.recs, user)[1])
    late_item, early_item = [r[0] for r in query(
        env.recs, "SELECT item_id FROM items WHERE in_stock AND NOT item_id = ANY(%s) ORDER BY item_id LIMIT 2",
        (list(liked),))]
    next_id = query(env.main, "SELECT max(id) + 1 FROM handpicked_likes")[0][0]
    slow = psycopg2.connect(env.main)  # a transaction that takes id N, and commits after N+1 was read
    with slow.cursor() as cur:
        cur.execute("INSERT INTO handpicked_likes (id, user_id, handpicked_present_id, created_at) "
                    "VALUES (%s, %s, %s, now())", (next_id, user, late_item))
    add_like(env.main, user, early_item, like_id=next_id + 1)
    env.sync()
    assert early_item in profile_row(env.recs, user)[1] and late_item not in profile_row(env.recs, user)[1]
    assert query(env.recs, "SELECT gaps ? %s FROM live_sync_state WHERE source = 'likes'", (str(next_id),))[0][0]
    slow.commit()
    slow.close()
    env.sync()
    assert late_item in profile_row(env.recs, user)[1]
    assert query(env.recs, "SELECT gaps FROM live_sync_state WHERE source = 'likes'")[0][0] == {}


def test_a_restarted_sync_keeps_its_watermark(env):
    state = query(env.recs, "SELECT source, max_id FROM live_sync_state WHERE source IN ('likes', 'clicks')")
    user = user_with(env.recs, "interaction_count >= 1")
    item = query(env.recs, "SELECT item_id FROM items WHERE in_stock ORDER BY item_id DESC LIMIT 1")[0][0]
    like_id = add_like(env.main, user, item)
    # A new process: fresh connections and Redis client, only the recommendations DB remembers.
    fresh = Cache(redis.Redis.from_url(env.settings.recommendations_redis_url))
    result = live.sync_recent_activity(load_settings(env.env), fresh)
    assert result["events"] == 1  # exactly the new like: nothing re-read, nothing skipped
    assert dict(query(env.recs, "SELECT source, max_id FROM live_sync_state WHERE source = 'likes'"))["likes"] == like_id
    assert dict(state)["likes"] == like_id - 1
    assert live.sync_recent_activity(env.settings, fresh)["events"] == 0


def test_a_full_profile_run_from_an_older_snapshot_does_not_undo_the_sync(env):
    user = user_with(env.recs, "interaction_count >= 1")
    item = query(env.recs, "SELECT item_id FROM items WHERE in_stock ORDER BY item_id DESC LIMIT 1")[0][0]
    snapshot = pipeline.read_snapshot(env.settings)  # read before the like commits
    add_like(env.main, user, item)
    env.sync()
    assert item in profile_row(env.recs, user)[1]
    pipeline.update_user_profiles(env.settings, env.cache, snapshot=snapshot)
    assert item not in profile_row(env.recs, user)[1]  # the swap put the older profile back...
    env.sync()
    assert item in profile_row(env.recs, user)[1]  # ...and the next sync re-applied the user


def test_health_and_stats_show_the_sync_lag(env):
    health = env.client.get("/health").get_json()
    assert health["live_sync"]["status"] == "ok" and health["live_sync"]["lag_s"] < 60
    assert env.client.get("/stats").get_json()["recommendations_db"]["live_sync"]["caught_up"] is True
    main_exec(env.recs, "UPDATE live_sync_state SET synced_at = now() - interval '10 minutes'")
    # A new app (a new process): /health results are cached per process for a second or two.
    health = create_app(env.app_env).test_client().get("/health").get_json()
    assert health["status"] == "degraded" and "live_sync" in health["late_jobs"]
    assert health["live_sync"]["behind"] is True and health["live_sync"]["lag_s"] >= 600


def test_concurrent_syncs_do_not_overlap(env):
    lock = env.cache.client.lock(live.LOCK_KEY, timeout=30, blocking=False)
    assert lock.acquire()
    try:
        with pytest.raises(live.AlreadyRunning):
            env.sync()
    finally:
        lock.release()
    errors = []
    threads = [threading.Thread(target=lambda: _sync_or_busy(env, errors)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors


def _sync_or_busy(env, errors):
    try:
        env.sync()
    except live.AlreadyRunning:
        pass
    except Exception as exc:  # noqa: BLE001 (reported by the test)
        errors.append(exc)


def test_a_real_worker_and_beat_apply_a_like_within_the_sync_period(env, tmp_path):
    import time

    from tests.live import start_beat, start_worker

    procs_env = dict(env.env, LIVE_SYNC_SECONDS="1")
    worker = start_worker(procs_env, queue="recs_live")
    beat = start_beat(procs_env, tmp_path)
    try:
        user = user_with(env.recs, "interaction_count >= 3")
        item = personalized(env.client, user)["items"][0]
        add_like(env.main, user, item)
        deadline = time.monotonic() + 60
        gone = False
        while time.monotonic() < deadline and not gone:
            gone = item not in personalized(env.client, user)["items"]
            time.sleep(0.2)
        logs = worker.output() + beat.output()
    finally:
        beat.stop()
        worker.stop()
    assert gone, logs[-3000:]
    assert "job=live_sync status=success events=1" in logs, logs[-3000:]


def test_a_finished_full_job_is_reconciled_once(env):
    user = user_with(env.recs, "interaction_count >= 1")
    item = query(env.recs, "SELECT item_id FROM items WHERE in_stock ORDER BY item_id DESC LIMIT 1")[0][0]
    add_like(env.main, user, item)
    env.sync()
    pipeline.update_user_profiles(env.settings, env.cache)
    assert env.sync()["reconciled"] == {"user_profiles": 1}
    assert env.sync()["reconciled"] == {}  # seen: the next runs leave it alone
