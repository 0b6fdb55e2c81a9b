"""The small items of the issue, one check each, and schemathesis against /openapi.json."""
from __future__ import annotations

import base64
import http.client
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

from bench.chaos.context import Ctx
from bench.chaos.load import Req, send
from bench.chaos.record import Record

ROOT = Path(__file__).resolve().parents[2]

USER, PASSWORD = "chaos", "chaos-" + uuid.uuid4().hex[:8]


def _chunked(port: int, size: int) -> dict:
    """POST /popular with a chunked body of `size` bytes (valid JSON), no Content-Length."""
    pad = b'{"pad": "' + b"x" * (size - 11) + b'"}'
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/popular", body=(pad[i:i + 8192] for i in range(0, len(pad), 8192)),
                     headers={"Content-Type": "application/json", "Transfer-Encoding": "chunked"}, encode_chunked=True)
        resp = conn.getresponse()
        return {"status": resp.status, "body": resp.read()}
    except (OSError, http.client.HTTPException) as exc:
        return {"status": None, "body": str(exc).encode()}
    finally:
        conn.close()


def small_items(ctx: Ctx) -> Record:
    stack = ctx.stack
    rec = Record("small_items", "The small items",
                 "one request each: duplicate admin POSTs while the job is queued, a chunked body over 64 KiB, a "
                 "wrong method, lowercase basic auth, %0A in the path, an unknown task id, non-ASCII digits and a "
                 "huge number as user_id, /stats with a password in a URL's query",
                 "409 with the existing task id; 413; 405 with Allow; 200; one log line; 404; 400 naming user_id "
                 "without Python internals; no password in /stats")
    for w in stack.workers:
        w.stop()  # the first admin task stays queued: the job is busy
    api = stack.api()
    first = send(api.port, Req("a", "/admin/cleanup-cache"), 30)
    second = send(api.port, Req("a", "/admin/cleanup-cache"), 30)
    task_id = json.loads(first["body"]).get("task_id") if first["status"] == 202 else None
    rec.check("duplicate POST /admin/cleanup-cache while the first is queued", "202, then 409 with the first task id",
              f"{first['status']}, then {second['status']} {second['body'][:160].decode(errors='replace')}",
              first["status"] == 202 and second["status"] == 409 and bool(task_id)
              and task_id.encode() in second["body"])
    big = _chunked(api.port, 70 * 1024)
    rec.check("chunked body of 70 KiB", "413 JSON", f"{big['status']} {big['body'][:120].decode(errors='replace')}",
              big["status"] == 413 and big["body"].startswith(b"{"))
    wrong = send(api.port, Req("m", "/popular", method="GET"), 10)
    allow = {k.lower(): v for k, v in wrong["headers"].items()}.get("allow")
    rec.check("GET /popular", "405 with Allow: POST", f"{wrong['status']}, Allow: {allow}",
              wrong["status"] == 405 and allow is not None and "POST" in allow)
    marker = uuid.uuid4().hex[:8]
    offset = api.log_offset()
    forged = send(api.port, Req("log", f"/chaos-{marker}%0Amethod=GET%20path=/forged-{marker}%20status=200",
                                method="GET"), 10)
    time.sleep(0.5)
    lines = [line for line in api.log_since(offset).splitlines() if marker in line]
    forged_lines = [line for line in lines if f"chaos-{marker}" not in line]
    rec.check("%0A in the path", "no forged access-log line",
              f"answer {forged['status']}; {len(lines)} log lines carry the marker, {len(forged_lines)} without the "
              f"real request's path", bool(lines) and not forged_lines)
    unknown = send(api.port, Req("t", f"/admin/tasks/{uuid.uuid4()}", method="GET"), 10)
    rec.check("GET /admin/tasks/<unknown id>", "404", f"{unknown['status']} {unknown['body'][:100].decode()}",
              unknown["status"] == 404)
    for label, raw in (("Arabic-Indic digits", '"\u0661\u0662\u0663"'), ("a 5,000-digit string", "\"" + "9" * 5000 + "\"")):
        r = send(api.port, Req("u", "/personalized", f'{{"user_id": {raw}, "geo_id": 213}}'.encode()), 10)
        text = r["body"].decode(errors="replace")
        rec.check(f"user_id as {label}", "400 naming user_id, no Python internals",
                  f"{r['status']} {text[:140]}",
                  r["status"] == 400 and "user_id" in text and "sys." not in text and "int_max" not in text)
    api.stop()
    secret = "Sekret" + uuid.uuid4().hex[:8]
    env = stack.env()
    authed = stack.api(name="api-auth", BASIC_AUTH_USERNAME=USER, BASIC_AUTH_PASSWORD=PASSWORD,
                       RECOMMENDATIONS_DATABASE_URL=env["RECOMMENDATIONS_DATABASE_URL"] + f"?password={secret}",
                       MAIN_DATABASE_URL=env["MAIN_DATABASE_URL"] + f"?password={secret}")
    token = base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()
    lower = send(authed.port, Req("auth", "/popular", b"{}", headers={"Authorization": f"basic {token}"}), 10)
    wrong_pw = send(authed.port, Req("auth", "/popular", b"{}", headers={
        "Authorization": "Basic " + base64.b64encode(f"{USER}:nope".encode()).decode()}), 10)
    rec.check("Authorization: basic <credentials> (lowercase scheme)", "200 (and 401 for a wrong password)",
              f"{lower['status']} (wrong password: {wrong_pw['status']})",
              lower["status"] == 200 and wrong_pw["status"] == 401)
    stats = send(authed.port, Req("stats", "/stats", method="GET", headers={"Authorization": f"Basic {token}"}), 10)
    rec.check("/stats with ?password=... in both database URLs", "200, password not shown",
              f"{stats['status']}, password {'SHOWN' if secret.encode() in stats['body'] else 'not shown'}",
              stats["status"] == 200 and secret.encode() not in stats["body"])
    authed.stop()
    return rec


