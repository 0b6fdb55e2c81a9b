"""POST /popular and POST /personalized."""
from __future__ import annotations

import orjson
from flask import Blueprint, request

from api.accesslog import ALGORITHM, CACHE_HIT
from api.http import json_body, json_response, services
from api.serve import serve
from api.validation import PersonalizedRequest, PopularRequest, parse, personalized_filters, popular_filters
from shared.cache import (PERSONALIZED, POPULAR as POPULAR_KIND, CacheUnavailable, personalized_suffix,
                          popular_suffix, profile_key)
from shared.serving import POPULAR, Profile, personalized_list, popular_list

bp = Blueprint("recommendations", __name__)


def _finish(result: dict):
    request.environ[ALGORITHM] = result["algorithm_used"]
    request.environ[CACHE_HIT] = result["cache_hit"]
    return json_response(result)


@bp.post("/popular")
def popular():
    s = services()
    cfg = s.settings
    req, f, page, limit = parse(PopularRequest, json_body(), cfg.max_page_size, cfg.default_page_size)
    segment, filters = popular_filters(req, f)

    def compute(_gens):
        return popular_list(s.source, segment, filters, cfg.recommendation_list_size), POPULAR

    return _finish(serve(s, POPULAR_KIND, popular_suffix(segment, filters.key()), compute,
                         cfg.cache_ttl_popular, page, limit))


def _profile(s, gens, user_id: int) -> Profile | None:
    """The user's profile, cached for CACHE_TTL_USER_PROFILE under the profiles generation."""
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
        try:
            s.cache.set(key, orjson.dumps(data), s.settings.cache_ttl_user_profile)
        except CacheUnavailable:
            pass
    return profile


@bp.post("/personalized")
def personalized():
    s = services()
    cfg = s.settings
    req, f, page, limit = parse(PersonalizedRequest, json_body(), cfg.max_page_size, cfg.default_page_size)
    filters = personalized_filters(req, f)
    geo = req.geo_id or 0

    def compute(gens):
        profile = _profile(s, gens, req.user_id)
        return personalized_list(s.source, req.user_id, req.geo_id, filters, cfg.recommendation_list_size,
                                 profile=profile if profile is not None else _unknown_user(req.user_id))

    return _finish(serve(s, PERSONALIZED, personalized_suffix(req.user_id, geo, filters.key()), compute,
                         cfg.cache_ttl_personalized, page, limit))


def _unknown_user(user_id: int) -> Profile:
    # An unknown user: popular with no demographics (the request's geo still applies).
    return Profile(user_id, 0)
