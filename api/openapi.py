"""The OpenAPI 3.1 document, true to the server (a schemathesis run in the tests checks it).

Request schemas come from the pydantic models that validate requests. The parts that
depend on configuration (credentials, MAX_PAGE_SIZE) are filled in from the settings
the app runs with, so the document describes this server, not a default one.
"""
from __future__ import annotations

from functools import lru_cache

from api.http import MAX_BODY_BYTES
from api.validation import PersonalizedRequest, PopularRequest
from shared.jobs import JOBS

POPULAR_EXAMPLE = {"user_params": {"gender": "f", "age": "25-34", "category": "electronics", "geo_id": 213},
                   "filters": {"price_from": 500, "price_to": 20000}, "pagination": {"page": 1, "limit": 20}}
PERSONALIZED_EXAMPLE = {"user_id": 123, "geo_id": 213, "pagination": {"page": 1, "limit": 20}}

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string", "description": "machine-readable kind, e.g. invalid_request, unavailable"},
        "message": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "required": ["field", "rule"], "properties": {
            "field": {"type": "string", "description": "dotted path of the offending field"},
            "rule": {"type": "string", "description": "the rule it broke"}}}},
    },
}
RECOMMENDATIONS = {
    "type": "object",
    "required": ["items", "pagination", "computation_time_ms", "algorithm_used", "cache_hit"],
    "properties": {
        "items": {"type": "array", "items": {"type": "integer"}, "description": "present ids, best first"},
        "pagination": {"type": "object", "required": ["page", "limit", "total_pages", "has_next", "has_previous"],
                       "properties": {"page": {"type": "integer"}, "limit": {"type": "integer"},
                                      "total_pages": {"type": "integer"}, "has_next": {"type": "boolean"},
                                      "has_previous": {"type": "boolean"}}},
        "computation_time_ms": {"type": "number"},
        "algorithm_used": {"type": "string", "description": "the algorithm, and the ones that filled a short list",
                           "examples": ["popular", "content_based", "collaborative+popular"]},
        "cache_hit": {"type": "boolean"},
    },
}
CATEGORIES = {
    "type": "object",
    "required": ["categories"],
    "properties": {"categories": {"type": "array", "items": {
        "type": "object", "required": ["category", "items"],
        "properties": {"category": {"type": "string"},
                       "items": {"type": "integer", "description": "public in-stock presents in this category"}}}}},
}
HEALTH = {"type": "object", "required": ["status", "checks"], "properties": {
    "status": {"type": "string", "enum": ["ok", "degraded", "unavailable"]},
    "checks": {"type": "object"}, "freshness": {"type": "object"},
    "failing": {"type": "array", "items": {"type": "string"}},
    "late_jobs": {"type": "array", "items": {"type": "string"}},
    "stuck_jobs": {"type": "array", "items": {"type": "object"}},
    "serving": {"type": "object"}, "live_sync": {"type": "object"}, "age_s": {"type": "number"}}}
STATS = {"type": "object", "required": ["main_db", "recommendations_db", "cache", "config"],
         "properties": {name: {"type": "object"} for name in ("main_db", "recommendations_db", "cache", "config")}}
QUEUED = {"type": "object", "required": ["status", "task", "task_id"], "properties": {
    "status": {"const": "queued"}, "task": {"type": "string"}, "task_id": {"type": "string"}}}
RUNNING = {"type": "object", "required": ["status", "task"], "properties": {
    "status": {"enum": ["already_queued", "already_running"]}, "task": {"type": "string"},
    "task_id": {"type": "string", "description": "the task already queued or running"}}}
TASK = {"type": "object", "required": ["task_id", "state"], "properties": {
    "task_id": {"type": "string"}, "state": {"type": "string", "examples": ["PENDING", "STARTED", "SUCCESS"]},
    "result": {"description": "the task's result once it is ready, else null"}}}

