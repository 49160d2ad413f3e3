"""loa.db is private to the service account (issue 17, finding 12): it holds password
hashes, session digests and the audit log, and was created 0644."""

from __future__ import annotations

import os
import stat

from loa.db import open_database
from loa.settings import Settings


def _mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def test_the_sqlite_database_and_its_wal_are_created_0600(tmp_path):
    old = os.umask(0o022)  # the usual umask, which made 0644 files
    try:
        settings = Settings(data_dir=tmp_path / "data")
        db = open_database(settings)
        with db.session() as s:
            s.connection().exec_driver_sql("CREATE TABLE probe (x INTEGER)")
        path = settings.data_dir / "loa.db"
        assert _mode(path) == 0o600
        assert _mode(f"{path}-wal") == 0o600  # WAL pages hold the same data
        db.dispose()
        # A database made 0644 by an older version is tightened when opened.
        path.chmod(0o644)
        open_database(settings).dispose()
        assert _mode(path) == 0o600
    finally:
        os.umask(old)
