"""Time-bounded dependency checks, run concurrently and cached per process.

/health and /readyz read one snapshot per process, refreshed at most every `ttl_s`
by one caller at a time (the others get the fresh snapshot when it lands, or the
last one), and each check is cut off after `timeout_s`. So a hung dependency costs a
probe at most `timeout_s`, and any number of probe callers cost the dependencies one
round of checks per `ttl_s` and cost serving nothing.
"""
from __future__ import annotations

import threading
import time

from shared.deadline import TimedOut, within


def first_line(exc: BaseException) -> str:
    return (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]


def run_bounded(checks: dict, timeout_s: float) -> dict:
    """{name: fn} -> {name: {"ok": bool, "value" or "error", "latency_ms"}}, all run at once.

    Each fn runs in its own thread (a greenlet under gevent workers) inside a deadline;
    whatever has not answered after timeout_s is reported as timed out.
    """
    results: dict = {}

    def run(name, fn):
        started = time.perf_counter()
        try:
            with within(timeout_s):
                value = fn()
            out = {"ok": True, "value": value}
        except Exception as exc:  # any failure means "down"; the message says which
            out = {"ok": False, "error": first_line(exc)}
        out["latency_ms"] = round((time.perf_counter() - started) * 1000, 2)
        results[name] = out

    threads = [threading.Thread(target=run, args=item, daemon=True, name=f"health-{item[0]}")
               for item in checks.items()]
    for t in threads:
        t.start()
    deadline = time.monotonic() + timeout_s
    for t in threads:
        t.join(max(0.0, deadline - time.monotonic()) + 0.05)
    timed_out = TimedOut(timeout_s)
    return {name: results.get(name) or {"ok": False, "error": str(timed_out), "latency_ms": round(timeout_s * 1000)}
            for name in checks}


class Snapshot:
    """compute() at most once per ttl_s per process, one caller at a time."""

    def __init__(self, compute, ttl_s: float, wait_s: float):
        self._compute = compute
        self._ttl_s = ttl_s
        self._wait_s = wait_s
        self._lock = threading.Lock()
        self._value = None
        self._at = 0.0

    def _fresh(self) -> bool:
        return self._value is not None and time.monotonic() - self._at < self._ttl_s

    def get(self) -> tuple[dict, float]:
        """(value, age in seconds)."""
        if not self._fresh() and self._lock.acquire(timeout=self._wait_s):
            try:
                if not self._fresh():
                    self._value = self._compute()
                    self._at = time.monotonic()
            finally:
                self._lock.release()
        if self._value is None:
            raise TimedOut(self._wait_s)
        return self._value, time.monotonic() - self._at
