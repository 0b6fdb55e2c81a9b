"""The live sync: likes, clicks and present changes in the main DB, applied within seconds.

`recs.sync_recent_activity` runs this from beat every LIVE_SYNC_SECONDS. Each run:

1. Re-applies what a full job that finished since the last run may have overwritten:
   a full job swaps in tables computed from a snapshot read when it started, so the
   users the sync touched since then (live_touched_users) are recomputed again, and
   unavailable items it already knew about are forgotten (the popular refresh rebuilt
   them).
2. Reads the likes and clicks added since its watermark, by id. Ids come from
   sequences, so a transaction can commit a lower id after a higher one was read.
   The watermark is therefore the highest id read plus the ids below it not seen yet
   (gaps): each run re-reads the gaps with an index lookup until they appear or are
   an hour old (a rolled-back insert never appears). Nothing committed late is
   skipped, and the state lives in the recommendations DB (live_sync_state), written
   in the same transaction as what it applied, so a restart resumes exactly there.
3. Recomputes the profile of every user touched (and of users who sent POST /events)
   from their whole history in the main DB, with the full job's own functions
   (weighted() and compute_profiles(), the same decay reference: the newest public
   interaction), and upserts user_profiles. Applying an event twice therefore changes
   nothing, and the liked set, interaction count (so the algorithm), preferred
   categories, platforms and price change at once.
4. Folds in users who reached 3+ interactions and have no neighbours yet: their
   neighbours and collaborative list come from compute_similarities() run on them
   plus everyone sharing an item with them (cosine is zero for anyone else), with the
   whole data's item counts for the IDF, so they match what the next full run gives.
   All of a run's fold-ins are one batch after its rounds: the cost is reading the
   candidates' histories, and a few thousand users share nearly all their candidates,
   so one batch costs about what one user does. Until that batch has committed, the
   users due a fold-in are kept in Redis (Cache.add_fold_ins), so a run killed in
   between leaves them to the next one.
5. Presents that went out of stock, private or were deleted stop being served:
   items.in_stock false and popular_items rows gone in the recommendations DB, and the
   unavailable set in Redis that every web worker filters out of every list.

Unlikes (a like deleted in the main DB) leave no row to read: the next full profile
run drops them, or the next sync when the Rails app also sends POST /events unlike.
"""
from __future__ import annotations

import json
import logging
import time

import pandas as pd

from shared import main_queries
from shared.bulk import copy_csv
from shared.cache import TOUCHED_KEY, Cache
from shared.db import connect_main, connect_recs
from shared.settings import Settings
from workers.compute.interactions import WeightConfig, demographics, weighted
from workers.compute.profiles import compute_profiles
from workers.compute.similarities import MIN_INTERACTIONS, compute_similarities
from workers import lists
from workers.pipeline import (PROFILE_ROW_COLUMNS, SIMILARITY_COLUMNS, frame_chunks, profile_rows,
                              recommendation_rows, similarity_config)

log = logging.getLogger("recs.live")

SOURCES = ("likes", "clicks")
BATCH_ROWS = 20_000  # events read per source and round; a run loops until caught up or out of time
TIME_BUDGET_S = 120  # a run stops reading after this; the next one continues
GAP_TTL_S = 3600  # an id missing this long was rolled back: stop looking for it
MAX_GAPS = 100_000  # per source; a jump in the id sequence beyond this is logged and not tracked
PRESENT_OVERLAP_S = 300  # presents are re-read this far behind their watermark (late commits)
DELETION_CHECK_IDS = 20_000  # served items checked for a hard delete per run (_deletion_window)
RECONCILE_MARGIN_S = 60  # a full job's snapshot is taken this soon after its run starts, at the latest
# Users folded in per run, in one batch (bounds its memory: the candidates are at most
# everyone); a bigger burst's others wait for the next run, their profiles do not.
FOLD_IN_MAX = 50_000
# A fold-in whose candidates are more than this share of the users with interactions
# reads all interactions at once instead of the candidates' by id (about twice as
# costly per row, plus the item counts): the same result either way.
FULL_READ_SHARE = 0.5
LOCK_KEY = "recs:lock:live_sync"
LOCK_TTL_S = 600
FULL_JOBS = ("popular_items", "user_profiles", "user_similarities", "user_lists")
# Stored lists recomputed per run (workers.lists.update_users), so a burst does not slow
# the sync; the others are served computed (exactly the same answers) until
# the next lists job. The users a run re-read take at most half; the rest is kept for
# the users its fold-ins made collaborative.
LISTS_MAX = 500

