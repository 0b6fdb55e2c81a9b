"""GET /metrics: Prometheus text format.

Request metrics are counted once per request in the WSGI access-log layer
(api.accesslog), so every endpoint, the fast path included, is covered by one call.
Under gunicorn every worker writes its counters to memory-mapped files in
PROMETHEUS_MULTIPROC_DIR (prometheus-client's multiprocess mode; deploy/gunicorn.conf.py
creates a per-run directory when the variable is unset), and a scrape of any worker
adds up all of them. Without that variable (the Flask test client, `flask run`) the
counters live in this process.

Job metrics are not counters kept by a process: they are read from the
recommendations DB's job_runs table at scrape time (JobCollector), under the API's
statement timeout, so every API worker reports the same figures and a scrape never
hangs on a slow database.
"""
from __future__ import annotations

import os

import psycopg2
from flask import Blueprint, Response, current_app
from prometheus_client import CONTENT_TYPE_LATEST, REGISTRY, CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily

from api.accesslog import ALGORITHM, CACHE_HIT
from shared.deadline import TimedOut
from shared.jobs import JOBS
from shared.live import sync_status

bp = Blueprint("metrics", __name__)

REQUESTS = Counter("recs_http_requests_total", "HTTP requests by endpoint, method, status, algorithm and cache hit",
                   ["endpoint", "method", "status", "algorithm", "cache_hit"])
LATENCY = Histogram("recs_http_request_duration_seconds", "Server time per request, by endpoint and cache hit",
                    ["endpoint", "cache_hit"],
                    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0))
DEPENDENCY_ERRORS = Counter("recs_dependency_errors_total",
                            "Failed calls to a dependency (timeouts, refused connections, calls the breaker refused)",
                            ["dependency"])

STORES_DROPPED = Counter("recs_cache_stores_dropped_total",
                         "Cache stores a web worker dropped unsent: its queue of stores waiting for Redis was full "
                         "(shared.writebehind)")

RECOMMENDATION_PATHS = frozenset({"/popular", "/personalized"})
# Every other label value is a fixed path too, so the label set stays bounded
# whatever paths clients send.
KNOWN_PATHS = RECOMMENDATION_PATHS | {
    "/events", "/health", "/livez", "/readyz", "/stats", "/metrics", "/categories", "/openapi.json", "/docs",
    "/dashboard", "/dashboard/api/overview"} | {f"/admin/{job.admin_path}" for job in JOBS.values()}


def endpoint_label(path: str) -> str:
    if path in KNOWN_PATHS:
        return path
    if path.startswith("/admin/tasks/"):
        return "/admin/tasks/{id}"
    if path.startswith("/dashboard/api/user/"):
        return "/dashboard/api/user/{id}"
    if path.startswith("/docs/"):
        return "/docs/*"
    return "other"


def dependency_error(dependency: str):
    """A no-argument callback counting one failed call to `dependency`."""
    return DEPENDENCY_ERRORS.labels(dependency).inc


class CountedConnection:
    """A shared.db.LazyConnection whose failed calls (connection errors, timeouts,
    calls refused while the database is known down) are counted as dependency errors."""

    def __init__(self, conn, dependency: str):
        self._conn = conn
        self._count = dependency_error(dependency)

    def run(self, fn):
        try:
            return self._conn.run(fn)
        except (psycopg2.OperationalError, psycopg2.InterfaceError, TimedOut):
            self._count()
            raise

    def __getattr__(self, name):
        return getattr(self._conn, name)


class RequestObserver:
    """Called by the access-log layer after each request: Prometheus counters, and the
    latency of recommendation requests for the dashboard's minute series (no I/O:
    the cache writes that series with its next generation check)."""

    def __init__(self, services, prometheus: bool = True):
        self.services = services
        self.prometheus = prometheus
        self._children: dict = {}  # label values -> (counter child, histogram child): labels() costs a lock

    def __call__(self, environ, status: str, seconds: float) -> None:
        path = environ.get("PATH_INFO", "")
        hit = environ.get(CACHE_HIT)
        if path in RECOMMENDATION_PATHS:
            self.services.cache.note_latency(seconds)
        if not self.prometheus:
            return
        hit_label = "-" if hit is None else ("true" if hit else "false")
        key = (path, environ.get("REQUEST_METHOD", "-"), status, environ.get(ALGORITHM, "-"), hit_label)
        children = self._children.get(key)
        if children is None:
            endpoint = endpoint_label(path)
            method = key[1] if key[1] in ("GET", "POST", "HEAD", "PUT", "DELETE", "OPTIONS", "PATCH") else "other"
            children = (REQUESTS.labels(endpoint, method, status, key[3], hit_label),
                        LATENCY.labels(endpoint, hit_label))
            if len(self._children) < 10000:  # odd paths map to "other" but would fill this dict
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)


