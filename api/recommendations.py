"""POST /popular and POST /personalized.

popular_result / personalized_result hold the whole endpoint: the Flask views below and
api.fastpath (the same endpoints without Flask's request machinery) both call them.
"""
from __future__ import annotations

import orjson
from flask import Blueprint, request

from api.accesslog import ALGORITHM, CACHE_HIT
from api.http import json_body, json_response, services
from api.services import Services
from api.serve import serve
from api.validation import PersonalizedRequest, PopularRequest, parse, personalized_filters, popular_filters
from shared.cache import (PERSONALIZED, POPULAR as POPULAR_KIND, CacheUnavailable, personalized_suffix,
                          popular_suffix, profile_key)
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

    def compute(_gens, _writes):
        return popular_list(s.source, segment, filters, cfg.recommendation_list_size), POPULAR

    return serve(s, POPULAR_KIND, popular_suffix(segment, filters.key()), compute, cfg.cache_ttl_popular, page, limit)


@bp.post("/popular")
def popular():
    return _finish(popular_result(services(), json_body()))


def _profile(s, gens, user_id: int, writes: list) -> Profile | None:
    """The user's profile, cached for CACHE_TTL_USER_PROFILE under the profiles generation.

    A profile read from the DB joins `writes`, cached together with the list it served.
    """
    key = profile_key(gens, user_id) if gens else None
    if key:
        try:
            raw = s.cache.get(key)
            if raw is not None:
                data = orjson.loads(raw)
                return None if data is None else Profile(**{**data, "liked": frozenset(data["liked"])})
        except CacheUnavailable:
            key = None
    profile = s.source.profile(user_id)
    if key:
        data = None if profile is None else {**profile.__dict__, "liked": sorted(profile.liked)}
        writes.append((key, orjson.dumps(data), s.settings.cache_ttl_user_profile))
    return profile


def personalized_result(s: Services, body) -> dict:
    cfg = s.settings
    req, f, page, limit = parse(PersonalizedRequest, body, cfg.max_page_size, cfg.default_page_size)
    filters = personalized_filters(req, f)
    geo = req.geo_id or 0

    def compute(gens, writes):
        profile = _profile(s, gens, req.user_id, writes)
        return personalized_list(s.source, req.user_id, req.geo_id, filters, cfg.recommendation_list_size,
                                 profile=profile if profile is not None else _unknown_user(req.user_id))

    return serve(s, PERSONALIZED, personalized_suffix(req.user_id, geo, filters.key()), compute,
                 cfg.cache_ttl_personalized, page, limit)


@bp.post("/personalized")
def personalized():
    return _finish(personalized_result(services(), json_body()))


ENDPOINTS = {"/popular": popular_result, "/personalized": personalized_result}


def _unknown_user(user_id: int) -> Profile:
    # An unknown user: popular with no demographics (the request's geo still applies).
    return Profile(user_id, 0)
