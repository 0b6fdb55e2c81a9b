"""Demo data for MySanta's main DB: `python -m deploy.seed --preset tiny|default|large`.

Deterministic for a given --seed. Loads by COPY with a progress bar. The data hides
structure a good recommender can find and a bad one cannot:
  * taste clusters: each user belongs to one cluster; each cluster prefers a few
    categories and a set of "its" items inside them (only co-liking reveals those);
  * gender, age and geo skews: the cluster prior depends on gender x age, items can
    be tagged for a gender or age, and geo-local items are liked by locals;
  * per-user price levels: users prefer items in their price band;
  * power-law popularity and power-law user activity;
  * trends: an item's interactions follow its creation date, so newer items are
    popular recently and time-decay matters;
  * out-of-stock items and private (user-added) items, which must never be recommended.
"""
from __future__ import annotations

import argparse
import io
import sys
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import psycopg2
from tqdm import tqdm

from shared.demographics import AGE_GROUPS
from shared.settings import load_settings

GEOS = np.array([213, 2, 54, 65, 43, 47, 35, 39, 51, 66, 172, 56, 62, 193, 76, 38, 50, 11, 22, 44, 48, 63, 67, 75, 197])
CATEGORIES = np.array(
    ["electronics", "books", "beauty", "toys", "home", "kitchen", "sports", "fashion",
     "jewelry", "games", "hobbies", "travel", "food", "flowers", "pets", "auto"]
)
CATEGORY_PRICE = np.array([6000, 800, 1500, 1500, 2000, 2500, 3000, 3000, 7000, 3500, 1800, 4000, 1000, 2500, 1200, 2500])
PLATFORMS = np.array(["ozon", "wildberries", "yandex_market", "aliexpress", "lamoda", "megamarket"])
PLATFORM_SHARE = np.array([0.32, 0.30, 0.18, 0.10, 0.05, 0.05])
AGE_SHARE = np.array([0.20, 0.32, 0.25, 0.13, 0.10])
AGE_RANGES = [(18, 24), (25, 34), (35, 44), (45, 54), (55, 75)]
N_CLUSTERS = 12
NOW = datetime(2026, 11, 1, tzinfo=timezone.utc)
HISTORY_DAYS = 400


@dataclass(frozen=True)
class Preset:
    public_items: int
    private_items: int
    users: int
    clicks: int
    likes: int


PRESETS = {
    "tiny": Preset(public_items=500, private_items=60, users=600, clicks=3000, likes=2000),
    "default": Preset(public_items=16000, private_items=2500, users=130000, clicks=800000, likes=600000),
    "large": Preset(public_items=100000, private_items=12000, users=300000, clicks=2900000, likes=2100000),
}


def _geo_share():
    tail = 1.0 / np.arange(1, len(GEOS) - 1) ** 1.1
    tail = tail / tail.sum() * 0.54
    return np.concatenate([[0.32, 0.14], tail])


def make_users(rng, n):
    gender = rng.choice(np.array(["f", "m", ""], dtype=object), size=n, p=[0.47, 0.45, 0.08])
    age_idx = rng.choice(len(AGE_GROUPS), size=n, p=AGE_SHARE)
    lo = np.array([r[0] for r in AGE_RANGES])[age_idx]
    hi = np.array([r[1] for r in AGE_RANGES])[age_idx]
    age_days = (rng.uniform(lo, hi + 1) * 365.25).astype(int)
    birth = pd.Timestamp(NOW.date()) - pd.to_timedelta(age_days, unit="D")
    birth = np.where(rng.random(n) < 0.05, pd.NaT, birth)  # some users never gave a birth date
    geo = rng.choice(GEOS, size=n, p=_geo_share())
    created = pd.Timestamp(NOW) - pd.to_timedelta(rng.uniform(HISTORY_DAYS, 900, n), unit="D")
    # Taste cluster prior depends on gender x age: that is the demographic skew.
    gender_idx = np.select([gender == "f", gender == "m"], [0, 1], 2)
    prior = rng.dirichlet(np.full(N_CLUSTERS, 0.35), size=(3, len(AGE_GROUPS)))
    cluster = np.empty(n, dtype=np.int64)
    for g in range(3):
        for a in range(len(AGE_GROUPS)):
            idx = np.flatnonzero((gender_idx == g) & (age_idx == a))
            cluster[idx] = rng.choice(N_CLUSTERS, size=len(idx), p=prior[g, a])
    price_band = rng.choice(3, size=n, p=[0.35, 0.45, 0.20])
    activity = rng.pareto(1.3, size=n) + 0.05
    activity[rng.random(n) < 0.22] = 0.0  # registered, never interacted
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "gender": gender,
            "birth_date": birth,
            "geo_id": geo,
            "created_at": created,
            "age_idx": age_idx,
            "gender_idx": gender_idx,
            "cluster": cluster,
            "price_band": price_band,
            "activity": activity,
        }
    )


