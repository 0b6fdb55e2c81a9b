"""Ranking, filtering, fill-in and pagination: the one implementation of serving.

The API runs it against the recommendations DB (shared.store.SqlSource); the offline
evaluator runs it against in-memory data built by the same worker compute functions.
Pure Python, no pandas: it runs on the request path.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace
from typing import NamedTuple, Protocol

from shared.demographics import ANY, ANY_GEO, fallback_chain

POPULAR = "popular"
CONTENT_BASED = "content_based"
COLLABORATIVE = "collaborative"
CONTENT_CATEGORIES = 3  # a profile's top categories used for content-based candidates
CONTENT_CANDIDATES = 40  # popular items per (segment, category) list scored for content-based
CONTENT_FLOOR = 0.5  # affinity of a category the user never touched (see content_based_scores)
COLLABORATIVE_POPULARITY = 2.0  # weight of segment popularity in the collaborative score
PRICE_SIGMA = 0.6  # width, in log-price, of a user's price comfort zone


@dataclass(frozen=True)
class Filters:
    price_from: float | None = None
    price_to: float | None = None
    category: str | None = None
    geo_id: int | None = None

    @property
    def empty(self) -> bool:
        return self.price_from is None and self.price_to is None and self.category is None and self.geo_id is None

    @property
    def geo_only(self) -> bool:
        return self.price_from is None and self.price_to is None and self.category is None

    def key(self) -> str:
        """Cache-key fragment: every field that changes the list, nothing else."""
        return f"{_num(self.price_from)}:{_num(self.price_to)}:{self.category or ANY}:{self.geo_id or ANY_GEO}"


def _num(v):
    return "" if v is None else repr(float(v))


class Item(NamedTuple):  # a tuple: built hundreds of times per cache miss
    item_id: int
    price: float | None
    category: str
    platform: str | None
    geo_id: int | None
    in_stock: bool


@dataclass(frozen=True)
class Profile:
    user_id: int
    interaction_count: int
    categories: dict = field(default_factory=dict)
    platforms: dict = field(default_factory=dict)
    avg_price: float | None = None
    liked: frozenset = frozenset()
    gender: str | None = None
    age_group: str | None = None
    geo_id: int | None = None


class Source(Protocol):
    def popular(self, segments: list[tuple], filters: Filters | None = None, limit: int | list | None = None,
                skip=()) -> dict[tuple, list[tuple[Item, float]]]:
        """Ranked (item, score) per requested segment; absent segments are left out.

        Every row returned passes allowed() with these filters and skip (ids not wanted):
        callers rely on it (Ranked.extend_checked). limit (rows wanted per segment after
        both; one number for all, or one per segment) is a hint a source may use to return
        fewer rows. The SQL source applies all three in the query, the in-memory ones with
        take() (shared.catalogue with its array form, Catalogue.select).
        """

    def profile(self, user_id: int) -> Profile | None: ...

    def collaborative(self, user_id: int) -> list[tuple[Item, float]]: ...

    # Optional: popular_scored(segment, filters, limit, skip) -> (ids, scores) of
    # popular([segment], filters, limit, skip)[segment] (see popular_scored below), for a
    # source that can give them without building Items (shared.catalogue.SnapshotSource);
    # popular_ids(segment, filters, limit, skip) -> those ids, for one that holds them
    # without the scores.


def popular_scored(source: Source, segment: tuple, filters: Filters, limit: int | None, skip) -> tuple[list, list]:
    """(ids, scores) of a segment's popular rows as source.popular reads them: all the
    popular fill-in and the collaborative blend need."""
    fast = getattr(source, "popular_scored", None)
    if fast is not None:
        return fast(segment, filters, limit, skip)
    rows = source.popular([segment], filters, limit, skip).get(segment, ())
    return [pair[0][0] for pair in rows], [pair[1] for pair in rows]  # Item.item_id, score


def popular_ids(source: Source, segment: tuple, filters: Filters, limit: int | None, skip) -> list:
    """The ids of popular_scored: all the popular fill-in needs."""
    fast = getattr(source, "popular_ids", None)
    if fast is not None:
        return fast(segment, filters, limit, skip)
    return popular_scored(source, segment, filters, limit, skip)[0]


def allowed(item: Item, filters: Filters, exclude) -> bool:
    if not item.in_stock or item.item_id in exclude:
        return False
    if item.price is not None:
        if filters.price_from is not None and item.price < filters.price_from:
            return False
        if filters.price_to is not None and item.price > filters.price_to:
            return False
    elif filters.price_from is not None or filters.price_to is not None:
        return False
    if filters.category is not None and item.category != filters.category:
        return False
    if filters.geo_id is not None and item.geo_id is not None and item.geo_id != filters.geo_id:
        return False
    return True


class Ranked:
    """An ordered, de-duplicated list of item ids, remembering which algorithm supplied each run."""

    def __init__(self, size: int, filters: Filters, exclude):
        self.size = size
        self.filters = filters
        self.exclude = exclude
        self.ids: list[int] = []
        self.sections: list[tuple[str, int]] = []  # (algorithm, index of its first item)
        self._seen: set[int] = set()

    @property
    def full(self) -> bool:
        return len(self.ids) >= self.size

    def extend(self, algorithm: str, candidates) -> None:
        ids, seen, filters, exclude = self.ids, self._seen, self.filters, self.exclude  # locals: a hot loop
        start = len(ids)
        room = self.size - start
        if filters.geo_only:  # allowed() with at most a geo filter, inlined: the precompute's case
            geo = filters.geo_id
            for item in candidates:
                if room <= 0:
                    break
                item_id = item[0]  # Item.item_id
                if item_id in seen or not item[5] or item_id in exclude:  # Item.in_stock
                    continue
                if geo is not None and item[4] is not None and item[4] != geo:  # Item.geo_id
                    continue
                seen.add(item_id)
                ids.append(item_id)
                room -= 1
        else:
            for item in candidates:
                if room <= 0:
                    break
                item_id = item[0]
                if item_id in seen or not allowed(item, filters, exclude):
                    continue
                seen.add(item_id)
                ids.append(item_id)
                room -= 1
        if len(ids) > start:
            self.sections.append((algorithm, start))

    def extend_checked(self, algorithm: str, candidate_ids) -> None:
        """extend() for ids known to pass this ranking's filters and exclusions (read from a
        Source with them): only de-duplicated, without a check per item."""
        room = self.size - len(self.ids)
        if room <= 0:
            return
        seen = self._seen
        new = [i for i in dict.fromkeys(candidate_ids) if i not in seen]
        if not new:
            return
        del new[room:]
        self.sections.append((algorithm, len(self.ids)))
        self.ids.extend(new)
        seen.update(new)


def segment_popular(ranked: Ranked, source: Source, segment: tuple) -> dict:
    """Each segment read down the fallback chain until one has items: {segment: (ids, scores)}, in order.

    Read as add_popular's `read` expects (the ranking's filters, its excluded ids
    skipped, ranked.size rows) while nothing is listed yet, so the fill-in can reuse it.
    """
    read = {}
    for seg in fallback_chain(*segment):
        read[seg] = popular_scored(source, seg, ranked.filters, ranked.size, ranked.exclude)
        if read[seg][0]:
            break
    return read


def add_popular(ranked: Ranked, source: Source, segment: tuple, read: dict | None = None) -> None:
    """Popular items for a segment, filling from broader segments down the fallback chain.

    One segment at a time: the exact segment usually fills the list on its own.
    `read` holds segment lists (ids, scores) the caller already has, each read with this
    ranking's filters, skipping only its excluded ids, with limit ranked.size. Such a list
    either fills the list (fewer than `size` of its items can be listed already) or
    is the whole segment, so reading it again would add nothing.
    """
    for seg in fallback_chain(*segment):
        if ranked.full:
            break
        rows = read.get(seg) if read else None
        if rows is not None:
            ranked.extend_checked(POPULAR, rows[0])
            if ranked.full or len(rows[0]) < ranked.size:
                continue
        # The ids left to add are among the segment's first `size` that pass (at most len(ids)
        # of those are listed already): extend_checked drops the listed ones, cheaper than a
        # set of excluded and listed ids made for each segment to skip them.
        ranked.extend_checked(POPULAR, popular_ids(source, seg, ranked.filters, ranked.size, ranked.exclude))


def _normalised(pairs) -> dict:
    top = max((score for _, score in pairs), default=0.0) or 1.0
    out = {}
    get = out.get
    for item, score in pairs:
        value = score / top
        prev = get(item[0])  # Item.item_id
        if value > (-1.0 if prev is None else prev[1]):  # an item can come from two lists
            out[item[0]] = (item, value)
    return out


def _ranked(scored: dict) -> list[Item]:
    # Score descending, then item id: plain tuples sort in C (ids are unique, items never compared).
    return [entry[2] for entry in sorted([(-score, item[0], item) for item, score in scored.values()])]


def content_based_scores(profile: Profile, candidates: list[tuple[Item, float]]) -> dict:
    """Popularity re-ranked by the profile: category and platform affinity, price comfort.

    CONTENT_FLOOR keeps popular items outside the user's few known categories in play:
    one or two interactions say little, and a hard category filter loses to plain popularity.
    """
    scored = {}
    category_weight, platform_weight = profile.categories.get, profile.platforms.get  # locals: a hot loop
    for item_id, (item, pop) in _normalised(candidates).items():
        score = pop * (CONTENT_FLOOR + category_weight(item[2], 0.0))  # Item.category
        score *= 0.5 + platform_weight(item[3], 0.0)  # Item.platform
        score *= price_affinity(profile, item[1])  # Item.price
        scored[item_id] = (item, score)
    return scored


def price_affinity(profile: Profile, price: float | None) -> float:
    """1.0 at the user's average price, falling off in log-price; 1.0 when either is unknown."""
    if profile.avg_price and price:
        return math.exp(-(math.log(price / profile.avg_price) ** 2) / (2 * PRICE_SIGMA**2))
    return 1.0


