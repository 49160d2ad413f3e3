"""The slots of a stored broadcast: when each airing starts and how long it lasts."""

from __future__ import annotations

from scheduler.models import Broadcast
from scheduler.recurrence import Recurrence


def recurrence_of(b: Broadcast) -> Recurrence | None:
    if not b.recurrence or b.start_at_ms is None:
        return None
    return Recurrence(
        rule=b.recurrence,
        dtstart_ms=b.start_at_ms,
        until_ms=b.recurrence_until_ms,
        exdates=tuple(b.recurrence_exdates or ()),
    )


def slots_between(b: Broadcast, from_ms: int, to_ms: int, limit: int = 5_000) -> list[int]:
    """Slot start times of ``b`` in ``[from_ms, to_ms)``."""
    rec = recurrence_of(b)
    if rec is not None:
        return rec.between(from_ms, to_ms, limit=limit)
    if b.start_at_ms is not None and from_ms <= b.start_at_ms < to_ms:
        return [b.start_at_ms]
    return []


def next_slot_at_or_after(b: Broadcast, from_ms: int) -> int | None:
    rec = recurrence_of(b)
    if rec is not None:
        return next(rec.iter_from(from_ms), None)
    if b.start_at_ms is not None and b.start_at_ms >= from_ms:
        return b.start_at_ms
    return None


def airtime_ms(content_ms: int, repeat: int, gap_ms: int) -> int:
    """How long a slot keeps the loudspeakers busy: every repeat plus the gaps between them."""
    repeat = max(1, repeat)
    return content_ms * repeat + gap_ms * (repeat - 1)
