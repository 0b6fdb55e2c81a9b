"""GET /openapi.json and GET /docs: the API description and Swagger UI to browse and try it.

Swagger UI's files come from the pinned flask-swagger-ui package and are served by this
app, never from a CDN: deploy hosts often have no internet access.
"""
from __future__ import annotations

from importlib.resources import files

from flask import Blueprint, render_template

from api.http import json_response, services
from api.openapi import document_for

SWAGGER_UI_DIST = str(files("flask_swagger_ui") / "dist")

bp = Blueprint("docs", __name__, static_folder=SWAGGER_UI_DIST, static_url_path="/docs/static")


@bp.get("/openapi.json")
def openapi():
    return json_response(document_for(services().settings))


@bp.get("/docs")
def docs():
    return render_template("swagger_ui.html")