def content_segments(profile: Profile, segment: tuple) -> list[tuple]:
    """The segments whose popular lists are content-based candidates, the user's own first.

    The user's segment overall and per preferred category, and each category's global
    list so a thin segment does not starve the ranking.
    """
    geo, gender, age, category = segment
    if category != ANY:
        categories = [category]
    else:
        categories = sorted(profile.categories, key=lambda c: (-profile.categories[c], c))[:CONTENT_CATEGORIES]
    segments = [(geo, gender, age, category)]
    for cat in categories:
        chain = fallback_chain(geo, gender, age, cat)
        segments.extend(seg for seg in (chain[0], chain[-1]) if seg not in segments)
    return segments


def add_content_based(ranked: Ranked, source: Source, profile: Profile, segment: tuple) -> dict | None:
    """Popular candidates re-ranked by the profile; returns the user's segment list as read
    (see add_popular), if it was read whole.

    All candidates come in one read. The user's own segment is read to ranked.size rows
    (its top CONTENT_CANDIDATES are candidates) so that the popular fill-in can reuse it
    instead of reading it again; from a source with popular_scored, which re-reads from
    memory without building Items, only the candidates are read.
    """
    segments = content_segments(profile, segment)
    reuse = getattr(source, "popular_scored", None) is None
    limits = [ranked.size if reuse else CONTENT_CANDIDATES] + [CONTENT_CANDIDATES] * (len(segments) - 1)
    lists = source.popular(segments, ranked.filters, limits, ranked.exclude)
    own = lists.get(segments[0], [])
    candidates = own[:CONTENT_CANDIDATES] + [pair for seg in segments[1:] for pair in lists.get(seg, ())]
    ranked.extend_checked(CONTENT_BASED, [item[0] for item in _ranked(content_based_scores(profile, candidates))])
    return {segments[0]: ([pair[0][0] for pair in own], [pair[1] for pair in own])} if reuse else None


