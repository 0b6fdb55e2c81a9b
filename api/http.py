"""Small helpers shared by the blueprints and the fast path: JSON bodies in, JSON responses and errors out."""
from __future__ import annotations

from http import HTTPStatus

import orjson
from flask import Response, current_app, request
from werkzeug.exceptions import HTTPException

from api.accesslog import ERROR
from api.serve import DatabaseUnavailable
from api.validation import RequestError
from shared.deadline import TimedOut

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


def deadline_payload(exc: TimedOut) -> dict:
    return error_payload("unavailable", f"a dependency did not answer in time: {exc}")


def error_for(exc: BaseException, environ=None) -> tuple[int, dict, list]:
    """The one exception-to-response mapping: (status, JSON body, extra headers).

    Used by the Flask error handler, the WSGI fast path and the middlewares, so every
    path answers the same error the same way. A 500 is for bugs only; the caller logs it.
    With the request's environ, a 5xx's reason is noted there for its access line.
    """
    status, payload, headers = _error_for(exc)
    if environ is not None and status >= 500:
        environ[ERROR] = str(payload.get("message", payload.get("error", "")))[:200]
    return status, payload, headers


def _error_for(exc: BaseException) -> tuple[int, dict, list]:
    if isinstance(exc, RequestError):
        return exc.status, request_error_payload(exc), []
    if isinstance(exc, DatabaseUnavailable):
        return 503, database_error_payload(exc), []
    if isinstance(exc, TimedOut):
        return 503, deadline_payload(exc), []
    if isinstance(exc, HTTPException) and exc.code:
        if exc.code == 413:
            return 413, too_large_payload(), []
        # e.g. Allow on a 405; the body is ours (JSON), so its Content-Type is too.
        headers = [(k, v) for k, v in exc.get_headers() if k.lower() != "content-type"]
        return exc.code, error_payload(exc.name.lower().replace(" ", "_"), exc.description or exc.name), headers
    return 500, INTERNAL_ERROR, []


def status_line(status: int) -> str:
    return f"{status} {HTTPStatus(status).phrase}"


def wsgi_json(start_response, status: int, payload, headers=(), exc_info=None) -> list[bytes]:
    """A JSON response straight from WSGI (fast path and middlewares)."""
    body = dumps(payload)
    start_response(status_line(status),
                   [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers], exc_info)
    return [body]


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