# The latest success of a job and when its snapshot was read at the earliest: its own
# start, or the start of the refresh_all run it was part of (one snapshot for all steps).
LAST_FULL_RUN_SQL = """
SELECT extract(epoch FROM r.finished_at),
       extract(epoch FROM coalesce((SELECT max(a.started_at) FROM job_runs a
                                    WHERE a.job = 'refresh_all' AND a.started_at <= r.started_at
                                      AND (a.finished_at IS NULL OR a.finished_at >= r.finished_at)),
                                   r.started_at))
FROM job_runs r WHERE r.job = %s AND r.status = 'success'
ORDER BY r.finished_at DESC LIMIT 1
"""


class AlreadyRunning(Exception):
    pass


# ---------------------------------------------------------------- state

def load_state(cur) -> dict:
    cur.execute("SELECT source, max_id, gaps, extract(epoch FROM changed_at), ref_ts, "
                "extract(epoch FROM newest_event_at) FROM live_sync_state")
    return {r[0]: {"max_id": r[1], "gaps": {int(k): v for k, v in (r[2] or {}).items()}, "changed": _float(r[3]),
                   "ref_ts": r[4], "newest": _float(r[5])} for r in cur.fetchall()}


def _float(v):
    return None if v is None else float(v)


def save_state(cur, state: dict, caught_up: bool | None = None) -> None:
    for source, st in state.items():
        cur.execute(
            """INSERT INTO live_sync_state (source, max_id, gaps, changed_at, ref_ts, newest_event_at)
               VALUES (%s, %s, %s, to_timestamp(%s), %s, to_timestamp(%s))
               ON CONFLICT (source) DO UPDATE SET max_id = EXCLUDED.max_id, gaps = EXCLUDED.gaps,
                   changed_at = EXCLUDED.changed_at, ref_ts = EXCLUDED.ref_ts,
                   newest_event_at = EXCLUDED.newest_event_at""",
            (source, st["max_id"], json.dumps({str(k): v for k, v in st["gaps"].items()}), st["changed"],
             st["ref_ts"], st["newest"]))
    if caught_up is not None:
        cur.execute("UPDATE live_sync_state SET synced_at = clock_timestamp(), caught_up = %s", (caught_up,))


def _bootstrap(main, recs_cur, now: float) -> dict:
    """First run: start at the main DB's current ids. What came before is in the last full run
    (or the next one); the full jobs already reconciled are marked as seen."""
    ids = main_queries.max_ids(main)
    ref = main_queries.newest_interaction_ts(main)
    state = {source: {"max_id": ids[source], "gaps": {}, "changed": None, "ref_ts": ref, "newest": None}
             for source in SOURCES}
    state["presents"] = {"max_id": 0, "gaps": {}, "changed": now, "ref_ts": None, "newest": None}
    for job in FULL_JOBS:
        recs_cur.execute(LAST_FULL_RUN_SQL, (job,))
        row = recs_cur.fetchone()
        state[f"job:{job}"] = {"max_id": 0, "gaps": {}, "changed": float(row[0]) if row else 0.0, "ref_ts": None,
                               "newest": None}
    log.info("live=bootstrap likes_id=%s clicks_id=%s", ids["likes"], ids["clicks"])
    return state


