"""Frozen dependencies: the recommendations DB and the main DB behind a frozen proxy, Redis under SIGSTOP.

A frozen dependency accepts connections and never answers, like a server stopped
with SIGSTOP: no reset, no refusal, so only the service's own deadlines can end a
request. Each case times every request before, during and after the freeze from
separate groups of clients, and lasts longer than gunicorn's worker timeout, so a
worker stuck on the dependency would be seen killed.
"""
from __future__ import annotations

import json
import time

from bench.chaos.context import Ctx, worker_checks
from bench.chaos.load import Req, by_label, hammer, send, summarize
from bench.chaos.record import Record, ms
from bench.chaos.stack import Api

LIVEZ, READYZ = [Req("livez", "/livez", method="GET")], [Req("readyz", "/readyz", method="GET")]
HEALTH = [Req("health", "/health", method="GET")]
GRACE_S = 2.0


def _is_json(body: bytes) -> bool:
    try:
        json.loads(body)
        return True
    except ValueError:
        return False


def _run(ctx: Ctx, rec: Record, api: Api, groups: list, freeze, thaw) -> tuple[list, list, list]:
    timeout = ctx.bound_ms / 1000 + 5
    calm = min(3.0, ctx.fault_s)
    before = hammer(api.port, groups, calm, timeout)
    pids, offset = api.worker_pids(), api.log_offset()
    freeze()
    try:
        during = hammer(api.port, groups, ctx.fault_s, timeout)
    finally:
        thaw()
    thawed = time.perf_counter()
    after = hammer(api.port, groups, GRACE_S + calm, timeout)
    rec.raw.update(before=by_label(before), during=by_label(during), after=by_label(after), bound_ms=ctx.bound_ms,
                   fault_s=ctx.fault_s, client_timeout_s=timeout)
    rec.note(f"frozen for {ctx.fault_s:.0f} s; requests during the freeze by kind: " + "; ".join(
        f"{label} {s['requests']} ({s['statuses']}, p50 {ms(s['p50_ms'])}, max {ms(s['max_ms'])})"
        for label, s in by_label(during).items()))
    common_checks(ctx, rec, during, after, thawed)
    worker_checks(rec, api, pids, offset)
    return before, during, after


def common_checks(ctx: Ctx, rec: Record, during: list, after: list, thawed: float) -> None:
    d = summarize(during)
    unanswered = sum(1 for r in during if r["status"] is None)
    slow = sum(1 for r in during if r["status"] is None or r["ms"] > ctx.bound_ms)
    rec.check("slowest request while frozen", f"<= DB_TIMEOUT_MS + 500 = {ctx.bound_ms:.0f} ms",
              f"{ms(d['max_ms'])}; {slow} of {d['requests']} over the bound, {unanswered} unanswered within "
              f"{ctx.bound_ms / 1000 + 5:.1f} s", slow == 0 and d["requests"] > 0)
    fives = sum(1 for r in during if r["status"] == 500)
    not_json = sum(1 for r in during if r["status"] and r["status"] >= 400 and not _is_json(r["body"]))
    rec.check("500s, and error answers that are not JSON", "0",
              f"{fives} x 500, {not_json} non-JSON error bodies", fives == 0 and not_json == 0)
    probes = [r for r in during if r["label"] in ("livez", "readyz")]
    bad = [f"{r['label']}={r['status']}" for r in probes if r["status"] != 200]
    rec.check("liveness and readiness probes while frozen", "200",
              f"{len(probes) - len(bad)} of {len(probes)} 200" + (f"; others {sorted(set(bad))}" if bad else ""),
              bool(probes) and not bad)
    # The API may keep a failed dependency at arm's length for a moment (a reconnect back-off), so the
    # first GRACE_S after the thaw are reported, not judged.
    serving = [r for r in after if r["label"] in ("hit", "miss", "hit->db")]
    early = [r for r in serving if r["started"] < thawed + GRACE_S]
    late = [r for r in serving if r["started"] >= thawed + GRACE_S]
    ok = sum(1 for r in late if r["status"] == 200)
    early_bad = summarize([r for r in early if r["status"] != 200])
    rec.check(f"serving from {GRACE_S:.0f} s after the thaw on", "all 200",
              f"{ok} of {len(late)}; in the first {GRACE_S:.0f} s {len(early) - early_bad['requests']} of {len(early)}"
              + (f" ({early_bad['statuses']})" if early_bad["requests"] else ""), bool(late) and ok == len(late))


def _hits_unaffected(rec: Record, before: list, during: list, db_label: str = "hit") -> None:
    b = summarize([r for r in before if r["label"] == db_label])
    d = [r for r in during if r["label"] == db_label]
    s = summarize(d)
    hits = sum(1 for r in d if r["status"] == 200 and b'"cache_hit":true' in r["body"])
    limit = max(50.0, 2 * (b["p99_ms"] or 0))
    rec.check("cache hits while frozen: 200 from the cache, p99 unaffected",
              f"all 200 cache_hit=true, p99 <= max(50 ms, 2x before) = {limit:.0f} ms",
              f"{hits} of {len(d)} hits; p99 {ms(s['p99_ms'])} (before {ms(b['p99_ms'])}), max {ms(s['max_ms'])}",
              bool(d) and hits == len(d) and s["p99_ms"] <= limit)


