"""Precomputed personal lists (user_lists) and popular segment lists (popular_lists).

For every user with interactions, shared.serving.precompute_list: the whole list
/personalized serves a request with no price or category filter and the user's own
geo. The serving code itself runs against in-memory data (workers.memory_source), the
way the evaluator runs it, so a stored list is exactly what the API would compute.
The Python loop is the cost (about half a millisecond of CPU a user), so users are
split over forked processes that share the source copy-on-write; each returns a CSV
chunk to COPY.
"""
from __future__ import annotations

import io
import multiprocessing
import signal
from contextlib import contextmanager

import numpy as np
import pandas as pd
from psycopg2.extras import execute_values

from shared.catalogue import Snapshot, SnapshotSource
from shared.db import connect_recs
from shared.serving import PersonalList, precompute_list
from shared.store import SqlSource, encode_sections, prepare
from workers.memory_source import MemorySource

CHUNK_USERS = 2000
COLUMNS = ["user_id", "item_ids", "sections", "algorithm", "geo_id", "geo_safe", "price_lo", "price_hi"]

_STATE: tuple | None = None  # (source, size) for forked children: set before the pool starts


def _opt(value, cast) -> str:
    return "" if value is None else repr(cast(value))


def csv_row(user_id: int, plist: PersonalList) -> str:
    return (f'{user_id},"{{{",".join(map(str, plist.ids))}}}","{encode_sections(plist.sections)}",'
            f'{plist.algorithm},{_opt(plist.geo_id, int)},{"t" if plist.geo_safe else "f"},'
            f'{_opt(plist.price_lo, float)},{_opt(plist.price_hi, float)}\n')


def _chunk(user_ids) -> str:
    source, size = _STATE
    buf = io.StringIO()
    for user_id in user_ids:
        buf.write(csv_row(user_id, precompute_list(source, source.profile(user_id), size)))
    return buf.getvalue()


def list_chunks(source, user_ids: list[int], size: int, processes: int = 2):
    """CSV chunks (StringIO) of user_lists rows, computed over `processes` forked processes."""
    global _STATE
    parts = [user_ids[i:i + CHUNK_USERS] for i in range(0, len(user_ids), CHUNK_USERS)]
    _STATE = (source, size)
    try:
        if processes <= 1 or len(parts) <= 1:
            for part in parts:
                yield io.StringIO(_chunk(part))
            return
        with _may_fork():
            pool = multiprocessing.get_context("fork").Pool(processes, initializer=_default_sigterm)
            try:
                for text in pool.imap(_chunk, parts):
                    yield io.StringIO(text)
                pool.close()  # done: each process ends on its own
            except BaseException:  # the caller stopped early or failed: end them now
                pool.terminate()
                raise
            finally:
                pool.join()
    finally:
        _STATE = None