def _advance(st: dict, rows: list, now: float) -> None:
    """Move one source's watermark over the rows read: new gaps, filled gaps, aged-out gaps."""
    gaps = st["gaps"]
    prev = st["max_id"]
    for row in rows:
        event_id = row[0]
        if event_id <= st["max_id"]:
            gaps.pop(event_id, None)  # a late commit, now seen
            continue
        if event_id - prev - 1 > MAX_GAPS:
            log.warning("live=id_jump from=%s to=%s untracked=%s", prev, event_id, event_id - prev - 1 - MAX_GAPS)
            prev = event_id - MAX_GAPS - 1
        for missing in range(prev + 1, event_id):
            gaps[missing] = now
        prev = event_id
    st["max_id"] = max(st["max_id"], prev)
    for event_id in [k for k, since in gaps.items() if now - since > GAP_TTL_S]:
        del gaps[event_id]
    if len(gaps) > MAX_GAPS:
        for event_id in sorted(gaps)[: len(gaps) - MAX_GAPS]:
            del gaps[event_id]


# ---------------------------------------------------------------- applying

def _weights(settings: Settings) -> WeightConfig:
    return WeightConfig.from_settings(settings)


def _user_pairs(main, settings: Settings, users, ref_ts: float | None) -> pd.DataFrame:
    """Weighted (user, item) pairs of these users' whole public history, decayed as the full job does."""
    history = main_queries.load_user_interactions(main, users)
    return weighted(history, _weights(settings), ref_ts)


