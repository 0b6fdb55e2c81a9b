"""Test fixtures: real PostgreSQL and Redis, in throwaway databases and servers.

PostgreSQL: the server at TEST_POSTGRES_URL (default: the local socket) gets four
databases named recs_test_<random>_*, dropped at the end. Redis: a private
redis-server on a free port, killed at the end. Demo databases and any Redis data
already on the machine are never touched.
"""
from __future__ import annotations

import dataclasses
import os
import uuid
from pathlib import Path

import psycopg2
import pytest
import redis as redis_lib
from psycopg2 import sql

from deploy.localproc import RedisServer
from deploy.stack import query  # noqa: F401  (tests import it from here)
from shared.cache import Cache
from shared.db import with_database
from shared.settings import Settings, load_settings

ROOT = Path(__file__).resolve().parent.parent
SERVER_URL = os.environ.get("TEST_POSTGRES_URL", "postgresql:///postgres")
RUN = uuid.uuid4().hex[:8]


def _setting_names() -> set[str]:
    names = getattr(Settings, "model_fields", None) or [f.name for f in dataclasses.fields(Settings)]
    return {n.upper() for n in names}


def _is_setting(name: str) -> bool:
    """A variable that configures the service, a server it starts, Celery, or libpq/Redis targets."""
    if name == "TEST_POSTGRES_URL":
        return False
    return (name in SETTINGS or name.endswith("_URL") or name.startswith(("CELERY_", "GUNICORN_"))
            or name in ("WEB_CONCURRENCY", "WORKER_CONNECTIONS", "LOG_LEVEL", "PORT", "REDIS_URL", "DATABASE_URL"))


# Hermetic runs: a service's settings in the shell (a deployed host exports
# CELERY_BROKER_URL, ...) must not reach anything the tests run, in this process or
# in the servers and workers it starts. Every test builds its configuration from
# make_env() alone; tests/live.py starts children from a clean base as well. Scrubbing
# this process matters too: Celery reads CELERY_BROKER_URL / CELERY_RESULT_BACKEND from
# the environment ahead of the broker= / backend= it is given.
SETTINGS = _setting_names()
SCRUBBED = sorted(name for name in os.environ if _is_setting(name))
for _name in SCRUBBED:
    del os.environ[_name]


def db_url(name: str) -> str:
    return with_database(SERVER_URL, name)


def _admin():
    conn = psycopg2.connect(SERVER_URL)
    conn.autocommit = True
    return conn


def create_db(name: str, schema: Path) -> str:
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    conn.close()
    url = db_url(name)
    c = psycopg2.connect(url)
    with c.cursor() as cur:
        cur.execute("SET client_min_messages = warning")
        cur.execute(schema.read_text())
    c.commit()
    c.close()
    return url


def drop_db(name: str) -> None:
    conn = _admin()
    with conn.cursor() as cur:
        cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s AND pid <> pg_backend_pid()",
                    (name,))
        cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    conn.close()


@pytest.fixture(scope="session")
def redis_server_factory():
    def make():
        try:
            return RedisServer().start()
        except RuntimeError as exc:
            pytest.fail(str(exc))
    return make


@pytest.fixture(scope="session")
def redis_server(redis_server_factory):
    server = redis_server_factory()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def databases():
    names = {kind: f"recs_test_{RUN}_{kind}"
             for kind in ("main_tiny", "recs_tiny", "main_hand", "recs_hand", "main_bench", "recs_bench")}
    urls = {}
    try:
        for kind, name in names.items():
            schema = ROOT / ("deploy/main_schema.sql" if kind.startswith("main") else "schema.sql")
            urls[kind] = create_db(name, schema)
        yield urls
    finally:
        for name in names.values():
            drop_db(name)


def make_env(main_url: str, recs_url: str, redis_url: str, **extra) -> dict:
    env = {
        "MAIN_DATABASE_URL": main_url,
        "RECOMMENDATIONS_DATABASE_URL": recs_url,
        "RECOMMENDATIONS_REDIS_URL": f"{redis_url}/1",
        "CELERY_BROKER_URL": f"{redis_url}/2",
        "CELERY_RESULT_BACKEND": f"{redis_url}/3",
    }
    env.update({k: str(v) for k, v in extra.items()})
    return env


