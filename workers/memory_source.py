"""An in-memory serving Source over compute outputs, for the offline evaluator, the
list precompute and tests.

It holds exactly what the recommendations DB would hold after a refresh, so
shared.serving runs unchanged on it.
"""
from __future__ import annotations

import json

import numpy as np
import pandas as pd

from shared.serving import Filters, Item, Profile, take


def _none(v):
    return None if v is None or (isinstance(v, float) and np.isnan(v)) or v is pd.NA else v


PROFILE_COLUMNS = ["user_id", "interaction_count", "preferred_categories", "preferred_platforms", "avg_price",
                   "liked_item_ids", "gender", "age_group", "geo_id"]


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
        # Raw rows, turned into a Profile on demand (a pandas row lookup per user is slow).
        self._profiles = {int(r[0]): r for r in profiles[PROFILE_COLUMNS].itertuples(index=False, name=None)}
        self._recs = {int(r.user_id): (r.item_ids, r.scores) for r in recs.itertuples(index=False)}

    def segment(self, seg) -> list:
        """A segment's (item, score) pairs in serving order; [] when it has none."""
        pairs = self._popular_items.get(seg)
        if pairs is None:
            found = self._popular.get(seg)
            if found is None:
                return []
            ids, scores = found
            items = self.items
            pairs = self._popular_items[seg] = [(items[i], s) for i, s in zip(ids.tolist(), scores.tolist())
                                                if i in items]
        return pairs

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
            out[seg] = take(self.segment(seg), filters, lim, skip)
        return out

    def profile(self, user_id):
        r = self._profiles.get(user_id)
        if r is None:
            return None
        _, count, cats, plats, avg_price, liked, gender, age_group, geo_id = r
        return Profile(
            int(user_id), int(count),
            json.loads(cats) if isinstance(cats, str) else dict(cats),
            json.loads(plats) if isinstance(plats, str) else dict(plats),
            _none(avg_price), frozenset(int(i) for i in liked),
            _none(gender), _none(age_group), None if pd.isna(geo_id) else int(geo_id),
        )

    def active_user_ids(self) -> list[int]:
        """Users with interactions: the ones with a precomputed list."""
        return [user_id for user_id, row in self._profiles.items() if row[1] > 0]

    def collaborative(self, user_id):
        ids, scores = self._recs.get(user_id, ((), ()))
        if isinstance(ids, str):  # as written to the DB ('{1,2}'): scores exactly as the API reads them back
            ids, scores = ids[1:-1].split(",") if len(ids) > 2 else (), scores[1:-1].split(",") if len(scores) > 2 else ()
        items = self.items
        return [(items[int(i)], float(s)) for i, s in zip(ids, scores) if int(i) in items]
