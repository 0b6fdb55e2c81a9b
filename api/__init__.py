"""The Flask app factory. Nothing connects at import time or in create_app().

One serving path: every request goes through the same WSGI layers,
AccessLog -> RequestDeadline -> Admission -> Guard (basic auth / admin loopback) -> FastPath -> Flask,
so an authenticated deployment serves /popular and /personalized from the fast path
too, and api.http.error_for maps exceptions to responses for both paths.
"""
from __future__ import annotations

import os

from flask import Flask, request

from api.accesslog import AccessLog
from api.admission import Admission
from api.auth import Guard
from api.deadline import RequestDeadline
from api.fastpath import FastPath
from api.http import MAX_BODY_BYTES, error_for, json_response
from api.services import Services
from shared.settings import load_settings


def create_app(config: dict | None = None) -> Flask:
    """config: the whole environment-style configuration, e.g. {"RECOMMENDATIONS_REDIS_URL": ...}.

    Without config the settings come from os.environ (gunicorn, `make run`). With it they
    come from config alone: the shell's variables never leak into an app a test built.
    """
    settings = load_settings(os.environ if config is None else config)
    app = Flask(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.extensions["recs"] = Services(settings)

    from api import admin, categories, dashboard, docs, events, metrics, ops, recommendations

    app.register_blueprint(recommendations.bp)
    app.register_blueprint(ops.bp)
    app.register_blueprint(admin.bp)
    app.register_blueprint(events.bp)
    app.register_blueprint(docs.bp)
    app.register_blueprint(categories.bp)
    app.register_blueprint(metrics.bp)
    app.register_blueprint(dashboard.bp)

    @app.errorhandler(Exception)
    def _error(exc):
        status, payload, headers = error_for(exc, request.environ)
        if status == 500:
            app.logger.exception("unhandled error")
        resp = json_response(payload, status)
        for name, value in headers:
            resp.headers[name] = value
        return resp

    fast = FastPath(app.wsgi_app, app.extensions["recs"], recommendations.ENDPOINTS, app.logger)
    observe = metrics.RequestObserver(app.extensions["recs"], prometheus=settings.metrics_enabled)
    app.wsgi_app = AccessLog(RequestDeadline(Admission(Guard(fast, settings)), settings.request_timeout_ms / 1000),
                             observe)
    return app
