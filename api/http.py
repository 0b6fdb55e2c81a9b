"""Small helpers shared by the blueprints: JSON bodies in, JSON responses and errors out."""
from __future__ import annotations

import orjson
from flask import Response, current_app, request

from api.validation import RequestError


def services():
    return current_app.extensions["recs"]


def json_response(payload, status: int = 200) -> Response:
    return Response(orjson.dumps(payload, default=str), status=status, mimetype="application/json")


def error_response(status: int, error: str, message: str, errors: list | None = None) -> Response:
    body = {"error": error, "message": message}
    if errors is not None:
        body["errors"] = errors
    return json_response(body, status)


def json_body() -> dict:
    """The request body as a JSON object; an empty body is {}."""
    raw = request.get_data(cache=False)
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError([{"field": "body", "rule": "must be valid JSON"}]) from None
