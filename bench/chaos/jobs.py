"""Cases about the workers: kill -9 in the middle of refresh_all, and Redis filled past its cap."""
from __future__ import annotations

import json
import threading
import time

from celery import Celery

from bench.chaos.context import Ctx
from bench.chaos.load import Req, send, summarize
from bench.chaos.record import Record, ms

# Redis evicts before each command, so used_memory can sit a write's worth of bytes over maxmemory.
CAP_SLACK = 0.01
RUNS_SQL = "SELECT id, status, started_at, finished_at FROM job_runs WHERE job = 'refresh_all' AND id > %s ORDER BY id"


class ListWatcher(threading.Thread):
    """Sends fixed probes (hits and misses) in a loop and compares each list with the one seen first."""

    def __init__(self, port: int, probes: list[Req]):
        super().__init__(daemon=True)
        self.port, self.probes = port, probes
        self.baseline = [self._items(p)[1] for p in probes]
        self.samples: list[dict] = []
        self.stopping = threading.Event()

    def _items(self, probe: Req):
        r = send(self.port, probe, 10)
        items = None
        if r["status"] == 200:
            items = json.loads(r["body"])["items"]
        return r, items

    def run(self):
        while not self.stopping.is_set():
            for i, probe in enumerate(self.probes):
                r, items = self._items(probe)
                self.samples.append({"at": time.time(), "label": probe.label, "status": r["status"], "ms": r["ms"],
                                     "same": items is not None and items == self.baseline[i]})
            self.stopping.wait(0.5)

    def stop(self):
        self.stopping.set()
        self.join(30)


def _wait(predicate, timeout_s: float, every_s: float = 0.2):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(every_s)
    return None


def kill_refresh(ctx: Ctx) -> Record:
    stack, p = ctx.stack, ctx.plan
    rec = Record("kill_refresh", "kill -9 of the worker in the middle of refresh_all",
                 "POST /admin/refresh-all; while the run is `running`, SIGKILL to the Celery worker's whole process "
                 "group; then the worker is started again, as a supervisor would, and nothing else is done; "
                 f"celery beat runs throughout, as in production (JOB_LEASE_SECONDS={p.job_lease_s})",
                 f"the job runs again successfully within {p.job_wait_s:.0f} s; the old lists are served "
                 "throughout (identical); no job_runs row stays `running`")
    for w in stack.workers:
        w.stop()
    api = stack.api()
    worker = stack.worker()
    stack.beat()
    probes = ctx.hits(6) + ctx.misses(6)
    ctx.warm(api, probes)
    watcher = ListWatcher(api.port, probes)
    last_id = stack.recs_query("SELECT coalesce(max(id), 0) FROM job_runs")[0][0]
    watcher.start()
    try:
        posted = send(api.port, Req("admin", "/admin/refresh-all"), 30)
        rec.raw["post_refresh_all"] = {"status": posted["status"], "body": posted["body"].decode(errors="replace")}
        running = _wait(lambda: [r for r in stack.recs_query(RUNS_SQL, (last_id,)) if r[1] == "running"], 120, 0.05)
        if not running:
            rec.error = f"refresh_all never showed as running (POST answered {posted['status']})"
            return rec
        killed_id = running[0][0]
        # About a third into the run, by the pipeline's own time in setup (a process start not included).
        compute_s = stack.refresh["result"].get("seconds") or stack.refresh["seconds"]
        kill_after = min(30.0, max(0.3, 0.35 * compute_s))
        time.sleep(kill_after)
        still = stack.recs_query("SELECT status FROM job_runs WHERE id = %s", (killed_id,))[0][0]
        worker.kill9()
        killed_at = time.time()
        rec.check("the kill landed in the middle of the run", "row `running` at the kill",
                  f"run {killed_id} was `{still}` {kill_after:.1f} s after it started", still == "running")
        time.sleep(1)
        stack.worker()  # what a supervisor does: start the process again
        success = _wait(lambda: [r for r in stack.recs_query(RUNS_SQL, (killed_id,)) if r[1] == "success"],
                        p.job_wait_s, 1.0)
        recovered_s = round(time.time() - killed_at, 1) if success else None
        rerun = stack.recs_query(RUNS_SQL, (killed_id,))
        rerun_started = rerun[0][2].timestamp() if rerun else None
        rec.check("refresh_all ran again successfully after the kill", f"within {p.job_wait_s:.0f} s, no manual action",
                  f"success {recovered_s} s after the kill" if success else
                  f"no successful run within {p.job_wait_s:.0f} s (runs after the kill: "
                  f"{[(r[0], r[1]) for r in rerun]})", bool(success))
        # The lease of the killed run must lapse; give a dead run's row up to three leases to be marked.
        left = _wait(lambda: not stack.recs_query("SELECT 1 FROM job_runs WHERE status = 'running'"),
                     3 * p.job_lease_s + 5, 1.0)
        rows = stack.recs_query("SELECT id, job, status FROM job_runs WHERE id >= %s ORDER BY id", (killed_id,))
    finally:
        watcher.stop()
    still_running = [r for r in stack.recs_query("SELECT id, job FROM job_runs WHERE status = 'running'")]
    rec.check("job_runs rows left `running`", "0", f"{len(still_running)} {still_running}" if still_running else "0",
              not still_running and left is not None)
    # Until the new run starts swapping tables in, every list must be the one served before the kill.
    window_end = rerun_started or float("inf")
    old = [s for s in watcher.samples if s["at"] < window_end]
    changed = [s for s in old if not s["same"]]
    later = [s for s in watcher.samples if s["at"] >= window_end]
    rec.check("lists served from the POST until the new run starts", "identical to before, all 200",
              f"{len(old) - len(changed)} of {len(old)} identical"
              + (f"; {len(changed)} differ or failed ({summarize(changed)['statuses']})" if changed else ""),
              bool(old) and not changed)
    rec.raw.update(killed_run=killed_id, kill_after_s=kill_after, recovered_s=recovered_s, job_runs=[
        [r[0], r[1], r[2]] for r in rows], watcher={"before_rerun": len(old), "changed": len(changed),
                                                      "after_rerun": len(later),
                                                      "after_rerun_identical": sum(s["same"] for s in later)})
    rec.note(f"job_runs from the killed run on: {[(r[0], r[1], r[2]) for r in rows]}")
    rec.note(f"after the new run started: {sum(s['same'] for s in later)} of {len(later)} probe lists identical "
             f"(a new run may legitimately change them); probe p50 over the case "
             f"{ms(summarize(watcher.samples)['p50_ms'])}")
    api.stop()
    return rec


