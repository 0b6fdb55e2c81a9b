"""The Redis cache: keys, the encoding of what is stored, generations, TTLs, counters and cleanup.

This module owns the cache's format: every key and field name, and how a list and
live feedback are encoded (encode_list / decode_list, LIKED / UNLIKED). Nothing else
builds a key or parses a cached value.

Every cached list lives under a key that embeds the generation of the data it was
built from. A refresh bumps its kind's generation, which makes old keys unreachable;
they then expire on their TTL, and cleanup_cache() removes the dead ones early with
SCAN (never KEYS). Every key written here has a TTL.

A cache hit is one Redis GET. Each process re-reads the generations at most every
`generation_check_s` (GENERATION_CHECK_MS, default 1 s), so a refresh reaches every
web worker within that time, and it flushes its hit/miss counters in the same round
trip. Counting per request in Redis would cost a second round trip per hit. The
same flush writes the per-minute series the dashboard draws (`recs:ts:<minute>`:
requests, misses, and request latency as a count, a sum and coarse buckets), which
live TS_TTL_S.

Live state (see shared/live.py): everything cached about one user is one hash
(`u:<id>`): its /personalized lists (field `l:<generations>:<geo>:<filters>`), a
version (`v`), and the live feedback from POST /events (`f:<item>` -> l|u with the
mark's expiry, and a flag `f`). A lookup is one HMGET of the list's field, `v`,
`f` and the user's row (`l:u:<digest of generations>`: what the recommendations DB
holds about the user for serving, their profile and precomputed list, encode_user_row),
so a miss knows the version (and whether there is feedback) without a second round
trip, and a miss by a user whose row is cached reads nothing else: the row, filtered
in memory, answers every request that the precomputed list answers. The lists job
caches rows ahead of requests (workers/preload.py, preload_rows); a miss caches the
row it had to read. A cached list or row starts
with the version it was computed under, and it is served only while that is still
the user's version. Every invalidation (an event,
the live sync re-reading a user) sets a new, never reused version, so it drops all
the user's lists at once, with no key scan; and a request that read the old state
and stores its list after the invalidation stores one that is never served (the
invalidation keeps the hash, and so its version, for INVALIDATED_TTL_S at least).
The invalidation also deletes the user's list fields and expired marks, and the flag
once no mark is left. A miss reads the feedback (HGETALL) only when the flag is set.
Items found unavailable since the last popular refresh are a hash (`live:unavailable`)
with a version (`gen:live`) read with the generations: each process reloads the set
only when the version changes and filters it out of every list, cache hits included.

Redis being down is not an error for the request path: calls raise CacheUnavailable
quickly (short socket timeouts, and a one-second breaker after a failure) and the
caller serves from the recommendations DB instead.
"""
from __future__ import annotations

import hashlib
import logging
import os
import struct
import sys
import threading
from array import array
from bisect import bisect_left
import time
from datetime import datetime, timezone
from functools import lru_cache
from typing import NamedTuple

import orjson
import redis

from shared.deadline import green
from shared.serving import PersonalList, Profile, UserRow

