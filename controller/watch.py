"""The controller's own watch: when it ran and was connected to the broker.

Only while both hold can a node's silence mean anything. The indicator therefore counts a
node's time only inside these spans (``indicator.coverage``); a controller that
was stopped, crashed, or cut off from the broker leaves a gap that is *unobserved* for every
node instead of an outage for each of them.

Written so a crash never over-claims: a span is opened at connection with ``end = start``,
its end is moved forward every ``extend_s`` while connected, and set exactly at a clean
disconnection or stop. After a crash (or a database outage) the last extension is the end.
Every write is a single-row statement; a failure is logged and retried at the next
extension, never raised into the MQTT loop.
"""

from __future__ import annotations

import logging
import threading

from sqlalchemy import update

from controller.models import ControllerWatch
from loa.db import Database

log = logging.getLogger("loa.watch")


class WatchRecorder:
    def __init__(self, db: Database, controller_id: str) -> None:
        self.db = db
        self.controller_id = controller_id[:128]
        self.span_id: int | None = None
        self._lock = threading.Lock()  # open/extend/close come from the loop and threads

    def open(self, now: int) -> None:
        """Connected at ``now``: start a new span (closing a stale one first)."""
        with self._lock:
            if self.span_id is not None:
                self._set_end(now, "broker_lost")
            try:
                with self.db.session() as s:
                    row = ControllerWatch(
                        controller_id=self.controller_id, start_ms=now, end_ms=now, end_cause=""
                    )
                    s.add(row)
                    s.flush()
                    self.span_id = row.id
            except Exception as exc:  # no record: the time stays unobserved, which is safe
                log.error("Không ghi được thời gian giám sát: %s", exc)
                self.span_id = None

    def extend(self, now: int) -> None:
        """Still connected at ``now``."""
        with self._lock:
            if self.span_id is not None:
                self._set_end(now, "", keep_open=True)

    def close(self, now: int, cause: str) -> None:
        """Disconnected or stopping at ``now``; idempotent."""
        with self._lock:
            if self.span_id is not None:
                self._set_end(now, cause)

    def _set_end(self, now: int, cause: str, keep_open: bool = False) -> None:
        span_id = self.span_id
        try:
            with self.db.session() as s:
                s.execute(
                    update(ControllerWatch)
                    .where(ControllerWatch.id == span_id, ControllerWatch.end_ms <= now)
                    .values(end_ms=now, end_cause=cause[:32])
                )
        except Exception as exc:
            log.error("Không cập nhật được thời gian giám sát: %s", exc)
        if not keep_open:
            self.span_id = None
