"""Cases about clients: idle and slow sockets, 10,000 connections, a long soak of mixed traffic."""
from __future__ import annotations

import json
import resource
import threading
import time

from bench.chaos.context import Ctx, worker_checks
from bench.chaos.jobs import CAP_SLACK
from bench.chaos.load import Holders, hammer, summarize, wrk
from bench.chaos.record import Record, ms


def _hit_share(records: list[dict]) -> str:
    hits = sum(1 for r in records if r["status"] == 200 and b'"cache_hit":true' in r["body"])
    return f"{hits}/{len(records)}"


def idle_and_slow(ctx: Ctx) -> Record:
    p = ctx.plan
    rec = Record("idle_slow", "Idle and slow-body clients",
                 f"{p.idle_conns} TCP connections that send nothing and {p.slow_conns} POSTs whose 4 KiB body "
                 f"arrives at one byte a second, held open for {max(p.probe_s, ctx.fault_s):.0f} s (past gunicorn's "
                 "worker timeout) while a normal client sends cache hits one after another",
                 "the normal client's cache-hit p99 <= 50 ms with 0 errors; no web worker killed")
    api = ctx.stack.api()
    hits = ctx.hits()
    ctx.warm(api, hits)
    before = hammer(api.port, [(hits, 1)], p.probe_s, 10)
    pids, offset = api.worker_pids(), api.log_offset()
    # Held past gunicorn's worker timeout: a worker stuck on a held socket would be seen killed.
    hold_s = max(p.probe_s, ctx.fault_s)
    holders = Holders(api.port, p.idle_conns, p.slow_conns, hold_s + 3)
    ready = holders.wait_ready()
    during = hammer(api.port, [(hits, 1)], hold_s, 10)
    held = holders.result()
    time.sleep(1)
    b, d = summarize(before), summarize(during)
    errors = sum(n for status, n in d["statuses"].items() if status != "200")
    rec.raw.update(before=b, during=d, holders_ready=ready, holders=held)
    rec.check("sockets held open", f"{p.idle_conns} idle + {p.slow_conns} slow",
              f"{ready.get('idle')} idle + {ready.get('slow')} slow",
              ready.get("idle") == p.idle_conns and ready.get("slow") == p.slow_conns)
    rec.check("normal client's cache-hit p99 while held", "<= 50 ms",
              f"{ms(d['p99_ms'])} (p50 {ms(d['p50_ms'])}, max {ms(d['max_ms'])}; before: p99 {ms(b['p99_ms'])})",
              d["p99_ms"] is not None and d["p99_ms"] <= 50)
    rec.check("normal client's errors while held", "0",
              f"{errors} of {d['requests']} requests ({d['statuses']}); cache hits {_hit_share(during)}",
              errors == 0 and d["requests"] > 0)
    worker_checks(rec, api, pids, offset)
    for kind in ("idle", "slow"):
        t = held.get(kind, {})
        rec.note(f"{kind} sockets: {t.get('connected')} connected, {t.get('connect_failed')} failed to connect, "
                 f"{t.get('closed_early')} closed or answered by the server while held "
                 f"(answers {t.get('responses')}, after {sorted(t.get('closed_after_s', []))[:3]} s ...)")
    api.stop()
    return rec


