"""Proof of play read back: per-node outcome of an airing, airing status, aired ratio.

A node *aired* a slot when it reported ``started`` and did not then report ``preempted`` or
``failed``; this is the figure indicator 8.3 counts ("played >= 80% of the broadcasts aimed
at it"), so it is defined once, here."""

from __future__ import annotations

from collections.abc import Iterable

AIRED_PHASES = frozenset({"started", "finished"})
TERMINAL_PHASES = frozenset({"finished", "preempted", "failed", "never_acked"})
# Order in which playback progress may move; terminal phases all share the top rank.
PHASE_RANK = {
    "pending": 0,
    "sent": 1,
    "acked": 2,
    "fetched": 3,
    "started": 4,
    "finished": 5,
    "preempted": 5,
    "failed": 5,
    "never_acked": 5,
}

PHASE_LABELS_VI = {
    "pending": "Chưa gửi",
    "sent": "Đã gửi lệnh",
    "acked": "Đã nhận lệnh",
    "fetched": "Đã tải nội dung",
    "started": "Đang phát",
    "finished": "Đã phát xong",
    "preempted": "Bị ngắt bởi bản tin ưu tiên hơn",
    "failed": "Lỗi",
    "never_acked": "Không phản hồi",
}


def airing_status(phases: Iterable[str]) -> str:
    """aired (every node), partly_aired (some), missed (none, or no node at all)."""
    phases = list(phases)
    aired = sum(1 for p in phases if p in AIRED_PHASES)
    if phases and aired == len(phases):
        return "aired"
    return "partly_aired" if aired else "missed"


def aired_ratio(phases: Iterable[str]) -> float | None:
    phases = list(phases)
    if not phases:
        return None
    return round(sum(1 for p in phases if p in AIRED_PHASES) / len(phases), 4)


def combine_statuses(statuses: Iterable[str]) -> str:
    """Status of a finished recurring broadcast from its airings' statuses."""
    s = [x for x in statuses if x != "cancelled"]
    if not s:
        return "missed"
    if all(x == "aired" for x in s):
        return "aired"
    if all(x == "missed" for x in s):
        return "missed"
    return "partly_aired"
