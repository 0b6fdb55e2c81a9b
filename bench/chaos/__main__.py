"""`make chaos`: the fault campaign of issue 10, run for real; writes RELIABILITY.md and bench/results/chaos.json.

    python -m bench.chaos [--preset default] [--soak 600] [--cases frozen_redis,soak] [--quick]

--quick shrinks every case to seconds (the test suite runs it so the harness does not
rot); its figures prove nothing about the service. Exit code 0 only when every case
passed.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from dataclasses import replace
from datetime import datetime, timezone
from pathlib import Path

from bench.chaos import edges, faults, jobs, serving
from bench.chaos.context import FULL, QUICK, Ctx
from bench.chaos.record import Record
from bench.chaos.report import markdown
from bench.chaos.stack import Stack
from bench.run import pick_users, request_mixes
from deploy.stack import ROOT
from shared.settings import load_settings

ORDER = ("small_items", "idle_slow", "many_connections", "frozen_recs_db", "frozen_redis", "hung_main_db",
         "redis_cap", "kill_refresh", "soak", "schemathesis")


def run_case(name: str, ctx: Ctx, limits: dict) -> Record:
    fn = {
        "small_items": edges.small_items, "idle_slow": serving.idle_and_slow,
        "many_connections": lambda c: serving.many_connections(c, limits),
        "frozen_recs_db": faults.frozen_recs_db, "frozen_redis": faults.frozen_redis,
        "hung_main_db": faults.hung_main_db, "redis_cap": jobs.redis_cap, "kill_refresh": jobs.kill_refresh,
        "soak": serving.soak, "schemathesis": edges.schemathesis,
    }[name]
    started = time.monotonic()
    try:
        rec = fn(ctx)
    except Exception as exc:  # the harness failed: report it as this case's failure, with where
        rec = Record(name, name.replace("_", " "), "(the case did not finish)", "(see the error)")
        rec.error = f"{type(exc).__name__}: {exc}"[:500]
        rec.note(traceback.format_exc(limit=4).replace("\n", " "))
    finally:
        ctx.stack.reset()  # whatever a case left frozen or running must not leak into the next
    rec.seconds = round(time.monotonic() - started, 1)
    return rec


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "default", "large"], default="tiny")
    parser.add_argument("--cases", default=",".join(ORDER), help=f"comma-separated, from {', '.join(ORDER)}")
    parser.add_argument("--soak", type=int, help=f"soak seconds (default {FULL.soak_s}; the issue's figure is 600)")
    parser.add_argument("--quick", action="store_true", help="seconds per case: tests the harness, not the service")
    parser.add_argument("--db-timeout-ms", type=int, default=2000)
    parser.add_argument("--main-url", help="main DB to seed and read (default: recs_chaos_<preset>_main)")
    parser.add_argument("--recs-url", help="recommendations DB (default: a fresh recs_chaos_<random>_recs, dropped)")
    parser.add_argument("--markdown", type=Path, default=ROOT / "RELIABILITY.md")
    parser.add_argument("--json", type=Path, default=ROOT / "bench" / "results" / "chaos.json")
    args = parser.parse_args(argv)
    cases = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = set(cases) - set(ORDER)
    if unknown:
        parser.error(f"unknown cases {sorted(unknown)}; choose from {', '.join(ORDER)}")
    plan = QUICK if args.quick else FULL
    if args.soak:
        plan = replace(plan, soak_s=args.soak)
    if not shutil.which("wrk"):
        print("chaos: wrk is required: sudo apt-get install -y wrk (or bash deploy/ensure-tools.sh wrk)",
              file=sys.stderr)
        return 2
    limits = serving.raise_file_limit()
    started = time.monotonic()
    workdir = Path(tempfile.mkdtemp(prefix="recs-chaos-"))
    server = args.main_url or load_settings().main_database_url  # the PostgreSQL server its databases live on
    stack = Stack(server, args.preset, workdir, plan.redis_maxmemory, args.db_timeout_ms,
                  plan.job_lease_s, args.main_url, args.recs_url)

    def log(text: str) -> None:
        print(text, flush=True)

    records = []
    try:
        stack.start(log)
        ctx = Ctx(stack, plan, workdir, request_mixes(pick_users(stack.recs_url)), log)
        for name in cases:
            log(f"chaos: {name} ...")
            rec = run_case(name, ctx, limits)
            records.append(rec.as_dict())
            log(f"chaos: {name} {'PASS' if rec.passed else 'FAIL'} in {rec.seconds} s" +
                "".join(f"\n   {'ok ' if c['ok'] else 'NO '} {c['figure']}: {c['observed']}" for c in rec.checks) +
                (f"\n   error: {rec.error}" if rec.error else ""))
    finally:
        stack.stop()
        if os.environ.get("CHAOS_KEEP"):  # the servers' logs, for a case that failed
            print(f"chaos: kept {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
    meta = {
        "preset": args.preset, "maxmemory": plan.redis_maxmemory, "soak_default": FULL.soak_s,
        "json_path": "bench/results/chaos.json" if args.json == ROOT / "bench/results/chaos.json" else args.json.name,
        "when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "cpus": os.cpu_count(),
        "machine": f"{platform.processor() or platform.machine()}, {platform.platform()}",
        "seconds": time.monotonic() - started, "db_timeout": args.db_timeout_ms, "bound": args.db_timeout_ms + 500,
        "nofile": limits["soft"], "nofile_hard": limits["hard"], "nofile_before": limits["before"],
        "refresh_s": stack.refresh.get("seconds"), "quick": args.quick, "plan": plan.__dict__,
    }
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({"meta": meta, "cases": records}, indent=2, default=str))
    args.markdown.write_text(markdown(meta, records))
    passed = sum(r["passed"] for r in records)
    log(f"chaos: {passed} of {len(records)} cases passed; wrote {args.markdown} and {args.json}")
    return 0 if records and passed == len(records) else 1


if __name__ == "__main__":
    sys.exit(main())
