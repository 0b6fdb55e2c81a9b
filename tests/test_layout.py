"""docker-compose.yml agrees with the Procfile and the settings; the demo generator is deterministic."""
from pathlib import Path

import pandas as pd
import yaml

from deploy.seed import PRESETS, build_frames
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent


def procfile():
    out = {}
    for line in (ROOT / "Procfile").read_text().splitlines():
        if line.strip():
            name, cmd = line.split(":", 1)
            out[name.strip()] = cmd.strip()
    return out


def test_compose_runs_what_the_procfile_runs():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    services = compose["services"]
    assert {"postgres", "redis", "api", "worker", "beat", "flower"} <= set(services)
    names = {"web": "api", "worker": "worker", "live": "live-worker", "beat": "beat", "flower": "flower"}
    for proc_name, cmd in procfile().items():
        command = services[names[proc_name]]["command"]
        # Same program and arguments; compose may prepend schema setup (api) or wrap in sh -c.
        core = cmd.split(" ${")[0]
        assert core in command.replace("$$", "$"), (proc_name, cmd, command)
    for name in ("postgres", "redis", "api", "worker", "flower"):
        assert "healthcheck" in services[name], name


def test_compose_environment_is_valid_settings():
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    env = compose["services"]["api"]["environment"]
    settings = load_settings(env)  # raises on any invalid value
    assert settings.port == 8001 and "8001:8001" in compose["services"]["api"]["ports"]
    for name in ("worker", "beat", "flower"):
        assert compose["services"][name]["environment"]["MAIN_DATABASE_URL"] == env["MAIN_DATABASE_URL"]


def test_seed_is_deterministic_and_has_the_planted_traps():
    a = build_frames(PRESETS["tiny"], 42)
    b = build_frames(PRESETS["tiny"], 42)
    for x, y in zip(a, b):
        pd.testing.assert_frame_equal(x, y)
    users, presents, likes, clicks = a
    assert (presents["user_id"].notna()).sum() == PRESETS["tiny"].private_items
    assert (presents["status"] != "in_stock").sum() > 0
    assert not likes.duplicated(["user_id", "handpicked_present_id"]).any()
    other = build_frames(PRESETS["tiny"], 43)[3]
    assert not clicks.equals(other)


def test_seed_popularity_is_power_law_and_skewed_by_gender():
    users, presents, likes, clicks = build_frames(PRESETS["tiny"], 42)
    counts = pd.concat([likes, clicks])["handpicked_present_id"].value_counts()
    top_share = counts.head(len(counts) // 10).sum() / counts.sum()
    assert top_share > 0.3  # the top 10% of items get well over 10% of interactions
    events = pd.concat([likes, clicks]).merge(users[["id", "gender"]], left_on="user_id", right_on="id")
    tagged_f = presents.loc[presents["categories"].str.contains('"gender": "f"'), "id"]
    share = events[events["handpicked_present_id"].isin(tagged_f)].groupby("gender").size()
    assert share.get("f", 0) > 5 * share.get("m", 0)
