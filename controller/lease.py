"""A time-limited lease in the database: exactly one controller holds a role at a time.

Why a lease row: every controller already shares the database, the conditional UPDATE below
is atomic on SQLite (one writer) and PostgreSQL (row lock, condition re-checked), and a dead
holder needs no cleanup: its lease simply runs out. The holder renews well before expiry and
steps down by itself when it cannot renew in time, so two holders would need clocks further
apart than the safety margin (keep controllers on NTP). Even then the scheduler's own fence,
the unique (broadcast, slot) airing row, keeps a slot from being sent twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import CursorResult, case, update
from sqlalchemy.exc import IntegrityError

from controller.models import ControllerLease
from loa.db import Database


@dataclass(frozen=True, slots=True)
class LeaseState:
    held: bool
    holder: str | None
    term: int
    expires_ms: int


class Lease:
    def __init__(self, db: Database, name: str, holder: str, ttl_ms: int) -> None:
        self.db = db
        self.name = name
        self.holder = holder
        self.ttl_ms = ttl_ms

    def try_hold(self, now_ms: int) -> LeaseState:
        """Take the lease if it is free or expired, renew it if it is ours."""
        mine = ControllerLease.holder == self.holder
        with self.db.session() as s:
            res = cast(
                CursorResult[Any],
                s.execute(
                    update(ControllerLease)
                    .where(
                        ControllerLease.name == self.name,
                        mine | (ControllerLease.expires_ms < now_ms),
                    )
                    .values(
                        holder=self.holder,
                        expires_ms=now_ms + self.ttl_ms,
                        term=case((mine, ControllerLease.term), else_=ControllerLease.term + 1),
                        acquired_ms=case((mine, ControllerLease.acquired_ms), else_=now_ms),
                    )
                    .execution_options(synchronize_session=False)
                ),
            )
            missing = res.rowcount == 0 and s.get(ControllerLease, self.name) is None
        if missing:
            try:
                with self.db.session() as s:
                    s.add(
                        ControllerLease(
                            name=self.name,
                            holder=self.holder,
                            expires_ms=now_ms + self.ttl_ms,
                            acquired_ms=now_ms,
                            term=1,
                        )
                    )
            except IntegrityError:
                pass  # another controller inserted it first
        return self.read()

    def read(self) -> LeaseState:
        with self.db.session() as s:
            row = s.get(ControllerLease, self.name)
            if row is None:
                return LeaseState(False, None, 0, 0)
            return LeaseState(row.holder == self.holder, row.holder, row.term, row.expires_ms)

    def release(self) -> None:
        """Give the role up at once (clean stop): a standby takes it at its next try."""
        with self.db.session() as s:
            s.execute(
                update(ControllerLease)
                .where(ControllerLease.name == self.name, ControllerLease.holder == self.holder)
                .values(expires_ms=0)
                .execution_options(synchronize_session=False)
            )
