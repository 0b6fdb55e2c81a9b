"""shared.serving on an in-memory source: filters, exclusion, fill-in, labels, pagination."""
import pandas as pd
import pytest

from shared.demographics import fallback_chain
from shared.serving import (COLLABORATIVE, CONTENT_BASED, POPULAR, Filters, algorithm_label, paginate,
                            personalized_list, popular_list)
from workers.memory_source import MemorySource

ITEMS = pd.DataFrame(
    [
        (1, 100.0, "books", "ozon", None, True),
        (2, 200.0, "books", "ozon", None, True),
        (3, 300.0, "toys", "wildberries", None, True),
        (4, 400.0, "toys", "ozon", 2, True),       # geo 2 only
        (5, 500.0, "books", "ozon", None, False),  # out of stock
        (6, 600.0, "beauty", "lamoda", None, True),
        (7, 700.0, "books", "ozon", None, True),
    ],
    columns=["item_id", "price", "category", "platform", "geo_id", "in_stock"],
)


def popular_rows(segment, ids):
    return [(*segment, i, 1.0 / (rank + 1)) for rank, i in enumerate(ids)]


POPULAR_ROWS = pd.DataFrame(
    popular_rows((213, "f", "25-34", "any"), [2])
    + popular_rows((213, "f", "any", "any"), [3, 2])
    + popular_rows((213, "any", "any", "any"), [4, 1])
    + popular_rows((0, "any", "any", "any"), [1, 2, 3, 4, 5, 6, 7])
    + popular_rows((0, "any", "any", "books"), [1, 2, 5, 7])
    + popular_rows((213, "f", "25-34", "books"), [7]),
    columns=["geo_id", "gender", "age_group", "category", "item_id", "popularity_score"],
)

PROFILES = pd.DataFrame(
    [
        (10, '{"books": 1.0}', '{"ozon": 1.0}', 150.0, 2, [1], "f", "25-34", 213),
        (11, "{}", "{}", None, 4, [2], "f", "25-34", 213),
        (12, "{}", "{}", None, 0, [], "f", "25-34", 213),
    ],
    columns=["user_id", "preferred_categories", "preferred_platforms", "avg_price", "interaction_count",
             "liked_item_ids", "gender", "age_group", "geo_id"],
)
RECS = pd.DataFrame([(11, [3, 2, 5], [0.9, 0.8, 0.7])], columns=["user_id", "item_ids", "scores"])


@pytest.fixture
def source():
    return MemorySource(ITEMS, POPULAR_ROWS, PROFILES, RECS)


def test_fallback_chain_order():
    assert fallback_chain(213, "f", "25-34", "books") == [
        (213, "f", "25-34", "books"), (213, "f", "any", "books"), (213, "any", "any", "books"), (0, "any", "any", "books")]
    assert fallback_chain(0, "any", "any", "any") == [(0, "any", "any", "any")]


def test_popular_fills_down_the_chain_and_drops_out_of_stock_and_foreign_geo(source):
    ranked = popular_list(source, (213, "f", "25-34", "any"), Filters(geo_id=213), size=50)
    # exact [2], then without age [3], then without gender [4 is geo-2 only: dropped, 1], then global.
    assert ranked.ids == [2, 3, 1, 6, 7]
    assert 5 not in ranked.ids


def test_popular_price_filter_is_inclusive(source):
    ranked = popular_list(source, (0, "any", "any", "any"), Filters(price_from=200, price_to=400), size=50)
    assert ranked.ids == [2, 3, 4]


def test_popular_category_filter(source):
    ranked = popular_list(source, (0, "any", "any", "books"), Filters(category="books"), size=50)
    assert ranked.ids == [1, 2, 7]


def test_collaborative_user_excludes_likes_and_fills_honestly(source):
    ranked, algorithm = personalized_list(source, 11, 213, Filters(geo_id=213), size=5)
    assert algorithm == COLLABORATIVE
    assert 2 not in ranked.ids and 5 not in ranked.ids  # liked, out of stock
    assert ranked.ids[0] == 3
    assert algorithm_label(ranked.sections, len(ranked.ids), 0, 5, algorithm) == "collaborative+popular"
    assert algorithm_label(ranked.sections, len(ranked.ids), 0, 1, algorithm) == "collaborative"


