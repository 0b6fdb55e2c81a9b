"""clients/ruby/recommendation_client.rb, run by Ruby against a live gunicorn (the Rails side of the contract)."""
import json
import os
import re
import shutil
import signal
import subprocess
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import redis

from tests.conftest import query
from tests.live import start_api

CLIENT = Path(__file__).resolve().parent.parent / "clients" / "ruby" / "recommendation_client.rb"

# Calls the client the way the Rails app does; prints one JSON object. Errors become data.
DRIVER = r'''
require ARGV[0]
def call
  { ok: yield }
rescue RecommendationClient::RequestError => e
  { error: "request", status: e.status, fields: e.errors.map { |x| x["field"] }, message: e.message }
rescue RecommendationClient::UnavailableError => e
  { error: "unavailable", status: e.status, attempts: e.attempts, message: e.message }
end
out = {}
case ARGV[1]
when "contract"
  out[:popular] = call { RecommendationClient.get_popular_items(
    user_params: { gender: "f", age: "25-34", category: "fashion", geo_id: 213 },
    filters: { price_from: 500, price_to: 20000 }, pagination: { page: 1, limit: 20 }) }
  out[:personalized] = call { RecommendationClient.get_personalized_recommendations(
    user_id: ARGV[2].to_i, geo_id: 213, filters: { price_from: 100, price_to: 100000 }, pagination: { page: 2, limit: 5 }) }
  out[:bad] = call { RecommendationClient.get_popular_items(user_params: { gender: "robot" }) }
  out[:categories] = call { RecommendationClient.categories }
else
  started = Process.clock_gettime(Process::CLOCK_MONOTONIC)
  out[:popular] = call { RecommendationClient.get_popular_items(user_params: { geo_id: 213 }) }
  out[:seconds] = Process.clock_gettime(Process::CLOCK_MONOTONIC) - started
end
puts JSON.generate(out)
'''


def _has_ruby_http():
    return shutil.which("ruby") and subprocess.run(["ruby", "-e", 'require "http"'], capture_output=True).returncode == 0


pytestmark = pytest.mark.skipif(not _has_ruby_http(),
                                reason="ruby and ruby-http are not installed (apt-get install ruby ruby-http)")


def run_client(tmp_path, url, scenario="one", *args, **env) -> dict:
    script = tmp_path / "driver.rb"
    script.write_text(DRIVER)
    out = subprocess.run(["ruby", str(script), str(CLIENT), scenario, *map(str, args)], capture_output=True,
                         text=True, timeout=60,
                         env={"RECOMMENDATION_SERVICE_URL": url, "PATH": "/usr/bin:/bin", **env})
    assert out.returncode == 0, out.stderr
    return json.loads(out.stdout)


@pytest.fixture(scope="module")
def live_api(tiny_env):
    proc, url = start_api(tiny_env)
    yield proc, url
    proc.stop()


def test_rails_client_contract(live_api, tiny_env, tmp_path):
    _, url = live_api
    user = query(tiny_env["RECOMMENDATIONS_DATABASE_URL"],
                 "SELECT user_id FROM user_profiles WHERE interaction_count >= 5 ORDER BY user_id LIMIT 1")[0][0]
    result = run_client(tmp_path, url, "contract", user)
    popular, personalized = result["popular"]["ok"], result["personalized"]["ok"]
    assert popular["algorithm_used"] == "popular" and popular["items"]
    assert personalized["pagination"]["page"] == 2 and len(personalized["items"]) == 5
    assert personalized["algorithm_used"].startswith("collaborative")
    # A 4xx is an exception naming the field, not a hash to dig in.
    assert result["bad"]["error"] == "request" and result["bad"]["status"] == 400
    assert result["bad"]["fields"] == ["user_params.gender"] and "400" in result["bad"]["message"]
    assert {c["category"] for c in result["categories"]["ok"]} >= {"fashion"}


