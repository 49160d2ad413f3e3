"""docker-compose.yml, Dockerfile and .env.example checked without a Docker engine: the
services a province needs are there, pinned, persistent, health-checked and started in
order; every ``LOA_*`` variable is a real setting; and every command the containers run is
a real ``loa`` (or ``alembic``) command — proved by running it with ``--help`` here."""

from __future__ import annotations

import contextlib
import io
import itertools
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from controller.influx_sink import InfluxSettings
from controller.provision import CONTROLLER_ENV, provision, read_controller_env
from loa.settings import Settings
from tests.factories import make_registry

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
SERVICES: dict[str, dict] = COMPOSE["services"]
DOCKERFILE = (REPO / "Dockerfile").read_text()

THIRD_PARTY = {
    "mosquitto": ("eclipse-mosquitto", "2"),
    "postgres": ("postgres", "16"),
    "influxdb": ("influxdb", "2"),
}
STATEFUL_DATA = {
    "mosquitto": "/mosquitto/data",
    "postgres": "/var/lib/postgresql/data",
    "influxdb": "/var/lib/influxdb2",
}
LOA_SERVICES = {"migrate", "controller", "dashboard", "sim", "cli"}
# LOA_* variables read straight from the environment rather than through Settings.
DIRECT_ENV = {"LOA_LOG_LEVEL": REPO / "system" / "processes.py"}
VAR_RE = re.compile(r"(?<!\$)\$\{([A-Za-z_][A-Za-z0-9_]*)(:?[-?][^}]*)?\}")


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def env_example() -> dict[str, str]:
    out = {}
    for line in (REPO / ".env.example").read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition("=")
            out[key] = value
    return out


def unescape(text: str) -> str:
    """What the container receives: compose turns ``$$`` into ``$``."""
    return text.replace("$$", "$")


def argv_of(service: dict) -> list[str]:
    entry = service.get("entrypoint") or []
    command = service.get("command") or []
    entry = shlex.split(entry) if isinstance(entry, str) else list(entry)
    command = shlex.split(command) if isinstance(command, str) else list(command)
    return [unescape(a) for a in entry + command]


def loa_invocation(argv: list[str]) -> list[str]:
    """``[loa, sub, ..., --flags]`` from a plain argv or from ``sh -c '... exec loa ...'``."""
    if argv[:2] == ["sh", "-c"]:
        tokens = shlex.split(argv[2])
        return tokens[tokens.index("exec") + 1 :]
    return argv


def setting_env_names() -> set[str]:
    names = {f"LOA_{f.upper()}" for f in Settings.model_fields}
    names |= {f"LOA_INFLUX_{f.upper()}" for f in InfluxSettings.model_fields}
    return names


# --------------------------------------------------------------------------- services


def test_the_services_a_province_needs_are_there():
    assert set(SERVICES) == {
        "mosquitto",
        "postgres",
        "influxdb",
        "migrate",
        "controller",
        "dashboard",
        "sim",
        "cli",
    }
    assert SERVICES["sim"]["profiles"] == ["sim"]
    assert SERVICES["cli"]["profiles"] == ["tools"]
    for name in ("mosquitto", "postgres", "influxdb", "migrate", "controller", "dashboard"):
        assert "profiles" not in SERVICES[name], f"{name} must start by default"


@pytest.mark.parametrize("name", sorted(THIRD_PARTY))
def test_third_party_images_are_pinned_to_a_release(name):
    repo, major = THIRD_PARTY[name]
    image = SERVICES[name]["image"]
    image_repo, _, tag = image.partition(":")
    assert image_repo == repo
    assert tag and tag != "latest", f"{image} is not pinned"
    assert tag.split(".")[0] == major and tag.count(".") >= 1, f"{image}: want {major}.x.y"


def test_loa_services_run_the_locally_built_image_with_a_version_tag():
    for name in LOA_SERVICES:
        svc = SERVICES[name]
        assert svc["build"]["context"] == "."
        image, _, tag = svc["image"].partition(":")
        assert image == "loa" and tag and "latest" not in tag


def test_stateful_services_keep_their_data_in_named_volumes():
    declared = set(COMPOSE["volumes"])
    for name, path in STATEFUL_DATA.items():
        mounts = dict(reversed(v.split(":")[:2]) for v in SERVICES[name]["volumes"])
        source = mounts.get(path)
        assert source in declared, f"{name}: {path} must be a named volume, got {source}"
    for name in ("controller", "dashboard"):
        assert "loa-data:/var/lib/loa" in SERVICES[name]["volumes"]
    assert "LOA_DATA_DIR=/var/lib/loa" in DOCKERFILE.replace(" ", "")


def test_every_stateful_service_and_the_dashboard_have_health_checks():
    for name in (*STATEFUL_DATA, "dashboard"):
        check = SERVICES[name].get("healthcheck")
        assert check and check["test"][0] in ("CMD", "CMD-SHELL"), name
        assert check["retries"] >= 3 and check["interval"]
    # The dashboard's probe asks a route that exists.
    from dashboard.routes.health import router

    probe = " ".join(SERVICES["dashboard"]["healthcheck"]["test"])
    path = re.search(r"http://127\.0\.0\.1:8080(/[^'\"]+)", probe).group(1)
    assert path in {r.path for r in router.routes}