def test_collaborative_fill_in_reads_each_segment_once(source):
    reads = []
    popular = source.popular

    def recording(segments, *args, **kwargs):
        reads.extend(segments)
        return popular(segments, *args, **kwargs)

    source.popular = recording
    ranked, algorithm = personalized_list(source, 11, 213, Filters(geo_id=213), size=10)
    assert algorithm == COLLABORATIVE
    # Neighbours' 3 (2 is liked, 5 out of stock); then popular down the chain: the exact
    # segment holds only the liked 2, without age 3 again, without gender 1 (4 is geo 2
    # only), then the global 6 and 7.
    assert ranked.ids == [3, 1, 6, 7]
    assert reads == fallback_chain(213, "f", "25-34", "any")  # the blend's reads are reused, none twice


def test_content_based_user_gets_preferred_category_near_their_price(source):
    ranked, algorithm = personalized_list(source, 10, 213, Filters(geo_id=213), size=3)
    assert algorithm == CONTENT_BASED
    assert 1 not in ranked.ids  # liked
    # Books only among content-based picks; 7 (700) is far from the user's 150 average, 2 (200) is near.
    content = ranked.ids[: ranked.sections[1][1]] if len(ranked.sections) > 1 else ranked.ids
    assert content[0] == 2 and set(content) <= {2, 7}


def test_zero_interaction_and_unknown_users_get_popular(source):
    known, algorithm = personalized_list(source, 12, 213, Filters(geo_id=213), size=3)
    assert algorithm == POPULAR and known.ids == [2, 3, 1]  # their demographics' segment first
    unknown, algorithm = personalized_list(source, 999, None, Filters(), size=3)
    assert algorithm == POPULAR and unknown.ids == [1, 2, 3]


@pytest.mark.parametrize("total,page,limit,expected", [
    (45, 1, 20, (3, True, False)), (45, 3, 20, (3, False, True)), (40, 2, 20, (2, False, True)),
    (0, 1, 20, (0, False, False)), (45, 9, 20, (3, False, True)),
])
def test_paginate(total, page, limit, expected):
    meta = paginate(total, page, limit)
    assert (meta["total_pages"], meta["has_next"], meta["has_previous"]) == expected


def test_collaborative_score_blends_neighbours_with_segment_popularity(monkeypatch):
    import shared.serving
    from shared.serving import Item, Profile, Ranked, add_collaborative

    monkeypatch.setattr(shared.serving, "COLLABORATIVE_POPULARITY", 1.0)

    a, b, c = (Item(i, 100.0, "books", "ozon", None, True) for i in (1, 2, 3))

    class Source:
        def collaborative(self, user_id):
            return [(a, 1.0), (b, 0.5)]  # neighbours: a first

        def popular(self, segments, filters=None, limit=None, skip=()):
            return {segments[0]: [(b, 1.0), (c, 0.9)]}  # the segment prefers b

        def profile(self, user_id):
            return Profile(user_id, 5)

    ranked = Ranked(10, Filters(), frozenset())
    add_collaborative(ranked, Source(), 5, (213, "f", "any", "any"))
    # b: 0.5 + 1.0 = 1.5; a: 1.0; c: 0.9. Only neighbours' items would give [a, b].
    assert ranked.ids == [2, 1, 3]
    assert ranked.sections == [("collaborative", 0)]


def test_content_based_keeps_popular_items_of_other_categories_in_play():
    from shared.serving import Item, Profile, content_based_scores

    book = Item(1, 100.0, "books", "ozon", None, True)
    toy = Item(2, 100.0, "toys", "ozon", None, True)
    rare_book = Item(3, 100.0, "books", "ozon", None, True)
    profile = Profile(9, 1, {"books": 1.0}, {"ozon": 1.0}, 100.0)
    scores = content_based_scores(profile, [(toy, 1.0), (book, 0.5), (rare_book, 0.1)])
    # book 0.5 * (0.5 + 1) = 0.75 > toy 1.0 * 0.5 = 0.5 > rare book 0.1 * 1.5 = 0.15
    order = [item.item_id for item, _ in sorted(scores.values(), key=lambda p: -p[1])]
    assert order == [1, 2, 3]
