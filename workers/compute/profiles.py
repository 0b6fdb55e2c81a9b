"""User profiles: what content-based serving and the popular fallback need per user."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from workers.compute.interactions import interaction_counts


def _weights_json(pairs: pd.DataFrame, column: str) -> pd.Series:
    """{value: weight} per user, weights normalised to sum to 1, heaviest first."""
    sums = pairs.dropna(subset=[column]).groupby(["user_id", column], sort=False)["weight"].sum().reset_index()
    sums["share"] = sums["weight"] / sums.groupby("user_id")["weight"].transform("sum")
    sums = sums.sort_values(["user_id", "share", column], ascending=[True, False, True])
    # Build the JSON text with vectorised string ops: groupby.apply per user is ~50x slower.
    pair = (sums[column].astype(str).map(json.dumps) + ": " + sums["share"].round(4).astype(str)).to_numpy(object)
    # Each user's pairs are contiguous (sorted by user): one join per slice, without
    # the per-group Series that groupby.agg builds.
    users = sums["user_id"].to_numpy()
    starts = np.flatnonzero(np.r_[True, users[1:] != users[:-1]]) if len(users) else np.array([], np.int64)
    ends = np.r_[starts[1:], len(users)].astype(np.int64)
    texts = ["{" + ", ".join(pair[a:b]) + "}" for a, b in zip(starts.tolist(), ends.tolist())]
    return pd.Series(texts, index=pd.Index(users[starts], name="user_id"))


def compute_profiles(pairs: pd.DataFrame, users: pd.DataFrame, items: pd.DataFrame) -> pd.DataFrame:
    """One row per known user (and per user seen only in interactions).

    pairs: weighted() output; users: demographics(); items: catalogue (item_id,
    category, platform, price). Users without interactions get interaction_count 0
    and keep their demographics, which the popular fallback uses.
    """
    enriched = pairs.merge(items[["item_id", "category", "platform", "price"]], on="item_id", how="left")
    counts = interaction_counts(pairs)
    priced = enriched.dropna(subset=["price"])
    price = priced.groupby("user_id").agg(
        price_min=("price", "min"), price_max=("price", "max"), price_sum=("price", "sum"), n=("price", "size")
    )
    price["avg_price"] = (price["price_sum"] / price["n"]).round(2)
    liked = pairs[pairs["liked"]].sort_values(["user_id", "item_id"]).groupby("user_id")["item_id"].agg(list)
    prof = pd.DataFrame(index=pd.Index(np.union1d(users["user_id"].to_numpy(), counts.index.to_numpy()), name="user_id"))
    prof = prof.join(counts).join(price[["avg_price", "price_min", "price_max"]]).join(liked.rename("liked_item_ids"))
    prof["preferred_categories"] = _weights_json(enriched, "category")
    prof["preferred_platforms"] = _weights_json(enriched, "platform")
    prof = prof.join(users.set_index("user_id")[["gender", "age_group", "geo_id"]])
    prof["interaction_count"] = prof["interaction_count"].fillna(0).astype("int64")
    prof["preferred_categories"] = prof["preferred_categories"].fillna("{}")
    prof["preferred_platforms"] = prof["preferred_platforms"].fillna("{}")
    prof["liked_item_ids"] = prof["liked_item_ids"].apply(lambda v: v if isinstance(v, list) else [])
    return prof.reset_index()[
        ["user_id", "preferred_categories", "preferred_platforms", "avg_price", "price_min", "price_max",
         "interaction_count", "liked_item_ids", "gender", "age_group", "geo_id"]
    ]