@pytest.fixture(scope="session")
def tiny_env(databases, redis_server):
    """Main DB with the tiny preset, recommendations DB filled by one full refresh."""
    from deploy.seed import seed
    from workers import pipeline

    seed(databases["main_tiny"], "tiny", 42, replace=False, quiet=True)
    env = make_env(databases["main_tiny"], databases["recs_tiny"], redis_server.url)
    settings = load_settings(env)
    pipeline.refresh_all(settings, Cache(redis_lib.Redis.from_url(settings.recommendations_redis_url)))
    return env


@pytest.fixture
def hand_env(databases, redis_server):
    """Empty main and recommendations DBs (truncated before each test) and a flushed Redis."""
    main = psycopg2.connect(databases["main_hand"])
    with main.cursor() as cur:
        cur.execute("TRUNCATE handpicked_present_clicks, handpicked_likes, handpicked_presents, users")
    main.commit()
    main.close()
    recs = psycopg2.connect(databases["recs_hand"])
    with recs.cursor() as cur:
        cur.execute("TRUNCATE items, popular_items, popular_lists, user_profiles, user_similarities, "
                    "user_recommendations, user_lists, main_db_stats, job_runs")
    recs.commit()
    recs.close()
    redis_lib.Redis.from_url(f"{redis_server.url}/1").flushdb()
    return make_env(databases["main_hand"], databases["recs_hand"], redis_server.url)


class MainFactory:
    """Rows in the hand-built main DB (the test harness writes; the service never does)."""

    def __init__(self, url):
        self.conn = psycopg2.connect(url)
        self.conn.autocommit = True
        self._ids = {"present": 0, "like": 0, "click": 0}

    def user(self, user_id, gender=None, birth_date=None, geo_id=None):
        with self.conn.cursor() as cur:
            cur.execute("INSERT INTO users (id, gender, birth_date, geo_id) VALUES (%s, %s, %s, %s)",
                        (user_id, gender, birth_date, geo_id))
        return user_id

    def present(self, present_id=None, category="books", price=1000, platform="ozon", geo_id=None,
                status="in_stock", owner=None, gender=None, age=None):
        if present_id is None:
            self._ids["present"] += 1
            present_id = self._ids["present"]
        tags = {"category": category}
        if gender:
            tags["gender"] = gender
        if age:
            tags["age"] = age
        import json

        with self.conn.cursor() as cur:
            cur.execute(
                "INSERT INTO handpicked_presents (id, user_id, title, price, platform, geo_id, status, categories) "
                "VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
                (present_id, owner, f"gift {present_id}", price, platform, geo_id, status, json.dumps(tags)),
            )
        return present_id

    def _event(self, table, kind, user_id, present_id, at):
        self._ids[kind] += 1
        with self.conn.cursor() as cur:
            cur.execute(f"INSERT INTO {table} (id, user_id, handpicked_present_id, created_at) VALUES (%s, %s, %s, %s)",
                        (self._ids[kind], user_id, present_id, at or "2026-11-01T12:00:00Z"))

    def like(self, user_id, present_id, at=None):
        self._event("handpicked_likes", "like", user_id, present_id, at)

    def click(self, user_id, present_id, at=None):
        self._event("handpicked_present_clicks", "click", user_id, present_id, at)

    def close(self):
        self.conn.close()


@pytest.fixture
def main_factory(hand_env):
    f = MainFactory(hand_env["MAIN_DATABASE_URL"])
    yield f
    f.close()


@pytest.fixture(autouse=True)
def _fresh_relisting_snapshots():
    """The live sync keeps a catalogue snapshot per recommendations DB in its process
    (workers.lists): each test starts without one, as a new worker does."""
    import sys

    lists = sys.modules.get("workers.lists")
    if lists is not None:
        lists._SNAPSHOTS.clear()
    yield