log = logging.getLogger("recs.cache")
PREFIX = "recs:"
GEN_KINDS = ("popular", "profiles", "similarities")
GEN_TTL_S = 30 * 86400
STATS_TTL_S = 8 * 86400
LIST_PATTERNS = (PREFIX + "pop:*", PREFIX + "pers:*", PREFIX + "prof:*")
LIVE_GEN_KEY = PREFIX + "gen:live"
# The generations (popular.profiles.similarities) the stored user_lists were built from:
# serving answers from a precomputed list only while this equals the current ones.
LISTS_KEY = PREFIX + "gen:lists"
UNAVAILABLE_KEY = PREFIX + "live:unavailable"
UNAVAILABLE_TTL_S = 7 * 86400  # the popular refresh trims it long before
# A user's hash: its version, the flag "has live feedback", and the feedback marks' field prefix.
VERSION_FIELD, FEEDBACK_FLAG, MARK_PREFIX = b"v", b"f", b"f:"
# How long an invalidated user's hash lives at least: longer than any request that read
# the version before, so that its store lands next to the new version (never served).
INVALIDATED_TTL_S = 3600
# Invalidate one user: a new version, the hash kept ARGV[3] seconds at least; the lists
# (unreachable now) and expired feedback marks deleted; the flag set while a mark is left.
INVALIDATE_USER = """
local marks = 0
for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
  local kind = string.sub(name, 1, 2)
  if kind == 'l:' then
    redis.call('HDEL', KEYS[1], name)
  elseif kind == 'f:' then
    local mark = redis.call('HGET', KEYS[1], name)
    if tonumber(string.match(mark, ':(%d+)$') or '0') > tonumber(ARGV[2]) then
      marks = marks + 1
    else
      redis.call('HDEL', KEYS[1], name)
    end
  end
end
if marks == 0 then redis.call('HDEL', KEYS[1], 'f') else redis.call('HSET', KEYS[1], 'f', '1') end
redis.call('HSET', KEYS[1], 'v', ARGV[1])
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[3]) then redis.call('EXPIRE', KEYS[1], ARGV[3]) end
"""
# Store fields (a list, the user's row) in its user's hash: ARGV[1] the TTL, ARGV[2] the
# hash's field cap, then name, value pairs; the hash keeps the longest TTL any of its lists
# or feedback needs. Past the cap, the user's other lists are dropped (their row, version
# and feedback stay): a client sending ever new filters for one user would otherwise grow
# one hash for hours, and fill Redis until it evicts other users' preloaded rows. One
# command: a pipeline of HSET and two EXPIREs costs the client more.
STORE_USER = """
redis.call('HSET', KEYS[1], unpack(ARGV, 3))
if redis.call('HLEN', KEYS[1]) > tonumber(ARGV[2]) then
  local keep = {}
  for i = 3, #ARGV, 2 do keep[ARGV[i]] = true end
  for _, name in ipairs(redis.call('HKEYS', KEYS[1])) do
    if string.sub(name, 1, 2) == 'l:' and string.sub(name, 1, 4) ~= 'l:u:' and not keep[name] then
      redis.call('HDEL', KEYS[1], name)
    end
  end
end
if redis.call('TTL', KEYS[1]) < tonumber(ARGV[1]) then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
"""
USER_HASH_FIELDS = 64  # STORE_USER's cap: about 60 lists of a user (~1 KB each) kept at once
# Cache users' rows ahead of their requests (workers/preload.py): KEYS the users' hashes,
# ARGV[1] the TTL, ARGV[2] the rows' field, ARGV[2 + i] KEYS[i]'s `version|row`; rows of
# other generations deleted, each hash's TTL only lengthened. Many users a call: packing a
# command's arguments costs the client more than Redis takes to run it.
PRELOAD_ROWS = """
local ttl = tonumber(ARGV[1])
for i, key in ipairs(KEYS) do
  for _, name in ipairs(redis.call('HKEYS', key)) do
    if string.sub(name, 1, 4) == 'l:u:' and name ~= ARGV[2] then redis.call('HDEL', key, name) end
  end
  redis.call('HSET', key, ARGV[2], ARGV[2 + i])
  if redis.call('TTL', key) < ttl then redis.call('EXPIRE', key, ttl) end
end
"""
PRELOAD_CALL = 100  # users a PRELOAD_ROWS or USER_VERSIONS call: Redis runs it in well under a millisecond
# The version of each user in KEYS ('' for none).
USER_VERSIONS = """
local out = {}
for i, key in ipairs(KEYS) do out[i] = redis.call('HGET', key, 'v') or '' end
return out
"""
LIKED, UNLIKED = b"l", b"u"
TOUCHED_KEY = PREFIX + "live:touched"  # users with POST /events feedback the sync has not re-read yet
TOUCHED_TTL_S = 86400
# Users the sync found due a fold-in (3+ interactions, no neighbours) and has not folded in
# yet: it folds them in once per run, in one batch, after the rounds that applied their events.
FOLD_IN_KEY = PREFIX + "live:fold_in"
TS_TTL_S = 2 * 3600
# Upper bounds (ms) of the latency buckets in the minute series; field "b<i>" counts
# requests in bucket i, the last one being everything slower.
LATENCY_BOUNDS_MS = (1, 2, 5, 10, 20, 50, 100, 200, 500, 1000)


class CacheUnavailable(Exception):
    pass


def _lifo_queue():
    """The pool's queue: gevent's under gevent workers, where a deadline (gevent.Timeout) can
    interrupt a wait, which the stdlib queue's Condition does not survive intact."""
    if green():
        from gevent.queue import LifoQueue

        return LifoQueue
    from queue import LifoQueue

    return LifoQueue


