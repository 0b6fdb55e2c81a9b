"""Access control as WSGI middleware, in front of the fast path and Flask alike.

With BASIC_AUTH_USERNAME/BASIC_AUTH_PASSWORD set, every request but the probes needs
valid basic-auth credentials (RFC 7617: the scheme name is case-insensitive). Without
them, /admin answers loopback clients only. Sitting in front of both paths, this lets
an authenticated deployment serve (and benchmark) the same fast path as an open one.
"""
from __future__ import annotations

import base64
import binascii
import hmac
import ipaddress

from api.http import error_payload, wsgi_json

# Load balancers and orchestrators call these without credentials.
PUBLIC_PATHS = frozenset({"/health", "/livez", "/readyz"})
# Endpoints for the Rails app's backend and ops, not for end users: basic auth when
# configured, loopback clients only otherwise.
PROTECTED_PREFIXES = ("/admin", "/events", "/dashboard")
CHALLENGE = [("WWW-Authenticate", 'Basic realm="recommendations", charset="UTF-8"')]


def _is_loopback(addr: str | None) -> bool:
    try:
        return ipaddress.ip_address(addr or "").is_loopback
    except ValueError:
        return False


def credentials_ok(header: str, username: str, password: str) -> bool:
    scheme, _, token = header.strip().partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, given = base64.b64decode(token.strip(), validate=True).decode("utf-8").partition(":")
    except (ValueError, binascii.Error, UnicodeDecodeError):
        return False
    ok_user = hmac.compare_digest(user.encode(), username.encode())
    ok_pass = hmac.compare_digest(given.encode(), password.encode())
    return bool(sep) & ok_user & ok_pass


class Guard:
    def __init__(self, app, settings):
        self.app = app
        self.username = settings.basic_auth_username
        self.password = settings.basic_auth_password.get_secret_value()
        self.auth_on = settings.basic_auth_enabled

    def __call__(self, environ, start_response):
        path = environ.get("PATH_INFO") or ""
        if path in PUBLIC_PATHS:
            return self.app(environ, start_response)
        if self.auth_on:
            if not credentials_ok(environ.get("HTTP_AUTHORIZATION", ""), self.username, self.password):
                return wsgi_json(start_response, 401,
                                 error_payload("unauthorized", "valid basic-auth credentials are required"), CHALLENGE)
        elif path.startswith(PROTECTED_PREFIXES) and not _is_loopback(environ.get("REMOTE_ADDR")):
            return wsgi_json(start_response, 403, error_payload(
                "forbidden", "admin, event and dashboard endpoints answer loopback clients only "
                             "unless BASIC_AUTH_USERNAME/BASIC_AUTH_PASSWORD are set"))
        return self.app(environ, start_response)