def add_collaborative(ranked: Ranked, source: Source, user_id: int, segment: tuple) -> dict | None:
    """Neighbours' likes (the precomputed list), blended with the user's segment popularity.

    score = collaborative / max + COLLABORATIVE_POPULARITY * popularity / max: the
    neighbours decide among items, the segment's taste breaks their many near-ties.
    Returns the segment lists read, for the popular fill-in (see add_popular).
    """
    scored = _normalised(source.collaborative(user_id))
    if not scored or not COLLABORATIVE_POPULARITY:
        ranked.extend(COLLABORATIVE, _ranked(scored))
        return None
    read = segment_popular(ranked, source, segment)
    ids, scores = next(reversed(read.values()))
    top = max(scores, default=0.0) or 1.0
    popularity = {item_id: score / top for item_id, score in zip(ids, scores)}  # a segment lists an item once
    blended = {item_id: value for item_id, (_, value) in scored.items()}
    get = blended.get
    for item_id, pop in popularity.items():
        prev = get(item_id)
        blended[item_id] = (0.0 if prev is None else prev) + COLLABORATIVE_POPULARITY * pop
    # Score descending, then item id. The segment's rows were read with the ranking's filters
    # and exclusions; the neighbours' other items are checked here.
    filters, exclude = ranked.filters, ranked.exclude
    order = sorted([(-score, item_id) for item_id, score in blended.items()])
    ranked.extend_checked(COLLABORATIVE, [item_id for _, item_id in order
                                          if item_id in popularity or allowed(scored[item_id][0], filters, exclude)])
    return read


