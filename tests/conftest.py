"""Shared fixtures: real brokers (Debian mosquitto and amqtt) on loopback, a real database
per test, settings pointing at both, and a running controller service.

The database is a SQLite file by default. With ``LOA_TEST_DATABASE=postgresql`` it is a
PostgreSQL database on a throwaway cluster (``tests/pg_support.py``), and only the tests that
use a database run: the others already ran in the SQLite pass (``scripts/test.sh`` runs both).
Tests marked ``sqlite_pass_only`` use a database but are about something else (a page in
Chromium, the event loop's latency); they run once, in the SQLite pass, to keep CI in budget.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loa.broker import EmbeddedBroker
from loa.db import Database
from loa.settings import Settings
from system.schema import import_all_models
from tests.pg_support import (  # noqa: F401 (fixtures)
    PgCluster,
    in_ci,
    missing_message,
    pg_cluster,
    pg_db,
    pg_empty_url,
    pg_template,
    pg_url,
)

# Every package's tables, so any test's ``create_all`` builds the whole schema.
import_all_models()

REPO = Path(__file__).resolve().parents[1]
SHARED_DATA = REPO.parent / "shared" / "data"

BROKER_KINDS = ["mosquitto", "amqtt"]


def _need_mosquitto(kind: str) -> None:
    if (
        kind == "mosquitto"
        and not shutil.which("mosquitto")
        and not Path("/usr/sbin/mosquitto").exists()
    ):
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


# --------------------------------------------------------------------------- databases

BACKEND_VARIABLE = "LOA_TEST_DATABASE"
BACKENDS = ("sqlite", "postgresql")
# A test that requests one of these uses the run's database; in the PostgreSQL pass only
# such tests run.
DATABASE_FIXTURES = frozenset({"db", "databases"})
# Tests on these compare PostgreSQL with SQLite on purpose: they ran in the SQLite pass.
EXPLICIT_POSTGRESQL_FIXTURES = frozenset({"pg_cluster"})


def backend() -> str:
    return os.environ.get(BACKEND_VARIABLE, "sqlite").strip().lower() or "sqlite"


class Databases:
    """Makes the suite's databases on the run's backend, schema included.

    SQLite: a file at the path the caller names, tables from ``create_all``. PostgreSQL: a
    new database copied from the session's template, which the Alembic migrations built;
    the path is then unused. A PostgreSQL database is dropped by ``drop`` (connections a test
    left open are ended), so databases do not pile up over a run."""

    def __init__(self, cluster: PgCluster | None = None, template: str | None = None) -> None:
        self.cluster, self.template = cluster, template

    @property
    def postgresql(self) -> bool:
        return self.cluster is not None

    def create(self, sqlite_path: Path, *, schema: bool = True) -> Database:
        """A new database; with ``schema=False`` an empty one, as before a first run."""
        if self.cluster is None:
            database = Database(f"sqlite:///{sqlite_path}")
            if schema:
                database.create_all()
            return database
        return Database(self.cluster.create_database(template=self.template if schema else None))

    def clone(self, source: Database, sqlite_path: Path) -> Database:
        """A copy of ``source`` with its data, for tests that share an expensive seed. The
        source's connections are closed first (a copy needs it at rest)."""
        if self.cluster is None:
            with source.engine.connect() as conn:  # the copy is of the file alone: no WAL
                conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
            source.dispose()
            shutil.copy(source.engine.url.database, sqlite_path)
            return Database(f"sqlite:///{sqlite_path}")
        source.dispose()
        name = source.url.rsplit("/", 1)[1]
        return Database(self.cluster.create_database(template=name))

    def drop(self, database: Database) -> None:
        database.dispose()
        if self.cluster is not None:
            self.cluster.drop_database(database.url)


@pytest.fixture(scope="session")
def databases(request) -> Databases:
    """The run's database maker (session-wide, so module-scoped fixtures can use it too)."""
    if backend() == "sqlite":
        return Databases()
    # Looked up here, not declared as a parameter: a test that declares ``pg_cluster`` itself
    # is one of the explicit PostgreSQL-vs-SQLite tests (see EXPLICIT_POSTGRESQL_FIXTURES).
    return Databases(request.getfixturevalue("pg_cluster"), request.getfixturevalue("pg_template"))


@pytest.fixture
def db(tmp_path, databases):
    database = databases.create(tmp_path / "loa-test.db")
    yield database
    databases.drop(database)


def pytest_configure(config):
    if backend() not in BACKENDS:
        raise pytest.UsageError(
            f"{BACKEND_VARIABLE}={os.environ[BACKEND_VARIABLE]!r}: "
            f"expected one of {', '.join(BACKENDS)}"
        )
    if backend() == "postgresql" and missing_message() and in_ci():
        raise pytest.UsageError(missing_message())


def pytest_report_header(config):
    return f"database: {backend()} ({BACKEND_VARIABLE})"


_DESELECTED_FOR_BACKEND: list[int] = []


def pytest_collection_modifyitems(config, items):
    """The PostgreSQL pass keeps only the tests that use the database."""
    if backend() != "postgresql":
        return
    keep, drop = [], []
    for item in items:
        names = set(getattr(item, "fixturenames", ()))
        uses_db = bool(names & DATABASE_FIXTURES)
        once = item.get_closest_marker("sqlite_pass_only") is not None
        wanted = uses_db and not once and not names & EXPLICIT_POSTGRESQL_FIXTURES
        (keep if wanted else drop).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep
    _DESELECTED_FOR_BACKEND.append(len(drop))
    reason = missing_message()
    if reason:  # a developer machine without PostgreSQL (in CI, pytest_configure failed)
        for item in keep:
            item.add_marker(pytest.mark.skip(reason=reason))


def pytest_terminal_summary(terminalreporter):
    if _DESELECTED_FOR_BACKEND:
        terminalreporter.write_line(
            f"{BACKEND_VARIABLE}=postgresql: {_DESELECTED_FOR_BACKEND[-1]} tests that use no "
            "database, or are marked sqlite_pass_only, were deselected (the SQLite pass runs "
            "them)."
        )


@pytest.fixture
def settings(tmp_path, db):
    return Settings(
        data_dir=tmp_path / "data",
        database_url=db.url,
        heartbeat_s=30,
        flush_interval_s=0.2,
        secret_key="test-secret",
    )


def settings_for(base: Settings, broker: EmbeddedBroker, **overrides) -> Settings:
    """``base`` pointed at ``broker``."""
    return base.model_copy(update={"mqtt_host": broker.host, "mqtt_port": broker.port, **overrides})


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

    rows = [
        (f"{p}::{n}", *_OUTCOMES[f"{p}::{n}"]) for p, n in cited_tests() if f"{p}::{n}" in _OUTCOMES
    ]
    if not rows:
        return
    suffix = "" if backend() == "sqlite" else f"-{backend()}"
    out = REPO / "tests" / "artifacts" / f"reliability{suffix}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    lines = ["| test | outcome | seconds |", "|---|---|---|"]
    lines += [f"| `{t}` | {o} | {d:.1f} |" for t, o, d in rows]
    out.write_text("\n".join(lines) + "\n")
