"""/openapi.json is valid OpenAPI 3.1 and true to the server; /docs serves Swagger UI from this host."""
import base64
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from openapi_spec_validator import validate

from api import create_app
from tests.live import start_api

ROOT = Path(__file__).resolve().parent.parent
AUTH = {"BASIC_AUTH_USERNAME": "ops", "BASIC_AUTH_PASSWORD": "pw"}
AUTH_HEADER = {"Authorization": "Basic " + base64.b64encode(b"ops:pw").decode()}


@pytest.mark.parametrize("auth", [False, True])
def test_document_is_valid_openapi_3_1(tiny_env, auth):
    env = dict(tiny_env, **AUTH) if auth else tiny_env
    client = create_app(env).test_client()
    doc = client.get("/openapi.json", headers=AUTH_HEADER if auth else {}).get_json()
    assert doc["openapi"] == "3.1.0"
    validate(doc)  # raises on any violation of the 3.1 schema
    # Credentials and 401s are documented exactly when the server asks for them.
    assert ("security" in doc) is auth
    assert ("401" in doc["paths"]["/popular"]["post"]["responses"]) is auth


def test_document_says_what_the_server_accepts(tiny_env):
    doc = create_app(dict(tiny_env, MAX_PAGE_SIZE="50")).test_client().get("/openapi.json").get_json()
    schemas = doc["components"]["schemas"]
    gender = schemas["UserParams"]["properties"]["gender"]["anyOf"][0]
    assert gender["enum"] == ["m", "f", "male", "female"]
    limit = schemas["PaginationIn"]["properties"]["limit"]["anyOf"][0]
    assert limit["maximum"] == 50  # MAX_PAGE_SIZE of this server
    user_id = schemas["PersonalizedRequest"]["properties"]["user_id"]["anyOf"]
    assert {"type": "integer", "minimum": 1, "maximum": 2**63 - 1} in user_id
    assert doc["paths"]["/popular"]["post"]["requestBody"]["required"] is False  # an empty body is the global list
    assert doc["paths"]["/personalized"]["post"]["requestBody"]["required"] is True
    text = str(doc)
    assert "'ge'" not in text and "'le'" not in text  # pydantic's names leaking instead of minimum/maximum


def test_docs_page_uses_only_local_assets(tiny_env):
    client = create_app(tiny_env).test_client()
    page = client.get("/docs")
    assert page.status_code == 200 and page.mimetype == "text/html"
    html = page.get_data(as_text=True)
    assert "//" not in re.sub(r"<!DOCTYPE[^>]*>", "", html)  # no absolute URL: nothing from a CDN
    assets = re.findall(r'(?:src|href)="([^"]+)"', html)
    assert any(a.endswith("swagger-ui-bundle.js") for a in assets)
    for asset in assets:
        r = client.get(asset)
        assert r.status_code == 200 and len(r.data) > 100, asset
    assert "openapi.json" in html


def _schemathesis(url: str, workdir: Path, *extra) -> subprocess.CompletedProcess:
    # All checks, a fixed seed, few examples per operation: a bounded, repeatable run.
    # The hooks keep generated bodies within the two cross-field rules the document states in words.
    args = [str(Path(sys.executable).parent / "st"), "run", f"{url}/openapi.json", "--checks", "all",
            "--seed", "42", "--max-examples", "25", "--workers", "1", "--generation-database", "none",
            "--request-timeout", "10", "--no-color", *extra]
    env = {"PATH": "/usr/bin:/bin", "SCHEMATHESIS_HOOKS": "tests.schemathesis_hooks", "PYTHONPATH": str(ROOT)}
    # Run in a scratch directory: schemathesis keeps a cache folder in its working directory.
    return subprocess.run(args, cwd=workdir, env=env, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize("auth", [False, True], ids=["open", "basic-auth"])
def test_schemathesis_finds_no_failures(tiny_env, auth, tmp_path):
    # Admin calls enqueue real tasks: send them to a broker DB no test worker consumes.
    redis_base = tiny_env["RECOMMENDATIONS_REDIS_URL"].rsplit("/", 1)[0]
    env = dict(tiny_env, CELERY_BROKER_URL=f"{redis_base}/14", CELERY_RESULT_BACKEND=f"{redis_base}/15",
               **(AUTH if auth else {}))
    proc, url = start_api(env)
    try:
        operations = sum(len(methods) for methods in create_app(env).test_client()
                         .get("/openapi.json", headers=AUTH_HEADER).get_json()["paths"].values())
        out = _schemathesis(url, tmp_path, *(["--auth", "ops:pw"] if auth else []))
    finally:
        proc.stop()
    report = out.stdout + out.stderr
    assert out.returncode == 0, report[-6000:]
    # Every documented operation was exercised (schemathesis leaves out the document's own URL).
    assert f"Tested: {operations - 1}" in report, report[-3000:]
    assert re.search(r"Test cases:\s+(\d+) generated, \1 passed", report), report[-3000:]


@pytest.mark.parametrize("path,body,status", [
    ("/popular", None, 200),  # requestBody.required: false
    ("/personalized", None, 400),  # required: true (user_id)
    ("/personalized", {"user_id": 0}, 400),
    ("/personalized", {"user_id": "007"}, 400),  # string ids: digits, no leading zero
    ("/personalized", {"user_id": "7"}, 200),
    ("/personalized", {"user_id": 7.0, "pagination": {"page": 2.0, "limit": 5.0}}, 200),  # JSON integers
    ("/popular", {"user_params": {"gender": ""}}, 400),
    ("/popular", {"user_params": {"gender": "F"}}, 400),  # the enum, exactly
    ("/popular", {"user_params": {"gender": "female", "age": 29.0}}, 200),
    ("/popular", {"user_params": {"age": ""}}, 400),
    ("/popular", {"filters": {"geo_id": 0}}, 400),
    ("/popular", {"filters": {"price_to": 10**13}}, 400),  # above the documented maximum
    ("/popular", {"user_params": {"category": "no-such-category"}}, 200),  # unknown category: empty list
])
def test_server_answers_as_documented(tiny_env, path, body, status):
    client = create_app(tiny_env).test_client()
    r = client.post(path, data=b"" if body is None else json.dumps(body),
                    content_type="application/json")
    assert r.status_code == status, r.get_data(as_text=True)
    if status == 400:
        assert r.get_json()["errors"][0]["field"]
    if body and body.get("user_params", {}).get("category") == "no-such-category":
        assert r.get_json()["items"] == []


def test_405_lists_the_allowed_methods(tiny_env):
    r = create_app(tiny_env).test_client().get("/popular")
    assert r.status_code == 405 and r.headers["Allow"] and "POST" in r.headers["Allow"] and r.is_json
