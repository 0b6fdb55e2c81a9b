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

# Times are epoch seconds as float8 from date_part('epoch', ...): the same values as
# extract(epoch FROM ...)::float8, which computes a numeric first (PostgreSQL 14+) and made
# the read of 5M interactions about 30 % slower.

# Interactions with public presents only: private items are never recommended, and
# counting them would let a user's own wishlist drive their algorithm choice.
INTERACTIONS_SQL = """
SELECT l.user_id, l.handpicked_present_id AS item_id,
       date_part('epoch', l.created_at) AS ts, 'like' AS type
FROM handpicked_likes l JOIN handpicked_presents p ON p.id = l.handpicked_present_id
WHERE p.user_id IS NULL
UNION ALL
SELECT c.user_id, c.handpicked_present_id AS item_id,
       date_part('epoch', c.created_at) AS ts, 'click' AS type
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


ITEM_DTYPES = {"category": "string", "platform": "string", "target_gender": "string", "target_age": "string",
               "title": "string"}


def load_items(conn) -> pd.DataFrame:
    return _typed_items(_copy_frame(conn, ITEMS_SQL, dtype=ITEM_DTYPES))


def _typed_items(df: pd.DataFrame) -> pd.DataFrame:
    df["in_stock"] = df["in_stock"].map({"t": True, "f": False, True: True, False: False}).astype(bool)
    df["geo_id"] = df["geo_id"].astype("Int64")
    df["created_at"] = pd.to_datetime(df["created_at"], utc=True, format="ISO8601")
    return df


def load_interactions(conn) -> pd.DataFrame:
    return _copy_frame(
        conn, INTERACTIONS_SQL, dtype={"user_id": "int64", "item_id": "int64", "ts": "float64", "type": "category"}
    )


def load_users(conn) -> pd.DataFrame:
    return _typed_users(_copy_frame(conn, USERS_SQL, dtype={"gender": "string"}))


def _typed_users(df: pd.DataFrame) -> pd.DataFrame:
    df["geo_id"] = df["geo_id"].astype("Int64")
    df["birth_date"] = pd.to_datetime(df["birth_date"], errors="coerce")
    return df


def load_stats(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute(STATS_SQL)
        names = [d[0] for d in cur.description]
        return dict(zip(names, cur.fetchone()))


# ---------------------------------------------------------------- live sync (incremental reads)
# Likes and clicks are read by id: above the watermark, plus the ids below it not seen
# yet (gaps, see workers/live.py). `public` is false for a private or deleted present.
NEW_EVENTS_SQL = {
    source: f"""
SELECT e.id, e.user_id, e.handpicked_present_id AS item_id,
       date_part('epoch', e.created_at) AS ts, '{kind}' AS type,
       (p.id IS NOT NULL AND p.user_id IS NULL) AS public
FROM {table} e LEFT JOIN handpicked_presents p ON p.id = e.handpicked_present_id
WHERE e.id > %s OR e.id = ANY(%s::bigint[])
ORDER BY e.id
LIMIT %s
"""
    for source, table, kind in (("likes", "handpicked_likes", "like"), ("clicks", "handpicked_present_clicks", "click"))
}

MAX_IDS_SQL = """
SELECT (SELECT coalesce(max(id), 0) FROM handpicked_likes) AS likes,
       (SELECT coalesce(max(id), 0) FROM handpicked_present_clicks) AS clicks
