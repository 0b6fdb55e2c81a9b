"""Every setting, read from the environment in one place and validated at startup.

pydantic does the type checks; a field name upper-cased is its variable (any case works).
A bad value raises SettingsError naming the variable, so a process fails loudly
instead of running with a value nobody meant. Secrets are SecretStr, so they never
appear in a repr, a log line or /stats.
"""
from __future__ import annotations

import os
import re
from functools import lru_cache
from typing import Annotated, Literal, Mapping
from urllib.parse import urlsplit, urlunsplit

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator


class SettingsError(ValueError):
    pass


_QUERY_SECRET = re.compile(r"(?i)(^|[&;])((?:password|passwd|pwd|secret|token)=)[^&;]*")


def redact(url: str) -> str:
    """The URL with any password (in the userinfo or as a query parameter) replaced, safe for /stats and logs."""
    parts = urlsplit(url)
    netloc = parts.netloc
    if parts.password is not None:
        netloc = netloc.replace(f":{parts.password}@", ":***@")
    query = _QUERY_SECRET.sub(r"\1\2***", parts.query)
    if netloc == parts.netloc and query == parts.query:
        return url
    return urlunsplit(parts._replace(netloc=netloc, query=query))


class _Url:
    """Field metadata: a URL setting, checked for its scheme and redacted in public()."""

    def __init__(self, *schemes: str):
        self.schemes = schemes

    def __call__(self, value: str) -> str:
        if urlsplit(value).scheme not in self.schemes:
            raise ValueError(f"must be a {'/'.join(self.schemes)} URL")
        return value


_PG = _Url("postgresql", "postgres")
_REDIS = _Url("redis", "rediss", "unix")
PostgresUrl = Annotated[str, AfterValidator(_PG), _PG]
RedisUrl = Annotated[str, AfterValidator(_REDIS), _REDIS]
_BROKER = _Url("redis", "rediss", "amqp", "unix")
BrokerUrl = Annotated[str, AfterValidator(_BROKER), _BROKER]


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


def _int(default: int, lo: int, hi: int):
    return Field(default, ge=lo, le=hi)