def schemathesis(ctx: Ctx) -> Record:
    p = ctx.plan
    rec = Record("schemathesis", "schemathesis against /openapi.json",
                 f"schemathesis run --checks all, up to {p.schemathesis_examples} examples per operation within "
                 f"{p.schemathesis_s} s (every operation, positive and negative "
                 "data, admin included; the worker is stopped so queued jobs only wait)",
                 "0 server errors, 0 schemathesis errors; failures of the other checks are listed")
    for w in ctx.stack.workers:
        w.stop()
    api = ctx.stack.api()
    report = ctx.workdir / "schemathesis.json"
    out = subprocess.run(
        # The test suite's settings and hooks (a 413 is a rejection; the two cross-field rules).
        [str(Path(sys.executable).parent / "schemathesis"), "--config-file", str(ROOT / "tests" / "schemathesis.toml"),
         "run", f"{api.url}/openapi.json", "--url", api.url,
         "--checks", "all", "--max-examples", str(p.schemathesis_examples), "--max-time", str(p.schemathesis_s),
         "--workers", "2", "--request-timeout", "10",
         "--report", "json", "--report-json-path", str(report), "--no-color", "--seed", "1",
         "--generation-database", "none"],
        cwd=ctx.workdir, capture_output=True, text=True, timeout=p.schemathesis_s + 600,
        env={**os.environ, "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks",
             "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))})
    rec.raw["exit_code"] = out.returncode
    rec.raw["tail"] = out.stdout[-3000:]
    if not report.exists():
        rec.error = f"schemathesis wrote no report (exit {out.returncode}): {out.stdout[-300:]} {out.stderr[-300:]}"
        api.stop()
        return rec
    data = json.loads(report.read_text())
    rec.raw["report"] = {k: data.get(k) for k in ("operations", "test_cases", "failures", "errors", "stop_reason")}
    server = sum(f.get("count", 1) for f in data["failures"] if is_server_error(f))
    cases, ops = data["test_cases"], data["operations"]
    rec.check("server errors (not_a_server_error)", "0",
              f"{server} in {cases['generated']} generated test cases "
              f"({ops['tested']} of {ops['selected']} operations tested)", server == 0 and cases["generated"] > 0)
    rec.check("operations tested", f"all {ops['selected']}",
              f"{ops['tested']} (skipped {ops['skipped']}: {ops.get('skip_reasons')})",
              ops["tested"] + ops["errored"] == ops["selected"] and ops["selected"] > 0)
    rec.check("schemathesis errors (network, timeouts)", "0", str(len(data["errors"])), not data["errors"])
    others = [f"{f.get('code')} {f.get('title')}: {f.get('count')} ({', '.join(f.get('operations', [])[:4])})"
              for f in data["failures"] if not is_server_error(f)]
    rec.note("other checks that failed: " + ("; ".join(others) if others else "none"))
    api.stop()
    return rec


def is_server_error(failure: dict) -> bool:
    """ST101 (not_a_server_error) and its subclasses, e.g. a 5xx whose body is not what it claims."""
    return failure.get("code") == "ST101" or str(failure.get("type", "")).endswith("ServerError")
