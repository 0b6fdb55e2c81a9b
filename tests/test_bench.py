"""The bench tools run end to end on tiny data and report what they should (figures live in BENCHMARKS.md, not here)."""
import json
import shutil
import subprocess
import sys

import pytest

from tests.conftest import query
from tests.live import ROOT, clean_env


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (apt-get install wrk)")
def test_bench_tiny_writes_valid_results(databases, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.run", "--preset", "tiny", "--seconds", "1", "--repeats", "1",
         "--main-url", databases["main_bench"], "--recs-url", databases["recs_bench"], "--results", str(tmp_path),
         "--live-likes", "20", "--live-events", "20", "--live-burst", "3000", "--live-sync-seconds", "2"],
        cwd=ROOT, env=clean_env({}), capture_output=True, text=True, timeout=600,
    )
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    result = json.loads((tmp_path / "tiny.json").read_text())
    for key in ("preset", "machine", "when", "baseline", "cache_hit", "cache_miss", "api_worker_rss_mb", "errors",
                "refresh"):
        assert key in result, key
    assert set(result["cache_hit"]) == {"popular", "personalized"}
    assert set(result["cache_miss"]) == {"popular", "content_based", "collaborative"}
    for block in [result["baseline"], *result["cache_hit"].values(), *result["cache_miss"].values()]:
        assert block["rps"] > 0 and block["p50_ms"] <= block["p99_ms"]
    assert set(result["grid"]["miss_collaborative"]) == {"1", "8", "32"}
    assert result["refresh"]["total_s"] > 0 and result["refresh"]["peak_rss_mb"] > 0
    preload = result["refresh"]["preload"]  # every user's row cached by the lists job (a 512 MB Redis)
    assert preload["users"] == preload["profiled"] > 0 and "stopped" not in preload, preload
    assert result["errors"] == 0
    mixed = result["mixed_personalized"]  # and Redis as that run found it: tiny fits, every row still cached
    assert mixed["rps"] > 0 and mixed["redis_before"]["evicted_keys"] == 0
    assert mixed["redis_before"]["rows_cached_share"] == 1.0 and 0 < mixed["redis_before"]["used_mb"] < 512
    live = result["live"]
    assert live["freshness"]["likes"] == 20 and live["freshness"]["missing"] == 0
    assert 0 < live["freshness"]["p50_s"] <= live["freshness"]["p99_s"]
    assert live["events"]["events"] == 20 and live["events"]["p50_ms"] <= live["events"]["p99_ms"]
    assert live["throughput"]["applied"] >= 3000 and live["throughput"]["interactions_per_s"] > 0
    assert live["serving"]["with"]["hit_personalized"]["rps"] > 0 and live["hit_rps_with_vs_without"] > 0
    rounds = live["serving"]["rounds"]
    assert all(len(live["serving"][c][name]["runs"]) == rounds >= 2 for c in ("with", "without")
               for name in ("hit_personalized", "miss_collaborative"))
    assert all(live["miss_server_p99_ms"][c] > 0 for c in ("with", "without"))  # from the API's access log
    # The bench deletes what it added to the main DB.
    assert query(databases["main_bench"], "SELECT count(*) FROM handpicked_likes WHERE created_at > now() - "
                                          "interval '1 hour'")[0][0] == 0
    assert result["grid"]["hit_popular_metrics_off"]["8"]["rps"] > 0 and result["ratios"]["hit_popular_metrics_on_vs_off"] > 0
    assert (tmp_path / "tiny.png").stat().st_size > 0 and "| baseline |" in (tmp_path / "tiny.md").read_text()


