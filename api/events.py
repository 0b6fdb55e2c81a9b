"""POST /events: live feedback from the Rails app, effective on the user's next request.

{"user_id", "item_id", "type": "like" | "unlike" | "click", "at"?} or {"events": [...]}.
Nothing is written to the main DB (it stays the truth): each event goes to the user's
hash in Redis (liked items are excluded from their lists at once, even from a list
cached before; an unlike lifts that), the user's cached lists are dropped (a new
version, shared.cache), and the user is queued for the live sync, which re-reads their history from
the main DB on its next run. The endpoint reads no database, so it answers whether or
not the user or item is known yet: both may have been created since the last refresh.
"""
from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal, Optional

from flask import Blueprint
from pydantic import Field, ValidationError, WithJsonSchema, field_validator

from api.http import error_response, json_body, json_response, services
from api.validation import RequestError, UserId, _errors, _Model
from shared.cache import LIKED, UNLIKED, CacheUnavailable
from shared.ids import parse_id

bp = Blueprint("events", __name__)
# 500 events stay well inside the 64 KiB body limit, so an over-long batch is a 400 naming
# `events`, not a 413.
MAX_EVENTS = 500
MARKS = {"like": LIKED, "unlike": UNLIKED, "click": None}


class EventIn(_Model):
    user_id: UserId
    item_id: UserId
    type: Literal["like", "unlike", "click"]
    # Accepted for the record; the main DB's created_at is what counts. An ISO 8601 string
    # only: pydantic's lax datetime would also take a bare number as a Unix time.
    at: Optional[Annotated[str, WithJsonSchema({"type": "string", "format": "date-time"})]] = None

    @field_validator("user_id", "item_id")
    @classmethod
    def _id(cls, v):
        return parse_id(v)

    @field_validator("at")
    @classmethod
    def _at(cls, v):
        if v is None:
            return v
        try:
            datetime.fromisoformat(v)
        except ValueError:
            raise ValueError("must be an ISO 8601 date-time, e.g. 2026-11-26T10:00:00Z") from None
        return v


class EventBatch(_Model):
    events: Annotated[list[EventIn], Field(min_length=1, max_length=MAX_EVENTS)]


def parse_events(body) -> list[EventIn]:
    if not isinstance(body, dict):
        raise RequestError([{"field": "body", "rule": "must be a JSON object"}])
    try:
        if "events" in body:
            return EventBatch.model_validate(body).events
        return [EventIn.model_validate(body)]
    except ValidationError as exc:
        raise RequestError(_errors(exc)) from None


def feedback_ttl_s(settings) -> int:
    """Live feedback outlives the next full profile run, which has it from the main DB by then."""
    return 2 * settings.user_profiles_refresh_minutes * 60 + 600


@bp.post("/events")
def events():
    s = services()
    parsed = parse_events(json_body())
    try:
        s.cache.record_feedback([(e.user_id, e.item_id, MARKS[e.type]) for e in parsed], feedback_ttl_s(s.settings))
    except CacheUnavailable as exc:
        return error_response(503, "unavailable", f"cache unavailable, events not applied: {str(exc)[:200]}")
    return json_response({"accepted": len(parsed)})
