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
import uuid
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
from workers import lists, preload
from workers.memory_source import PROFILE_COLUMNS

log = logging.getLogger("recs.jobs")
CHUNK_ROWS = 200_000


AlreadyRunning = jobs.AlreadyRunning  # another run holds the lease


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


@dataclass
class Run:
    """One run of a job, and its one owner: the lease, the job_runs row, the result.

    Steps (refresh_all's jobs) and later tasks of the same run (similarity shards, the
    merge) work under this lease and record into this run; they never lock on their own.
    """

    job: str
    token: str
    run_id: int
    lease: jobs.Lease
    conn: object  # the recommendations-DB connection that records the run
    result: dict
    handed_over: bool = False

    def check(self) -> None:
        self.lease.check()

    def handle(self, **more) -> dict:
        """What a task continuing this run needs (JSON: it travels in a Celery message)."""
        return {"job": self.job, "token": self.token, "run_id": self.run_id, **more}

    def hand_over(self) -> None:
        """Other tasks finish this run: keep the lease (it stays valid one TTL) and the row running."""
        self.handed_over = True

    @contextmanager
    def step(self, name: str, row_id: int | None = None):
        """One step: a job_runs row of its own (parent_id = this run), under this run's lease."""
        self.check()
        if row_id is None:
            row_id = jobs.record_start(self.conn, name, self.token, self.run_id)
        step = {"rows": 0}
        started = time.perf_counter()
        try:
            yield step
        except BaseException as exc:
            self.conn.rollback()
            jobs.record_finish(self.conn, row_id, "failed", step["rows"], f"{type(exc).__name__}: {exc}"[:2000])
            raise
        jobs.record_finish(self.conn, row_id, "success", step["rows"])
        step["seconds"] = round(time.perf_counter() - started, 3)
        self.result[name] = step
        self.result["rows"] += step["rows"]
        log.info("job=%s step=%s status=success rows=%s ms=%.0f", self.job, name, step["rows"],
                 step["seconds"] * 1000)


def _heartbeat(settings: Settings, run_id: int):
    def beat():
        conn = connect_recs(settings, statement_timeout_ms=5000, application_name="recs-job-heartbeat")
        try:
            jobs.heartbeat(conn, run_id)
        finally:
            conn.close()
    return beat


@contextmanager
def job_run(job_name: str, settings: Settings, cache: Cache, token: str | None = None, adopt: dict | None = None):
    """Take the job's lease (or, with adopt, continue a run another task started), record
    the run, renew lease and heartbeat while it runs, record its end. Yields the Run.

    token: the run's id, normally the Celery task id. Raises jobs.AlreadyRunning if
    another run holds the lease, jobs.LeaseLost if an adopted run lost it.
    """
    job = jobs.JOBS[job_name]
    token = adopt["token"] if adopt else token or uuid.uuid4().hex
    lease = jobs.Lease(cache.client, job, settings.job_lease_seconds, token)
    lease.adopt() if adopt else lease.acquire()
    conn = run = None
    started = time.perf_counter()
    try:
        conn = connect_recs(settings, application_name=f"recs-job-{job_name}")
        if adopt:
            run_id = adopt["run_id"]
            jobs.check_open(conn, run_id)
        else:
            jobs.abandon_unowned(conn, lease.names)  # we hold the lease: no other run of these is alive
            run_id = jobs.record_start(conn, job_name, token)
            jobs.clear_queued(cache.client, job_name, token)
        # An adopted run carries on counting the rows its earlier tasks wrote.
        run = Run(job_name, token, run_id, lease, conn, {"rows": adopt.get("rows", 0) if adopt else 0})
        lease.start_renewing(_heartbeat(settings, run_id))
        try:
            yield run
            run.check()  # a run that lost its lease did not own what it wrote: not a success
        except BaseException as exc:
            conn.rollback()
            jobs.record_finish(conn, run_id, "failed", run.result["rows"], f"{type(exc).__name__}: {exc}"[:2000])
            log.error("job=%s status=failed run=%s error=%r", job_name, run_id, str(exc)[:200])
            raise
        if run.handed_over:
            log.info("job=%s status=handed_over run=%s token=%s", job_name, run_id, token)
            return
        jobs.record_finish(conn, run_id, "success", run.result["rows"])
        run.result["seconds"] = round(time.perf_counter() - started, 3)
        log.info("job=%s status=success run=%s rows=%s ms=%.0f", job_name, run_id, run.result["rows"],
                 run.result["seconds"] * 1000)
    finally:
        lease.stop_renewing()
        if run is None or not run.handed_over:
            lease.release()
        if conn is not None:
            conn.close()


