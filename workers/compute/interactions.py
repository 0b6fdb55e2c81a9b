"""Interaction weighting and counting: one definition for every job and the evaluator."""
from __future__ import annotations

from dataclasses import dataclass
from datetime import date

import numpy as np
import pandas as pd

from shared.demographics import AGE_GROUP_STARTS, AGE_GROUPS


@dataclass(frozen=True)
class WeightConfig:
    """How much one interaction says, and how fast that fades.

    Two clocks: `half_life_days` for what is in demand now (popularity, neighbours'
    votes, profiles) and `taste_half_life_days` for who is like whom (similarities):
    trends pass in weeks, taste changes over months.
    """

    like_weight: float = 1.0
    click_weight: float = 0.3
    half_life_days: float = 20.0
    taste_half_life_days: float = 90.0

    @classmethod
    def from_settings(cls, settings):
        return cls(settings.like_weight, settings.click_weight, settings.decay_half_life_days,
                   settings.taste_half_life_days)


def weighted(inter: pd.DataFrame, cfg: WeightConfig, ref_ts: float | None = None) -> pd.DataFrame:
    """One row per (user_id, item_id): decayed `weight` and `taste_weight`, liked flag, last ts.

    A pair weighs as much as its strongest signal (max, not sum): a like plus three
    clicks, or a weekly repeat purchase, is one user's interest in one item, and
    summing would let a few heavy users make an item look popular.

    Decay is measured from `ref_ts` (default: the newest interaction), so a data set
    replayed later, or a train split, decays the same way.
    """
    if inter.empty:
        return pd.DataFrame({"user_id": [], "item_id": [], "weight": [], "taste_weight": [], "liked": [], "ts": []})
    ref = inter["ts"].max() if ref_ts is None else ref_ts
    is_like = (inter["type"] == "like").to_numpy()
    base = np.where(is_like, cfg.like_weight, cfg.click_weight)
    age_days = np.maximum(ref - inter["ts"].to_numpy(), 0) / 86400.0
    frame = pd.DataFrame(
        {
            "user_id": inter["user_id"].to_numpy(),
            "item_id": inter["item_id"].to_numpy(),
            "weight": base * np.power(0.5, age_days / cfg.half_life_days),
            "taste_weight": base * np.power(0.5, age_days / cfg.taste_half_life_days),
            "liked": is_like,
            "ts": inter["ts"].to_numpy(),
        }
    )
    return frame.groupby(["user_id", "item_id"], sort=False, as_index=False).agg(
        weight=("weight", "max"), taste_weight=("taste_weight", "max"), liked=("liked", "max"), ts=("ts", "max")
    )


def interaction_counts(pairs: pd.DataFrame) -> pd.Series:
    """interaction_count per user: the number of distinct public items liked or clicked.

    `pairs` is the output of weighted() (one row per user-item pair). The API picks the
    algorithm by this number: 0 popular, 1-2 content-based, 3+ collaborative.
    """
    return pairs.groupby("user_id").size().rename("interaction_count")


def age_groups(birth_dates: pd.Series, today: date | None = None) -> pd.Series:
    """Age group per birth date (None when unknown or under 18)."""
    today = today or date.today()
    born = pd.to_datetime(birth_dates, errors="coerce")
    age = today.year - born.dt.year - (
        (born.dt.month > today.month) | ((born.dt.month == today.month) & (born.dt.day > today.day))
    ).astype(float)
    groups = pd.cut(age, bins=[*AGE_GROUP_STARTS, np.inf], right=False, labels=list(AGE_GROUPS))
    return groups.astype(object).where(groups.notna(), None)


def demographics(users: pd.DataFrame, today: date | None = None) -> pd.DataFrame:
    """user_id, gender ('m'|'f'|None), age_group, geo_id from the users table (or an eval CSV)."""
    out = pd.DataFrame({"user_id": users["user_id"].to_numpy()})
    gender = users["gender"].astype(object) if "gender" in users else pd.Series([None] * len(users))
    out["gender"] = gender.where(gender.isin(["m", "f"]), None).to_numpy()
    if "age_group" in users:
        ag = users["age_group"].astype(object)
        out["age_group"] = ag.where(ag.isin(AGE_GROUPS), None).to_numpy()
    elif "birth_date" in users:
        out["age_group"] = age_groups(users["birth_date"], today).to_numpy()
    else:
        out["age_group"] = None
    geo = users["geo_id"] if "geo_id" in users else pd.Series([pd.NA] * len(users))
    out["geo_id"] = pd.array(geo, dtype="Int64")
    return out
