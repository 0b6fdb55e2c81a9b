"""The precompute jobs as plain functions: read the main DB, compute, swap tables in.

Celery tasks (workers/tasks.py), the CLI (workers/refresh.py) and tests call these.
Each job: take the job's Redis lock, record the run, read a consistent snapshot of
the main DB through a read-only connection and close it, compute with pandas /
scikit-learn, write with one atomic swap, then bump the data kind's cache generation.
"""
from __future__ import annotations

import io
import logging
import time
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from shared import bulk, jobs, main_queries
from shared.cache import Cache
from shared.db import connect_main, connect_recs
from shared.settings import Settings
from workers.compute.interactions import WeightConfig, demographics, weighted
from workers.compute.popular import compute_popular
from workers.compute.profiles import compute_profiles
from workers.compute.similarities import SimilarityConfig, compute_similarities
from workers import lists
from workers.memory_source import PROFILE_COLUMNS

log = logging.getLogger("recs.jobs")
CHUNK_ROWS = 200_000


class AlreadyRunning(Exception):
    pass


@dataclass
class Snapshot:
    """What the jobs read from the main DB, read in one repeatable-read transaction."""

    items: pd.DataFrame
    interactions: pd.DataFrame
    users: pd.DataFrame
    stats: dict
    _pairs: dict = field(default_factory=dict, repr=False)
    # What each step computed and the generation it bumped, for a later step of the same
    # refresh (the list precompute) to reuse instead of reading it back.
    outputs: dict = field(default_factory=dict, repr=False)

    def pairs(self, settings: Settings) -> pd.DataFrame:
        """Weighted (user, item) pairs, computed once per weighting: refresh_all shares them."""
        cfg = WeightConfig.from_settings(settings)
        if cfg not in self._pairs:
            self._pairs[cfg] = weighted(self.interactions, cfg)
        return self._pairs[cfg]

    def demographics(self) -> pd.DataFrame:
        return demographics(self.users)


def read_snapshot(settings: Settings) -> Snapshot:
    conn = connect_main(settings)
    try:
        conn.set_session(isolation_level="REPEATABLE READ", readonly=True)
        snap = Snapshot(
            main_queries.load_items(conn),
            main_queries.load_interactions(conn),
            main_queries.load_users(conn),
            main_queries.load_stats(conn),
        )
        conn.rollback()
        return snap
    finally:
        conn.close()


def _pg_array(values) -> str:
    return "{" + ",".join(map(str, values)) + "}"


def frame_chunks(df: pd.DataFrame, columns: list[str]):
    for start in range(0, len(df), CHUNK_ROWS):
        buf = io.StringIO()
        df.iloc[start : start + CHUNK_ROWS][columns].to_csv(buf, index=False, header=False, na_rep="")
        yield buf


@contextmanager
def job_run(job_name: str, settings: Settings, cache: Cache):
    """Lock, record start and finish, log key=value. Yields a dict the job fills with 'rows'."""
    job = jobs.JOBS[job_name]
    lock = jobs.lock(cache.client, job)
    if not lock.acquire():
        raise AlreadyRunning(job_name)
    conn = connect_recs(settings, application_name=f"recs-job-{job_name}")
    started = time.perf_counter()
    result = {"rows": 0}
    try:
        run_id = jobs.record_start(conn, job_name)
        try:
            yield result
        except BaseException as exc:
            conn.rollback()
            jobs.record_finish(conn, run_id, "failed", result["rows"], f"{type(exc).__name__}: {exc}"[:2000])
            log.error("job=%s status=failed error=%r", job_name, str(exc)[:200])
            raise
        jobs.record_finish(conn, run_id, "success", result["rows"])
        result["seconds"] = round(time.perf_counter() - started, 3)
        log.info("job=%s status=success rows=%s ms=%.0f", job_name, result["rows"], result["seconds"] * 1000)
    finally:
        conn.close()
        try:
            lock.release()
        except Exception:  # expired lock: nothing to release
            pass


