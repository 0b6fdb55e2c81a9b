"""POST /popular and /personalized straight from WSGI, without Flask's request machinery.

These two endpoints are the hot path: a cache hit is one Redis GET, and Flask's request
context, URL routing and Response objects cost about as much again. The endpoint
logic itself is shared (api.recommendations.*_result); this layer only reads the
body, writes the JSON, and maps the same exceptions to the same error bodies as the
Flask error handlers. Anything else, and requests it cannot size (no Content-Length),
goes on to Flask.
"""
from __future__ import annotations

from http import HTTPStatus

from api.http import (INTERNAL_ERROR, MAX_BODY_BYTES, database_error_payload, dumps, parse_body,
                      request_error_payload, too_large_payload)
from api.recommendations import note_result
from api.serve import DatabaseUnavailable
from api.validation import RequestError

_STATUS = {code: f"{code} {HTTPStatus(code).phrase}" for code in (200, 400, 413, 422, 500, 503)}


def _content_length(environ) -> int | None:
    try:
        length = int(environ.get("CONTENT_LENGTH") or "")
    except ValueError:
        return None
    return length if length >= 0 else None


class FastPath:
    def __init__(self, app, services, endpoints: dict, logger):
        self.app = app
        self.services = services
        self.endpoints = endpoints  # path -> result(services, body); empty: everything goes to Flask
        self.logger = logger

    def __call__(self, environ, start_response):
        handler = self.endpoints.get(environ.get("PATH_INFO"))
        length = _content_length(environ) if handler else None
        if length is None or environ.get("REQUEST_METHOD") != "POST":
            return self.app(environ, start_response)
        status, payload = self._answer(environ, handler, length)
        body = dumps(payload)
        start_response(_STATUS.get(status) or f"{status} {HTTPStatus(status).phrase}",
                       [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
        return [body]

    def _answer(self, environ, handler, length: int) -> tuple[int, dict]:
        if length > MAX_BODY_BYTES:
            return 413, too_large_payload()
        try:
            result = handler(self.services, parse_body(environ["wsgi.input"].read(length)))
        except RequestError as exc:
            return exc.status, request_error_payload(exc)
        except DatabaseUnavailable as exc:
            return 503, database_error_payload(exc)
        except Exception:
            self.logger.exception("unhandled error")
            return 500, INTERNAL_ERROR
        note_result(environ, result)
        return 200, result
