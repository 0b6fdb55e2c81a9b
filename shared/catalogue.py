"""The API's in-process catalogue snapshot and the serving Source it answers misses with.

Catalogue holds each item's filterable attributes (price, category, platform, geo,
in stock) in compact arrays indexed by item id: 13 bytes an item (17 when a price is not
exact in float32), so 100k items cost ~1.3 MB in a web worker, where Python objects
would cost ~30 MB. Private items never reach the items table. With them it holds the
item ids of every popular segment list (popular_lists), in one array: 4 bytes an id,
~6.3 MB for large's 7,956 lists of 200. Each process reloads both, in one database
snapshot, when the popular generation changes (the popular refresh swaps items and
popular lists together, then bumps it).

SnapshotSource is shared.serving's Source for one request: popular lists come from
popular_lists, the ids looked up in the catalogue, filtered, skipped and cut here in
memory. The popular fill-in (ids only: serving.popular_ids) reads nothing. Only a
computed content-based or collaborative answer needs segments' scores: those it may
need are fetched in one query (segments_needed), and recently used ones stay in a
small per-process LRU.
"""
from __future__ import annotations

import math
import threading
from array import array
from collections import OrderedDict
from typing import NamedTuple

from shared.serving import Filters, Item, Profile
from shared.store import binary_array

# Catalogue rows read per query while loading: a page is all that is ever held as objects.
# Their pymalloc arenas stay with the process after the load (other objects land in them),
# so the page size is RSS for good: ~1.1 MB at 2,000 rows, ~0.3 MB at 500; 100k items load
# in ~0.09 s either way.
PAGE_ROWS = 500
# Segment lists with their scores kept per process: ~2.5 KB each at 200 items, so
# ~1.3 MB of the web worker's RSS. Only computed content-based and collaborative answers
# read them (most misses are answered from the precomputed list, and fill in with ids).
SEGMENT_CACHE = 512
DENSE_SLACK = 4  # ids up to this many times the item count are indexed directly; sparser ids use a dict

ITEMS_PAGE_SQL = ("SELECT item_id, price, category, platform, geo_id, in_stock FROM items "
                  "WHERE item_id > %s ORDER BY item_id LIMIT %s")
# Segment lists' ids, a page at a time along the primary key (binary: see store.SEGMENTS_SQL).
SEGMENT_KEY = "geo_id, gender, age_group, category"
SEGMENTS_FIRST_SQL = f"SELECT {SEGMENT_KEY}, array_send(item_ids) FROM popular_lists ORDER BY {SEGMENT_KEY} LIMIT %s"
SEGMENTS_PAGE_SQL = (f"SELECT {SEGMENT_KEY}, array_send(item_ids) FROM popular_lists "
                     f"WHERE ({SEGMENT_KEY}) > (%s, %s, %s, %s) ORDER BY {SEGMENT_KEY} LIMIT %s")


class Summary(NamedTuple):
    """What every id of a ranked list has (Catalogue.summarise): when a request's filters
    hold all of it, the whole list passes them without a look at each id."""

    in_stock: bool  # every id is in the catalogue and in stock
    price_lo: float | None  # lowest and highest price (None: an id has no price)
    price_hi: float | None
    categories: frozenset  # category codes
    geos: frozenset  # geo ids, 0 (none) left out


