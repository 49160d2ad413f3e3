"""Batched, retried writes of what the ingest observed.

One flush per interval writes every transition, the latest state of changed nodes, the
downsampled heartbeat samples, events, rejection counts and pending nodes in one
transaction. If the database refuses (locked, disk full), the batch is kept and merged into
the next one — transitions are never dropped; heartbeat samples are dropped first (counted)
when the backlog grows past its bound.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any, cast, overload

from sqlalchemy import CursorResult, func, insert, select, update
from sqlalchemy.orm import Session

from controller.fleet_state import NodeRuntime, Transition
from controller.models import (
    HeartbeatSample,
    NodeContinuity,
    NodeEventLog,
    NodeLive,
    NodeTransition,
    RejectedCount,
)
from loa.db import Database, core_table, upsert
from registry.models import PendingNode

log = logging.getLogger("loa.ingest")

MAX_BACKLOG_SAMPLES = 200_000


@dataclass
class PendingSighting:
    first_seen_ms: int
    last_seen_ms: int
    messages: int
    channel: str
    payload: str


@dataclass
class Batch:
    transitions: list[Transition] = field(default_factory=list)
    live: dict[str, dict[str, Any]] = field(default_factory=dict)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    rejected: dict[str, list[Any]] = field(default_factory=dict)  # reason -> [count, detail, ms]
    pending: dict[str, PendingSighting] = field(default_factory=dict)
    continuity: list[dict[str, Any]] = field(default_factory=list)  # NodeContinuity rows

    def empty(self) -> bool:
        return not (
            self.transitions
            or self.live
            or self.samples
            or self.events
            or self.rejected
            or self.pending
            or self.continuity
        )

    def merge_older(self, older: Batch) -> None:
        """Put a failed earlier batch in front of this one, keeping order and newest state."""
        self.transitions[:0] = older.transitions
        for node_id, row in older.live.items():
            self.live.setdefault(node_id, row)
        self.samples[:0] = older.samples
        self.events[:0] = older.events
        self.continuity[:0] = older.continuity
        for reason, (count, detail, ms) in older.rejected.items():
            cur = self.rejected.setdefault(reason, [0, detail, ms])
            cur[0] += count
        for node_id, p in older.pending.items():
            mine = self.pending.get(node_id)
            if mine is None:
                self.pending[node_id] = p
            else:
                mine.first_seen_ms = min(mine.first_seen_ms, p.first_seen_ms)
                mine.messages += p.messages


@overload
def storable(column: Any, text: str) -> str: ...
@overload
def storable(column: Any, text: str | None) -> str | None: ...
def storable(column: Any, text: str | None) -> str | None:
    """Text from a node as ``column`` can hold it on every backend. PostgreSQL refuses a NUL
    character and a string longer than the column, both of which SQLite keeps; one refused
    value would fail the whole batch, and every retry of it, so it is fixed here instead."""
    if text is None:
        return None
    return text.replace("\x00", "\ufffd")[: _length(column)]


_LENGTHS: dict[tuple[type, str], int] = {}


def _length(column: Any) -> int:
    # ``column.type`` goes through the ORM attribute's proxy, which costs more than the rest
    # of a live row: look it up once per column.
    key = (column.class_, column.key)
    length = _LENGTHS.get(key)
    if length is None:
        length = _LENGTHS[key] = column.type.length
    return length


def live_row(rt: NodeRuntime) -> dict[str, Any]:
    return {
        "node_id": rt.node_id,
        "state": str(rt.state),
        "available": rt.available,
        "since_ms": rt.since_ms,
        "reasons": ",".join(rt.reasons)[:200],
        "status_online": bool(rt.status_online),
        "last_heartbeat_ms": rt.last_heartbeat_ms,
        "boot_id": storable(NodeLive.boot_id, rt.boot_id),
        "fw": storable(NodeLive.fw, rt.fw),
        "heartbeat": rt.heartbeat.model_dump(mode="json") if rt.heartbeat else None,
        "clock_skew_ms": rt.clock_skew_ms,
    }


class TelemetryWriter:
    def __init__(self, db: Database) -> None:
        self.db = db
        self.flushes = 0
        self.flush_errors = 0
        self.dropped_samples = 0
        self.last_error = ""
        # Cap on pending_node rows (Settings.max_pending_nodes) and what it turned away.
        self.max_pending = 1000
        self.dropped_pending = 0

    def write(self, batch: Batch) -> None:
        """Write one batch atomically; raises on failure (the caller keeps the batch)."""
        with self.db.session() as s:
            if batch.transitions:
                # Core inserts on the tables: the ORM's bulk path costs several times more per
                # row, and these rows have no ORM behaviour to run.
                s.execute(
                    insert(core_table(NodeTransition)),
                    [
                        {
                            "node_id": t.node_id,
                            "at_ms": t.at_ms,
                            "from_state": t.from_state,
                            "to_state": t.to_state,
                            "available": t.available,
                            "cause": t.cause[:64],
                        }
                        for t in batch.transitions
                    ],
                )
            if batch.live:
                upsert(s, NodeLive, list(batch.live.values()), ["node_id"])
            if batch.samples:
                s.execute(insert(core_table(HeartbeatSample)), batch.samples)
            if batch.events:
                s.execute(insert(core_table(NodeEventLog)), batch.events)
            for reason, (count, detail, ms) in batch.rejected.items():
                self._add_rejected(s, reason, count, detail, ms)
            if batch.pending:
                room = self.max_pending - (
                    s.scalar(select(func.count()).select_from(PendingNode)) or 0
                )
                for node_id, p in batch.pending.items():
                    if s.get(PendingNode, node_id) is None:
                        if room <= 0:
                            self.dropped_pending += 1
                            continue
                        room -= 1
                    self._upsert_pending(s, node_id, p)
            if batch.continuity:
                s.execute(insert(core_table(NodeContinuity)), batch.continuity)
        self.flushes += 1

    @staticmethod
    def _add_rejected(s: Session, reason: str, count: int, detail: str, ms: int) -> None:
        detail = storable(RejectedCount.last_detail, detail)
        res = cast(
            CursorResult[Any],
            s.execute(
                update(RejectedCount)
                .where(RejectedCount.reason == reason)
                .values(count=RejectedCount.count + count, last_detail=detail, last_ms=ms)
            ),
        )
        if res.rowcount == 0:
            s.add(RejectedCount(reason=reason, count=count, last_detail=detail, last_ms=ms))
            s.flush()

    @staticmethod
    def _upsert_pending(s: Session, node_id: str, p: PendingSighting) -> None:
        row = s.get(PendingNode, node_id)
        payload = storable(PendingNode.last_payload, p.payload)
        if row is None:
            s.add(
                PendingNode(
                    id=node_id,
                    first_seen_ms=p.first_seen_ms,
                    last_seen_ms=p.last_seen_ms,
                    messages=p.messages,
                    last_channel=p.channel,
                    last_payload=payload,
                )
            )
        else:
            row.last_seen_ms = max(row.last_seen_ms, p.last_seen_ms)
            row.messages += p.messages
            row.last_channel = p.channel
            row.last_payload = payload

    def load_live(self, node_ids: Collection[str] | None = None) -> dict[str, NodeLive]:
        """Stored live rows, of every node or of the ones asked for."""
        with self.db.session() as s:
            if node_ids is None:
                return {r.node_id: r for r in s.scalars(select(NodeLive))}
            ids, out = list(node_ids), dict[str, NodeLive]()
            for i in range(0, len(ids), 900):  # SQLite's bound-parameter limit
                out.update(
                    (r.node_id, r)
                    for r in s.scalars(
                        select(NodeLive).where(NodeLive.node_id.in_(ids[i : i + 900]))
                    )
                )
            return out

    def load_states(self) -> list[tuple[str, str, bool, int | None]]:
        """(node, state, available, clock skew) of every node: cheap, no heartbeat documents."""
        with self.db.session() as s:
            return [
                (node, state, available, skew)
                for node, state, available, skew in s.execute(
                    select(
                        NodeLive.node_id, NodeLive.state, NodeLive.available, NodeLive.clock_skew_ms
                    )
                )
            ]