def make_items(rng, n):
    cat_idx = rng.choice(len(CATEGORIES), size=n, p=rng.dirichlet(np.full(len(CATEGORIES), 4.0)))
    rel_price = rng.lognormal(0.0, 0.6, n)
    price = np.round(CATEGORY_PRICE[cat_idx] * rel_price, -1) + 90
    band = np.digitize(rel_price, [0.75, 1.45])  # 0 cheap, 1 mid, 2 premium within its category
    platform = rng.choice(PLATFORMS, size=n, p=PLATFORM_SHARE)
    geo = np.where(rng.random(n) < 0.18, rng.choice(GEOS, size=n, p=_geo_share()), 0)
    in_stock = rng.random(n) >= 0.08
    cats = CATEGORIES[cat_idx]
    female_bias = np.isin(cats, ["beauty", "jewelry", "flowers", "fashion"])
    male_bias = np.isin(cats, ["auto", "electronics", "games", "sports"])
    r = rng.random(n)
    target_gender = np.where(female_bias & (r < 0.35), "f", np.where(male_bias & (r < 0.25), "m", ""))
    target_gender = np.where((target_gender == "") & (r > 0.97), np.where(r > 0.985, "f", "m"), target_gender)
    target_age = np.where(rng.random(n) < 0.07, np.array(AGE_GROUPS)[rng.integers(0, 5, n)], "")
    created = pd.Timestamp(NOW) - pd.to_timedelta(rng.uniform(5, HISTORY_DAYS, n), unit="D")
    popularity = rng.pareto(1.1, n) + 0.02  # power law
    # Each item "belongs" to one taste cluster: a signal only co-likes reveal.
    item_cluster = rng.integers(0, N_CLUSTERS, n)
    lifetime_days = rng.uniform(15, 220, n)
    return pd.DataFrame(
        {
            "id": np.arange(1, n + 1),
            "cat_idx": cat_idx,
            "price": price,
            "band": band,
            "platform": platform,
            "geo_id": geo,
            "in_stock": in_stock,
            "target_gender": target_gender,
            "target_age": target_age,
            "created_at": created,
            "popularity": popularity,
            "item_cluster": item_cluster,
            "lifetime_days": lifetime_days,
        }
    )


def _cluster_tastes(rng):
    """Per cluster: weight of each category (3 favourites dominate) and of each platform."""
    cat_w = np.full((N_CLUSTERS, len(CATEGORIES)), 0.15)
    for k in range(N_CLUSTERS):
        fav = rng.choice(len(CATEGORIES), size=3, replace=False)
        cat_w[k, fav] = [6.0, 3.5, 2.0]
    plat_w = 1.0 + rng.random((N_CLUSTERS, len(PLATFORMS))) * np.eye(N_CLUSTERS, len(PLATFORMS)) * 2.0
    return cat_w, plat_w


def make_events(rng, users, items, tastes, n_events):
    """(user_id, item_id, ts) for n_events interactions on public items.

    `tastes` (from _cluster_tastes) is drawn once per data set, so a cluster's clicks
    and likes follow the same taste.
    """
    cat_w, plat_w = tastes
    active = users[users["activity"] > 0]
    p_user = active["activity"].to_numpy() / active["activity"].sum()
    ev_user_pos = rng.choice(len(active), size=n_events, p=p_user)
    ev_users = active.iloc[ev_user_pos]
    ev_item = np.empty(n_events, dtype=np.int64)
    plat_idx = pd.Categorical(items["platform"], categories=PLATFORMS).codes
    local = rng.random(n_events) < 0.12
    # Geo-local events pick among the items sold only in the user's region.
    geo_items = {g: grp for g, grp in items[items["geo_id"] > 0].groupby("geo_id")}
    ev_geo = ev_users["geo_id"].to_numpy()
    for g in np.unique(ev_geo[local]):
        grp = geo_items.get(g)
        idx = np.flatnonzero(local & (ev_geo == g))
        if grp is None:
            local[idx] = False
            continue
        p = grp["popularity"].to_numpy()
        ev_item[idx] = grp["id"].to_numpy()[rng.choice(len(grp), size=len(idx), p=p / p.sum())]
    # The rest: one item distribution per (cluster, price band, gender).
    nationwide = items["geo_id"].to_numpy() == 0
    tg = items["target_gender"].to_numpy()
    key = (ev_users["cluster"].to_numpy() * 3 + ev_users["price_band"].to_numpy()) * 3 + ev_users["gender_idx"].to_numpy()
    for k in np.unique(key[~local]):
        idx = np.flatnonzero((~local) & (key == k))
        cluster, rest = divmod(k, 9)
        band, gender_idx = divmod(rest, 3)
        w = items["popularity"].to_numpy() * cat_w[cluster, items["cat_idx"].to_numpy()]
        w = w * plat_w[cluster, plat_idx]
        w = w * np.where(items["item_cluster"].to_numpy() == cluster, 8.0, 1.0)
        w = w * np.where(items["band"].to_numpy() == band, 3.0, 1.0)
        other = {0: "m", 1: "f", 2: None}[gender_idx]
        if other:
            w = w * np.where(tg == other, 0.02, 1.0)
        w = w * nationwide
        ev_item[idx] = rng.choice(len(items), size=len(idx), p=w / w.sum()) + 1
    # Trend: an item's interactions come soon after it appears, then fade.
    it = items.set_index("id").loc[ev_item]
    created = (it["created_at"] - pd.Timestamp(0, tz="UTC")).dt.total_seconds().to_numpy()
    delay = rng.exponential(it["lifetime_days"].to_numpy()) * 86400
    ts = created + delay
    now = int(NOW.timestamp())
    late = ts >= now
    ts[late] = rng.uniform(created[late], now)
    return pd.DataFrame({"user_id": ev_users["id"].to_numpy(), "item_id": ev_item, "ts": ts.astype(np.int64)})