def _default_sigterm() -> None:
    """A pool process dies on SIGTERM (Pool.terminate). A handler inherited from the forking
    process (a test runner's, a server's) would let it live on, blocked on the task
    queue's lock, and the pool's join would wait for it forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)


@contextmanager
def _may_fork():
    """Let a Celery prefork child start the pool. Its process is marked daemonic, which
    multiprocessing refuses to give children (they could outlive it); this pool's
    processes end with the `with` block that uses it, before the task returns."""
    proc = multiprocessing.current_process()
    daemon = proc._config.get("daemon")
    proc._config["daemon"] = False
    try:
        yield
    finally:
        proc._config["daemon"] = daemon


# ---------------------------------------------------------------- sources

def memory_source(items: pd.DataFrame, popular: pd.DataFrame, profiles: pd.DataFrame,
                  recommendations: pd.DataFrame) -> MemorySource:
    """The in-memory source over a refresh's outputs. `recommendations` holds the
    user_recommendations rows as written ('{..}' text), so the collaborative scores are
    exactly the values the API reads back."""
    return MemorySource(items, popular, profiles, recommendations)


def _copy_frame(conn, sql: str, **read_csv) -> pd.DataFrame:
    buf = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", buf)
    buf.seek(0)
    # pandas 3 parses floats exactly (round trip): the values psycopg2 gives the API.
    return pd.read_csv(buf, keep_default_na=True, **read_csv)


def _id_list(text) -> list:
    return [int(v) for v in text[1:-1].split(",")] if isinstance(text, str) and len(text) > 2 else []


def source_from_db(conn) -> MemorySource:
    """The in-memory source over what the recommendations DB holds now, read in one snapshot."""
    conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
    items = _copy_frame(conn, "SELECT item_id, price, category, platform, geo_id, in_stock FROM items",
                        dtype={"category": "string", "platform": "string"})
    items["in_stock"] = items["in_stock"].map({"t": True, "f": False}).astype(bool)
    items["geo_id"] = items["geo_id"].astype("Int64")
    popular = _copy_frame(conn, "SELECT geo_id, gender, age_group, category, item_id, popularity_score "
                                "FROM popular_items ORDER BY geo_id, gender, age_group, category, "
                                "popularity_score DESC, item_id")
    profiles = _copy_frame(conn, "SELECT user_id, interaction_count, preferred_categories, preferred_platforms, "
                                 "avg_price, liked_item_ids, gender, age_group, geo_id FROM user_profiles",
                           dtype={"gender": "string", "age_group": "string"})
    profiles["liked_item_ids"] = profiles["liked_item_ids"].map(_id_list)
    profiles["geo_id"] = profiles["geo_id"].astype("Int64")
    recs = _copy_frame(conn, "SELECT user_id, item_ids, scores FROM user_recommendations",
                       dtype={"item_ids": "string", "scores": "string"})
    conn.rollback()
    return MemorySource(items, popular, profiles, recs.astype({"item_ids": object, "scores": object}))


# ---------------------------------------------------------------- popular_lists

SEGMENT_COLUMNS = ["geo_id", "gender", "age_group", "category", "item_ids", "scores"]
SEGMENT_KEYS = ["geo_id", "gender", "age_group", "category"]


def segment_chunks(popular: pd.DataFrame, per_chunk: int = 5000):
    """popular_lists rows (CSV chunks) from compute_popular's frame, which is in serving
    order: segment, then score descending, then item id. Scores as repr (exact float8)."""
    n = len(popular)
    if not n:
        return
    change = np.zeros(n, dtype=bool)
    change[0] = True
    for key in SEGMENT_KEYS:
        values = popular[key].to_numpy()
        change[1:] |= values[1:] != values[:-1]
    starts = np.flatnonzero(change).tolist() + [n]
    keys = popular[SEGMENT_KEYS].to_numpy()
    ids = popular["item_id"].to_numpy().tolist()
    scores = popular["popularity_score"].to_numpy().tolist()
    buf = io.StringIO()
    for i, (a, b) in enumerate(zip(starts[:-1], starts[1:])):
        geo, gender, age, category = keys[a]
        buf.write(f'{int(geo)},{gender},{age},{_csv_text(category)},"{{{",".join(map(str, ids[a:b]))}}}",'
                  f'"{{{",".join(map(repr, scores[a:b]))}}}"\n')
        if (i + 1) % per_chunk == 0:
            yield buf
            buf = io.StringIO()
    if buf.tell():
        yield buf


def _csv_text(value: str) -> str:
    return '"' + value.replace('"', '""') + '"'


# ---------------------------------------------------------------- live updates

UPSERT_SQL = f"""
INSERT INTO user_lists ({", ".join(COLUMNS)}) VALUES %s
ON CONFLICT (user_id) DO UPDATE SET {", ".join(f"{c} = EXCLUDED.{c}" for c in COLUMNS[1:])}
"""


# The live worker's catalogue snapshot and segment-list LRU (the API's own, shared.catalogue),
# kept between sync runs and reloaded when the catalogue's version moves (Cache.catalogue_version);
# one per recommendations DB.
_SNAPSHOTS: dict[str, Snapshot] = {}


def update_users(settings, user_ids, catalogue_version: str) -> int:
    """Recompute the stored lists of these users from what the recommendations DB holds
    now (their profiles and collaborative lists as just updated), with the same
    precompute_list over the API's source: the catalogue snapshot and segment lists
    (shared.catalogue), the users' rows read in one query. For the live sync: call it
    after it has written the users' profiles (and its item changes, which move
    catalogue_version). Users without interactions lose their row. Returns rows written."""
    conn = prepare(connect_recs(settings, application_name="recs-live-lists"))
    try:
        def run(fn):
            with conn.cursor() as cur:
                return fn(cur)

        source = SqlSource(run)
        snapshot = _SNAPSHOTS.setdefault(settings.recommendations_database_url, Snapshot(run))
        snapshot.run = run  # this call's connection, for a reload
        catalogue = snapshot.current(catalogue_version)
        users = sorted(set(user_ids))
        found = source.profiles_with_detail(users)
        rows, gone = [], []
        for user_id in users:
            profile, collaborative = found.get(user_id, (None, None))
            if profile is None or not profile.interaction_count:
                gone.append(user_id)
                continue
            snapshot_source = SnapshotSource(snapshot, catalogue, source.segment_lists, profile=profile,
                                             collaborative=collaborative)
            plist = precompute_list(snapshot_source, profile, settings.recommendation_list_size)
            rows.append((user_id, plist.ids, encode_sections(plist.sections), plist.algorithm, plist.geo_id,
                         plist.geo_safe, plist.price_lo, plist.price_hi))
        conn.autocommit = False
        with conn.cursor() as cur:
            if gone:
                cur.execute("DELETE FROM user_lists WHERE user_id = ANY(%s)", (gone,))
            execute_values(cur, UPSERT_SQL, rows)
        conn.commit()
        return len(rows)
    finally:
        conn.close()
