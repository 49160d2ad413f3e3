"""API shapes for content and TTS (kept apart from the SQLAlchemy model)."""

from __future__ import annotations

from typing import ClassVar

from pydantic import BaseModel, Field, StrictStr

from broadcasts.abbreviations import MSG_BAD_ABBR, MSG_BAD_SPOKEN
from broadcasts.audio import vi_duration
from broadcasts.store import ContentDetails
from loa.timeutil import format_datetime


class ContentOut(BaseModel):
    id: str
    title: str
    sha256: str
    bytes: int
    duration_ms: int
    duration: str = Field(description="Vietnamese, e.g. '1 phút 5 giây'")
    mime: str
    language: str
    source: str
    creator: str
    created_ms: int
    created: str = Field(description="dd/mm/yyyy HH:MM:SS, Asia/Ho_Chi_Minh")
    channels: int
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    original_filename: str
    source_format: str
    source_duration_ms: int
    spoken_text: str | None = None
    tts_engine: str | None = None
    tts_voice: str | None = None
    tts_note: str | None = None
    audio_url: str = Field(description="for logged-in users; nodes use /media with a token")
    owner_commune_id: int | None = Field(
        None, description="the commune the item belongs to; null = the province's, shared down"
    )

    @classmethod
    def of(cls, d: ContentDetails, viewer_scope: frozenset[int] | None = None) -> ContentOut:
        """``viewer_scope``: the viewer's communes (None = whole province). Who made an item
        outside the viewer's own communes (a province item shared down) is not shown: user
        names are login names."""
        data = d.to_dict()
        if viewer_scope is not None and d.meta.owner_commune_id not in viewer_scope:
            data["creator"] = ""
        return cls(
            **data,
            duration=vi_duration(d.meta.duration_ms / 1000),
            created=format_datetime(d.meta.created_ms),
            audio_url=f"/api/v1/content/{d.meta.id}/audio",
        )


class ContentPage(BaseModel):
    items: list[ContentOut]
    total: int
    limit: int
    offset: int


class TtsContentIn(BaseModel):
    text: str = Field(max_length=200_000)
    title: str = Field(max_length=300)
    language: str = "vi"
    engine: str | None = None
    voice: str | None = None
    commune_id: int | None = Field(
        None,
        ge=1,
        le=2**31 - 1,
        description="the commune it belongs to (an officer of several communes); default: "
        "the officer's first commune, or the province's for province staff",
    )


class TextIn(BaseModel):
    text: str = Field(max_length=200_000)
    engine: str | None = None
    voice: str | None = None


class NormalizeOut(BaseModel):
    spoken: str


class PreviewOut(BaseModel):
    spoken: str
    engine: str
    voice: str
    fallback_reason: str | None
    duration_ms: int
    audio_url: str
    mime: str


class AbbreviationIn(BaseModel):
    """One of the province's abbreviations (``POST /tts/abbreviations``). The model fixes
    the types; the form of each (no tabs, words only) is checked by
    ``broadcasts.abbreviations.check``, and a field of the wrong type answers that check's
    own sentence. Unknown fields are ignored, as they always were."""

    refusals: ClassVar[dict[str, str]] = {"abbr": MSG_BAD_ABBR, "spoken": MSG_BAD_SPOKEN}
    abbr: StrictStr = Field(examples=["BQLDA"])
    spoken: StrictStr = Field(examples=["ban quản lý dự án"])


class AbbreviationOut(BaseModel):
    id: int
    abbr: str
    spoken: str
    created_by: str | None


class AbbreviationList(BaseModel):
    items: list[AbbreviationOut]
    total: int