def popular_list(source: Source, segment: tuple, filters: Filters, size: int, exclude=frozenset()) -> Ranked:
    ranked = Ranked(size, filters, exclude)
    add_popular(ranked, source, segment)
    return ranked


def algorithm_for(interaction_count: int) -> str:
    if interaction_count >= 3:
        return COLLABORATIVE
    if interaction_count >= 1:
        return CONTENT_BASED
    return POPULAR


def user_segment(profile: Profile | None, geo_id: int | None, filters: Filters) -> tuple:
    """The popular segment a user's list starts from: the request's geo, else the profile's."""
    geo = geo_id if geo_id is not None else (profile.geo_id if profile and profile.geo_id else ANY_GEO)
    return (geo, (profile.gender if profile else None) or ANY, (profile.age_group if profile else None) or ANY,
            filters.category or ANY)


def segments_needed(profile: Profile | None, geo_id: int | None, filters: Filters,
                    plan: str | None = None) -> list[tuple]:
    """Every segment list whose scores a request's answer may read (personalized_list of a
    user with history: the content-based candidates, the collaborative blend's segment), so
    a source can fetch them at once. The popular fill-in reads ids only (popular_ids), and
    so does the fill-in of filtered_answer as `plan` says."""
    if plan in (STORED, FILTERED) or profile is None:
        return []
    algorithm = algorithm_for(profile.interaction_count)
    segment = user_segment(profile, geo_id, filters)
    if algorithm == COLLABORATIVE:
        return fallback_chain(*segment)
    if algorithm == CONTENT_BASED:
        return content_segments(profile, segment)
    return []


def personalized_list(source: Source, user_id: int, geo_id: int | None, filters: Filters, size: int,
                      profile: Profile | None = None, exclude=frozenset()) -> tuple[Ranked, str]:
    """The user's full ranked list and the algorithm their history calls for.

    Collaborative (3+ interactions) or content-based (1-2) first, then popular for the
    user's segment fills what they left short. Liked items, and `exclude` (the live
    state's unavailable items), are always excluded.
    """
    profile = profile if profile is not None else source.profile(user_id)
    count = profile.interaction_count if profile else 0
    algorithm = algorithm_for(count)
    liked = profile.liked if profile else frozenset()
    ranked = Ranked(size, filters, liked | exclude if exclude else liked)
    segment = user_segment(profile, geo_id, filters)
    read = None
    if algorithm == COLLABORATIVE:
        read = add_collaborative(ranked, source, user_id, segment)
    elif algorithm == CONTENT_BASED:
        read = add_content_based(ranked, source, profile, segment)
    if not ranked.full:
        add_popular(ranked, source, segment, read)
    return ranked, algorithm


class PersonalList(NamedTuple):
    """A user's whole list as the workers precompute it (precompute_list)."""

    ids: list
    sections: list  # [(algorithm, index of its first item)]
    algorithm: str  # the user's primary algorithm
    geo_id: int | None  # the profile's geo: the list's segment and geo filter
    geo_safe: bool  # the geo filter removed nothing it read: a request without it gets the same list
    price_lo: float | None  # lowest and highest price of every item it read (None: it read an unpriced item)
    price_hi: float | None


class UserRow(NamedTuple):
    """What serving reads about a user on a miss (shared.store.USER_SQL, or its cached copy)."""

    profile: Profile | None  # without its preferences (categories, platforms, avg_price): see with_detail
    plist: PersonalList | None  # the precomputed list, if the workers stored one


