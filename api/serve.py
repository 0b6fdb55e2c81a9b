"""Cache-through serving: one Redis GET on a hit, else compute from the recommendations DB.

The whole ranked, filtered list is cached under a key without the page, then sliced,
so pages never overlap or skip. Redis down: compute from the DB, cache_hit false.
"""
from __future__ import annotations

import time

import orjson
import psycopg2

from shared.cache import CacheUnavailable
from shared.serving import Ranked, algorithm_label, paginate


class DatabaseUnavailable(Exception):
    pass


def _encode(ranked: Ranked, algorithm: str) -> bytes:
    return orjson.dumps({"i": ranked.ids, "s": ranked.sections, "a": algorithm})


def _decode(raw: bytes):
    data = orjson.loads(raw)
    return data["i"], [tuple(s) for s in data["s"]], data["a"]


def serve(services, kind: str, suffix: str, compute, ttl_s: int, page: int, limit: int) -> dict:
    """kind/suffix name the cached list; compute(gens or None, writes) -> (Ranked, primary algorithm).

    compute may append (key, value, ttl_s) to writes: they are cached with the list, in
    the same round trip.
    """
    started = time.perf_counter()
    cache, gens, key, hit, cached = services.cache, None, None, False, None
    try:
        key, cached, gens = cache.lookup(kind, suffix)
    except CacheUnavailable:
        gens = key = None
    if cached is not None:
        hit = True
        ids, sections, algorithm = _decode(cached)
    else:
        writes: list = []
        try:
            ranked, algorithm = compute(gens, writes)
        except psycopg2.Error as exc:  # down, timed out, or (mis-deployed) schema missing: a 503, never a 500
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0] if str(exc).strip() else "unavailable") from exc
        ids, sections = ranked.ids, ranked.sections
        if key is not None:
            try:
                cache.store_miss(key, _encode(ranked, algorithm), ttl_s, writes)
            except CacheUnavailable:
                pass
    start = (page - 1) * limit
    stop = start + limit
    return {
        "items": ids[start:stop],
        "pagination": paginate(len(ids), page, limit),
        "computation_time_ms": round((time.perf_counter() - started) * 1000, 3),
        "algorithm_used": algorithm_label(sections, len(ids), start, stop, algorithm),
        "cache_hit": hit,
    }
