"""One SQLAlchemy engine and declarative base for all packages.

SQLite is the embedded default; PostgreSQL is reached by URL. SQLite gets WAL and a busy
timeout so the API can read while the ingest flushes a batch."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import BigInteger, Engine, Integer, create_engine, event
from sqlalchemy.orm import DeclarativeBase, Session, sessionmaker

# Epoch milliseconds need 64 bits on PostgreSQL; SQLite's INTEGER is already 64-bit and only
# an INTEGER PRIMARY KEY autoincrements there.
BigInt = BigInteger().with_variant(Integer(), "sqlite")


class Base(DeclarativeBase):
    type_annotation_map = {int: BigInt}


def make_engine(url: str) -> Engine:
    if url.startswith("sqlite"):
        engine = create_engine(url, connect_args={"check_same_thread": False, "timeout": 30})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record) -> None:  # pragma: no cover - trivial
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.close()

        return engine
    return create_engine(url, pool_pre_ping=True, pool_size=10, max_overflow=20)


def import_all_models() -> None:
    """Import every package's models so ``Base.metadata`` knows all tables."""
    import controller.models  # noqa: F401
    import controller.registry.models  # noqa: F401
    from loa.modules import import_optional

    for optional in ("broadcasts.models", "scheduler.models", "dashboard.models",
                     "controller.indicator.models", "controller.alarms"):
        import_optional(optional)
    import_optional("alerts.models")  # CAP emergency alerts (issue 19)


class Database:
    """Engine plus session factory; ``create_all`` is idempotent (migrations come with Alembic)."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.engine = make_engine(url)
        self.sessionmaker = sessionmaker(self.engine, expire_on_commit=False)

    def create_all(self) -> None:
        import_all_models()
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
