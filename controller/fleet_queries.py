"""Read side of fleet health, from the database, so any process (API, reports) can answer
without the controller in memory."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import Select, func, or_, select
from sqlalchemy.orm import Session

from controller.models import NodeLive, NodeTransition, RejectedCount
from loa.protocol import NodeState
from loa.text import fold
from registry.models import Commune, Node, PendingNode, Village

if TYPE_CHECKING:  # the process module reads fleet_queries' neighbours at import
    from controller.process import ControllerService


class NodeNotFound(LookupError):
    def __init__(self, node_id: str) -> None:
        super().__init__(f"Không tìm thấy cụm loa '{node_id}'")
        self.node_id = node_id


def state_counts(s: Session, *, commune_id: int | None = None) -> dict[str, int]:
    """Counts by state over registered, non-retired nodes; never heard = unknown."""
    state = func.coalesce(NodeLive.state, NodeState.UNKNOWN.value)
    q = (
        select(state, func.count())
        .select_from(Node)
        .outerjoin(NodeLive, NodeLive.node_id == Node.id)
        .where(Node.retired_ms.is_(None))
        .group_by(state)
    )
    if commune_id is not None:
        q = q.join(Village, Village.id == Node.village_id).where(Village.commune_id == commune_id)
    counts = {st.value: 0 for st in NodeState}
    for st, n in s.execute(q):
        counts[st] = counts.get(st, 0) + n
    counts["total"] = sum(counts[st.value] for st in NodeState)
    return counts


def rejected_counts(s: Session) -> dict[str, int]:
    return {r.reason: r.count for r in s.scalars(select(RejectedCount))}


def pending_count(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(PendingNode)) or 0


@dataclass
class NodeFilter:
    state: str | None = None
    commune_id: int | None = None
    village_id: int | None = None
    q: str | None = None
    # None = no restriction (province scope); otherwise only nodes in these communes.
    commune_scope: frozenset[int] | None = None


# A node with its live state and place; the outer joins leave all but the node optional.
NodeRow = tuple[Node, NodeLive | None, Village | None, Commune | None]


def _node_query(f: NodeFilter) -> Select[Node, NodeLive, Village, Commune]:
    state = func.coalesce(NodeLive.state, NodeState.UNKNOWN.value)
    q = (
        select(Node, NodeLive, Village, Commune)
        .outerjoin(NodeLive, NodeLive.node_id == Node.id)
        .outerjoin(Village, Village.id == Node.village_id)
        .outerjoin(Commune, Commune.id == Village.commune_id)
        .where(Node.retired_ms.is_(None))
    )
    if f.state:
        q = q.where(state == f.state)
    if f.commune_id is not None:
        q = q.where(Village.commune_id == f.commune_id)
    if f.village_id is not None:
        q = q.where(Node.village_id == f.village_id)
    if f.commune_scope is not None:
        q = q.where(Village.commune_id.in_(f.commune_scope))
    if f.q:
        key = f"%{fold(f.q)}%"
        q = q.where(
            or_(
                func.lower(Node.id).like(key),
                Village.name_folded.like(key),
                Commune.name_folded.like(key),
            )
        )
    return q


def list_nodes(s: Session, f: NodeFilter, *, limit: int, offset: int) -> tuple[list[NodeRow], int]:
    base = _node_query(f)
    total = s.scalar(select(func.count()).select_from(base.subquery())) or 0
    rows = s.execute(base.order_by(Node.id).limit(limit).offset(offset)).all()
    return [(node, live, village, commune) for node, live, village, commune in rows], total


def get_node(s: Session, node_id: str) -> NodeRow:
    row = s.execute(_node_query(NodeFilter()).where(Node.id == node_id)).first()
    if row is None:
        raise NodeNotFound(node_id)
    node, live, village, commune = row
    return node, live, village, commune


def recent_transitions(s: Session, node_id: str, limit: int = 50) -> list[NodeTransition]:
    return list(
        s.scalars(
            select(NodeTransition)
            .where(NodeTransition.node_id == node_id)
            .order_by(NodeTransition.at_ms.desc(), NodeTransition.id.desc())
            .limit(limit)
        )
    )


def controller_stats(svc: ControllerService | None) -> dict[str, Any] | None:
    """The in-process controller's ingest figures (None: no controller in this process)."""
    if svc is None:
        return None
    ing = svc.ingest
    return {
        "connected": svc.connected.is_set(),
        "reconnects": svc.reconnects,
        "accepted_messages": dict(ing.accepted),
        "flushes": ing.writer.flushes,
        "flush_errors": ing.writer.flush_errors,
        "last_flush_error": ing.writer.last_error,
        "dropped_samples": ing.writer.dropped_samples,
        "dropped_pending_nodes": ing.writer.dropped_pending,
    }