class _ReadWatch:
    """The precompute's Source wrapper: what other requests would change in what a list read.

    geo_safe: no read would have returned an item tied to another geo without the geo
    filter (popular reads with a geo filter are first made without it, while that holds).
    price_lo/price_hi: the price range of every item the computation used.
    """

    def __init__(self, source: Source, geo: int | None):
        self.source, self.geo = source, geo
        self.geo_safe = True
        self.lo, self.hi, self.unpriced = math.inf, -math.inf, False

    def _note(self, pairs, check_geo: bool):
        prices = [pair[0][1] for pair in pairs]  # Item.price; builtins below: this runs for every read
        if None in prices:
            self.unpriced = True
            prices = [price for price in prices if price is not None]
        if prices:
            self.lo, self.hi = min(self.lo, min(prices)), max(self.hi, max(prices))
        if check_geo and self.geo_safe and self._foreign(pairs):
            self.geo_safe = False

    def _foreign(self, pairs) -> bool:
        geo = self.geo
        return any(pair[0][4] is not None and pair[0][4] != geo for pair in pairs)

    def popular(self, segments, filters=None, limit=None, skip=()):
        filters = filters or Filters()
        lists = None
        if filters.geo_id is not None and self.geo_safe:
            # Read without the geo filter: if no row it returns is tied to another geo, the
            # filtered read returns the same rows (and a request without the filter gets them).
            lists = self.source.popular(segments, replace(filters, geo_id=None), limit, skip)
            if any(self._foreign(pairs) for pairs in lists.values()):
                self.geo_safe = False
                lists = None
        if lists is None:
            lists = self.source.popular(segments, filters, limit, skip)
        for pairs in lists.values():
            self._note(pairs, False)
        return lists

    def profile(self, user_id):
        return self.source.profile(user_id)

    def collaborative(self, user_id):
        pairs = self.source.collaborative(user_id)  # all of it is ranked, whatever the filters
        self._note(pairs, True)
        return pairs


def precompute_list(source: Source, profile: Profile, size: int) -> PersonalList:
    """The list the workers store for a user: what /personalized serves a request with no
    price or category filter and the user's own geo (the Rails app sends it), i.e.
    personalized_list with the profile's geo as segment and geo filter (none without one).

    The reads are watched, so that serving knows which other requests get the same
    list (see precomputed_answers).
    """
    geo = profile.geo_id or None
    watch = _ReadWatch(source, geo)
    ranked, algorithm = personalized_list(watch, profile.user_id, geo, Filters(geo_id=geo), size, profile=profile)
    priced = not watch.unpriced and watch.lo <= watch.hi
    return PersonalList(ranked.ids, ranked.sections, algorithm, geo, geo is not None and watch.geo_safe,
                        watch.lo if priced else None, watch.hi if priced else None)


def precomputed_answers(plist: PersonalList, geo_id: int | None, filters: Filters) -> bool:
    """Whether a precomputed list is exactly what personalized_list gives this request.

    The request must have no category filter, use the list's segment (its geo is the
    user's own or none), have the list's geo filter (or none when that filter removed
    nothing the list read), and a price range that holds every item the list read.
    Every read then returns the same rows, so the computation is the same. The list
    must also fit the profile (fits_profile; answer_plan checks it first).
    """
    if filters.category is not None:
        return False
    own = plist.geo_id or ANY_GEO
    if (geo_id if geo_id is not None else own) != own:
        return False
    if not _same_geo_filter(plist, filters):
        return False
    if filters.price_from is not None and (plist.price_lo is None or filters.price_from > plist.price_lo):
        return False
    if filters.price_to is not None and (plist.price_hi is None or filters.price_to < plist.price_hi):
        return False
    return True


class Listed(NamedTuple):
    """A served list: ids and sections, as Ranked has them."""

    ids: list
    sections: list


STORED, FILTERED, COMPUTED = "stored", "filtered", "computed"  # answer_plan's answers


def fits_profile(plist: PersonalList, profile: Profile) -> bool:
    """Whether a precomputed list was built for the profile's current bucket and geo."""
    return plist.algorithm == algorithm_for(profile.interaction_count) and plist.geo_id == (profile.geo_id or None)


def _same_geo_filter(plist: PersonalList, filters: Filters) -> bool:
    """The request's geo filter is the list's, or none while the list's removed nothing it read (geo_safe)."""
    return filters.geo_id == plist.geo_id or (filters.geo_id is None and plist.geo_safe)


def narrows(plist: PersonalList, filters: Filters) -> bool:
    """Whether a request's filters only narrow what the precomputed list was built with, so
    that the list, filtered, is its personal part (filtered_answer): its geo filter is the
    list's (_same_geo_filter), or any one when the list has none (the user has no geo).
    Price and category filters always narrow.
    """
    return plist.geo_id is None or _same_geo_filter(plist, filters)


