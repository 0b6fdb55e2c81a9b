"""GET /health, GET /stats and GET /openapi.json."""
from __future__ import annotations

import time

from flask import Blueprint

from api.http import json_response, services
from api.openapi import document
from shared import store
from shared.db import ping
from shared.jobs import JOBS, interval_seconds
from shared.live import sync_status

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


def freshness(s) -> dict:
    """Per scheduled job: age of its last success; late when older than twice its interval."""
    successes = s.recs_db.run(store.last_successes)
    out = {}
    for job in JOBS.values():
        interval = interval_seconds(job, s.settings)
        if interval is None:
            continue
        last = successes.get(job.name)
        age = float(last["age_s"]) if last else None
        out[job.name] = {
            "last_success": last["finished_at"] if last else None,
            "age_s": round(age, 1) if age is not None else None,
            "interval_s": interval,
            "late": age is None or age > 2 * interval,
        }
    return out


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
    if "recommendations_db" not in failing:
        body["freshness"] = fresh = freshness(s)
        late = [name for name, f in fresh.items() if f["late"]]
        body["live_sync"] = live = s.recs_db.run(lambda cur: sync_status(cur, s.settings))
        late += ["live_sync"] if live["behind"] else []
    else:
        late = []
    if failing:
        body.update(status="unavailable", failing=failing)
        return json_response(body, 503)
    body["status"] = "degraded" if late else "ok"
    if late:
        body["late_jobs"] = late
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
            return {"tables": store.table_counts(cur), "jobs": store.last_runs(cur),
                    "live_sync": sync_status(cur, s.settings)}

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