def test_startup_waits_for_healthy_dependencies_and_the_migration():
    for name, svc in SERVICES.items():
        for dep, spec in (svc.get("depends_on") or {}).items():
            assert dep in SERVICES and spec.get("condition") in (
                "service_healthy",
                "service_completed_successfully",
                "service_started",
            ), f"{name} -> {dep}"
            if dep in STATEFUL_DATA:
                assert spec["condition"] == "service_healthy", f"{name} -> {dep}"
    ctl = SERVICES["controller"]["depends_on"]
    assert {d for d, s in ctl.items() if s["condition"] == "service_healthy"} == {
        "mosquitto",
        "postgres",
        "influxdb",
    }
    for name in ("controller", "dashboard", "sim"):
        assert (
            SERVICES[name]["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        )
    assert SERVICES["migrate"]["restart"] == "no"


def test_mosquitto_runs_the_provisioned_config(db, tmp_path):
    """The mounts and the paths inside the generated mosquitto.conf agree."""
    svc = SERVICES["mosquitto"]
    assert "./deploy/mqtt:/mosquitto/config:ro" in svc["volumes"]
    assert argv_of(svc) == ["mosquitto", "-c", "/mosquitto/config/mosquitto.conf"]
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a"]}})
    provision(db, tmp_path / "mqtt", broker_config_dir="/mosquitto/config")
    conf = (tmp_path / "mqtt" / "mosquitto.conf").read_text()
    assert "password_file /mosquitto/config/passwd" in conf
    assert "acl_file /mosquitto/config/acl" in conf
    assert "persistence_location /mosquitto/data/" in conf
    assert "allow_anonymous false" in conf
    published = {p.split(":")[-1] for p in svc["ports"]}
    assert published == {"1883", "8883"}


def test_controllers_scale_out_with_unique_client_ids_and_a_shared_subscription(tmp_path):
    svc = SERVICES["controller"]
    assert "replicas" in svc["deploy"]
    assert "container_name" not in svc and "ports" not in svc  # both would block --scale
    assert env_of(svc)["LOA_SHARED_SUBSCRIPTION_GROUP"] == "loa"
    # Run the container's own command line with a stand-in `loa` that prints what the
    # real one would read: two hostnames (two replicas) give two client ids.
    fake = tmp_path / "loa"
    fake.write_text('#!/bin/sh\necho "$LOA_CONTROLLER_CLIENT_ID $*"\n')
    fake.chmod(0o755)
    argv = argv_of(svc)
    ids = set()
    for hostname in ("3f2a9c1d0b7e", "9d8c7b6a5f4e"):
        out = subprocess.run(
            argv,
            env={"PATH": f"{tmp_path}:/usr/bin:/bin", "HOSTNAME": hostname},
            capture_output=True,
            text=True,
            check=True,
            timeout=10,
        ).stdout
        client_id, _, rest = out.strip().partition(" ")
        assert rest == "controller" and hostname in client_id
        ids.add(client_id)
    assert len(ids) == 2


# --------------------------------------------------------------------------- variables


def test_every_loa_variable_is_a_real_setting(db, tmp_path):
    used: dict[str, str] = {}
    for name, svc in SERVICES.items():
        for key in env_of(svc):
            used.setdefault(key, f"services.{name}.environment")
        for token in re.findall(r"\bLOA_[A-Z0-9_]+(?==)", " ".join(argv_of(svc))):
            used.setdefault(token, f"services.{name}.command")
    for key in env_example():
        used.setdefault(key, ".env.example")
    for key in re.findall(r"\bENV\s+(LOA_[A-Z0-9_]+)=", DOCKERFILE):
        used.setdefault(key, "Dockerfile")
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["node-a"]}})
    provision(db, tmp_path)
    for key in read_controller_env(tmp_path):
        used.setdefault(key, CONTROLLER_ENV)

    loa_vars = {k: where for k, where in used.items() if k.startswith("LOA_")}
    assert {
        "LOA_DATABASE_URL",
        "LOA_MQTT_HOST",
        "LOA_MQTT_USERNAME",
        "LOA_MQTT_PASSWORD",
        "LOA_CONTROLLER_CLIENT_ID",
        "LOA_SHARED_SUBSCRIPTION_GROUP",
        "LOA_INFLUX_URL",
    } <= set(loa_vars)
    known = setting_env_names()
    for key, where in loa_vars.items():
        if key in DIRECT_ENV:
            assert key in DIRECT_ENV[key].read_text(), f"{key} is no longer read"
            continue
        assert key in known, f"{key} ({where}) is not a Loa setting"
    assert env_of(SERVICES["controller"])["LOA_DATABASE_URL"].startswith("postgresql+psycopg://")