def frozen_recs_db(ctx: Ctx) -> Record:
    rec = Record("frozen_recs_db", "Frozen recommendations DB",
                 "the proxy between the API and the recommendations DB holds every connection, open or new, and "
                 "forwards nothing (PostgreSQL as if SIGSTOPped)",
                 f"every request answers within {ctx.bound_ms:.0f} ms (misses: 503 JSON); cache hits unaffected; "
                 "no web worker killed; probes 200")
    api, during = _frozen_proxy(ctx, rec, "recs", misses=2, extra=[(HEALTH, 1)])
    m = [r for r in during if r["label"] == "miss"]
    ok = sum(1 for r in m if r["status"] in (200, 503))
    rec.check("cache misses while frozen", "503 JSON (or 200)", f"{ok} of {len(m)}: {summarize(m)['statuses']}",
              bool(m) and ok == len(m))
    api.stop()
    return rec


def _frozen_proxy(ctx: Ctx, rec: Record, name: str, misses: int, extra: list) -> tuple:
    """Cache hits, misses, probes (and `extra` load) through the API while the `name` DB's proxy
    is frozen; checks that hits were unaffected. Returns (api, what was answered while frozen)."""
    api = ctx.stack.api(proxied=True)
    hits = ctx.hits()
    ctx.warm(api, hits)
    proxy = ctx.stack.proxies[name]
    load = [(hits, 2), (ctx.misses(), misses), *extra, (LIVEZ, 1), (READYZ, 1)]
    before, during, _ = _run(ctx, rec, api, load, proxy.freeze, proxy.thaw)
    _hits_unaffected(rec, before, during)
    return api, during


def frozen_redis(ctx: Ctx) -> Record:
    rec = Record("frozen_redis", "Frozen Redis",
                 "SIGSTOP of the private redis-server (cache, broker and result backend): connections are accepted "
                 "by the kernel and never answered",
                 f"every request answers within {ctx.bound_ms:.0f} ms; /popular and /personalized 200 from the "
                 "recommendations DB; GET /admin/tasks/<id> and POST /admin/* answer (503 JSON) in bound; "
                 "no web worker killed; probes 200")
    api = ctx.stack.api()
    hits = [Req("hit->db", r.path, r.body) for r in ctx.hits()]
    ctx.warm(api, hits)
    queued = send(api.port, Req("admin", "/admin/cleanup-cache"), 30)
    # 202 with a new task id, or 409 naming the one already queued (an earlier case's).
    task_id = (json.loads(queued["body"]) if queued["status"] in (202, 409) else {}).get("task_id", "0" * 32)
    admin = [Req("task_state", f"/admin/tasks/{task_id}", method="GET"), Req("admin_post", "/admin/cleanup-cache")]
    _, during, _ = _run(ctx, rec, api, [(hits, 2), (ctx.misses(), 1), (HEALTH, 1), (admin, 1), (LIVEZ, 1), (READYZ, 1)],
                        ctx.stack.freeze_redis, ctx.stack.thaw_redis)
    serving = [r for r in during if r["label"] in ("hit->db", "miss")]
    ok = sum(1 for r in serving if r["status"] == 200)
    rec.check("/popular and /personalized while Redis is frozen", "all 200 (from the recommendations DB)",
              f"{ok} of {len(serving)}: {summarize(serving)['statuses']}", bool(serving) and ok == len(serving))
    t = summarize([r for r in during if r["label"] == "task_state"])
    rec.check("GET /admin/tasks/<id> while Redis is frozen", f"answers in <= {ctx.bound_ms:.0f} ms, not 500",
              f"{t['requests']} requests, {t['statuses']}, max {ms(t['max_ms'])}",
              t["requests"] > 0 and (t["max_ms"] or 0) <= ctx.bound_ms and "500" not in t["statuses"]
              and all(k.isdigit() for k in t["statuses"]))
    rec.note(f"task id probed: {task_id} (queued with POST /admin/cleanup-cache before the freeze: {queued['status']})")
    api.stop()
    return rec


def hung_main_db(ctx: Ctx) -> Record:
    rec = Record("hung_main_db", "Hung main DB",
                 "the proxy in front of the main DB accepts connections and never answers; four /health callers "
                 "and /stats poll it meanwhile",
                 f"every request answers within {ctx.bound_ms:.0f} ms; serving unaffected (hits 200 from the cache, "
                 "p99 unaffected; misses 200); no web worker killed; probes 200")
    stats = [Req("stats", "/stats", method="GET")]
    api, during = _frozen_proxy(ctx, rec, "main", misses=1, extra=[(HEALTH, 4), (stats, 1)])
    m = [r for r in during if r["label"] == "miss"]
    ok = sum(1 for r in m if r["status"] == 200)
    rec.check("cache misses while the main DB hangs", "all 200", f"{ok} of {len(m)}", bool(m) and ok == len(m))
    h = summarize([r for r in during if r["label"] == "health"])
    rec.note(f"/health while the main DB hangs: {h['requests']} answers {h['statuses']}, p50 {ms(h['p50_ms'])}, "
             f"max {ms(h['max_ms'])}")
    api.stop()
    return rec
