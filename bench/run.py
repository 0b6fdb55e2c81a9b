"""`make bench PRESET=tiny|default|large`: refresh and serving benchmarks, side by side with a bare baseline.

Uses its own databases (recs_bench_<preset>_main / _recs on the server of
MAIN_DATABASE_URL), seeded once and reused, and a private redis-server, so it never
touches demo or production data. Writes bench/results/<preset>.{json,md,png}.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import resource
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from datetime import datetime, timezone
from pathlib import Path

import psycopg2

from bench import live as bench_live
from deploy.localproc import RedisServer, free_port
from deploy.seed import seed
from deploy.stack import ROOT, apply_schema, ensure_database
from shared.cache import ROW_FIELD_PREFIX, stored_answer, user_key
from shared.db import with_database
from shared.settings import load_settings

RESULTS = ROOT / "bench" / "results"
BIN = Path(sys.executable).parent
CONCURRENCY = (1, 8, 32)
REPEATS = 3
RATIO_SCENARIOS = ("baseline", "hit_popular", "hit_personalized")
# The API runs with metrics on (the default) throughout; this one runs the popular hit
# mix, interleaved with the others at c=8 only, against a second API with METRICS_ENABLED=0.
METRICS_OFF = "hit_popular_metrics_off"
MISS_SCENARIOS = ("miss_popular", "miss_content_based", "miss_collaborative")
# /personalized for users drawn uniformly from all users, with the filters and pages of
# the other mixes: mostly misses, the way a refresh or an event leaves the cache.
MIXED_SCENARIO, MIXED_CONCURRENCY, MIXED_USERS = "mixed_personalized", 32, 20000
# The bare baseline's runs interleaved with mixed_personalized's, its ratio's denominator.
MIXED_BASELINE = "baseline_mixed"
# Personal misses by users on their first request since the refresh (their row preloaded
# by the lists job: workers/preload.py): every request a different user, at c=8 only.
# Each wrk thread walks its own half of COLD_USERS users, so no user comes twice in a 10 s
# run. Then the same users again with their hashes deleted (uncached_*): first requests
# whose row is not in Redis (past the preload's budget, or since an event), which read
# the DB.
COLD_SCENARIOS, COLD_USERS = ("cold_content_based", "cold_collaborative"), 30000
UNCACHED = {name: "uncached_" + name[len("cold_"):] for name in COLD_SCENARIOS}


def median_block(blocks: list[dict]) -> dict:
    """The run with the median RPS, with every run's RPS beside it."""
    ordered = sorted(blocks, key=lambda b: b["rps"])
    return {**ordered[len(ordered) // 2], "rps_runs": [b["rps"] for b in blocks]}
LUA = r"""
local bodies = {BODIES}
local paths = {PATHS}
local unique = {UNIQUE}
local random = {RANDOM}
local spread = {SPREAD}
local n = #bodies
local counter = 0
local thread_id = 0
local threads = {}
function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end
function init(args)
  thread_id = tid or 0
  run_id = tonumber(args[1]) or 0
  math.randomseed(run_id * 1000 + thread_id)
end
function request()
  counter = counter + 1
  local k = (counter % n) + 1
  if spread then
    -- Each thread starts half the list further: threads do not request the same bodies.
    k = ((counter + thread_id * math.floor(n / 2)) % n) + 1
  end
  if random then
    -- A random body each request: threads do not walk the list in step, caching for each other.
    k = math.random(n)
  end
  local body = bodies[k]
  if unique then
    -- Unique per run, thread and request: a later run must not hit what an earlier one cached.
    body = string.gsub(body, "__NONCE__", string.format("0.%04d%d%09d", run_id, thread_id, counter))
  end
  return wrk.format("POST", paths[k], {["Content-Type"] = "application/json"}, body)
end
function done(summary, latency, requests)
  io.write(string.format(
    'WRKJSON {"requests": %d, "duration_us": %d, "non2xx": %d, "socket_errors": %d, ' ..
    '"connect": %d, "read": %d, "write": %d, "timeout": %d, ' ..
    '"p50_us": %d, "p90_us": %d, "p99_us": %d, "mean_us": %.1f, "max_us": %d}\n',
    summary.requests, summary.duration, summary.errors.status,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.errors.connect, summary.errors.read, summary.errors.write, summary.errors.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency.mean, latency.max))
end
"""


def lua_script(path: Path, requests: list[tuple[str, dict]], unique: bool, random_pick: bool = False,
               spread: bool = False) -> Path:
    def lua_str(s):
        return "[==[" + s + "]==]"

    bodies = []
    for _, body in requests:
        text = json.dumps(body)
        if unique:  # a never-repeating price_from makes every request a cache miss without filtering anything
            text = text.replace('"__NONCE__"', "__NONCE__")
        bodies.append(text)
    path.write_text(
        LUA.replace("{BODIES}", "{" + ", ".join(map(lua_str, bodies)) + "}")
        .replace("{PATHS}", "{" + ", ".join(lua_str(p) for p, _ in requests) + "}")
        .replace("{UNIQUE}", "true" if unique else "false")
        .replace("{RANDOM}", "true" if random_pick else "false")
        .replace("{SPREAD}", "true" if spread else "false")
    )
    return path


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return round(int(line.split()[1]) / 1024, 1)
    return 0.0


def pss_mb(pid: int) -> float | None:
    """Proportional set size: the worker's own pages plus its share of those it shares with
    the gunicorn master and the other workers (preload_app): what a worker costs the machine.
    VmRSS counts every shared page in full in each worker."""
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return round(int(line.split()[1]) / 1024, 1)
    except OSError:
        pass
    return None


def children(pid: int) -> list[int]:
    out = []
    for task in Path(f"/proc/{pid}/task").iterdir():
        text = (task / "children").read_text().split()
        out.extend(int(t) for t in text)
    return out


class Gunicorn:
    def __init__(self, app: str, env: dict, log: Path, inherit_env: bool = True):
        self.port = free_port()
        self.log = log
        self.handle = open(log, "w")
        self.proc = subprocess.Popen(
            [str(BIN / "gunicorn"), "-c", "deploy/gunicorn.conf.py", app],
            cwd=ROOT, env={**(os.environ if inherit_env else {}), **env, "PORT": str(self.port)},
            stdout=self.handle, stderr=subprocess.STDOUT, start_new_session=True,
        )
        self.url = f"http://127.0.0.1:{self.port}"
        for _ in range(300):
            try:
                urllib.request.urlopen(urllib.request.Request(self.url + "/popular", data=b"{}"), timeout=2)
                break
            except urllib.error.HTTPError:
                break
            except OSError:
                time.sleep(0.05)

    def worker_rss(self) -> list[float]:
        return [rss_mb(pid) for pid in children(self.proc.pid)]

    def worker_pss(self) -> list:
        return [pss_mb(pid) for pid in children(self.proc.pid)]

    def stop(self):
        self.proc.terminate()
        self.proc.wait(20)
        self.handle.close()


_RUNS = iter(range(1, 10**4))


def run_wrk(url: str, script: Path, connections: int, seconds: int, timeout_s: float | None = None) -> dict:
    """timeout_s: wrk's per-request timeout (its default is 2 s; a reply later counts as a socket error)."""
    threads = min(connections, 2)
    timeout = ["--timeout", f"{int(timeout_s)}s"] if timeout_s else []
    out = subprocess.run(
        ["wrk", "-t", str(threads), "-c", str(connections), "-d", f"{seconds}s", *timeout, "--latency", "-s",
         str(script), url, "--", str(next(_RUNS))],
        capture_output=True, text=True, timeout=seconds + 60,
    )
    line = next((row for row in out.stdout.splitlines() if row.startswith("WRKJSON ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no summary:\n{out.stdout}\n{out.stderr}")
    raw = json.loads(line[len("WRKJSON "):])
    return {
        "rps": round(raw["requests"] / (raw["duration_us"] / 1e6), 1),
        "p50_ms": raw["p50_us"] / 1000, "p90_ms": raw["p90_us"] / 1000, "p99_ms": raw["p99_us"] / 1000,
        "mean_ms": round(raw["mean_us"] / 1000, 3), "max_ms": raw["max_us"] / 1000,
        "requests": raw["requests"], "non2xx": raw["non2xx"], "socket_errors": raw["socket_errors"],
        "socket_error_kinds": {k: raw[k] for k in ("connect", "read", "write", "timeout") if raw.get(k)},
    }


def timed_wrk(server: "Gunicorn", script: Path, connections: int, seconds: int) -> dict:
    """run_wrk against a server, plus the server's own times (server_times) from its access log."""
    offset = server.log.stat().st_size
    block = run_wrk(server.url, script, connections, seconds)
    block.update(server_times(server.log, offset))
    return block


def server_times(log: Path, start: int) -> dict:
    """Server-side ms of the requests logged since byte offset `start` (the app's access lines)."""
    with open(log) as f:
        f.seek(start)
        found = re.findall(r"status=\d+ algorithm=\S+ cache_hit=(\S+) ms=([0-9.]+)", f.read())
    if not found:
        return {}
    ms = sorted(float(m) for _, m in found)
    pick = lambda q: round(ms[min(len(ms) - 1, int(q * len(ms)))], 3)  # noqa: E731
    hits = sum(1 for hit, _ in found if hit.lower() == "true")
    return {"server_p50_ms": pick(0.5), "server_p99_ms": pick(0.99), "server_samples": len(ms),
            "cache_hit_share": round(hits / len(found), 3)}


def refresh(env: dict) -> dict:
    """The full refresh in a child process: wall time per job and the child's peak RSS."""
    started = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "workers.refresh", "--json"], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    stdout, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"refresh failed: {stdout}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # the largest child so far: this one
    result = json.loads(stdout.strip().splitlines()[-1])
    return {
        "read_s": result["read_s"],
        "popular_s": result["popular_items"]["seconds"],
        "profiles_s": result["user_profiles"]["seconds"],
        "similarities_s": result["user_similarities"]["seconds"],
        "lists_s": result["user_lists"]["seconds"],
        "preload": result["user_lists"].get("preload"),  # rows cached ahead of requests (in lists_s)
        "cleanup_s": result["cleanup_cache"]["seconds"],
        "total_s": round(time.perf_counter() - started, 2),
        "peak_rss_mb": round(peak, 1),
        "rows": result["rows"],
    }


def db_sizes(recs_url: str) -> dict:
    """The recommendations DB's size, per table, and without the precomputed lists (what it held before them)."""
    conn = psycopg2.connect(recs_url)
    with conn.cursor() as cur:
        cur.execute("SELECT pg_database_size(current_database())")
        total = cur.fetchone()[0]
        cur.execute("SELECT relname, pg_total_relation_size(oid) FROM pg_class "
                    "WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace ORDER BY 2 DESC")
        tables = {name: round(size / 2**20, 1) for name, size in cur.fetchall()}
    conn.close()
    lists = sum(tables.get(t, 0) for t in ("user_lists", "popular_lists"))
    return {"total_mb": round(total / 2**20, 1), "without_lists_mb": round(total / 2**20 - lists, 1),
            "tables_mb": tables}


def _p50_ratio(miss: dict | None, hit: dict | None) -> float | None:
    if not miss or not hit or not hit.get("server_p50_ms") or "server_p50_ms" not in miss:
        return None
    return round(miss["server_p50_ms"] / hit["server_p50_ms"], 2)


def miss_figures(at8: dict, at1: dict | None = None) -> dict:
    """Per algorithm at c=8: miss server p50 over a hit's (same endpoint), and miss RPS over the bare
    baseline; and the server p50 ratio at c=1 too, where a request's server time is mostly its
    own work (at c=8 it also waits for the requests its worker runs meanwhile)."""
    out = {}
    at1 = at1 or {}
    for algorithm, hit in (("popular", "hit_popular"), ("content_based", "hit_personalized"),
                           ("collaborative", "hit_personalized")):
        miss = at8[f"miss_{algorithm}"]
        out[algorithm] = {
            "server_p50_vs_hit": _p50_ratio(miss, at8[hit]),
            "server_p50_vs_hit_c1": _p50_ratio(at1.get(f"miss_{algorithm}"), at1.get(hit)),
            "rps_vs_baseline": round(miss["rps"] / at8["baseline"]["rps"], 3),
        }
    for algorithm in ("content_based", "collaborative"):
        for kind, label in (("cold", "first request"), ("uncached", "first request, row not cached")):
            block = at8.get(f"{kind}_{algorithm}")
            if block is not None:
                out[f"{algorithm}, {label}"] = {"server_p50_vs_hit": _p50_ratio(block, at8["hit_personalized"]),
                                                "rps_vs_baseline": round(block["rps"] / at8["baseline"]["rps"], 3)}
    return out


def mixed_figures(grid: dict) -> dict:
    block = grid[MIXED_SCENARIO][str(MIXED_CONCURRENCY)]
    base = grid[MIXED_BASELINE][str(MIXED_CONCURRENCY)]
    return {"concurrency": MIXED_CONCURRENCY, "rps": block["rps"], "rps_vs_baseline": round(block["rps"] / base["rps"], 3),
            "p50_ms": block["p50_ms"], "p99_ms": block["p99_ms"], "server_p50_ms": block.get("server_p50_ms"),
            "server_p99_ms": block.get("server_p99_ms"), "cache_hit_share": block.get("cache_hit_share"),
            "errors": block["non2xx"] + block["socket_errors"], "rps_runs": block["rps_runs"],
            "baseline_rps": base["rps"], "baseline_rps_runs": base["rps_runs"]}


def _redis_line(r: dict | None) -> str:
    if not r:
        return ""
    return (f" Before it, Redis held {r['used_mb']} of {r['maxmemory_mb']} MB after {r['evicted_keys']} evictions, "
            f"and {r['rows_cached_share']:.0%} of its users' rows.")


def redis_memory(url: str, users: list) -> dict:
    """The bench Redis's used memory against its cap, keys evicted so far, and the share of
    these users (up to 2,000) whose hash holds a row (preloaded, or stored by a request)."""
    import redis

    client = redis.Redis.from_url(url + "/1")
    memory, stats = client.info("memory"), client.info("stats")
    pipe = client.pipeline(transaction=False)
    sample = users[:2000]
    for user_id, _ in sample:
        pipe.hkeys(user_key(user_id))
    with_row = sum(any(name.startswith(ROW_FIELD_PREFIX.encode()) for name in names) for names in pipe.execute())
    return {"used_mb": round(memory["used_memory"] / 2**20, 1), "maxmemory_mb": round(memory["maxmemory"] / 2**20, 1),
            "evicted_keys": stats["evicted_keys"], "keys": client.dbsize(),
            "rows_cached_share": round(with_row / len(sample), 3) if sample else None}


def pick_users(recs_url: str, n: int = 300) -> dict:
    conn = psycopg2.connect(recs_url)
    out = {}
    with conn.cursor() as cur:
        for bucket, cond in (("popular", "interaction_count = 0"), ("content_based", "interaction_count BETWEEN 1 AND 2"),
                             ("collaborative", "interaction_count >= 3")):
            cur.execute(f"SELECT user_id, geo_id FROM user_profiles WHERE {cond} ORDER BY md5(user_id::text) LIMIT %s",
                        (n,))
            out[bucket] = cur.fetchall()
            if bucket != "popular":  # others than those, for the cold misses
                cur.execute(f"SELECT user_id, geo_id FROM user_profiles WHERE {cond} "
                            f"ORDER BY md5('cold' || user_id::text) LIMIT %s", (COLD_USERS,))
                taken = set(out[bucket])
                out[f"cold_{bucket}"] = [row for row in cur.fetchall() if row not in taken]
        cur.execute("SELECT DISTINCT category FROM items")
        out["categories"] = [r[0] for r in cur.fetchall()]
        # Uniform over all users (every user has a profile row), in a fixed pseudo-random order.
        cur.execute("SELECT user_id, geo_id FROM user_profiles ORDER BY md5('mixed' || user_id::text) LIMIT %s",
                    (MIXED_USERS,))
        out["everyone"] = cur.fetchall()
    conn.close()
    return out


def request_mixes(users: dict, seed_value: int = 7) -> dict:
    rng = random.Random(seed_value)
    genders = [None, "m", "f", "male", "female"]
    ages = [None, "18-24", "25-34", "35-44", "45-54", "55+", 23, 41]
    geos = [None, 213, 2, 54, 65, 43]

    def filters(unique):
        f = {}
        if rng.random() < 0.4:
            lo = rng.choice([0, 300, 500, 1000, 2000])
            f = {"price_from": lo, "price_to": lo + rng.choice([1000, 3000, 10000])}
        if rng.random() < 0.2:
            f["category"] = rng.choice(users["categories"])
        if unique:
            f["price_from"] = "__NONCE__"
        return f

    def page():
        return {"page": rng.choice([1, 1, 1, 2, 3]), "limit": rng.choice([10, 20, 20, 50])}

    def popular(unique):
        out = []
        for _ in range(300):
            params = {k: v for k, v in (("gender", rng.choice(genders)), ("age", rng.choice(ages)),
                                        ("geo_id", rng.choice(geos))) if v is not None}
            f = filters(unique)
            if "category" in f and rng.random() < 0.5:
                params["category"] = f.pop("category")
            out.append(("/popular", {"user_params": params, "filters": f, "pagination": page()}))
        return out

    def personal(bucket, unique):
        return [("/personalized", {"user_id": uid, "geo_id": geo or 213, "filters": filters(unique),
                                   "pagination": page()}) for uid, geo in users[bucket]]

    everyone = users["popular"] + users["content_based"] + users["collaborative"]
    mixed = [("/personalized", {"user_id": uid, "geo_id": geo or 213, "filters": filters(False),
                                "pagination": page()}) for uid, geo in everyone]
    def mixed_personalized():
        # The Rails app sends the user's geo when it knows it; some clients send none.
        out = []
        for uid, geo in users.get("everyone", []):
            body = {"user_id": uid, "filters": filters(False), "pagination": page()}
            if geo and rng.random() < 0.9:
                body["geo_id"] = geo
            out.append(("/personalized", body))
        return out

    return {
        MIXED_SCENARIO: mixed_personalized(),
        "hit_popular": popular(False),
        "hit_personalized": mixed,
        "miss_popular": popular(True),
        "miss_content_based": personal("content_based", True),
        "miss_collaborative": personal("collaborative", True),
    } | {name: personal(name, True) for name in COLD_SCENARIOS if users.get(name)}  # none on tiny: too few users


def _parts(items: list, size: int = 1000):
    """items in slices of `size`: one pipeline each, so no reply grows without bound."""
    for start in range(0, len(items), size):
        yield items[start:start + size]


def uncache(redis_url: str, users: list) -> list:
    """Delete these users' hashes in the bench's own Redis: their next request reads their row
    from the DB. Returns what was deleted (each hash's DUMP and its expiry: a Unix time in ms,
    0 for none), for recache()."""
    import redis

    client = redis.Redis.from_url(redis_url)
    saved = []
    for part in _parts([user_key(user_id) for user_id, _ in users]):
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.dump(key)
            pipe.pttl(key)
        replies = pipe.execute()
        now_ms = int(time.time() * 1000)
        saved += [(key, dumped, 0 if ttl == -1 else now_ms + ttl)
                  for key, dumped, ttl in zip(part, replies[::2], replies[1::2]) if dumped and ttl != -2]
        client.delete(*part)
    return saved


def recache(redis_url: str, saved: list) -> None:
    """Put back the hashes uncache() deleted, as they were, with the expiry they had (what
    the uncached run stored in them meanwhile is replaced): the scenarios after it find the
    cache a refresh left, not 60,000 users without their rows. A hash whose expiry passed
    meanwhile is not put back."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for part in _parts(saved):
        pipe = client.pipeline(transaction=False)
        for key, dumped, expire_at_ms in part:
            pipe.restore(key, expire_at_ms, dumped, replace=True, absttl=True)
        pipe.execute()  # an expiry already past: Redis answers OK and deletes the key


def forget_answers(redis_url: str, users: list) -> None:
    """Drop these users' stored /personalized answers in the bench's own Redis; their rows,
    versions and feedback stay: their next request is a miss answered from the row."""
    import redis

    client = redis.Redis.from_url(redis_url)
    for part in _parts([user_key(user_id) for user_id, _ in users]):
        pipe = client.pipeline(transaction=False)
        for key in part:
            pipe.hkeys(key)
        found = pipe.execute()
        pipe = client.pipeline(transaction=False)
        for key, fields in zip(part, found):
            answers = [f for f in fields if stored_answer(f)]
            if answers:
                pipe.hdel(key, *answers)
        pipe.execute()


def warm(url: str, requests: list) -> None:
    for path, body in requests:
        req = urllib.request.Request(url + path, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names, rows = [], []
    for name, block in [("baseline", result["baseline"])] + \
            [(f"hit {k}", v) for k, v in result["cache_hit"].items()] + \
            [(f"miss {k}", v) for k, v in result["cache_miss"].items()] + \
            [(f"first {k}", v) for k, v in result.get("cold_miss", {}).items()] + \
            [(f"uncached {k}", v) for k, v in result.get("uncached_miss", {}).items()]:
        names.append(name)
        rows.append((block["p50_ms"], block["p90_ms"], block["p99_ms"]))
    fig, ax = plt.subplots(figsize=(10, 4.5))
    width = 0.27
    for i, label in enumerate(("p50", "p90", "p99")):
        ax.bar([x + (i - 1) * width for x in range(len(names))], [r[i] for r in rows], width, label=label)
    ax.set_xticks(range(len(names)))
    ax.set_xticklabels(names, rotation=20, ha="right")
    ax.set_ylabel("latency, ms (wrk, concurrency 8)")
    ax.set_title(f"{result['preset']}: latency at concurrency 8 ({result['machine']['cpus']} cores)")
    ax.axhline(15, color="grey", linestyle="--", linewidth=0.8)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def markdown(result: dict) -> str:
    lines = [f"### `{result['preset']}` — {result['when']}", "",
             "| scenario | conc. | RPS | p50 ms | p90 ms | p99 ms | server p50/p99 ms | non-2xx |",
             "|---|---|---|---|---|---|---|---|"]
    for name, grid in result["grid"].items():
        for conc, b in grid.items():
            server = f"{b.get('server_p50_ms', '')}/{b.get('server_p99_ms', '')}" if "server_p50_ms" in b else ""
            lines.append(f"| {name} | {conc} | {b['rps']:.0f} | {b['p50_ms']:.2f} | {b['p90_ms']:.2f} | "
                         f"{b['p99_ms']:.2f} | {server} | {b['non2xx'] + b['socket_errors']} |")
    r = result["refresh"]
    lines.append("")
    if r.get("skipped"):
        lines.append("Refresh: not run in this bench (--no-refresh).")
    else:
        lists = f"lists {r['lists_s']} s, " if "lists_s" in r else ""
        lines.append(f"Refresh: popular {r['popular_s']} s, profiles {r['profiles_s']} s, similarities "
                     f"{r['similarities_s']} s, {lists}read {r['read_s']} s, total {r['total_s']} s, "
                     f"peak RSS {r['peak_rss_mb']} MB.")
        if r.get("preload"):
            p = r["preload"]
            lines.append(f"Rows preloaded into Redis by the lists job: {p['users']} of {p['profiled']} users, "
                         f"{p['bytes'] / 2**20:.0f} MB of rows, {p['seconds']} s (in the lists step)"
                         + (f"; stopped: {p['stopped']}" if p.get("stopped") else "") + ".")
    if "mixed_personalized" in result:
        m = result["mixed_personalized"]
        runs = m.get("rps_runs", [])
        against = (f"median of runs {', '.join(f'{r:.0f}' for r in runs)}, against the interleaved baseline's "
                   f"{', '.join(f'{r:.0f}' for r in m.get('baseline_rps_runs', []))}" if len(runs) > 1 else "")
        lines.append(f"mixed_personalized (c={m['concurrency']}, users drawn from all users, "
                     f"{m['cache_hit_share']} of them cache hits): {m['rps']:.0f} RPS"
                     + (f" ({against})" if against else "") + f" = {m['rps_vs_baseline']} x "
                     f"baseline, p99 {m['p99_ms']} ms, server p50/p99 {m['server_p50_ms']}/{m['server_p99_ms']} ms, "
                     f"{m['errors']} errors." + _redis_line(m.get("redis_before")))
        at1 = [f"{name} {v['server_p50_vs_hit_c1']}" for name, v in result["miss_vs_hit"].items()
               if v.get("server_p50_vs_hit_c1") is not None]
        lines.append("Misses at c=8 (server p50 / a hit's, RPS / baseline; first request: the user's first since "
                     "the refresh, their row preloaded; row not cached: the same users with nothing in Redis, "
                     "which read their row from the DB): " + ", ".join(
            f"{name} {v['server_p50_vs_hit']} / {v['rps_vs_baseline']}" for name, v in result["miss_vs_hit"].items())
            + "." + (" Server p50 / a hit's at c=1, where it is mostly the request's own work: " + ", ".join(at1) + "."
                     if at1 else ""))
        db = result["recs_db"]
        lines.append(f"Recommendations DB: {db['total_mb']} MB, {db['without_lists_mb']} MB without the "
                     f"precomputed lists (user_lists {db['tables_mb'].get('user_lists')} MB, popular_lists "
                     f"{db['tables_mb'].get('popular_lists')} MB).")
    lines += [f"API worker RSS (MB): after warm-up {result['api_worker_rss_mb']['after_warmup']}, "
              f"after load {result['api_worker_rss_mb']['after_load']} (PSS, shared pages split between "
              f"processes: {result.get('api_worker_pss_mb', {}).get('after_load')}).",
              f"Cache-hit throughput vs baseline at c=8: popular {result['ratios']['hit_popular_vs_baseline']}, "
              f"personalized {result['ratios']['hit_personalized_vs_baseline']}."]
    if "live" in result:
        lines += bench_live.markdown(result["live"])
    if "hit_popular_metrics_on_vs_off" in result["ratios"]:
        lines.append(f"Popular cache hits with metrics on / off (METRICS_ENABLED=0) at c=8: "
                     f"{result['ratios']['hit_popular_metrics_on_vs_off']}.")
    lines.append("")
    return "\n".join(lines)


BENCHMARKS_HEADER = """# Benchmarks

Produced by `make bench PRESET=tiny|default|large` (`python -m bench.run`), which loads
the preset into its own databases if needed, runs the full refresh in a child process
(wall time per job, peak RSS), then starts the API under the production gunicorn
config (`deploy/gunicorn.conf.py`, 2 gevent workers) and loads it with wrk: a bare
Flask app doing one Redis GET under the same config (the ceiling a cache hit can
reach), cache hits on both endpoints, and cache misses per algorithm (every request
carries a never-repeating `price_from`, so it misses; the lists job caches every
user's row, profile and precomputed list, in Redis ahead of requests, so the `miss_*`
runs measure misses answered from it; in `cold_*` every request is another user's
first since the refresh, and `uncached_*` runs the same users again with their hashes
deleted (put back as they were after it), so each request reads the user's row from
the DB, as when the preload's memory budget did not reach them or right after an
event). Request mixes cover many segments, users from each interaction bucket, filters
and pages. That tiny
`price_from` holds every price, so a personal miss without other filters is answered
from the user's precomputed list when its geo matches, and one with a price range or
category filter from that list filtered in memory (then popular fill-in); the others
are computed in memory. `mixed_personalized` (concurrency 32; three runs, each after the
users' stored answers were dropped, their rows kept, and its ratio against the three bare
baseline runs interleaved with them, `baseline_mixed`) draws `/personalized` users
uniformly from all users in random order, with the mixes' share of price and category
filters and pages and the user's geo on 90 % of requests: mostly misses, as after a
refresh. The result also reports each miss's server p50 over a hit's (at c=8, and at c=1
where it is mostly the request's own work), miss RPS over the
baseline, the list step of the refresh, and the recommendations DB's size with and
without the precomputed lists.

**Figures differ between machines; compare ratios measured in the same run** (e.g.
cache-hit RPS / baseline RPS), not absolute numbers across machines. wrk, PostgreSQL,
Redis and the API share the same cores here, so absolute numbers are pessimistic.
Baseline and cache-hit runs are interleaved three times per concurrency and each
reported block is the run with the median RPS (`rps_runs` lists all three); cache-miss
runs too at concurrency 8, single at 1 and 32 (the cold and uncached ones once, at 8 only). "server p50/p99" is the service's own
time per request, from its access log.

The `live` block (`bench/live.py`) then starts a real Celery worker and beat for the
live sync (every `LIVE_SYNC_SECONDS`, default 10): cache-hit RPS and cache-miss p99
(the server's own, and wrk's) without and with the sync running (likes trickling into
the main DB; 3 interleaved rounds, medians; without, the bench holds the sync's lock,
so each run of it returns at once), the freshness
lag from a committed like to its exclusion from `/personalized` over 200 likes at a
steady rate while wrk loads the API, `POST /events` to effect, and the sync's
throughput on a burst of new interactions (100k; 5k on `tiny`), the time until the
fold-ins of the users it made collaborative are done, and how much their neighbours
overlap with the full similarity job's (a sample of 300; alone: `python -m
bench.live_burst`). It deletes what it added to the main DB.

Raw results: `bench/results/<preset>.json` (latency blocks at concurrency 8, the full
grid under `grid`), `.md` and `.png` (latency distributions).

What the profile showed (2026-11, this 2-core machine):

- Cache hits. Session 1 measured them at 0.79-0.80 of the bare GET. A hit was already
  one Redis GET (the generations are a per-process snapshot, counters are batched);
  the rest was Flask's request context, URL routing and Response objects on top of
  what the contract needs (JSON parsing, pydantic validation, decoding the cached
  list, the access line). `/popular` and `/personalized` are now answered by a thin
  WSGI layer in front of Flask (`api/fastpath.py`) that calls the same endpoint
  functions. In-process (`python -m bench.inprocess`, on a refreshed recommendations
  DB) a hit went from 1.76x the bare GET's time to 0.88-0.95x: Flask's machinery cost as
  much as all the contract's work. Under wrk the ratio is now 0.95-1.05.
- Cache misses. On the machine of session 2 they took 1.5-2.5 ms of server time at
  the median and the wrk p99 at concurrency 8 was 14 ms for popular, 18 ms for
  content-based and 20 ms for collaborative. The `large` block below comes from a later
  machine of the same kind that is slower on misses, where in-process miss times
  (`python -m bench.inprocess --misses`) vary by up to 30% between consecutive runs.
  There, with session 2's final code, the c=8 p99 was 29.0 / 38.3 / 42.0 ms (popular /
  content-based / collaborative; server p50 3.0 / 4.6 / 5.6 ms; 466 / 336 / 280 RPS,
  baseline 2,111). After the changes below it is 25.8 / 30.3 / 33.0 ms (server p50
  2.6 / 3.3 / 3.7 ms; 526 / 464 / 420 RPS, baseline 2,026). The wrk p99 adds queueing
  to the server time: 8 connections on 2 sync workers, sharing 2 cores with
  PostgreSQL and wrk itself, and the cores are the limit, not the workers: with
  `WEB_CONCURRENCY=4` the content-based p99 on `default` moved from 18.6 to 18.0 ms.
  Queries per miss (cProfile of the in-process run): popular 1.7 (one prepared
  index-range query per segment of the fallback chain it needs), content-based 1.3
  (the candidates of all its segments in one query, reused by the fill-in),
  collaborative 2.7 (the user's list joined to the catalogue, the segment list, the
  fill-in; 3.0 before the fill-in reused the segment lists the blend had read). On the
  API's connections a popular read of 100 rows costs ~0.65 ms from Python, of which
  PostgreSQL executes 0.14-0.38 ms. Those connections use generic plans
  (`shared.db.connect_recs`): PostgreSQL would otherwise re-plan the statement at
  every execution because of its array parameters, and `python -m bench.plans`, which
  times both interleaved, puts the generic plan at 0.80-0.83x the custom-plan time.
  `Ranked.extend`, the filter-and-dedupe loop every list goes through, now works on
  local variables (0.62x its time on 350 candidates in a micro-benchmark). A
  content-based miss reads ~270 rows (its own segment to list size, 40 candidates per preferred
  category), and those rows are most of its cost. Precomputing content-based lists in
  the workers, and reading the whole fallback chain in one query, are what would cut
  misses further.
- Personalized misses, later (precomputed lists in place). A py-spy profile of a web
  worker under `miss_collaborative` on `large` put ~30 % of a miss in Redis (the
  lookup, a second round trip for the user's version and live feedback, a Lua
  check-and-set store), ~16 % in the PostgreSQL read of the user's row (most of it
  parsing the collaborative list's scores and the profile's JSON preferences, which
  an answer from the stored list never uses) and ~22 % in filtering and fill-in.
  Now the user's version and feedback live in the user's hash, so one `HMGET` is the
  lookup, hit or miss; the row read is the profile's basics and the stored list (a
  computed answer reads the rest in a second query); the store is one Lua call. Worker
  CPU per request, interleaved A/B under wrk (both versions on the same data, 4 runs
  each): content-based misses 2.24 -> 1.65 ms, collaborative 2.21 -> 1.78 ms,
  `mixed_personalized` 1.87 -> 1.78 ms, personalized hits unchanged within the noise
  (0.72 / 0.74 ms). Tried and dropped: `hiredis` (redis-py's C reply parser) saved
  ~20 us a command in a plain loop but made hits 15 % slower under the gevent workers
  (0.71 vs 0.83 ms of worker CPU a hit, 8 interleaved runs).
- First requests, later (rows preloaded by the lists job; a slower machine of the same
  kind, bare baseline 2,000-2,600 RPS at c=8). A user's first request since a refresh
  used to read their row from PostgreSQL and store it: three round trips. With every
  row in Redis it is the lookup alone. py-spy of a web worker under
  `cold_collaborative` with rows preloaded: 40 % of the samples were the answer itself,
  mostly the popular fill-in of filtered requests (32 %: segment lists not in the
  per-process LRU read from PostgreSQL 14 %, their summaries 9 %, filtering 12 %), and
  the lookup `HMGET` 16 %. An LRU of 8,192 segment lists (all 7,956 of `large`)
  instead of 512 gave `mixed_personalized` 0.37 / 0.44 of the baseline against
  0.43 / 0.53 (two interleaved rounds) and worker RSS 69-72 MB against 61: not kept.
  The preload itself: 300 k rows took 53 s with one script call per user; reading
  the next batch in a thread while writing the current one, and 100 users per script
  call (redis-py's argument packing was the largest cost), brought it to 24-26 s.
- Misses, later (2026-11-27, a faster machine of the same kind: bare baseline
  5,200-5,500 RPS). py-spy of a web worker under `mixed_personalized` with rows
  preloaded: 22 % of the samples in PostgreSQL reads, mostly segment lists missing from
  the 512-entry LRU, and 7 % summarising them. Every segment list's ids now sit in the
  catalogue snapshot (one int32 array, 6.3 MB on `large`, read with the items), so the
  popular fill-in, filtered answers and popular answers read nothing; only a computed
  content-based or collaborative answer reads segments' scores. Throwaway interleaved
  A/B, same data, old / new code, two rounds: `mixed_personalized` 0.42 / 0.49 -> 0.58 /
  0.56 of the baseline (worker CPU a request 659 / 596 -> 517 / 540 us),
  `cold_content_based` 0.32 / 0.42 -> 0.47 / 0.49, `miss_content_based` 0.52 / 0.53 ->
  0.57 / 0.56; worker RSS 59 -> 68 MB. The worker's profile under `mixed_personalized`
  after it: Redis calls 26 % (the lookup 19 %, the store 7 %), the answer 12 %,
  gunicorn's and gevent's HTTP work most of the rest. Not storing filtered answers
  (derived again from the cached row, as the stored list is) was tried: `mixed` 0.55 /
  0.58 against 0.58 / 0.58, but `hit_personalized` 0.64 / 0.61 against 0.81 / 0.78, so
  they are still stored. Hit ratios on this machine are lower than on the last one
  (`hit_personalized` 0.73-0.78 of the baseline in quick runs) with the old code as
  with the new (interleaved A/B, two rounds each).
- Misses, later still (2026-11-27, bare baseline 4,700-5,400 RPS). Timed in-process
  over `mixed_personalized`'s requests, a miss spent ~160 us in the lookup and ~125 us
  in the store (wall time, each one round trip on this VM's ~76 us loopback), and
  the answer ~130 us when filtered. A throwaway build that stored nothing ran
  `miss_content_based` at 0.65 of the baseline against 0.54: the store, not its
  answer, was the largest cost a miss adds to a hit. Redis's own time per store was
  19.5 us (the script), against 6.8 us for the lookup's HMGET. The stores now leave
  after the response, several in one pipeline (`shared/writebehind.py`: 2.4-6 stores a
  round trip under load), and the pipeline skips redis-py's SCRIPT EXISTS round trip
  that every pipeline with a script otherwise makes. In the filtered answer, `min()`
  and `max()` over a segment's ids (checking they are array positions) took 15 % and
  a set of excluded and listed ids made for each fill-in segment 7 %: a stocked
  segment's ids are positions already, and listed ids are dropped after the filter.
  Cached lists now pack their ids (861 bytes for 200 ids against 1,469 as JSON): the
  bench's miss runs had filled the 512 MB Redis and evicted 24,352 keys before
  `mixed_personalized`. Interleaved A/B, three rounds, main / new: misses 0.57 /
  0.56 / 0.55 -> 0.66 / 0.60 / 0.60 (popular / content-based / collaborative),
  `mixed_personalized` 0.58 -> 0.64. Batching access-log writes was not tried: a
  write(2) of a line costs 0.4 us here.
- How the bench measured misses (2026-11-27, a new machine: bare baseline 4,200-4,800
  RPS, other tenants' services on it). The last `make bench` found 9 % of
  `mixed_personalized`'s users without their row: not evicted, but deleted by the
  `uncached_*` runs, which drop 60,000 users' hashes. Those runs now put the hashes
  back as they were (DUMP / RESTORE, with their expiries), and `mixed_personalized`
  found every row. Its single run still gave 0.52 of the baseline in one bench, while
  throwaway runs of the same code on the same data gave 0.67-0.70, and five runs in a
  row on one server 2,932-3,360 RPS: it now runs three times, each after its users'
  stored answers were dropped (rows kept), against three baseline runs interleaved
  with them. Two benches of that code: 3,233 / 3,170 / 3,117 RPS against 4,681 / 4,382
  / 4,472 (0.709), then 3,309 / 3,300 / 3,308 against 4,696 / 4,696 / 4,691 (0.705).
  The miss server p50 over a hit's at c=8 went 2.16 / 0.82 / 0.54 (popular /
  content-based / collaborative) in one bench and 0.67 / 1.41 / 1.51 in the next,
  same code: at c=8 a request's server time is mostly the other requests its worker
  runs meanwhile. It is now also reported at c=1, where it is mostly the request's own
  work: 1.74 / 1.57 / 1.78, then 2.0 / 1.96 / 1.96 (a miss's p50 there is 0.38-0.45 ms,
  a hit's 0.19-0.23, both as the access log writes them, to 10 us). Collaborative misses ran at
  0.64, 0.60 (0.598) and 0.65 of the baseline in the three benches of this session.
  py-spy of one gevent worker under `miss_collaborative`: the lookup `HMGET` 22 % of
  the samples (redis-py's reply parsing 13 %), gunicorn's HTTP parsing 12 %, the answer
  16 % (checking ids against the catalogue's arrays 9 %), the store's pipeline 8 %,
  pydantic 4 %. What a miss adds to a hit, the answer and the store, is 24 %, and no
  one part of it is over 9 %. A one-pass filter of a precomputed list (ids in, ids out,
  no index list) made the filtered answer 6-7 % faster in-process (about 1 % of a
  miss) and was a second copy of the filter: not kept. A web worker's 69 MB RSS is
  56 MB anonymous memory and 12 MB of shared libraries; tracemalloc counts 32.5 MB of
  Python allocations made by importing the app, 18 MB of them its modules' code
  objects.
"""


def targets(results: dict) -> str:
    """The issue's figures against the latest results (large unless stated)."""
    large, default = results.get("large"), results.get("default")
    rows = []
    if large:
        for name, block in (("popular", large["cache_hit"]["popular"]), ("personalized", large["cache_hit"]["personalized"])):
            ratio = block["rps"] / large["baseline"]["rps"]
            rows.append((f"cache-hit RPS / baseline, {name}, c=8", "≥ 0.9", f"{ratio:.2f}", ratio >= 0.9))
        for name, block in large["cache_miss"].items():
            rows.append((f"cache-miss p99, {name}, c=8", "≤ 15 ms", f"{block['p99_ms']:.1f} ms "
                         f"(server {block.get('server_p99_ms', '?')} ms)", block["p99_ms"] <= 15))
        if "hit_popular_metrics_on_vs_off" in large["ratios"]:
            ratio = large["ratios"]["hit_popular_metrics_on_vs_off"]
            rows.append(("cache-hit RPS, metrics on / off, popular, c=8", "≥ 0.9", f"{ratio:.2f}", ratio >= 0.9))
        for name, v in large.get("miss_vs_hit", {}).items():
            for conc, key in (("8", "server_p50_vs_hit"), ("1", "server_p50_vs_hit_c1")):
                if v.get(key) is not None:
                    rows.append((f"cache-miss server p50 / hit's, {name}, c={conc}", "≤ 2", f"{v[key]}", v[key] <= 2))
            rows.append((f"cache-miss RPS / baseline, {name}, c=8", "≥ 0.6", f"{v['rps_vs_baseline']:.2f}",
                         v["rps_vs_baseline"] >= 0.6))
        if "mixed_personalized" in large:
            m = large["mixed_personalized"]
            rows.append(("mixed_personalized RPS / baseline, c=32", "≥ 0.7", f"{m['rps_vs_baseline']:.2f} "
                         f"({m['errors']} errors)", m["rps_vs_baseline"] >= 0.7 and m["errors"] == 0))
        rss = large["api_worker_rss_mb"]["max"]
        rows.append(("web worker RSS", "≤ 50 MB", f"{rss} MB", rss <= 50))
        r = large["refresh"]
        if not r.get("skipped"):
            rows.append(("refresh, large", "≤ 300 s", f"{r['total_s']} s", r["total_s"] <= 300))
            rows.append(("refresh peak RSS, large", "≤ 3000 MB", f"{r['peak_rss_mb']} MB", r["peak_rss_mb"] <= 3000))
    if default and not default["refresh"].get("skipped"):
        rows.append(("refresh, default", "≤ 60 s", f"{default['refresh']['total_s']} s",
                     default["refresh"]["total_s"] <= 60))
    for preset, res in results.items():
        rows += bench_live.targets(preset, res.get("live"))
    errors = sum(r["errors"] for r in results.values())
    rows.append(("errors (non-2xx answers, wrk socket errors and timeouts), every run", "0", str(errors), errors == 0))
    lines = ["## Targets", "", "| figure | target | measured | met |", "|---|---|---|---|"]
    lines += [f"| {a} | {b} | {c} | {'yes' if ok else '**no**'} |" for a, b, c, ok in rows]
    return "\n".join(lines) + "\n"


def write_benchmarks_md() -> None:
    results = {p: json.loads((RESULTS / f"{p}.json").read_text()) for p in ("tiny", "default", "large")
               if (RESULTS / f"{p}.json").exists()}
    parts = [BENCHMARKS_HEADER, targets(results)]
    for preset in ("tiny", "default", "large"):
        if preset not in results:
            parts.append(f"### `{preset}`\n\nNot measured yet: `make bench PRESET={preset}`.\n")
            continue
        result = results[preset]
        m = result["machine"]
        parts.append(f"Machine: {m['cpus']} cores, {m['processor']}, {m['platform']}, Python {m['python']}; "
                     f"wrk {result['seconds_per_run']} s per run.\n")
        parts.append(markdown(result))
        parts.append(f"![{preset} latency](bench/results/{preset}.png)\n")
    (ROOT / "BENCHMARKS.md").write_text("\n".join(parts))


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "default", "large"], default="tiny")
    parser.add_argument("--seconds", type=int, default=None, help="wrk duration per run")
    parser.add_argument("--repeats", type=int, default=REPEATS, help="interleaved runs of baseline and hits")
    parser.add_argument("--main-url", help="main DB to seed and read (default: recs_bench_<preset>_main)")
    parser.add_argument("--recs-url", help="recommendations DB (default: recs_bench_<preset>_recs)")
    parser.add_argument("--results", type=Path, default=RESULTS, help="where to write <preset>.json/.md/.png")
    parser.add_argument("--no-live", action="store_true", help="skip the live block (sync, POST /events)")
    parser.add_argument("--live-likes", type=int, default=200, help="likes timed for the freshness lag")
    parser.add_argument("--live-rate", type=float, default=4.0, help="likes per second for the freshness lag")
    parser.add_argument("--live-events", type=int, default=200, help="POST /events timed to effect")
    parser.add_argument("--live-burst", type=int, default=None,
                        help="interactions in the sync throughput burst (default 100000; tiny 5000)")
    parser.add_argument("--live-sync-seconds", type=int, default=None,
                        help="LIVE_SYNC_SECONDS for the live block (default: the setting, 10)")
    parser.add_argument("--no-refresh", action="store_true",
                        help="serve what the bench DB already holds (for quick iterations; refresh figures omitted)")
    args = parser.parse_args(argv)
    seconds = args.seconds or (3 if args.preset == "tiny" else 10)
    if not shutil.which("wrk"):
        subprocess.run(["bash", str(ROOT / "deploy/ensure-tools.sh"), "wrk"], check=False)
        if not shutil.which("wrk"):
            print("bench: wrk is required: sudo apt-get install -y wrk", file=sys.stderr)
            return 2
    base = load_settings()
    main_url = args.main_url or with_database(base.main_database_url, f"recs_bench_{args.preset}_main")
    recs_url = args.recs_url or with_database(base.main_database_url, f"recs_bench_{args.preset}_recs")
    for url in (main_url, recs_url):
        ensure_database(url)
    apply_schema(recs_url, ROOT / "schema.sql")
    print(f"bench: seeding {args.preset} (skipped when already loaded)", flush=True)
    seeded = seed(main_url, args.preset, 42, replace=False, quiet=True)
    redis_server = RedisServer().start()
    env = {"MAIN_DATABASE_URL": main_url, "RECOMMENDATIONS_DATABASE_URL": recs_url,
           "RECOMMENDATIONS_REDIS_URL": f"{redis_server.url}/1", "CELERY_BROKER_URL": f"{redis_server.url}/2",
           "CELERY_RESULT_BACKEND": f"{redis_server.url}/3", "LOG_LEVEL": "warning"}
    tmp = Path(tempfile.mkdtemp(prefix="recs-bench-"))
    api = baseline = api_off = None
    try:
        print("bench: full refresh", flush=True)
        refresh_result = {"skipped": True} if args.no_refresh else refresh(env)
        print(f"bench: refresh {refresh_result}", flush=True)
        users = pick_users(recs_url)
        mixes = request_mixes(users)
        api = Gunicorn("api.wsgi:app", env, tmp / "api.log")
        baseline = Gunicorn("bench.baseline_app:app", env, tmp / "baseline.log")
        api_off = Gunicorn("api.wsgi:app", {**env, "METRICS_ENABLED": "0"}, tmp / "api-metrics-off.log")
        # The baseline returns a payload of the same size a cache hit returns.
        import redis

        sample = urllib.request.urlopen(urllib.request.Request(
            api.url + "/popular", data=b'{"pagination": {"limit": 20}}', headers={"Content-Type": "application/json"}),
            timeout=10).read()
        redis.Redis.from_url(env["RECOMMENDATIONS_REDIS_URL"]).set("recs:bench:baseline", sample, ex=86400)
        warm(api.url, mixes["hit_popular"] + mixes["hit_personalized"])
        rss_warm = api.worker_rss()
        scripts = {name: lua_script(tmp / f"{name}.lua", reqs, unique=name.startswith(("miss", "cold")),
                                    random_pick=name == MIXED_SCENARIO, spread=name in COLD_SCENARIOS)
                   for name, reqs in mixes.items()}
        scripts["baseline"] = lua_script(tmp / "baseline.lua", mixes["hit_popular"], unique=False)
        scripts[METRICS_OFF] = scripts["hit_popular"]
        grid: dict = {}
        # Baseline and cache hits are compared as ratios, so they run interleaved, REPEATS
        # times, and each block is the run with the median RPS: a noisy neighbour on a
        # shared machine then hits both sides alike.
        runs: dict = {}

        def record(name, conc, block):
            runs.setdefault(name, {}).setdefault(str(conc), []).append(block)
            print(f"bench: {name} c={conc} rps={block['rps']} p50={block['p50_ms']} p99={block['p99_ms']} "
                  f"non2xx={block['non2xx']} hits={block.get('cache_hit_share')}", flush=True)

        for conc in CONCURRENCY:
            for rep in range(args.repeats):
                for name in (RATIO_SCENARIOS + ((METRICS_OFF,) if conc == 8 else ())
                             # Misses at c=8 (the figures) interleaved like the hits, once elsewhere.
                             + (MISS_SCENARIOS if rep == 0 or conc == 8 else ())
                             # Once: a second run would find the first one's users' rows cached.
                             + (tuple(n for n in COLD_SCENARIOS if n in scripts) if rep == 0 and conc == 8
                                else ())):
                    target = {"baseline": baseline, METRICS_OFF: api_off}.get(name, api)
                    block = (run_wrk(target.url, scripts[name], conc, seconds) if target is baseline
                             else timed_wrk(target, scripts[name], conc, seconds))
                    record(name, conc, block)
                    if name in UNCACHED:  # the same users, their rows (and all they had cached) dropped
                        saved = uncache(env["RECOMMENDATIONS_REDIS_URL"], users[name])
                        record(UNCACHED[name], conc, timed_wrk(api, scripts[name], conc, seconds))
                        recache(env["RECOMMENDATIONS_REDIS_URL"], saved)
        # Mostly misses at high concurrency: users drawn at random from all users, REPEATS runs
        # interleaved with the baseline's at that concurrency. Each run starts from what a
        # refresh leaves: the users' stored answers dropped, their preloaded rows kept. The
        # runs before stored many lists (each miss_* request its own): Redis's use and
        # evictions say whether the preloaded rows were still there.
        redis_before = redis_memory(redis_server.url, users["everyone"])
        for _ in range(args.repeats):
            forget_answers(env["RECOMMENDATIONS_REDIS_URL"], users["everyone"])
            record(MIXED_SCENARIO, MIXED_CONCURRENCY, timed_wrk(api, scripts[MIXED_SCENARIO], MIXED_CONCURRENCY, seconds))
            record(MIXED_BASELINE, MIXED_CONCURRENCY,
                   run_wrk(baseline.url, scripts["baseline"], MIXED_CONCURRENCY, seconds))
        redis_after = redis_memory(redis_server.url, users["everyone"])
        grid = {name: {conc: median_block(blocks) for conc, blocks in by_conc.items()} for name, by_conc in runs.items()}
        errors = sum(b["non2xx"] + b["socket_errors"] for by_conc in runs.values() for blocks in by_conc.values()
                     for b in blocks)
        rss_load, pss_load = api.worker_rss(), api.worker_pss()
        live_block = None
        if not args.no_live:
            print("bench: live block (sync worker and beat, likes, POST /events, burst)", flush=True)
            with_server_times = lambda _url, *a: timed_wrk(api, *a)  # noqa: E731 (run_wrk's signature)
            live_block = bench_live.run(
                env, api.url, tmp, with_server_times, scripts, users, seconds, likes=args.live_likes, rate=args.live_rate,
                events=args.live_events, burst=args.live_burst or (5000 if args.preset == "tiny" else 100_000),
                sync_seconds=args.live_sync_seconds)
            print(f"bench: live {json.dumps(live_block, default=str)}", flush=True)
    finally:
        for proc in (api, baseline, api_off):
            if proc:
                proc.stop()
        redis_server.stop()
    at8 = {name: grid[name]["8"] for name in grid if "8" in grid[name]}
    result = {
        "preset": args.preset,
        "machine": {"cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
                    "processor": platform.processor() or platform.machine()},
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds_per_run": seconds,
        "data": {k: v for k, v in seeded.items()},
        "baseline": at8["baseline"],
        "cache_hit": {"popular": at8["hit_popular"], "personalized": at8["hit_personalized"]},
        "cache_miss": {"popular": at8["miss_popular"], "content_based": at8["miss_content_based"],
                       "collaborative": at8["miss_collaborative"]},
        "cold_miss": {name[len("cold_"):]: at8[name] for name in COLD_SCENARIOS if name in at8},
        "uncached_miss": {name[len("uncached_"):]: at8[name] for name in UNCACHED.values() if name in at8},
        "api_worker_rss_mb": {"after_warmup": rss_warm, "after_load": rss_load, "max": max(rss_warm + rss_load)},
        "api_worker_pss_mb": {"after_load": pss_load},
        "errors": errors,
        "repeats": {"baseline_and_hits": args.repeats, "misses_at_c8": args.repeats, "misses_elsewhere": 1,
                    MIXED_SCENARIO: args.repeats},
        "refresh": refresh_result,
        "recs_db": db_sizes(recs_url),
        "mixed_personalized": {**mixed_figures(grid), "redis_before": redis_before, "redis_after": redis_after},
        "miss_vs_hit": miss_figures(at8, {name: grid[name]["1"] for name in grid if "1" in grid[name]}),
        "ratios": {
            "hit_popular_vs_baseline": round(at8["hit_popular"]["rps"] / at8["baseline"]["rps"], 3),
            "hit_personalized_vs_baseline": round(at8["hit_personalized"]["rps"] / at8["baseline"]["rps"], 3),
            "hit_popular_metrics_on_vs_off": round(at8["hit_popular"]["rps"] / at8[METRICS_OFF]["rps"], 3),
        },
        "grid": grid,
    }
    if live_block is not None:
        result["live"] = live_block
    out = args.results
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{args.preset}.json").write_text(json.dumps(result, indent=2, default=str))
    (out / f"{args.preset}.md").write_text(markdown(result))
    plot(result, out / f"{args.preset}.png")
    shutil.rmtree(tmp, ignore_errors=True)
    if out == RESULTS:
        write_benchmarks_md()
    print(markdown(result))
    print(f"bench: wrote {out / (args.preset + '.json')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
