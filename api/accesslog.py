"""One key=value access line per request, written by a WSGI middleware.

Working on the raw environ and status keeps this off Flask's context proxies: it is
on every request, cache hits included. Endpoints add fields through the environ
(`recs.algorithm`, `recs.cache_hit`). The same place feeds the metrics: `observe`
(api.metrics.RequestObserver) gets the environ, the status and the seconds taken.
"""
from __future__ import annotations

import logging
import re
import time

log = logging.getLogger("recs.access")
ALGORITHM = "recs.algorithm"
CACHE_HIT = "recs.cache_hit"
# PATH_INFO arrives percent-decoded: a %0A would end the line and forge the next one.
# Control characters, spaces, quotes, backslashes and non-ASCII are written percent-encoded.
_UNSAFE = re.compile(r'[\x00-\x20\x7f-\uffff"\\%]')


def escape(value) -> str:
    """A request-supplied value, safe inside one key=value line."""
    if value is None:
        return "-"
    # WSGI strings carry the raw bytes as latin-1 code points, so most characters are one byte.
    return _UNSAFE.sub(lambda m: "".join(f"%{b:02X}" for b in _raw(m.group())), value)


def _raw(ch: str) -> bytes:
    return bytes([ord(ch)]) if ord(ch) < 256 else ch.encode("utf-8", "surrogatepass")


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
                         escape(environ.get("REQUEST_METHOD")), escape(environ.get("PATH_INFO")), status[0],
                         environ.get(ALGORITHM, "-"), "-" if hit is None else ("true" if hit else "false"),
                         (time.perf_counter() - started) * 1000)
            if self.observe is not None:
                try:
                    self.observe(environ, status[0], time.perf_counter() - started)
                except Exception:  # metrics must never fail a request
                    log.exception("metrics observer failed")
