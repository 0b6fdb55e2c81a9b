"""Cache-hit cost in-process, without HTTP: `python -m bench.inprocess`.

Calls the API's WSGI app and the bare Flask+GET baseline (bench/baseline_app.py)
directly, many times, and prints the median microseconds per call of each. It needs a
refreshed recommendations DB and Redis from the usual settings (e.g. after
`make refresh`). No sockets or wrk: this isolates what the application code costs, the
figure to watch when changing the hit path.
"""
from __future__ import annotations

import argparse
import io
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


def per_call_us(app, path: str, body: bytes, calls: int, rounds: int = 5) -> float:
    for _ in range(200):
        call(app, path, body)
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        for _ in range(calls):
            call(app, path, body)
        times.append((time.perf_counter() - started) / calls * 1e6)
    return statistics.median(times)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=4000, help="calls per round (5 rounds, median reported)")
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
    return 0


if __name__ == "__main__":
    sys.exit(main())
