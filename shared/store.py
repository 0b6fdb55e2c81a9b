"""Reads from the recommendations DB: the serving Source and the figures /stats shows.

Each serving read is one indexed query. `run` is a callable taking fn(cursor), such
as shared.db.LazyConnection.run, so the caller decides how connections are held.
"""
from __future__ import annotations

import struct
from dataclasses import replace

from shared.jobs import LAST_RUNS_SQL
from shared.serving import Filters, Item, PersonalList, Profile, UserRow

ITEM_COLS = "i.item_id, i.price, i.category, i.platform, i.geo_id, i.in_stock"

TABLES = ("items", "popular_items", "popular_lists", "user_profiles", "user_similarities", "user_recommendations",
          "user_lists", "job_runs")


# The serving queries are PREPAREd once per connection (prepare() below): planning
# the join and LATERAL queries cost more than executing them. Parameters are positional.

# Per segment, the best $9[i] rows that pass the request's filters and are not in $10
# (liked or already listed), read along the
# (segment, score) index; a NULL parameter means "no such filter". popular_items lists
# in-stock items only, hence the constant in_stock.
POPULAR_SQL = """
SELECT s.ord, x.popularity_score, x.item_id, x.price, x.item_category, x.platform, x.item_geo_id, true
FROM unnest($1::int[], $2::text[], $3::text[], $4::text[], $9::int[]) WITH ORDINALITY AS s(geo, gender, age, cat, lim, ord)
CROSS JOIN LATERAL (
    SELECT p.item_id, p.price, p.item_category, p.platform, p.item_geo_id, p.popularity_score
    FROM popular_items p
    WHERE p.geo_id = s.geo AND p.gender = s.gender AND p.age_group = s.age AND p.category = s.cat
      AND ($5::float8 IS NULL OR p.price >= $5::float8)
      AND ($6::float8 IS NULL OR p.price <= $6::float8)
      AND ($7::text IS NULL OR p.item_category = $7::text)
      AND ($8::int IS NULL OR p.item_geo_id IS NULL OR p.item_geo_id = $8::int)
      AND NOT (p.item_id = ANY($10::bigint[]))
    ORDER BY p.popularity_score DESC, p.item_id
    LIMIT s.lim
) x
ORDER BY s.ord, x.popularity_score DESC, x.item_id
"""

PROFILE_SQL = """
SELECT interaction_count, preferred_categories, preferred_platforms, avg_price, liked_item_ids,
       gender, age_group, geo_id
FROM user_profiles WHERE user_id = $1
"""

# The user's precomputed list, in order, with each item's current catalogue row.
COLLABORATIVE_SQL = f"""
SELECT r.score, {ITEM_COLS}
FROM user_recommendations u
CROSS JOIN LATERAL unnest(u.item_ids, u.scores) WITH ORDINALITY AS r(item_id, score, ord)
JOIN items i ON i.item_id = r.item_id
WHERE u.user_id = $1
ORDER BY r.ord
"""

# What a /personalized miss needs about one user to answer from the precomputed list,
# in one indexed read: the profile without its preferences, and the list (user_lists).
# The bigint arrays come in binary (array_send, see SEGMENTS_SQL).
_USER_COLUMNS = """
p.user_id IS NOT NULL, p.interaction_count, array_send(p.liked_item_ids), p.gender, p.age_group, p.geo_id,
array_send(l.item_ids), l.sections, l.algorithm, l.geo_id, l.geo_safe, l.price_lo, l.price_hi"""
_USER_JOINS = """
LEFT JOIN user_profiles p ON p.user_id = q.user_id
LEFT JOIN user_lists l ON l.user_id = q.user_id"""
USER_SQL = f"SELECT {_USER_COLUMNS} FROM (SELECT $1::bigint AS user_id) q {_USER_JOINS}"
# The same of many users (the rows workers/preload.py caches ahead of requests), the user id first.
USERS_SQL = f"SELECT q.user_id, {_USER_COLUMNS} FROM unnest(%s::bigint[]) q(user_id) {_USER_JOINS}"
# Users with a profile, the most active first.
PROFILED_USERS_SQL = "SELECT user_id FROM user_profiles ORDER BY interaction_count DESC, user_id"

