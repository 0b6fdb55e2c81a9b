"""What every case gets: the stack, the scale of the run, the request mixes, and shared checks."""
from __future__ import annotations

import json
import runpy
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

from bench.chaos.load import Req, miss_body, send
from bench.chaos.record import Record
from bench.chaos.stack import Api, Stack
from deploy.stack import ROOT


@dataclass(frozen=True)
class Plan:
    """How big and long each case is. FULL is what `make chaos` runs; QUICK keeps the harness tested."""
    idle_conns: int = 1000
    slow_conns: int = 50
    probe_s: float = 10  # a normal client's measurement while the sockets are held
    c32_s: int = 10
    many_conns: int = 10000
    many_s: int = 60
    fault_s: float = 0  # 0: gunicorn's worker timeout + 3 s, so a stuck worker would be seen killed
    job_wait_s: float = 300
    job_lease_s: int = 10
    soak_s: int = 60
    soak_conns: int = 16
    soak_min_rps: float = 1000
    redis_maxmemory: str = "64mb"
    schemathesis_examples: int = 10
    schemathesis_s: int = 120  # a budget, not a target: operations it cannot reach in time are reported


FULL = Plan()
QUICK = replace(FULL, idle_conns=30, slow_conns=3, probe_s=2, c32_s=1, many_conns=200, many_s=2, fault_s=3,
                job_wait_s=90, soak_s=3, soak_conns=4, soak_min_rps=1, redis_maxmemory="16mb",
                schemathesis_examples=2, schemathesis_s=30)


def gunicorn_timeout_s() -> float:
    return float(runpy.run_path(str(ROOT / "deploy" / "gunicorn.conf.py")).get("timeout", 30))


@dataclass
class Ctx:
    stack: Stack
    plan: Plan
    workdir: Path
    mixes: dict  # bench.run.request_mixes over users of this stack's recommendations DB
    log: Callable[[str], None]

    @property
    def bound_ms(self) -> float:
        """The issue's deadline for any request while a dependency is frozen."""
        return self.stack.db_timeout_ms + 500

    @property
    def fault_s(self) -> float:
        return self.plan.fault_s or gunicorn_timeout_s() + 3

    def hits(self, n: int = 20) -> list[Req]:
        pop = [Req("hit", p, json.dumps(b).encode()) for p, b in self.mixes["hit_popular"][: n // 2]]
        pers = [Req("hit", p, json.dumps(b).encode()) for p, b in self.mixes["hit_personalized"][: n - n // 2]]
        return [r for pair in zip(pop, pers) for r in pair]

    def misses(self, n: int = 12) -> list[Req]:
        kinds = ("miss_popular", "miss_content_based", "miss_collaborative")
        out = []
        for i in range(n):
            path, body = self.mixes[kinds[i % 3]][i // 3]
            body = dict(body, filters={k: v for k, v in body["filters"].items() if k != "price_from"})
            out.append(Req("miss", path, miss_body(body)))
        return out

    def warm(self, api: Api, reqs: list[Req]) -> None:
        for req in reqs:
            send(api.port, req, 30)


def worker_checks(rec: Record, api: Api, pids_before: list[int], offset: int) -> None:
    """No web worker killed or replaced: gunicorn's log and the workers' pids agree."""
    events = api.worker_events(offset)
    pids_after = api.worker_pids()
    rec.raw["gunicorn_events"] = events
    rec.raw["worker_pids"] = {"before": pids_before, "after": pids_after}
    # A worker replaced after gunicorn's max_requests is routine, not a kill.
    replaced = len(set(pids_before) - set(pids_after))
    rec.check("web workers killed (WORKER TIMEOUT, SIGKILL, pid changes)", "0",
              f"{events['worker_timeouts']} WORKER TIMEOUT, {events['workers_killed']} killed, pids "
              f"{pids_before} -> {pids_after} ({events['recycled_by_max_requests']} recycled by max_requests)",
              events["worker_timeouts"] == 0 and events["workers_killed"] == 0
              and replaced <= events["recycled_by_max_requests"] and len(pids_after) == len(pids_before))
