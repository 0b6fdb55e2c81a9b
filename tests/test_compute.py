"""The compute functions on small hand-built data whose right answers are known exactly."""
import json

import numpy as np
import pandas as pd
import pytest

from workers.compute.interactions import WeightConfig, demographics, interaction_counts, weighted
from workers.compute.popular import compute_popular
from workers.compute.profiles import compute_profiles
from workers.compute.similarities import SimilarityConfig, compute_similarities

DAY = 86400.0
NOW = 1_800_000_000.0


def inter(rows):
    return pd.DataFrame(rows, columns=["user_id", "item_id", "ts", "type"])


def items_frame(rows):
    df = pd.DataFrame(rows, columns=["item_id", "category", "platform", "price", "geo_id", "in_stock",
                                     "target_gender", "target_age"])
    df["geo_id"] = df["geo_id"].astype("Int64")
    return df


def users_frame(rows):
    return demographics(pd.DataFrame(rows, columns=["user_id", "gender", "age_group", "geo_id"]))


def test_weighted_decays_and_weights_likes_above_clicks():
    pairs = weighted(inter([(1, 10, NOW, "like"), (1, 11, NOW, "click"), (1, 12, NOW - 60 * DAY, "like")]),
                     WeightConfig(like_weight=1.0, click_weight=0.25, half_life_days=60))
    w = dict(zip(pairs["item_id"], pairs["weight"]))
    assert w[10] == pytest.approx(1.0)
    assert w[11] == pytest.approx(0.25)
    assert w[12] == pytest.approx(0.5)  # one half-life old
    assert dict(zip(pairs["item_id"], pairs["liked"])) == {10: True, 11: False, 12: True}


def test_pair_weighs_its_strongest_signal_on_two_clocks():
    # A like plus repeated clicks on one item is one interest: the like's weight, not a sum.
    pairs = weighted(inter([(1, 10, NOW, "like"), (1, 10, NOW, "click"), (1, 10, NOW - DAY, "click"),
                            (2, 10, NOW - 40 * DAY, "like"), (2, 11, NOW, "click")]),
                     WeightConfig(like_weight=1.0, click_weight=0.3, half_life_days=20, taste_half_life_days=40))
    w = {(u, i): (a, b) for u, i, a, b in zip(pairs["user_id"], pairs["item_id"], pairs["weight"], pairs["taste_weight"])}
    assert w[(1, 10)] == pytest.approx((1.0, 1.0))
    assert w[(2, 10)] == pytest.approx((0.25, 0.5))  # two half-lives on the demand clock, one on the taste clock
    assert w[(2, 11)] == pytest.approx((0.3, 0.3))


def test_interaction_count_is_distinct_items_liked_or_clicked():
    pairs = weighted(inter([(1, 10, NOW, "like"), (1, 10, NOW, "click"), (1, 10, NOW, "click"), (1, 11, NOW, "click"),
                            (2, 10, NOW, "click")]), WeightConfig())
    assert interaction_counts(pairs).to_dict() == {1: 2, 2: 1}


CATALOG = items_frame([
    (1, "books", "ozon", 500.0, None, True, None, None),
    (2, "books", "ozon", 900.0, None, True, None, None),
    (3, "beauty", "wildberries", 1500.0, None, True, "f", None),
    (4, "books", "ozon", 700.0, None, False, None, None),     # out of stock
    (5, "electronics", "ozon", 9000.0, 2, True, None, None),  # sold only in geo 2
    (6, "electronics", "ozon", 8000.0, None, True, None, "55+"),
])


def test_popular_order_per_segment_and_tags():
    users = users_frame([(1, "f", "25-34", 213), (2, "f", "25-34", 213), (3, "m", "25-34", 213), (4, "m", "55+", 2)])
    events = inter([
        (1, 3, NOW, "like"), (2, 3, NOW, "like"), (1, 1, NOW, "like"),
        (3, 2, NOW, "like"), (3, 1, NOW, "click"), (3, 3, NOW, "like"),
        (4, 5, NOW, "like"), (4, 6, NOW, "like"), (1, 4, NOW, "like"), (2, 4, NOW, "like"),
    ])
    pop = compute_popular(weighted(events, WeightConfig(click_weight=0.3)), users, CATALOG, top_n=10, prior=0.0)

    def seg(geo, gender, age, cat="any"):
        rows = pop[(pop.geo_id == geo) & (pop.gender == gender) & (pop.age_group == age) & (pop.category == cat)]
        return rows.sort_values("popularity_score", ascending=False)["item_id"].tolist()

    # Women 25-34 in Moscow: item 3 liked twice, item 1 once.
    assert seg(213, "f", "25-34")[:2] == [3, 1]
    # Men: item 3 is tagged for women and never appears, though a man liked it.
    assert 3 not in seg(213, "m", "25-34")
    assert seg(213, "m", "25-34")[0] == 2
    # Out-of-stock item 4 never appears anywhere, though liked twice.
    assert 4 not in set(pop["item_id"])
    # Item 6 is tagged 55+: not in the 25-34 segments; item 5 is geo-2 only: not in geo 213.
    assert 6 not in seg(213, "f", "25-34") and 6 in seg(2, "m", "55+")
    assert 5 not in seg(213, "any", "any") and 5 in seg(2, "any", "any")
    # Per-category lists hold only that category.
    assert set(seg(0, "any", "any", "books")) == {1, 2}
    # Global: item 3 (3 likes) first.
    assert seg(0, "any", "any")[0] == 3


