"""Reads from the recommendations DB: the serving Source and the figures /stats shows.

Each serving read is one indexed query. `run` is a callable taking fn(cursor), such
as shared.db.LazyConnection.run, so the caller decides how connections are held.
"""
from __future__ import annotations

from shared.jobs import LAST_RUNS_SQL, LAST_SUCCESS_SQL
from shared.serving import Filters, Item, Profile

ITEM_COLS = "i.item_id, i.price, i.category, i.platform, i.geo_id, i.in_stock"

TABLES = ("items", "popular_items", "user_profiles", "user_similarities", "user_recommendations", "job_runs")


# Per segment, the best `lim` rows that pass the request's filters, read along the
# (segment, score) index; a NULL parameter means "no such filter". popular_items lists
# in-stock items only, hence the constant in_stock.
POPULAR_SQL = """
SELECT s.ord, x.popularity_score, x.item_id, x.price, x.item_category, x.platform, x.item_geo_id, true
FROM unnest(%(geo)s::int[], %(gender)s::text[], %(age)s::text[], %(cat)s::text[])
     WITH ORDINALITY AS s(geo, gender, age, cat, ord)
CROSS JOIN LATERAL (
    SELECT p.item_id, p.price, p.item_category, p.platform, p.item_geo_id, p.popularity_score
    FROM popular_items p
    WHERE p.geo_id = s.geo AND p.gender = s.gender AND p.age_group = s.age AND p.category = s.cat
      AND (%(pf)s::float8 IS NULL OR p.price >= %(pf)s::float8)
      AND (%(pt)s::float8 IS NULL OR p.price <= %(pt)s::float8)
      AND (%(fc)s::text IS NULL OR p.item_category = %(fc)s::text)
      AND (%(fg)s::int IS NULL OR p.item_geo_id IS NULL OR p.item_geo_id = %(fg)s::int)
    ORDER BY p.popularity_score DESC, p.item_id
    LIMIT %(lim)s
) x
ORDER BY s.ord, x.popularity_score DESC, x.item_id
"""


class SqlSource:
    def __init__(self, run):
        self.run = run

    def popular(self, segments, filters=None, limit=None):
        if not segments:
            return {}
        f = filters or Filters()
        params = {
            "geo": [seg[0] for seg in segments], "gender": [seg[1] for seg in segments],
            "age": [seg[2] for seg in segments], "cat": [seg[3] for seg in segments],
            "pf": f.price_from, "pt": f.price_to, "fc": f.category, "fg": f.geo_id, "lim": limit,
        }

        def fetch(cur):
            cur.execute(POPULAR_SQL, params)
            return cur.fetchall()

        out: dict[tuple, list] = {}
        for row in self.run(fetch):
            out.setdefault(segments[row[0] - 1], []).append((Item(*row[2:]), row[1]))
        return out

    def profile(self, user_id):
        def fetch(cur):
            cur.execute(
                "SELECT interaction_count, preferred_categories, preferred_platforms, avg_price, liked_item_ids, "
                "gender, age_group, geo_id FROM user_profiles WHERE user_id = %s",
                (user_id,),
            )
            return cur.fetchone()

        row = self.run(fetch)
        if row is None:
            return None
        return Profile(user_id, row[0], row[1] or {}, row[2] or {}, row[3], frozenset(row[4] or ()), row[5], row[6],
                       row[7])

    def collaborative(self, user_id):
        def fetch(cur):
            cur.execute(
                f"SELECT r.score, {ITEM_COLS} FROM user_recommendations u "
                "CROSS JOIN LATERAL unnest(u.item_ids, u.scores) WITH ORDINALITY AS r(item_id, score, ord) "
                "JOIN items i ON i.item_id = r.item_id WHERE u.user_id = %s ORDER BY r.ord",
                (user_id,),
            )
            return cur.fetchall()

        return [(Item(*row[1:]), row[0]) for row in self.run(fetch)]


def table_counts(cur) -> dict:
    out = {}
    for table in TABLES:
        # Table names come from the constant above, never from a request.
        cur.execute(f"SELECT count(*) FROM {table}")
        out[table] = cur.fetchone()[0]
    return out


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


def last_successes(cur) -> dict:
    cur.execute(LAST_SUCCESS_SQL)
    return {job: {"finished_at": finished, "age_s": age} for job, finished, age in cur.fetchall()}
