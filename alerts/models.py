"""Alert tables (migration 0008).

- ``cap_message``: every document received, refused ones included, byte for byte with the
  reason: nothing a sender sent is ever lost, and a refusal can be shown to them later.
- ``cap_alert``: one row per accepted Alert/Update/Cancel/Ack/Error, with what Loa decided
  and did (state, approval, the broadcasts that carried it).
- ``alert_step``: the alert's timeline (received, approved, aired, repeated, cancelled...).
- ``alert_template``: the spoken text and warning tone per event type, edited by the
  province.
- ``alert_feed``: a polled feed's HTTP validators (ETag, Last-Modified).
"""

from __future__ import annotations

from sqlalchemy import (
    JSON,
    Float,
    ForeignKey,
    Index,
    LargeBinary,
    String,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base

ALERT_STATES = (
    "pending_approval",
    "escalated",
    "airing",
    "not_aired",
    "expired",
    "cancelled",
    "superseded",
    "rejected",
    "info",
)


class CapMessage(Base):
    __tablename__ = "cap_message"
    __table_args__ = (Index("ix_cap_message_received", "received_ms"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    received_ms: Mapped[int]
    source: Mapped[str] = mapped_column(String(16))  # api | feed | upload
    source_ref: Mapped[str] = mapped_column(String(500), default="")  # user or feed URL
    sha256: Mapped[str] = mapped_column(String(64))
    size: Mapped[int]
    raw: Mapped[bytes] = mapped_column(LargeBinary)
    outcome: Mapped[str] = mapped_column(String(16))  # accepted | refused | duplicate
    reason_code: Mapped[str | None] = mapped_column(String(40))
    reason: Mapped[str | None] = mapped_column(Text)
    signed: Mapped[bool] = mapped_column(default=False)
    sender: Mapped[str | None] = mapped_column(String(300))
    identifier: Mapped[str | None] = mapped_column(String(300))
    alert_id: Mapped[int | None] = mapped_column(ForeignKey("cap_alert.id"))


class CapAlert(Base):
    __tablename__ = "cap_alert"
    __table_args__ = (UniqueConstraint("sender", "identifier", "sent_ms", name="uq_cap_alert"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    # The cap_message it came in (no foreign key: cap_message points here too).
    message_id: Mapped[int]
    sender: Mapped[str] = mapped_column(String(300))
    identifier: Mapped[str] = mapped_column(String(300))
    sent_ms: Mapped[int]
    sent: Mapped[str] = mapped_column(String(40))
    msg_type: Mapped[str] = mapped_column(String(10))
    status: Mapped[str] = mapped_column(String(10))
    severity: Mapped[str] = mapped_column(String(10), default="Unknown")
    urgency: Mapped[str] = mapped_column(String(10), default="Unknown")
    event: Mapped[str] = mapped_column(String(300), default="")
    headline: Mapped[str] = mapped_column(String(500), default="")
    language: Mapped[str] = mapped_column(String(20), default="")
    area_desc: Mapped[str] = mapped_column(String(2000), default="")
    expires_ms: Mapped[int | None]
    received_ms: Mapped[int]
    # What Loa decided: auto | approval | none (never airs: Ack/Error/System/Draft...)
    decision: Mapped[str] = mapped_column(String(10), default="none")
    state: Mapped[str] = mapped_column(String(20), index=True)
    state_reason: Mapped[str | None] = mapped_column(Text)
    drill: Mapped[bool] = mapped_column(default=False)
    text: Mapped[str] = mapped_column(Text, default="")
    spoken: Mapped[str] = mapped_column(Text, default="")
    # Clusters chosen by the area (node ids) and the broadcast targets built from them.
    node_ids: Mapped[list] = mapped_column(JSON, default=list)
    targets: Mapped[dict | None] = mapped_column(JSON)
    approved_by: Mapped[str | None] = mapped_column(String(64))
    approved_ms: Mapped[int | None]
    escalated_ms: Mapped[int | None]
    broadcast_ids: Mapped[list] = mapped_column(JSON, default=list)
    next_repeat_ms: Mapped[int | None]
    ends_ms: Mapped[int | None]
    # The Update/Cancel that ended it, and the all-clear aired after a Cancel.
    closed_by_id: Mapped[int | None] = mapped_column(ForeignKey("cap_alert.id"))
    closed_ms: Mapped[int | None]
    all_clear_broadcast_id: Mapped[int | None]
    # Earlier alerts this one updates or cancels (our ids).
    references: Mapped[list] = mapped_column(JSON, default=list)
    # The warning tone chosen with the text (migration 0018), so every airing and repeat
    # sounds the same: {"pattern": "3x20/10" or "" (none), "hz": 880.0, "source": the
    # template's event key, or "default" (the setting)}. NULL on alerts from before 0018.
    tone: Mapped[dict | None] = mapped_column(JSON)


class AlertStep(Base):
    __tablename__ = "alert_step"
    id: Mapped[int] = mapped_column(primary_key=True)
    alert_id: Mapped[int] = mapped_column(ForeignKey("cap_alert.id"), index=True)
    at_ms: Mapped[int]
    action: Mapped[str] = mapped_column(String(40))
    actor: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict | None] = mapped_column(JSON)


class AlertTemplate(Base):
    __tablename__ = "alert_template"
    # Folded event name ("lu quet"), or "*" for every other event.
    event_key: Mapped[str] = mapped_column(String(200), primary_key=True)
    template: Mapped[str] = mapped_column(Text)
    # Pre-recorded messages in ethnic languages (content ids: Tày, Nùng, Dao...), aired right
    # after the Vietnamese speech on the same clusters.
    recordings: Mapped[list | None] = mapped_column(JSON)
    updated_by: Mapped[str] = mapped_column(String(64), default="")
    updated_ms: Mapped[int] = mapped_column(default=0)
    # Warning tone for this event type (migration 0018): NULL = the "*" template's, else the
    # province setting (``LOA_ALERT_TONE_PATTERN``); "" = no tone; else a pattern such as
    # "3x20/10" (``alerts.speech.parse_tone_pattern``). ``tone_hz`` NULL likewise falls back.
    tone_pattern: Mapped[str | None] = mapped_column(String(40))
    tone_hz: Mapped[float | None] = mapped_column(Float)


class AlertFeed(Base):
    __tablename__ = "alert_feed"
    url: Mapped[str] = mapped_column(String(500), primary_key=True)
    etag: Mapped[str | None] = mapped_column(String(300))
    last_modified: Mapped[str | None] = mapped_column(String(100))
    last_polled_ms: Mapped[int | None]
    last_status: Mapped[str | None] = mapped_column(String(300))
