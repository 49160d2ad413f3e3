"""Broadcasts and their airings, with per-node proof of play.

A *broadcast* is what an officer composes (content + targets + when + priority). Each time
it is due it becomes an *airing* (one slot); the targets are resolved to nodes when the airing
is dispatched, giving one *airing target* per node, whose phase follows the node's playback
events. Airing targets are the evidence for indicator 8.3 ("played >= 80% of the broadcasts
aimed at it").
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base

# Workflow of a broadcast (issue: draft -> submitted -> approved -> scheduled -> terminal).
BROADCAST_STATUSES = (
    "draft",
    "submitted",
    "approved",
    "scheduled",
    "paused",
    "aired",
    "partly_aired",
    "missed",
    "cancelled",
    "failed",
)
AIRING_STATUSES = ("scheduled", "dispatched", "aired", "partly_aired", "missed", "cancelled")
# Phase of one node for one airing. "pending" = not yet sent; "sent" = command published.
TARGET_PHASES = (
    "pending",
    "sent",
    "acked",
    "fetched",
    "started",
    "finished",
    "preempted",
    "failed",
    "never_acked",
)
LANGUAGES = ("vi", "tay", "nung", "dao", "other")


class Broadcast(Base):
    __tablename__ = "broadcast"
    # A form's or client's idempotency key, unique per creator: a double click sends once.
    __table_args__ = (UniqueConstraint("created_by", "client_key", name="uq_broadcast_client_key"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    content_id: Mapped[str | None] = mapped_column(String(80))
    tts_text: Mapped[str | None] = mapped_column(String(20000))
    stream_url: Mapped[str | None] = mapped_column(String(500))
    language: Mapped[str] = mapped_column(String(8), default="vi")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    volume: Mapped[int | None]
    repeat: Mapped[int] = mapped_column(default=1)
    # {"communes": [ids], "villages": [ids], "nodes": [ids], "province": bool, "groups": [..]}
    targets: Mapped[dict[str, Any]] = mapped_column(JSON)
    start_at_ms: Mapped[int | None]
    recurrence: Mapped[str | None] = mapped_column(String(500))  # RFC 5545 RRULE
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    # None = province-issued; else the commune that owns it.
    owner_commune_id: Mapped[int | None] = mapped_column(ForeignKey("commune.id"))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    approved_by: Mapped[str | None] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(default=0)
    # --- added by the scheduler (issue 4); all optional so older rows stay valid.
    # Airtime of one slot: content duration x repeat + gaps (a stream: its planned length).
    duration_ms: Mapped[int] = mapped_column(default=0)
    # Recurrence bounds and exceptions (local dates "YYYY-MM-DD" in Asia/Ho_Chi_Minh).
    recurrence_until_ms: Mapped[int | None]
    recurrence_exdates: Mapped[list[str] | None] = mapped_column(JSON)
    # When it entered the schedule: earlier occurrences of a recurrence are not "missed".
    scheduled_ms: Mapped[int | None]
    # A commune's copy of a province bulletin taken from its inbox points at the original.
    source_broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcast.id"))
    stream_mount: Mapped[str | None] = mapped_column(String(80))
    updated_ms: Mapped[int] = mapped_column(default=0)
    # --- added for safe sends and full control (issue 18).
    client_key: Mapped[str | None] = mapped_column(String(80))
    # An edit creates a new version; the old one stays, cancelled, as history.
    previous_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("broadcast.id", name="fk_broadcast_previous_version")
    )
    # --- added for node-made warning tones (issue 19): a ``loa.protocol.Tone`` as JSON, sent
    # in each ``play`` so nodes sound it at once while the speech downloads. None = no tone.
    tone: Mapped[dict[str, Any] | None] = mapped_column(JSON)


class Airing(Base):
    """One scheduled slot of a broadcast."""

    __tablename__ = "airing"
    __table_args__ = (UniqueConstraint("broadcast_id", "slot_ms", name="uq_airing_slot"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcast.id"), index=True)
    slot_ms: Mapped[int] = mapped_column(index=True)
    duration_ms: Mapped[int] = mapped_column(default=0)
    language: Mapped[str] = mapped_column(String(8), default="vi")
    priority: Mapped[str] = mapped_column(String(10), default="normal")
    # scheduled -> dispatched -> aired | partly_aired | missed | cancelled
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    dispatched_ms: Mapped[int | None]
    # --- added by the scheduler (issue 4).
    # The start_at actually sent: the slot itself, or a little later when a slot missed while
    # the controller was down is played late within its grace window. For an emergency
    # (start_at 0 = "at once" on the wire) the dispatch time, against which lateness counts.
    start_at_ms: Mapped[int | None]
    # When the slot's airtime ends (start + duration); targets are judged after this + margin.
    ends_ms: Mapped[int | None]
    finalized_ms: Mapped[int | None]


class AiringTarget(Base):
    """Proof of play: what one node did with one airing."""

    __tablename__ = "airing_target"
    __table_args__ = (
        UniqueConstraint("airing_id", "node_id", name="uq_airing_node"),
        Index("ix_airing_target_node", "node_id", "airing_id"),
        # Covering indexes for the indicator's two aggregations (indicator/evaluate.py): read
        # in these orders, the database groups a year of proof-of-play rows as it walks the
        # index, without sorting millions of rows or visiting the wide table (migration 0015).
        Index(
            "ix_airing_target_outcome",
            "airing_id",
            "commune_id",
            "village_id",
            "phase",
            "started_at_ms",
        ),
        Index(
            "ix_airing_target_village_outcome",
            "commune_id",
            "village_id",
            "airing_id",
            "phase",
            "started_at_ms",
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    airing_id: Mapped[int] = mapped_column(ForeignKey("airing.id"), index=True)
    node_id: Mapped[str] = mapped_column(String(64))
    # The village and commune the node belonged to when the airing was aimed at it.
    village_id: Mapped[int | None] = mapped_column(index=True)
    commune_id: Mapped[int | None] = mapped_column(index=True)
    cmd_id: Mapped[str | None] = mapped_column(String(80), unique=True)
    phase: Mapped[str] = mapped_column(String(12), default="pending")
    started_at_ms: Mapped[int | None]
    finished_at_ms: Mapped[int | None]
    lateness_ms: Mapped[int | None]
    error: Mapped[str | None] = mapped_column(String(300))
    updated_ms: Mapped[int] = mapped_column(default=0)
    events: Mapped[list[dict[str, Any]] | None] = mapped_column(JSON)


class SavedGroup(Base):
    """A named set of targets (communes, villages, nodes) an officer reuses; it is resolved to
    nodes at dispatch time like any other target, so registry changes apply."""

    __tablename__ = "saved_group"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200))
    # None = a province group; else the commune whose officers own it.
    owner_commune_id: Mapped[int | None] = mapped_column(ForeignKey("commune.id"), index=True)
    targets: Mapped[dict[str, Any]] = mapped_column(JSON)
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_ms: Mapped[int] = mapped_column(default=0)


INBOX_STATES = ("new", "scheduled", "dismissed")


class InboxItem(Base):
    """A province bulletin at *normal* level waiting in one commune's inbox (TT 39/2020): the
    commune officer decides whether and when to schedule it."""

    __tablename__ = "inbox_item"
    __table_args__ = (UniqueConstraint("broadcast_id", "commune_id", name="uq_inbox_commune"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    broadcast_id: Mapped[int] = mapped_column(ForeignKey("broadcast.id"), index=True)
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"), index=True)
    state: Mapped[str] = mapped_column(String(12), default="new")
    created_ms: Mapped[int] = mapped_column(default=0)
    handled_ms: Mapped[int | None]
    handled_by: Mapped[str | None] = mapped_column(String(64))
    # The commune's own broadcast made from it, once scheduled.
    scheduled_broadcast_id: Mapped[int | None] = mapped_column(ForeignKey("broadcast.id"))
