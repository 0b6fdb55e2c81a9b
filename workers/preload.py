"""Users' rows cached in Redis ahead of their requests, after the lists job swaps its lists in.

A /personalized miss by a user whose row (profile and precomputed list, shared.serving.UserRow)
is in their Redis hash reads nothing from the DB: the lookup's one round trip brings the row,
and the answer is filtered in memory (api/recommendations.py). Without the preload, a user's
first request after each lists run reads the row and stores it: three round trips, not one.

The most active users come first, in batches, until the rows fill PRELOAD_MEMORY_SHARE of
Redis's maxmemory (each row's bytes plus ROW_OVERHEAD: about 1.3 KB a user with a 200-item
list), or Redis's used memory reaches FULL of it, whichever comes first: a run replaces the
rows the last one cached, so the rows' own size is what the share bounds. Each batch reads
the users' versions before their rows, and caches each row under that version, so a row that
an event or the live sync made stale meanwhile is never served (shared.cache.Cache.lookup_user).
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import ThreadPoolExecutor

from shared import cache as cache_format
from shared.cache import Cache, CacheUnavailable
from shared.db import connect_recs
from shared.settings import Settings
from shared.store import PROFILED_USERS_SQL, user_row, users_raw

log = logging.getLogger("recs.preload")
BATCH = 2000
# Redis's memory per cached row besides its bytes (the hash, its key, field and TTL): on
# `large`, 300,000 rows of 229 MB took 341 MB. Used for the budget only.
ROW_OVERHEAD = 375
FULL = 0.9  # of maxmemory: past it Redis starts evicting


def preload_rows(settings: Settings, cache: Cache, gens: dict, check=lambda: None) -> dict:
    """Cache rows for the generations `gens` (popular, profiles, similarities of the lists just
    swapped in). Returns what it did; a Redis failure stops it, never the job.

    A thread reads the next batch (versions, then rows) while this one encodes and writes the
    current one, so PostgreSQL formats rows on the other core meanwhile."""
    started = time.perf_counter()
    out = {"users": 0, "profiled": 0, "bytes": 0}
    share = settings.preload_memory_share
    if share <= 0:
        return {**out, "stopped": "PRELOAD_MEMORY_SHARE=0"}
    row_gens = {"profiles": gens["profiles"], "lists": cache_format.basis(gens)}
    ttl_s = 2 * settings.user_lists_refresh_minutes * 60  # until the run after next replaces it
    conn = connect_recs(settings, application_name="recs-job-preload")
    conn.autocommit = True  # each batch's read is after its versions' read

    def read(batch):
        versions = cache.user_versions(batch)  # before the rows: see the module docstring
        return versions, users_raw(cur, batch)

    try:
        with conn.cursor() as cur, ThreadPoolExecutor(1, thread_name_prefix="preload-read") as reader:
            cur.execute(PROFILED_USERS_SQL)
            users = [row[0] for row in cur.fetchall()]
            out["profiled"] = len(users)
            batches = [users[start:start + BATCH] for start in range(0, len(users), BATCH)]
            ahead = reader.submit(read, batches[0]) if batches else None
            for i, batch in enumerate(batches):
                check()
                used, cap = cache.memory()
                if cap and out["bytes"] + ROW_OVERHEAD * out["users"] >= share * cap:
                    out["stopped"] = f"rows reached {share} x maxmemory {cap}"
                    break
                if cap and used >= FULL * cap:
                    out["stopped"] = f"redis used_memory {used} >= {FULL} x maxmemory {cap}"
                    break
                versions, raw = ahead.result()
                ahead = reader.submit(read, batches[i + 1]) if i + 1 < len(batches) else None
                version = dict(zip(batch, versions))
                encoded = [(row[0], version[row[0]], cache_format.encode_user_row(user_row(row[0], row[1:])))
                           for row in raw]
                cache.preload_rows(encoded, row_gens, ttl_s)
                out["users"] += len(encoded)
                out["bytes"] += sum(len(row) for _, _, row in encoded)
            if ahead is not None:
                ahead.result()  # let the read in flight finish before the connection closes
    except CacheUnavailable as exc:
        log.warning("event=preload_stopped users=%s error=%s", out["users"], exc)
        out["stopped"] = f"redis unavailable: {exc}"
    finally:
        conn.close()
    out["seconds"] = round(time.perf_counter() - started, 2)
    log.info("event=preload_done %s", " ".join(f"{k}={v}" for k, v in out.items()))
    return out