def _write(run: Run, settings: Settings, tables: dict, progress=None) -> int:
    run.check()
    conn = connect_recs(settings, application_name="recs-writer")
    try:
        return bulk.replace_tables(conn, tables, progress=progress, before_commit=run.check)
    finally:
        conn.close()


ITEM_COLUMNS = ["item_id", "price", "category", "platform", "geo_id", "in_stock", "target_gender", "target_age",
                "created_at", "title"]
POPULAR_COLUMNS = ["geo_id", "gender", "age_group", "category", "item_id", "popularity_score", "item_category",
                   "price", "platform", "item_geo_id"]

# Each job's body: (run, out, settings, cache, snapshot or None, progress). It sets
# out["rows"]; `out` is the run's result for a job run alone, or a step's within refresh_all.


def _popular_items(run, out, settings, cache, snap, progress):
    snap = snap or read_snapshot(settings)
    pop = compute_popular(snap.pairs(settings), snap.demographics(), snap.items, top_n=settings.popular_top_n)
    attrs = snap.items[["item_id", "category", "price", "platform", "geo_id"]].rename(
        columns={"category": "item_category", "geo_id": "item_geo_id"})
    pop = pop.merge(attrs, on="item_id", how="left")
    pop["item_geo_id"] = pop["item_geo_id"].astype("Int64")
    items = snap.items.copy()
    items["geo_id"] = items["geo_id"].astype("Int64")
    stats = pd.DataFrame({"name": list(snap.stats), "value": list(snap.stats.values())})
    out["rows"] = _write(
        run,
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


PROFILE_ROW_COLUMNS = ["user_id", "preferred_categories", "preferred_platforms", "avg_price", "price_min",
                       "price_max", "interaction_count", "liked_item_ids", "gender", "age_group", "geo_id"]


def profile_rows(prof: pd.DataFrame) -> pd.DataFrame:
    """compute_profiles() output as user_profiles rows are written (COPY text): full job and live sync."""
    rows = prof[PROFILE_ROW_COLUMNS].copy()
    rows["liked_item_ids"] = rows["liked_item_ids"].map(_pg_array)
    rows["geo_id"] = rows["geo_id"].astype("Int64")
    return rows


def _user_profiles(run, out, settings, cache, snap, progress):
    snap = snap or read_snapshot(settings)
    prof = compute_profiles(snap.pairs(settings), snap.demographics(), snap.items)
    kept = prof[PROFILE_COLUMNS].copy()  # for the list precompute
    out["rows"] = _write(run, settings, {"user_profiles": (PROFILE_ROW_COLUMNS, frame_chunks(
        profile_rows(prof), PROFILE_ROW_COLUMNS))}, progress)
    snap.outputs["profiles"] = (kept, cache.bump("profiles"))


def similarity_config(settings: Settings) -> SimilarityConfig:
    return SimilarityConfig(k=settings.max_similar_users, list_size=min(settings.recommendation_list_size, 100))


SIMILARITY_COLUMNS = {
    "user_similarities": ["user_id", "similar_user_id", "similarity_score"],
    "user_recommendations": ["user_id", "item_ids", "scores"],
}


def recommendation_rows(recs: pd.DataFrame) -> pd.DataFrame:
    """compute_similarities()' lists as user_recommendations rows are written (COPY text): full job and live sync."""
    return pd.DataFrame({
        "user_id": recs["user_id"],
        "item_ids": recs["item_ids"].map(_pg_array),
        "scores": recs["scores"].map(lambda a: _pg_array(np.round(a, 5))),
    })


def _similarity_chunks(snap: Snapshot, settings: Settings, shard: int, shards: int) -> dict:
    """CSV chunks for user_similarities and user_recommendations, for one shard of users."""
    in_stock = snap.items.loc[snap.items["in_stock"], "item_id"].to_numpy()
    sims, recs = compute_similarities(snap.pairs(settings), in_stock, similarity_config(settings), shard, shards)
    recs_out = recommendation_rows(recs)
    frames = {"user_similarities": sims, "user_recommendations": recs_out}
    # The list precompute reads the scores as the DB holds them (the text written here).
    snap.outputs.setdefault("recommendations", []).append(recs_out)
    return {table: list(frame_chunks(frames[table], cols)) for table, cols in SIMILARITY_COLUMNS.items()}


def _user_similarities(run, out, settings, cache, snap, progress):
    """The SIMILARITY_SHARDS shards in this process, one after another (bounded memory), then one swap."""
    snap = snap or read_snapshot(settings)
    parts = []
    for shard in range(settings.similarity_shards):
        run.check()
        parts.append(_similarity_chunks(snap, settings, shard, settings.similarity_shards))
    tables = {table: (cols, [chunk for part in parts for chunk in part[table]])
              for table, cols in SIMILARITY_COLUMNS.items()}
    out["rows"] = _write(run, settings, tables, progress)
    snap.outputs["similarities"] = cache.bump("similarities")


def _user_lists(run, out, settings, cache, snap, progress):
    """Every user's precomputed list (workers/lists.py), swapped in, then its basis recorded.

    In refresh_all it reuses what the steps before computed; alone (beat, or after a
    sharded similarity merge) it reads the recommendations DB, the generations first, so
    the recorded basis is never newer than the data. Serving uses a list only while its
    basis is the current generations.
    """
    outputs = snap.outputs if snap is not None else {}
    if {"popular", "profiles", "recommendations", "similarities"} <= set(outputs):
        (pop, pop_gen), (prof, prof_gen) = outputs["popular"], outputs["profiles"]
        basis = {"popular": pop_gen, "profiles": prof_gen, "similarities": outputs["similarities"]}
        source = lists.memory_source(snap.items, pop, prof, pd.concat(outputs["recommendations"]))
    else:
        basis = cache.generations(fresh=True)
        conn = connect_recs(settings, application_name="recs-job-user_lists")
        try:
            source = lists.source_from_db(conn)
        finally:
            conn.close()
    users = source.active_user_ids()
    chunks = lists.list_chunks(source, users, settings.recommendation_list_size, settings.list_processes)
    out["rows"] = _write(run, settings, {"user_lists": (lists.COLUMNS, chunks)}, progress)
    # Before the basis switches serving to the new lists, so the rows are there when it does.
    out["preload"] = preload.preload_rows(settings, cache, basis, run.check)
    cache.set_lists_basis(basis)


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


def _cleanup_cache(run, out, settings, cache, snap, progress):
    deleted_keys = cache.cleanup()
    conn = connect_recs(settings, application_name="recs-cleanup")
    deleted_rows = 0
    try:
        with conn.cursor() as cur:
            for statement in STALE_SQL:
                cur.execute(statement)
                deleted_rows += cur.rowcount
        run.check()
        conn.commit()
    finally:
        conn.close()
    out.update(rows=deleted_keys + deleted_rows, deleted_keys=deleted_keys, deleted_rows=deleted_rows)


def _alone(job_name, body, settings, cache, snapshot, progress, token) -> dict:
    with job_run(job_name, settings, cache, token) as run:
        body(run, run.result, settings, cache, snapshot, progress)
    return run.result


def refresh_popular_items(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None,
                          token: str | None = None) -> dict:
    return _alone("popular_items", _popular_items, settings, cache, snapshot, progress, token)


def update_user_profiles(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None,
                         token: str | None = None) -> dict:
    return _alone("user_profiles", _user_profiles, settings, cache, snapshot, progress, token)


def update_user_similarities(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None,
                             token: str | None = None) -> dict:
    return _alone("user_similarities", _user_similarities, settings, cache, snapshot, progress, token)


def update_user_lists(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None,
                      token: str | None = None) -> dict:
    return _alone("user_lists", _user_lists, settings, cache, snapshot, progress, token)


def cleanup_cache(settings: Settings, cache: Cache, snapshot: Snapshot | None = None, progress=None,
                  token: str | None = None) -> dict:
    return _alone("cleanup_cache", _cleanup_cache, settings, cache, snapshot, progress, token)


def dispatch_user_similarities(settings: Settings, cache: Cache, dispatch, token: str | None = None) -> dict:
    """The similarity job as SIMILARITY_SHARDS shard tasks: dispatch(handle) sends them and
    their merge, which finish this run (its lease and job_runs row pass to them)."""
    with job_run("user_similarities", settings, cache, token) as run:
        dispatch(run.handle())
        run.hand_over()
        run.result.update(status="dispatched", shards=settings.similarity_shards, run_tag=run.token)
    return run.result


@contextmanager
def joined_run(settings: Settings, cache: Cache, handle: dict):
    """Work for a run another task started (a similarity shard): renew its lease and
    heartbeat while working, leave both to the run. Yields the lease to check before writing."""
    lease = jobs.Lease(cache.client, jobs.JOBS[handle["job"]], settings.job_lease_seconds, handle["token"]).adopt()
    try:
        conn = connect_recs(settings, application_name="recs-job-check")
        try:
            jobs.check_open(conn, handle["run_id"])
        finally:
            conn.close()
    except BaseException:
        lease.release()  # it may have been taken again just now: not this run's any more
        raise
    lease.start_renewing(_heartbeat(settings, handle["run_id"]))
    try:
        yield lease
    finally:
        lease.stop_renewing()


def compute_similarity_shard(settings: Settings, cache: Cache, shard: int, shards: int, handle: dict) -> int:
    """One shard of a sharded run, for a separate worker: store its CSV chunks until the merge. Returns rows."""
    run_tag = handle["token"]
    with joined_run(settings, cache, handle) as lease:
        snap = read_snapshot(settings)
        chunks = _similarity_chunks(snap, settings, shard, shards)
        conn = connect_recs(settings, application_name=f"recs-similarity-shard-{shard}")
        rows = 0
        try:
            with conn.cursor() as cur:
                # A retried shard replaces its own earlier output.
                cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s AND shard = %s",
                            (run_tag, shard))
                for table, parts in chunks.items():
                    for n, chunk in enumerate(parts):
                        text = chunk.getvalue()
                        rows += text.count("\n")
                        cur.execute("INSERT INTO similarity_shard_results (run_tag, shard, target, chunk_no, csv) "
                                    "VALUES (%s, %s, %s, %s, %s)", (run_tag, shard, table, n, text))
            lease.check()
            conn.commit()
        finally:
            conn.close()
    log.info("job=user_similarities_shard shard=%s/%s run=%s rows=%s", shard, shards, run_tag, rows)
    return rows


