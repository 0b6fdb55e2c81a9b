"""The per-request backstop, as WSGI middleware: past it the answer is a 503 JSON, never a hang.

Each dependency call has its own, shorter deadline: a recommendations-DB call ends
after DB_TIMEOUT_MS (shared.db.LazyConnection), a Redis call after its socket timeout.
This one (REQUEST_TIMEOUT_MS) bounds the whole request whatever it waits for. It is
longer on purpose: under overload (thousands of connections on two cores) a request
also waits for the CPU, and that wait must slow it down, not turn it into a 503. See
shared.deadline for how (gevent) and when it applies.
"""
from __future__ import annotations

import logging
import sys

from api.http import error_for, wsgi_json
from shared.deadline import TimedOut, within

log = logging.getLogger("recs.deadline")


class RequestDeadline:
    def __init__(self, app, seconds: float):
        self.app = app
        self.seconds = seconds

    def __call__(self, environ, start_response):
        try:
            with within(self.seconds):
                return self.app(environ, start_response)
        except TimedOut as exc:
            log.warning("event=deadline_exceeded method=%s ms=%d", environ.get("REQUEST_METHOD"),
                        round(self.seconds * 1000))
            status, payload, headers = error_for(exc, environ)
            # exc_info: if the app had already started its response, the server drops the connection.
            return wsgi_json(start_response, status, payload, headers, sys.exc_info())
