"""Every query the service makes against MySanta's main DB, in one module.

A deployment whose tables differ changes this file only. The connection passed in
is read-only (shared.db.connect_main). Bulk reads stream through COPY ... TO STDOUT,
which is several times faster than fetching rows for millions of interactions.
"""
from __future__ import annotations

import io

import pandas as pd

ITEMS_SQL = """
SELECT id AS item_id,
       price::float8 AS price,
       COALESCE(NULLIF(categories->>'category', ''), 'other') AS category,
       platform,
       geo_id,
       (status = 'in_stock') AS in_stock,
       NULLIF(categories->>'gender', '') AS target_gender,
       NULLIF(categories->>'age', '') AS target_age,
       created_at,
       title
FROM handpicked_presents
WHERE user_id IS NULL
"""

# Interactions with public presents only: private items are never recommended, and
# counting them would let a user's own wishlist drive their algorithm choice.
INTERACTIONS_SQL = """
SELECT l.user_id, l.handpicked_present_id AS item_id,
       extract(epoch FROM l.created_at)::float8 AS ts, 'like' AS type
FROM handpicked_likes l JOIN handpicked_presents p ON p.id = l.handpicked_present_id
WHERE p.user_id IS NULL
UNION ALL
SELECT c.user_id, c.handpicked_present_id AS item_id,
       extract(epoch FROM c.created_at)::float8 AS ts, 'click' AS type
FROM handpicked_present_clicks c JOIN handpicked_presents p ON p.id = c.handpicked_present_id
WHERE p.user_id IS NULL
"""

USERS_SQL = """
SELECT id AS user_id, gender, birth_date, geo_id FROM users
"""

STATS_SQL = """
SELECT
  (SELECT count(*) FROM handpicked_presents WHERE user_id IS NULL) AS presents_public,
  (SELECT count(*) FROM handpicked_presents WHERE user_id IS NOT NULL) AS presents_private,
  (SELECT count(*) FROM handpicked_presents WHERE user_id IS NULL AND status = 'in_stock') AS presents_in_stock,
  (SELECT count(*) FROM handpicked_likes) AS likes,
  (SELECT count(*) FROM handpicked_present_clicks) AS clicks,
  (SELECT count(*) FROM users) AS users
"""


def _copy_frame(conn, sql: str, dtype=None, parse_dates=None) -> pd.DataFrame:
    buf = io.StringIO()
    with conn.cursor() as cur:
        cur.copy_expert(f"COPY ({sql}) TO STDOUT WITH (FORMAT csv, HEADER true)", buf)
    buf.seek(0)
    return pd.read_csv(buf, dtype=dtype, parse_dates=parse_dates, keep_default_na=True)


def load_items(conn) -> pd.DataFrame:
    df = _copy_frame(
        conn,
        ITEMS_SQL,
        dtype={"category": "string", "platform": "string", "target_gender": "string", "target_age": "string",
               "title": "string"},
    )
    df["in_stock"] = df["in_stock"].map({"t": True, "f": False, True: True, False: False}).astype(bool)
    df["geo_id"] = df["geo_id"].astype("Int64")
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    return df


def load_interactions(conn) -> pd.DataFrame:
    return _copy_frame(
        conn, INTERACTIONS_SQL, dtype={"user_id": "int64", "item_id": "int64", "ts": "float64", "type": "category"}
    )


def load_users(conn) -> pd.DataFrame:
    df = _copy_frame(conn, USERS_SQL, dtype={"gender": "string"})
    df["geo_id"] = df["geo_id"].astype("Int64")
    df["birth_date"] = pd.to_datetime(df["birth_date"], errors="coerce")
    return df


def load_stats(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute(STATS_SQL)
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))