def _copy(cur, table, columns, frame, bar):
    chunk = 250_000
    for start in range(0, len(frame), chunk):
        part = frame.iloc[start : start + chunk]
        buf = io.StringIO()
        part.to_csv(buf, index=False, header=False, na_rep="")
        buf.seek(0)
        cur.copy_expert(f"COPY {table} ({', '.join(columns)}) FROM STDIN WITH (FORMAT csv)", buf)
        bar.update(len(part))


def _ts(series_seconds):
    return pd.to_datetime(series_seconds, unit="s", utc=True).dt.strftime("%Y-%m-%d %H:%M:%S+00")


def generate(preset: Preset, seed: int):
    rng = np.random.default_rng(seed)
    users = make_users(rng, preset.users)
    items = make_items(rng, preset.public_items)
    tastes = _cluster_tastes(rng)
    clicks = make_events(rng, users, items, tastes, preset.clicks)
    # A user likes an item once: draw like events until enough distinct pairs exist.
    likes = make_events(rng, users, items, tastes, preset.likes).drop_duplicates(["user_id", "item_id"])
    for _ in range(8):
        if len(likes) >= preset.likes:
            break
        more = make_events(rng, users, items, tastes, preset.likes - len(likes) + preset.likes // 4)
        likes = pd.concat([likes, more]).drop_duplicates(["user_id", "item_id"])
    likes = likes.head(preset.likes)
    return users, items, likes, clicks


def build_frames(preset: Preset, seed: int):
    rng = np.random.default_rng(seed + 1)
    users, items, likes, clicks = generate(preset, seed)
    users_out = pd.DataFrame(
        {
            "id": users["id"],
            "gender": users["gender"],
            "birth_date": pd.to_datetime(users["birth_date"]).dt.strftime("%Y-%m-%d"),
            "geo_id": users["geo_id"],
            "created_at": users["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S+00"),
        }
    )
    n_pub = len(items)
    cats = CATEGORIES[items["cat_idx"].to_numpy()]
    categories_json = [
        '{"category": "%s"%s%s}'
        % (c, f', "gender": "{g}"' if g else "", f', "age": "{a}"' if a else "")
        for c, g, a in zip(cats, items["target_gender"], items["target_age"])
    ]
    created = items["created_at"].dt.strftime("%Y-%m-%d %H:%M:%S+00")
    public = pd.DataFrame(
        {
            "id": items["id"],
            "user_id": pd.array([pd.NA] * n_pub, dtype="Int64"),
            "title": [f"{c.capitalize()} gift #{i}" for c, i in zip(cats, items["id"])],
            "price": items["price"],
            "platform": items["platform"],
            "geo_id": pd.array(np.where(items["geo_id"] > 0, items["geo_id"], 0), dtype="Int64").astype("Int64"),
            "status": np.where(items["in_stock"], "in_stock", "out_of_stock"),
            "categories": categories_json,
            "created_at": created,
            "updated_at": created,
        }
    )
    public.loc[public["geo_id"] == 0, "geo_id"] = pd.NA
    # Private, user-added wishlist items, some liked by their owners: never recommendable.
    n_priv = preset.private_items
    owners = rng.choice(users["id"].to_numpy(), size=n_priv)
    priv_ids = np.arange(n_pub + 1, n_pub + n_priv + 1)
    priv_cats = rng.choice(CATEGORIES, size=n_priv)
    priv_created = (pd.Timestamp(NOW) - pd.to_timedelta(rng.uniform(1, HISTORY_DAYS, n_priv), unit="D")).strftime(
        "%Y-%m-%d %H:%M:%S+00"
    )
    private = pd.DataFrame(
        {
            "id": priv_ids,
            "user_id": pd.array(owners, dtype="Int64"),
            "title": [f"My wish #{i}" for i in priv_ids],
            "price": np.round(rng.lognormal(7.5, 0.8, n_priv), -1),
            "platform": rng.choice(PLATFORMS, size=n_priv, p=PLATFORM_SHARE),
            "geo_id": pd.array([pd.NA] * n_priv, dtype="Int64"),
            "status": "in_stock",
            "categories": [f'{{"category": "{c}"}}' for c in priv_cats],
            "created_at": priv_created,
            "updated_at": priv_created,
        }
    )
    presents = pd.concat([public, private], ignore_index=True)
    liked_private = rng.random(n_priv) < 0.6
    owner_likes = pd.DataFrame(
        {"user_id": owners[liked_private], "item_id": priv_ids[liked_private], "ts": int(NOW.timestamp()) - 86400}
    )
    likes = pd.concat([likes, owner_likes], ignore_index=True)
    likes_out = pd.DataFrame(
        {"id": np.arange(1, len(likes) + 1), "user_id": likes["user_id"].to_numpy(),
         "handpicked_present_id": likes["item_id"].to_numpy(), "created_at": _ts(likes["ts"]).to_numpy()}
    )
    clicks_out = pd.DataFrame(
        {"id": np.arange(1, len(clicks) + 1), "user_id": clicks["user_id"].to_numpy(),
         "handpicked_present_id": clicks["item_id"].to_numpy(), "created_at": _ts(clicks["ts"]).to_numpy()}
    )
    return users_out, presents, likes_out, clicks_out


TABLES = ("handpicked_present_clicks", "handpicked_likes", "handpicked_presents", "users")


def existing_rows(conn) -> int:
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('handpicked_presents') IS NOT NULL")
        if not cur.fetchone()[0]:
            return 0
        cur.execute("SELECT count(*) FROM handpicked_presents")
        return cur.fetchone()[0]


def seed(url: str, preset_name: str, seed_value: int, replace: bool, quiet: bool = False) -> dict:
    preset = PRESETS[preset_name]
    started = time.perf_counter()
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(Path(__file__).with_name("main_schema.sql").read_text())
        conn.commit()
        have = existing_rows(conn)
        if have and not replace:
            return {"skipped": True, "presents": have}
        frames = build_frames(preset, seed_value)
        total = sum(len(f) for f in frames)
        with conn.cursor() as cur, tqdm(total=total, unit="rows", desc=f"seed {preset_name}", disable=quiet) as bar:
            if replace:
                cur.execute(f"TRUNCATE {', '.join(TABLES)}")
            cols = {
                "users": ["id", "gender", "birth_date", "geo_id", "created_at"],
                "handpicked_presents": ["id", "user_id", "title", "price", "platform", "geo_id", "status",
                                        "categories", "created_at", "updated_at"],
                "handpicked_likes": ["id", "user_id", "handpicked_present_id", "created_at"],
                "handpicked_present_clicks": ["id", "user_id", "handpicked_present_id", "created_at"],
            }
            for table, frame in zip(["users", "handpicked_presents", "handpicked_likes", "handpicked_present_clicks"], frames):
                _copy(cur, table, cols[table], frame, bar)
        conn.commit()
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("ANALYZE")
        counts = {name: len(f) for name, f in zip(["users", "presents", "likes", "clicks"], frames)}
        counts["seconds"] = round(time.perf_counter() - started, 1)
        return counts
    finally:
        conn.close()


def main(argv=None):
    parser = argparse.ArgumentParser(description="Fill the main DB with deterministic MySanta demo data.")
    parser.add_argument("--preset", choices=sorted(PRESETS), default="default")
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--replace", action="store_true", help="wipe the four demo tables first")
    parser.add_argument("--url", default=None, help="main DB URL (default: MAIN_DATABASE_URL)")
    args = parser.parse_args(argv)
    url = args.url or load_settings().main_database_url
    result = seed(url, args.preset, args.seed, args.replace)
    if result.get("skipped"):
        print(f"seed: main DB already holds {result['presents']} presents; left as is (use --replace to regenerate)")
    else:
        print("seed: " + " ".join(f"{k}={v}" for k, v in result.items()))


if __name__ == "__main__":
    sys.exit(main())
