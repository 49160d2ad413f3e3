"""Content metadata. The audio itself lives on disk, named by its sha256 (see ``store``)."""

from __future__ import annotations

from sqlalchemy import Float, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base

CONTENT_LANGUAGES = ("vi", "tay", "nung", "dao", "other")
CONTENT_SOURCES = ("upload", "tts", "province")


class Content(Base):
    """One broadcastable item. Several rows may share one file (same sha256): the same
    recording uploaded twice under different titles is stored once."""

    __tablename__ = "content"
    __table_args__ = (Index("ix_content_created", "created_ms"),)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    title: Mapped[str] = mapped_column(String(300))
    # Diacritic-insensitive search key (loa.text.fold): "thong bao" finds "Thông báo".
    title_folded: Mapped[str] = mapped_column(String(300), index=True, default="")
    language: Mapped[str] = mapped_column(String(8), default="vi")
    source: Mapped[str] = mapped_column(String(12), default="upload")
    creator: Mapped[str] = mapped_column(String(64), default="")
    # The commune the item belongs to (its officers see and broadcast it); None = the
    # province's, shared down to every commune. Migration 0005.
    owner_commune_id: Mapped[int | None] = mapped_column(index=True, default=None)
    created_ms: Mapped[int]
    sha256: Mapped[str] = mapped_column(String(64), index=True)
    bytes: Mapped[int]
    duration_ms: Mapped[int]
    mime: Mapped[str] = mapped_column(String(40))
    channels: Mapped[int] = mapped_column(default=1)
    sample_rate: Mapped[int]
    loudness_lufs: Mapped[float] = mapped_column(Float)
    true_peak_dbtp: Mapped[float] = mapped_column(Float)
    original_filename: Mapped[str] = mapped_column(String(255), default="")
    source_format: Mapped[str] = mapped_column(String(60), default="")
    source_duration_ms: Mapped[int] = mapped_column(default=0)
    # For TTS bulletins: what was read, by which engine/voice (and why it fell back).
    spoken_text: Mapped[str | None] = mapped_column(String(40000))
    tts_engine: Mapped[str | None] = mapped_column(String(16))
    tts_voice: Mapped[str | None] = mapped_column(String(60))
    tts_note: Mapped[str | None] = mapped_column(String(400))


class TtsAbbreviation(Base):
    """An abbreviation the province taught the speech text from the web ("BQLDA" = "ban quản
    lý dự án"), read over the shipped list and the province's file."""

    __tablename__ = "tts_abbreviation"
    id: Mapped[int] = mapped_column(primary_key=True)
    abbr: Mapped[str] = mapped_column(String(40), unique=True)
    spoken: Mapped[str] = mapped_column(String(200))
    created_by: Mapped[str] = mapped_column(String(64), default="")
    created_ms: Mapped[int] = mapped_column(default=0)
