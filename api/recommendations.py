"""POST /popular and POST /personalized.

popular_result / personalized_result hold the whole endpoint: the Flask views below and
api.fastpath (the same endpoints without Flask's request machinery) both call them.
"""
from __future__ import annotations

from dataclasses import replace

from flask import Blueprint, request

from api.accesslog import ALGORITHM, CACHE_HIT
from api.http import json_body, json_response, services
from api.services import Services
from api.serve import KeySlot, UserSlot, serve
from api.validation import PersonalizedRequest, PopularRequest, parse, personalized_filters, popular_filters
from shared.cache import POPULAR as POPULAR_KIND, lists_current, popular_suffix
from shared.catalogue import SnapshotSource
from shared.serving import COMPUTED, POPULAR, STORED, Profile, algorithm_for, answer_plan, personal_answer, popular_list, segments_needed
from shared.store import user_row

bp = Blueprint("recommendations", __name__)


def note_result(environ, result: dict) -> None:
    """What the access line reports about a served list."""
    environ[ALGORITHM] = result["algorithm_used"]
    environ[CACHE_HIT] = result["cache_hit"]


def _finish(result: dict):
    note_result(request.environ, result)
    return json_response(result)


def _snapshot_source(s: Services, slot, **kwargs) -> SnapshotSource:
    """The request's Source: the process's catalogue snapshot (reloaded when the popular
    generation moved), with every segment's ids; the scored segment lists a computed
    answer may need read in one query."""
    snapshot = s.snapshot
    catalogue = snapshot.current(slot.gens["popular"] if slot.gens else None)
    return SnapshotSource(snapshot, catalogue, s.source.segment_lists, **kwargs)


def popular_result(s: Services, body) -> dict:
    cfg = s.settings
    req, f, page, limit = parse(PopularRequest, body, cfg.max_page_size, cfg.default_page_size)
    segment, filters = popular_filters(req, f)

    def compute(slot, exclude):
        source = _snapshot_source(s, slot)  # the popular fill-in: ids only, no read
        return popular_list(source, segment, filters, cfg.recommendation_list_size, exclude), POPULAR

    suffix = popular_suffix(segment, filters.key())
    return serve(s, lambda cache: KeySlot(cache, POPULAR_KIND, suffix), compute, cfg.cache_ttl_popular, page, limit)


@bp.post("/popular")
def popular():
    return _finish(popular_result(services(), json_body()))


def personalized_result(s: Services, body) -> dict:
    cfg = s.settings
    req, f, page, limit = parse(PersonalizedRequest, body, cfg.max_page_size, cfg.default_page_size)
    filters = personalized_filters(req, f)
    geo = req.geo_id or 0

    def compute(slot, exclude):
        row = slot.row
        if row is None:  # not cached: one read, the profile and the precomputed list
            row = slot.new_row = user_row(req.user_id, s.source.user_raw(req.user_id))
        profile = row.profile or _unknown_user(req.user_id)
        plist = row.plist if lists_current(slot.gens) else None
        if slot.liked or slot.unliked:  # live feedback since the profile was computed (POST /events)
            if slot.unliked & profile.liked:  # an unliked item may come back: the stored list excludes it
                plist = None
            profile = replace(profile, liked=(profile.liked | slot.liked) - slot.unliked)
        plan = answer_plan(plist, profile, req.geo_id, filters)
        # The precomputed list as is costs about a hit to derive again from the cached row, so it
        # is not stored; a filtered or computed list (fill-in, blend) is, for the next page.
        slot.keep_list = plan != STORED or slot.new_row is not None
        collaborative = ((), ())
        # Only a computed answer reads the rest, and only for a user with history: popular for
        # a user without any needs no preferences and has no collaborative list.
        if plan == COMPUTED and row.profile is not None and algorithm_for(profile.interaction_count) != POPULAR:
            profile, collaborative = s.source.with_detail(profile)
        source = _snapshot_source(s, slot, profile=profile, collaborative=collaborative,
                                  expected=segments_needed(profile, req.geo_id, filters, plan))
        return personal_answer(source, req.user_id, req.geo_id, filters, cfg.recommendation_list_size, profile,
                               plist, exclude, plan)

    return serve(s, lambda cache: UserSlot(cache, req.user_id, geo, filters.key()), compute,
                 cfg.cache_ttl_personalized, page, limit)


@bp.post("/personalized")
def personalized():
    return _finish(personalized_result(services(), json_body()))


ENDPOINTS = {"/popular": popular_result, "/personalized": personalized_result}


def _unknown_user(user_id: int) -> Profile:
    # An unknown user: popular with no demographics (the request's geo still applies).
    return Profile(user_id, 0)