def test_rails_client_sends_basic_auth_from_the_environment(tiny_env, tmp_path):
    proc, url = start_api(dict(tiny_env, BASIC_AUTH_USERNAME="rails", BASIC_AUTH_PASSWORD="s3cret"))
    try:
        good = run_client(tmp_path, url, RECOMMENDATION_SERVICE_USERNAME="rails",
                          RECOMMENDATION_SERVICE_PASSWORD="s3cret")
        wrong = run_client(tmp_path, url, RECOMMENDATION_SERVICE_USERNAME="rails",
                           RECOMMENDATION_SERVICE_PASSWORD="nope")
        missing = run_client(tmp_path, url)
    finally:
        proc.stop()
    assert good["popular"]["ok"]["items"]
    assert wrong["popular"]["status"] == 401 and missing["popular"]["status"] == 401
    assert wrong["popular"]["error"] == "request"


def _count(log: str, pattern: str) -> int:
    return len(re.findall(pattern, log))


def test_rails_client_retries_a_503_with_backoff_then_gives_up(tiny_env, tmp_path):
    # A real 503: the recommendations DB is unreachable and nothing is cached.
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    proc, url = start_api(dict(tiny_env, RECOMMENDATIONS_DATABASE_URL="postgresql://127.0.0.1:1/nowhere"))
    try:
        result = run_client(tmp_path, url, RECOMMENDATION_SERVICE_RETRIES="2")
        for _ in range(50):
            if _count(proc.output(), r"path=/popular status=503") >= 3:
                break
            time.sleep(0.1)
        log = proc.output()
    finally:
        proc.stop()
    assert result["popular"]["error"] == "unavailable" and result["popular"]["status"] == 503
    assert result["popular"]["attempts"] == 3
    assert _count(log, r"path=/popular status=503") == 3, log[-2000:]
    assert result["seconds"] >= 0.1 + 0.2  # backed off between the attempts


class _FlakyService(BaseHTTPRequestHandler):
    """Answers 503 (Retry-After: 0.2) to the first `failures` POSTs, then a real-looking 200."""

    failures = 2
    seen = []

    def do_POST(self):  # noqa: N802 (http.server's naming)
        self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.seen.append(time.monotonic())
        if len(self.seen) <= self.failures:
            body, status, extra = b'{"error": "unavailable", "message": "busy"}', 503, [("Retry-After", "0.2")]
        else:
            body, status, extra = (b'{"items": [1, 2], "pagination": {}, "computation_time_ms": 1, '
                                   b'"algorithm_used": "popular", "cache_hit": true}', 200, [])
        self.send_response(status)
        for name, value in [("Content-Type", "application/json"), ("Content-Length", str(len(body))), *extra]:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


def test_rails_client_recovers_when_a_retry_succeeds(tmp_path):
    # The service answering 503 and then recovering, in an exact order, needs a scripted server.
    _FlakyService.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FlakyService)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        result = run_client(tmp_path, f"http://127.0.0.1:{server.server_port}")
    finally:
        server.shutdown()
    assert result["popular"]["ok"]["items"] == [1, 2]
    assert len(_FlakyService.seen) == 3
    gaps = [b - a for a, b in zip(_FlakyService.seen, _FlakyService.seen[1:])]
    assert all(g >= 0.18 for g in gaps), gaps  # Retry-After honoured


def test_rails_client_times_out_on_a_frozen_service(tiny_env, tmp_path):
    # SIGSTOP the whole gunicorn: the kernel still accepts connections, nothing answers.
    proc, url = start_api(tiny_env)
    pgid = os.getpgid(proc.proc.pid)
    os.killpg(pgid, signal.SIGSTOP)
    try:
        result = run_client(tmp_path, url, RECOMMENDATION_SERVICE_TIMEOUT="1", RECOMMENDATION_SERVICE_RETRIES="2")
    finally:
        os.killpg(pgid, signal.SIGCONT)
        proc.stop()
    assert result["popular"]["error"] == "unavailable" and "timeout" in result["popular"]["message"]
    assert result["popular"]["attempts"] == 1  # a timeout spent the budget: no retry
    assert result["seconds"] < 1 + 3  # bounded by the timeout, not hanging
