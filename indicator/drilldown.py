"""The rows behind one cluster's part of a verdict: a timeline an inspector can read.

A village verdict (``evaluate``) says "khả dụng 93 %, phát 58/60 buổi". The drill-down
shows what made it: each state transition of the cluster in the period (and the state it
started in), the time nobody watched (controller down or cut off from the broker: neither
available nor unavailable), the gaps the cluster itself proved it ran through (same
boot_id), where it was placed, and every airing aimed at it with whether it counted as
played. The figures are computed by the same functions as the verdict, so the page and
the report cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import NodeTransition
from indicator import intervals as iv
from indicator.availability import available_intervals
from indicator.coverage import continuity, watched
from indicator.errors import NotFoundError
from indicator.evaluate import PLAYED_IF_STARTED, PLAYED_PHASES, SETTLE_MS
from registry import history
from registry.models import Node
from scheduler.models import Airing, AiringTarget, Broadcast

MAX_ROWS = 2000  # a quarter of a flaky 3G cluster; more is summarised, not listed


@dataclass
class Segment:
    """A stretch of the timeline: the state the cluster was in and whether it was watched."""

    start_ms: int
    end_ms: int
    state: str
    available: bool
    observed: bool
    proven: bool = False  # unobserved, but the cluster proved it ran (continuity)


@dataclass
class AiredRow:
    airing_id: int
    slot_ms: int
    duration_ms: int
    title: str
    phase: str
    started_ms: int | None
    status: str
    counted: str  # "played" | "missed" | "excluded" (cancelled, or not over yet)


@dataclass
class ClusterTimeline:
    node_id: str
    label: str
    start_ms: int
    end_ms: int
    before: str  # state at the window's start
    transitions: list[dict]
    segments: list[Segment]
    unobserved: list[iv.Interval]
    proven: list[iv.Interval]
    placements: list[dict]
    airings: list[AiredRow]
    observed_ms: int
    available_ms: int
    truncated: bool = False
    counts: dict[str, int] = field(default_factory=dict)

    @property
    def availability(self) -> float | None:
        return self.available_ms / self.observed_ms if self.observed_ms else None


def _played(phase: str, started_ms: int | None) -> bool:
    return phase in PLAYED_PHASES or (phase in PLAYED_IF_STARTED and started_ms is not None)


def cluster_timeline(
    session: Session, node_id: str, start_ms: int, end_ms: int, evaluated_ms: int
) -> ClusterTimeline:
    node = session.get(Node, node_id)
    if node is None:
        raise NotFoundError(f"Không tìm thấy cụm loa '{node_id}'.")
    t = NodeTransition
    before_row = session.execute(
        select(t.to_state)
        .where(t.node_id == node_id, t.at_ms < start_ms)
        .order_by(t.at_ms.desc(), t.id.desc())
        .limit(1)
    ).first()
    before = before_row[0] if before_row else "unknown"
    rows = session.execute(
        select(t.at_ms, t.from_state, t.to_state, t.available, t.cause)
        .where(t.node_id == node_id, t.at_ms >= start_ms, t.at_ms < end_ms)
        .order_by(t.at_ms, t.id)
        .limit(MAX_ROWS + 1)
    ).all()
    truncated = len(rows) > MAX_ROWS
    rows = rows[:MAX_ROWS]
    transitions = [
        {"at_ms": a, "from_state": f, "to_state": to, "available": bool(av), "cause": c}
        for a, f, to, av, c in rows
    ]
    seen = watched(session, start_ms, end_ms)
    proven = continuity(session, start_ms, end_ms, [node_id]).get(node_id, [])
    unobserved = iv.intersect([(start_ms, end_ms)], iv.complement(seen, start_ms, end_ms))
    observed = iv.union(seen, proven)
    up = iv.intersect(
        available_intervals(session, start_ms, end_ms, [node_id]).get(node_id, []), observed
    )
    # State bands, cut at every watch boundary so each band is wholly observed or not.
    cuts = sorted({start_ms, end_ms, *(x for a, b in unobserved for x in (a, b))})
    changes = [(tr["at_ms"], tr["to_state"], tr["available"]) for tr in transitions]
    segments: list[Segment] = []
    state, available = before, False
    if before_row is not None:
        prev = session.execute(
            select(t.available)
            .where(t.node_id == node_id, t.at_ms < start_ms)
            .order_by(t.at_ms.desc(), t.id.desc())
            .limit(1)
        ).scalar()
        available = bool(prev)
    points = sorted(set(cuts) | {a for a, _s, _v in changes if start_ms <= a < end_ms})
    ci = 0
    for a, b in zip(points, points[1:], strict=False):
        while ci < len(changes) and changes[ci][0] <= a:
            _at, state, available = changes[ci]
            ci += 1
        in_gap = any(x <= a < y for x, y in unobserved)
        segments.append(
            Segment(
                a, b, state, available, not in_gap, in_gap and any(x <= a < y for x, y in proven)
            )
        )
    placements = [
        {
            "village_id": s.owner_id,
            "from_ms": s.start_ms,
            "to_ms": s.end_ms,
            "village": history.name_at(session, "village", s.owner_id, s.end_ms - 1)
            or str(s.owner_id),
        }
        for s in history.placements(session, start_ms, end_ms)
        if s.member_id == node_id
    ]
    a, tg, b = Airing, AiringTarget, Broadcast
    aired = session.execute(
        select(a.id, a.slot_ms, a.duration_ms, b.title, tg.phase, tg.started_at_ms, a.status)
        .join(tg, tg.airing_id == a.id)
        .join(b, b.id == a.broadcast_id)
        .where(tg.node_id == node_id, a.slot_ms >= start_ms, a.slot_ms < end_ms)
        .order_by(a.slot_ms, a.id)
        .limit(MAX_ROWS + 1)
    ).all()
    truncated = truncated or len(aired) > MAX_ROWS
    airings = []
    for aid, slot, duration, title, phase, started, status in aired[:MAX_ROWS]:
        played = _played(phase, started)
        if status == "cancelled" or (
            not played and slot + (duration or 0) + SETTLE_MS > evaluated_ms
        ):
            counted = "excluded"
        else:
            counted = "played" if played else "missed"
        airings.append(AiredRow(aid, slot, duration or 0, title, phase, started, status, counted))
    counts = {
        k: sum(1 for r in airings if r.counted == k) for k in ("played", "missed", "excluded")
    }
    return ClusterTimeline(
        node_id,
        node.label or "",
        start_ms,
        end_ms,
        before,
        transitions,
        segments,
        unobserved,
        iv.intersect(proven, unobserved),
        placements,
        airings,
        iv.total(observed),
        iv.total(up),
        truncated,
        counts,
    )
