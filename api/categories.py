"""GET /categories: the categories a request can name, with how many presents each holds.

An unknown category in /popular or /personalized is not an error: it gets 200 and an
empty list, like a known category whose items are all out of stock. The Rails app takes
its categories from the same main DB, so "unknown here" mostly means "nothing to show
yet" (added since the last refresh, or sold out), and a page should render empty rather
than fail. It also keeps a cache hit free of a catalogue lookup. This endpoint is how a
caller finds the valid names.
"""
from __future__ import annotations

import psycopg2
from flask import Blueprint

from api.http import json_response, services
from api.serve import DatabaseUnavailable
from shared import store

bp = Blueprint("categories", __name__)


@bp.get("/categories")
def categories():
    try:
        rows = services().recs_db.run(store.category_counts)
    except psycopg2.Error as exc:
        raise DatabaseUnavailable(str(exc).strip().splitlines()[0] if str(exc).strip() else "unavailable") from exc
    return json_response({"categories": [{"category": name, "items": count} for name, count in rows]})