# Several users' whole profiles and collaborative lists, in one read (the live sync's
# relisting, workers.lists.update_users): PROFILE_SQL and USER_DETAIL_SQL's columns.
PROFILES_DETAIL_SQL = """
SELECT p.user_id, p.interaction_count, p.preferred_categories, p.preferred_platforms, p.avg_price,
       p.liked_item_ids, p.gender, p.age_group, p.geo_id, array_send(r.item_ids), r.scores
FROM user_profiles p
LEFT JOIN user_recommendations r ON r.user_id = p.user_id
WHERE p.user_id = ANY($1)
"""

# What only a computed answer reads (most misses are answered from the precomputed list
# without it): the profile's preferences and the collaborative list. The real[] scores
# come as text, whose values are the ones the SQL source reads (binary would widen the float4).
USER_DETAIL_SQL = """
SELECT p.preferred_categories, p.preferred_platforms, p.avg_price, array_send(r.item_ids), r.scores
FROM (SELECT $1::bigint AS user_id) q
LEFT JOIN user_profiles p ON p.user_id = q.user_id
LEFT JOIN user_recommendations r ON r.user_id = q.user_id
"""

# Whole popular lists of several segments, one row each, in one read. The arrays come in
# PostgreSQL's binary format (array_send, unpacked by binary_array): the text form of
# 200 float8 costs more to print and parse than the rest of the query.
SEGMENTS_SQL = """
SELECT s.ord, array_send(p.item_ids), array_send(p.scores)
FROM unnest($1::int[], $2::text[], $3::text[], $4::text[]) WITH ORDINALITY AS s(geo, gender, age, cat, ord)
JOIN popular_lists p ON p.geo_id = s.geo AND p.gender = s.gender AND p.age_group = s.age AND p.category = s.cat
"""

STATEMENTS = {
    "recs_popular": ("int[], text[], text[], text[], float8, float8, text, int, int[], bigint[]", POPULAR_SQL),
    "recs_profile": ("bigint", PROFILE_SQL),
    "recs_collaborative": ("bigint", COLLABORATIVE_SQL),
    "recs_user": ("bigint", USER_SQL),
    "recs_user_detail": ("bigint", USER_DETAIL_SQL),
    "recs_profiles_detail": ("bigint[]", PROFILES_DETAIL_SQL),
    "recs_segments": ("int[], text[], text[], text[]", SEGMENTS_SQL),
}


def encode_sections(sections) -> str:
    """user_lists.sections: 'collaborative:0 popular:87' (algorithm:index of its first item)."""
    return " ".join(f"{name}:{first}" for name, first in sections)


def decode_sections(text: str) -> list[tuple[str, int]]:
    out = []
    for part in text.split():
        name, _, first = part.partition(":")
        out.append((name, int(first)))
    return out


_UNPACKERS: dict = {}
# Element types binary_array reads: their values are exact in Python (a real[] is not:
# its text form, which psycopg2 parses, is not the float4 widened to a double).
_ELEMENT_CODES = {20: "q", 23: "i", 701: "d"}  # bigint, integer, double precision


def binary_array(data) -> tuple:
    """The values of a one-dimensional bigint, integer or float8 array without NULLs, from
    PostgreSQL's binary format (array_send): a 12-byte header (dimensions, NULL flag,
    element type), (length, lower bound) per dimension, then each element as a 4-byte
    length and its big-endian value."""
    if not int.from_bytes(data[0:4], "big"):  # no dimensions: empty
        return ()
    element = int.from_bytes(data[8:12], "big")
    code = _ELEMENT_CODES.get(element)
    if code is None or int.from_bytes(data[4:8], "big"):
        raise ValueError(f"binary_array: element type {element} or NULLs not supported")
    count = int.from_bytes(data[12:16], "big")
    unpacker = _UNPACKERS.get((code, count))
    if unpacker is None:
        unpacker = _UNPACKERS[(code, count)] = struct.Struct(">" + ("i" + code) * count)
    return unpacker.unpack_from(data, 20)[1::2]


