"""Production gunicorn settings for the API (also used by `make serve` and `make bench`)."""
import os

bind = f"0.0.0.0:{os.environ.get('PORT', '8001')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
worker_class = "sync"
# Sync workers: each request is a few milliseconds of CPU, so threads would only add
# GIL contention; keep-alive lets the Rails client reuse connections.
keepalive = 5
timeout = 30
graceful_timeout = 10
max_requests = 100000
max_requests_jitter = 10000
# Import the app in the master so workers share its pages; connections are still
# opened lazily in each worker after fork.
preload_app = True
accesslog = None  # the app writes its own key=value access line
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")


# Prometheus multiprocess mode (api/metrics.py): every worker writes its counters to
# files in PROMETHEUS_MULTIPROC_DIR, which must exist before the app is imported and
# hold no files of an earlier run. Unset: this master makes a private directory and
# removes it on exit. Set: its *.db files are cleared at start (prometheus-client's
# rule), so give each gunicorn its own directory.
def _metrics_dir():
    import glob
    import tempfile

    if os.environ.get("RECS_METRICS_DIR_PID") == str(os.getpid()):
        return  # configuration re-read on SIGHUP: same master, same directory
    os.environ["RECS_METRICS_DIR_PID"] = str(os.getpid())
    os.environ.pop("RECS_METRICS_DIR_OWNED", None)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="recs-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        os.environ["RECS_METRICS_DIR_OWNED"] = path


_metrics_dir()


def child_exit(server, worker):
    # A dead worker's counters stay (they are totals); only its live-gauge files go.
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    owned = os.environ.get("RECS_METRICS_DIR_OWNED")
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        import shutil

        shutil.rmtree(owned, ignore_errors=True)
