"""How a scheduled broadcast ends: slots recorded as missed, and the broadcast's final status
once no slot remains (aired / partly_aired / missed).

Used by the dispatcher (after judging an airing) and by the scheduler runtime (slots that
passed while the controller was down), always inside the caller's transaction."""

from __future__ import annotations

from sqlalchemy import func, insert, select
from sqlalchemy.orm import Session

from scheduler.config import SchedulerSettings
from scheduler.models import BROADCAST_STATUSES, Airing, AiringTarget, Broadcast
from scheduler.outcomes import combine_statuses
from scheduler.slots import next_slot_at_or_after, slots_between
from scheduler.targets import resolve_nodes

MSG_CONTROLLER_DOWN = "Bộ điều khiển không hoạt động vào giờ phát; lượt phát bị lỡ"
OPEN_AIRING = ("scheduled", "dispatched")


def last_slot_ms(s: Session, broadcast_id: int) -> int | None:
    return s.scalar(select(func.max(Airing.slot_ms)).where(Airing.broadcast_id == broadcast_id))


def refresh_broadcast_status(
    s: Session, b: Broadcast, now: int, settings: SchedulerSettings | None = None
) -> None:
    """A scheduled broadcast is over when it has no slot after its last airing and every
    airing has been judged; its status then sums up its airings."""
    if b.status != "scheduled":
        return
    last = last_slot_ms(s, b.id)
    if last is None:
        return
    if next_slot_at_or_after(b, last + 1) is not None:
        return
    statuses = list(s.scalars(select(Airing.status).where(Airing.broadcast_id == b.id)))
    if any(st in OPEN_AIRING for st in statuses):
        return
    b.status = combine_statuses(statuses)
    b.updated_ms = now


def record_missed(
    s: Session,
    b: Broadcast,
    up_to_ms: int,
    now: int,
    settings: SchedulerSettings | None = None,
    limit: int = 500,
) -> list[int]:
    """Slots of ``b`` before ``up_to_ms`` that were never dispatched (the controller was down
    past the grace window) become ``missed`` airings. Their nodes are recorded with the phase
    ``pending`` (never sent) so a village's record shows the broadcast aimed at it was not
    played, and why, without blaming the node."""
    if b.status != "scheduled" or b.scheduled_ms is None:
        return []
    last = last_slot_ms(s, b.id)
    start = max(b.scheduled_ms - 5_000, (last + 1) if last is not None else 0)
    missed = slots_between(b, start, up_to_ms, limit=limit)
    if not missed:
        return []
    nodes = resolve_nodes(s, b.targets)
    for slot in missed:
        airing = Airing(
            broadcast_id=b.id,
            slot_ms=slot,
            duration_ms=b.duration_ms,
            language=b.language,
            priority=b.priority,
            status="missed",
            start_at_ms=slot,
            ends_ms=slot + b.duration_ms,
            finalized_ms=now,
        )
        s.add(airing)
        s.flush()
        if nodes:
            s.execute(
                insert(AiringTarget),
                [
                    {
                        "airing_id": airing.id,
                        "node_id": n.node_id,
                        "village_id": n.village_id,
                        "commune_id": n.commune_id,
                        "cmd_id": None,
                        "phase": "pending",
                        "error": MSG_CONTROLLER_DOWN,
                        "updated_ms": now,
                        "events": [],
                    }
                    for n in nodes
                ],
            )
    refresh_broadcast_status(s, b, now, settings)
    return missed


FINISHED_STATUSES = frozenset({"aired", "partly_aired", "missed", "cancelled", "failed"})


def content_in_use(s: Session) -> set[str]:
    """Content that a broadcast still in play (draft, submitted, approved, scheduled…) refers
    to: the content store's retention must keep it (``ContentStore.purge``)."""
    open_statuses = [st for st in BROADCAST_STATUSES if st not in FINISHED_STATUSES]
    return set(
        s.scalars(
            select(Broadcast.content_id).where(
                Broadcast.status.in_(open_statuses), Broadcast.content_id.is_not(None)
            )
        )
    )
