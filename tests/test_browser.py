"""The dashboard in a real browser (Debian's chromium, driven by playwright) against a
live gunicorn on the tiny preset: every panel drawn with real data, the user preview
used, and the time to fully drawn reported (printed, not asserted)."""
import json
import urllib.request

import pytest
import redis

from deploy import browser
from tests.conftest import query
from tests.live import start_api
from tests.test_api import users_by_count

pytestmark = pytest.mark.skipif(not browser.available(),
                                reason=f"{browser.CHROMIUM} is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def live(tiny_env):
    redis.Redis.from_url(tiny_env["RECOMMENDATIONS_REDIS_URL"]).flushdb()
    proc, url = start_api(dict(tiny_env, GENERATION_CHECK_MS="0"))
    users = users_by_count(tiny_env)
    for i in range(30):  # traffic for the hit-rate and latency charts
        body = {"user_params": {"gender": "f", "age": "25-34"}} if i % 2 else {"user_id": users["many"]}
        req = urllib.request.Request(url + ("/popular" if i % 2 else "/personalized"), data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"})
        urllib.request.urlopen(req, timeout=10).read()
    yield url
    proc.stop()


def test_dashboard_is_drawn_with_real_data_and_previews_a_user(live, tiny_env, capsys):
    users = users_by_count(tiny_env)
    jobs_in_db = {r[0] for r in query(tiny_env["RECOMMENDATIONS_DATABASE_URL"], "SELECT DISTINCT job FROM job_runs")}
    with browser.page() as p:
        errors = []
        p.on("pageerror", lambda exc: errors.append(str(exc)))
        drawn_ms = browser.load_dashboard(p, live)
        with capsys.disabled():
            print(f"\n  dashboard fully drawn in {drawn_ms:.0f} ms (tiny preset, from navigation start)")

        rows = p.locator("#jobs tr.job")
        assert rows.count() >= 4
        drawn_jobs = set(p.eval_on_selector_all("#jobs tr.job", "rows => rows.map(r => r.dataset.job)"))
        assert jobs_in_db <= drawn_jobs
        assert p.locator("#jobs tr.job[data-job=popular_items] .badge.ok").count() == 1
        assert p.locator("#jobs rect.run.success").count() >= len(jobs_in_db)

        assert int(p.get_attribute("#hitrate .body", "data-points")) >= 1
        assert int(p.get_attribute("#latency .body", "data-points")) >= 1
        assert p.locator("#hitrate path.series").count() == 1 and p.locator("#latency path.series").count() == 2
        assert "requests" in p.inner_text("#latency .body")

        volumes = p.locator("#volumes tr.volume")
        assert volumes.count() >= 8
        assert "600" in p.inner_text("#volumes")  # tiny: 600 users in the main DB
        assert "%" in p.inner_text("#cache")

        browser.preview_user(p, users["many"])
        assert "3+ interactions" in p.inner_text("#bucket")
        assert p.inner_text("#algorithm").startswith("collaborative")
        assert "%" in p.inner_text("#categories") and "avg" in p.inner_text("#price-level")
        assert "#" in p.inner_text("#neighbours")
        items = p.locator("#items tr.item")
        assert items.count() == 20
        first = items.nth(0).inner_text()
        assert "gift #" in first  # the seed's titles
        whys = p.eval_on_selector_all("#items td.why", "cells => cells.map(c => c.innerText)")
        assert any("liked by neighbour" in w for w in whys)

        browser.preview_user(p, users["few"])
        assert p.inner_text("#algorithm").startswith("content_based")
        whys = p.eval_on_selector_all("#items td.why", "cells => cells.map(c => c.innerText)")
        assert any("of the profile" in w for w in whys) and any("price match" in w for w in whys)
        assert not errors, errors
