"""Database connections. Nothing connects at import time.

The main DB is opened with default_transaction_read_only=on, so PostgreSQL itself
refuses any write through it: read-only is enforced at the connection.
"""
from __future__ import annotations

import os
import threading
import time

import psycopg2
import psycopg2.extensions

from shared.deadline import green, within
from shared.settings import Settings

# Connect timeout for the API's connections (libpq's minimum useful value is 2 s).
API_CONNECT_TIMEOUT_S = 2
# Connections one API process may hold to the recommendations DB. Under gevent workers
# many requests run at once in a process, and a connection answers one query at a time.
API_POOL_SIZE = 8


def tcp_options(user_timeout_ms: int) -> dict:
    """libpq TCP settings: a dead peer or a black hole is noticed in seconds, not hours.

    Keepalives find a connection whose peer vanished while idle; tcp_user_timeout drops
    one whose sent data stays unacknowledged (a network partition). Neither fires on a
    server process that is alive but frozen (the kernel still ACKs): that case is bounded
    by the API's request deadline (api.deadline) and by statement_timeout.
    """
    return {"keepalives": 1, "keepalives_idle": 5, "keepalives_interval": 2, "keepalives_count": 3,
            "tcp_user_timeout": int(user_timeout_ms)}


def gss_options(url: str) -> dict:
    """gssencmode=disable unless the URL or PGGSSENCMODE asks for GSS encryption.

    libpq's default (prefer) looks for a Kerberos credential cache on every connect, which
    runs the bundled krb5/GSSAPI libraries: about 1.3 MB of their pages in each web
    worker's RSS, and a slower connect, for an encryption no deployment here uses.
    GSSAPI authentication (pg_hba "gss") does not depend on it.
    """
    if os.environ.get("PGGSSENCMODE") or "gssencmode" in psycopg2.extensions.parse_dsn(url):
        return {}
    return {"gssencmode": "disable"}


def _user_timeout_ms(statement_timeout_ms: int) -> int:
    # The API's connections (with a statement timeout) give up as soon as the request would;
    # workers' long COPYs and bulk writes get 30 s.
    return max(int(statement_timeout_ms), 1000) if statement_timeout_ms else 30000


def connect_main(settings: Settings, statement_timeout_ms: int = 0, connect_timeout_s: int = 10):
    options = "-c default_transaction_read_only=on"
    if statement_timeout_ms:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    return psycopg2.connect(
        settings.main_database_url, options=options, connect_timeout=connect_timeout_s, application_name="recs-main-ro",
        **tcp_options(_user_timeout_ms(statement_timeout_ms)), **gss_options(settings.main_database_url),
    )


def connect_recs(settings: Settings, statement_timeout_ms: int = 0, application_name: str = "recs"):
    # The API's connections (the ones with a statement timeout) use generic plans for
    # their prepared statements: the same plan fits every parameter value.
    options = (f"-c statement_timeout={int(statement_timeout_ms)} -c plan_cache_mode=force_generic_plan"
               if statement_timeout_ms else None)
    return psycopg2.connect(
        settings.recommendations_database_url,
        options=options,
        connect_timeout=API_CONNECT_TIMEOUT_S if statement_timeout_ms else 10,
        application_name=application_name,
        **tcp_options(_user_timeout_ms(statement_timeout_ms)), **gss_options(settings.recommendations_database_url),
    )


def _semaphore(size: int):
    """The pool's slots. Under gevent workers a FairGate: gevent's Semaphore lets a newcomer
    take a released connection before the greenlets already waiting, which starved some
    of them for their whole deadline (503s at concurrency 32 in `make bench`), and the
    stdlib one, built on a Condition, can be left "released too many times" by a deadline
    (gevent.Timeout) firing inside it (a RuntimeError, so a 500, seen with 10,000 connections)."""
    if green():
        from shared.gate import FairGate

        return FairGate(size)
    return threading.BoundedSemaphore(size)


