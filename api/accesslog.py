"""One key=value access line per request, written by a WSGI middleware.

Working on the raw environ and status keeps this off Flask's context proxies: it is
on every request, cache hits included. Endpoints add fields through the environ
(`recs.algorithm`, `recs.cache_hit`). The same place feeds the metrics: `observe`
(api.metrics.RequestObserver) gets the environ, the status and the seconds taken.
"""
from __future__ import annotations

import logging
import time

log = logging.getLogger("recs.access")
ALGORITHM = "recs.algorithm"
CACHE_HIT = "recs.cache_hit"


class AccessLog:
    def __init__(self, app, observe=None):
        self.app = app
        self.observe = observe

    def __call__(self, environ, start_response):
        started = time.perf_counter()
        status = ["-"]

        def recording_start_response(status_line, headers, exc_info=None):
            status[0] = status_line.split(" ", 1)[0]
            return start_response(status_line, headers, exc_info)

        try:
            return self.app(environ, recording_start_response)
        finally:
            if log.isEnabledFor(logging.INFO):
                hit = environ.get(CACHE_HIT)
                log.info("method=%s path=%s status=%s algorithm=%s cache_hit=%s ms=%.2f",
                         environ.get("REQUEST_METHOD"), environ.get("PATH_INFO"), status[0],
                         environ.get(ALGORITHM, "-"), "-" if hit is None else ("true" if hit else "false"),
                         (time.perf_counter() - started) * 1000)
            if self.observe is not None:
                try:
                    self.observe(environ, status[0], time.perf_counter() - started)
                except Exception:  # metrics must never fail a request
                    log.exception("metrics observer failed")