def _tool(module: str, env: dict, *args: str) -> dict:
    """Run a bench tool on the refreshed tiny DBs; {label: microseconds} from its `label: N us ...` lines."""
    out = subprocess.run([sys.executable, "-m", module, *args], cwd=ROOT, env=clean_env(env),
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    return {line.split(":")[0]: float(line.split(":")[1].split()[0]) for line in out.stdout.splitlines() if " us " in line}


def test_inprocess_times_hits_and_every_miss_kind(tiny_env):
    # Every timed call must answer 200 (the tool exits otherwise), misses included.
    figures = _tool("bench.inprocess", tiny_env, "--misses", "--calls", "50", "--miss-calls", "20")
    assert set(figures) == {"baseline (bare Flask + GET)", "hit /popular", "hit /personalized", "miss popular",
                            "miss content_based", "miss collaborative"}
    assert all(us > 0 for us in figures.values())


def test_plans_times_custom_and_generic(tiny_env):
    figures = _tool("bench.plans", tiny_env, "--rounds", "2")
    assert set(figures) == {"force_custom_plan", "force_generic_plan"}
    assert all(us > 0 for us in figures.values())


def test_uncached_runs_put_back_the_hashes_they_deleted(redis_server):
    """The uncached_* scenarios delete their users' hashes; the scenarios after them must find
    those hashes as the refresh left them (rows, stored lists, expiries), not gone."""
    import redis

    from bench.run import recache, uncache
    from shared.cache import user_key

    url = f"{redis_server.url}/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    client.hset(user_key(1), mapping={"v": "a", "l:u:x": b"a|row-1"})
    client.expire(user_key(1), 500)
    client.hset(user_key(2), mapping={"v": "b", "l:u:x": b"b|row-2", "l:g:213:": b"b|list"})
    client.expire(user_key(2), 900)
    client.hset(user_key(5), "v", "e")  # no expiry: none after either
    client.hset(user_key(4), "v", "d")  # not in the scenario: untouched
    client.expire(user_key(4), 300)
    before = {u: client.hgetall(user_key(u)) for u in (1, 2, 5)}

    saved = uncache(url, [(1, 213), (2, None), (3, 213), (5, 2)])  # user 3 has no hash
    assert client.exists(user_key(1), user_key(2), user_key(5)) == 0 and client.exists(user_key(4)) == 1
    assert len(saved) == 3
    client.hset(user_key(1), mapping={"v": "a", "l:u:x": b"a|stored-by-the-run"})  # what the run stores
    recache(url, saved)

    assert {u: client.hgetall(user_key(u)) for u in (1, 2, 5)} == before
    assert 400 < client.ttl(user_key(1)) <= 500 and 800 < client.ttl(user_key(2)) <= 900
    assert client.ttl(user_key(5)) == -1 and client.exists(user_key(3)) == 0
    client.flushdb()


def test_mixed_runs_start_without_the_users_stored_answers(redis_server):
    """forget_answers drops a user's stored answers and nothing else: their row, version and
    feedback stay, with the hash's expiry."""
    import redis

    from bench.run import forget_answers
    from shared.cache import user_key, user_list_field, user_row_field

    url = f"{redis_server.url}/12"
    client = redis.Redis.from_url(url)
    client.flushdb()
    gens = {"popular": "3", "profiles": "4", "similarities": "5", "lists": "3.4.5"}
    row, answer = user_row_field(gens), user_list_field(gens, 213, "p=0-1000")
    client.hset(user_key(1), mapping={"v": "a", "f": "1", "f:17": "l:99", row: b"a|row", answer: b"a|list",
                                      user_list_field(gens, 2, ""): b"a|list-2"})
    client.expire(user_key(1), 600)
    client.hset(user_key(2), mapping={answer: b"b|list"})  # only answers: the hash goes
    client.expire(user_key(2), 600)
    client.hset(user_key(3), mapping={answer: b"c|list"})  # not in the run: untouched
    client.expire(user_key(3), 600)

    forget_answers(url, [(1, 213), (2, None), (4, 2)])  # user 4 has no hash

    assert set(client.hkeys(user_key(1))) == {b"v", b"f", b"f:17", row.encode()}
    assert 500 < client.ttl(user_key(1)) <= 600
    assert client.exists(user_key(2)) == 0 and client.hkeys(user_key(3)) == [answer.encode()]
    client.flushdb()


def test_figures_read_results_with_and_without_the_newer_fields():
    """BENCHMARKS.md is written from every preset's last results, some older than the newest
    fields (the c=1 ratio, the mixed runs): each says what it has, with no empty clause."""
    from bench.run import RESULTS, markdown, miss_figures

    results = [json.loads((RESULTS / f"{preset}.json").read_text()) for preset in ("tiny", "default", "large")
               if (RESULTS / f"{preset}.json").exists()]
    assert results
    for result in results:
        text = markdown(result)
        assert "()" not in text and ": ." not in text and "runs )" not in text
    block = {"rps": 100.0, "server_p50_ms": 2.0}
    at8 = {"baseline": {"rps": 200.0}, "hit_popular": {"rps": 180.0, "server_p50_ms": 1.0},
           "hit_personalized": {"rps": 170.0, "server_p50_ms": 0.5},
           **{f"miss_{a}": block for a in ("popular", "content_based", "collaborative")}}
    figures = miss_figures(at8, {"miss_popular": {"server_p50_ms": 0.3}, "hit_popular": {"server_p50_ms": 0.2}})
    assert figures["popular"] == {"server_p50_vs_hit": 2.0, "server_p50_vs_hit_c1": 1.5, "rps_vs_baseline": 0.5}
    assert figures["content_based"]["server_p50_vs_hit"] == 4.0 and figures["content_based"]["server_p50_vs_hit_c1"] is None
