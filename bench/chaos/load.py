"""Traffic for the campaign: timed requests from a few threads, wrk for throughput, held sockets.

Timed requests open a new connection each (no keep-alive), so every record is one
whole request as a new client sees it: connect, send, wait, read.
"""
from __future__ import annotations

import http.client
import itertools
import json
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

from bench.run import lua_script, run_wrk
from deploy.stack import ROOT

_NONCE = itertools.count(1)


@dataclass
class Req:
    label: str
    path: str
    body: bytes | Callable[[], bytes] | None = None
    method: str = "POST"
    headers: dict = field(default_factory=dict)


def miss_body(body: dict) -> Callable[[], bytes]:
    """The body with a never-repeating tiny price_from: a cache miss that filters nothing out."""
    def make() -> bytes:
        filters = dict(body.get("filters") or {})
        filters["price_from"] = float(f"0.000{next(_NONCE):09d}")
        return json.dumps({**body, "filters": filters}).encode()
    return make


def send(port: int, req: Req, timeout_s: float) -> dict:
    body = req.body() if callable(req.body) else req.body
    headers = {"Content-Type": "application/json", **req.headers} if body is not None else dict(req.headers)
    started = time.perf_counter()
    status, error, payload, response_headers = None, None, b"", {}
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request(req.method, req.path, body=body, headers=headers)
        resp = conn.getresponse()
        payload = resp.read()
        status, response_headers = resp.status, dict(resp.getheaders())
    except (OSError, http.client.HTTPException) as exc:
        error = type(exc).__name__
    finally:
        conn.close()
    return {"label": req.label, "status": status, "error": error, "started": started,
            "ms": round((time.perf_counter() - started) * 1000, 2), "body": payload, "headers": response_headers}


def hammer(port: int, groups: list[tuple[list[Req], int]], seconds: float, timeout_s: float) -> list[dict]:
    """For each (reqs, n) in groups, n clients sending reqs round-robin until `seconds` pass.

    Separate groups keep one kind of request from waiting behind another in the client:
    a slow miss must not delay the cache hits we time beside it.
    """
    deadline = time.monotonic() + seconds
    records: list[dict] = []
    lock = threading.Lock()

    def client(reqs: list[Req], offset: int):
        mine = []
        for i in itertools.count(offset):
            if time.monotonic() >= deadline:
                break
            mine.append(send(port, reqs[i % len(reqs)], timeout_s))
        with lock:
            records.extend(mine)

    pool = [threading.Thread(target=client, args=(reqs, i), daemon=True) for reqs, n in groups for i in range(n)]
    for t in pool:
        t.start()
    for t in pool:
        t.join(seconds + timeout_s + 30)
    return records


def pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summarize(records: list[dict]) -> dict:
    ms = [r["ms"] for r in records]
    statuses: dict[str, int] = {}
    for r in records:
        key = str(r["status"]) if r["status"] is not None else f"no answer ({r['error']})"
        statuses[key] = statuses.get(key, 0) + 1
    return {"requests": len(records), "statuses": statuses, "p50_ms": pct(ms, 0.5), "p99_ms": pct(ms, 0.99),
            "max_ms": max(ms) if ms else None}


def by_label(records: list[dict]) -> dict:
    labels = sorted({r["label"] for r in records})
    return {label: summarize([r for r in records if r["label"] == label]) for label in labels}


def wrk(url: str, requests: list[tuple[str, dict]], connections: int, seconds: int, workdir: Path,
        timeout_s: float | None = None, misses: bool = False) -> dict:
    """wrk through bench.run's Lua script; with misses=True, bodies carrying "__NONCE__" miss every time."""
    script = lua_script(workdir / f"wrk-{next(_NONCE)}.lua", requests, unique=misses)
    return run_wrk(url, script, connections, seconds, timeout_s=timeout_s)


class Holders:
    """`python -m bench.chaos.holders` in a child process: idle and slow-body sockets held open."""

    def __init__(self, port: int, idle: int, slow: int, seconds: float):
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.chaos.holders", str(port), str(idle), str(slow), str(seconds)],
            cwd=ROOT, stdout=subprocess.PIPE, text=True)
        self.ready: dict = {}

    def wait_ready(self, timeout_s: float = 60) -> dict:
        line = self.proc.stdout.readline()  # the child prints READY {...} once every socket is open
        if not line.startswith("READY "):
            raise RuntimeError(f"holders did not start: {line!r}")
        self.ready = json.loads(line[len("READY "):])
        return self.ready

    def result(self) -> dict:
        out, _ = self.proc.communicate(timeout=120)
        line = next((row for row in out.splitlines() if row.startswith("DONE ")), None)
        return json.loads(line[len("DONE "):]) if line else {"error": out[-500:]}