class Settings(BaseModel):
    """The service's settings. The field name upper-cased is the environment variable.

    A plain pydantic model, not pydantic-settings': load_settings reads the one mapping it
    is given, and that library's sources and their imports cost every process 5 MB."""

    # Values come as strings from the environment and are converted (lax mode); defaults
    # are validated too.
    model_config = ConfigDict(frozen=True, extra="ignore", hide_input_in_errors=True, validate_default=True)

    main_database_url: PostgresUrl = "postgresql:///mysanta_main"
    recommendations_database_url: PostgresUrl = "postgresql:///mysanta_recommendations"
    recommendations_redis_url: RedisUrl = "redis://localhost:6379/1"
    # Default: the cache's Redis server, DB 2 / DB 3 (filled in by _derive_celery_urls).
    celery_broker_url: BrokerUrl = ""
    celery_result_backend: RedisUrl = ""
    max_similar_users: int = _int(20, 1, 500)
    default_page_size: int = _int(20, 1, 1000)
    max_page_size: int = _int(100, 1, 1000)
    popular_items_refresh_minutes: int = _int(15, 1, 10080)
    user_profiles_refresh_minutes: int = _int(30, 1, 10080)
    user_similarities_refresh_minutes: int = _int(60, 1, 10080)
    user_lists_refresh_minutes: int = _int(15, 1, 10080)
    list_processes: int = _int(2, 1, 64)
    # Share of Redis's maxmemory the lists job may fill caching users' rows ahead of their
    # requests (workers/preload.py), the most active users first; 0: no preload.
    preload_memory_share: float = Field(0.65, ge=0.0, le=0.9)
    cache_cleanup_hours: int = _int(6, 1, 720)
    cache_ttl_popular: int = _int(900, 1, 604800)
    cache_ttl_personalized: int = _int(7200, 1, 604800)
    cache_ttl_user_profile: int = _int(14400, 1, 604800)
    port: int = _int(8001, 1, 65535)
    popular_top_n: int = _int(200, 10, 10000)
    recommendation_list_size: int = _int(200, 10, 10000)
    like_weight: float = Field(1.0, ge=0.0, le=100.0)
    click_weight: float = Field(0.3, ge=0.0, le=100.0)
    decay_half_life_days: float = Field(20.0, ge=0.1, le=36500.0)
    taste_half_life_days: float = Field(90.0, ge=0.1, le=36500.0)
    similarity_shards: int = _int(1, 1, 1024)
    db_timeout_ms: int = _int(2000, 50, 600000)
    request_timeout_ms: int = _int(30000, 100, 600000)
    generation_check_ms: int = _int(1000, 0, 60000)
    job_lease_seconds: int = _int(60, 2, 3600)
    live_sync_seconds: int = _int(10, 1, 3600)
    live_lag_alert_seconds: int = _int(120, 1, 86400)
    metrics_enabled: bool = True
    basic_auth_username: str = ""
    basic_auth_password: SecretStr = SecretStr("")
    flower_basic_auth: SecretStr = SecretStr("")
    # Read by deploy/gunicorn.conf.py; validated here so a typo fails every process alike.
    web_concurrency: int = _int(2, 1, 256)
    worker_connections: int = _int(10000, 1, 1000000)
    log_level: Literal["debug", "info", "warning", "error", "critical"] = "info"
    # Celery beat's record of last runs (a shelve file). Relative: to the working directory,
    # so each checkout (and each container) has its own.
    celery_beat_schedule_file: str = Field("celerybeat-schedule", min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _derive_celery_urls(cls, data):
        if isinstance(data, dict):
            redis_url = data.get("recommendations_redis_url") or cls.model_fields["recommendations_redis_url"].default
            # A bad Redis URL is reported on its own variable, not again on the derived ones.
            base = redis_url if isinstance(redis_url, str) and urlsplit(redis_url).scheme in _REDIS.schemes \
                else cls.model_fields["recommendations_redis_url"].default
            data.setdefault("celery_broker_url", _redis_db(base, 2))
            data.setdefault("celery_result_backend", _redis_db(base, 3))
            if isinstance(data.get("log_level"), str):
                data["log_level"] = data["log_level"].lower()
        return data

    @model_validator(mode="after")
    def _consistent(self):
        if self.default_page_size > self.max_page_size:
            raise ValueError(f"DEFAULT_PAGE_SIZE={self.default_page_size} is larger than "
                             f"MAX_PAGE_SIZE={self.max_page_size}")
        if bool(self.basic_auth_username) != bool(self.basic_auth_password.get_secret_value()):
            raise ValueError("BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD must be set together")
        return self

    @property
    def basic_auth_enabled(self) -> bool:
        return bool(self.basic_auth_username and self.basic_auth_password.get_secret_value())

    @classmethod
    def url_fields(cls) -> set[str]:
        return {name for name, f in cls.model_fields.items() if any(isinstance(m, _Url) for m in f.metadata)}

    # Settings shown by /stats. Secrets never are; URLs are shown with their passwords redacted.
    def public(self) -> dict:
        urls = self.url_fields()
        out = {}
        for name in type(self).model_fields:
            value = getattr(self, name)
            if isinstance(value, SecretStr):
                continue
            out[name] = redact(value) if name in urls else value
        out["basic_auth_enabled"] = self.basic_auth_enabled
        return out


def _error_message(exc: ValidationError, raw: Mapping[str, str]) -> str:
    lower = {k.lower(): v for k, v in raw.items()}
    urls = Settings.url_fields()
    parts = []
    for err in exc.errors(include_url=False):
        msg = err["msg"].removeprefix("Value error, ")
        if not err["loc"]:
            parts.append(msg)  # a rule across variables; the message names them
            continue
        name = str(err["loc"][0])
        value = lower.get(name, err.get("input"))
        shown = "***" if isinstance(Settings.model_fields[name].default, SecretStr) else (
            redact(value) if name in urls and isinstance(value, str) else value)
        parts.append(f"{name.upper()}={shown!r}: {msg}")
    return "; ".join(parts)


def load_settings(env: Mapping[str, str] | None = None) -> Settings:
    """Settings from `env` (a mapping of variables; default os.environ), and from nothing else:
    a test's load_settings(env) never sees the shell's variables. Names are case-insensitive;
    an empty variable means "unset" (compose passes `${X:-}`); unknown ones are ignored."""
    environ = os.environ if env is None else env
    fields = Settings.model_fields
    values = {k.lower(): v for k, v in environ.items() if v != "" and k.lower() in fields}
    try:
        return Settings(**values)
    except ValidationError as exc:
        raise SettingsError(_error_message(exc, environ)) from None


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    return load_settings()


def main() -> None:
    """`python -m shared.settings` validates the environment and prints the settings."""
    import json
    import sys

    try:
        print(json.dumps(load_settings().public(), indent=2))
    except SettingsError as exc:
        print(f"settings error: {exc}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