def test_compose_variables_have_a_default_or_an_entry_in_env_example():
    text = (REPO / "docker-compose.yml").read_text()
    example = env_example()
    referenced = {}
    for var, modifier in VAR_RE.findall(text):
        referenced.setdefault(var, set()).add(modifier[:2])
    for var, modifiers in referenced.items():
        has_default = any(m.startswith((":-", "-")) for m in modifiers)
        assert has_default or var in example, f"${{{var}}} has no default and is not in .env"
    stale = set(example) - set(referenced)
    assert not stale, f".env.example entries nothing reads: {stale}"
    for var, value in example.items():
        if "PASSWORD" in var or var in ("INFLUX_TOKEN", "LOA_SECRET_KEY"):
            assert value == "change-me", f"{var}: .env.example must not ship a real secret"


# --------------------------------------------------------------------------- commands


def _dockerfile_cmd() -> list[str]:
    match = re.search(r"^CMD\s+(\[.*\])\s*$", DOCKERFILE, re.M)
    assert match, "Dockerfile needs an exec-form CMD"
    return yaml.safe_load(match.group(1))


def test_every_command_the_containers_run_exists():
    invocations: dict[str, list[str]] = {"Dockerfile CMD": _dockerfile_cmd()}
    for name in LOA_SERVICES:
        invocations[name] = loa_invocation(argv_of(SERVICES[name]))
    assert invocations["controller"][:2] == ["loa", "controller"]
    assert invocations["dashboard"] == ["loa", "serve", "--no-controller"]
    # ...which publishes node commands itself, under its own login (issue 17 finding 3: the
    # broker uses the user name as client id, so sharing the controller's would knock it off).
    assert SERVICES["dashboard"]["env_file"] == [
        {"path": "./deploy/mqtt/api.env", "required": False}
    ]
    assert SERVICES["controller"]["env_file"] == [
        {"path": "./deploy/mqtt/controller.env", "required": False}
    ]
    assert invocations["sim"][:3] == ["loa", "sim", "--from-registry"]
    assert invocations["migrate"] == ["alembic", "upgrade", "head"]

    # The installed `loa` and `alembic` entry points start (one process each, in parallel:
    # starting `loa` imports every package, which is slow on a busy machine) ...
    env = {**os.environ, "LOA_DATA_DIR": "/tmp"}
    entry = subprocess.Popen(
        [str(BIN / "loa"), "--help"],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    alembic = subprocess.Popen(
        [str(BIN / "alembic"), "-c", str(REPO / "alembic.ini"), "heads"],
        cwd=REPO,
        env=env,
        text=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    # ... and each subcommand a container runs answers `--help` listing every option used
    # (the same parser the `loa` entry point runs, in this process).
    for where, argv in invocations.items():
        if argv[0] == "alembic":
            continue
        assert argv[0] == "loa", f"{where}: {argv}"
        path = list(itertools.takewhile(lambda a: not a.startswith("-"), argv[1:]))
        code, out = _loa_help(path)
        assert code == 0, f"{where}: loa {' '.join(path)} --help -> {code}: {out}"
        for flag in (a for a in argv[1:] if a.startswith("--")):
            assert flag in out, f"{where}: {flag} is not an option of loa {' '.join(path)}"
    out, _ = entry.communicate(timeout=120)
    assert entry.returncode == 0 and "controller" in out and "serve" in out, out
    for sub in {inv[1] for inv in invocations.values() if inv[0] == "loa" and len(inv) > 1}:
        if not sub.startswith("-"):
            assert sub in out, f"`loa --help` does not list {sub}"
    out, _ = alembic.communicate(timeout=120)
    # Proves alembic.ini and the revision scripts load, as the migrate service will.
    assert alembic.returncode == 0 and "(head)" in out, out


def _loa_help(path: list[str]) -> tuple[int, str]:
    from system.cli import main

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), contextlib.redirect_stderr(buf):
        try:
            code = main([*path, "--help"])
        except SystemExit as exc:
            code = exc.code or 0
    return int(code), buf.getvalue()


def test_dockerfile_builds_the_whole_application():
    assert re.search(r"^FROM python:3\.11-slim", DOCKERFILE, re.M)
    install = re.search(r"apt-get install[^\n]*\\?\n?[^\n]*", DOCKERFILE).group(0)
    assert "ffmpeg" in install and "espeak-ng" in install
    assert 'pip install -c requirements.lock ".[postgres]"' in DOCKERFILE
    pyproject = (REPO / "pyproject.toml").read_text()
    includes = re.search(r"include\s*=\s*\[([^\]]*)\]", pyproject).group(1)
    for pattern in re.findall(r'"([^"]+)\*"', includes):
        assert re.search(rf"^COPY {pattern} \./{pattern}$", DOCKERFILE, re.M), pattern
    assert re.search(r"^COPY alembic\.ini ", DOCKERFILE, re.M)
    assert re.search(r"^COPY migrations ", DOCKERFILE, re.M)
    user = re.search(r"^USER (\S+)", DOCKERFILE, re.M)
    assert user and user.group(1) not in ("root", "0")


def test_secrets_and_local_state_stay_out_of_the_image():
    ignored = {
        line.strip()
        for line in (REPO / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    }
    assert {".git", ".venv", ".env", "deploy/", "var/"} <= ignored