def _merge_shards(run, out, settings, cache, shards):
    run_tag = run.token
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
        out["rows"] = bulk.replace_tables(conn, tables, before_commit=run.check)
        with conn.cursor() as cur:
            cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s", (run_tag,))
        conn.commit()
    finally:
        conn.close()
    cache.bump("similarities")


def merge_similarity_shards(settings: Settings, cache: Cache, handle: dict, shards: int) -> dict:
    """Swap every shard's output in at once; refuses if a shard is missing.

    The merge continues the run that dispatched the shards: it takes the lease over with
    the run's token (renewing it, never releasing it first), finishes the run's row, and,
    for a refresh_all, runs the steps that come after the similarities.
    """
    with job_run(handle["job"], settings, cache, adopt=handle) as run:
        if "step_id" not in handle:
            _merge_shards(run, run.result, settings, cache, shards)
        else:
            with run.step("user_similarities", handle["step_id"]) as step:
                _merge_shards(run, step, settings, cache, shards)
            for name in handle["rest"]:
                with run.step(name) as step:
                    BODIES[name](run, step, settings, cache, None, None)
    return run.result


def fail_similarity_run(settings: Settings, cache: Cache, handle: dict, error: str) -> None:
    """A shard of a sharded run failed for good, so its merge never runs.

    Record the run as failed (job_runs, hence /stats and Flower's view agree), drop the
    shard output it left and release the lease the run took when it was dispatched.
    """
    run_tag = handle["token"]
    conn = connect_recs(settings, application_name="recs-similarity-failed")
    try:
        with conn.cursor() as cur:
            cur.execute("DELETE FROM similarity_shard_results WHERE run_tag = %s", (run_tag,))
        conn.commit()
        if "step_id" in handle:
            jobs.record_finish(conn, handle["step_id"], "failed", 0, error[:2000])
        jobs.record_finish(conn, handle["run_id"], "failed", 0, f"sharded run {run_tag}: {error}"[:2000])
    finally:
        conn.close()
    jobs.Lease(cache.client, jobs.JOBS[handle["job"]], settings.job_lease_seconds, run_tag).release()
    log.error("job=%s status=failed run=%s error=%r", handle["job"], run_tag, error[:200])


