"""Local-stack helpers for the Makefile and docker-compose.

  python -m deploy.stack init-db    create both databases if missing, apply schema.sql
  python -m deploy.stack has-data   exit 0 when the main DB already holds presents
  python -m deploy.stack init       compose's one-shot `init` service: init-db; with DEMO_DATA=1 and
                                    an empty main DB, the demo main schema and the DEMO_PRESET preset
                                    (default: default); then the first full refresh, unless the
                                    recommendations DB has already had one

Databases are created only when absent; nothing existing is dropped or altered
except by applying schema.sql, which is idempotent.
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

import psycopg2
from psycopg2 import sql

from deploy.seed import existing_rows, seed
from shared.db import database_name, with_database
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def query(url: str, sql_text, params=None) -> list:
    """Rows of one read on its own short-lived connection (tests, bench and chaos checks)."""
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute(sql_text, params)
            return cur.fetchall()
    finally:
        conn.close()


def ensure_database(url: str) -> bool:
    name = database_name(url)
    conn = psycopg2.connect(with_database(url, "postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
            if cur.fetchone():
                return False
            cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
            return True
    finally:
        conn.close()


def apply_schema(url: str, path: Path) -> None:
    conn = psycopg2.connect(url)
    try:
        with conn.cursor() as cur:
            cur.execute("SET client_min_messages = warning")
            cur.execute(path.read_text())
        conn.commit()
    finally:
        conn.close()


def init_db(settings) -> None:
    for url in (settings.main_database_url, settings.recommendations_database_url):
        if ensure_database(url):
            print(f"created database {database_name(url)}")
    apply_schema(settings.recommendations_database_url, ROOT / "schema.sql")
    print("recommendations schema applied")


def main_db_rows(settings) -> int:
    conn = psycopg2.connect(settings.main_database_url)
    try:
        return existing_rows(conn)
    finally:
        conn.close()


def refreshed_before(settings) -> bool:
    conn = psycopg2.connect(settings.recommendations_database_url)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT 1 FROM job_runs WHERE job = 'popular_items' AND status = 'success' LIMIT 1")
            return cur.fetchone() is not None
    finally:
        conn.close()


def init(settings, environ) -> int:
    init_db(settings)
    if environ.get("DEMO_DATA") == "1":
        if main_db_rows(settings):
            print("init: main DB already has data; not seeding")
        else:
            preset = environ.get("DEMO_PRESET") or "default"
            seed(settings.main_database_url, preset, 42, replace=False, quiet=True)
            print(f"init: seeded the {preset} demo preset")
    if refreshed_before(settings):
        # A restart of the stack: the data is there and beat keeps it fresh.
        print("init: recommendations DB already refreshed; skipping the first refresh")
        return 0
    from workers import refresh

    status = refresh.main([])
    # Another refresh holding the lock (a worker) fills the same tables: not a failure.
    return 0 if status == refresh.ALREADY_RUNNING else status


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    if argv == ["init-db"]:
        init_db(settings)
        return 0
    if argv == ["has-data"]:
        return 0 if main_db_rows(settings) else 1
    if argv == ["init"]:
        return init(settings, os.environ)
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
