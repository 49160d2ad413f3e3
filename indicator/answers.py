"""Verdict answers reused while nothing they depend on changed (the API's fast path).

Why not daily roll-ups for the API: the answer's cost for a province-sized fleet is per
cluster, not per day of history (bench/api.py: 3,000 clusters with one transition each
still cost ~50 ms to judge and ~45 ms to write as 0.8 MB of JSON), so summing days would not
make it faster. What makes it fast is not judging again what was just judged.

**Rule.** An answer (the encoded JSON of one evaluation at ``evaluated_ms``) is reused for
the same question (period text, scope, the asking user's communes) when

1. the *data stamp* is unchanged: the highest row ids of the tables whose new rows can
   change any answer (airings and their targets, attestations and their scans,
   thresholds, criteria, letterhead) and a checksum of the register's validity columns
   (placements, memberships, communes and villages retired or renamed);
2. no *dated* row written since is dated at or before ``evaluated_ms``: a transition
   (``at_ms``), a watch span (``start_ms``) or a continuity record (``from_ms``) with an id
   above the one seen when the answer was judged. The telemetry of a live fleet arrives
   every second, but it is dated *now*, after the answer's ``evaluated_ms``, and cannot
   change a verdict judged at ``evaluated_ms`` (the evaluation looks at nothing later):
   such rows do not throw the answer away. A late transition for a day long past is
   dated before it and does; and
3. it is at most ``ttl_ms`` old (``LOA_INDICATOR_ANSWER_TTL_S``, default 30 s). Within that
   time the only thing that can differ from a fresh evaluation is what time passing or an
   in-place update does without a new row: an ongoing period's end moving forward, a
   watch span's end extended, a broadcast target's phase updated, a row whose PostgreSQL
   transaction committed after one with a higher id. The answer states its
   ``evaluated_ms``; 30 s is a third of the 90 s a silent node needs to be declared
   offline, so no verdict is later than the telemetry itself.

Why this and not only roll-ups (bench/api.py, README): judging 3,000 clusters afresh
costs ~150-400 ms on the bench machine whatever the history's length (per cluster, not per
day), so the roll-ups make long periods cheap but cannot bring one answer under 50 ms;
not judging again what cannot have changed does. Before rule 2, every transition of the
live fleet (one a second in bench/api.py) made the next question be judged afresh.

Verdicts are therefore exactly those of the raw rows at ``evaluated_ms``; a test checks
reuse, invalidation by a late row and by a change of threshold, and the time bound.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Hashable

from sqlalchemy import text
from sqlalchemy.orm import Session

# Max ids (insert-only or append-mostly tables) and checksums of columns updated in place.
_STAMP_SQL = text("""SELECT
 (SELECT MAX(id) FROM airing),
 (SELECT MAX(id) FROM airing_target), (SELECT MAX(id) FROM manual_attestation),
 (SELECT MAX(id) FROM attestation_scan), (SELECT MAX(id) FROM indicator_settings),
 (SELECT MAX(id) FROM report_settings),
 (SELECT COUNT(*) || ':' || COALESCE(MAX(changed_ms), 0) FROM indicator_criteria),
 (SELECT COUNT(*) || ':' || COALESCE(SUM(COALESCE(valid_to_ms, 0) % 1000003), 0)
    || ':' || COALESCE(MAX(id), 0) FROM node_placement),
 (SELECT COUNT(*) || ':' || COALESCE(SUM(COALESCE(valid_to_ms, 0) % 1000003), 0)
    || ':' || COALESCE(MAX(id), 0) FROM village_membership),
 (SELECT COUNT(*) || ':' || COALESCE(SUM(COALESCE(retired_ms, 0) % 1000003), 0)
    || ':' || COALESCE(SUM(COALESCE(merged_into_id, 0)), 0) FROM commune),
 (SELECT COUNT(*) || ':' || COALESCE(SUM(COALESCE(retired_ms, 0) % 1000003), 0)
    FROM village),
 (SELECT COUNT(*) FROM name_history),
 (SELECT COALESCE(MAX(id), 0) FROM node_transition),
 (SELECT COALESCE(MAX(id), 0) FROM controller_watch),
 (SELECT COALESCE(MAX(id), 0) FROM node_continuity)""")
_DATED = 3  # the last columns: max ids of the dated tables (rule 2)

# Rule 2: a dated row newer than the answer's ids and dated at or before its evaluation.
# ``+ 0`` keeps the planners off the time indexes: the id range (the few rows written
# since) is the cheap walk, a time range from the beginning of history is not.
_LATE_SQL = text("""SELECT
 EXISTS (SELECT 1 FROM node_transition WHERE id > :t AND at_ms + 0 <= :at),
 EXISTS (SELECT 1 FROM controller_watch WHERE id > :w AND start_ms + 0 <= :at),
 EXISTS (SELECT 1 FROM node_continuity WHERE id > :c AND from_ms + 0 <= :at)""")


def data_stamp(session: Session) -> tuple:
    """What the stored rows a verdict reads look like, in one small query (~1 ms)."""
    return tuple(session.execute(_STAMP_SQL).one())


def _late_rows(session: Session, stamp: tuple, at_ms: int) -> bool:
    """Whether a dated row written after ``stamp`` was taken is dated at or before
    ``at_ms`` (so it may change an answer judged at ``at_ms``)."""
    t, w, c = stamp[-_DATED:]
    return any(session.execute(_LATE_SQL, {"t": t, "w": w, "c": c, "at": at_ms}).one())


class AnswerCache:
    """Encoded answers by question, each with the stamp and time it was judged."""

    def __init__(self, ttl_ms: int = 30_000, max_entries: int = 64) -> None:
        self.ttl_ms = ttl_ms
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, tuple[tuple, int, bytes]] = OrderedDict()
        self._lock = threading.Lock()
        self._computing: dict[Hashable, threading.Lock] = {}
        self.hits = self.misses = 0

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def _fresh(self, session: Session, key: Hashable, stamp: tuple, at_ms: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
        if (
            entry is None
            or entry[0][:-_DATED] != stamp[:-_DATED]
            or at_ms - entry[1] > self.ttl_ms
            or at_ms < entry[1]
        ):
            return None
        if entry[0][-_DATED:] != stamp[-_DATED:] and _late_rows(session, entry[0], entry[1]):
            return None
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
        return entry[2]

    def answer(
        self, session: Session, key: Hashable, at_ms: int, judge: Callable[[int], bytes]
    ) -> bytes:
        """The cached answer to ``key`` if still valid, else ``judge(at_ms)`` (stored).
        Two requests missing at once judge once: the second waits for the first."""
        if self.ttl_ms <= 0:
            return judge(at_ms)
        stamp = data_stamp(session)
        found = self._fresh(session, key, stamp, at_ms)
        if found is not None:
            self.hits += 1
            return found
        with self._lock:
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:
            found = self._fresh(session, key, stamp, _now_ms())
            if found is not None:
                self.hits += 1
                return found
            self.misses += 1
            body = judge(at_ms)
            with self._lock:
                self._entries[key] = (stamp, at_ms, body)
                self._entries.move_to_end(key)
                while len(self._entries) > self.max_entries:
                    self._entries.popitem(last=False)
            return body


def _now_ms() -> int:
    return int(time.time() * 1000)
