"""docker-compose.yml agrees with the Procfile and the settings; the demo generator is deterministic.

Docker cannot run on the CI machines, so the compose file is checked statically: its
services and start order, and that every command it runs exists here.
"""
import fnmatch
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from deploy.seed import PRESETS, build_frames
from shared.settings import load_settings

ROOT = Path(__file__).resolve().parent.parent
# What `docker compose up` needs from the shell (it refuses to start without these).
COMPOSE_SHELL = {"BASIC_AUTH_PASSWORD": "pw", "FLOWER_BASIC_AUTH": "ops:pw"}


def interpolate(value, shell: dict):
    """Compose's variable interpolation: ${X}, ${X:-default}, ${X-default}, ${X:?error}, and $$ for $."""
    if isinstance(value, dict):
        return {k: interpolate(v, shell) for k, v in value.items()}
    if isinstance(value, list):
        return [interpolate(v, shell) for v in value]
    if not isinstance(value, str):
        return value

    def one(m):
        name, op, arg = m.group(1), m.group(2) or "", m.group(3) or ""
        have = shell.get(name)
        if op == ":?" and not have:
            raise KeyError(f"{name}: {arg}")
        if op == ":-" and not have or op == "-" and have is None:
            return arg
        return have or ""

    parts = value.split("$$")
    return "$".join(re.sub(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:\?|:-|-)([^}]*))?\}", one, p) for p in parts)


def compose(shell=COMPOSE_SHELL) -> dict:
    return interpolate(yaml.safe_load((ROOT / "docker-compose.yml").read_text()), shell)


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
        niced = re.match(r"nice -n \d+ (.*)", core)
        if niced:  # a lower CPU priority: in compose a CPU weight below the API's (nice acts within a container)
            core = niced.group(1)
            assert services[names[proc_name]].get("cpu_shares", 1024) < services["api"].get("cpu_shares", 1024)
        assert core in command.replace("$$", "$"), (proc_name, cmd, command)
    for name in ("postgres", "redis", "api", "worker", "beat", "flower"):
        assert "healthcheck" in services[name], name


def test_compose_environment_is_valid_settings():
    stack = compose()
    env = stack["services"]["api"]["environment"]
    settings = load_settings(env)  # raises on any invalid value
    assert settings.port == 8001 and "8001:8001" in stack["services"]["api"]["ports"]
    for name in ("init", "worker", "beat", "flower"):
        assert stack["services"][name]["environment"]["MAIN_DATABASE_URL"] == env["MAIN_DATABASE_URL"]
        load_settings(stack["services"][name]["environment"])
    # Basic auth is on, so /admin and /dashboard answer a non-loopback client (the host) with credentials.
    assert settings.basic_auth_enabled


@pytest.mark.parametrize("missing", sorted(COMPOSE_SHELL))
def test_compose_refuses_to_start_without_its_secrets(missing):
    with pytest.raises(KeyError, match=missing):
        compose({k: v for k, v in COMPOSE_SHELL.items() if k != missing})


def test_compose_starts_init_first_and_waits_for_health():
    services = compose()["services"]
    assert set(services) == {"postgres", "redis", "init", "api", "worker", "live-worker", "beat", "flower"}
    for name, service in services.items():
        for dep, cond in service.get("depends_on", {}).items():
            assert dep in services, (name, dep)
            expected = "service_completed_successfully" if dep == "init" else "service_healthy"
            assert cond == {"condition": expected}, (name, dep, cond)
            assert dep == "init" or "healthcheck" in services[dep], dep
    for name in ("api", "worker", "live-worker", "beat"):
        assert set(services[name]["depends_on"]) == {"postgres", "redis", "init"}, name
    for name in set(services) - {"init"}:
        assert "healthcheck" in services[name], name
    assert set(services["init"]["depends_on"]) == {"postgres", "redis"}
    assert services["init"]["command"] == "python -m deploy.stack init"
    assert services["init"]["environment"]["DEMO_DATA"] == "1"  # a working demo by default
    assert "healthcheck" not in services["init"]  # one-shot: it exits


