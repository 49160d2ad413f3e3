"""Shared fixtures: real brokers (Debian mosquitto and amqtt) on loopback, a real SQLite
database per test, settings pointing at both, and a running controller service."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from loa.broker import EmbeddedBroker
from loa.db import Database
from loa.settings import Settings

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

BROKER_KINDS = ["mosquitto", "amqtt"]


def _need_mosquitto(kind: str) -> None:
    if kind == "mosquitto" and not shutil.which("mosquitto") and not Path(
            "/usr/sbin/mosquitto").exists():
        pytest.fail("Debian mosquitto is required: run the README test command (it installs it)")


@pytest.fixture(params=BROKER_KINDS)
def broker(request, tmp_path):
    _need_mosquitto(request.param)
    b = EmbeddedBroker(kind=request.param, data_dir=tmp_path / f"broker-{request.param}")
    b.start()
    yield b
    b.cleanup()


@pytest.fixture
def mosquitto_broker(tmp_path):
    _need_mosquitto("mosquitto")
    b = EmbeddedBroker(kind="mosquitto", data_dir=tmp_path / "broker-mosquitto")
    b.start()
    yield b
    b.cleanup()


@pytest.fixture
def db(tmp_path):
    database = Database(f"sqlite:///{tmp_path / 'loa-test.db'}")
    database.create_all()
    yield database
    database.dispose()


@pytest.fixture
def settings(tmp_path, db):
    return Settings(data_dir=tmp_path / "data", database_url=db.url, heartbeat_s=30,
                    flush_interval_s=0.2, secret_key="test-secret")


def settings_for(base: Settings, broker: EmbeddedBroker, **overrides) -> Settings:
    """``base`` pointed at ``broker``."""
    return base.model_copy(update={"mqtt_host": broker.host, "mqtt_port": broker.port,
                                   **overrides})


# --------------------------------------------------------------------------- reliability

_OUTCOMES: dict[str, tuple[str, float]] = {}


def pytest_runtest_logreport(report):
    if report.when == "call" or (report.when == "setup" and report.outcome != "passed"):
        base = report.nodeid.split("[")[0]
        prev = _OUTCOMES.get(base)
        outcome = report.outcome if prev is None or prev[0] == "passed" else prev[0]
        _OUTCOMES[base] = (outcome, (prev[1] if prev else 0.0) + report.duration)


def pytest_sessionfinish(session):
    """Write the outcome of every test docs/reliability.md cites (tests/artifacts/)."""
    from tests.test_reliability_doc import cited_tests

    rows = [(f"{p}::{n}", *_OUTCOMES[f"{p}::{n}"]) for p, n in cited_tests()
            if f"{p}::{n}" in _OUTCOMES]
    if not rows:
        return
    out = REPO / "tests" / "artifacts" / "reliability.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| test | outcome | seconds |", "|---|---|---|"]
    lines += [f"| `{t}` | {o} | {d:.1f} |" for t, o, d in rows]
    out.write_text("\n".join(lines) + "\n")