def raise_file_limit() -> dict:
    """Soft RLIMIT_NOFILE up to the hard limit, for this process and every child it starts."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    return {"before": soft, "soft": target, "hard": hard}


def many_connections(ctx: Ctx, limits: dict) -> Record:
    p = ctx.plan
    rec = Record("many_connections", f"{p.many_conns:,} concurrent connections",
                 f"wrk holds {p.many_conns:,} keep-alive connections sending cache hits for {p.many_s} s "
                 f"(RLIMIT_NOFILE set to {limits['soft']} for the driver, wrk and gunicorn; was {limits['before']})",
                 "0 errors beyond the OS file limit; throughput >= 0.8x the c=32 figure of the same run")
    api = ctx.stack.api()
    mix = ctx.mixes["hit_popular"] + ctx.mixes["hit_personalized"]
    ctx.warm(api, ctx.hits(len(mix)))
    c32 = wrk(api.url, mix, 32, p.c32_s, ctx.workdir)
    pids, offset = api.worker_pids(), api.log_offset()
    big = wrk(api.url, mix, p.many_conns, p.many_s, ctx.workdir, timeout_s=30)
    statuses = api.statuses(offset)
    rec.raw.update(c32=c32, many=big, rlimit_nofile=limits, server_statuses=statuses)
    errors = big["non2xx"] + big["socket_errors"]
    # Throughput counts answers that served the request: a cheap 503 must not pass for capacity.
    good = big["rps"] * (1 - big["non2xx"] / big["requests"]) if big["requests"] else 0
    good32 = c32["rps"] * (1 - c32["non2xx"] / c32["requests"]) if c32["requests"] else 0
    ratio = good / good32 if good32 else 0
    rec.check(f"errors at {p.many_conns:,} connections", f"0 (file limit {limits['soft']})",
              f"{errors} ({big['non2xx']} non-2xx, {big['socket_errors']} socket errors {big.get('socket_error_kinds') or ''}) "
              f"of {big['requests']:,}; "
              f"the API logged {statuses}", errors == 0 and big["requests"] > 0)
    rec.check(f"throughput (2xx per second) at {p.many_conns:,} / at 32", ">= 0.8",
              f"{ratio:.2f} ({good:.0f} vs {good32:.0f} 2xx/s; all answers {big['rps']:.0f} vs {c32['rps']:.0f}/s; "
              f"p99 {big['p99_ms']:.0f} ms vs {c32['p99_ms']:.1f} ms)", ratio >= 0.8)
    rec.check("c=32 reference run clean", "0 errors", f"{c32['non2xx'] + c32['socket_errors']} of {c32['requests']:,}",
              c32["non2xx"] + c32["socket_errors"] == 0)
    worker_checks(rec, api, pids, offset)
    events = rec.raw["gunicorn_events"]
    rec.check("EMFILE in gunicorn's log", "0", str(events["too_many_open_files"]), events["too_many_open_files"] == 0)
    api.stop()
    return rec


class RedisSampler(threading.Thread):
    def __init__(self, client, every_s: float = 2.0):
        super().__init__(daemon=True)
        self.client, self.every_s, self.samples = client, every_s, []
        self.stopping = threading.Event()

    def run(self):
        while not self.stopping.is_set():
            try:
                info = self.client.info()
                self.samples.append({"used": info["used_memory"], "max": info["maxmemory"],
                                     "evicted": info["evicted_keys"], "policy": info["maxmemory_policy"]})
            except Exception as exc:  # a sample lost is reported, not fatal
                self.samples.append({"error": str(exc)[:200]})
            self.stopping.wait(self.every_s)

    def stop(self):
        self.stopping.set()
        self.join(10)


def soak(ctx: Ctx) -> Record:
    p = ctx.plan
    rec = Record("soak", f"Soak, {p.soak_s} s of mixed traffic",
                 f"wrk, {p.soak_conns} connections for {p.soak_s} s: cache hits on both endpoints plus ~9% cache "
                 f"misses of every algorithm (a never-repeating price_from); Redis capped at {p.redis_maxmemory}, "
                 f"volatile-lru",
                 f">= {p.soak_min_rps:.0f} RPS, 0 errors, web worker RSS growth < 10%, Redis memory within its cap")
    api = ctx.stack.api()
    hits = ctx.mixes["hit_popular"] + ctx.mixes["hit_personalized"]
    misses = ctx.mixes["miss_popular"][:20] + ctx.mixes["miss_content_based"][:20] + ctx.mixes["miss_collaborative"][:20]
    ctx.warm(api, ctx.hits(len(hits)))
    mix = hits + misses
    warmup = wrk(api.url, mix, p.soak_conns, min(10, p.soak_s), ctx.workdir, timeout_s=10, misses=True)
    rss_start = api.worker_rss_mb()
    pids, offset = api.worker_pids(), api.log_offset()
    sampler = RedisSampler(ctx.stack.redis_client())
    rss_samples = []
    rss_stop = threading.Event()

    def sample_rss():
        while not rss_stop.wait(5):
            rss_samples.append(api.worker_rss_mb())

    rss_thread = threading.Thread(target=sample_rss, daemon=True)
    sampler.start()
    rss_thread.start()
    try:
        run = wrk(api.url, mix, p.soak_conns, p.soak_s, ctx.workdir, timeout_s=10, misses=True)
    finally:
        sampler.stop()
        rss_stop.set()
        rss_thread.join(10)
    rss_end = api.worker_rss_mb()
    rss_samples.append(rss_end)
    events = api.worker_events(offset)
    statuses = api.statuses(offset)
    recycled = events["recycled_by_max_requests"]
    errors = run["non2xx"] + run["socket_errors"]
    start_max = max(rss_start.values(), default=0)
    peak = max((v for s in rss_samples for v in s.values()), default=0)
    growth = peak / start_max - 1 if start_max else float("inf")
    mem = [s for s in sampler.samples if "used" in s]
    cap = mem[-1]["max"] if mem else None
    used_peak = max((s["used"] for s in mem), default=None)
    rec.raw.update(warmup=warmup, run=run, rss_start=rss_start, rss_samples=rss_samples, redis=sampler.samples,
                   gunicorn_events=events, workers_recycled_by_max_requests=recycled,
                   server_statuses=statuses)
    rec.check("throughput", f">= {p.soak_min_rps:.0f} RPS",
              f"{run['rps']:.0f} RPS ({run['requests']:,} requests; p50 {run['p50_ms']:.1f} ms, "
              f"p99 {run['p99_ms']:.1f} ms)", run["rps"] >= p.soak_min_rps)
    rec.check("errors", "0", f"{errors} ({run['non2xx']} non-2xx, {run['socket_errors']} socket errors); "
              f"the API logged {statuses}",
              errors == 0 and run["requests"] > 0)
    rec.check("web worker RSS growth (peak during the soak / largest worker after warm-up)", "< 10%",
              f"{growth * 100:.1f}% ({start_max} -> peak {peak} MB)", growth < 0.10)
    rec.check("Redis used_memory within maxmemory", f"<= {cap} bytes ({p.redis_maxmemory}) + {CAP_SLACK:.0%}",
              f"peak {used_peak} bytes over {len(mem)} samples; evicted keys {mem[-1]['evicted'] if mem else '?'}; "
              f"policy {mem[-1]['policy'] if mem else '?'}",
              bool(mem) and cap is not None and cap > 0 and used_peak <= cap * (1 + CAP_SLACK))
    rec.check("web workers killed", "0", f"{events['worker_timeouts']} WORKER TIMEOUT, {events['workers_killed']} killed",
              events["worker_timeouts"] == 0 and events["workers_killed"] == 0)
    rec.note(f"worker pids {pids} -> {api.worker_pids()}; workers recycled by gunicorn's max_requests: {recycled}")
    rec.note("RSS samples every 5 s (MB per worker pid): " + json.dumps(rss_samples[:3] + rss_samples[-2:]))
    api.stop()
    return rec
