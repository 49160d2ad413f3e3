"""Use cases across the content package: typed bulletins become stored audio; previews.

The scheduler calls ``synthesize_bulletin`` when an officer schedules typed text; the API
calls ``preview`` so the officer hears the bulletin (and reads its spoken form) first."""

from __future__ import annotations

import hashlib
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path

from broadcasts import ffmpeg
from broadcasts.audio import MIME, SUFFIX
from broadcasts.errors import TtsError
from broadcasts.store import ContentMeta, ContentStore, TtsOrigin
from broadcasts.tts import Speech

_PREVIEW_KEY_CHARS = 32


LANGUAGE_NAMES_VI = {"tay": "tiếng Tày", "nung": "tiếng Nùng", "dao": "tiếng Dao"}


def check_language(language: str, engine: str | None, store: ContentStore) -> None:
    """Offline and Google voices speak Vietnamese only; reading Tày, Nùng or Dao text with
    them would mislead listeners, so those bulletins are recorded by a person and uploaded
    (or read by a Piper voice the operator installed for that language). The officer is told
    so in plain words; voice engines are the technician's business."""
    chosen = engine or store.cfg.tts_engine
    if language != "vi" and chosen != "piper":
        name = LANGUAGE_NAMES_VI.get(language, f"ngôn ngữ «{language}»")
        raise TtsError(
            "no_voice_for_language",
            f"Máy chưa đọc được {name}. Hãy ghi âm bản tin bằng giọng người đọc "
            "rồi chọn «Tải âm thanh lên» để phát bản ghi âm.",
            f"The machine cannot read {language} yet: record the bulletin and "
            "upload the recording.",
            http_status=422,
        )


_check_language = check_language  # the name used before; kept for callers elsewhere


def synthesize_bulletin(
    store: ContentStore,
    text: str,
    *,
    title: str,
    language: str = "vi",
    engine: str | None = None,
    voice: str | None = None,
    creator: str = "",
    owner_commune_id: int | None = None,
    urgent: bool = False,
) -> ContentMeta:
    """Speak ``text`` and store it as broadcast content (source "tts"), through the same
    pipeline as uploads: trimmed, levelled, chimed, encoded once (``urgent``: an emergency's,
    levelled in fewer renders, see ``AudioPipeline.process``)."""
    check_language(language, engine, store)
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="tts-") as tmp:
        speech = store.tts.speak(text, Path(tmp) / "bulletin.wav", engine=engine, voice=voice)
        origin = TtsOrigin(
            spoken_text=speech.spoken,
            engine=speech.engine,
            voice=speech.voice,
            note=speech.fallback_reason,
        )
        return store.add_speech(
            speech.path,
            title=title,
            language=language,
            creator=creator,
            origin=origin,
            owner_commune_id=owner_commune_id,
            urgent=urgent,
        )


@dataclass(frozen=True)
class Preview:
    key: str
    spoken: str
    engine: str
    voice: str
    fallback_reason: str | None
    duration_ms: int
    path: Path
    mime: str


def preview_path(store: ContentStore, key: str) -> Path | None:
    """The preview file for ``key`` if it exists (keys are hex, so no path tricks)."""
    if len(key) != _PREVIEW_KEY_CHARS or any(c not in "0123456789abcdef" for c in key):
        return None
    path = store.previews_dir / f"{key}{SUFFIX[store.cfg.delivery_format]}"
    return path if path.exists() else None


def preview(
    store: ContentStore, text: str, *, engine: str | None = None, voice: str | None = None
) -> Preview:
    """Spoken form and a playable rendering (levelled like the real thing, no chime)."""
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    store.previews_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="preview-") as tmp:
        speech: Speech = store.tts.speak(
            text, Path(tmp) / "preview.wav", engine=engine, voice=voice
        )
        key = hashlib.sha256(
            "\x1f".join(
                (speech.engine, speech.voice, str(store.cfg.tts_rate_wpm), speech.spoken)
            ).encode("utf-8")
        ).hexdigest()[:_PREVIEW_KEY_CHARS]
        target = store.previews_dir / f"{key}{SUFFIX[store.cfg.delivery_format]}"
        mime = MIME[store.cfg.delivery_format]
        if target.exists():
            info = ffmpeg.probe(target)
            duration_ms = int(round((info.duration_s or 0) * 1000))
        else:
            processed = store.pipeline.process(
                speech.path, "preview.wav", store.tmp_dir, chime=False
            )
            os.replace(processed.path, target)
            duration_ms = processed.duration_ms
        return Preview(
            key=key,
            spoken=speech.spoken,
            engine=speech.engine,
            voice=speech.voice,
            fallback_reason=speech.fallback_reason,
            duration_ms=duration_ms,
            path=target,
            mime=mime,
        )
