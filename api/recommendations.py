"""POST /popular and POST /personalized.

popular_result / personalized_result hold the whole endpoint: the Flask views below and
api.fastpath (the same endpoints without Flask's request machinery) both call them.
"""
from __future__ import annotations

from dataclasses import replace

import orjson
from flask import Blueprint, request

from api.accesslog import ALGORITHM, CACHE_HIT
from api.http import json_body, json_response, services
from api.services import Services
from api.serve import KeySlot, UserSlot, serve
from api.validation import PersonalizedRequest, PopularRequest, parse, personalized_filters, popular_filters
from shared.cache import POPULAR as POPULAR_KIND, popular_suffix
from shared.serving import POPULAR, Profile, personalized_list, popular_list

bp = Blueprint("recommendations", __name__)


def note_result(environ, result: dict) -> None:
    """What the access line reports about a served list."""
    environ[ALGORITHM] = result["algorithm_used"]
    environ[CACHE_HIT] = result["cache_hit"]


def _finish(result: dict):
    note_result(request.environ, result)
    return json_response(result)


def popular_result(s: Services, body) -> dict:
    cfg = s.settings
    req, f, page, limit = parse(PopularRequest, body, cfg.max_page_size, cfg.default_page_size)
    segment, filters = popular_filters(req, f)

    def compute(_slot, exclude):
        return popular_list(s.source, segment, filters, cfg.recommendation_list_size, exclude), POPULAR

    suffix = popular_suffix(segment, filters.key())
    return serve(s, lambda cache: KeySlot(cache, POPULAR_KIND, suffix), compute, cfg.cache_ttl_popular, page, limit)


@bp.post("/popular")
def popular():
    return _finish(popular_result(services(), json_body()))


def _profile(s, slot, user_id: int) -> Profile | None:
    """The user's profile: cached in the user's hash under the profiles generation, else read.

    A profile read from the DB is set as slot.profile_out, cached together with the list it served.
    """
    if slot.profile is not None:
        data = orjson.loads(slot.profile)
        return None if data is None else Profile(**{**data, "liked": frozenset(data["liked"])})
    profile = s.source.profile(user_id)
    data = None if profile is None else {**profile.__dict__, "liked": sorted(profile.liked)}
    slot.profile_out = orjson.dumps(data)
    return profile


def personalized_result(s: Services, body) -> dict:
    cfg = s.settings
    req, f, page, limit = parse(PersonalizedRequest, body, cfg.max_page_size, cfg.default_page_size)
    filters = personalized_filters(req, f)
    geo = req.geo_id or 0

    def compute(slot, exclude):
        profile = _profile(s, slot, req.user_id) or _unknown_user(req.user_id)
        if slot.liked or slot.unliked:  # live feedback since the profile was computed (POST /events)
            profile = replace(profile, liked=(profile.liked | slot.liked) - slot.unliked)
        return personalized_list(s.source, req.user_id, req.geo_id, filters, cfg.recommendation_list_size,
                                 profile=profile, exclude=exclude)

    return serve(s, lambda cache: UserSlot(cache, req.user_id, geo, filters.key()), compute,
                 cfg.cache_ttl_personalized, page, limit)


@bp.post("/personalized")
def personalized():
    return _finish(personalized_result(services(), json_body()))


ENDPOINTS = {"/popular": popular_result, "/personalized": personalized_result}


def _unknown_user(user_id: int) -> Profile:
    # An unknown user: popular with no demographics (the request's geo still applies).
    return Profile(user_id, 0)
