"""Cache-through serving: one Redis round trip on a hit, else compute from the recommendations DB.

The whole ranked, filtered list is cached under a key without the page, then sliced,
so pages never overlap or skip. Redis down: compute from the DB, cache_hit false.

Live state is applied on every request, hits included: items unavailable since the
last popular refresh (the process's in-memory set, shared.cache.Cache.unavailable) and,
for /personalized, what the user liked through POST /events since the list was cached.
"""
from __future__ import annotations

import time

import orjson
import psycopg2

from shared.cache import CacheUnavailable, live_exclusions
from shared.serving import Ranked, algorithm_label, paginate, without


class DatabaseUnavailable(Exception):
    pass


def _encode(ranked: Ranked, algorithm: str) -> bytes:
    return orjson.dumps({"i": ranked.ids, "s": ranked.sections, "a": algorithm})


def _decode(raw: bytes):
    data = orjson.loads(raw)
    return data["i"], [tuple(s) for s in data["s"]], data["a"]


class KeySlot:
    """A list cached under its own key (/popular): one GET."""

    liked = unliked = frozenset()
    profile = None

    def __init__(self, cache, kind: str, suffix: str):
        self.cache = cache
        self.key, self.value, self.gens = cache.lookup(kind, suffix)

    def store(self, value: bytes, ttl_s: int, profile: bytes | None = None) -> None:
        self.cache.store_miss(self.key, value, ttl_s)


class UserSlot:
    """A list cached in its user's hash (/personalized), read with the user's live feedback in one round trip."""

    def __init__(self, cache, user_id: int, geo_id: int, filters_key: str):
        self.cache = cache
        self.slot = cache.lookup_user(user_id, geo_id, filters_key)
        self.value, self.gens, self.profile = self.slot.value, self.slot.gens, self.slot.profile
        self.liked, self.unliked = live_exclusions(self.slot.feedback)

    def store(self, value: bytes, ttl_s: int, profile: bytes | None = None) -> None:
        self.cache.store_user(self.slot, value, ttl_s, profile)


class NoSlot:
    """Redis is down: nothing cached, no live feedback; the last known unavailable set still applies."""

    value = gens = profile = None
    liked = unliked = frozenset()

    def store(self, value: bytes, ttl_s: int, profile: bytes | None = None) -> None:
        pass


def serve(services, open_slot, compute, ttl_s: int, page: int, limit: int) -> dict:
    """open_slot(cache) -> a slot (KeySlot, UserSlot); compute(slot, exclude) -> (Ranked, primary algorithm).

    compute may set slot.profile_out (bytes) to cache the profile it read with the list,
    in the same round trip.
    """
    started = time.perf_counter()
    cache = services.cache
    try:
        slot = open_slot(cache)
    except CacheUnavailable:
        slot = NoSlot()
    exclude = cache.unavailable | slot.liked if slot.liked else cache.unavailable
    hit = slot.value is not None
    if hit:
        ids, sections, algorithm = _decode(slot.value)
        ids, sections = without(ids, sections, exclude)
    else:
        try:
            ranked, algorithm = compute(slot, exclude)
        except psycopg2.Error as exc:  # down, timed out, or (mis-deployed) schema missing: a 503, never a 500
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0] if str(exc).strip() else "unavailable") from exc
        ids, sections = ranked.ids, ranked.sections
        try:
            slot.store(_encode(ranked, algorithm), ttl_s, getattr(slot, "profile_out", None))
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