def filtered_answer(source: Source, plist: PersonalList, profile: Profile, geo_id: int | None, filters: Filters,
                    size: int, excluded) -> Ranked:
    """A filtered request answered from the precomputed list: its items that pass the
    filters and exclusions, in its order and sections, then popular items of the
    request's segment (user_segment: its geo and category) fill what is left.

    source.passing(ids, filters, skip) gives the ids that pass, without a read.
    """
    ranked = Ranked(size, filters, excluded)
    for name, run in section_runs(plist.ids, plist.sections):
        ranked.extend_checked(name, source.passing(run, filters, excluded))
    if not ranked.full:
        add_popular(ranked, source, user_segment(profile, geo_id, filters))
    return ranked


def answer_plan(plist: PersonalList | None, profile: Profile, geo_id: int | None, filters: Filters,
                can_filter: bool = True) -> str:
    """How personal_answer answers a request: STORED (the precomputed list as is),
    FILTERED (the list filtered, then popular fill-in; needs a source with passing())
    or COMPUTED (personalized_list)."""
    if plist is None or not fits_profile(plist, profile):
        return COMPUTED
    if precomputed_answers(plist, geo_id, filters):
        return STORED
    if can_filter and narrows(plist, filters):
        return FILTERED
    return COMPUTED


def personal_answer(source: Source, user_id: int, geo_id: int | None, filters: Filters, size: int,
                    profile: Profile, plist: PersonalList | None = None, exclude=frozenset(), plan: str | None = None):
    """(list, primary algorithm) for a /personalized request, as answer_plan says: the
    precomputed list (liked and excluded items dropped), the list filtered for the
    request (filtered_answer), else personalized_list on the source."""
    plan = plan or answer_plan(plist, profile, geo_id, filters, getattr(source, "passing", None) is not None)
    if plan == COMPUTED:
        return personalized_list(source, user_id, geo_id, filters, size, profile=profile, exclude=exclude)
    excluded = profile.liked | exclude if exclude else profile.liked
    if plan == STORED:
        ids, sections = without(plist.ids, plist.sections, excluded)
        return Listed(ids, sections), plist.algorithm
    return filtered_answer(source, plist, profile, geo_id, filters, size, excluded), plist.algorithm


def take(pairs, filters: Filters, limit: int | None, skip) -> list:
    """The first `limit` (item, score) pairs that pass the filters and are not skipped.

    What Source.popular returns per segment; in-memory sources use this.
    """
    out = []
    if limit is not None and limit <= 0:
        return out
    room = limit if limit is not None else -1
    if filters.geo_only:  # allowed() with at most a geo filter, inlined
        geo = filters.geo_id
        for pair in pairs:
            item = pair[0]
            if item[5] and item[0] not in skip and (geo is None or item[4] is None or item[4] == geo):
                out.append(pair)  # Item.in_stock, Item.item_id, Item.geo_id
                room -= 1
                if not room:
                    break
        return out
    for pair in pairs:
        if allowed(pair[0], filters, skip):
            out.append(pair)
            room -= 1
            if not room:
                break
    return out


def without(ids: list, sections: list, excluded) -> tuple[list, list]:
    """A ranked list (ids, sections) with some ids dropped, sections re-indexed.

    Live state (items unavailable since the list was cached, items the user just liked)
    applied to a list computed earlier, e.g. a cache hit.
    """
    if not excluded or excluded.isdisjoint(ids):
        return ids, sections
    kept, out_sections = [], []
    for name, run in section_runs(ids, sections):
        start = len(kept)
        kept.extend(i for i in run if i not in excluded)
        if len(kept) > start:
            out_sections.append((name, start))
    return kept, out_sections


def section_runs(ids: list, sections: list):
    """(algorithm, its ids) for each section of a ranked list, in order."""
    ends = [first for _, first in sections[1:]] + [len(ids)]
    for (name, first), end in zip(sections, ends):
        yield name, ids[first:end]


def algorithm_label(sections, total: int, start: int, stop: int, primary: str) -> str:
    """What served ids[start:stop]: the user's algorithm first, then any that filled in, e.g. collaborative+popular."""
    used = [primary]
    for i, (name, first) in enumerate(sections):
        end = sections[i + 1][1] if i + 1 < len(sections) else total
        if first < stop and end > start and name not in used:
            used.append(name)
    return "+".join(used)


def paginate(total: int, page: int, limit: int) -> dict:
    total_pages = math.ceil(total / limit) if total else 0
    return {
        "page": page,
        "limit": limit,
        "total_pages": total_pages,
        "has_next": page < total_pages,
        "has_previous": page > 1,
    }