def prepare(conn):
    """PREPARE the serving statements on a new connection; returns it.

    A prepared statement survives the workers' table swaps: PostgreSQL re-analyses it
    when a table it uses is dropped and replaced. The API's connections run them on
    generic plans (shared.db.connect_recs; `python -m bench.plans` measures the saving).
    """
    conn.autocommit = True
    with conn.cursor() as cur:
        for name, (types, text) in STATEMENTS.items():
            cur.execute(f"PREPARE {name} ({types}) AS {text}")
    return conn


class SqlSource:
    def __init__(self, run):
        self.run = run

    def _rows(self, statement: str, params: tuple, one: bool = False):
        placeholders = ", ".join(["%s"] * len(params))

        def fetch(cur):
            cur.execute(f"EXECUTE {statement} ({placeholders})", params)
            return cur.fetchone() if one else cur.fetchall()

        return self.run(fetch)

    def popular(self, segments, filters=None, limit=None, skip=()):
        if not segments:
            return {}
        f = filters or Filters()
        limits = list(limit) if isinstance(limit, (list, tuple)) else [limit] * len(segments)
        params = ([seg[0] for seg in segments], [seg[1] for seg in segments], [seg[2] for seg in segments],
                  [seg[3] for seg in segments], f.price_from, f.price_to, f.category, f.geo_id, limits, list(skip))
        out: dict[tuple, list] = {}
        make = Item._make  # rows come in Item's field order; _make skips the keyword-argument __new__
        for row in self._rows("recs_popular", params):
            out.setdefault(segments[row[0] - 1], []).append((make(row[2:]), row[1]))
        return out

    def profile(self, user_id):
        row = self._rows("recs_profile", (user_id,), one=True)
        return None if row is None else _profile(user_id, row)

    def profiles_with_detail(self, user_ids) -> dict:
        """{user_id: (profile, (item ids, scores) of the collaborative list)} of those of these
        users that have a profile, in one read: what profile() and with_detail() give."""
        return {row[0]: (_profile(row[0], row[1:9]), _collaborative(row[9], row[10]))
                for row in self._rows("recs_profiles_detail", (list(user_ids),))}

    def collaborative(self, user_id):
        return [(Item._make(row[1:]), row[0]) for row in self._rows("recs_collaborative", (user_id,))]

    def user_raw(self, user_id) -> tuple:
        """The user's profile (without preferences) and precomputed list, in one read: USER_SQL's
        row as read (user_row makes a UserRow of it; shared.cache.encode_user_row caches it)."""
        return self._rows("recs_user", (user_id,), one=True)

    def with_detail(self, profile: Profile) -> tuple[Profile, tuple]:
        """(the profile with its preferences, (item ids, scores) of the collaborative list):
        what a computed answer reads besides user(), in a second read."""
        row = self._rows("recs_user_detail", (profile.user_id,), one=True)
        return (replace(profile, categories=row[0] or {}, platforms=row[1] or {}, avg_price=row[2]),
                _collaborative(row[3], row[4]))

    def segment_lists(self, segments) -> dict:
        """{segment: (item ids, scores)} of the segments that have a popular list, in one read."""
        if not segments:
            return {}
        params = ([seg[0] for seg in segments], [seg[1] for seg in segments], [seg[2] for seg in segments],
                  [seg[3] for seg in segments])
        return {segments[ord_ - 1]: (binary_array(ids), binary_array(scores))
                for ord_, ids, scores in self._rows("recs_segments", params)}


def user_row(user_id: int, row: tuple) -> UserRow:
    """A UserRow from USER_SQL's columns (read now, or cached: shared.cache.encode_user_row)."""
    profile = None
    if row[0]:
        profile = Profile(user_id, row[1], liked=frozenset(binary_array(row[2])), gender=row[3], age_group=row[4],
                          geo_id=row[5])
    plist = None if row[6] is None else PersonalList(list(binary_array(row[6])), decode_sections(row[7]), *row[8:13])
    return UserRow(profile, plist)