class Catalogue:
    """Item attributes by item id, in arrays; item(id) rebuilds the serving Item."""

    def __init__(self, count: int, top_id: int, generation=None):
        self.generation = generation
        self.count = count
        self._dense = top_id <= DENSE_SLACK * count + 65536
        size = (top_id + 1 if self._dense else count) + 1  # the last position is never set: "not here"
        self._index = None if self._dense else {}
        # float32 while every price is one exactly (whole roubles are): 4 bytes an item, not 8.
        self._price = array("f", bytes(4 * size))
        self._category = array("H", bytes(2 * size))
        self._platform = array("H", bytes(2 * size))
        self._geo = array("i", bytes(4 * size))  # 0: none (geo ids are >= 1)
        self._flags = bytearray(size)  # 0 absent, 1 out of stock, 2 in stock
        self._names: list = []
        self._codes: dict = {}
        # Popular segment lists' ids: segment k's are _segment_ids[_starts[k]:_starts[k + 1]].
        self._segments: dict = {}  # segment -> k
        self._segment_ids = array("i")
        self._starts = array("q", [0])
        self._summaries: list = []  # segment k's Summary, made on first use
        self._shared: dict = {}  # one object for equal values: segment keys' names, summaries' sets
        self.lists_table = None  # the popular_lists table the segment lists were read from (its oid)

    @classmethod
    def of(cls, rows, generation=None, segments=()) -> "Catalogue":
        """From item rows and [(segment, ids)] of popular lists."""
        rows = list(rows)
        cat = cls(len(rows), max((r[0] for r in rows), default=0), generation)
        cat.add(rows)
        cat.add_segments(segments)
        return cat

    def add_segments(self, lists) -> None:
        """Popular lists [(segment, item ids in rank order)], a segment once."""
        for segment, ids in lists:
            if self._segment_ids.typecode == "i" and ids and not (-2**31 <= min(ids) and max(ids) < 2**31):
                self._segment_ids = array("q", self._segment_ids)  # ids past int32: 8 bytes an id from now on
            shared = self._shared.setdefault
            self._segments[tuple(shared(part, part) for part in segment)] = len(self._summaries)
            self._segment_ids.extend(ids)
            self._starts.append(len(self._segment_ids))
            self._summaries.append(None)

    def share_segments(self, other: "Catalogue") -> None:
        """Another catalogue's segment lists (the same popular_lists); their summaries are made again for this one."""
        self._segments, self._segment_ids, self._starts = other._segments, other._segment_ids, other._starts
        self._summaries = [None] * len(other._summaries)

    def segment(self, segment) -> tuple:
        """(ids, Summary) of a segment's popular list; ((), None) when it has none."""
        k = self._segments.get(segment)
        if k is None:
            return (), None
        ids = self._segment_ids[self._starts[k]:self._starts[k + 1]]
        summary = self._summaries[k]
        if summary is None:
            summary = self._summaries[k] = self.summarise(ids)
        return ids, summary

    def _code(self, name) -> int:
        code = self._codes.get(name)
        if code is None:
            code = self._codes[name] = len(self._names)
            self._names.append(name)
        return code

    def add(self, rows) -> None:
        for item_id, price, category, platform, geo_id, in_stock in rows:
            if self._dense:
                pos = item_id
            else:
                pos = self._index.setdefault(item_id, len(self._index))
            if price is None:
                self._price[pos] = math.nan
            else:
                self._price[pos] = price
                if self._price[pos] != price:  # not exact in float32: keep doubles from now on
                    self._price = array("d", self._price)
                    self._price[pos] = price
            self._category[pos] = self._code(category)
            self._platform[pos] = self._code(platform)
            self._geo[pos] = geo_id or 0
            self._flags[pos] = 2 if in_stock else 1

    def item(self, item_id: int, _new=tuple.__new__) -> Item | None:
        # Hot: called for every row a miss looks at. tuple.__new__ skips Item's keyword __new__.
        if self._dense:
            pos = item_id
            if pos >= len(self._flags) or pos < 0:
                return None
        else:
            pos = self._index.get(item_id)
            if pos is None:
                return None
        flag = self._flags[pos]
        if not flag:
            return None
        price = self._price[pos]
        names = self._names
        return _new(Item, (item_id, None if price != price else price, names[self._category[pos]],
                           names[self._platform[pos]], self._geo[pos] or None, flag == 2))

    def summarise(self, ids) -> Summary:
        positions = self._positions(ids)
        flags, price = self._flags, self._price
        prices = [price[pos] for pos in positions]
        priced = bool(prices) and all(p == p for p in prices)  # NaN: no price
        shared = self._shared.setdefault  # most segments' sets are alike ({one category}, {one geo}): one object each
        categories = frozenset(self._category[pos] for pos in positions)
        geos = frozenset(self._geo[pos] for pos in positions) - {0}
        return Summary(all(flags[pos] == 2 for pos in positions), min(prices) if priced else None,
                       max(prices) if priced else None, shared(categories, categories), shared(geos, geos))

    def passing(self, ids, filters: Filters, limit: int | None, skip, summary: Summary | None = None) -> list:
        """Indexes into a ranked id list of its first `limit` ids that are in the catalogue
        and pass serving.take's checks (in stock, not skipped, the filters), from the arrays:
        no Item is built for an id looked at. With the list's summary, filters that hold
        the whole list are not checked id by id."""
        room = len(ids) if limit is None else limit
        if room <= 0 or not ids:
            return []
        code = None
        if filters.category is not None:
            code = self._codes.get(filters.category)
            if code is None:  # no item has that category
                return []
        priced = filters.price_from is not None or filters.price_to is not None
        lo = -math.inf if filters.price_from is None else filters.price_from
        hi = math.inf if filters.price_to is None else filters.price_to
        geo = filters.geo_id
        flags, price, category, geos = self._flags, self._price, self._category, self._geo
        stocked = summary is not None and summary.in_stock  # every id is in the catalogue and in stock
        if stocked:  # a check the summary says every id passes is not made id by id
            if code is not None:
                if code not in summary.categories:
                    return []
                code = None if summary.categories == {code} else code
            geo = None if geo is not None and summary.geos <= {geo} else geo
            priced = priced and not (summary.price_lo is not None and lo <= summary.price_lo and summary.price_hi <= hi)
            if code is None and geo is None and not priced:  # every id passes the filters
                out = [k for k in range(len(ids)) if ids[k] not in skip] if skip else list(range(len(ids)))
                del out[room:]
                return out
        # In stock means in the catalogue: with ids as positions, each is one already.
        positions = ids if stocked and self._index is None else self._positions(ids)
        if 4 * room >= len(ids):  # most ids are looked at: one comprehension per check beats one loop
            # Stock and price (NaN, no price, fails any price filter) in one pass: the usual checks.
            if priced:
                out = ([k for k, pos in enumerate(positions) if lo <= price[pos] <= hi] if stocked else
                       [k for k, pos in enumerate(positions) if flags[pos] == 2 and lo <= price[pos] <= hi])
            else:
                out = list(range(len(ids))) if stocked else [k for k, pos in enumerate(positions) if flags[pos] == 2]
            if code is not None:
                out = [k for k in out if category[positions[k]] == code]
            if geo is not None:
                out = [k for k in out if not geos[positions[k]] or geos[positions[k]] == geo]
            if skip:
                out = [k for k in out if ids[k] not in skip]
            del out[room:]
            return out
        out = []
        for k, pos in enumerate(positions):
            if not stocked and flags[pos] != 2:  # absent or out of stock
                continue
            if priced and not lo <= price[pos] <= hi:  # NaN (no price) fails any price filter
                continue
            if code is not None and category[pos] != code:
                continue
            if geo is not None and geos[pos] and geos[pos] != geo:
                continue
            if skip and ids[k] in skip:
                continue
            out.append(k)
            if len(out) == room:
                break
        return out

    def _positions(self, ids):
        """Array positions of these ids; an id not in the catalogue gets the last (never set) one."""
        if self._index is not None:
            get, none = self._index.get, len(self._flags) - 1
            return [get(i, none) for i in ids]
        top = len(self._flags) - 1
        if not ids or 0 <= min(ids) and max(ids) < top:
            return ids
        return [i if 0 <= i < top else top for i in ids]

    def select(self, ids, scores, filters: Filters, limit: int | None, skip, summary: Summary | None = None) -> list:
        """The (item, score) pairs of passing(): what take() over item() gives."""
        keep = self.passing(ids, filters, limit, skip, summary)
        if not keep:
            return []
        positions = self._positions([ids[k] for k in keep])
        price, category, platform, geos, names = self._price, self._category, self._platform, self._geo, self._names
        new = tuple.__new__
        return [(new(Item, (ids[k], None if price[pos] != price[pos] else price[pos], names[category[pos]],
                            names[platform[pos]], geos[pos] or None, True)), scores[k])
                for k, pos in zip(keep, positions)]


