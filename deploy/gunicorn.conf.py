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
# Prometheus multiprocess mode: a per-run PROMETHEUS_MULTIPROC_DIR made before the app
# is imported, exited workers marked dead, the directory removed on exit.
from deploy.prometheus_dir import child_exit, on_exit, prepare  # noqa: E402,F401  (gunicorn hooks)

prepare()
accesslog = None  # the app writes its own key=value access line
errorlog = "-"
loglevel = os.environ.get("LOG_LEVEL", "info")
