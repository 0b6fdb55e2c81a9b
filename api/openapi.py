"""The OpenAPI 3 document. Request schemas come from the pydantic models themselves."""
from __future__ import annotations

from functools import lru_cache

from api.validation import PersonalizedRequest, PopularRequest
from shared.jobs import JOBS

ERROR = {
    "type": "object",
    "required": ["error", "message"],
    "properties": {
        "error": {"type": "string"},
        "message": {"type": "string"},
        "errors": {"type": "array", "items": {"type": "object", "properties": {
            "field": {"type": "string", "description": "dotted path of the offending field"},
            "rule": {"type": "string", "description": "the rule it broke"}}}},
    },
}
RECOMMENDATIONS = {
    "type": "object",
    "required": ["items", "pagination", "computation_time_ms", "algorithm_used", "cache_hit"],
    "properties": {
        "items": {"type": "array", "items": {"type": "integer"}},
        "pagination": {"type": "object", "properties": {
            "page": {"type": "integer"}, "limit": {"type": "integer"}, "total_pages": {"type": "integer"},
            "has_next": {"type": "boolean"}, "has_previous": {"type": "boolean"}}},
        "computation_time_ms": {"type": "number"},
        "algorithm_used": {"type": "string", "examples": ["popular", "content_based", "collaborative+popular"]},
        "cache_hit": {"type": "boolean"},
    },
}


def _ref(name):
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema, description):
    return {"description": description, "content": {"application/json": {"schema": schema}}}


ERRORS = {
    "400": _json(_ref("Error"), "Malformed request; the error names the field and the rule"),
    "401": _json(_ref("Error"), "Credentials required (BASIC_AUTH_* set)"),
    "413": _json(_ref("Error"), "Body too large"),
    "503": _json(_ref("Error"), "Recommendations DB unavailable and the answer is not cached"),
}


def _post(summary, request_schema):
    return {"post": {
        "summary": summary,
        "requestBody": {"required": True, "content": {"application/json": {"schema": _ref(request_schema)}}},
        "responses": {"200": _json(_ref("Recommendations"), "Ranked item ids"), **ERRORS},
    }}


@lru_cache(maxsize=1)
def document() -> dict:
    schemas = {"Error": ERROR, "Recommendations": RECOMMENDATIONS}
    from api.events import EventBatch, EventIn

    for model in (PopularRequest, PersonalizedRequest, EventIn, EventBatch):
        schema = model.model_json_schema(ref_template="#/components/schemas/{model}")
        schemas.update(schema.pop("$defs", {}))
        schemas[model.__name__] = schema
    paths = {
        "/popular": _post("Popular gifts for a demographic segment", "PopularRequest"),
        "/personalized": _post("Recommendations for one user, by their history", "PersonalizedRequest"),
        "/events": {"post": {
            "summary": "Live feedback (like, unlike, click): effective on the user's next request",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "oneOf": [_ref("EventIn"), _ref("EventBatch")]}}}},
            "responses": {
                "200": _json({"type": "object", "properties": {"accepted": {"type": "integer"}}}, "Applied"),
                "400": ERRORS["400"], "401": ERRORS["401"], "413": ERRORS["413"],
                "403": _json(_ref("Error"), "Loopback-only when no credentials are configured"),
                "503": _json(_ref("Error"), "Redis unavailable: nothing applied, retry")}}},
        "/health": {"get": {"summary": "Dependencies and data freshness", "responses": {
            "200": _json({"type": "object"}, "status ok or degraded (a job more than twice its interval late)"),
            "503": _json({"type": "object"}, "a dependency is down; 'failing' names it")}}},
        "/stats": {"get": {"summary": "Data, cache and configuration figures", "responses": {
            "200": _json({"type": "object"}, "main_db, recommendations_db, cache, config"),
            "401": ERRORS["401"]}}},
        "/openapi.json": {"get": {"summary": "This document", "responses": {"200": _json({"type": "object"}, "OpenAPI 3")}}},
        "/admin/tasks/{task_id}": {"get": {
            "summary": "State of an enqueued task",
            "parameters": [{"name": "task_id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json({"type": "object"}, "task_id, state, result"), "503": ERRORS["503"]}}},
    }
    for job in JOBS.values():
        paths[f"/admin/{job.admin_path}"] = {"post": {
            "summary": f"Enqueue {job.task}",
            "responses": {
                "202": _json({"type": "object", "properties": {"task_id": {"type": "string"}, "task": {"type": "string"},
                                                               "status": {"type": "string"}}}, "Queued"),
                "409": _json({"type": "object"}, "That job is already running"),
                "401": ERRORS["401"],
                "403": _json(_ref("Error"), "Admin is loopback-only when no credentials are configured"),
                "503": _json(_ref("Error"), "Broker unavailable")}}}
    return {
        "openapi": "3.0.3",
        "info": {"title": "MySanta recommendation service", "version": "1.0.0"},
        "paths": paths,
        "components": {"schemas": schemas,
                       "securitySchemes": {"basic": {"type": "http", "scheme": "basic"}}},
    }