def apply_users(main, cur, settings: Settings, users: list, ref_ts: float | None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Recompute and upsert these users' profiles. Returns (their pairs, their profile rows)."""
    pairs = _user_pairs(main, settings, users, ref_ts)
    demo = demographics(main_queries.load_users_by_id(main, users))
    items = main_queries.load_items_by_id(main, pairs["item_id"].unique().tolist()) if len(pairs) else \
        main_queries.load_items_by_id(main, [])
    prof = compute_profiles(pairs, demo, items)
    prof = prof[prof["user_id"].isin(users)]
    if len(prof):
        # COPY into a temporary table, then one upsert: the rows as the full job writes them.
        cur.execute("CREATE TEMP TABLE IF NOT EXISTS live_profiles_in (LIKE user_profiles INCLUDING DEFAULTS) "
                    "ON COMMIT DELETE ROWS")
        _copy(cur, "live_profiles_in", PROFILE_ROW_COLUMNS, profile_rows(prof))
        cur.execute(f"""
            INSERT INTO user_profiles ({", ".join(PROFILE_ROW_COLUMNS)})
            SELECT {", ".join(PROFILE_ROW_COLUMNS)} FROM live_profiles_in
            ON CONFLICT (user_id) DO UPDATE SET
              {", ".join(f"{c} = EXCLUDED.{c}" for c in PROFILE_ROW_COLUMNS[1:])}, updated_at = now()""")
        cur.execute("TRUNCATE live_profiles_in")
        cur.execute("INSERT INTO live_touched_users (user_id) SELECT unnest(%s::bigint[]) "
                    "ON CONFLICT (user_id) DO UPDATE SET touched_at = now()", (prof["user_id"].astype(int).tolist(),))
    # Their stored lists were computed from the old profiles: gone in the same transaction
    # (a miss computes instead), then recomputed after the commit (workers.lists.update_users).
    cur.execute("DELETE FROM user_lists WHERE user_id = ANY(%s::bigint[])", (users,))
    return pairs, prof


def _copy(cur, table: str, columns: list[str], frame: pd.DataFrame) -> None:
    """COPY a frame's rows into a table, CSV as the full jobs write it."""
    copy_csv(cur, table, columns, frame_chunks(frame, columns))


def needs_fold_in(cur, users: list) -> list[int]:
    """Of these users, those with 3+ interactions and no neighbours (their profiles as written now)."""
    if not users:
        return []
    cur.execute("SELECT p.user_id FROM user_profiles p WHERE p.user_id = ANY(%s::bigint[]) "
                "AND p.interaction_count >= %s "
                "AND NOT EXISTS (SELECT 1 FROM user_similarities s WHERE s.user_id = p.user_id) ORDER BY 1",
                ([int(u) for u in users], MIN_INTERACTIONS))
    return [r[0] for r in cur.fetchall()]


def fold_in(main, cur, settings: Settings, users: list, ref_ts: float | None) -> int:
    """Neighbours and the collaborative list of these users, written now. Returns similarity rows written."""
    if not users:
        return 0
    started = time.perf_counter()
    own = main_queries.load_user_interactions(main, users)
    candidates = sorted(set(main_queries.co_users(main, own["item_id"].unique().tolist())) | set(users))
    cur.execute("SELECT count(*) FROM user_profiles WHERE interaction_count > 0")
    known = cur.fetchone()[0]
    full_read = len(candidates) > FULL_READ_SHARE * known
    if full_read:
        # Most users are candidates (a burst's fold-ins): one read of everything, as the
        # full job does, is cheaper than reading them by id, and its item counts are the IDF.
        pairs = weighted(main_queries.load_interactions(main), _weights(settings), ref_ts)
        catalogue = main_queries.load_items(main)
        item_users, n_users = None, None
    else:
        pairs = _user_pairs(main, settings, candidates, ref_ts)
        items = pairs["item_id"].unique().tolist()
        item_users = main_queries.item_user_counts(main, items)
        catalogue = main_queries.load_items_by_id(main, items)
        n_users = max(known, len(pairs["user_id"].unique()))
    sims, recs = compute_similarities(pairs, catalogue.loc[catalogue["in_stock"], "item_id"].to_numpy(),
                                      similarity_config(settings), query_users=users, item_users=item_users,
                                      n_users=n_users)
    cur.execute("DELETE FROM user_similarities WHERE user_id = ANY(%s::bigint[])", (users,))
    cur.execute("DELETE FROM user_recommendations WHERE user_id = ANY(%s::bigint[])", (users,))
    cur.execute("DELETE FROM user_lists WHERE user_id = ANY(%s::bigint[])", (users,))
    for table, frame in {"user_similarities": sims, "user_recommendations": recommendation_rows(recs)}.items():
        if len(frame):
            _copy(cur, table, SIMILARITY_COLUMNS[table], frame)
    log.info("live=fold_in users=%s candidates=%s full_read=%s pairs=%s neighbours=%s ms=%.0f", len(users),
             len(candidates), full_read, len(pairs), len(sims), (time.perf_counter() - started) * 1000)
    return len(sims)


# ---------------------------------------------------------------- presents

_deletion_cursor = 0  # the last item id checked for deletion by this process (see _deletion_window)


def _deletion_window(cur) -> list:
    """The next DELETION_CHECK_IDS served items, by id, wrapping around: the ids this run
    checks for a hard delete in the main DB. Checking the whole catalogue every run cost
    ~180 ms of PostgreSQL CPU on `large` every 10 s, a burst that showed in serving's p99;
    a window spreads it, and a deleted present is caught within a few runs (a status
    change or a present made private is caught by the next run, through updated_at)."""
    global _deletion_cursor
    cur.execute("SELECT item_id FROM items WHERE in_stock AND item_id > %s ORDER BY item_id LIMIT %s",
                (_deletion_cursor, DELETION_CHECK_IDS))
    ids = [r[0] for r in cur.fetchall()]
    if len(ids) < DELETION_CHECK_IDS:  # the end of the catalogue: the next run starts over
        _deletion_cursor = 0
        if ids:  # and this run checks the start too, to a full window
            cur.execute("SELECT item_id FROM items WHERE in_stock AND item_id < %s ORDER BY item_id LIMIT %s",
                        (ids[0], DELETION_CHECK_IDS - len(ids)))
            ids += [r[0] for r in cur.fetchall()]
    else:
        _deletion_cursor = ids[-1]
    return ids


def sync_presents(main, cur, cache: Cache, st: dict, now: float) -> tuple[dict, list, bool]:
    """Mark presents changed since the watermark (and deleted ones) in the recommendations DB.

    Returns (newly unavailable {item_id: epoch}, available again [ids]) for the Redis set,
    written once this transaction has committed, and whether an items row changed (the
    set's version then moves too: the live worker's catalogue snapshot follows it).
    """
    since = (st["changed"] or now) - PRESENT_OVERLAP_S
    rows = main_queries.changed_presents(main, since)
    gone = {int(i): float(changed) for i, available, changed in rows if not available}
    back = [int(i) for i, available, _ in rows if available]
    for item_id in main_queries.deleted_presents(main, _deletion_window(cur)):
        gone[item_id] = now
    if rows:
        st["changed"] = max(st["changed"] or 0.0, max(float(r[2]) for r in rows))
    changed = False
    if gone:
        cur.execute("UPDATE items SET in_stock = false WHERE item_id = ANY(%s::bigint[]) AND in_stock", (list(gone),))
        changed = cur.rowcount > 0
        cur.execute("DELETE FROM popular_items WHERE item_id = ANY(%s::bigint[])", (list(gone),))
    if back:
        cur.execute("UPDATE items SET in_stock = true WHERE item_id = ANY(%s::bigint[]) AND NOT in_stock", (back,))
        changed = changed or cur.rowcount > 0
    known = cache.unavailable_since()
    return ({i: ts for i, ts in gone.items() if i not in known}, [i for i in back if i in known], changed)


# ---------------------------------------------------------------- full jobs

def reconcile_full_jobs(main, cur, cache: Cache, settings: Settings, state: dict) -> dict:
    """Re-apply live changes a full job that finished since the last run may have overwritten."""
    out = {}
    snaps = {}
    for job in FULL_JOBS:
        cur.execute(LAST_FULL_RUN_SQL, (job,))
        row = cur.fetchone()
        seen = state.setdefault(f"job:{job}", {"max_id": 0, "gaps": {}, "changed": 0.0, "ref_ts": None,
                                               "newest": None})
        if row is None:
            continue
        finished, snap = float(row[0]), float(row[1]) - RECONCILE_MARGIN_S
        snaps[job] = snap
        if finished <= (seen["changed"] or 0.0) + 0.001:  # stored through to_timestamp: microseconds
            continue
        seen["changed"] = finished
        ref = state["likes"]["ref_ts"]
        if job == "popular_items":
            cache.trim_unavailable(snap)
            still = list(cache.unavailable_since())
            if still:  # changed after the snapshot: the new tables do not know yet
                cur.execute("UPDATE items SET in_stock = false WHERE item_id = ANY(%s::bigint[])", (still,))
                cur.execute("DELETE FROM popular_items WHERE item_id = ANY(%s::bigint[])", (still,))
            out[job] = len(still)
            continue
        cur.execute("SELECT user_id FROM live_touched_users WHERE touched_at >= to_timestamp(%s)", (snap,))
        users = [r[0] for r in cur.fetchall()]
        if users and job == "user_profiles":
            apply_users(main, cur, settings, users, ref)
        elif users and job == "user_lists":  # swapped in from a snapshot older than their live changes
            cur.execute("DELETE FROM user_lists WHERE user_id = ANY(%s::bigint[])", (users,))
            state.setdefault("relist", []).extend(users)
        elif users:
            cur.execute("SELECT user_id FROM user_profiles WHERE user_id = ANY(%s::bigint[]) "
                        "AND interaction_count >= %s", (users, MIN_INTERACTIONS))
            fold_in(main, cur, settings, [r[0] for r in cur.fetchall()], ref)
        out[job] = len(users)
    if "user_profiles" in snaps and "user_similarities" in snaps:
        cur.execute("DELETE FROM live_touched_users WHERE touched_at < to_timestamp(%s)",
                    (min(snaps[j] for j in ("user_profiles", "user_similarities", "user_lists") if j in snaps),))
    return out


# ---------------------------------------------------------------- the run

def sync_recent_activity(settings: Settings, cache: Cache, time_budget_s: float = TIME_BUDGET_S) -> dict:
    lock = cache.client.lock(LOCK_KEY, timeout=LOCK_TTL_S, blocking=False)
    if not lock.acquire():
        raise AlreadyRunning("live_sync")
    started = time.monotonic()
    main = connect_main(settings)
    main.autocommit = True  # each read sees what has committed by then
    recs = connect_recs(settings, application_name="recs-live-sync")
    result = {"events": 0, "users": 0, "folded_in": 0, "unavailable": 0, "available": 0, "rounds": 0}
    popped: list = []
    try:
        with recs.cursor() as cur:
            state = load_state(cur)
            if not state:
                state = _bootstrap(main, cur, time.time())
            result["reconciled"] = reconcile_full_jobs(main, cur, cache, settings, state)
            relist = state.pop("relist", [])
            save_state(cur, state)
        recs.commit()
        if result["reconciled"].get("popular_items"):  # items marked out of stock again in the new tables:
            cache.set_unavailable({}, ())  # the version moves, so the relisting's catalogue reloads
        relisted = 0  # this run's, up to LISTS_MAX

        def relist_some(users):
            nonlocal relisted
            if relisted < LISTS_MAX and users:
                result["relisted"] = result.get("relisted", 0) + lists.update_users(
                    settings, users[:LISTS_MAX - relisted], cache.catalogue_version())
                relisted += min(len(users), LISTS_MAX - relisted)

        if relist:
            relist_some(relist)
            cache.invalidate_users(relist)
        caught_up = False
        while not caught_up:
            now = time.time()
            rows, caught_up = [], True
            for source in SOURCES:
                read = main_queries.load_new_events(main, source, state[source]["max_id"],
                                                    list(state[source]["gaps"]), BATCH_ROWS)
                caught_up &= len(read) < BATCH_ROWS
                _advance(state[source], read, now)
                if read:
                    state[source]["newest"] = max(state[source]["newest"] or 0.0, max(r[3] for r in read))
                rows.extend(read)
            public = [r for r in rows if r[5]]
            if public:
                ref = max(state["likes"]["ref_ts"] or 0.0, max(r[3] for r in public))
                for source in SOURCES:
                    state[source]["ref_ts"] = ref
            popped = cache.pop_touched() if result["rounds"] == 0 else []
            users = sorted({r[1] for r in public} | set(popped))
            due = []
            with recs.cursor() as cur:
                if users:
                    _, prof = apply_users(main, cur, settings, users, state["likes"]["ref_ts"])
                    due = needs_fold_in(cur, prof["user_id"].tolist())
                gone, back, items_changed = ({}, [], False)
                if result["rounds"] == 0:
                    gone, back, items_changed = sync_presents(main, cur, cache, state["presents"], now)
                save_state(cur, state)
            recs.commit()
            popped = []
            # Kept until folded in (below, or by the next run if this one dies first).
            cache.add_fold_ins(due)
            # After the commit: a request in between recomputing from the old rows would cache them again.
            if gone or back or items_changed:  # before relisting: the lists see the items as committed
                cache.set_unavailable(gone, back)
            if users:
                # Up to half the run's budget: the users a fold-in makes collaborative come next.
                relist_some(users[:max(0, LISTS_MAX // 2 - relisted)])
                cache.invalidate_users(users)
            result["events"] += len(rows)
            result["users"] += len(users)
            result["unavailable"] += len(gone)
            result["available"] += len(back)
            result["rounds"] += 1
            if time.monotonic() - started > time_budget_s:
                break
        pending = cache.pending_fold_ins()
        batch = pending[:FOLD_IN_MAX]
        with recs.cursor() as cur:
            fold = needs_fold_in(cur, batch)  # the full similarity job may have given them neighbours since
            fold_in(main, cur, settings, fold, state["likes"]["ref_ts"])
            save_state(cur, state, caught_up)
        recs.commit()
        # Their lists were content-based until this commit (and may be cached so again).
        cache.fold_ins_done(batch)
        if fold:
            relist_some(fold)
            cache.invalidate_users(fold)
        result["folded_in"] = len(fold)
        if len(pending) > FOLD_IN_MAX:
            result["fold_in_deferred"] = len(pending) - FOLD_IN_MAX
    except BaseException:
        recs.rollback()
        if popped:  # their recompute did not happen: the next run takes them again
            try:
                cache.client.sadd(TOUCHED_KEY, *popped)
            except Exception:
                pass
        raise
    finally:
        main.close()
        recs.close()
        try:
            lock.release()
        except Exception:  # expired: nothing to release
            pass
    result["seconds"] = round(time.monotonic() - started, 3)
    log.info("job=live_sync status=success events=%s users=%s folded_in=%s unavailable=%s available=%s rounds=%s "
             "ms=%.0f", result["events"], result["users"], result["folded_in"], result["unavailable"],
             result["available"], result["rounds"], result["seconds"] * 1000)
    return result
