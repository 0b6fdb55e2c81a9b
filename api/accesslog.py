"""One key=value access line per request, written by a WSGI middleware.

Working on the raw environ and status keeps this off Flask's context proxies: it is
on every request, cache hits included. Endpoints add fields through the environ
(`recs.algorithm`, `recs.cache_hit`, and `recs.error` for a 5xx). The same place feeds the metrics: `observe`
(api.metrics.RequestObserver) gets the environ, the status and the seconds taken.

The line goes through the `recs.access` logger (so LOG_LEVEL and logging configuration
apply), except in the usual setup, where that logger would only hand it to the root's
one stderr handler (api/wsgi.py): then it is one write(2) straight to stderr. The
logging module's record, handler lock and flush cost several times the line itself,
and under gunicorn this runs on every request (about 15 % of a cache hit's CPU).
"""
from __future__ import annotations

import logging
import os
import re
import sys
import time

log = logging.getLogger("recs.access")
ALGORITHM = "recs.algorithm"
CACHE_HIT = "recs.cache_hit"
ERROR = "recs.error"  # why a request got a 5xx (e.g. which dependency timed out), appended to its line
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


def _direct_fd() -> int | None:
    """stderr's descriptor when the access logger's only destination is the root's plain stderr handler."""
    root = logging.getLogger()
    if log.handlers or not log.propagate or log.filters or len(root.handlers) != 1 or root.filters:
        return None
    handler = root.handlers[0]
    if type(handler) is not logging.StreamHandler or handler.stream is not sys.stderr or handler.filters \
            or handler.formatter is None or handler.formatter._fmt != "%(message)s" or handler.level > logging.INFO:
        return None
    try:
        return sys.stderr.fileno()
    except (AttributeError, OSError, ValueError):  # a captured or replaced stderr
        return None


class AccessLog:
    def __init__(self, app, observe=None):
        self.app = app
        self.observe = observe
        self._fd: int | None | bool = False  # decided on the first request (logging is set up by then)

    def write(self, line: str) -> None:
        if self._fd is False:
            self._fd = _direct_fd()
        if self._fd is None:
            log.info("%s", line)
        else:
            os.write(self._fd, (line + "\n").encode())

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
                line = "method=%s path=%s status=%s algorithm=%s cache_hit=%s ms=%.2f" % (
                    escape(environ.get("REQUEST_METHOD")), escape(environ.get("PATH_INFO")), status[0],
                    environ.get(ALGORITHM, "-"), "-" if hit is None else ("true" if hit else "false"),
                    (time.perf_counter() - started) * 1000)
                error = environ.get(ERROR)
                self.write(line if error is None else f"{line} error={escape(error)}")
            if self.observe is not None:
                try:
                    self.observe(environ, status[0], time.perf_counter() - started)
                except Exception:  # metrics must never fail a request
                    log.exception("metrics observer failed")
