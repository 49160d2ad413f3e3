"""The agent's durable memory, one SQLite file in ``state_dir`` (stdlib sqlite3, WAL,
synchronous=FULL so a committed row survives power loss).

* ``outbox``: every event until the broker acknowledged it (QoS 1 PUBACK). A 4G outage or
  a reboot loses none; heartbeats never enter it (a stale heartbeat is worse than none).
* ``seen``: command ids already handled, so a command redelivered after a reconnect or a
  crash is acknowledged once only (protocol: repeats are ignored).
* ``jobs``: accepted plays and how far they got, so after ``kill -9`` a download resumes
  and a bulletin that already started is not played a second time."""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

SEEN_KEEP = 5000

_SCHEMA = """
CREATE TABLE IF NOT EXISTS outbox (id INTEGER PRIMARY KEY AUTOINCREMENT, payload BLOB NOT NULL);
CREATE TABLE IF NOT EXISTS seen (cmd_id TEXT PRIMARY KEY, at REAL NOT NULL);
CREATE TABLE IF NOT EXISTS settings (key TEXT PRIMARY KEY, value INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS jobs (broadcast_id TEXT PRIMARY KEY, cmd TEXT NOT NULL,
                                 phase TEXT NOT NULL, at REAL NOT NULL);
"""


class Store:
    def __init__(self, state_dir: str | Path) -> None:
        path = Path(state_dir)
        path.mkdir(parents=True, exist_ok=True)
        self.path = path / "node.sqlite3"
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
        self._lock = threading.Lock()
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(_SCHEMA)

    def close(self) -> None:
        self._db.close()

    # ------------------------------------------------------------------ outbox

    def push(self, payload: bytes) -> int:
        with self._lock:
            return (
                self._db.execute("INSERT INTO outbox(payload) VALUES (?)", (payload,)).lastrowid
                or 0
            )

    def pending(self, limit: int = 100) -> list[tuple[int, bytes]]:
        with self._lock:
            return list(
                self._db.execute("SELECT id, payload FROM outbox ORDER BY id LIMIT ?", (limit,))
            )

    def delivered(self, row_id: int) -> None:
        with self._lock:
            self._db.execute("DELETE FROM outbox WHERE id = ?", (row_id,))

    def outbox_size(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    # ------------------------------------------------------------------ commands

    def first_sight(self, cmd_id: str) -> bool:
        """Record ``cmd_id``; False when it was seen before."""
        with self._lock:
            cur = self._db.execute(
                "INSERT OR IGNORE INTO seen(cmd_id, at) VALUES (?, ?)", (cmd_id, time.time())
            )
            if cur.rowcount and int(cur.lastrowid or 0) % 500 == 0:
                self._db.execute(
                    "DELETE FROM seen WHERE cmd_id NOT IN (SELECT cmd_id FROM "
                    "seen ORDER BY at DESC LIMIT ?)",
                    (SEEN_KEEP,),
                )
            return bool(cur.rowcount)

    # ------------------------------------------------------------------ settings

    def set_setting(self, key: str, value: int) -> None:
        """What a ``config`` command changed, so it outlives a reboot."""
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO settings VALUES (?, ?)", (key, value))

    def settings(self) -> dict[str, int]:
        with self._lock:
            return dict(self._db.execute("SELECT key, value FROM settings"))

    # ------------------------------------------------------------------ jobs

    def job_phase(self, broadcast_id: str) -> str | None:
        with self._lock:
            row = self._db.execute(
                "SELECT phase FROM jobs WHERE broadcast_id = ?", (broadcast_id,)
            ).fetchone()
        return row[0] if row else None

    def put_job(self, broadcast_id: str, cmd: dict[str, Any], phase: str) -> None:
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                (broadcast_id, json.dumps(cmd), phase, time.time()),
            )

    def set_phase(self, broadcast_id: str, phase: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE jobs SET phase = ?, at = ? WHERE broadcast_id = ?",
                (phase, time.time(), broadcast_id),
            )

    def unfinished_jobs(self) -> list[tuple[str, dict[str, Any], str]]:
        with self._lock:
            rows = list(
                self._db.execute(
                    "SELECT broadcast_id, cmd, phase FROM jobs WHERE phase IN "
                    "('accepted', 'fetched', 'started') ORDER BY at"
                )
            )
            self._db.execute("DELETE FROM jobs WHERE at < ?", (time.time() - 7 * 86400,))
        return [(b, json.loads(c), p) for b, c, p in rows]