def users_raw(cur, user_ids) -> list[tuple]:
    """(user_id, *what user_raw reads) of each of these users, in one read (USERS_SQL); user_row
    makes a UserRow of row[1:]."""
    cur.execute(USERS_SQL, (list(user_ids),))
    return cur.fetchall()


def _profile(user_id: int, row) -> Profile:
    """A Profile from PROFILE_SQL's columns."""
    return Profile(user_id, row[0], row[1] or {}, row[2] or {}, row[3], frozenset(row[4] or ()), row[5], row[6],
                   row[7])


def _collaborative(ids, scores) -> tuple:
    """(item ids, scores) of a collaborative list read as array_send(item_ids) and scores (text)."""
    return (binary_array(ids) if ids is not None else [], scores or [])


def table_counts(cur) -> dict:
    out = {}
    for table in TABLES:
        # Table names come from the constant above, never from a request.
        cur.execute(f"SELECT count(*) FROM {table}")
        out[table] = cur.fetchone()[0]
    return out


def category_counts(cur) -> list[tuple[str, int]]:
    """(category, public in-stock items) for every category that has one, by name."""
    cur.execute("SELECT category, count(*) FROM items WHERE in_stock GROUP BY category ORDER BY category")
    return cur.fetchall()


def main_db_stats(cur) -> dict:
    cur.execute("SELECT name, value, updated_at FROM main_db_stats ORDER BY name")
    rows = cur.fetchall()
    return {
        "counts": {name: value for name, value, _ in rows},
        "as_of": max((r[2] for r in rows), default=None),
    }


def last_runs(cur) -> dict:
    cur.execute(LAST_RUNS_SQL)
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names[1:], row[1:])) for row in cur.fetchall()}



# Reads for the dashboard (api/dashboard.py): read-only, off the serving path.

RECENT_RUNS_SQL = """
SELECT job, started_at, finished_at, duration_ms, rows_written, status, error
FROM (SELECT r.*, row_number() OVER (PARTITION BY job ORDER BY started_at DESC) AS n FROM job_runs r) recent
WHERE n <= %s ORDER BY job, started_at DESC
"""


def recent_runs(cur, per_job: int = 10) -> dict:
    cur.execute(RECENT_RUNS_SQL, (per_job,))
    names = [d[0] for d in cur.description]
    out: dict = {}
    for row in cur.fetchall():
        out.setdefault(row[0], []).append(dict(zip(names[1:], row[1:])))
    return out


def table_estimates(cur) -> dict:
    """Rows per table from the planner's statistics (the bulk swap ANALYZEs): instant on any size,
    where count(*) on a large similarity table takes seconds."""
    cur.execute("SELECT relname, reltuples::bigint FROM pg_class WHERE relkind = 'r' AND relname = ANY(%s) "
                "AND relnamespace = 'public'::regnamespace", (list(TABLES),))
    out = dict(cur.fetchall())
    for table in TABLES:
        if out.get(table, -1) < 0:  # never analysed (job_runs): small, count it
            cur.execute(f"SELECT count(*) FROM {table}")  # names from the constant TABLES
            out[table] = cur.fetchone()[0]
    return out


def neighbours(cur, user_id: int) -> list[tuple[int, float]]:
    cur.execute("SELECT similar_user_id, similarity_score FROM user_similarities WHERE user_id = %s "
                "ORDER BY similarity_score DESC, similar_user_id", (user_id,))
    return [(uid, float(score)) for uid, score in cur.fetchall()]


def liked_items(cur, user_ids: list[int]) -> dict[int, frozenset]:
    cur.execute("SELECT user_id, liked_item_ids FROM user_profiles WHERE user_id = ANY(%s)", (list(user_ids),))
    return {uid: frozenset(liked or ()) for uid, liked in cur.fetchall()}


def item_details(cur, item_ids: list[int]) -> dict[int, dict]:
    cur.execute("SELECT item_id, title, price, category, platform, geo_id, in_stock FROM items "
                "WHERE item_id = ANY(%s)", (list(item_ids),))
    names = [d[0] for d in cur.description]
    return {row[0]: dict(zip(names, row)) for row in cur.fetchall()}
