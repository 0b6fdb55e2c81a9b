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
from contextlib import contextmanager


class TimedOut(Exception):
    """The deadline passed while the block was still waiting."""

    def __init__(self, seconds: float):
        super().__init__(f"no answer within {round(seconds * 1000)} ms")
        self.seconds = seconds


def green() -> bool:
    """True in a process whose sockets gevent has patched (the gunicorn workers)."""
    monkey = sys.modules.get("gevent.monkey")
    return bool(monkey and monkey.is_module_patched("socket"))


@contextmanager
def within(seconds: float):
    """Raise TimedOut if the block is still running after `seconds` (under gevent)."""
    if not green():
        yield
        return
    import gevent

    # gevent.Timeout is a BaseException, so no `except Exception` inside the block
    # swallows it; it becomes TimedOut only here, at the boundary that set it.
    timer = gevent.Timeout(seconds)
    timer.start()
    try:
        yield
    except gevent.Timeout as exc:
        if exc is not timer:
            raise
        raise TimedOut(seconds) from None
    finally:
        timer.close()
