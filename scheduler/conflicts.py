"""Two items on the same loudspeaker at the same time and the same level are a conflict.

At different levels there is none: the node plays the higher one and pre-empts the lower
(Thông tư 39/2020), which is the point of levels. Emergencies are never refused for a
conflict: they pre-empt everything by design.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from registry.models import Node, Village
from scheduler.models import Broadcast
from scheduler.recurrence import describe_slot
from scheduler.request import PRIORITY_LABELS
from scheduler.slots import slots_between
from scheduler.targets import NodeTarget, live_nodes, place_name, resolve_nodes

MIN_SPAN_MS = 1_000
MAX_EXAMPLE_NODES = 5


@dataclass(frozen=True)
class ConflictHit:
    broadcast_id: int
    title: str
    priority: str
    slot_ms: int
    other_slot_ms: int
    node_ids: tuple[str, ...]
    places: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "broadcast_id": self.broadcast_id,
            "title": self.title,
            "priority": self.priority,
            "slot": describe_slot(self.slot_ms),
            "slot_ms": self.slot_ms,
            "other_slot_ms": self.other_slot_ms,
            "other_slot": describe_slot(self.other_slot_ms),
            "nodes": list(self.node_ids[:50]),
            "node_count": len(self.node_ids),
        }


def first_overlap(a: list[int], a_len: int, b: list[int], b_len: int) -> tuple[int, int] | None:
    """First pair of overlapping intervals ``[s, s+len)`` from two sorted start lists."""
    a_len, b_len = max(a_len, MIN_SPAN_MS), max(b_len, MIN_SPAN_MS)
    i = j = 0
    while i < len(a) and j < len(b):
        if a[i] < b[j] + b_len and b[j] < a[i] + a_len:
            return a[i], b[j]
        if a[i] + a_len <= b[j] + b_len:
            i += 1
        else:
            j += 1
    return None


def find_conflicts(
    session: Session,
    *,
    priority: str,
    slots: list[int],
    duration_ms: int,
    node_ids: set[str],
    exclude_broadcast_id: int | None = None,
    exclude_ids: set[int] | None = None,
    limit: int = 5,
) -> list[ConflictHit]:
    if priority == "emergency" or not slots or not node_ids:
        return []
    slots = sorted(slots)
    others = session.scalars(
        select(Broadcast).where(Broadcast.status == "scheduled", Broadcast.priority == priority)
    ).all()
    hits: list[ConflictHit] = []
    nodes_now: list[NodeTarget] | None = None
    for other in others:
        if other.id == exclude_broadcast_id or (exclude_ids and other.id in exclude_ids):
            continue
        span = max(other.duration_ms, MIN_SPAN_MS)
        other_slots = slots_between(
            other, slots[0] - span, slots[-1] + max(duration_ms, MIN_SPAN_MS)
        )
        pair = first_overlap(slots, duration_ms, other_slots, other.duration_ms)
        if pair is None:
            continue
        if nodes_now is None:
            nodes_now = live_nodes(session)
        shared = sorted(
            node_ids
            & {t.node_id for t in resolve_nodes(session, other.targets, nodes_now=nodes_now)}
        )
        if shared:
            hits.append(
                ConflictHit(
                    other.id,
                    other.title,
                    other.priority,
                    pair[0],
                    pair[1],
                    tuple(shared),
                    tuple(_places(session, shared)),
                )
            )
            if len(hits) >= limit:
                break
    return hits


def _places(session: Session, node_ids: list[str]) -> list[str]:
    """ "Thôn Nà Pàn – Nhà văn hóa" for the first few clusters, in the order given."""
    wanted = node_ids[:MAX_EXAMPLE_NODES]
    rows = {
        nid: place_name(village, label, nid)
        for nid, label, village in session.execute(
            select(Node.id, Node.label, Village.name)
            .join(Village, Village.id == Node.village_id, isouter=True)
            .where(Node.id.in_(wanted))
        )
    }
    return [rows.get(nid, nid) for nid in wanted]


def conflict_message(hits: list[ConflictHit]) -> str:
    h = hits[0]
    examples = ", ".join(
        h.places[:MAX_EXAMPLE_NODES] if h.places else h.node_ids[:MAX_EXAMPLE_NODES]
    )
    more = (
        f" và {len(h.node_ids) - MAX_EXAMPLE_NODES} cụm khác"
        if len(h.node_ids) > MAX_EXAMPLE_NODES
        else ""
    )
    tail = f" (cùng {len(hits) - 1} bản tin khác)" if len(hits) > 1 else ""
    return (
        f"Trùng lịch: lúc {describe_slot(h.slot_ms)} cụm loa {examples}{more} đã có bản tin "
        f"«{h.title}» cùng mức {PRIORITY_LABELS.get(h.priority, h.priority)} "
        f"(phát lúc {describe_slot(h.other_slot_ms)}){tail}. "
        f"Hãy chọn giờ khác, nơi phát khác, hoặc bấm «Hủy» ở bản tin «{h.title}» trong "
        "mục «Kết quả phát»."
    )
