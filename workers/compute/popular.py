"""Popular items per segment (geo x gender x age group x category), with roll-ups.

Popularity in a segment is the time-decayed weight of the item among users of that
segment, smoothed toward the parent segment (Bayesian shrinkage):

    score(i) = (w_seg(i) + m * score_parent(i)) / (W_seg + m)

so a thin segment looks like its parent and a well-populated one speaks for itself.
Parents follow the serving fallback chain: drop age, then gender, then geo.
Items tagged for another gender or age, items sold only in another geo, and
out-of-stock items never enter a segment's list.
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from shared.demographics import ANY, ANY_GEO

DIMS = ("geo_id", "gender", "age_group")
# (keep geo, keep gender, keep age), parents before children.
LEVELS = [
    (False, False, False),
    (True, False, False),
    (False, True, False),
    (False, False, True),
    (True, True, False),
    (True, False, True),
    (False, True, True),
    (True, True, True),
]


def parent_level(level):
    geo, gender, age = level
    if age:
        return (geo, gender, False)
    if gender:
        return (geo, False, False)
    if geo:
        return (False, False, False)
    return None


def _segment_frame(events: pd.DataFrame, level) -> pd.DataFrame:
    """Sum of weights per (segment, item) at one level; unknown demographics only count in 'any'."""
    keep_geo, keep_gender, keep_age = level
    df = events
    mask = np.ones(len(df), dtype=bool)
    if keep_geo:
        mask &= df["geo_id"].notna().to_numpy()
    if keep_gender:
        mask &= df["gender"].notna().to_numpy()
    if keep_age:
        mask &= df["age_group"].notna().to_numpy()
    df = df[mask]
    keys = pd.DataFrame(
        {
            "geo_id": df["geo_id"].astype("int64") if keep_geo else ANY_GEO,
            "gender": df["gender"] if keep_gender else ANY,
            "age_group": df["age_group"] if keep_age else ANY,
            "item_id": df["item_id"],
            "w": df["weight"],
        },
        index=df.index,
    )
    return keys.groupby(list(DIMS) + ["item_id"], as_index=False, sort=False)["w"].sum()


def _allowed(frame: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """Drop rows whose item may not be shown in that segment."""
    f = frame.merge(items, on="item_id", how="inner")
    ok = f["in_stock"].to_numpy().copy()
    tg, ta = f["target_gender"], f["target_age"]
    ok &= (f["gender"] == ANY).to_numpy() | tg.isna().to_numpy() | (tg == f["gender"]).fillna(False).to_numpy()
    ok &= (f["age_group"] == ANY).to_numpy() | ta.isna().to_numpy() | (ta == f["age_group"]).fillna(False).to_numpy()
    geo = f["item_geo"]
    ok &= (f["geo_id"] == ANY_GEO).to_numpy() | geo.isna().to_numpy() | (geo == f["geo_id"]).fillna(False).to_numpy()
    return f[ok]


def _top(frame: pd.DataFrame, top_n: int) -> pd.DataFrame:
    """Top N per segment over all categories ('any') and top N per category."""
    frame = frame[frame["score"] > 0].sort_values(list(DIMS) + ["score", "item_id"], ascending=[True, True, True, False, True])
    by_seg = frame.groupby(list(DIMS), sort=False).cumcount() < top_n
    overall = frame[by_seg].assign(category=ANY)
    by_cat = frame.groupby(list(DIMS) + ["category"], sort=False).cumcount() < top_n
    per_cat = frame[by_cat]
    cols = list(DIMS) + ["category", "item_id", "score"]
    return pd.concat([overall[cols], per_cat[cols]], ignore_index=True)


def compute_popular(
    pairs: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame, top_n: int = 200, prior: float = 20.0
) -> pd.DataFrame:
    """Rows for popular_items: geo_id, gender, age_group, category, item_id, popularity_score.

    pairs: weighted() output (user_id, item_id, weight); users: demographics();
    items: catalogue with item_id, category, geo_id, in_stock, target_gender, target_age.
    """
    cat = items[["item_id", "category", "geo_id", "in_stock", "target_gender", "target_age"]].rename(
        columns={"geo_id": "item_geo"}
    )
    events = pairs[["user_id", "item_id", "weight"]].merge(users, on="user_id", how="left")
    done: dict[tuple, pd.DataFrame] = {}
    out = []
    for level in LEVELS:
        seg = _segment_frame(events, level)
        if seg.empty:
            continue
        total = seg.groupby(list(DIMS), sort=False)["w"].transform("sum")
        seg = seg.assign(W=total)
        parent = parent_level(level)
        if parent is None or parent not in done:
            seg["score"] = seg["w"] / seg["W"]
        else:
            seg = _smooth(seg, level, parent, done[parent], prior)
        ranked = _top(_allowed(seg, cat), top_n)
        done[level] = ranked
        out.append(ranked)
    if not out:
        return pd.DataFrame(columns=list(DIMS) + ["category", "item_id", "popularity_score"])
    result = pd.concat(out, ignore_index=True).drop_duplicates(list(DIMS) + ["category", "item_id"])
    # Row order = serving order, so each list is contiguous on disk once loaded.
    result = result.sort_values(list(DIMS) + ["category", "score", "item_id"],
                                ascending=[True, True, True, True, False, True], kind="stable")
    return result.rename(columns={"score": "popularity_score"})[
        ["geo_id", "gender", "age_group", "category", "item_id", "popularity_score"]
    ]


def _smooth(seg: pd.DataFrame, level, parent, parent_rows: pd.DataFrame, prior: float) -> pd.DataFrame:
    """Blend each segment with its parent; the parent's listed items become candidates too."""
    keys = seg[list(DIMS) + ["W"]].drop_duplicates(list(DIMS))
    pkeys = keys.copy()
    if not parent[0]:
        pkeys["geo_id"] = ANY_GEO
    if not parent[1]:
        pkeys["gender"] = ANY
    if not parent[2]:
        pkeys["age_group"] = ANY
    pkeys = pkeys.rename(columns={d: f"p_{d}" for d in DIMS})
    pkeys[list(DIMS)] = keys[list(DIMS)].to_numpy()
    # Parent score per item, the best over its lists (an item is in 'any' and in its category).
    pscore = parent_rows.groupby(list(DIMS) + ["item_id"], as_index=False, sort=False)["score"].max()
    pscore = pscore.rename(columns={d: f"p_{d}" for d in DIMS}).rename(columns={"score": "p"})
    cand = pkeys.merge(pscore, on=[f"p_{d}" for d in DIMS], how="inner")[list(DIMS) + ["W", "item_id", "p"]]
    merged = seg.merge(cand, on=list(DIMS) + ["item_id"], how="outer", suffixes=("", "_c"))
    merged["W"] = merged["W"].fillna(merged["W_c"])
    merged["w"] = merged["w"].fillna(0.0)
    merged["p"] = merged["p"].fillna(0.0)
    merged["score"] = (merged["w"] + prior * merged["p"]) / (merged["W"] + prior)
    return merged[list(DIMS) + ["item_id", "w", "W", "score"]]