def _write(settings: Settings, tables: dict, progress=None) -> int:
    conn = connect_recs(settings, application_name="recs-writer")
    try:
        return bulk.replace_tables(conn, tables, progress=progress)
    finally:
        conn.close()


ITEM_COLUMNS = ["item_id", "price", "category", "platform", "geo_id", "in_stock", "target_gender", "target_age",
                "created_at"]
POPULAR_COLUMNS = ["geo_id", "gender", "age_group", "category", "item_id", "popularity_score", "item_category",
                   "price", "platform", "item_geo_id"]


def refresh_popular_items(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None) -> dict:
    with job_run("popular_items", settings, cache) as result:
        snap = snapshot or read_snapshot(settings)
        pop = compute_popular(snap.pairs(settings), snap.demographics(), snap.items, top_n=settings.popular_top_n)
        attrs = snap.items[["item_id", "category", "price", "platform", "geo_id"]].rename(
            columns={"category": "item_category", "geo_id": "item_geo_id"})
        pop = pop.merge(attrs, on="item_id", how="left")
        pop["item_geo_id"] = pop["item_geo_id"].astype("Int64")
        items = snap.items.copy()
        items["geo_id"] = items["geo_id"].astype("Int64")
        stats = pd.DataFrame({"name": list(snap.stats), "value": list(snap.stats.values())})
        result["rows"] = _write(
            settings,
            {
                "items": (ITEM_COLUMNS, frame_chunks(items, ITEM_COLUMNS)),
                "popular_items": (POPULAR_COLUMNS, frame_chunks(pop, POPULAR_COLUMNS)),
                "popular_lists": (lists.SEGMENT_COLUMNS, lists.segment_chunks(pop)),
                "main_db_stats": (["name", "value"], frame_chunks(stats, ["name", "value"])),
            },
            progress,
        )
        snap.outputs["popular"] = (pop, cache.bump("popular"))
    return result


def update_user_profiles(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None) -> dict:
    with job_run("user_profiles", settings, cache) as result:
        snap = snapshot or read_snapshot(settings)
        prof = compute_profiles(snap.pairs(settings), snap.demographics(), snap.items)
        kept = prof[PROFILE_COLUMNS].copy()
        prof["liked_item_ids"] = prof["liked_item_ids"].map(_pg_array)
        prof["geo_id"] = prof["geo_id"].astype("Int64")
        cols = ["user_id", "preferred_categories", "preferred_platforms", "avg_price", "price_min", "price_max",
                "interaction_count", "liked_item_ids", "gender", "age_group", "geo_id"]
        result["rows"] = _write(settings, {"user_profiles": (cols, frame_chunks(prof, cols))}, progress)
        snap.outputs["profiles"] = (kept, cache.bump("profiles"))
    return result


def similarity_config(settings: Settings) -> SimilarityConfig:
    return SimilarityConfig(k=settings.max_similar_users, list_size=min(settings.recommendation_list_size, 100))


SIMILARITY_COLUMNS = {
    "user_similarities": ["user_id", "similar_user_id", "similarity_score"],
    "user_recommendations": ["user_id", "item_ids", "scores"],
}


def _similarity_chunks(snap: Snapshot, settings: Settings, shard: int, shards: int) -> dict:
    """CSV chunks for user_similarities and user_recommendations, for one shard of users."""
    in_stock = snap.items.loc[snap.items["in_stock"], "item_id"].to_numpy()
    sims, recs = compute_similarities(snap.pairs(settings), in_stock, similarity_config(settings), shard, shards)
    recs_out = pd.DataFrame({
        "user_id": recs["user_id"],
        "item_ids": recs["item_ids"].map(_pg_array),
        "scores": recs["scores"].map(lambda a: _pg_array(np.round(a, 5))),
    })
    frames = {"user_similarities": sims, "user_recommendations": recs_out}
    # The list precompute reads the scores as the DB holds them (the text written here).
    snap.outputs.setdefault("recommendations", []).append(recs_out)
    return {table: list(frame_chunks(frames[table], cols)) for table, cols in SIMILARITY_COLUMNS.items()}


