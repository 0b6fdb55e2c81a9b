"""Fast fault cases against a real gunicorn (the production config: gevent workers).

Dependencies are frozen for real: PostgreSQL through deploy.faultproxy (the server
keeps running for everyone else; the proxy accepts and forwards nothing), Redis by
SIGSTOP of a private redis-server. DB_TIMEOUT_MS is 1000 here, so every bound below
is "the deadline plus slack", never a speed figure. One web worker: anything that
could hold it would show.
"""
from __future__ import annotations

import http.client
import json
import socket
import threading
import time
import urllib.error
import urllib.request
from urllib.parse import urlsplit

import pytest

from deploy.faultproxy import FaultProxy
from shared.db import database_name
from tests.conftest import SERVER_URL, query
from tests.live import start_api

DEADLINE_S = 1.0  # DB_TIMEOUT_MS: each recommendations-DB call
REQUEST_DEADLINE_S = 3.0  # REQUEST_TIMEOUT_MS: the whole request
SLACK_S = 1.0  # scheduling on a busy machine; the bound is the deadline, not a speed
HIT = {"user_params": {"gender": "f", "age": "25-34"}}


def tcp_url(url: str, port: int) -> str:
    """The same database through 127.0.0.1:port (the proxy)."""
    server = urlsplit(SERVER_URL)
    auth = ""
    if server.username:
        auth = server.username + (f":{server.password}" if server.password else "") + "@"
    return f"postgresql://{auth}127.0.0.1:{port}/{database_name(url)}"


