"""What Loa observed: the controller's watch and the continuity nodes proved across gaps.

Availability is a share of *observed* time (docs/indicator.md, section 1). The
watch (``controller.watch``) is the union of every controller's spans of running while
connected to the broker; outside it nobody could hear a node, so that time is neither
available nor unavailable. A node that proved it ran through a gap (``NodeContinuity``:
same boot, uptime reaching back) has that stretch added to its own observed time, and the
evidence says so. Both are read once per evaluation, in two small queries.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import ControllerWatch, NodeContinuity
from indicator.intervals import Interval, clip, union

_CHUNK = 900


def watched(session: Session, start_ms: int, end_ms: int) -> list[Interval]:
    """The window's observed time: union of all controllers' watch spans, clipped."""
    w = ControllerWatch
    rows = session.execute(
        select(w.start_ms, w.end_ms)
        .where(w.start_ms < end_ms, w.end_ms > start_ms)
        .order_by(w.start_ms)
    ).all()
    # One list per span, so overlapping spans of several controllers are merged (``union``
    # of a single list returns it as it is).
    return union(*([x] for x in clip([(a, b) for a, b in rows if b > a], start_ms, end_ms)))


def continuity(
    session: Session, start_ms: int, end_ms: int, node_ids: Sequence[str] | None = None
) -> dict[str, list[Interval]]:
    """node -> the gaps it proved it ran through, clipped to the window."""
    c = NodeContinuity
    stmt = select(c.node_id, c.from_ms, c.to_ms).where(c.from_ms < end_ms, c.to_ms > start_ms)
    rows: list = []
    if node_ids is None:
        rows = list(session.execute(stmt))
    else:
        ids = sorted(set(node_ids))
        for i in range(0, len(ids), _CHUNK):
            rows.extend(session.execute(stmt.where(c.node_id.in_(ids[i : i + _CHUNK]))))
    out: dict[str, list[Interval]] = defaultdict(list)
    for node, a, b in rows:
        out[node].append((a, b))
    return {n: union(clip(sorted(ivs), start_ms, end_ms)) for n, ivs in out.items()}


def continuity_rows(
    session: Session, start_ms: int, end_ms: int, node_ids: Sequence[str]
) -> list[NodeContinuity]:
    """The continuity records themselves, for the evidence a verdict shows."""
    c = NodeContinuity
    out: list[NodeContinuity] = []
    ids = sorted(set(node_ids))
    for i in range(0, len(ids), _CHUNK):
        out.extend(
            session.scalars(
                select(c).where(
                    c.node_id.in_(ids[i : i + _CHUNK]), c.from_ms < end_ms, c.to_ms > start_ms
                )
            )
        )
    return sorted(out, key=lambda r: (r.node_id, r.from_ms))