def test_compose_redis_is_memory_capped_and_keeps_the_queues():
    command = compose()["services"]["redis"]["command"]
    assert command[command.index("--maxmemory") + 1] == "512mb"
    assert command[command.index("--maxmemory-policy") + 1] == "volatile-lru"  # evicts only keys with a TTL


def _commands(stack):
    """Every command line compose runs, as argument lists (sh -c scripts split into their commands)."""
    for name, service in stack["services"].items():
        lines = [service.get("command")]
        test = service.get("healthcheck", {}).get("test")
        if test:
            lines.append(test[1:] if test[0] == "CMD" else test[1])
        for line in lines:
            if line is None:
                continue
            args = line if isinstance(line, list) else shlex.split(line)
            if args[:2] == ["sh", "-c"]:
                for part in re.split(r"&&|;|\|\|", args[2]):
                    yield name, shlex.split(part.replace("exec ", "", 1))
            else:
                yield name, args


def test_every_compose_command_exists():
    stack = compose()
    assert (ROOT / stack["x-app"]["build"]["dockerfile"]).is_file()
    for volume in stack["services"]["postgres"]["volumes"]:
        assert (ROOT / volume.split(":")[0]).is_file(), volume
    celery_flags = {}
    for service, args in _commands(stack):
        program = args[0]
        if program == "python" and args[1] == "-m":
            assert importlib.util.find_spec(args[2]) is not None, (service, args)
            if args[2] == "deploy.stack":
                from deploy import stack as stack_cli
                assert f"python -m deploy.stack {args[3]}" in stack_cli.__doc__, args
        elif program == "python" and args[1] == "-c":
            compile(args[2], service, "exec")
        elif program == "gunicorn":
            assert (ROOT / args[args.index("-c") + 1]).is_file()
            module, attr = args[-1].split(":")
            assert importlib.util.find_spec(module) is not None and attr == "app"
        elif program == "celery":
            assert args[1:3] == ["-A", "workers.app"] and importlib.util.find_spec("workers.app") is not None
            sub = args[3]
            # Flags, including one inside a shell expansion such as ${X:+--basic-auth=$X}.
            celery_flags.setdefault(sub, set()).update(
                re.findall(r"(?<![\w-])(-{1,2}[A-Za-z][A-Za-z-]*)", " ".join(args[4:])))
        else:
            assert program in ("pg_isready", "redis-cli", "redis-server"), (service, args)  # the images' own
    assert set(celery_flags) == {"worker", "beat", "flower", "inspect"}
    # Each flag is one the installed Celery or Flower accepts (Flower's are Tornado options).
    from flower.options import options as flower_options

    flower_flags = celery_flags.pop("flower")
    assert "--basic-auth" in flower_flags
    for flag in flower_flags:
        assert flag[2:] in flower_options, flag
    env = {**interpolate(stack["x-app"]["environment"], COMPOSE_SHELL), "PATH": os.environ.get("PATH", "")}
    for sub, flags in celery_flags.items():
        cmd = [str(Path(sys.executable).parent / "celery"), "-A", "workers.app", sub, "--help"]
        if sub == "inspect":
            cmd.insert(-1, "ping")
        text = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=120).stdout
        for flag in flags:
            assert flag in text, (sub, flag)


def test_dockerignore_keeps_the_image_small_but_complete():
    patterns = [line.strip() for line in (ROOT / ".dockerignore").read_text().splitlines()
                if line.strip() and not line.startswith("#")]
    assert ".venv" in patterns and ".git" in patterns

    def ignored(path):
        out = False
        for p in patterns:
            negate = p.startswith("!")
            p = p.lstrip("!")
            if fnmatch.fnmatch(path, p) or fnmatch.fnmatch(path, p + "/*") or path.startswith(p + "/"):
                out = not negate
        return out

    for needed in ("requirements.txt", "schema.sql", "celeryconfig.py", "api/wsgi.py", "api/templates/swagger_ui.html",
                   "deploy/gunicorn.conf.py", "deploy/main_schema.sql", "shared/settings.py", "workers/app.py"):
        assert not ignored(needed), needed
    for junk in (".venv/bin/python", ".git/HEAD", "eval-out/x.json", "tests/test_layout.py"):
        assert ignored(junk), junk


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
