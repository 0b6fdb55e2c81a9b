"""The Flask app factory. Nothing connects at import time or in create_app()."""
from __future__ import annotations

import base64
import hmac
import ipaddress
import os

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from api.accesslog import AccessLog
from api.fastpath import FastPath
from api.http import (INTERNAL_ERROR, MAX_BODY_BYTES, database_error_payload, error_response, json_response,
                      request_error_payload, too_large_payload)
from api.serve import DatabaseUnavailable
from api.services import Services
from api.validation import RequestError
from shared.settings import load_settings


def _is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address(addr or "").is_loopback
    except ValueError:
        return False


def _authorized(settings) -> bool:
    header = request.headers.get("Authorization", "")
    if not header.startswith("Basic "):
        return False
    try:
        user, _, password = base64.b64decode(header[6:], validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), settings.basic_auth_username.encode())
    ok_pass = hmac.compare_digest(password.encode(), settings.basic_auth_password.encode())
    return ok_user & ok_pass


# Endpoints for the Rails app's backend and ops, not for end users: basic auth when
# configured, loopback clients only otherwise.
PROTECTED_PREFIXES = ("/admin", "/events")


def _protected(path: str) -> bool:
    return path.startswith(PROTECTED_PREFIXES)


def create_app(config: dict | None = None) -> Flask:
    """config: environment-style overrides, e.g. {"RECOMMENDATIONS_REDIS_URL": ...}."""
    settings = load_settings({**os.environ, **(config or {})})
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["recs"] = Services(settings)
    auth_on = bool(settings.basic_auth_username and settings.basic_auth_password)

    from api import admin, events, ops, recommendations

    app.register_blueprint(recommendations.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(events.bp)

    @app.before_request
    def _guard():
        if request.path == "/health":
            return None
        if auth_on:
            if not _authorized(settings):
                resp = error_response(401, "unauthorized", "valid basic-auth credentials are required")
                resp.headers["WWW-Authenticate"] = 'Basic realm="recommendations"'
                return resp
        elif _protected(request.path) and not _is_loopback(request.remote_addr):
            return error_response(403, "forbidden", "admin and event endpoints answer loopback clients only "
                                                    "unless BASIC_AUTH_USERNAME/BASIC_AUTH_PASSWORD are set")
        return None

    @app.errorhandler(RequestError)
    def _bad_request(exc: RequestError):
        return json_response(request_error_payload(exc), exc.status)

    @app.errorhandler(DatabaseUnavailable)
    def _db_down(exc):
        return json_response(database_error_payload(exc), 503)

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 413:
            return json_response(too_large_payload(), 413)
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        app.logger.exception("unhandled error")
        return json_response(INTERNAL_ERROR, 500)

    # With basic auth on, every request goes through Flask and its guard above.
    fast = recommendations.ENDPOINTS if not auth_on else {}
    app.wsgi_app = AccessLog(FastPath(app.wsgi_app, app.extensions["recs"], fast, app.logger))
    return app
