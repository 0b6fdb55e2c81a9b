"""The Flask app factory. Nothing connects at import time or in create_app()."""
from __future__ import annotations

import base64
import hmac
import ipaddress
import os

from flask import Flask, request
from werkzeug.exceptions import HTTPException

from api.accesslog import AccessLog
from api.http import error_response
from api.serve import DatabaseUnavailable
from api.services import Services
from api.validation import RequestError
from shared.settings import load_settings

MAX_BODY_BYTES = 64 * 1024


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


def create_app(config: dict | None = None) -> Flask:
    """config: environment-style overrides, e.g. {"RECOMMENDATIONS_REDIS_URL": ...}."""
    settings = load_settings({**os.environ, **(config or {})})
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["recs"] = Services(settings)
    auth_on = bool(settings.basic_auth_username and settings.basic_auth_password)

    from api import admin, ops, recommendations

    app.register_blueprint(recommendations.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)

    @app.before_request
    def _guard():
        if request.path == "/health":
            return None
        if auth_on:
            if not _authorized(settings):
                resp = error_response(401, "unauthorized", "valid basic-auth credentials are required")
                resp.headers["WWW-Authenticate"] = 'Basic realm="recommendations"'
                return resp
        elif request.path.startswith("/admin") and not _is_loopback(request.remote_addr):
            return error_response(403, "forbidden", "admin endpoints answer loopback clients only "
                                                    "unless BASIC_AUTH_USERNAME/BASIC_AUTH_PASSWORD are set")
        return None

    @app.errorhandler(RequestError)
    def _bad_request(exc: RequestError):
        message = "; ".join(f"{e['field']}: {e['rule']}" for e in exc.errors)
        return error_response(exc.status, "invalid_request", message, exc.errors)

    @app.errorhandler(DatabaseUnavailable)
    def _db_down(exc):
        return error_response(503, "unavailable", f"recommendations database unavailable: {exc}")

    @app.errorhandler(HTTPException)
    def _http(exc: HTTPException):
        if exc.code == 413:
            return error_response(413, "invalid_request", f"body: must be at most {MAX_BODY_BYTES} bytes",
                                  [{"field": "body", "rule": f"must be at most {MAX_BODY_BYTES} bytes"}])
        return error_response(exc.code or 500, exc.name.lower().replace(" ", "_"), exc.description or exc.name)

    @app.errorhandler(Exception)
    def _unexpected(exc):
        app.logger.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; see the server log")

    app.wsgi_app = AccessLog(app.wsgi_app)
    return app