def call(url: str, path: str, body=None, timeout: float = 15) -> tuple[int, dict, float]:
    started = time.monotonic()
    req = urllib.request.Request(url + path, data=None if body is None else json.dumps(body).encode(),
                                 headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            status, raw = r.status, r.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
    return status, json.loads(raw), time.monotonic() - started


@pytest.fixture(scope="module")
def stack(tiny_env, redis_server_factory):
    server = urlsplit(SERVER_URL)
    target = (server.hostname or "127.0.0.1", server.port or 5432)
    recs_proxy = FaultProxy(*target).start()
    main_proxy = FaultProxy(*target).start()
    redis = redis_server_factory()
    env = dict(tiny_env,
               RECOMMENDATIONS_DATABASE_URL=tcp_url(tiny_env["RECOMMENDATIONS_DATABASE_URL"], recs_proxy.port),
               MAIN_DATABASE_URL=tcp_url(tiny_env["MAIN_DATABASE_URL"], main_proxy.port),
               RECOMMENDATIONS_REDIS_URL=f"{redis.url}/1", CELERY_BROKER_URL=f"{redis.url}/2",
               CELERY_RESULT_BACKEND=f"{redis.url}/3", DB_TIMEOUT_MS=str(int(DEADLINE_S * 1000)),
               REQUEST_TIMEOUT_MS=str(int(REQUEST_DEADLINE_S * 1000)))
    proc, url = start_api(env, workers=1)
    try:
        yield {"url": url, "proc": proc, "recs": recs_proxy, "main": main_proxy, "redis": redis}
        log = proc.output()
        assert "WORKER TIMEOUT" not in log and log.count("Booting worker") == 1, log[-3000:]
    finally:
        proc.stop()
        for thing in (recs_proxy, main_proxy, redis):
            thing.stop()


def wait_until_ok(url, path, body):
    for _ in range(50):
        status, data, _ = call(url, path, body)
        if status == 200:
            return data
        time.sleep(0.1)
    raise AssertionError(f"{path} did not recover: {status} {data}")


def test_frozen_recommendations_db_503s_misses_that_read_it_within_the_deadline(stack, tiny_env):
    url = stack["url"]
    assert call(url, "/popular", HIT)[0] == 200  # a miss: loads the catalogue snapshot
    assert call(url, "/popular", HIT)[1]["cache_hit"] is True
    recs = tiny_env["RECOMMENDATIONS_DATABASE_URL"]
    (newcomer,) = query(recs, "SELECT user_id FROM user_profiles WHERE interaction_count = 0 ORDER BY user_id LIMIT 1")[0]
    others = [u for (u,) in query(recs, "SELECT user_id FROM user_profiles WHERE user_id <> %s ORDER BY user_id LIMIT 3",
                                  (newcomer,))]
    assert call(url, "/personalized", {"user_id": newcomer})[0] == 200  # caches the user's row
    stack["recs"].freeze()
    try:
        # Misses that read the DB: users whose row is not cached (nothing was preloaded here).
        misses = []
        threads = [threading.Thread(target=lambda i=i: misses.append(
            call(url, "/personalized", {"user_id": user, "filters": {"price_to": 1000 + i}})))
            for i, user in enumerate(others)]
        for t in threads:
            t.start()
        time.sleep(0.1)
        status, body, hit_s = call(url, "/popular", HIT)
        assert status == 200 and body["cache_hit"] is True
        assert hit_s < 0.75 * DEADLINE_S  # not queued behind the frozen misses
        for t in threads:
            t.join()
        for status, body, took in misses:
            assert status == 503 and body["error"] == "unavailable", body
            assert took < DEADLINE_S + SLACK_S
        # Misses that read nothing are answered: the catalogue snapshot holds every segment's
        # list, and the newcomer's row is cached (popular for them, filtered in memory).
        for path, req in (("/popular", {"user_params": {"gender": "m"}, "filters": {"price_to": 777}}),
                          ("/personalized", {"user_id": newcomer, "filters": {"price_to": 5000}})):
            status, body, took = call(url, path, req)
            assert status == 200 and body["cache_hit"] is False and body["items"], (path, body)
            assert took < 0.75 * DEADLINE_S  # no read, no wait
        status, body, took = call(url, "/health")
        assert status == 200 and body["status"] == "degraded" and "recommendations_db" in body["failing"]
        assert took < DEADLINE_S + SLACK_S
        status, body, took = call(url, "/stats")
        assert status == 200 and "error" in body["recommendations_db"] and took < DEADLINE_S + SLACK_S
    finally:
        stack["recs"].thaw()
    assert wait_until_ok(url, "/popular", {"filters": {"price_to": 4321}})["cache_hit"] is False


def test_frozen_redis_serves_from_the_database_within_the_deadline(stack):
    url = stack["url"]
    body = {"user_params": {"gender": "m", "age": "35-44"}}
    # The test before thawed a frozen recommendations DB: a pooled connection caught in that
    # outage may still cost one request its deadline (a 503), so wait until serving is back.
    assert wait_until_ok(url, "/popular", body)["items"]
    stack["redis"].pause()
    try:
        for path, req in [("/popular", body), ("/personalized", {"user_id": 3, "geo_id": 213})] * 2:
            status, data, took = call(url, path, req)
            assert status == 200 and data["cache_hit"] is False and data["items"], data
            assert took < DEADLINE_S + SLACK_S
        time.sleep(1.6)  # past the /health snapshot's lifetime
        status, data, took = call(url, "/health")
        assert status == 200 and data["status"] == "degraded" and data["failing"] == ["redis"], data
        assert took < DEADLINE_S + SLACK_S
        assert call(url, "/readyz")[0] == 200
    finally:
        stack["redis"].resume()
    assert wait_until_ok(url, "/popular", body)["items"]


def test_hung_main_db_bounds_health_and_leaves_serving_alone(stack):
    url = stack["url"]
    assert call(url, "/popular", HIT)[0] == 200
    stack["main"].freeze()
    health, stop = [], threading.Event()

    def probe():
        while not stop.is_set():
            health.append(call(url, "/health"))

    callers = [threading.Thread(target=probe) for _ in range(6)]
    try:
        for t in callers:
            t.start()
        served, until = [], time.monotonic() + 2.5  # longer than a /health snapshot lives
        while time.monotonic() < until:
            served.append(call(url, "/popular", HIT))
    finally:
        stop.set()
        for t in callers:
            t.join()
        stack["main"].thaw()
    assert all(s == 200 and b["cache_hit"] for s, b, _ in served)
    assert max(took for _, _, took in served) < DEADLINE_S  # never waits for a /health check
    assert health and all(s == 200 for s, _, _ in health)
    assert all(took < DEADLINE_S + SLACK_S for _, _, took in health)
    assert any(b["status"] == "degraded" and b["failing"] == ["main_db"] for _, b, _ in health), health[-1]


def test_idle_sockets_and_slow_bodies_do_not_starve_the_worker(stack):
    host, port = urlsplit(stack["url"]).hostname, urlsplit(stack["url"]).port
    idle = [socket.create_connection((host, port)) for _ in range(10)]
    slow = []
    for _ in range(5):
        s = socket.create_connection((host, port))
        s.sendall(b"POST /popular HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                  b"Content-Length: 100\r\n\r\n{\"user_")
        slow.append(s)
    try:
        for path, body in [("/health", None), ("/popular", HIT), ("/livez", None), ("/popular", HIT)]:
            status, _, took = call(stack["url"], path, body)
            assert status == 200 and took < DEADLINE_S
        # The slow bodies themselves end at the whole request's deadline with a 503, not a hang.
        for s in slow:
            s.settimeout(REQUEST_DEADLINE_S + SLACK_S + 2)
            head = s.recv(4096)
            assert head.startswith(b"HTTP/1.1 503"), head[:200]
    finally:
        for s in idle + slow:
            s.close()


def test_chunked_body_over_the_limit_is_a_413_and_under_it_is_served(stack):
    host, port = urlsplit(stack["url"]).hostname, urlsplit(stack["url"]).port
    conn = http.client.HTTPConnection(host, port, timeout=10)
    big = json.dumps({"user_params": {"gender": "f"}, "padding": "x" * (70 * 1024)}).encode()
    conn.request("POST", "/popular", body=iter([big[i:i + 8192] for i in range(0, len(big), 8192)]),
                 headers={"Content-Type": "application/json"}, encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 413 and json.loads(r.read())["errors"][0]["field"] == "body"
    conn.close()
    conn = http.client.HTTPConnection(host, port, timeout=10)
    small = json.dumps(HIT).encode()
    conn.request("POST", "/popular", body=iter([small[:5], small[5:]]), headers={"Content-Type": "application/json"},
                 encode_chunked=True)
    r = conn.getresponse()
    assert r.status == 200 and json.loads(r.read())["items"]
    conn.close()


def test_a_newline_in_the_path_cannot_forge_an_access_line(stack):
    status, _, _ = call(stack["url"], "/nothing%0Amethod=GET%20path=/forged%20status=200")
    assert status == 404
    time.sleep(0.2)
    lines = stack["proc"].output().splitlines()
    assert not any(line.startswith("method=GET path=/forged") for line in lines)
    assert any("path=/nothing%0Amethod=GET%20path=/forged" in line and "status=404" in line for line in lines)
