"""Verdict answers reused while nothing they depend on changed (the API's fast path).

Why not daily roll-ups for the API: the answer's cost for a province-sized fleet is per
cluster, not per day of history (bench/api.py: 3,000 clusters with one transition each
still cost ~50 ms to judge and ~45 ms to write as 0.8 MB of JSON), so summing days would not
make it faster. What makes it fast is not judging again what was just judged.

**Rule.** An answer (the encoded JSON of one evaluation) is reused for the same question
(period text, scope, the asking user's communes) when

1. the *data stamp* is unchanged: the highest row ids of every table a verdict reads
   (transitions, airings and their targets, watch spans, continuity, attestations and their
   scans, thresholds, criteria, letterhead) and a checksum of the register's validity
   columns (placements, memberships, communes and villages retired or renamed). Any row
   written by any process, a late transition for a day long past included, changes the
   stamp, so the next question is judged again from the raw rows; and
2. it is at most ``ttl_ms`` old (``LOA_INDICATOR_ANSWER_TTL_S``, default 30 s). Within that
   time the only thing that can differ from a fresh evaluation is what time passing or an
   in-place update does without a new row: an ongoing period's end moving forward, a
   watch span's end extended, a broadcast target's phase updated. The answer states its
   ``evaluated_ms``; 30 s is a third of the 90 s a silent node needs to be declared
   offline, so no verdict is later than the telemetry itself.

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
 (SELECT MAX(id) FROM node_transition), (SELECT MAX(id) FROM airing),
 (SELECT MAX(id) FROM airing_target), (SELECT MAX(id) FROM controller_watch),
 (SELECT MAX(id) FROM node_continuity), (SELECT MAX(id) FROM manual_attestation),
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
 (SELECT COUNT(*) FROM name_history)""")


def data_stamp(session: Session) -> tuple:
    """What the stored rows a verdict reads look like, in one small query (~1 ms)."""
    return tuple(session.execute(_STAMP_SQL).one())


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

    def _fresh(self, key: Hashable, stamp: tuple, at_ms: int) -> bytes | None:
        with self._lock:
            entry = self._entries.get(key)
            if (
                entry is None
                or entry[0] != stamp
                or at_ms - entry[1] > self.ttl_ms
                or at_ms < entry[1]
            ):
                return None
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
        found = self._fresh(key, stamp, at_ms)
        if found is not None:
            self.hits += 1
            return found
        with self._lock:
            gate = self._computing.setdefault(key, threading.Lock())
        with gate:
            found = self._fresh(key, stamp, _now_ms())
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