def load_catalogue(cur, generation=None, previous: Catalogue | None = None) -> Catalogue:
    """Read the items table, then the popular lists' ids, in pages inside one repeatable-read
    transaction, so only a page of rows is ever held as Python objects. Both tables are
    locked (ACCESS SHARE) before its snapshot is taken: a refresh swapping either in waits
    for the load (a fraction of a second), so both are read as one refresh left them. The
    previous catalogue's lists are kept when popular_lists is the same table (a refresh
    swaps in a new one): the live worker reloads for every item the sync changes."""
    cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
    try:
        cur.execute("LOCK TABLE items, popular_lists IN ACCESS SHARE MODE")
        cur.execute("SELECT count(*), coalesce(max(item_id), 0), 'popular_lists'::regclass::oid FROM items")
        count, top, lists_table = cur.fetchone()
        cat = Catalogue(count, top, generation)
        last = -1
        while True:
            cur.execute(ITEMS_PAGE_SQL, (last, PAGE_ROWS))
            page = cur.fetchall()
            cat.add(page)
            if len(page) < PAGE_ROWS:
                break
            last = page[-1][0]
        if previous is not None and previous.lists_table == lists_table:
            cat.share_segments(previous)
        else:
            cur.execute(SEGMENTS_FIRST_SQL, (PAGE_ROWS,))
            while True:
                page = cur.fetchall()
                cat.add_segments((tuple(row[:4]), binary_array(row[4])) for row in page)
                if len(page) < PAGE_ROWS:
                    break
                cur.execute(SEGMENTS_PAGE_SQL, (*page[-1][:4], PAGE_ROWS))
        cat.lists_table = lists_table
        cur.execute("COMMIT")
    except BaseException:
        cur.execute("ROLLBACK")
        raise
    return cat


