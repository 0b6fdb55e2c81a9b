"""Cache-hit and cache-miss cost in-process, without HTTP: `python -m bench.inprocess [--misses]`.

Calls the API's WSGI app and the bare Flask+GET baseline (bench/baseline_app.py)
directly, many times, and prints the median microseconds per call of each. With
--misses it also times misses per algorithm: `make bench`'s miss mixes (users of each
bucket, never-repeating price_from). It needs a refreshed recommendations DB and Redis
from the usual settings (e.g. after `make refresh`). No sockets or wrk: this isolates
what the application code and its queries cost, the figure to watch when changing the
hit or miss path.
"""
from __future__ import annotations

import argparse
import io
import itertools
import logging
import os
import statistics
import sys
import time

import orjson

POPULAR = {"user_params": {"gender": "f", "age": "25-34", "geo_id": 213}, "pagination": {"page": 1, "limit": 20}}
PERSONALIZED = {"user_id": 1234, "pagination": {"page": 1, "limit": 20}}


def call(app, path: str, body: bytes) -> str:
    environ = {"REQUEST_METHOD": "POST", "PATH_INFO": path, "SERVER_NAME": "bench", "SERVER_PORT": "8001",
               "REMOTE_ADDR": "127.0.0.1", "wsgi.input": io.BytesIO(body), "CONTENT_LENGTH": str(len(body)),
               "CONTENT_TYPE": "application/json", "wsgi.url_scheme": "http", "SERVER_PROTOCOL": "HTTP/1.1",
               "wsgi.errors": sys.stderr}
    status = []
    result = app(environ, lambda s, h, e=None: status.append(s))
    b"".join(result)
    if hasattr(result, "close"):
        result.close()
    return status[0]


def median_us(one, calls: int, rounds: int = 5, warmup: int = 200) -> float:
    """Median over `rounds` of the microseconds per one(i) call, after `warmup` calls."""
    for i in range(warmup):
        one(i)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for i in range(calls):
            one(i)
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def per_call_us(app, path: str, body: bytes, calls: int) -> float:
    return median_us(lambda _: call(app, path, body), calls)


RUN_ID = time.time_ns() % 10**6  # price_from never repeats across runs or calls: every call misses
NONCES = itertools.count(1)


def miss_us(app, requests: list, calls: int) -> float:
    """Median microseconds per call over `requests`, each call a never-seen price_from."""
    def one(i):
        path, body = requests[i % len(requests)]
        raw = orjson.dumps(body).replace(b'"__NONCE__"', b"0.%d%09d" % (RUN_ID, next(NONCES)))
        status = call(app, path, raw)
        if not status.startswith("200"):
            raise SystemExit(f"{path}: {status}")

    return median_us(one, calls, warmup=50)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per round (5 rounds, median reported)")
    parser.add_argument("--misses", action="store_true", help="also time cache misses per algorithm")
    parser.add_argument("--miss-calls", type=int, default=400, help="miss calls per round")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=open(os.devnull, "w"))  # the access line is written, unread
    from api import create_app

    app = create_app()
    os.environ.setdefault("RECOMMENDATIONS_REDIS_URL", app.extensions["recs"].settings.recommendations_redis_url)
    from bench import baseline_app

    baseline_app.client().set(baseline_app.KEY, b'{"items": []}')
    rows = [("baseline (bare Flask + GET)", baseline_app.app, "/popular", POPULAR)]
    rows += [("hit /popular", app, "/popular", POPULAR), ("hit /personalized", app, "/personalized", PERSONALIZED)]
    base = None
    for name, target, path, body in rows:
        raw = orjson.dumps(body)
        status = call(target, path, raw)  # the first call fills the cache
        if not status.startswith("200"):
            raise SystemExit(f"{name}: {status}; is the recommendations DB refreshed?")
        us = per_call_us(target, path, raw, args.calls)
        base = base or us
        print(f"{name}: {us:.1f} us per call ({us / base:.2f}x baseline)")
    if args.misses:
        from bench.run import pick_users, request_mixes

        mixes = request_mixes(pick_users(app.extensions["recs"].settings.recommendations_database_url))
        for name in ("miss_popular", "miss_content_based", "miss_collaborative"):
            print(f"{name.replace('_', ' ', 1)}: {miss_us(app, mixes[name], args.miss_calls):.1f} us per call")
    return 0


if __name__ == "__main__":
    sys.exit(main())
