"""Small helpers shared by the blueprints and the fast path: JSON bodies in, JSON responses and errors out."""
from __future__ import annotations

import orjson
from flask import Response, current_app, request

from api.validation import RequestError

MAX_BODY_BYTES = 64 * 1024


def services():
    return current_app.extensions["recs"]


def dumps(payload) -> bytes:
    return orjson.dumps(payload, default=str)


def json_response(payload, status: int = 200) -> Response:
    return Response(dumps(payload), status=status, mimetype="application/json")


def error_payload(error: str, message: str, errors: list | None = None) -> dict:
    body = {"error": error, "message": message}
    if errors is not None:
        body["errors"] = errors
    return body


def request_error_payload(exc: RequestError) -> dict:
    message = "; ".join(f"{e['field']}: {e['rule']}" for e in exc.errors)
    return error_payload("invalid_request", message, exc.errors)


def database_error_payload(exc) -> dict:
    return error_payload("unavailable", f"recommendations database unavailable: {exc}")


def too_large_payload() -> dict:
    rule = f"must be at most {MAX_BODY_BYTES} bytes"
    return error_payload("invalid_request", f"body: {rule}", [{"field": "body", "rule": rule}])


INTERNAL_ERROR = error_payload("internal_error", "internal error; see the server log")


def error_response(status: int, error: str, message: str, errors: list | None = None) -> Response:
    return json_response(error_payload(error, message, errors), status)


def parse_body(raw: bytes) -> dict:
    """A request body as a JSON value; an empty body is {}."""
    if not raw.strip():
        return {}
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        raise RequestError([{"field": "body", "rule": "must be valid JSON"}]) from None


def json_body() -> dict:
    return parse_body(request.get_data(cache=False))