class Snapshot:
    """This process's catalogue and segment-list LRU, reloaded when the popular generation changes."""

    def __init__(self, run):
        self.run = run  # fn(cursor) runner of the recommendations DB (shared.db.LazyConnection.run)
        self.catalogue: Catalogue | None = None
        self._segments: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def current(self, generation) -> Catalogue:
        """The catalogue for this generation (None: Redis is down, keep what is loaded)."""
        cat = self.catalogue
        if cat is None or (generation is not None and cat.generation != generation):
            with self._lock:
                cat = self.catalogue
                if cat is None or (generation is not None and cat.generation != generation):
                    previous = self.catalogue
                    cat = self.run(lambda cur: load_catalogue(cur, generation, previous))
                    self._segments.clear()
                    self.catalogue = cat
        return cat

    def segment_lists(self, segments, read) -> dict:
        """{segment: SegmentList} for these segments, reading the ones not cached with read(missing)."""
        cache = self._segments
        out, missing = {}, []
        for seg in segments:
            found = cache.get(seg)
            if found is None:
                missing.append(seg)
            else:
                cache.move_to_end(seg)
                out[seg] = found
        if missing:
            fetched = read(missing)
            for seg in missing:
                # Absent segments are cached too (as empty), so a thin segment is not re-read.
                ids, scores = fetched.get(seg, ((), ()))
                out[seg] = cache[seg] = SegmentList(ids, scores)
            while len(cache) > SEGMENT_CACHE:
                cache.popitem(last=False)
        return out


class SegmentList:
    """A popular segment's list as the LRU holds it, with its summary for one catalogue."""

    __slots__ = ("ids", "scores", "_summary", "_of")

    def __init__(self, ids, scores):
        self.ids, self.scores = _compact_ids(ids), array("d", scores)
        self._summary = self._of = None

    def summary(self, catalogue: Catalogue) -> Summary:
        if self._of is not catalogue:  # the LRU is emptied on a reload; a request may still hold the old one
            self._summary, self._of = catalogue.summarise(self.ids), catalogue
        return self._summary


def _compact_ids(ids) -> array:
    try:
        return array("i", ids)  # 4 bytes an id while ids fit
    except OverflowError:
        return array("q", ids)


class SnapshotSource:
    """shared.serving's Source over the catalogue snapshot, for one request."""

    def __init__(self, snapshot: Snapshot, catalogue: Catalogue, read_segments, profile: Profile | None = None,
                 collaborative=((), ()), expected=()):
        self.snapshot = snapshot
        self.catalogue = catalogue
        self.read_segments = read_segments  # fn([segment]) -> {segment: (ids, scores)}: one query
        self._profile = profile
        self._collaborative = collaborative
        self._expected = list(expected)  # segments whose scores the request may read (serving.segments_needed)
        self._lists: dict = {}

    def prefetch(self, segments) -> None:
        self._lists.update(self.snapshot.segment_lists(segments, self.read_segments))

    def _fetch(self, segments) -> None:
        """Fetch those of these segments not fetched yet; the first fetch brings every expected one along."""
        missing = [seg for seg in segments if seg not in self._lists]
        if missing:
            missing += [seg for seg in self._expected if seg not in self._lists and seg not in missing]
            self._expected = []
            self.prefetch(missing)

    def _segment(self, seg) -> SegmentList:
        self._fetch([seg])
        return self._lists[seg]

    def popular(self, segments, filters=None, limit=None, skip=()):
        filters = filters or Filters()
        limits = list(limit) if isinstance(limit, (list, tuple)) else [limit] * len(segments)
        self._fetch(segments)
        out = {}
        catalogue = self.catalogue
        for seg, lim in zip(segments, limits):
            lst = self._lists[seg]
            if lst.ids:
                out[seg] = catalogue.select(lst.ids, lst.scores, filters, lim, skip, lst.summary(catalogue))
        return out

    def popular_scored(self, segment, filters, limit, skip) -> tuple[list, list]:
        """(ids, scores) of popular([segment], ...)[segment], without building its Items."""
        lst = self._segment(segment)
        ids, scores = lst.ids, lst.scores
        keep = self.catalogue.passing(ids, filters, limit, skip, lst.summary(self.catalogue))
        return [ids[k] for k in keep], [scores[k] for k in keep]

    def popular_ids(self, segment, filters, limit, skip) -> list:
        """The ids of popular_scored(...), from the catalogue's segment lists: no read."""
        catalogue = self.catalogue
        ids, summary = catalogue.segment(segment)
        return [ids[k] for k in catalogue.passing(ids, filters, limit, skip, summary)] if ids else []

    def passing(self, ids, filters, skip) -> list:
        """The ids that are in stock and pass the filters, not skipped, in order (shared.serving.filtered_answer)."""
        return [ids[k] for k in self.catalogue.passing(ids, filters, None, skip)]

    def profile(self, user_id):
        return self._profile

    def collaborative(self, user_id):
        item = self.catalogue.item
        out = []
        for item_id, score in zip(*self._collaborative):
            found = item(item_id)
            if found is not None:
                out.append((found, score))
        return out
