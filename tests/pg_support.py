"""A throwaway PostgreSQL cluster for tests, from Debian's ``postgresql`` package.

Why a real server: SQLite forgives what PostgreSQL refuses (types, upsert syntax, integer
widths, transactional DDL), and production runs on PostgreSQL. The cluster lives in a
temporary directory, listens on a random loopback port and a socket in that directory,
trusts local connections, and is built for speed, not durability (fsync off).

The suite runs as root here; PostgreSQL refuses to run as root, so the server is run as
the ``postgres`` OS user through ``runuser``. Missing binaries skip the PostgreSQL tests
with a clear message on a developer machine, and fail them in CI (``CI=true``), where a
silently skipped database is a hole in the evidence.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from loa.broker import free_port

INSTALL_HINT = "apt-get install -y postgresql (the README's test command installs it)"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` with ``initdb``, else one on PATH."""
    candidates = sorted(
        glob.glob("/usr/lib/postgresql/*/bin/initdb"),
        key=lambda p: (
            int(Path(p).parent.parent.name) if Path(p).parent.parent.name.isdigit() else 0
        ),
    )
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class PgCluster:
    """One running cluster; ``url(db)`` gives a SQLAlchemy URL for a database in it."""

    bindir: Path
    root: Path
    port: int
    user: str = "postgres"
    _admin: Any = field(default=None, repr=False)  # kept open: a test run creates hundreds

    @property
    def datadir(self) -> Path:
        return self.root / "data"

    @property
    def sockdir(self) -> Path:
        return self.root / "sock"

    def _cmd(self, *args: str) -> list[str]:
        if os.geteuid() == 0:
            return ["runuser", "-u", self.user, "--", *args]
        return list(args)

    def _run(self, *args: str, timeout: float = 60) -> None:
        proc = subprocess.run(
            self._cmd(*args), capture_output=True, text=True, timeout=timeout, check=False
        )
        if proc.returncode != 0:
            raise RuntimeError(
                f"{' '.join(args[:2])} failed ({proc.returncode}): {proc.stdout}\n{proc.stderr}"
            )

    def start(self) -> PgCluster:
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam(self.user)
            for p in (self.root, self.sockdir):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        self._run(
            str(self.bindir / "initdb"),
            "-D",
            str(self.datadir),
            "-U",
            "postgres",
            "-A",
            "trust",
            "-E",
            "UTF8",
            "--locale=C.UTF-8",
            "--no-sync",
        )
        options = (
            f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
            "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
            "-c max_connections=60 -c shared_buffers=32MB"
        )
        self._run(
            str(self.bindir / "pg_ctl"),
            "-D",
            str(self.datadir),
            "-o",
            options,
            "-l",
            str(self.root / "server.log"),
            "-w",
            "-t",
            "60",
            "start",
        )
        return self

    def stop(self) -> None:
        if self._admin is not None:
            with contextlib.suppress(Exception):
                self._admin.close()
        with contextlib.suppress(Exception):
            self._run(
                str(self.bindir / "pg_ctl"),
                "-D",
                str(self.datadir),
                "-m",
                "immediate",
                "-w",
                "stop",
                timeout=30,
            )

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def admin_connection(self):
        """A new autocommit connection to the ``postgres`` database (CREATE/DROP DATABASE
        cannot run inside a transaction)."""
        import psycopg

        return psycopg.connect(
            host="127.0.0.1", port=self.port, user="postgres", dbname="postgres", autocommit=True
        )

    def _admin_execute(self, sql: str) -> None:
        """Run ``sql`` on one admin connection kept for the session (a new backend per
        statement would cost more than the statement)."""
        if self._admin is None or self._admin.closed:
            self._admin = self.admin_connection()
        self._admin.execute(sql)

    def create_database(self, name: str | None = None, template: str | None = None) -> str:
        """A new database, empty or a copy of ``template``; returns its URL.

        A template copy is a file-level clone: much faster than migrating each database, and
        as isolated as a fresh one. The template must have no open connection."""
        name = name or f"t_{uuid.uuid4().hex[:12]}"
        clause = f' TEMPLATE "{template}"' if template else ""
        self._admin_execute(f'CREATE DATABASE "{name}"{clause}')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        """Drop the database of ``url``, ending any connection a test left open to it."""
        name = url.rsplit("/", 1)[1]
        self._admin_execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_database(cluster: PgCluster, name: str) -> str:
    """A new database brought to the current schema by the Alembic migrations (as
    production does); returns its URL. Alembic's engine is disposed when this returns, so
    the database can serve as a template at once."""
    from alembic import command
    from alembic.config import Config

    repo = Path(__file__).resolve().parents[1]
    url = cluster.create_database(name)
    cfg = Config(str(repo / "alembic.ini"))
    cfg.set_main_option("script_location", str(repo / "migrations"))
    cfg.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    cfg.attributes["configure_logging"] = False
    command.upgrade(cfg, "head")
    return url


def start_cluster() -> PgCluster | None:
    """A started cluster, or None when PostgreSQL is not installed."""
    bindir = find_bindir()
    if bindir is None:
        return None
    root = Path(tempfile.mkdtemp(prefix="loa-pg-"))
    cluster = PgCluster(bindir=bindir, root=root, port=free_port())
    try:
        return cluster.start()
    except BaseException:
        cluster.stop()
        shutil.rmtree(root, ignore_errors=True)
        raise


def missing_message() -> str:
    """Why PostgreSQL tests cannot run here, or "" when they can."""
    if find_bindir() is not None:
        return ""
    message = f"PostgreSQL is not installed: {INSTALL_HINT}"
    return f"{message} — required in CI (CI=true)" if in_ci() else message


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster()
    if cluster is None:
        if in_ci():
            pytest.fail(missing_message())
        pytest.skip(missing_message())
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


TEMPLATE = "loa_template"


@pytest.fixture(scope="session")
def pg_template(pg_cluster: PgCluster) -> str:
    """Name of a database migrated once per session with Alembic; each test's database in
    the suite's PostgreSQL mode is a copy of it (so that pass also runs on the schema the
    migrations build, not on ``create_all``'s)."""
    migrated_database(pg_cluster, TEMPLATE)
    return TEMPLATE


@pytest.fixture(scope="session")
def pg_url(pg_cluster: PgCluster) -> str:
    """URL of the session's PostgreSQL server (its ``postgres`` database)."""
    return pg_cluster.url()


@pytest.fixture
def pg_empty_url(pg_cluster: PgCluster) -> Iterator[str]:
    """URL of a fresh, empty database, dropped after the test."""
    url = pg_cluster.create_database()
    yield url
    pg_cluster.drop_database(url)


@pytest.fixture
def pg_db(pg_empty_url: str):
    """A ``Database`` on a fresh PostgreSQL database with every table created — the
    PostgreSQL twin of the suite's SQLite ``db`` fixture."""
    from loa.db import Database

    database = Database(pg_empty_url)
    database.create_all()
    yield database
    database.dispose()
