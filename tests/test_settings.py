import pytest

from shared.settings import SettingsError, load_settings, redact


def test_defaults():
    s = load_settings({})
    assert s.main_database_url.endswith("/mysanta_main")
    assert s.recommendations_database_url.endswith("/mysanta_recommendations")
    assert s.recommendations_redis_url == "redis://localhost:6379/1"
    assert s.celery_broker_url == "redis://localhost:6379/2"  # same server, another DB
    assert (s.max_similar_users, s.default_page_size, s.max_page_size) == (20, 20, 100)
    assert (s.popular_items_refresh_minutes, s.user_profiles_refresh_minutes,
            s.user_similarities_refresh_minutes, s.cache_cleanup_hours) == (15, 30, 60, 6)
    assert (s.cache_ttl_popular, s.cache_ttl_personalized, s.cache_ttl_user_profile) == (900, 7200, 14400)
    assert s.port == 8001


def test_broker_follows_redis_url():
    s = load_settings({"RECOMMENDATIONS_REDIS_URL": "redis://cache.internal:6380/4"})
    assert s.celery_broker_url == "redis://cache.internal:6380/2"


@pytest.mark.parametrize("name,value", [
    ("MAX_SIMILAR_USERS", "abc"), ("MAX_SIMILAR_USERS", "0"), ("PORT", "70000"), ("CACHE_TTL_POPULAR", "-5"),
    ("MAIN_DATABASE_URL", "mysql://x/y"), ("RECOMMENDATIONS_REDIS_URL", "http://x"), ("LIKE_WEIGHT", "heavy"),
])
def test_bad_values_name_the_variable(name, value):
    with pytest.raises(SettingsError) as err:
        load_settings({name: value})
    assert name in str(err.value)


def test_default_page_size_cannot_exceed_max():
    with pytest.raises(SettingsError, match="DEFAULT_PAGE_SIZE"):
        load_settings({"DEFAULT_PAGE_SIZE": "50", "MAX_PAGE_SIZE": "10"})


def test_auth_needs_both_halves():
    with pytest.raises(SettingsError, match="BASIC_AUTH"):
        load_settings({"BASIC_AUTH_USERNAME": "ops"})


def test_public_view_hides_secrets():
    s = load_settings({"BASIC_AUTH_USERNAME": "ops", "BASIC_AUTH_PASSWORD": "hunter2",
                       "MAIN_DATABASE_URL": "postgresql://app:s3cret@db/main", "FLOWER_BASIC_AUTH": "a:b"})
    text = str(s.public())
    assert "hunter2" not in text and "s3cret" not in text and "a:b" not in text
    assert s.public()["basic_auth_enabled"] is True
    assert redact("postgresql://app:s3cret@db/main") == "postgresql://app:***@db/main"


def test_process_fails_loudly_on_bad_setting():
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "shared.settings"], env={"PORT": "nope", "PATH": ""},
                          capture_output=True, text=True)
    assert proc.returncode == 2 and "PORT" in proc.stderr
