"""GET /health, GET /stats and GET /openapi.json."""
from __future__ import annotations

import time

from flask import Blueprint

from api.http import json_response, services
from api.openapi import document
from shared import store
from shared.db import ping
from shared.jobs import job_health

bp = Blueprint("ops", __name__)


def _check(fn) -> dict:
    started = time.perf_counter()
    try:
        fn()
    except Exception as exc:  # any failure means "down"; the message says which
        return {"status": "down", "error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}
    return {"status": "up", "latency_ms": round((time.perf_counter() - started) * 1000, 2)}


def _select_one(cur):
    cur.execute("SELECT 1")
    cur.fetchone()


@bp.get("/health")
def health():
    s = services()
    checks = {
        "main_db": _check(lambda: ping(s.connect_main)),
        "recommendations_db": _check(lambda: s.recs_db.run(_select_one)),
        "redis": _check(lambda: s.cache.client.ping()),
    }
    failing = [name for name, c in checks.items() if c["status"] != "up"]
    body = {"checks": checks}
    late = stuck = []
    if "recommendations_db" not in failing:
        jobs = s.recs_db.run(lambda cur: job_health(cur, s.settings))
        body["freshness"], late, stuck = jobs["freshness"], jobs["late"], jobs["stuck"]
    if failing:
        body.update(status="unavailable", failing=failing)
        return json_response(body, 503)
    body["status"] = "degraded" if late or stuck else "ok"
    if late:
        body["late_jobs"] = late
    if stuck:
        body["stuck_jobs"] = stuck
    return json_response(body, 200)


def _part(fn):
    try:
        return fn()
    except Exception as exc:
        return {"error": (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]}


@bp.get("/stats")
def stats():
    s = services()

    def recs_db():
        def read(cur):
            return {"tables": store.table_counts(cur), "jobs": store.last_runs(cur)}

        return s.recs_db.run(read)

    return json_response({
        "main_db": _part(lambda: s.recs_db.run(store.main_db_stats)),
        "recommendations_db": _part(recs_db),
        "cache": _part(s.cache.stats),
        "config": s.settings.public(),
    })


@bp.get("/openapi.json")
def openapi():
    return json_response(document())
