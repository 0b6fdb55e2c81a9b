"""compose's one-shot `init` (python -m deploy.stack init) on fresh databases, and celery beat at start."""
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from tests.conftest import db_url, drop_db, query

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent


@pytest.fixture
def fresh_env(redis_server):
    """Two databases that do not exist yet (init creates them), dropped afterwards."""
    names = [f"recs_test_{uuid.uuid4().hex[:8]}_init_{kind}" for kind in ("main", "recs")]
    env = {"MAIN_DATABASE_URL": db_url(names[0]), "RECOMMENDATIONS_DATABASE_URL": db_url(names[1]),
           # A Redis DB of its own: the refresh bumps cache generations there, not in other tests' cache.
           "RECOMMENDATIONS_REDIS_URL": f"{redis_server.url}/6", "CELERY_BROKER_URL": f"{redis_server.url}/7",
           "CELERY_RESULT_BACKEND": f"{redis_server.url}/8", "PATH": os.environ.get("PATH", "")}
    yield env
    for name in names:
        drop_db(name)


def _init(env, **extra):
    return subprocess.run([sys.executable, "-m", "deploy.stack", "init"], cwd=ROOT, env={**env, **extra},
                          capture_output=True, text=True, timeout=600)


def test_init_creates_seeds_and_refreshes_once(fresh_env):
    first = _init(fresh_env, DEMO_DATA="1", DEMO_PRESET="tiny")
    assert first.returncode == 0, first.stdout + first.stderr
    assert "seeded the tiny demo preset" in first.stdout and "refresh: status=success" in first.stdout
    main, recs = fresh_env["MAIN_DATABASE_URL"], fresh_env["RECOMMENDATIONS_DATABASE_URL"]
    assert query(main, "SELECT count(*) FROM handpicked_presents WHERE user_id IS NULL")[0][0] == 500
    assert query(recs, "SELECT count(*) FROM items")[0][0] == 500
    assert query(recs, "SELECT count(*) FROM popular_items")[0][0] > 0
    # A restart of the stack: nothing seeded again, no second full refresh.
    again = _init(fresh_env, DEMO_DATA="1", DEMO_PRESET="tiny")
    assert again.returncode == 0, again.stdout + again.stderr
    assert "main DB already has data; not seeding" in again.stdout
    assert "skipping the first refresh" in again.stdout
    assert query(recs, "SELECT count(*) FROM job_runs WHERE job = 'refresh_all'")[0][0] == 1


def test_init_without_demo_data_leaves_the_main_db_alone(fresh_env):
    out = _init(fresh_env)  # DEMO_DATA unset: an empty main DB has no tables, so the refresh fails loudly
    assert out.returncode != 0
    assert "seeded" not in out.stdout
    assert query(fresh_env["MAIN_DATABASE_URL"], "SELECT count(*) FROM pg_tables WHERE schemaname = 'public'")[0][0] == 0


def test_beat_logs_its_schedule_keeps_its_file_where_told_and_answers_ping(tiny_env, tmp_path):
    # A broker DB no worker reads: beat sends nothing within seconds anyway (every interval is minutes).
    redis_base = tiny_env["RECOMMENDATIONS_REDIS_URL"].rsplit("/", 1)[0]
    env = {**tiny_env, "CELERY_BROKER_URL": f"{redis_base}/12", "CELERY_RESULT_BACKEND": f"{redis_base}/11",
           "CELERY_BEAT_SCHEDULE_FILE": str(tmp_path / "beat-state"), "POPULAR_ITEMS_REFRESH_MINUTES": "7",
           "PATH": os.environ.get("PATH", "")}
    log_path = tmp_path / "beat.log"
    with open(log_path, "w") as log:
        beat = subprocess.Popen([str(BIN / "celery"), "-A", "workers.app", "beat", "--loglevel=INFO",
                                 "--enable-remote-control", "-n", f"celerybeat@test-{os.getpid()}"],
                                cwd=tmp_path, env={**env, "PYTHONPATH": str(ROOT)}, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.time() + 60
        while time.time() < deadline and "beat pidbox: Connected" not in log_path.read_text():
            assert beat.poll() is None, log_path.read_text()
            time.sleep(0.2)
        ping = subprocess.run([str(BIN / "celery"), "-A", "workers.app", "inspect", "ping",
                               "-d", f"celerybeat@test-{os.getpid()}", "--timeout", "10"],
                              cwd=ROOT, env=env, capture_output=True, text=True, timeout=60)
    finally:
        beat.terminate()
        beat.wait(20)
    text = log_path.read_text()
    assert "beat_schedule entry=recs.refresh_popular_items task=recs.refresh_popular_items every_s=420" in text, text
    assert "task=recs.update_user_similarities every_s=3600" in text
    assert f"beat_schedule_file path={tmp_path / 'beat-state'}" in text
    assert any(p.name.startswith("beat-state") for p in tmp_path.iterdir())  # not a fixed path under /tmp
    assert ping.returncode == 0 and "pong" in ping.stdout, ping.stdout + ping.stderr  # the compose healthcheck