def test_popular_smoothing_pulls_thin_segment_toward_parent():
    users = users_frame([(1, "f", "25-34", 213)] + [(i, "m", "35-44", 213) for i in range(2, 12)])
    events = inter([(1, 2, NOW, "like")] + [(i, 1, NOW, "like") for i in range(2, 12)])
    pairs = weighted(events, WeightConfig())
    raw = compute_popular(pairs, users, CATALOG, top_n=10, prior=0.0)
    smooth = compute_popular(pairs, users, CATALOG, top_n=10, prior=50.0)

    def order(df):
        rows = df[(df.geo_id == 213) & (df.gender == "f") & (df.age_group == "25-34") & (df.category == "any")]
        return rows.sort_values("popularity_score", ascending=False)["item_id"].tolist()

    # One woman liked item 2: alone she makes it #1 and item 1 absent ...
    assert order(raw) == [2]
    # ... with a strong prior, the segment leans on its parent (everyone in geo 213), where item 1 dominates.
    assert order(smooth)[0] == 1 and 2 in order(smooth)


def test_profile_weights_prices_and_likes():
    users = users_frame([(1, "f", "25-34", 213), (2, None, None, None)])
    events = inter([(1, 1, NOW, "like"), (1, 2, NOW, "like"), (1, 3, NOW, "like"), (1, 3, NOW, "click")])
    prof = compute_profiles(weighted(events, WeightConfig(like_weight=1.0, click_weight=1.0)), users, CATALOG)
    p1 = prof.set_index("user_id").loc[1]
    # Weights: books 1+1 (two items), beauty 1 (one item: its like and click are one interest).
    assert json.loads(p1["preferred_categories"]) == {"books": 0.6667, "beauty": 0.3333}
    assert json.loads(p1["preferred_platforms"]) == {"ozon": 0.6667, "wildberries": 0.3333}
    assert p1["interaction_count"] == 3
    assert p1["avg_price"] == pytest.approx((500 + 900 + 1500) / 3, abs=0.01)
    assert (p1["price_min"], p1["price_max"]) == (500.0, 1500.0)
    assert p1["liked_item_ids"] == [1, 2, 3]
    p2 = prof.set_index("user_id").loc[2]
    assert p2["interaction_count"] == 0 and p2["preferred_categories"] == "{}"


def _sim_data():
    # Users 1 and 2 share items 1-3; user 3 shares one item with 1; user 4 likes items 1,2,3,7.
    rows = [(1, i, NOW, "like") for i in (1, 2, 3)] + [(2, i, NOW, "like") for i in (1, 2, 3, 6)]
    rows += [(3, i, NOW, "like") for i in (3, 4, 5)] + [(4, i, NOW, "like") for i in (1, 2, 3, 4)]
    return weighted(inter(rows), WeightConfig())


def test_top_neighbour_no_self_pairs_and_liked_excluded():
    sims, recs = compute_similarities(_sim_data(), in_stock_items=[1, 2, 3, 4, 5, 6], cfg=SimilarityConfig(k=2, idf=False))
    assert not (sims["user_id"] == sims["similar_user_id"]).any()
    top = sims.sort_values("similarity_score", ascending=False).groupby("user_id").first()["similar_user_id"]
    # cos(1,2) = 3/sqrt(3*4) = 0.866 = cos(1,4); user 3 shares one item: never the top.
    assert top[1] in (2, 4)
    s12 = sims[(sims.user_id == 1) & (sims.similar_user_id == 2)]["similarity_score"].iloc[0]
    assert s12 == pytest.approx(3 / np.sqrt(12), abs=1e-5)
    assert top[3] == 4  # user 3 shares item 3 and 4 with user 4
    r1 = recs.set_index("user_id").loc[1]
    assert set(r1["item_ids"]) == {4, 6}  # neighbours' items, never 1-3 which user 1 liked
    assert 1 not in recs.set_index("user_id").loc[2]["item_ids"]


def test_neighbours_are_chosen_on_the_taste_clock_and_vote_on_the_demand_clock():
    # User 2 shared user 1's taste 200 days ago and likes item 7 now; user 3 shares one item now.
    rows = [(1, i, NOW, "like") for i in (1, 2, 3)]
    rows += [(2, 1, NOW - 200 * DAY, "like"), (2, 2, NOW - 200 * DAY, "like"), (2, 7, NOW, "like")]
    rows += [(3, 3, NOW, "like"), (3, 8, NOW, "like")]

    def top_neighbour_and_list(taste_days):
        pairs = weighted(inter(rows), WeightConfig(half_life_days=20, taste_half_life_days=taste_days))
        sims, recs = compute_similarities(pairs, in_stock_items=range(1, 10), cfg=SimilarityConfig(k=1))
        user1 = recs.set_index("user_id").loc[1]
        return sims.set_index("user_id").loc[1, "similar_user_id"], list(user1["item_ids"])

    assert top_neighbour_and_list(taste_days=365) == (2, [7])  # lasting taste wins; it votes for what is fresh
    assert top_neighbour_and_list(taste_days=20) == (3, [8])  # on one fast clock, the old co-likes have faded


def test_out_of_stock_items_never_in_collaborative_lists_and_shards_cover_all():
    pairs = _sim_data()
    _, recs = compute_similarities(pairs, in_stock_items=[1, 2, 3, 5, 6], cfg=SimilarityConfig(k=3))
    assert all(4 not in ids for ids in recs["item_ids"])
    whole, _ = compute_similarities(pairs, [1, 2, 3, 4, 5, 6], SimilarityConfig(k=3))
    parts = pd.concat([compute_similarities(pairs, [1, 2, 3, 4, 5, 6], SimilarityConfig(k=3), s, 3)[0]
                       for s in range(3)])
    key = ["user_id", "similar_user_id"]
    assert whole.sort_values(key)[key].values.tolist() == parts.sort_values(key)[key].values.tolist()
    assert whole["user_id"].nunique() == 4
