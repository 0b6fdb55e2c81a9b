"""Why a user gets what they get: the dashboard's user preview, read-only.

The list comes from shared.serving.personalized_list run against the API's own Source,
so it is the list /personalized serves (no filters, before paging). Each item is then
annotated from the data the algorithms used, never by re-scoring it another way: the
neighbours' likes (user_similarities and their profiles), the profile's category and
platform weights and serving.price_affinity (the content-based factors), the
collaborative list's score, and the first segment down the fallback chain that lists
the item (popular).
"""
from __future__ import annotations

from shared import store
from shared.demographics import fallback_chain
from shared.serving import COLLABORATIVE, Filters, Profile, personalized_list, price_affinity, user_segment

MAX_NEIGHBOURS_SHOWN = 20


def _section_of(sections, index: int) -> str:
    name = sections[0][0] if sections else ""
    for algorithm, first in sections:
        if first <= index:
            name = algorithm
    return name


def preview(source, run, user_id: int, size: int, limit: int = 20) -> dict:
    """source: a serving Source (shared.store.SqlSource); run(fn(cursor)) reads the recommendations DB."""
    profile = source.profile(user_id)
    known = profile is not None
    profile = profile if known else Profile(user_id, 0)
    filters = Filters()
    ranked, algorithm = personalized_list(source, user_id, None, filters, size, profile=profile)
    ids = ranked.ids[:limit]
    segment = user_segment(profile, None, filters)

    neighbours = run(lambda cur: store.neighbours(cur, user_id))
    liked = run(lambda cur: store.liked_items(cur, [uid for uid, _ in neighbours])) if neighbours else {}
    details = run(lambda cur: store.item_details(cur, ids)) if ids else {}
    chain = fallback_chain(*segment)
    lists = source.popular(chain, filters, size)
    popular_rank = {}
    for seg in chain:  # the first (narrowest) segment listing an item is where it came from
        for rank, (item, _) in enumerate(lists.get(seg, ()), 1):
            popular_rank.setdefault(item.item_id, (seg, rank))
    collab = {}
    if algorithm == COLLABORATIVE:
        pairs = source.collaborative(user_id)
        top = max((score for _, score in pairs), default=0.0) or 1.0
        collab = {item.item_id: score / top for item, score in pairs}

    items = []
    for index, item_id in enumerate(ids):
        d = details.get(item_id, {"item_id": item_id})
        liked_by = [{"user_id": uid, "similarity": round(sim, 4)} for uid, sim in neighbours
                    if item_id in liked.get(uid, ())]
        why = {
            "source": _section_of(ranked.sections, index),
            "liked_by_neighbours": liked_by,
            "category_weight": round(profile.categories.get(d.get("category"), 0.0), 4),
            "platform_weight": round(profile.platforms.get(d.get("platform"), 0.0), 4),
            "price_match": round(price_affinity(profile, d.get("price")), 4) if profile.avg_price else None,
        }
        if item_id in collab:
            why["collaborative_score"] = round(collab[item_id], 4)
        if item_id in popular_rank:
            seg, rank = popular_rank[item_id]
            why["popular_in"] = {"segment": _segment_dict(seg), "rank": rank}
        items.append({"rank": index + 1, "item_id": item_id, "title": d.get("title"), "price": d.get("price"),
                      "category": d.get("category"), "platform": d.get("platform"), "why": why})

    return {
        "user_id": user_id,
        "known": known,
        "interaction_count": profile.interaction_count,
        "bucket": {"interactions": _interaction_bucket(profile.interaction_count), **_segment_dict(segment)},
        "algorithm": algorithm,
        "sections": [{"algorithm": name, "first_rank": first + 1} for name, first in ranked.sections],
        "profile": {
            "categories": dict(sorted(profile.categories.items(), key=lambda kv: -kv[1])),
            "platforms": dict(sorted(profile.platforms.items(), key=lambda kv: -kv[1])),
            "avg_price": profile.avg_price,
            "liked_count": len(profile.liked),
            "gender": profile.gender,
            "age_group": profile.age_group,
            "geo_id": profile.geo_id,
        },
        "neighbours": [{"user_id": uid, "similarity": round(sim, 4),
                        "liked_in_list": sum(1 for i in ids if i in liked.get(uid, ()))}
                       for uid, sim in neighbours[:MAX_NEIGHBOURS_SHOWN]],
        "neighbour_count": len(neighbours),
        "items": items,
        "list_size": len(ranked.ids),
    }


def _interaction_bucket(count: int) -> str:
    return "3+" if count >= 3 else ("1-2" if count >= 1 else "0")


def _segment_dict(seg: tuple) -> dict:
    geo, gender, age, category = seg
    return {"geo_id": geo, "gender": gender, "age_group": age, "category": category}
