"""An in-memory serving Source over compute outputs, for the offline evaluator and tests.

It holds exactly what the recommendations DB would hold after a refresh, so
shared.serving runs unchanged on it.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from shared.serving import Filters, Item, Profile, allowed


def _none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v


class MemorySource:
    def __init__(self, items: pd.DataFrame, popular: pd.DataFrame, profiles: pd.DataFrame, recs: pd.DataFrame):
        self.items = {
            int(r.item_id): Item(int(r.item_id), _none(r.price), r.category, _none(r.platform),
                                 None if pd.isna(r.geo_id) else int(r.geo_id), bool(r.in_stock))
            for r in items.itertuples(index=False)
        }
        popular = popular.sort_values("popularity_score", ascending=False, kind="stable")
        self._popular = {
            key: (grp["item_id"].to_numpy(), grp["popularity_score"].to_numpy())
            for key, grp in popular.groupby(["geo_id", "gender", "age_group", "category"], sort=False)
        }
        self._popular_items: dict = {}
        self._profiles = profiles.set_index("user_id")
        self._recs = {int(r.user_id): (r.item_ids, r.scores) for r in recs.itertuples(index=False)}

    def popular(self, segments, filters=None, limit=None, skip=()):
        # The same rows the SQL source returns: filters and skip applied, then the limit,
        # so serving ranks exactly the candidates it would rank in the API.
        filters = filters or Filters()
        limits = list(limit) if isinstance(limit, (list, tuple)) else [limit] * len(segments)
        out = {}
        for seg, lim in zip(segments, limits):
            seg = (int(seg[0]), seg[1], seg[2], seg[3])
            if seg not in self._popular:
                continue
            if seg not in self._popular_items:
                ids, scores = self._popular[seg]
                self._popular_items[seg] = [(self.items[int(i)], float(s)) for i, s in zip(ids, scores)
                                            if int(i) in self.items]
            rows = [pair for pair in self._popular_items[seg] if allowed(pair[0], filters, skip)]
            out[seg] = rows if lim is None else rows[:lim]
        return out

    def profile(self, user_id):
        if user_id not in self._profiles.index:
            return None
        r = self._profiles.loc[user_id]
        cats = r["preferred_categories"]
        plats = r["preferred_platforms"]
        return Profile(
            int(user_id), int(r["interaction_count"]),
            json.loads(cats) if isinstance(cats, str) else dict(cats),
            json.loads(plats) if isinstance(plats, str) else dict(plats),
            _none(r["avg_price"]), frozenset(int(i) for i in r["liked_item_ids"]),
            _none(r["gender"]), _none(r["age_group"]), None if pd.isna(r["geo_id"]) else int(r["geo_id"]),
        )

    def collaborative(self, user_id):
        ids, scores = self._recs.get(user_id, ((), ()))
        return [(self.items[int(i)], float(s)) for i, s in zip(ids, scores) if int(i) in self.items]