# Rules the JSON Schema cannot say (they relate two fields, or depend on settings): stated in words.
DESCRIPTIONS = {
    ("UserParams", "gender"): "`male`/`female` are aliases of `m`/`f`",
    ("UserParams", "age"): "an age in years, or an age group; under 18 counts as any age",
    ("UserParams", "category"): "segment category; an unknown one gives an empty list (see GET /categories)",
    ("UserParams", "geo_id"): "segment region; also filters items to those sold there or everywhere",
    ("FiltersIn", "price_from"): "inclusive; must not be greater than price_to",
    ("FiltersIn", "price_to"): "inclusive",
    ("FiltersIn", "category"): "must equal user_params.category when both are set",
    ("PaginationIn", "page"): "pages past the end return an empty items list",
    ("PersonalizedRequest", "user_id"): "an unknown user gets popular items",
}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _request_schemas(max_page_size: int, default_page_size: int) -> dict:
    schemas = {}
    from api.events import EventBatch, EventIn  # imported here: api.events imports this package's siblings

    for model in (PopularRequest, PersonalizedRequest, EventIn, EventBatch):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    for (model, field), text in DESCRIPTIONS.items():
        schemas[model]["properties"][field]["description"] = text
    # MAX_PAGE_SIZE is a setting, checked in api.validation.parse rather than in the model.
    limit = schemas["PaginationIn"]["properties"]["limit"]
    next(s for s in limit["anyOf"] if s.get("type") == "integer")["maximum"] = max_page_size
    limit["description"] = f"items per page; default {default_page_size}, at most MAX_PAGE_SIZE ({max_page_size})"
    return schemas


def _post(summary, description, request_schema, example, required, errors):
    return {"post": {
        "summary": summary,
        "description": description,
        "requestBody": {"required": required, "content": {"application/json": {
            "schema": _ref(request_schema), "examples": {"example": {"value": example}}}}},
        "responses": {"200": _json(_ref("Recommendations"), "Ranked item ids"),
                      "400": errors["400"], "413": errors["413"], "503": errors["503"], **errors["auth"]},
    }}


def _get(summary, responses, **extra):
    return {"get": {"summary": summary, **extra, "responses": responses}}


