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


def test_load_settings_reads_only_the_mapping_it_is_given(monkeypatch):
    # Hermetic: a test's load_settings(env) never picks up the shell's variables.
    monkeypatch.setenv("PORT", "9999")
    monkeypatch.setenv("CELERY_BROKER_URL", "redis://127.0.0.1:6379/15")
    s = load_settings({})
    assert s.port == 8001 and s.celery_broker_url == "redis://localhost:6379/2"
    assert load_settings().port == 9999  # no mapping: the process environment


def test_empty_variable_means_default():
    s = load_settings({"PORT": "", "BASIC_AUTH_USERNAME": "", "BASIC_AUTH_PASSWORD": ""})
    assert s.port == 8001 and s.basic_auth_enabled is False


def test_secrets_are_secret_and_urls_redacted():
    s = load_settings({"BASIC_AUTH_USERNAME": "ops", "BASIC_AUTH_PASSWORD": "hunter2", "FLOWER_BASIC_AUTH": "fl:ower",
                       "RECOMMENDATIONS_REDIS_URL": "redis://:r3dis@cache:6379/1",
                       "RECOMMENDATIONS_DATABASE_URL": "postgresql://db/recs?user=app&password=qu3ry&sslmode=require"})
    assert s.basic_auth_password.get_secret_value() == "hunter2"
    for text in (repr(s), str(s), str(s.public())):
        assert "hunter2" not in text and "fl:ower" not in text
    public = str(s.public())
    assert "r3dis" not in public and "qu3ry" not in public
    assert s.public()["recommendations_database_url"] == "postgresql://db/recs?user=app&password=***&sslmode=require"
    assert s.public()["celery_broker_url"] == "redis://:***@cache:6379/2"  # derived URLs keep the password hidden too
    assert redact("redis://cache:6379/1?password=x") == "redis://cache:6379/1?password=***"


def test_bad_url_error_does_not_echo_its_password():
    with pytest.raises(SettingsError) as err:
        load_settings({"MAIN_DATABASE_URL": "mysql://app:s3cret@db/main"})
    assert "MAIN_DATABASE_URL" in str(err.value) and "s3cret" not in str(err.value)


def test_bad_secret_value_is_not_echoed():
    with pytest.raises(SettingsError) as err:
        load_settings({"BASIC_AUTH_PASSWORD": "hunter2"})
    assert "BASIC_AUTH" in str(err.value) and "hunter2" not in str(err.value)


def _readme_settings_rows() -> dict:
    """{VARIABLE: default as written} from the README's settings table."""
    import re
    from pathlib import Path

    text = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = text.split("\n## Settings\n", 1)[1].split("\n## ", 1)[0]
    rows = {}
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not cells[0].startswith("`"):
            continue
        names = re.findall(r"`([A-Z][A-Z0-9_]*)`", cells[0])
        # "`url` (explanation)" -> url; "1.0 / 0.3" -> one default per variable, a single one
        # ("unset") holds for all of them; "unset" -> empty.
        default = re.sub(r"\s*\(.*\)$", "", cells[1]).replace("`", "")
        defaults = default.split(" / ") if " / " in default else [default] * len(names)
        assert len(defaults) == len(names), line
        rows.update({n: ("" if d == "unset" else d) for n, d in zip(names, defaults)})
    return rows


def test_readme_settings_table_matches_the_model():
    from pydantic import SecretStr

    from shared.settings import Settings

    rows = _readme_settings_rows()
    fields = {name.upper() for name in Settings.model_fields}
    assert fields - set(rows) == set(), "settings missing from the README table"
    assert set(rows) - fields == set(), "README documents variables the model does not have"
    effective = load_settings({})
    for name in Settings.model_fields:
        value = getattr(effective, name)
        value = value.get_secret_value() if isinstance(value, SecretStr) else value
        written = rows[name.upper()]
        if isinstance(value, (int, float)):
            assert float(written) == value, (name, written, value)
        else:
            assert written == value, (name, written, value)
