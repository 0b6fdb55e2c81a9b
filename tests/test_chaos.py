"""`make chaos` in its quick mode: the harness runs real cases end to end and reports them faithfully.

The campaign's figures live in RELIABILITY.md; this only checks that the harness works:
the cases ran, their figures are measured, and each verdict is what its figures say.
"""
import json
import shutil
import subprocess
import sys

import pytest

from tests.live import ROOT


@pytest.mark.skipif(not shutil.which("wrk"), reason="wrk is not installed (apt-get install wrk)")
def test_chaos_quick_runs_cases_and_reports_them(databases, tmp_path):
    out = subprocess.run(
        [sys.executable, "-m", "bench.chaos", "--quick", "--preset", "tiny", "--cases", "small_items,frozen_recs_db",
         "--main-url", databases["main_bench"], "--recs-url", databases["recs_bench"],
         "--markdown", str(tmp_path / "RELIABILITY.md"), "--json", str(tmp_path / "chaos.json")],
        cwd=ROOT, capture_output=True, text=True, timeout=600,
    )
    # Exit 1 means some case failed (expected until every fix is in); anything else is the harness breaking.
    assert out.returncode in (0, 1), out.stdout[-3000:] + out.stderr[-3000:]
    result = json.loads((tmp_path / "chaos.json").read_text())
    cases = {c["name"]: c for c in result["cases"]}
    assert list(cases) == ["small_items", "frozen_recs_db"]
    for case in cases.values():
        assert case["error"] is None, case["error"]
        assert case["checks"] and case["passed"] == all(c["ok"] for c in case["checks"])
    assert len(cases["small_items"]["checks"]) == 9

    frozen = cases["frozen_recs_db"]
    during = frozen["raw"]["during"]
    assert {"hit", "miss", "health", "livez", "readyz"} <= set(during)
    assert all(s["requests"] > 0 for s in during.values())
    assert frozen["raw"]["bound_ms"] == 2500
    # The verdict on the deadline is the one the recorded timings give.
    slowest = next(c for c in frozen["checks"] if c["figure"] == "slowest request while frozen")
    assert slowest["ok"] == all(s["max_ms"] <= 2500 for s in during.values())

    report = (tmp_path / "RELIABILITY.md").read_text()
    for case in cases.values():
        assert f"## {case['title']}: {'PASS' if case['passed'] else 'FAIL'}" in report