"""

# The decay reference the full jobs use: the newest public interaction (read once, when
# the sync starts from scratch; afterwards the sync keeps it up to date itself).
NEWEST_INTERACTION_SQL = """
SELECT max(ts) FROM (
  SELECT max(date_part('epoch', l.created_at)) AS ts
  FROM handpicked_likes l JOIN handpicked_presents p ON p.id = l.handpicked_present_id WHERE p.user_id IS NULL
  UNION ALL
  SELECT max(date_part('epoch', c.created_at))
  FROM handpicked_present_clicks c JOIN handpicked_presents p ON p.id = c.handpicked_present_id WHERE p.user_id IS NULL
) x
"""

# Presents changed since a time: status, owner (a private item) or anything else.
CHANGED_PRESENTS_SQL = """
SELECT id, (user_id IS NULL AND status = 'in_stock') AS available, date_part('epoch', updated_at) AS changed
FROM handpicked_presents
WHERE updated_at > to_timestamp(%s)
ORDER BY updated_at
"""

# The present ids in a range (a primary-key range scan): deleted_presents compares them
# with ours. An anti-join of 20,000 ids against the table hashed all of it (~130 ms of
# PostgreSQL every sync run on `large`); the range read costs ~20 ms.
PRESENT_IDS_BETWEEN_SQL = "SELECT id FROM handpicked_presents WHERE id BETWEEN %s AND %s"

# Everyone who liked or clicked any of these (public) presents: the users whose cosine
# with a user of these items can be non-zero.
CO_USERS_SQL = """
SELECT user_id FROM handpicked_likes WHERE handpicked_present_id = ANY(%s::bigint[])
UNION
SELECT user_id FROM handpicked_present_clicks WHERE handpicked_present_id = ANY(%s::bigint[])
"""

# Distinct users per present, over all history: the item weighting (IDF) of the full job.
ITEM_USER_COUNTS_SQL = """
SELECT item_id, count(DISTINCT user_id) AS users FROM (
  SELECT handpicked_present_id AS item_id, user_id FROM handpicked_likes WHERE handpicked_present_id = ANY(%s::bigint[])
  UNION ALL
  SELECT handpicked_present_id, user_id FROM handpicked_present_clicks WHERE handpicked_present_id = ANY(%s::bigint[])
) x GROUP BY item_id
"""


def _bound(conn, sql: str, params) -> str:
    """The statement with its parameters bound (psycopg2 quoting), for COPY, which takes none."""
    with conn.cursor() as cur:
        return cur.mogrify(sql, params).decode()


def load_new_events(conn, source: str, after_id: int, gap_ids: list, limit: int) -> list[tuple]:
    """(id, user_id, item_id, ts, type, public) rows of one source, in id order."""
    with conn.cursor() as cur:
        cur.execute(NEW_EVENTS_SQL[source], (after_id, gap_ids, limit))
        return cur.fetchall()


def max_ids(conn) -> dict:
    with conn.cursor() as cur:
        cur.execute(MAX_IDS_SQL)
        likes, clicks = cur.fetchone()
    return {"likes": likes, "clicks": clicks}


def newest_interaction_ts(conn) -> float | None:
    with conn.cursor() as cur:
        cur.execute(NEWEST_INTERACTION_SQL)
        return cur.fetchone()[0]


def changed_presents(conn, since_ts: float) -> list[tuple]:
    """(id, available, changed epoch) of presents updated after since_ts."""
    with conn.cursor() as cur:
        cur.execute(CHANGED_PRESENTS_SQL, (since_ts,))
        return cur.fetchall()


def deleted_presents(conn, ids: list) -> list[int]:
    """Those of these ids that no present has. Meant for ids in a few ascending runs (the
    live sync's window: one, two when it wraps around): each run's id range is read once,
    with the presents in it that are not asked about."""
    runs: list[list] = []
    for i in ids:
        if runs and i > runs[-1][-1]:
            runs[-1].append(i)
        else:
            runs.append([i])
    gone = []
    with conn.cursor() as cur:
        for run in runs:
            cur.execute(PRESENT_IDS_BETWEEN_SQL, (run[0], run[-1]))
            have = {r[0] for r in cur.fetchall()}
            gone += [i for i in run if i not in have]
    return gone


def co_users(conn, item_ids: list) -> list[int]:
    with conn.cursor() as cur:
        cur.execute(CO_USERS_SQL, (list(item_ids), list(item_ids)))
        return [r[0] for r in cur.fetchall()]


def item_user_counts(conn, item_ids: list) -> pd.Series:
    """Distinct users per item (the full job's document frequency), indexed by item_id."""
    with conn.cursor() as cur:
        cur.execute(ITEM_USER_COUNTS_SQL, (list(item_ids), list(item_ids)))
        rows = cur.fetchall()
    return pd.Series([r[1] for r in rows], index=pd.Index([r[0] for r in rows], name="item_id"), dtype="int64")


def load_user_interactions(conn, user_ids: list) -> pd.DataFrame:
    """The full public history of these users, shaped as load_interactions()."""
    sql = ("SELECT * FROM (" + INTERACTIONS_SQL + ") x WHERE user_id = ANY(%s::bigint[])")
    return _copy_frame(conn, _bound(conn, sql, (list(user_ids),)),
                       dtype={"user_id": "int64", "item_id": "int64", "ts": "float64", "type": "category"})


def load_items_by_id(conn, item_ids: list) -> pd.DataFrame:
    """Catalogue rows of these public presents, shaped as load_items()."""
    return _typed_items(_copy_frame(conn, _bound(conn, ITEMS_SQL + " AND id = ANY(%s::bigint[])", (list(item_ids),)),
                                    dtype=ITEM_DTYPES))


def load_users_by_id(conn, user_ids: list) -> pd.DataFrame:
    return _typed_users(_copy_frame(conn, _bound(conn, USERS_SQL + " WHERE id = ANY(%s::bigint[])", (list(user_ids),)),
                                    dtype={"gender": "string"}))
