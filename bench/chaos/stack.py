"""The private stack the fault campaign runs against, and the knobs that break it.

Its own databases (a seeded main DB reused between runs, a fresh recommendations DB
dropped at the end), a private memory-capped redis-server, one pausable TCP proxy in
front of PostgreSQL per database (deploy/faultproxy.py), gunicorn under the production
config (deploy/gunicorn.conf.py) and a Celery worker. Nothing here touches the
machine's own Redis or any database it did not create.
"""
from __future__ import annotations

import dataclasses
import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import psycopg2
import redis
from psycopg2 import sql

from bench.run import Gunicorn, children, rss_mb
from deploy.faultproxy import FaultProxy
from deploy.localproc import RedisServer
from deploy.seed import seed
from deploy.stack import ROOT, apply_schema, ensure_database, query
from shared.db import database_name, with_database

BIN = Path(sys.executable).parent
# Read by gunicorn.conf.py or set per process by the stack, so never taken from the shell.
SERVER_VARIABLES = {"WEB_CONCURRENCY", "PORT", "LOG_LEVEL"}


def settings_variables() -> set[str]:
    """Every environment variable the service's settings read (one per Settings field)."""
    from shared.settings import Settings

    names = getattr(Settings, "model_fields", None) or {f.name: f for f in dataclasses.fields(Settings)}
    return {name.upper() for name in names}


def via_proxy(url: str, port: int) -> str:
    """The same database URL through 127.0.0.1:port (the proxy), keeping user and query."""
    parts = urlsplit(url)
    userinfo = parts.netloc.rpartition("@")[0]
    return urlunsplit(parts._replace(netloc=(userinfo + "@" if userinfo else "") + f"127.0.0.1:{port}"))


def tcp_target(url: str) -> tuple[str, int]:
    parts = urlsplit(url)
    host = parts.hostname or "127.0.0.1"  # a local-socket URL: the same server over TCP
    return ("127.0.0.1" if host.startswith("/") else host), parts.port or 5432


def drop_database(url: str) -> None:
    conn = psycopg2.connect(with_database(url, "postgres"))
    conn.autocommit = True
    try:
        with conn.cursor() as cur:
            name = database_name(url)
            cur.execute("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = %s "
                        "AND pid <> pg_backend_pid()", (name,))
            cur.execute(sql.SQL("DROP DATABASE IF EXISTS {}").format(sql.Identifier(name)))
    finally:
        conn.close()


class Api(Gunicorn):
    """bench.run's gunicorn under deploy/gunicorn.conf.py, plus what the campaign inspects."""

    def worker_pids(self) -> list[int]:
        try:
            return sorted(children(self.proc.pid))
        except FileNotFoundError:
            return []

    def log_offset(self) -> int:
        self.handle.flush()
        return self.log.stat().st_size

    def log_since(self, offset: int) -> str:
        with open(self.log, errors="replace") as f:
            f.seek(offset)
            return f.read()

    def worker_events(self, offset: int) -> dict:
        """What gunicorn's log says happened to its workers since `offset`."""
        text = self.log_since(offset)
        return {
            "worker_timeouts": len(re.findall(r"WORKER TIMEOUT", text)),
            "workers_killed": len(re.findall(r"was sent SIGKILL|was sent code 9|Worker \(pid:\d+\) was sent", text)),
            "workers_booted": len(re.findall(r"Booting worker", text)),
            "too_many_open_files": len(re.findall(r"Too many open files|EMFILE", text)),
            "recycled_by_max_requests": len(re.findall(r"Autorestarting worker", text)),
        }

    def statuses(self, offset: int) -> dict:
        """Response statuses in the API's own access lines since `offset` (server side: what wrk counts as non-2xx)."""
        counts: dict[str, int] = {}
        for status in re.findall(r"method=\S+ path=\S+ status=(\d+)", self.log_since(offset)):
            counts[status] = counts.get(status, 0) + 1
        return counts

    def worker_rss_mb(self) -> dict:
        return {pid: rss_mb(pid) for pid in self.worker_pids()}


