"""Cache-through serving: one Redis round trip on a hit, else compute from the recommendations DB.

A /personalized miss reads the user's row (profile, precomputed list) in one query,
unless the lookup found it cached in the user's hash (the lists job preloads it; then
a miss answered from the precomputed list as is reads and stores nothing: deriving it
again from the row costs about a hit);
the precomputed list is served as is when it is the exact answer, filtered in memory
when the request only narrows it (then popular fill-in), else a second query reads
the profile's preferences and collaborative list and the list is computed in memory
over the catalogue snapshot and the segment lists (read in one query;
shared.serving.answer_plan decides). The cache's format is shared.cache's.

The whole ranked, filtered list is cached under a key without the page, then sliced,
so pages never overlap or skip. Redis down: compute from the DB, cache_hit false.

Live state is honoured on every request, hits included. Items unavailable since the
last popular refresh (the process's in-memory set, shared.cache.Cache.unavailable) are
filtered out of every list. For /personalized, a miss folds what the user liked or
unliked through POST /events into the list it computes, and a cached list always
honours it: an event gives the user a new version, and a list computed before the
event is never served after it (shared.cache.Cache.lookup_user).
"""
from __future__ import annotations

import time

import psycopg2

from shared.cache import (CacheUnavailable, decode_list, decode_user_row, encode_list, encode_user_row,
                          live_exclusions)
from shared.serving import algorithm_label, paginate, without


class DatabaseUnavailable(Exception):
    pass


class KeySlot:
    """A list cached under its own key (/popular): one GET."""

    liked = unliked = frozenset()

    def __init__(self, cache, kind: str, suffix: str):
        self.cache = cache
        self.key, self.value, self.gens = cache.lookup(kind, suffix)

    def store(self, ranked, algorithm: str, ttl_s: int) -> None:
        self.cache.store_miss(self.key, encode_list(ranked.ids, ranked.sections, algorithm), ttl_s)


class UserSlot:
    """A list cached in its user's hash (/personalized): one HMGET, hit or miss; a miss by a user
    with live feedback also reads it, and the computed list honours it (shared.cache.Cache.lookup_user).

    A miss also gets the user's row if it is cached (row: a shared.serving.UserRow). compute
    reads it from the DB otherwise and sets new_row, which store() caches with the list;
    it clears keep_list when the list is the precomputed one as is, about as cheap to
    derive again from the cached row as a hit."""

    keep_list = True
    new_row = None

    def __init__(self, cache, user_id: int, geo_id: int, filters_key: str):
        self.cache = cache
        self.slot = cache.lookup_user(user_id, geo_id, filters_key)
        self.value, self.gens = self.slot.value, self.slot.gens
        self.liked, self.unliked = live_exclusions(self.slot.feedback)
        self.row = None if self.slot.row is None else decode_user_row(user_id, self.slot.row)

    def store(self, ranked, algorithm: str, ttl_s: int) -> None:
        value = encode_list(ranked.ids, ranked.sections, algorithm) if self.keep_list else None
        self.cache.store_user(self.slot, value, ttl_s,
                              None if self.new_row is None else encode_user_row(self.new_row))


class NoSlot:
    """Redis is down: nothing cached, no live feedback; the last known unavailable set still applies."""

    value = gens = row = None
    liked = unliked = frozenset()

    def store(self, ranked, algorithm: str, ttl_s: int) -> None:
        pass


def serve(services, open_slot, compute, ttl_s: int, page: int, limit: int) -> dict:
    """open_slot(cache) -> a slot (KeySlot, UserSlot); compute(slot, exclude) -> (list with .ids and
    .sections, primary algorithm)."""
    started = time.perf_counter()
    cache = services.cache
    try:
        slot = open_slot(cache)
    except CacheUnavailable:
        slot = NoSlot()
    exclude = cache.unavailable | slot.liked if slot.liked else cache.unavailable
    hit = slot.value is not None
    if hit:
        ids, sections, algorithm = decode_list(slot.value)
        ids, sections = without(ids, sections, exclude)
    else:
        try:
            ranked, algorithm = compute(slot, exclude)
        except psycopg2.Error as exc:  # down, timed out, or (mis-deployed) schema missing: a 503, never a 500
            raise DatabaseUnavailable(str(exc).strip().splitlines()[0] if str(exc).strip() else "unavailable") from exc
        ids, sections = ranked.ids, ranked.sections
        try:
            slot.store(ranked, algorithm, ttl_s)  # encoded only if it is kept
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
