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
from dataclasses import dataclass
from pathlib import Path

import pytest

from loa.broker import free_port

INSTALL_HINT = "apt-get install -y postgresql (the README's test command installs it)"


def find_bindir() -> Path | None:
    """The newest ``/usr/lib/postgresql/<v>/bin`` with ``initdb``, else one on PATH."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"),
                        key=lambda p: int(Path(p).parent.parent.name)
                        if Path(p).parent.parent.name.isdigit() else 0)
    if candidates:
        return Path(candidates[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() in ("1", "true", "yes")


@dataclass
class PgCluster:
    """One running cluster; ``url(db)`` gives a SQLAlchemy URL for a database in it."""

    bindir: Path
    root: Path
    port: int
    user: str = "postgres"

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
        proc = subprocess.run(self._cmd(*args), capture_output=True, text=True,
                              timeout=timeout, check=False)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(args[:2])} failed ({proc.returncode}): "
                               f"{proc.stdout}\n{proc.stderr}")

    def start(self) -> PgCluster:
        self.sockdir.mkdir(parents=True, exist_ok=True)
        if os.geteuid() == 0:
            pg = pwd.getpwnam(self.user)
            for p in (self.root, self.sockdir):
                os.chown(p, pg.pw_uid, pg.pw_gid)
        self._run(str(self.bindir / "initdb"), "-D", str(self.datadir), "-U", "postgres",
                  "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync")
        options = (f"-p {self.port} -k {self.sockdir} -c listen_addresses=127.0.0.1 "
                   "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                   "-c max_connections=60 -c shared_buffers=32MB")
        self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-o", options,
                  "-l", str(self.root / "server.log"), "-w", "-t", "60", "start")
        return self

    def stop(self) -> None:
        with contextlib.suppress(Exception):
            self._run(str(self.bindir / "pg_ctl"), "-D", str(self.datadir), "-m", "immediate",
                      "-w", "stop", timeout=30)

    def url(self, database: str = "postgres") -> str:
        return f"postgresql+psycopg://postgres@127.0.0.1:{self.port}/{database}"

    def create_database(self, name: str | None = None) -> str:
        """A new, empty database; returns its URL."""
        import psycopg

        name = name or f"t_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'CREATE DATABASE "{name}"')
        return self.url(name)

    def drop_database(self, url: str) -> None:
        import psycopg

        name = url.rsplit("/", 1)[1]
        with psycopg.connect(host="127.0.0.1", port=self.port, user="postgres",
                             dbname="postgres", autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def migrated_database(cluster: PgCluster, name: str) -> str:
    """A new database brought to the current schema by the Alembic migrations (as
    production does), for a whole test session; returns its URL."""
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


def truncate_all(database) -> None:
    """Empty every table and restart the id sequences: a clean slate between tests that
    share one migrated database, much cheaper than creating a database per test."""
    from sqlalchemy import inspect, text

    from loa.db import Base, import_all_models

    import_all_models()
    present = set(inspect(database.engine).get_table_names())
    names = [t.name for t in Base.metadata.sorted_tables if t.name in present]
    names += sorted(present - set(names) - {"alembic_version"})  # e.g. apscheduler_jobs
    if names:
        quoted = ", ".join(f'"{n}"' for n in names)
        with database.engine.begin() as conn:
            conn.execute(text(f"TRUNCATE {quoted} RESTART IDENTITY CASCADE"))


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


@pytest.fixture(scope="session")
def pg_cluster() -> Iterator[PgCluster]:
    cluster = start_cluster()
    if cluster is None:
        message = f"PostgreSQL is not installed: {INSTALL_HINT}"
        if _in_ci():
            pytest.fail(f"{message} — required in CI (CI=true)")
        pytest.skip(message)
    try:
        yield cluster
    finally:
        cluster.stop()
        shutil.rmtree(cluster.root, ignore_errors=True)


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