class Celery:
    """A Celery process (worker or beat) in its own process group, so kill9() takes its children down too."""

    def __init__(self, args: list[str], env: dict, log: Path, ready_marker: str):
        self.log, self.ready_marker = log, ready_marker
        self.offset = log.stat().st_size if log.exists() else 0
        self.handle = open(log, "a")
        self.proc = subprocess.Popen([str(BIN / "celery"), "-A", "workers.app", *args], cwd=ROOT, env=env,
                                     stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True)

    def output(self) -> str:
        with open(self.log, errors="replace") as f:
            f.seek(self.offset)
            return f.read()

    def wait_ready(self, timeout_s: float = 60) -> bool:
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.ready_marker in self.output():
                return True
            if self.proc.poll() is not None:
                return False
            time.sleep(0.2)
        return False

    def kill9(self) -> None:
        os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)
        self.handle.close()

    def stop(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        if not self.handle.closed:
            self.handle.close()


class Stack:
    def __init__(self, base_url: str, preset: str, workdir: Path, redis_maxmemory: str, db_timeout_ms: int,
                 job_lease_s: int, main_url: str | None = None, recs_url: str | None = None):
        self.preset = preset
        self.workdir = workdir
        self.main_url = main_url or with_database(base_url, f"recs_chaos_{preset}_main")
        self.own_recs = recs_url is None
        self.recs_url = recs_url or with_database(base_url, f"recs_chaos_{uuid.uuid4().hex[:8]}_recs")
        self.redis_maxmemory = redis_maxmemory
        self.db_timeout_ms = db_timeout_ms
        self.job_lease_s = job_lease_s
        self.redis: RedisServer | None = None
        self.proxies: dict[str, FaultProxy] = {}
        self.apis: list[Api] = []
        self.workers: list[Celery] = []  # workers and beat
        self.refresh: dict = {}

    # -- setup and teardown ---------------------------------------------------------------
    def start(self, log=print) -> "Stack":
        ensure_database(self.main_url)
        ensure_database(self.recs_url)
        apply_schema(self.recs_url, ROOT / "schema.sql")
        log(f"chaos: seeding {self.preset} into {database_name(self.main_url)} (skipped when already loaded)")
        seed(self.main_url, self.preset, 42, replace=False, quiet=True)
        self.redis = RedisServer().start()
        # Capped like production: at maxmemory only keys with a TTL (the cache's) are evicted, never the broker's.
        admin = redis.Redis(port=self.redis.port)
        admin.config_set("maxmemory", self.redis_maxmemory)
        admin.config_set("maxmemory-policy", "volatile-lru")
        admin.close()
        for kind, url in (("main", self.main_url), ("recs", self.recs_url)):
            self.proxies[kind] = FaultProxy(*tcp_target(url)).start()
        log("chaos: full refresh")
        started = time.monotonic()
        out = subprocess.run([sys.executable, "-m", "workers.refresh", "--json"], cwd=ROOT, env=self.env(),
                             capture_output=True, text=True, timeout=1800)
        if out.returncode != 0:
            raise RuntimeError(f"refresh failed: {out.stdout[-2000:]} {out.stderr[-2000:]}")
        self.refresh = {"seconds": round(time.monotonic() - started, 1),
                        "result": json.loads(out.stdout.strip().splitlines()[-1])}
        log(f"chaos: refresh took {self.refresh['seconds']} s")
        return self

    def reset(self) -> None:
        """Between cases: every API stopped, every dependency thawed."""
        for api in self.apis:
            if api.proc.poll() is None:
                api.stop()
        self.apis.clear()
        self.thaw_redis()
        for proxy in self.proxies.values():
            proxy.thaw()

    def stop(self) -> None:
        for api in self.apis:
            if api.proc.poll() is None:
                api.stop()
        for worker in self.workers:
            worker.stop()
        if self.redis and self.redis.proc:
            os.kill(self.redis.proc.pid, signal.SIGCONT)  # a frozen server still has to hear SIGTERM
            self.redis.stop()
        for proxy in self.proxies.values():
            proxy.thaw()
            proxy.stop()
        if self.own_recs:
            drop_database(self.recs_url)

    # -- processes ------------------------------------------------------------------------
    def env(self, proxied: bool = False, **extra) -> dict:
        """The environment of every process: only this stack's URLs, whatever the shell says."""
        main, recs = self.main_url, self.recs_url
        if proxied:
            main = via_proxy(main, self.proxies["main"].port)
            recs = via_proxy(recs, self.proxies["recs"].port)
        # Hermetic: no setting, server knob or libpq default (PG*) of the shell reaches the stack.
        shell = settings_variables() | SERVER_VARIABLES
        env = {k: v for k, v in os.environ.items() if k not in shell and not k.endswith("_URL") and not k.startswith("PG")}
        env.update({
            "MAIN_DATABASE_URL": main, "RECOMMENDATIONS_DATABASE_URL": recs,
            "RECOMMENDATIONS_REDIS_URL": f"{self.redis.url}/1", "CELERY_BROKER_URL": f"{self.redis.url}/2",
            "CELERY_RESULT_BACKEND": f"{self.redis.url}/3", "DB_TIMEOUT_MS": str(self.db_timeout_ms),
            "JOB_LEASE_SECONDS": str(self.job_lease_s), "LOG_LEVEL": "info",
        })
        env.update({k: str(v) for k, v in extra.items()})
        return env

    def api(self, proxied: bool = False, name: str = "api", **extra) -> Api:
        api = Api("api.wsgi:app", self.env(proxied, **extra), self.workdir / f"{name}-{len(self.apis)}.log",
                  inherit_env=False)
        self.apis.append(api)
        wait_until_up(api.url)
        return api

    def worker(self, **extra) -> Celery:
        """`make worker`'s process (one pool process here, so a job holds the whole worker)."""
        worker = Celery(["worker", "--loglevel=INFO", "--concurrency=1", "-Q", "recs", "--without-heartbeat",
                         "--without-gossip", "--without-mingle"], self.env(**extra), self.workdir / "worker.log",
                        " ready.")
        self.workers.append(worker)
        if not worker.wait_ready():
            raise RuntimeError("celery worker did not start:\n" + worker.output()[-3000:])
        return worker

    def beat(self) -> Celery:
        """`make beat`'s process: the schedule, with whatever periodic housekeeping it carries."""
        beat = Celery(["beat", "--loglevel=INFO", f"--schedule={self.workdir / 'celerybeat-schedule'}"], self.env(),
                      self.workdir / "beat.log", "beat: Starting")
        self.workers.append(beat)
        if not beat.wait_ready():
            raise RuntimeError("celery beat did not start:\n" + beat.output()[-3000:])
        return beat

    # -- faults and inspection ------------------------------------------------------------
    def freeze_redis(self) -> None:
        os.kill(self.redis.proc.pid, signal.SIGSTOP)

    def thaw_redis(self) -> None:
        os.kill(self.redis.proc.pid, signal.SIGCONT)

    def redis_client(self, db: int = 1) -> redis.Redis:
        return redis.Redis.from_url(f"{self.redis.url}/{db}", socket_timeout=10)

    def recs_query(self, text: str, params=None) -> list:
        return query(self.recs_url, text, params)


def wait_until_up(url: str, timeout_s: float = 30) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            urllib.request.urlopen(url + "/openapi.json", timeout=2).read()
            return
        except urllib.error.HTTPError:
            return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"API at {url} did not answer within {timeout_s} s")