def update_user_similarities(settings: Settings, cache: Cache, snapshot: Snapshot | None = None,
                             progress=None) -> dict:
    """All shards in this process, one after another (bounded memory), then one swap."""
    with job_run("user_similarities", settings, cache) as result:
        snap = snapshot or read_snapshot(settings)
        parts = [_similarity_chunks(snap, settings, shard, settings.similarity_shards)
                 for shard in range(settings.similarity_shards)]
        tables = {table: (cols, [chunk for part in parts for chunk in part[table]])
                  for table, cols in SIMILARITY_COLUMNS.items()}
        result["rows"] = _write(settings, tables, progress)
        snap.outputs["similarities"] = cache.bump("similarities")
    return result


def update_user_lists(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None) -> dict:
    """Every user's precomputed list (workers/lists.py), swapped in, then its basis recorded.

    In refresh_all it reuses what the steps before computed; alone (beat) it reads the
    recommendations DB, the generations first, so the recorded basis is never newer
    than the data. Serving uses a list only while its basis is the current generations.
    """
    with job_run("user_lists", settings, cache) as result:
        outputs = snapshot.outputs if snapshot is not None else {}
        if {"popular", "profiles", "recommendations", "similarities"} <= set(outputs):
            (pop, pop_gen), (prof, prof_gen) = outputs["popular"], outputs["profiles"]
            basis = {"popular": pop_gen, "profiles": prof_gen, "similarities": outputs["similarities"]}
            source = lists.memory_source(snapshot.items, pop, prof, pd.concat(outputs["recommendations"]))
        else:
            basis = cache.generations(fresh=True)
            conn = connect_recs(settings, application_name="recs-job-user_lists")
            try:
                source = lists.source_from_db(conn)
            finally:
                conn.close()
        users = source.active_user_ids()
        chunks = lists.list_chunks(source, users, settings.recommendation_list_size, settings.list_processes)
        result["rows"] = _write(settings, {"user_lists": (lists.COLUMNS, chunks)}, progress)
        cache.set_lists_basis(basis)
    return result


def compute_similarity_shard(settings: Settings, shard: int, shards: int, run_tag: str) -> int:
    """One shard, for a separate worker: store its CSV chunks until the merge. Returns rows."""
    snap = read_snapshot(settings)
    chunks = _similarity_chunks(snap, settings, shard, shards)
    conn = connect_recs(settings, application_name=f"recs-similarity-shard-{shard}")
    rows = 0
    try:
        with conn.cursor() as cur:
            # A retried shard replaces its own earlier output.
            cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s AND shard = %s", (run_tag, shard))
            for table, parts in chunks.items():
                for n, chunk in enumerate(parts):
                    text = chunk.getvalue()
                    rows += text.count("\n")
                    cur.execute("INSERT INTO similarity_shard_results (run_tag, shard, target, chunk_no, csv) "
                                "VALUES (%s, %s, %s, %s, %s)", (run_tag, shard, table, n, text))
        conn.commit()
    finally:
        conn.close()
    log.info("job=user_similarities_shard shard=%s/%s run=%s rows=%s", shard, shards, run_tag, rows)
    return rows


