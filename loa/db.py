"""One SQLAlchemy engine and declarative base for all packages.

SQLite is the embedded default; PostgreSQL is reached by URL. SQLite gets WAL and a busy
timeout so the API can read while the ingest flushes a batch."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import BigInteger, Engine, Integer, Table, create_engine, event, make_url
from sqlalchemy.engine.interfaces import DBAPIConnection
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

from loa.settings import Settings

# Epoch milliseconds need 64 bits on PostgreSQL; SQLite's INTEGER is already 64-bit and only
# an INTEGER PRIMARY KEY autoincrements there.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {int: BigInt}


def core_table(model: type[Base]) -> Table:
    """The Core ``Table`` of a mapped class, for bulk ``insert()`` without the ORM's per-row
    work. ``__table__`` is typed as any FromClause; every Loa model maps one Table."""
    table = model.__table__
    assert isinstance(table, Table)
    return table


def upsert(s: Session, model: type[Base], rows: list[dict[str, Any]], key: list[str]) -> None:
    """Insert ``rows``, or update the columns they carry where a row with the same ``key``
    (a unique index) exists, in one statement (``INSERT ... ON CONFLICT DO UPDATE``, which
    SQLite and PostgreSQL both have). One statement, not look-up-then-insert: two writers
    of the same key at the same moment both succeed, the later one's values staying."""
    dialect = s.get_bind().dialect.name
    if dialect == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as dialect_insert
    elif dialect == "postgresql":
        # Another Insert class with the same on_conflict_do_update(index_elements, set_).
        from sqlalchemy.dialects.postgresql import (  # type: ignore[assignment]
            insert as dialect_insert,
        )
    else:  # pragma: no cover - other databases are not supported targets
        for row in rows:
            s.merge(model(**row))
        return
    stmt = dialect_insert(model)
    cols = {c: getattr(stmt.excluded, c) for c in rows[0] if c not in key}
    s.execute(stmt.on_conflict_do_update(index_elements=key, set_=cols), rows)


def private_sqlite_file(url: str) -> None:
    """The SQLite file holds password hashes, session digests and the audit log: it is
    created 0600 (SQLite gives its -wal and -shm files the database file's mode), and an
    existing file left readable by others (0644, as Loa used to create it) is tightened."""
    path = make_url(url).database
    if not path or path == ":memory:" or path.startswith("file:"):
        return
    db_file = Path(path)
    if not db_file.exists() and db_file.parent.is_dir():
        os.close(os.open(db_file, os.O_CREAT | os.O_WRONLY, 0o600))
    for f in (
        db_file,
        db_file.with_name(db_file.name + "-wal"),
        db_file.with_name(db_file.name + "-shm"),
    ):
        try:
            if f.stat().st_mode & 0o077 and f.stat().st_uid == os.getuid():
                f.chmod(0o600)
        except FileNotFoundError:
            pass


def make_engine(url: str, *, pool_size: int | None = None, max_overflow: int = 10) -> Engine:
    """``pool_size`` None keeps each backend's default; callers that bound their concurrent
    database users (the API, see ``dashboard.deps``) size the pool above that bound."""
    sized = {} if pool_size is None else {"pool_size": pool_size, "max_overflow": max_overflow}
    if url.startswith("sqlite"):
        private_sqlite_file(url)
        if ":memory:" in url or url in ("sqlite://", "sqlite+pysqlite://"):
            sized = {}  # one shared in-memory connection (SingletonThreadPool): no sizes
        engine = create_engine(
            url, connect_args={"check_same_thread": False, "timeout": 30}, **sized
        )

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(  # pragma: no cover - trivial
            dbapi_conn: DBAPIConnection, _record: object
        ) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(
        url, pool_pre_ping=True, **(sized or {"pool_size": 10, "max_overflow": 20})
    )


class Database:
    """Engine plus session factory; ``create_all`` is idempotent (migrations come with Alembic)."""

    def __init__(self, url: str, *, pool_size: int | None = None, max_overflow: int = 10) -> None:
        self.url = url
        self.engine = make_engine(url, pool_size=pool_size, max_overflow=max_overflow)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        """Create the tables of every model imported so far (``system.schema`` imports them
        all; the floor layer cannot know the packages above it)."""
        Base.metadata.create_all(self.engine)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A unit of work: commits on success, rolls back on any error (nothing half-written)."""
        s = self.sessionmaker()
        try:
            yield s
            s.commit()
        except BaseException:
            s.rollback()
            raise
        finally:
            s.close()

    def dispose(self) -> None:
        self.engine.dispose()


def open_database(settings: Settings) -> Database:
    """The process's database, its tables created if missing."""
    db = Database(settings.resolved_database_url())
    db.create_all()
    return db
