"""Database connections. Nothing connects at import time.

The main DB is opened with default_transaction_read_only=on, so PostgreSQL itself
refuses any write through it: read-only is enforced at the connection.
"""
from __future__ import annotations

import threading
import time

import psycopg2
import psycopg2.extensions

from shared.settings import Settings

# Connect timeout for the API's connections (libpq's minimum useful value is 2 s).
API_CONNECT_TIMEOUT_S = 2


def connect_main(settings: Settings, statement_timeout_ms: int = 0, connect_timeout_s: int = 10):
    options = "-c default_transaction_read_only=on"
    if statement_timeout_ms:
        options += f" -c statement_timeout={int(statement_timeout_ms)}"
    return psycopg2.connect(
        settings.main_database_url, options=options, connect_timeout=connect_timeout_s, application_name="recs-main-ro"
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
    )


class LazyConnection:
    """One autocommit connection per process, opened on first use after fork.

    A broken connection is dropped and reopened on the next call; after a failed
    attempt we wait `retry_after_s` before trying again, so a dead database costs
    each request microseconds instead of a connect timeout.
    """

    def __init__(self, factory, retry_after_s: float = 1.0):
        self._factory = factory
        self._conn = None
        self._lock = threading.Lock()
        self._failed_at = 0.0
        self._retry_after_s = retry_after_s

    def get(self):
        with self._lock:
            if self._conn is not None and not self._conn.closed:
                return self._conn
            if time.monotonic() - self._failed_at < self._retry_after_s:
                raise psycopg2.OperationalError("database unavailable (recent connection failure)")
            try:
                conn = self._factory()
            except psycopg2.Error:
                self._failed_at = time.monotonic()
                raise
            conn.autocommit = True
            self._conn = conn
            return conn

    def discard(self):
        with self._lock:
            if self._conn is not None:
                try:
                    self._conn.close()
                except psycopg2.Error:
                    pass
            self._conn = None
            self._failed_at = time.monotonic()

    def run(self, fn):
        """Call fn(cursor); on a connection-level error drop the connection and re-raise."""
        conn = self.get()
        try:
            with conn.cursor() as cur:
                return fn(cur)
        except (psycopg2.OperationalError, psycopg2.InterfaceError):
            self.discard()
            raise


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