def merge_similarity_shards(settings: Settings, cache: Cache, run_tag: str, shards: int) -> dict:
    """Swap every shard's output in at once; refuses if a shard is missing.

    The run's lock, taken at dispatch (jobs.lock_for_run), passes to this merge's job_run.
    """
    jobs.release_run(cache.client, jobs.JOBS["user_similarities"], run_tag)
    with job_run("user_similarities", settings, cache) as result:
        conn = connect_recs(settings, application_name="recs-similarity-merge")
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT count(DISTINCT shard) FROM similarity_shard_results WHERE run_tag = %s",
                            (run_tag,))
                done = cur.fetchone()[0]
                if done != shards:
                    raise RuntimeError(f"similarity run {run_tag}: {done} of {shards} shards finished")

            def chunks(table):
                # A server-side cursor streams one stored chunk at a time.
                with conn.cursor(name=f"shard_chunks_{table}") as cur:
                    cur.itersize = 1
                    cur.execute("SELECT csv FROM similarity_shard_results WHERE run_tag = %s AND target = %s "
                                "ORDER BY shard, chunk_no", (run_tag, table))
                    for (text,) in cur:
                        yield io.StringIO(text)

            tables = {table: (cols, chunks(table)) for table, cols in SIMILARITY_COLUMNS.items()}
            result["rows"] = bulk.replace_tables(conn, tables)
            with conn.cursor() as cur:
                cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s", (run_tag,))
            conn.commit()
        finally:
            conn.close()
        cache.bump("similarities")
    return result


def fail_similarity_run(settings: Settings, cache: Cache, run_tag: str, error: str) -> None:
    """A shard of a sharded similarity run failed for good, so its merge never runs.

    Record the run as failed (job_runs, hence /stats and Flower's view agree), drop the
    shard output it left and release the lock the run took when it was dispatched.
    """
    jobs.release_run(cache.client, jobs.JOBS["user_similarities"], run_tag)
    conn = connect_recs(settings, application_name="recs-similarity-failed")
    try:
        run_id = jobs.record_start(conn, "user_similarities")
        jobs.record_finish(conn, run_id, "failed", 0, f"sharded run {run_tag}: {error}"[:2000])
        with conn.cursor() as cur:
            cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s", (run_tag,))
        conn.commit()
    finally:
        conn.close()
    log.error("job=user_similarities status=failed run=%s error=%r", run_tag, error[:200])


STALE_SQL = (
    # Lists and neighbours of users who no longer qualify for collaborative filtering
    # (profiles are refreshed more often than similarities).
    "DELETE FROM user_recommendations r WHERE NOT EXISTS "
    "(SELECT 1 FROM user_profiles p WHERE p.user_id = r.user_id AND p.interaction_count >= 3)",
    "DELETE FROM user_similarities s WHERE NOT EXISTS "
    "(SELECT 1 FROM user_profiles p WHERE p.user_id = s.user_id AND p.interaction_count >= 3)",
    "DELETE FROM job_runs WHERE started_at < now() - interval '30 days'",
    # Output of shards whose merge never came (a shard failed): kept a day for inspection.
    "DELETE FROM similarity_shard_results WHERE created_at < now() - interval '1 day'",
)


def cleanup_cache(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None) -> dict:
    with job_run("cleanup_cache", settings, cache) as result:
        deleted_keys = cache.cleanup()
        conn = connect_recs(settings, application_name="recs-cleanup")
        deleted_rows = 0
        try:
            with conn.cursor() as cur:
                for statement in STALE_SQL:
                    cur.execute(statement)
                    deleted_rows += cur.rowcount
            conn.commit()
        finally:
            conn.close()
        result.update(rows=deleted_keys + deleted_rows, deleted_keys=deleted_keys, deleted_rows=deleted_rows)
    return result


STEPS = (
    ("popular_items", refresh_popular_items),
    ("user_profiles", update_user_profiles),
    ("user_similarities", update_user_similarities),
    ("user_lists", update_user_lists),
    ("cleanup_cache", cleanup_cache),
)


def refresh_all(settings: Settings, cache: Cache, progress=None, on_step=None) -> dict:
    """Every job in dependency order over one main-DB snapshot."""
    with job_run("refresh_all", settings, cache) as result:
        started = time.perf_counter()
        snap = read_snapshot(settings)
        result["read_s"] = round(time.perf_counter() - started, 3)
        for name, fn in STEPS:
            if on_step:
                on_step(name)
            step = fn(settings, cache, snapshot=snap, progress=progress)
            result[name] = step
            result["rows"] += step["rows"]
    return result