def make_client(url: str, timeout_s: float = 0.5, max_connections: int | None = None,
                pool_wait_s: float = 0.0) -> redis.Redis:
    """A client with short socket timeouts. With max_connections (the API), callers share
    at most that many connections and wait up to pool_wait_s for a free one: under gevent
    every request is a greenlet, and an unbounded pool would open a Redis connection per
    in-flight request (thousands under load, past Redis's maxclients)."""
    if max_connections is None:
        return redis.Redis.from_url(url, socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    pool = redis.BlockingConnectionPool.from_url(url, max_connections=max_connections, timeout=pool_wait_s,
                                                 queue_class=_lifo_queue(),
                                                 socket_connect_timeout=timeout_s, socket_timeout=timeout_s)
    return redis.Redis(connection_pool=pool)


def minute_key(minute: int) -> str:
    return f"{PREFIX}ts:{minute}"


def _stats_key(now: float | None = None) -> str:
    day = datetime.fromtimestamp(now or time.time(), tz=timezone.utc).strftime("%Y%m%d")
    return f"{PREFIX}stats:{day}"


POPULAR, PERSONALIZED = "pop", "pers"


def popular_suffix(segment: tuple, filters_key: str) -> str:
    geo, gender, age, category = segment
    return f"{geo}:{gender}:{age}:{category}:{filters_key}"


def personalized_suffix(user_id: int, geo_id: int, filters_key: str) -> str:
    return f"{user_id}:{geo_id}:{filters_key}"


def profile_key(gens: dict, user_id: int) -> str:
    """Profiles cached by earlier versions under their own key; only cleanup still knows them."""
    return f"{PREFIX}prof:{gens['profiles']}:{user_id}"


def user_key(user_id: int) -> str:
    """The hash holding one user's cached /personalized lists, version and live feedback
    (`u:`, not the `user:` hashes of earlier versions, whose values had no version)."""
    return f"{PREFIX}u:{user_id}"


def new_version() -> bytes:
    """A user version never used before (a counter could rewind when its hash expires)."""
    return f"{time.time_ns():x}{os.urandom(4).hex()}".encode()


def basis(gens: dict) -> str:
    """The data generations a personal list depends on."""
    return f"{gens['popular']}.{gens['profiles']}.{gens['similarities']}"


def lists_current(gens: dict | None) -> bool:
    """Whether the stored user_lists were built from the current generations."""
    return gens is not None and gens.get("lists") == basis(gens)


# A user's hash: their stored answers' and their row's field prefixes (the row's starts with
# the answers': the Lua scripts above tell them apart the same way, with string.sub).
LIST_FIELD_PREFIX, ROW_FIELD_PREFIX = "l:", "l:u:"


def user_list_field(gens: dict, geo_id: int, filters_key: str) -> str:
    # No lists generation: an answer from a precomputed list equals the computed one.
    return f"{LIST_FIELD_PREFIX}{basis(gens)}:{geo_id}:{filters_key}"


@lru_cache(maxsize=16)
def _row_tag(profiles: str, lists: str | None) -> str:
    return hashlib.blake2b(f"{profiles}:{lists}".encode(), digest_size=8).hexdigest()


def user_row_field(gens: dict) -> str:
    """The user's row (encode_user_row) read from user_profiles and user_lists: it changes with
    the profiles and with the lists swapped in (and the live sync, which sets a new version).
    Named by a 16-character digest of those generations, not the 80 characters they take:
    the preload puts one in every user's hash (workers/preload.py)."""
    return f"{ROW_FIELD_PREFIX}{_row_tag(gens['profiles'], gens.get('lists'))}"


def stored_answer(field: bytes) -> bool:
    """Whether a field of a user's hash is a stored /personalized answer (user_list_field),
    not their row (user_row_field), version or feedback."""
    return field.startswith(LIST_FIELD_PREFIX.encode()) and not field.startswith(ROW_FIELD_PREFIX.encode())


class UserSlot(NamedTuple):
    """What lookup_user tells about a user's /personalized request."""

    user_id: int
    key: str
    list_field: str
    value: bytes | None  # the cached list (encode_list), served only when cached under the current version
    feedback: dict  # {item_id: LIKED | UNLIKED}; read on a miss only (a hit's list already honours it)
    gens: dict
    version: bytes = b""  # the user's version at the lookup: a list computed now is stored under it
    row_field: str = ""
    row: bytes | None = None  # the user's row (encode_user_row), under the current version, on a miss


# A cached row: this header (the JSON part's length, the liked and list ids' counts and their
# array typecodes), the JSON part (every scalar), then the two id arrays in native byte order.
_ROW_HEAD = struct.Struct("<III2s")


def _ids(values) -> array:
    """An id array, int32 when every id fits (4 bytes an id), else int64."""
    try:
        ids = array("i", values)
    except OverflowError:
        ids = array("q", values)
    if sys.byteorder != "little":  # the cache is shared by hosts: always little-endian in Redis
        ids.byteswap()
    return ids


def _unids(code: int, raw: bytes) -> array:
    ids = array(chr(code))
    ids.frombytes(raw)
    if sys.byteorder != "little":
        ids.byteswap()
    return ids


def encode_user_row(row: UserRow) -> bytes:
    """A user's row (shared.store.user_row) as cached; decode_user_row gives the same UserRow back.
    About 0.9 KB for a 200-item list: its ids packed, not as PostgreSQL's array_send (12 bytes an id)."""
    p, pl = row.profile, row.plist
    liked = _ids(sorted(p.liked) if p else ())
    ids = _ids(pl.ids if pl else ())
    head = orjson.dumps([p is not None, p and p.interaction_count, p and p.gender, p and p.age_group, p and p.geo_id,
                         pl is not None, pl and pl.sections, pl and pl.algorithm, pl and pl.geo_id, pl and pl.geo_safe,
                         pl and pl.price_lo, pl and pl.price_hi])
    return (_ROW_HEAD.pack(len(head), len(liked), len(ids), (liked.typecode + ids.typecode).encode())
            + head + liked.tobytes() + ids.tobytes())


def decode_user_row(user_id: int, raw: bytes) -> UserRow:
    n_head, n_liked, n_ids, codes = _ROW_HEAD.unpack_from(raw)
    at = _ROW_HEAD.size
    h = orjson.loads(raw[at:at + n_head])
    at += n_head
    liked_end = at + n_liked * array(chr(codes[0])).itemsize
    profile = plist = None
    if h[0]:
        profile = Profile(user_id, h[1], liked=frozenset(_unids(codes[0], raw[at:liked_end])), gender=h[2],
                          age_group=h[3], geo_id=h[4])
    if h[5]:
        plist = PersonalList(_unids(codes[1], raw[liked_end:]).tolist(), [tuple(s) for s in h[6]], *h[7:12])
    return UserRow(profile, plist)


# A cached list: LIST_FORMAT, this header (the JSON part's length, the ids' array typecode),
# the JSON part ([sections, algorithm]), then the ids packed (4 bytes an id, little-endian):
# about 0.85 KB for 200 ids, against 1.4 KB as JSON. Redis holds many of them (every
# filtered miss stores one): at its maxmemory, a smaller list leaves users' rows in place.
LIST_FORMAT = b"\x01"
_LIST_HEAD = struct.Struct("<Ic")


def encode_list(ids: list, sections: list, algorithm: str) -> bytes:
    """A served list as cached: its ids, its sections [(algorithm, first index)] and the primary algorithm."""
    packed = _ids(ids)
    head = orjson.dumps([sections, algorithm])
    return LIST_FORMAT + _LIST_HEAD.pack(len(head), packed.typecode.encode()) + head + packed.tobytes()


def decode_list(raw: bytes) -> tuple[list, list, str]:
    if raw[:1] != LIST_FORMAT:  # a list cached as JSON by an earlier version, until its TTL ends
        data = orjson.loads(raw)
        return data["i"], [tuple(s) for s in data["s"]], data["a"]
    n_head, code = _LIST_HEAD.unpack_from(raw, 1)
    at = 1 + _LIST_HEAD.size
    sections, algorithm = orjson.loads(raw[at:at + n_head])
    return _unids(code[0], raw[at + n_head:]).tolist(), [tuple(s) for s in sections], algorithm


def live_exclusions(feedback: dict) -> tuple[frozenset, frozenset]:
    """(liked, unliked) item ids from a user's live feedback {item_id: mark}."""
    liked = frozenset(k for k, v in feedback.items() if v == LIKED)
    return liked, frozenset(k for k, v in feedback.items() if v == UNLIKED)


def _under(version: bytes, stored: bytes | None) -> bytes | None:
    """A cached list or row stored as `version|value` (store_user), if under this version."""
    if stored is not None and stored.startswith(version + b"|"):
        return stored[len(version) + 1:]
    return None


def _feedback(fields: dict, now: float) -> dict:
    """{item_id: mark} from a user's hash: its `f:<item>` fields (mark:expiry) not yet expired."""
    out = {}
    for name, value in fields.items():
        if name.startswith(MARK_PREFIX):
            mark, _, until = value.partition(b":")
            if int(until or 0) > now:
                out[int(name[len(MARK_PREFIX):])] = mark
    return out


def list_key(kind: str, suffix: str, gens: dict) -> str:
    if kind == POPULAR:
        return f"{PREFIX}pop:{gens['popular']}:{suffix}"
    return f"{PREFIX}pers:{gens['popular']}.{gens['profiles']}.{gens['similarities']}:{suffix}"


class Cache:
    def __init__(self, client: redis.Redis, breaker_s: float = 1.0, generation_check_s: float = 0.0,
                 on_error=None):
        self.client = client
        self.on_error = on_error  # called once per failed Redis call (the API counts them in /metrics)
        self._breaker_s = breaker_s
        self._failed_at = 0.0
        self._lock = threading.Lock()
        self._generation_check_s = generation_check_s
        self._gens: dict | None = None
        self._gens_at = 0.0
        self._refreshing = False  # a generations() round trip is in flight (one at a time per process)
        self._requests = 0
        self._misses = 0
        self._live_gen: bytes | None = None
        self.unavailable: frozenset = frozenset()  # item ids not to serve, whatever a list says
        self._minutes: dict[int, dict[str, float]] = {}  # minute -> field -> increment not yet flushed
        self._store_user = client.register_script(STORE_USER)  # no I/O until first called
        self._invalidate_user = client.register_script(INVALIDATE_USER)
        self._preload_rows = client.register_script(PRELOAD_ROWS)
        self._user_versions = client.register_script(USER_VERSIONS)
        # Where stores go: None sends each at once; the API under gevent sets a
        # shared.writebehind.WriteBehind, which sends them after the request, many at a time.
        self.writer = None

    def send_behind(self, on_drop=None) -> None:
        """Send stores after the request, many in one round trip (shared.writebehind; gevent only).
        on_drop() is called for each store dropped unsent (the API counts them in /metrics)."""
        from shared.writebehind import WriteBehind

        self.writer = WriteBehind(self.client, self._call, on_drop=on_drop)

    def _write(self, command) -> None:
        """command(client) sends a store: now, or queued on the writer."""
        if self.writer is not None:
            self.writer.write(command)
        else:
            self._call(lambda: command(self.client))

    def _call(self, fn):
        if time.monotonic() - self._failed_at < self._breaker_s:
            if self.on_error is not None:
                self.on_error()
            raise CacheUnavailable("redis unavailable (recent failure)")
        try:
            return fn()
        except redis.RedisError as exc:
            with self._lock:
                self._failed_at = time.monotonic()
            # Only calls that reached Redis and failed log this; those the open breaker refuses do not.
            log.warning("event=redis_unavailable breaker_s=%s error=%s", self._breaker_s,
                        " ".join(str(exc).split()) or type(exc).__name__)
            if self.on_error is not None:
                self.on_error()
            raise CacheUnavailable(str(exc)) from exc

    def generations(self, fresh: bool = False) -> dict:
        """Current generations, re-read at most every generation_check_s; flushes counters.

        gens["lists"] is the basis of the stored user_lists (see lists_current).
        """
        now = time.monotonic()
        if not fresh and self._gens is not None and (now - self._gens_at < self._generation_check_s
                                                     or self._refreshing):
            return self._gens  # fresh enough, or another request is re-reading them right now

        def run():
            pipe = self.client.pipeline(transaction=False)
            pipe.mget([f"{PREFIX}gen:{k}" for k in GEN_KINDS] + [LISTS_KEY, LIVE_GEN_KEY])
            # Taken (and zeroed) before the round trip: requests counted meanwhile go to the next
            # flush. Two flushes both subtracting the same count after their I/O drove the
            # counters negative, then past 2**63 (Redis refused the HINCRBY: a Redis "outage").
            with self._lock:
                requests, misses = self._requests, self._misses
                self._requests = self._misses = 0
            if requests or misses:
                key = _stats_key()
                pipe.hincrby(key, "requests", requests)
                pipe.hincrby(key, "misses", misses)
                pipe.expire(key, STATS_TTL_S)
                key = minute_key(int(time.time() // 60))
                pipe.hincrby(key, "requests", requests)
                pipe.hincrby(key, "misses", misses)
                pipe.expire(key, TS_TTL_S)
            minutes, self._minutes = self._minutes, {}
            for minute, counts in minutes.items():
                key = minute_key(minute)
                for name, value in counts.items():
                    if name == "ms":
                        pipe.hincrbyfloat(key, name, value)
                    else:
                        pipe.hincrby(key, name, value)
                pipe.expire(key, TS_TTL_S)
            try:
                values = pipe.execute()[0]
            except BaseException:
                with self._lock:  # kept for the next flush
                    self._requests += requests
                    self._misses += misses
                oldest = time.time() // 60 - TS_TTL_S // 60
                for minute, counts in minutes.items():  # kept for the next flush, while still worth drawing
                    if minute > oldest:
                        self.note_minute(counts, minute)
                raise
            if values[-1] != self._live_gen:  # the unavailable set changed: one more read, rarely
                self.unavailable = frozenset(int(i) for i in self.client.hkeys(UNAVAILABLE_KEY))
                self._live_gen = values[-1]
            gens = {k: (v.decode() if v else "0") for k, v in zip(GEN_KINDS, values)}
            gens["lists"] = values[len(GEN_KINDS)].decode() if values[len(GEN_KINDS)] else ""
            return gens

        self._refreshing = True
        try:
            self._gens = self._call(run)
        finally:
            self._refreshing = False
        self._gens_at = now
        return self._gens

    def note_minute(self, counts: dict, minute: int | None = None) -> None:
        """Add counts to this minute's series; written to Redis with the next generation check."""
        bucket = self._minutes.setdefault(int(time.time() // 60) if minute is None else minute, {})
        for name, value in counts.items():
            bucket[name] = bucket.get(name, 0) + value

    def note_latency(self, seconds: float) -> None:
        """One served recommendation request, for the dashboard's latency series (no I/O)."""
        ms = seconds * 1000
        i = bisect_left(LATENCY_BOUNDS_MS, ms)
        self.note_minute({"n": 1, "ms": ms, f"b{i}": 1})

    def minute_series(self, minutes: int = 60, now: float | None = None) -> list[dict]:
        """The last `minutes` minutes, oldest first: {"minute": epoch minute, field: value, ...}."""
        self._gens = None  # flush this process's counts first
        self.generations()
        last = int((now or time.time()) // 60)
        span = range(last - minutes + 1, last + 1)

        def run():
            pipe = self.client.pipeline(transaction=False)
            for minute in span:
                pipe.hgetall(minute_key(minute))
            return pipe.execute()

        out = []
        for minute, raw in zip(span, self._call(run)):
            row = {"minute": minute}
            for name, value in raw.items():
                name = name.decode()
                row[name] = float(value) if name == "ms" else int(value)
            out.append(row)
        return out

    def lookup(self, kind: str, suffix: str) -> tuple[str, bytes | None, dict]:
        """(key, cached value or None, generations); counts the request."""
        gens = self.generations()
        key = list_key(kind, suffix, gens)
        value = self.get(key)
        self._requests += 1
        return key, value, gens

    def lookup_user(self, user_id: int, geo_id: int, filters_key: str) -> UserSlot:
        """The user's cached list, with their version and (on a miss) their cached row: one
        HMGET, hit or miss. A miss by a user with live feedback reads it too (a second round
        trip). Counts the request."""
        gens = self.generations()
        key, list_field, row_field = user_key(user_id), user_list_field(gens, geo_id, filters_key), user_row_field(gens)
        value, version, flagged, row = self._call(
            lambda: self.client.hmget(key, (list_field, VERSION_FIELD, FEEDBACK_FLAG, row_field)))
        self._requests += 1
        version = version or b""
        value = _under(version, value)
        if value is not None:
            return UserSlot(user_id, key, list_field, value, {}, gens, version, row_field)
        feedback = {}
        if flagged is not None:
            fields = self._call(lambda: self.client.hgetall(key))  # version, feedback and row as of one moment
            version, row = fields.get(VERSION_FIELD, b""), fields.get(row_field.encode())
            feedback = _feedback(fields, time.time())
        return UserSlot(user_id, key, list_field, None, feedback, gens, version, row_field, _under(version, row))

    def store_user(self, slot: UserSlot, value: bytes | None, ttl_s: int, row: bytes | None = None) -> None:
        """Cache a computed list (None: not this one), and the user's row read from the DB, in
        the user's hash under the version lookup_user read: if the user was invalidated
        meanwhile, they are stored but never served (lookup_user checks). The hash keeps the
        longest TTL any of its lists or feedback needs. Counts a miss."""
        self._misses += 1
        fields = []
        if value is not None:
            fields += [slot.list_field, slot.version + b"|" + value]
        if row is not None:
            fields += [slot.row_field, slot.version + b"|" + row]
        if fields:
            key, args = [slot.key], [ttl_s, USER_HASH_FIELDS, *fields]
            self._write(lambda client: self._store_user(keys=key, args=args, client=client))

    def user_versions(self, user_ids) -> list[bytes]:
        """Each user's version now (b"": none yet), in one round trip. A row read from the DB
        after this and cached under it is served only if no invalidation came in between."""
        keys = [user_key(u) for u in user_ids]

        def run():
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(keys), PRELOAD_CALL):
                self._user_versions(keys=keys[start:start + PRELOAD_CALL], client=pipe)
            return [v for part in pipe.execute() for v in part]

        return self._call(run)

    def preload_rows(self, rows, gens: dict, ttl_s: int) -> None:
        """Cache users' rows [(user_id, version from user_versions, encode_user_row)] under the
        row field of these generations (gens["lists"]: the lists' basis), in one round trip."""
        field = user_row_field(gens)

        def run():
            pipe = self.client.pipeline(transaction=False)
            for start in range(0, len(rows), PRELOAD_CALL):
                part = rows[start:start + PRELOAD_CALL]
                self._preload_rows(keys=[user_key(u) for u, _, _ in part],
                                   args=[ttl_s, field, *[version + b"|" + row for _, version, row in part]],
                                   client=pipe)
            pipe.execute()

        self._call(run)

    def memory(self) -> tuple[int, int]:
        """(used_memory, maxmemory) in bytes; maxmemory 0: no cap."""
        info = self._call(lambda: self.client.info("memory"))
        return int(info.get("used_memory", 0)), int(info.get("maxmemory", 0))

    def _invalidate(self, pipe, users, min_ttl_s: int = INVALIDATED_TTL_S) -> None:
        now = int(time.time())
        for u in users:
            self._invalidate_user(keys=[user_key(u)], args=[new_version(), now, min_ttl_s], client=pipe)

    def record_feedback(self, events, ttl_s: int) -> None:
        """Live feedback [(user_id, item_id, LIKED | UNLIKED | None)]: stored for ttl_s, and
        each user's cached lists dropped. None (a click) only drops the cached lists. One
        round trip for the whole batch."""
        until = int(time.time()) + ttl_s
        pipe = self.client.pipeline(transaction=True)
        for user_id, item_id, mark in events:
            if mark is not None:
                pipe.hset(user_key(user_id), MARK_PREFIX + str(item_id).encode(), mark + b":%d" % until)
        users = {user_id for user_id, _, _ in events}
        self._invalidate(pipe, users, max(ttl_s, INVALIDATED_TTL_S))  # sets the flag, keeps the marks' hash
        pipe.sadd(TOUCHED_KEY, *users)
        pipe.expire(TOUCHED_KEY, TOUCHED_TTL_S)
        self._call(pipe.execute)

    def pop_touched(self, count: int = 10_000) -> list[int]:
        """Users with live feedback, for the sync to re-read from the main DB (the truth)."""
        return [int(u) for u in self._call(lambda: self.client.spop(TOUCHED_KEY, count)) or ()]

    def add_fold_ins(self, user_ids) -> None:
        """Users due a fold-in, kept until fold_ins_done(): a run killed before its fold-in leaves them to the next."""
        users = [int(u) for u in user_ids]
        if users:
            pipe = self.client.pipeline(transaction=False)
            pipe.sadd(FOLD_IN_KEY, *users)
            pipe.expire(FOLD_IN_KEY, TOUCHED_TTL_S)
            self._call(pipe.execute)

    def pending_fold_ins(self) -> list[int]:
        return sorted(int(u) for u in self._call(lambda: self.client.smembers(FOLD_IN_KEY)))

    def fold_ins_done(self, user_ids) -> None:
        users = [int(u) for u in user_ids]
        for start in range(0, len(users), 10_000):
            self._call(lambda part=users[start:start + 10_000]: self.client.srem(FOLD_IN_KEY, *part))

    def invalidate_users(self, user_ids) -> int:
        """Drop the cached lists of these users (a new version each, no scan); returns how many."""
        users = list(user_ids)
        if not users:
            return 0

        def run():
            pipe = self.client.pipeline(transaction=False)  # each user's invalidation is atomic on its own
            self._invalidate(pipe, users)
            pipe.execute()

        self._call(run)
        return len(users)

    def set_unavailable(self, gone: dict, back=()) -> None:
        """Items to stop serving ({item_id: epoch seen}) and items available again; bumps the live version."""
        pipe = self.client.pipeline(transaction=True)
        if gone:
            pipe.hset(UNAVAILABLE_KEY, mapping={str(k): v for k, v in gone.items()})
        if back:
            pipe.hdel(UNAVAILABLE_KEY, *[str(k) for k in back])
        pipe.expire(UNAVAILABLE_KEY, UNAVAILABLE_TTL_S)
        pipe.set(LIVE_GEN_KEY, str(time.time_ns()), ex=GEN_TTL_S)
        self._call(pipe.execute)

    def catalogue_version(self) -> str:
        """What an in-process catalogue snapshot of a worker depends on: the popular generation
        (a refresh rebuilt the items table) and the live version (the sync changed items rows)."""
        popular, live = self._call(lambda: self.client.mget(f"{PREFIX}gen:popular", LIVE_GEN_KEY))
        return f"{(popular or b'0').decode()}.{(live or b'').decode()}"

    def unavailable_since(self) -> dict:
        """{item_id: epoch seen} of the unavailable set (workers)."""
        return {int(k): float(v) for k, v in self._call(lambda: self.client.hgetall(UNAVAILABLE_KEY)).items()}

    def trim_unavailable(self, before_ts: float) -> list:
        """Forget items marked before a popular refresh's snapshot (it rebuilt them); returns the ids dropped."""
        old = [k for k, ts in self.unavailable_since().items() if ts < before_ts]
        if old:
            self.set_unavailable({}, old)
        return old

    def get(self, key: str) -> bytes | None:
        return self._call(lambda: self.client.get(key))

    def store_miss(self, key: str, value: bytes, ttl_s: int) -> None:
        """Cache a computed list (one SET, sent now or after the request: Cache._write)."""
        self._misses += 1
        self._write(lambda client: client.set(key, value, ex=ttl_s))

    def set_lists_basis(self, gens: dict) -> None:
        """Record the generations the user_lists just swapped in were built from."""
        self.client.set(LISTS_KEY, basis(gens), ex=GEN_TTL_S)

    def bump(self, kind: str) -> str:
        """New generation for a data kind: a timestamp, so an expired counter never rewinds."""
        if kind not in GEN_KINDS:
            raise ValueError(f"unknown generation kind {kind!r}")
        value = str(time.time_ns())
        self.client.set(f"{PREFIX}gen:{kind}", value, ex=GEN_TTL_S)
        return value

    def cleanup(self, batch: int = 1000) -> int:
        """Delete cached lists of dead generations, scanning in batches. Returns keys deleted."""
        current = {k: v.decode() if v else "0" for k, v in
                   zip(GEN_KINDS, self.client.mget([f"{PREFIX}gen:{k}" for k in GEN_KINDS]))}
        live = {
            "pop": current["popular"],
            "pers": f"{current['popular']}.{current['profiles']}.{current['similarities']}",
            "prof": current["profiles"],
        }
        deleted = 0
        for pattern in LIST_PATTERNS:
            dead = []
            for key in self.client.scan_iter(match=pattern, count=batch):
                parts = key.decode().split(":")
                if len(parts) < 3 or parts[2] != live[parts[1]]:
                    dead.append(key)
                if len(dead) >= batch:
                    deleted += self.client.unlink(*dead)
                    dead = []
            if dead:
                deleted += self.client.unlink(*dead)
        return deleted

    def stats(self) -> dict:
        self._gens = None  # flush this process's counters first
        self.generations()

        def run():
            counters = self.client.hgetall(_stats_key())
            try:
                info = self.client.info("memory")
            except redis.ResponseError:  # a server (or proxy) that hides INFO
                info = {}
            keys = self.client.dbsize()
            return counters, info, keys

        counters, info, keys = self._call(run)
        requests = int(counters.get(b"requests", 0))
        misses = min(int(counters.get(b"misses", 0)), requests)
        hits = requests - misses
        return {
            "today": {"requests": requests, "hits": hits, "misses": misses,
                      "hit_rate": round(hits / requests, 4) if requests else None},
            "keys": keys,
            "used_memory_bytes": info.get("used_memory"),
            "used_memory_human": info.get("used_memory_human"),
        }
