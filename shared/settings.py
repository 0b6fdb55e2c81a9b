"""Every setting, read from the environment in one place and validated at startup.

A bad value raises SettingsError naming the variable, so a process fails loudly
instead of running with a value nobody meant.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, fields
from functools import lru_cache
from urllib.parse import urlsplit, urlunsplit


class SettingsError(ValueError):
    pass


def _number(env, name, default, lo, hi, cast, kind):
    raw = env.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = cast(raw)
    except ValueError:
        raise SettingsError(f"{name}={raw!r} is not {kind}") from None
    if not lo <= value <= hi:
        raise SettingsError(f"{name}={value} is out of range [{lo}, {hi}]")
    return value


def _int(env, name, default, lo, hi):
    return _number(env, name, default, lo, hi, int, "an integer")


def _float(env, name, default, lo, hi):
    return _number(env, name, default, lo, hi, float, "a number")


def _url(env, name, default, schemes):
    value = env.get(name) or default
    parts = urlsplit(value)
    if parts.scheme not in schemes:
        raise SettingsError(f"{name}={redact(value)!r} must be a {'/'.join(schemes)} URL")
    return value


def redact(url: str) -> str:
    """The URL with any password replaced, safe for /stats and logs."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def _redis_db(url: str, db: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{db}"))


@dataclass(frozen=True)
class Settings:
    main_database_url: str
    recommendations_database_url: str
    recommendations_redis_url: str
    celery_broker_url: str
    celery_result_backend: str
    max_similar_users: int
    default_page_size: int
    max_page_size: int
    popular_items_refresh_minutes: int
    user_profiles_refresh_minutes: int
    user_similarities_refresh_minutes: int
    user_lists_refresh_minutes: int
    list_processes: int
    cache_cleanup_hours: int
    cache_ttl_popular: int
    cache_ttl_personalized: int
    cache_ttl_user_profile: int
    port: int
    popular_top_n: int
    recommendation_list_size: int
    like_weight: float
    click_weight: float
    decay_half_life_days: float
    taste_half_life_days: float
    similarity_shards: int
    db_timeout_ms: int
    generation_check_ms: int
    live_sync_seconds: int
    live_lag_alert_seconds: int
    basic_auth_username: str
    basic_auth_password: str
    flower_basic_auth: str

    # Settings shown by /stats. Secrets and URLs with credentials never are.
    def public(self) -> dict:
        hidden = {"basic_auth_password", "flower_basic_auth"}
        out = {}
        for f in fields(self):
            if f.name in hidden:
                continue
            value = getattr(self, f.name)
            out[f.name] = redact(value) if f.name.endswith("_url") or f.name == "celery_result_backend" else value
        out["basic_auth_enabled"] = bool(self.basic_auth_username and self.basic_auth_password)
        return out


def load_settings(env=None) -> Settings:
    env = os.environ if env is None else env
    redis_url = _url(env, "RECOMMENDATIONS_REDIS_URL", "redis://localhost:6379/1", ("redis", "rediss", "unix"))
    default_page = _int(env, "DEFAULT_PAGE_SIZE", 20, 1, 1000)
    max_page = _int(env, "MAX_PAGE_SIZE", 100, 1, 1000)
    if default_page > max_page:
        raise SettingsError(f"DEFAULT_PAGE_SIZE={default_page} is larger than MAX_PAGE_SIZE={max_page}")
    list_size = _int(env, "RECOMMENDATION_LIST_SIZE", 200, 10, 10000)
    auth_user = env.get("BASIC_AUTH_USERNAME", "")
    auth_pass = env.get("BASIC_AUTH_PASSWORD", "")
    if bool(auth_user) != bool(auth_pass):
        raise SettingsError("BASIC_AUTH_USERNAME and BASIC_AUTH_PASSWORD must be set together")
    return Settings(
        main_database_url=_url(env, "MAIN_DATABASE_URL", "postgresql:///mysanta_main", ("postgresql", "postgres")),
        recommendations_database_url=_url(
            env, "RECOMMENDATIONS_DATABASE_URL", "postgresql:///mysanta_recommendations", ("postgresql", "postgres")
        ),
        recommendations_redis_url=redis_url,
        celery_broker_url=_url(env, "CELERY_BROKER_URL", _redis_db(redis_url, 2), ("redis", "rediss", "amqp", "unix")),
        celery_result_backend=_url(env, "CELERY_RESULT_BACKEND", _redis_db(redis_url, 3), ("redis", "rediss", "unix")),
        max_similar_users=_int(env, "MAX_SIMILAR_USERS", 20, 1, 500),
        default_page_size=default_page,
        max_page_size=max_page,
        popular_items_refresh_minutes=_int(env, "POPULAR_ITEMS_REFRESH_MINUTES", 15, 1, 10080),
        user_profiles_refresh_minutes=_int(env, "USER_PROFILES_REFRESH_MINUTES", 30, 1, 10080),
        user_similarities_refresh_minutes=_int(env, "USER_SIMILARITIES_REFRESH_MINUTES", 60, 1, 10080),
        user_lists_refresh_minutes=_int(env, "USER_LISTS_REFRESH_MINUTES", 15, 1, 10080),
        list_processes=_int(env, "LIST_PROCESSES", 2, 1, 64),
        cache_cleanup_hours=_int(env, "CACHE_CLEANUP_HOURS", 6, 1, 720),
        cache_ttl_popular=_int(env, "CACHE_TTL_POPULAR", 900, 1, 604800),
        cache_ttl_personalized=_int(env, "CACHE_TTL_PERSONALIZED", 7200, 1, 604800),
        cache_ttl_user_profile=_int(env, "CACHE_TTL_USER_PROFILE", 14400, 1, 604800),
        port=_int(env, "PORT", 8001, 1, 65535),
        popular_top_n=_int(env, "POPULAR_TOP_N", 200, 10, 10000),
        recommendation_list_size=list_size,
        like_weight=_float(env, "LIKE_WEIGHT", 1.0, 0.0, 100.0),
        click_weight=_float(env, "CLICK_WEIGHT", 0.3, 0.0, 100.0),
        decay_half_life_days=_float(env, "DECAY_HALF_LIFE_DAYS", 20.0, 0.1, 36500.0),
        taste_half_life_days=_float(env, "TASTE_HALF_LIFE_DAYS", 90.0, 0.1, 36500.0),
        similarity_shards=_int(env, "SIMILARITY_SHARDS", 1, 1, 1024),
        db_timeout_ms=_int(env, "DB_TIMEOUT_MS", 2000, 50, 600000),
        generation_check_ms=_int(env, "GENERATION_CHECK_MS", 1000, 0, 60000),
        live_sync_seconds=_int(env, "LIVE_SYNC_SECONDS", 10, 1, 3600),
        live_lag_alert_seconds=_int(env, "LIVE_LAG_ALERT_SECONDS", 120, 1, 86400),
        basic_auth_username=auth_user,
        basic_auth_password=auth_pass,
        flower_basic_auth=env.get("FLOWER_BASIC_AUTH", ""),
    )


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
