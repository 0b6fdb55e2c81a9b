"""Local-stack helpers for the Makefile.

  python -m deploy.stack init-db    create both databases if missing, apply schema.sql
  python -m deploy.stack has-data   exit 0 when the main DB already holds presents

Databases are created only when absent; nothing existing is dropped or altered
except by applying schema.sql, which is idempotent.
"""
from __future__ import annotations

import sys
from pathlib import Path
import psycopg2
from psycopg2 import sql

from deploy.seed import existing_rows
from shared.db import database_name, with_database
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


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


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    settings = load_settings()
    if argv == ["init-db"]:
        for url in (settings.main_database_url, settings.recommendations_database_url):
            if ensure_database(url):
                print(f"created database {database_name(url)}")
        apply_schema(settings.recommendations_database_url, ROOT / "schema.sql")
        print("recommendations schema applied")
        return 0
    if argv == ["has-data"]:
        conn = psycopg2.connect(settings.main_database_url)
        try:
            return 0 if existing_rows(conn) else 1
        finally:
            conn.close()
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
