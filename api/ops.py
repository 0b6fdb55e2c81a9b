"""GET /livez, /readyz, /health and /stats."""
from __future__ import annotations

from flask import Blueprint

from api.health import run_bounded
from api.http import json_response, services
from shared import store
from shared.db import ping
from shared.jobs import job_health
from shared.live import sync_status

bp = Blueprint("ops", __name__)

DEPENDENCIES = ("main_db", "recommendations_db", "redis")


def _select_one(cur):
    cur.execute("SELECT 1")
    cur.fetchone()


def check_timeout_s(settings) -> float:
    """Each dependency check gets most of a request's deadline, and at most 1 s."""
    return min(1.0, 0.6 * settings.db_timeout_ms / 1000)


def diagnose(s) -> dict:
    """The /health body: every check at once, each bounded (api.health). Cached by Services.health.

    status: "unavailable" when this instance cannot serve at all (neither Redis nor the
    recommendations DB answers: no cache hit and no miss can be served); "degraded" when it
    serves but something is wrong (a dependency down, a job late); else "ok".
    """
    results = run_bounded({
        "main_db": lambda: ping(s.connect_main),
        "recommendations_db": lambda: s.recs_db.run(_select_one),
        "redis": lambda: s.cache.client.ping(),
        "jobs": lambda: s.recs_db.run(lambda cur: {**job_health(cur, s.settings),
                                                    "live_sync": sync_status(cur, s.settings)}),
    }, check_timeout_s(s.settings))
    checks = {name: ({"status": "up", "latency_ms": r["latency_ms"]} if r["ok"]
                     else {"status": "down", "error": r["error"]}) for name, r in results.items()
              if name in DEPENDENCIES}
    failing = [name for name in DEPENDENCIES if checks[name]["status"] != "up"]
    body = {"checks": checks}
    late = stuck = []
    if results["jobs"]["ok"]:
        jobs = results["jobs"]["value"]
        body["freshness"], late, stuck = jobs["freshness"], jobs["late"], jobs["stuck"]
        body["live_sync"] = jobs["live_sync"]
        late = late + (["live_sync"] if jobs["live_sync"]["behind"] else [])
    can_serve = checks["redis"]["status"] == "up" or checks["recommendations_db"]["status"] == "up"
    body["serving"] = {"cache_hits": checks["redis"]["status"] == "up",
                       "cache_misses": checks["recommendations_db"]["status"] == "up"}
    if not can_serve:
        body["status"] = "unavailable"
    else:
        body["status"] = "degraded" if failing or late or stuck else "ok"
    if failing:
        body["failing"] = failing
    if late:
        body["late_jobs"] = late
    if stuck:
        body["stuck_jobs"] = stuck
    return body


@bp.get("/livez")
def livez():
    """Liveness: the process answers. No dependency is called."""
    return json_response({"status": "ok"})


@bp.get("/readyz")
def readyz():
    """Readiness: this instance can serve (Redis or the recommendations DB answers)."""
    body, age = services().health.get()
    ready = body["status"] != "unavailable"
    return json_response({"status": "ready" if ready else "unavailable", "serving": body["serving"],
                          "failing": body.get("failing", []), "age_s": round(age, 2)}, 200 if ready else 503)


@bp.get("/health")
def health():
    body, age = services().health.get()
    return json_response({**body, "age_s": round(age, 2)}, 503 if body["status"] == "unavailable" else 200)


@bp.get("/stats")
def stats():
    """Each part is read at once and bounded like a /health check: a frozen dependency shows as an error."""
    s = services()

    def recs_db():
        def read(cur):
            return {"tables": store.table_counts(cur), "jobs": store.last_runs(cur),
                    "live_sync": sync_status(cur, s.settings)}

        return s.recs_db.run(read)

    parts = run_bounded({"main_db": lambda: s.recs_db.run(store.main_db_stats), "recommendations_db": recs_db,
                         "cache": s.cache.stats}, check_timeout_s(s.settings))
    body = {name: (r["value"] if r["ok"] else {"error": r["error"]}) for name, r in parts.items()}
    return json_response({**body, "config": s.settings.public()})