@lru_cache(maxsize=8)
def document(auth_on: bool, max_page_size: int, default_page_size: int) -> dict:
    errors = {
        "400": _json(_ref("Error"), "Malformed request; `errors` names each field and the rule it broke"),
        "413": _json(_ref("Error"), f"Body larger than {MAX_BODY_BYTES} bytes"),
        "503": _json(_ref("Error"), "Recommendations DB unavailable and the answer is not cached"),
        "auth": {"401": _json(_ref("Error"), "Basic-auth credentials missing or wrong")} if auth_on else {},
    }
    auth = errors["auth"]
    paths = {
        "/popular": _post(
            "Popular gifts for a demographic segment",
            "Every field is optional; an empty body gives the global list. Segment: geo x gender x age group x "
            "category, falling back to broader segments when one is empty.",
            "PopularRequest", POPULAR_EXAMPLE, False, errors),
        "/personalized": _post(
            "Recommendations for one user, by their history",
            "0 interactions: popular for the user's demographics; 1-2: content-based; 3+: collaborative. "
            "`algorithm_used` names the algorithms that filled the list.",
            "PersonalizedRequest", PERSONALIZED_EXAMPLE, True, errors),
        "/categories": _get("Valid categories, with the number of public in-stock presents in each", {
            "200": _json(_ref("Categories"), "Categories, by name"), "503": errors["503"], **auth}),
        "/events": {"post": {
            "summary": "Live feedback (like, unlike, click): effective on the user's next request",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("EventIn"), _ref("EventBatch")]}}}},
            "responses": {
                "200": _json({"type": "object", "properties": {"accepted": {"type": "integer"}}}, "Applied"),
                "400": errors["400"], "413": errors["413"],
                **({} if auth_on else {"403": _json(_ref("Error"), "Loopback clients only when no credentials "
                                                                    "are configured")}),
                "503": _json(_ref("Error"), "Redis unavailable: nothing applied, retry"), **auth}}},
        "/health": _get("Dependencies, data freshness and the live sync's lag (checks bounded, cached ~1.5 s "
                        "per process)", {
            "200": _json(_ref("Health"), "status ok, or degraded: serving, but a dependency is down (`failing` "
                                         "names it), a job is late or stuck, or the live sync is behind"),
            "503": _json(_ref("Health"), "status unavailable: neither Redis nor the recommendations DB answers, "
                                         "so nothing can be served")},
            **({"security": []} if auth_on else {})),
        "/livez": _get("Liveness: the process answers; no dependency is called", {
            "200": _json({"type": "object", "required": ["status"],
                          "properties": {"status": {"const": "ok"}}}, "alive")},
            **({"security": []} if auth_on else {})),
        "/readyz": _get("Readiness: Redis or the recommendations DB answers (the cached /health checks)", {
            "200": _json({"type": "object"}, "status ready; `failing` lists dependencies that are down"),
            "503": _json({"type": "object"}, "status unavailable: take this instance out of rotation")},
            **({"security": []} if auth_on else {})),
        "/stats": _get("Data, cache and configuration figures (no secrets)", {
            "200": _json(_ref("Stats"), "main_db, recommendations_db, cache, config"), **auth}),
        "/openapi.json": _get("This document", {
            "200": _json({"type": "object"}, "OpenAPI 3.1"), **auth}),
        "/docs": _get("Interactive API documentation (Swagger UI, served locally)", {
            "200": {"description": "HTML page", "content": {"text/html": {"schema": {"type": "string"}}}}, **auth}),
        "/admin/tasks/{task_id}": _get("State of an enqueued task", {
            "200": _json(_ref("Task"), "task_id, state, result"),
            "404": _json(_ref("Error"), "No task with that id was queued through /admin (or its record expired)"),
            **({} if auth_on else {"403": _json(_ref("Error"), "Admin answers loopback clients only "
                                                                "when no credentials are configured")}),
            "503": _json(_ref("Error"), "Result backend unavailable"), **auth},
            parameters=[{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}]),
        "/metrics": _get("Prometheus metrics (requests, latency, dependency errors, jobs)", {
            "200": {"description": "Prometheus text format", "content": {"text/plain": {"schema": {"type": "string"}}}},
            "404": {"description": "METRICS_ENABLED=0", "content": {"text/plain": {"schema": {"type": "string"}}}},
            **auth}),
        "/dashboard": _get("Ops dashboard (HTML)", {
            "200": {"description": "The page", "content": {"text/html": {"schema": {"type": "string"}}}},
            **({} if auth_on else {"403": _json(_ref("Error"), "Loopback clients only when no credentials "
                                                                "are configured")}), **auth}),
        "/dashboard/api/overview": _get("The dashboard's jobs, minute series, volumes and cache figures", {
            "200": _json({"type": "object"}, "jobs, series, cache, volumes"),
            **({} if auth_on else {"403": _json(_ref("Error"), "Loopback clients only when no credentials "
                                                                "are configured")}), **auth}),
        "/dashboard/api/user/{user_id}": _get(
            "User preview: bucket, algorithm, profile, neighbours, items and why each is there", {
                "200": _json({"type": "object"}, "The preview"), "400": errors["400"], "503": errors["503"],
                **({} if auth_on else {"403": _json(_ref("Error"), "Loopback clients only when no credentials "
                                                                    "are configured")}), **auth},
            parameters=[{"name": "user_id", "in": "path", "required": True, "schema": {"type": "string"}}]),
    }
    for job in JOBS.values():
        paths[f"/admin/{job.admin_path}"] = {"post": {
            "summary": f"Enqueue {job.task}",
            "responses": {
                "202": _json(_ref("Queued"), "Queued"),
                "409": _json(_ref("AlreadyRunning"), "That job is already queued or running; task_id names its task"),
                **({} if auth_on else {"403": _json(_ref("Error"), "Admin answers loopback clients only "
                                                                    "when no credentials are configured")}),
                "503": _json(_ref("Error"), "Broker unavailable"), **auth}}}
    schemas = {"Error": ERROR, "Recommendations": RECOMMENDATIONS, "Categories": CATEGORIES, "Health": HEALTH,
               "Stats": STATS, "Queued": QUEUED, "AlreadyRunning": RUNNING, "Task": TASK,
               **_request_schemas(max_page_size, default_page_size)}
    doc = {
        "openapi": "3.1.0",
        "info": {"title": "MySanta recommendation service", "version": "1.0.0",
                 "description": "Gift recommendations for MySanta. Interactive docs: `/docs`."},
        "paths": paths,
        "components": {"schemas": schemas, "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    }
    if auth_on:
        doc["security"] = [{"basic": []}]
    return doc


def document_for(settings) -> dict:
    return document(settings.basic_auth_enabled, settings.max_page_size, settings.default_page_size)
