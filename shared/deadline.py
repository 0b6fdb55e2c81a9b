"""Deadlines that interrupt a blocked dependency call (the API's per-request limit, /health checks).

The API runs under gunicorn's gevent workers (deploy/gunicorn.conf.py): sockets and
psycopg2 (through psycogreen) wait in the gevent hub, so a gevent.Timeout can stop a
call that waits on a frozen PostgreSQL or Redis, which no socket option can (a
stopped server's kernel still ACKs, so keepalives and tcp_user_timeout never fire).
Without gevent (Flask's test client, Celery workers) `within` interrupts nothing,
and the clients' own socket, connect and statement timeouts are the bound.
"""
from __future__ import annotations

import sys


class TimedOut(Exception):
    """The deadline passed while the block was still waiting."""

    def __init__(self, seconds: float):
        super().__init__(f"no answer within {round(seconds * 1000)} ms")
        self.seconds = seconds


def green() -> bool:
    """True in a process whose sockets gevent has patched (the gunicorn workers)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


class within:
    """Raise TimedOut if the block is still running after `seconds` (under gevent).

    A class rather than a @contextmanager generator: it wraps every request (api.deadline).
    """

    __slots__ = ("seconds", "timer")

    def __init__(self, seconds: float):
        self.seconds = seconds
        self.timer = None

    def __enter__(self):
        if green():
            import gevent

            # gevent.Timeout is a BaseException, so no `except Exception` inside the block
            # swallows it; it becomes TimedOut only here, at the boundary that set it.
            self.timer = gevent.Timeout(self.seconds)
            self.timer.start()
        return self

    def __exit__(self, exc_type, exc, tb):
        timer = self.timer
        if timer is None:
            return False
        timer.close()
        if exc is timer:
            raise TimedOut(self.seconds) from None
        return False
