"""GET /dashboard: the ops dashboard, one self-contained page (no CDN: its script and
SVG charts are inline in api/dashboard.html), and the two JSON reads it draws from.

Protected like /admin by the WSGI guard (api/auth.py): basic auth when configured,
otherwise loopback clients only.
"""
from __future__ import annotations

import time
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import psycopg2
from flask import Blueprint, Response

from api.http import database_error_payload, error_response, json_response, services
from shared import explain, store
from shared.ids import parse_id
from shared.jobs import JOBS, interval_seconds

bp = Blueprint("dashboard", __name__)
PAGE = Path(__file__).with_name("dashboard.html")
RUNS_SHOWN = 12
SERIES_MINUTES = 60


@lru_cache(maxsize=1)
def _page() -> bytes:
    return PAGE.read_bytes()


@bp.get("/dashboard")
def page():
    return Response(_page(), mimetype="text/html")


def _part(fn):
    """One panel's data, or its error: a dead dependency blanks a panel, not the page."""
    try:
        return fn()
    except Exception as exc:
        return {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}


def _jobs(s) -> dict:
    runs = s.recs_db.run(lambda cur: store.recent_runs(cur, RUNS_SHOWN))
    now = datetime.now(timezone.utc)
    out = {}
    for job in JOBS.values():
        recent = runs.get(job.name, [])
        success = next((r["finished_at"] for r in recent if r["status"] == "success"), None)
        age = (now - success).total_seconds() if success else None
        interval = interval_seconds(job, s.settings)
        out[job.name] = {
            "task": job.task,
            "interval_s": interval,
            "last_success": success,
            "age_s": round(age, 1) if age is not None else None,
            "late": interval is not None and (age is None or age > 2 * interval),
            "runs": recent,
        }
    return out


def _volumes(s) -> dict:
    def read(cur):
        return {"recommendations_db": store.table_estimates(cur), "main_db": store.main_db_stats(cur)}

    return s.recs_db.run(read)


@bp.get("/dashboard/api/overview")
def overview():
    s = services()
    started = time.perf_counter()
    body = {
        "generated_at": datetime.now(timezone.utc),
        "jobs": _part(lambda: _jobs(s)),
        "series": _part(lambda: {"minutes": s.cache.minute_series(SERIES_MINUTES)}),
        "cache": _part(s.cache.stats),
        "volumes": _part(lambda: _volumes(s)),
    }
    body["server_ms"] = round((time.perf_counter() - started) * 1000, 2)
    return json_response(body)


@bp.get("/dashboard/api/user/<user_id>")
def user_preview(user_id: str):
    try:
        user_id = parse_id(user_id)
    except ValueError as exc:
        return error_response(400, "invalid_request", f"user_id: {exc}", [{"field": "user_id", "rule": str(exc)}])
    s = services()
    try:
        body = explain.preview(s.source, s.recs_db.run, user_id, s.settings.recommendation_list_size)
    except psycopg2.Error as exc:
        return json_response(database_error_payload(str(exc).strip().splitlines()[0] if str(exc).strip() else exc), 503)
    return json_response(body)
