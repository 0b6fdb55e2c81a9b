"""Start real processes for tests: gunicorn serving the API, a Celery worker."""
from __future__ import annotations

import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

from deploy.localproc import free_port

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


class Process:
    def __init__(self, args, env, log_name):
        self.path = Path(f"/tmp/{log_name}-{os.getpid()}-{time.monotonic_ns()}.log")
        self.log = open(self.path, "w")
        self.proc = subprocess.Popen(args, cwd=ROOT, env={**os.environ, **env}, stdout=self.log,
                                     stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        return self.path.read_text()

    def stop(self):
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        self.path.unlink(missing_ok=True)


def start_api(env: dict) -> tuple[Process, str]:
    port = free_port()
    proc = Process([str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", "api.wsgi:app"],
                   {**env, "PORT": str(port), "WEB_CONCURRENCY": "2"}, "recs-test-api")
    url = f"http://127.0.0.1:{port}"
    for _ in range(200):
        try:
            urllib.request.urlopen(url + "/openapi.json", timeout=1)
            return proc, url
        except OSError:
            if proc.proc.poll() is not None:
                raise RuntimeError("gunicorn exited:\n" + proc.output())
            time.sleep(0.05)
    proc.stop()
    raise RuntimeError("gunicorn did not start")


def start_worker(env: dict, queue: str = "recs") -> Process:
    return Process([str(BIN / "celery"), "-A", "workers.app", "worker", "--loglevel=INFO", "--concurrency=1",
                    "-Q", queue, "--without-heartbeat", "--without-gossip", "--without-mingle"], env, "recs-test-worker")


def start_beat(env: dict, schedule_dir: Path) -> Process:
    """celery beat with its schedule file in a private directory (never the shared default path)."""
    return Process([str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel=INFO",
                    f"--schedule={schedule_dir / 'celerybeat-schedule'}"], env, "recs-test-beat")