JOB_RUNS_SQL = """
SELECT job,
       extract(epoch FROM max(finished_at) FILTER (WHERE status = 'success')),
       count(*) FILTER (WHERE status = 'failed'),
       count(*) FILTER (WHERE status = 'success'),
       count(*) FILTER (WHERE status = 'running')
FROM job_runs GROUP BY job
"""

LAST_SUCCESS_SQL = """
SELECT DISTINCT ON (job) job, duration_ms, rows_written
FROM job_runs WHERE status = 'success' ORDER BY job, finished_at DESC
"""


def read_job_metrics(cur) -> dict:
    cur.execute(JOB_RUNS_SQL)
    out = {job: {"last_success": last, "failed": failed, "succeeded": ok, "running": running}
           for job, last, failed, ok, running in cur.fetchall()}
    cur.execute(LAST_SUCCESS_SQL)
    for job, duration_ms, rows in cur.fetchall():
        out.setdefault(job, {}).update(duration_ms=duration_ms, rows=rows)
    return out


class JobCollector:
    """Per-job figures from job_runs, read when Prometheus scrapes."""

    def __init__(self, services):
        self.services = services

    def collect(self):
        up = GaugeMetricFamily("recs_job_metrics_up", "1 when job_runs could be read for this scrape")
        settings = self.services.settings
        try:
            jobs, live = self.services.recs_db.run(lambda cur: (read_job_metrics(cur), sync_status(cur, settings)))
        except Exception:  # a scrape still answers; the gauge says the job figures are missing
            up.add_metric([], 0)
            yield up
            return
        up.add_metric([], 1)
        yield up
        families = {
            "last_success": GaugeMetricFamily("recs_job_last_success_timestamp_seconds",
                                              "Unix time the job last finished successfully", labels=["job"]),
            "duration_ms": GaugeMetricFamily("recs_job_last_success_duration_seconds",
                                             "Wall time of the job's last successful run", labels=["job"]),
            "rows": GaugeMetricFamily("recs_job_last_success_rows", "Rows written by the job's last successful run",
                                      labels=["job"]),
            "running": GaugeMetricFamily("recs_job_running_runs", "Runs recorded as running", labels=["job"]),
        }
        failed = CounterMetricFamily("recs_job_failures", "Failed runs recorded in job_runs", labels=["job"])
        succeeded = CounterMetricFamily("recs_job_successes", "Successful runs recorded in job_runs", labels=["job"])
        for job, figures in sorted(jobs.items()):
            for name, family in families.items():
                value = figures.get(name)
                if value is not None:
                    family.add_metric([job], float(value) / 1000 if name == "duration_ms" else float(value))
            failed.add_metric([job], figures.get("failed", 0))
            succeeded.add_metric([job], figures.get("succeeded", 0))
        yield from families.values()
        yield failed
        yield succeeded
        # The live sync (recs.sync_recent_activity): absent until its first run.
        if live.get("lag_s") is not None:
            lag = GaugeMetricFamily("recs_live_sync_lag_seconds",
                                    "How far behind the main DB the live sync may be (as in /health live_sync.lag_s)")
            lag.add_metric([], float(live["lag_s"]))
            since = GaugeMetricFamily("recs_live_sync_since_last_run_seconds",
                                      "Seconds since the live sync last finished")
            since.add_metric([], float(live["since_last_sync_s"]))
            yield lag
            yield since


def exposition(services) -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
    else:
        registry = REGISTRY
    jobs = CollectorRegistry()
    jobs.register(JobCollector(services))
    job_text = generate_latest(jobs)  # first: a failed read shows in this scrape's error counter
    return generate_latest(registry) + job_text


@bp.get("/metrics")
def metrics():
    services = current_app.extensions["recs"]
    if not services.settings.metrics_enabled:
        return Response(b"metrics are disabled (METRICS_ENABLED=0)\n", status=404, mimetype="text/plain")
    return Response(exposition(services), content_type=CONTENT_TYPE_LATEST)
