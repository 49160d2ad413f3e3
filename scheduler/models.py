"""Broadcasts and their airings, with per-node proof of play.

A *broadcast* is what an officer composes (content + targets + when + priority). Each time
it is due it becomes an *airing* (one slot); the targets are resolved to nodes when the airing
is dispatched, giving one *airing target* per node, whose phase follows the node's playback
events. Airing targets are the evidence for indicator 8.3 ("played >= 80% of the broadcasts
aimed at it").
"""

from __future__ import annotations

from sqlalchemy import JSON, ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base

# Workflow of a broadcast (issue: draft -> submitted -> approved -> scheduled -> terminal).
BROADCAST_STATUSES = ("draft", "submitted", "approved", "scheduled", "aired", "partly_aired",
                      "missed", "cancelled")
# Phase of one node for one airing. "pending" = not yet sent; "sent" = command published.
TARGET_PHASES = ("pending", "sent", "acked", "fetched", "started", "finished", "preempted",
                 "failed", "never_acked")
LANGUAGES = ("vi", "tay", "nung", "dao", "other")


class Broadcast(Base):
    __tablename__ = "broadcast"
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
    targets: Mapped[dict] = mapped_column(JSON)
    start_at_ms: Mapped[int | None]
    recurrence: Mapped[str | None] = mapped_column(String(500))  # RFC 5545 RRULE
    status: Mapped[str] = mapped_column(String(16), default="draft", index=True)
    # None = province-issued; else the commune that owns it.
    owner_commune_id: Mapped[int | None] = mapped_column(ForeignKey("commune.id"))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    approved_by: Mapped[str | None] = mapped_column(String(64))
    created_ms: Mapped[int] = mapped_column(default=0)


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
    status: Mapped[str] = mapped_column(String(16), default="scheduled")
    dispatched_ms: Mapped[int | None]


class AiringTarget(Base):
    """Proof of play: what one node did with one airing."""

    __tablename__ = "airing_target"
    __table_args__ = (
        UniqueConstraint("airing_id", "node_id", name="uq_airing_node"),
        Index("ix_airing_target_node", "node_id", "airing_id"),
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
    events: Mapped[list | None] = mapped_column(JSON)