class LazyConnection:
    """A small per-process pool of autocommit connections, opened on first use after fork.

    Each call borrows its own connection (at most `size` at once; further callers wait
    for one, at most `wait_s`, and under gevent workers at most the request deadline).
    No lock is held while connecting or querying, so a frozen database holds only the
    callers that use it, each until its own deadline: nobody queues behind them forever.

    A broken connection is dropped and a new one opened on a later call; after a failed
    attempt we wait `retry_after_s` before trying again, so a dead database costs each
    request microseconds instead of a connect timeout.
    """

    def __init__(self, factory, retry_after_s: float = 1.0, size: int = API_POOL_SIZE,
                 wait_s: float = API_CONNECT_TIMEOUT_S, deadline_s: float | None = None):
        self._factory = factory
        self._deadline_s = deadline_s
        self._idle: list = []
        self._slots = _semaphore(size)
        self._lock = threading.Lock()  # guards _idle and _failed_at; never held across I/O
        self._failed_at = 0.0
        self._ok_at = 0.0  # when the newest successful call started
        self._retry_after_s = retry_after_s
        self._wait_s = wait_s

    def _borrow(self, started: float):
        if not self._slots.acquire(timeout=self._wait_s):
            raise psycopg2.OperationalError(f"database busy: no free connection within {self._wait_s} s")
        try:
            with self._lock:
                while self._idle:
                    conn = self._idle.pop()
                    if not conn.closed:
                        return conn
                if time.monotonic() - self._failed_at < self._retry_after_s:
                    raise psycopg2.OperationalError("database unavailable (recent connection failure)")
            try:
                conn = self._factory()
            except psycopg2.Error:
                self._failed(started)
                raise
            conn.autocommit = True
            return conn
        except BaseException:
            self._slots.release()
            raise

    def _failed(self, started: float):
        """A call that started at `started` failed. It opens the breaker unless a call that
        started later has succeeded since: a query stuck through an outage and failing after
        the recovery says nothing about the database now."""
        with self._lock:
            if started >= self._ok_at:
                self._failed_at = time.monotonic()

    def _give_back(self, conn, broken: bool):
        try:
            if broken or conn.closed:
                try:
                    conn.close()
                except psycopg2.Error:
                    pass
            else:
                with self._lock:
                    self._idle.append(conn)
        finally:
            self._slots.release()

    def discard(self):
        """Close every idle connection (the next call opens a new one)."""
        with self._lock:
            idle, self._idle = self._idle, []
        for conn in idle:
            try:
                conn.close()
            except psycopg2.Error:
                pass

    def run(self, fn):
        """Call fn(cursor) on a borrowed connection; a connection-level error drops it and re-raises.

        With deadline_s, the whole call (waiting for a connection, connecting, the query)
        ends in shared.deadline.TimedOut after that long under gevent: a frozen server
        costs a request this much, whatever else the request waited for (CPU, Redis).
        """
        if self._deadline_s is None:
            return self._run(fn)
        with within(self._deadline_s):
            return self._run(fn)

    def _run(self, fn):
        started = time.monotonic()
        conn = self._borrow(started)
        broken = True
        try:
            with conn.cursor() as cur:
                result = fn(cur)
            broken = False
            with self._lock:
                self._ok_at = max(self._ok_at, started)
            return result
        except psycopg2.extensions.QueryCanceledError:
            broken = False  # statement_timeout: the connection itself is fine
            raise
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self._failed(started)
            raise
        except Exception:
            broken = False  # e.g. a missing table (autocommit): the connection is still usable
            raise
        except BaseException:
            # The call's deadline (gevent.Timeout) interrupted a wait on the server: the
            # connection is mid-protocol (psycogreen closes it), and the server is not answering.
            self._failed(started)
            raise
        finally:
            self._give_back(conn, broken)


def ping(conn_factory) -> float:
    """Open, SELECT 1, close. Returns latency in ms; raises on failure."""
    start = time.perf_counter()
    conn = conn_factory()
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1")
            cur.fetchone()
    finally:
        conn.close()
    return (time.perf_counter() - start) * 1000.0


def with_database(url: str, name: str) -> str:
    """The same server URL with another database name (keeps an empty host: the local socket)."""
    base, sep, query = url.partition("?")
    scheme, rest = base.split("://", 1)
    authority = rest.split("/", 1)[0]
    return f"{scheme}://{authority}/{name}{sep}{query}"


def database_name(url: str) -> str:
    return url.partition("?")[0].split("://", 1)[1].split("/", 1)[1] if "/" in url.split("://", 1)[1] else ""
