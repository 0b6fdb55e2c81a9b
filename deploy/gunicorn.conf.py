"""Production gunicorn settings for the API (also used by `make serve`, `make run`, `make bench`,
the bench's bare baseline, and the tests' live server).

gevent workers: each connection is a greenlet, so idle keep-alive sockets and clients
that trickle a body cost a little memory, not a worker (with sync workers two idle
sockets stalled the API for 30 s). Requests are a few milliseconds of CPU and a Redis
or PostgreSQL round trip; while one waits on the network the worker serves others.
psycogreen makes psycopg2 wait in the gevent hub too, so a frozen database holds only
the requests that query it, each until its deadline (api.deadline, DB_TIMEOUT_MS).
"""
# Patch before anything imports socket, ssl, threading, psycopg2 or redis: with
# preload_app the master imports the app (and its clients) before forking, and the
# workers inherit whatever was imported then. gunicorn's gevent worker patches again
# after the fork; patching twice is a no-op.
from gevent import monkey

monkey.patch_all()

from psycogreen.gevent import patch_psycopg  # noqa: E402  (must follow patch_all)

patch_psycopg()

import os  # noqa: E402
import resource  # noqa: E402

bind = f"0.0.0.0:{os.environ.get('PORT', '8001')}"
workers = int(os.environ.get("WEB_CONCURRENCY", "2"))
# gunicorn's gevent worker, accepting connections in batches while hundreds queue up
# (deploy/gevent_worker.py: one accept per loop turn overflowed the accept queue at 10,000).
worker_class = "deploy.gevent_worker.GeventWorker"
# Simultaneous connections per worker (idle keep-alives included).
worker_connections = int(os.environ.get("WORKER_CONNECTIONS", "10000"))
keepalive = 5
# Connections the kernel queues before a worker accepts them (capped by net.core.somaxconn).
# A burst of thousands of connects overflows the default 2048, and a dropped SYN is retried
# by the client only after 1, 3, 7... seconds.
backlog = 4096
# The heartbeat: a worker whose event loop is blocked this long is restarted. Requests
# themselves end at DB_TIMEOUT_MS (a 503), so this only catches a stuck loop.
timeout = 30
graceful_timeout = 10
# No max_requests: at thousands of requests a second a recycled worker every minute or
# so costs dropped keep-alive connections, a cold catalogue snapshot and latency spikes.
# Memory is bounded instead (pools of fixed size, a capped snapshot); `make chaos`'s
# soak checks that worker RSS stays flat.
max_requests = 0
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


def _raise_file_limit(wanted: int = 65536) -> None:
    """Every connection is a file descriptor: lift the soft limit towards the hard one (inherited by workers)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


_raise_file_limit()


def when_ready(server):
    """The master has imported the app: move its objects out of the collector's reach, so
    workers never scan them and their pages stay shared after fork (Python's gc.freeze docs)."""
    import gc

    gc.freeze()
