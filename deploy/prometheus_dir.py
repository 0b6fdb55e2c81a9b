"""PROMETHEUS_MULTIPROC_DIR for the API's gunicorn (imported by deploy/gunicorn.conf.py).

prometheus-client's multiprocess mode (api/metrics.py) has every worker write its
counters to files in that directory, which must exist before the app is imported and
hold no files of an earlier run. Unset: the master makes a private directory and
removes it on exit, so `make run`, `make serve`, the tests and the bench need nothing.
Set: its *.db files are cleared at start, so give each gunicorn its own directory.
"""
from __future__ import annotations

import glob
import os
import shutil
import tempfile

_PID = "RECS_METRICS_DIR_PID"
_OWNED = "RECS_METRICS_DIR_OWNED"


def prepare() -> str:
    """Called in the master while gunicorn reads its configuration."""
    if os.environ.get(_PID) == str(os.getpid()):
        return os.environ["PROMETHEUS_MULTIPROC_DIR"]  # configuration re-read on SIGHUP: same directory
    os.environ[_PID] = str(os.getpid())
    os.environ.pop(_OWNED, None)
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path:
        os.makedirs(path, exist_ok=True)
        for stale in glob.glob(os.path.join(path, "*.db")):
            os.remove(stale)
    else:
        path = tempfile.mkdtemp(prefix="recs-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = path
        os.environ[_OWNED] = path
    return path


def child_exit(server, worker):
    """gunicorn hook: a dead worker's counters stay in the totals; only its live-gauge files go."""
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)


def on_exit(server):
    """gunicorn hook: remove the directory this master made."""
    owned = os.environ.get(_OWNED)
    if owned and owned == os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        shutil.rmtree(owned, ignore_errors=True)
