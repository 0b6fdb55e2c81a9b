"""POST /popular and /personalized straight from WSGI, without Flask's request machinery.

These two endpoints are the hot path: a cache hit is one Redis GET, and Flask's request
context, URL routing and Response objects cost about as much again. The endpoint
logic itself is shared (api.recommendations.*_result); this layer only reads the
body, writes the JSON, and maps exceptions through api.http.error_for, the same
mapping the Flask error handler uses. Anything else goes on to Flask.

Every request body is sized here first, for Flask's routes too: a chunked body (no
Content-Length) is read up to the limit and handed on with a Content-Length, so a body
over MAX_BODY_BYTES is a 413 whichever way it was sent, never cut short and served.
"""
from __future__ import annotations

import io

from api.http import MAX_BODY_BYTES, dumps, error_for, parse_body, status_line, too_large_payload, wsgi_json
from api.recommendations import note_result


def _content_length(environ) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


def _sized(environ) -> int | None:
    """The body length, reading a chunked body into memory; None when it is over the limit."""
    length = _content_length(environ)
    if length is not None:
        return length if length <= MAX_BODY_BYTES else None
    if "chunked" not in environ.get("HTTP_TRANSFER_ENCODING", "").lower() and not environ.get("wsgi.input_terminated"):
        return 0  # no Content-Length and not chunked: no body (RFC 9112 6.3)
    body = environ["wsgi.input"].read(MAX_BODY_BYTES + 1)
    if len(body) > MAX_BODY_BYTES:
        return None
    environ["wsgi.input"] = io.BytesIO(body)
    environ["CONTENT_LENGTH"] = str(len(body))
    environ.pop("HTTP_TRANSFER_ENCODING", None)
    return len(body)


class FastPath:
    def __init__(self, app, services, endpoints: dict, logger):
        self.app = app
        self.services = services
        self.endpoints = endpoints  # path -> result(services, body)
        self.logger = logger

    def __call__(self, environ, start_response):
        length = _sized(environ)
        if length is None:
            return wsgi_json(start_response, 413, too_large_payload())
        handler = self.endpoints.get(environ.get("PATH_INFO"))
        if handler is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        status, payload, headers = self._answer(environ, handler, length)
        body = dumps(payload)
        start_response(status_line(status),
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *headers])
        return [body]

    def _answer(self, environ, handler, length: int) -> tuple[int, dict, list]:
        try:
            result = handler(self.services, parse_body(environ["wsgi.input"].read(length) if length else b""))
        except Exception as exc:
            status, payload, headers = error_for(exc, environ)
            if status == 500:
                self.logger.exception("unhandled error")
            return status, payload, headers
        note_result(environ, result)
        return 200, result, []