def redis_cap(ctx: Ctx) -> Record:
    stack, p = ctx.stack, ctx.plan
    rec = Record("redis_cap", "Redis filled past its memory cap",
                 f"with the worker stopped, a recs.cleanup_cache task is queued; then the cache DB is filled with "
                 f"2x the cap ({p.redis_maxmemory}) of keys with a TTL while clients send hits and misses; then the "
                 "worker starts",
                 "used memory stays within maxmemory (volatile-lru evicts cache keys); no write or serving error; "
                 "the queued task is still there and runs")
    for w in stack.workers:
        w.stop()
    api = stack.api()
    hits, misses = ctx.hits(), ctx.misses()
    ctx.warm(api, hits)
    broker, cache = stack.redis_client(2), stack.redis_client(1)
    celery = Celery("chaos", broker=stack.env()["CELERY_BROKER_URL"], backend=stack.env()["CELERY_RESULT_BACKEND"])
    task = celery.send_task("recs.cleanup_cache", queue="recs")
    queued_before = broker.llen("recs")
    cap = int(cache.config_get("maxmemory")["maxmemory"])
    records: list[dict] = []
    stop = threading.Event()

    def clients():
        i = 0
        while not stop.is_set():
            records.append(send(api.port, (hits + misses)[i % (len(hits) + len(misses))], 10))
            i += 1

    pool = [threading.Thread(target=clients, daemon=True) for _ in range(2)]
    for t in pool:
        t.start()
    value = b"x" * 8192
    written = errors = 0
    started = time.monotonic()
    pipe = cache.pipeline(transaction=False)
    while written < 2 * cap:
        for i in range(200):
            pipe.set(f"recs:chaosfill:{written // 8192 + i}", value, ex=3600)
        try:
            pipe.execute()
        except Exception as exc:  # an OOM here means nothing was evictable
            errors += 1
            rec.raw.setdefault("fill_errors", []).append(str(exc)[:200])
            pipe = cache.pipeline(transaction=False)
        written += 200 * 8192
    fill_s = round(time.monotonic() - started, 1)
    time.sleep(1)
    stop.set()
    for t in pool:
        t.join(15)
    info = cache.info()
    queued_after = broker.llen("recs")
    gens = cache.mget([f"recs:gen:{k}" for k in ("popular", "profiles", "similarities")])
    worker = stack.worker()
    try:
        task.get(timeout=120, propagate=False)
        state = task.state
    except Exception as exc:
        state = f"not finished: {type(exc).__name__}"
    serving = summarize(records)
    bad = sum(n for status, n in serving["statuses"].items() if status != "200")
    rec.raw.update(cap=cap, written=written, fill_s=fill_s, info={k: info[k] for k in (
        "used_memory", "used_memory_peak", "maxmemory", "maxmemory_policy", "evicted_keys")},
        queued=[queued_before, queued_after], task_state=state, serving=serving)
    rec.check("used_memory after writing 2x the cap",
              f"<= maxmemory {cap} + {CAP_SLACK:.0%} ({info['maxmemory_policy']}; evicted keys > 0)",
              f"{info['used_memory']} ({info['used_memory'] - cap:+d} bytes vs the cap; peak "
              f"{info['used_memory_peak']}); {info['evicted_keys']} keys evicted; {written // 2**20} MiB written in "
              f"{fill_s} s", cap > 0 and info["used_memory"] <= cap * (1 + CAP_SLACK) and info["evicted_keys"] > 0)
    rec.check("cache writes refused (OOM) during the fill", "0", str(errors), errors == 0)
    rec.check("serving during the fill", "all 200",
              f"{serving['requests'] - bad} of {serving['requests']} ({serving['statuses']}), p99 "
              f"{ms(serving['p99_ms'])}", serving["requests"] > 0 and bad == 0)
    rec.check("the task queued before the fill", "still queued, then SUCCESS",
              f"queue length {queued_before} -> {queued_after}; task {task.id} {state}",
              queued_after >= 1 and state == "SUCCESS")
    rec.note(f"cache generation keys after the fill: {['present' if g else 'evicted' for g in gens]}")
    fill = list(cache.scan_iter(match="recs:chaosfill:*", count=1000))
    for i in range(0, len(fill), 1000):
        cache.unlink(*fill[i:i + 1000])
    worker.stop()
    api.stop()
    return rec
