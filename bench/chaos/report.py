"""RELIABILITY.md from the campaign's records: a summary table, then fault, expected and observed per case."""
from __future__ import annotations

HEADER = """# Reliability

Produced by `make chaos` (`python -m bench.chaos`): the fault campaign of issue 10, run
for real against a private stack it sets up itself: its own databases (the main DB
seeded with the `{preset}` preset, a fresh recommendations DB), a private
`redis-server` capped at `{maxmemory}` with `volatile-lru`, a pausable TCP proxy
(`deploy/faultproxy.py`) in front of each PostgreSQL database, the API under the
production gunicorn config (`deploy/gunicorn.conf.py`, a fresh server per case) and a
Celery worker. Load comes from wrk (throughput) and small Python clients (timed
requests, held sockets). Every case reports PASS only when every one of its checks
held; a failure is never hidden. Raw results: `{json_path}`.

Options: `make chaos [PRESET=default] [SOAK=600] [CASES=a,b]`. The default soak is
{soak_default} s and the default preset `tiny`, so the campaign fits in 10 minutes;
`SOAK=600` is the issue's 10-minute soak (the campaign then takes about 19 minutes).
A job that does not heal makes the kill case wait its full 5 minutes, and a campaign
that fails there takes that much longer.

**Run:** {when}, {cpus} cores ({machine}), {seconds:.0f} s in all. DB_TIMEOUT_MS={db_timeout},
so the deadline while a dependency is frozen is {bound:.0f} ms; RLIMIT_NOFILE soft limit
set to {nofile} (hard {nofile_hard}; it was {nofile_before}); full refresh of the
preset took {refresh_s} s in this run. Figures from a shared machine are pessimistic;
compare ratios from the same run.
"""


def _cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def markdown(meta: dict, records: list[dict]) -> str:
    out = [HEADER.format(**meta)]
    if meta.get("quick"):
        out.append("**Quick mode (`--quick`): every case shrunk to seconds to test the harness; these figures say "
                   "nothing about the service.**\n")
    out += ["## Summary", "", "| case | result | checks held |", "|---|---|---|"]
    for r in records:
        held = sum(c["ok"] for c in r["checks"])
        out.append(f"| [{_cell(r['title'])}](#{r['name'].replace('_', '-')}) | "
                   f"{'PASS' if r['passed'] else '**FAIL**'} | {held}/{len(r['checks'])} |")
    passed = sum(r["passed"] for r in records)
    out += ["", f"{passed} of {len(records)} cases passed.", ""]
    for r in records:
        out += [f"<a id=\"{r['name'].replace('_', '-')}\"></a>",
                f"## {r['title']}: {'PASS' if r['passed'] else 'FAIL'}", "",
                f"- **Fault:** {r['fault']}", f"- **Expected:** {r['expected']}",
                f"- **Took:** {r['seconds']:.1f} s", ""]
        if r["error"]:
            out += [f"**The case could not finish:** `{_cell(r['error'])}`", ""]
        if r["checks"]:
            out += ["| check | target | observed | held |", "|---|---|---|---|"]
            out += [f"| {_cell(c['figure'])} | {_cell(c['target'])} | {_cell(c['observed'])} | "
                    f"{'yes' if c['ok'] else '**no**'} |" for c in r["checks"]]
            out.append("")
        out += [f"- {_cell(n)}" for n in r["notes"]]
        out.append("")
    return "\n".join(out)