def reap_abandoned_runs(settings: Settings, cache: Cache) -> list[str]:
    """Mark dead runs abandoned; returns their jobs (the watchdog task queues them again)."""
    conn = connect_recs(settings, application_name="recs-reaper")
    try:
        return jobs.reap_abandoned(conn, cache.client, settings)
    finally:
        conn.close()


STEPS = (
    ("popular_items", _popular_items),
    ("user_profiles", _user_profiles),
    ("user_similarities", _user_similarities),
    ("user_lists", _user_lists),
    ("cleanup_cache", _cleanup_cache),
)
BODIES = dict(STEPS)
assert tuple(BODIES) == jobs.JOBS["refresh_all"].steps


def refresh_all(settings: Settings, cache: Cache, progress=None, on_step=None, token: str | None = None,
                dispatch_similarities=None) -> dict:
    """Every job in dependency order over one main-DB snapshot, as steps of one run.

    The run holds every step's lease, so no scheduled job overlaps it, and records each
    step as a job_runs row of its own (parent_id = this run), so /health counts a
    successful refresh_all as fresh data for each job. dispatch_similarities(handle):
    under Celery with SIMILARITY_SHARDS > 1, the similarity step goes to shard tasks, and
    their merge runs the remaining steps and finishes this run.
    """
    with job_run("refresh_all", settings, cache, token) as run:
        started = time.perf_counter()
        snap = read_snapshot(settings)
        run.result["read_s"] = round(time.perf_counter() - started, 3)
        for i, (name, body) in enumerate(STEPS):
            if on_step:
                on_step(name)
            if name == "user_similarities" and dispatch_similarities is not None:
                step_id = jobs.record_start(run.conn, name, run.token, run.run_id)
                try:
                    dispatch_similarities(run.handle(step_id=step_id, rest=[n for n, _ in STEPS[i + 1:]],
                                                     rows=run.result["rows"]))
                except BaseException as exc:
                    jobs.record_finish(run.conn, step_id, "failed", 0, f"{type(exc).__name__}: {exc}"[:2000])
                    raise
                run.hand_over()
                run.result.update(status="dispatched", shards=settings.similarity_shards, run_tag=run.token)
                break
            with run.step(name) as step:
                body(run, step, settings, cache, snap, progress)
    return run.result
