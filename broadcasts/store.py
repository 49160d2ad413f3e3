"""The content store: processed audio files on disk, their metadata in the database.

Files are content-addressed (``<data_dir>/content/files/ab/<sha256>.mp3``): the name is the
checksum nodes verify after download, identical results are stored once, and a file is
never rewritten in place, so a node's half-finished Range download can always resume.

Other packages use only ``ContentStore`` and ``ContentMeta`` (the scheduler builds its play
commands from ``get`` and ``node_url``)."""

from __future__ import annotations

import logging
import os
import secrets
import time
from collections.abc import Callable, Collection
from dataclasses import asdict, dataclass, field
from pathlib import Path
from urllib.parse import quote

from sqlalchemy import func, or_, select
from sqlalchemy.orm import Session

from broadcasts.audio import AudioPipeline, ProcessedAudio
from broadcasts.errors import ContentError, ContentNotFound
from broadcasts.models import CONTENT_LANGUAGES, CONTENT_SOURCES, Content
from broadcasts.normalize import Normalizer, normalizer_for
from broadcasts.settings import ContentSettings
from broadcasts.tokens import (
    CONTENT_ID_PREFIX,
    CONTENT_ID_RE,
    node_token,
    token_expiry,
    token_status,
)
from broadcasts.tts import TtsService
from loa.db import Database
from loa.settings import Settings
from loa.text import fold
from loa.timeutil import now_ms

log = logging.getLogger(__name__)

_EXT_BY_MIME = {"audio/mpeg": ".mp3", "audio/ogg": ".ogg"}
_DAY_MS = 86_400_000


@dataclass(frozen=True)
class ContentMeta:
    id: str
    title: str
    sha256: str
    bytes: int
    duration_ms: int
    mime: str
    language: str
    source: str
    creator: str
    created_ms: int
    # The owning commune; None = the province's, shared down (see ``visible_to``).
    owner_commune_id: int | None = None

    def visible_to(self, scope: frozenset[int] | None) -> bool:
        """Whether a user whose communes are ``scope`` (None = whole province) may see,
        download and broadcast this item: their own communes' items and the province's."""
        return scope is None or self.owner_commune_id is None or self.owner_commune_id in scope


@dataclass(frozen=True)
class ContentDetails:
    """Everything the API shows about an item (``ContentMeta`` plus how it was made)."""

    meta: ContentMeta
    channels: int
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    original_filename: str
    source_format: str
    source_duration_ms: int
    spoken_text: str | None
    tts_engine: str | None
    tts_voice: str | None
    tts_note: str | None

    def to_dict(self) -> dict:
        out = asdict(self.meta)
        out.update({k: v for k, v in asdict(self).items() if k != "meta"})
        return out


@dataclass(frozen=True)
class TtsOrigin:
    """How a TTS item was made, kept beside its audio."""

    spoken_text: str
    engine: str
    voice: str
    note: str | None = None


@dataclass
class PurgeReport:
    removed_ids: list[str] = field(default_factory=list)
    kept_in_use: list[str] = field(default_factory=list)
    removed_files: int = 0


def _meta(row: Content) -> ContentMeta:
    return ContentMeta(
        id=row.id,
        title=row.title,
        sha256=row.sha256,
        bytes=row.bytes,
        duration_ms=row.duration_ms,
        mime=row.mime,
        language=row.language,
        source=row.source,
        creator=row.creator,
        created_ms=row.created_ms,
        owner_commune_id=row.owner_commune_id,
    )


def _details(row: Content) -> ContentDetails:
    return ContentDetails(
        meta=_meta(row),
        channels=row.channels,
        sample_rate=row.sample_rate,
        loudness_lufs=row.loudness_lufs,
        true_peak_dbtp=row.true_peak_dbtp,
        original_filename=row.original_filename,
        source_format=row.source_format,
        source_duration_ms=row.source_duration_ms,
        spoken_text=row.spoken_text,
        tts_engine=row.tts_engine,
        tts_voice=row.tts_voice,
        tts_note=row.tts_note,
    )


def content_root(settings: Settings) -> Path:
    return Path(settings.data_dir) / "content"


def make_tts(
    settings: Settings, cfg: ContentSettings, extra: dict[str, str] | None = None
) -> TtsService:
    """The speech service with the province's abbreviations (the setting's file, then
    ``<data_dir>/abbreviations.tsv`` when present, then ``extra``: those added from the
    web) and the shared sentence cache."""
    normalizer = normalizer_for(
        cfg.abbreviations_file, more=[Path(settings.data_dir) / "abbreviations.tsv"]
    )
    if extra:
        normalizer = Normalizer({**_file_entries(normalizer), **extra}, normalizer.style)
    return TtsService(cfg, content_root(settings) / "tts_cache", normalizer)


def _file_entries(normalizer: Normalizer) -> dict[str, str]:
    from broadcasts.normalize import default_abbreviations

    defaults = default_abbreviations()
    return {k: v for k, v in normalizer.abbreviations.items() if defaults.get(k) != v}


def new_content_id() -> str:
    return CONTENT_ID_PREFIX + secrets.token_hex(12)


class ContentStore:
    def __init__(
        self, settings: Settings, db: Database, content_settings: ContentSettings | None = None
    ) -> None:
        self.settings = settings
        self.db = db
        self.cfg = content_settings or ContentSettings()
        self.root = content_root(settings)
        self.files_dir = self.root / "files"
        self.tmp_dir = self.root / "tmp"
        self.assets_dir = self.root / "assets"
        self.tts_cache_dir = self.root / "tts_cache"
        self.previews_dir = self.root / "previews"
        self.pipeline = AudioPipeline(self.cfg, self.assets_dir)
        self._tts: TtsService | None = None
        self._tts_extra: dict[str, str] = {}

    @property
    def tts(self) -> TtsService:
        """Speech for this store: the province's abbreviations come from the setting's file,
        from ``<data_dir>/abbreviations.tsv`` when present, and from those added on the web
        (rebuilt when that list changes, so no restart is needed)."""
        from broadcasts import abbreviations

        with self.db.session() as s:
            entries = abbreviations.custom(s)  # a province's list: tens of rows
        if self._tts is None or entries != self._tts_extra:
            self._tts = make_tts(self.settings, self.cfg, entries)
            self._tts_extra = entries
        return self._tts

    # -- adding ----------------------------------------------------------------------------

    def _file_for(self, sha256: str, mime: str) -> Path:
        return self.files_dir / sha256[:2] / f"{sha256}{_EXT_BY_MIME.get(mime, '.bin')}"

    @staticmethod
    def _check_fields(title: str, language: str, source: str, creator: str) -> str:
        clean = " ".join((title or "").split())
        if not clean:
            raise ContentError(
                "empty_title", "Tiêu đề không được để trống.", "The title is required."
            )
        if len(clean) > 300:
            raise ContentError(
                "title_too_long",
                "Tiêu đề dài quá 300 ký tự.",
                "The title is longer than 300 characters.",
            )
        if language not in CONTENT_LANGUAGES:
            raise ContentError(
                "bad_language",
                f"Ngôn ngữ '{language}' không hợp lệ; chọn một trong: "
                f"{', '.join(CONTENT_LANGUAGES)}.",
                f"Invalid language '{language}'.",
            )
        if source not in CONTENT_SOURCES:
            raise ContentError(
                "bad_source", f"Nguồn '{source}' không hợp lệ.", f"Invalid source '{source}'."
            )
        if len(creator) > 64:
            raise ContentError(
                "bad_creator",
                "Tên người tạo dài quá 64 ký tự.",
                "Creator name longer than 64 characters.",
            )
        return clean

    def add_file(
        self,
        path: Path,
        *,
        filename: str,
        title: str,
        language: str = "vi",
        source: str = "upload",
        creator: str = "",
        chime: bool | None = None,
        owner_commune_id: int | None = None,
    ) -> ContentMeta:
        """Run the audio pipeline on ``path`` and store the result. ``path`` is not
        modified or removed. Refusals raise ``ContentError`` and leave nothing behind."""
        return self._add(
            Path(path),
            filename=filename,
            title=title,
            language=language,
            source=source,
            creator=creator,
            chime=chime,
            origin=None,
            owner_commune_id=owner_commune_id,
        )

    def add_speech(
        self,
        path: Path,
        *,
        title: str,
        language: str,
        creator: str,
        origin: TtsOrigin,
        owner_commune_id: int | None = None,
        urgent: bool = False,
    ) -> ContentMeta:
        """Store synthesised speech (a WAV from ``TtsService.speak``) with how it was made;
        ``urgent`` for an emergency's (``AudioPipeline.process``)."""
        return self._add(
            Path(path),
            filename="bulletin.wav",
            title=title,
            language=language,
            source="tts",
            creator=creator,
            chime=None,
            origin=origin,
            owner_commune_id=owner_commune_id,
            urgent=urgent,
        )

    def _add(
        self,
        path: Path,
        *,
        filename: str,
        title: str,
        language: str,
        source: str,
        creator: str,
        chime: bool | None,
        origin: TtsOrigin | None,
        owner_commune_id: int | None = None,
        urgent: bool = False,
    ) -> ContentMeta:
        clean_title = self._check_fields(title, language, source, creator)
        processed = self.pipeline.process(path, filename, self.tmp_dir, chime=chime, urgent=urgent)
        final = self._file_for(processed.sha256, processed.mime)
        try:
            row = self._row(processed, filename, clean_title, language, source, creator, origin)
            row.owner_commune_id = owner_commune_id
            # Row first, file second: a concurrent purge that sees no row for this sha
            # leaves young files alone (grace period), and nobody knows the id yet.
            with self.db.session() as s:
                s.add(row)
            try:
                final.parent.mkdir(parents=True, exist_ok=True)
                if not final.exists():
                    os.replace(processed.path, final)
            except BaseException:
                with self.db.session() as s:  # no row without its file
                    s.delete(s.get(Content, row.id))
                raise
        finally:
            processed.path.unlink(missing_ok=True)
        log.info(
            "content %s stored: %r, %d ms, %.1f LUFS",
            row.id,
            clean_title,
            processed.duration_ms,
            processed.loudness_lufs,
        )
        return _meta(row)

    @staticmethod
    def _row(
        p: ProcessedAudio,
        filename: str,
        title: str,
        language: str,
        source: str,
        creator: str,
        origin: TtsOrigin | None,
    ) -> Content:
        return Content(
            id=new_content_id(),
            title=title,
            title_folded=fold(title),
            language=language,
            source=source,
            creator=creator,
            created_ms=now_ms(),
            sha256=p.sha256,
            bytes=p.bytes,
            duration_ms=p.duration_ms,
            mime=p.mime,
            channels=p.channels,
            sample_rate=p.sample_rate,
            loudness_lufs=round(p.loudness_lufs, 2),
            true_peak_dbtp=round(p.true_peak_dbtp, 2),
            original_filename=filename[:255],
            source_format=p.source_format[:60],
            source_duration_ms=p.source_duration_ms,
            spoken_text=origin.spoken_text if origin else None,
            tts_engine=origin.engine if origin else None,
            tts_voice=origin.voice if origin else None,
            tts_note=(origin.note or None)[:400] if origin and origin.note else None,
        )

    # -- reading ---------------------------------------------------------------------------

    def _load(self, content_id: str) -> Content:
        if not CONTENT_ID_RE.match(content_id or ""):
            raise ContentNotFound(content_id)
        with self.db.session() as s:
            row = s.get(Content, content_id)
            if row is None:
                raise ContentNotFound(content_id)
            s.expunge(row)
            return row

    def get(self, content_id: str) -> ContentMeta:
        return _meta(self._load(content_id))

    def details(self, content_id: str) -> ContentDetails:
        return _details(self._load(content_id))

    def list(
        self,
        *,
        offset: int = 0,
        limit: int = 50,
        language: str | None = None,
        source: str | None = None,
        q: str | None = None,
        scope: frozenset[int] | None = None,
        shared: bool | None = None,
    ) -> tuple[list[ContentDetails], int]:
        """Newest first, with the total for paging. ``scope``: the viewer's communes (None =
        whole province); only their own items and the province's are listed. ``shared``:
        True = only the province's library, False = only the communes' own items."""
        query = select(Content)
        if shared is True:
            query = query.where(Content.owner_commune_id.is_(None))
        elif shared is False:
            query = query.where(Content.owner_commune_id.is_not(None))
        if scope is not None:
            query = query.where(
                or_(Content.owner_commune_id.is_(None), Content.owner_commune_id.in_(sorted(scope)))
            )
        if language:
            query = query.where(Content.language == language)
        if source:
            query = query.where(Content.source == source)
        if q and fold(q):
            query = query.where(Content.title_folded.contains(fold(q), autoescape=True))
        with self.db.session() as s:
            total = s.scalar(select(func.count()).select_from(query.subquery())) or 0
            rows = s.scalars(
                query.order_by(Content.created_ms.desc(), Content.id)
                .offset(max(0, offset))
                .limit(max(1, min(limit, 500)))
            ).all()
            return [_details(r) for r in rows], int(total)

    # -- the library: rename, delete ------------------------------------------------------

    def rename(self, content_id: str, title: str) -> ContentMeta:
        """A new title (and its search key); the audio, its checksum and the broadcasts that
        use it are unchanged: they refer to the id, not the title."""
        clean = self._check_fields(title, "vi", "upload", "")
        with self.db.session() as s:
            row = s.get(Content, content_id) if CONTENT_ID_RE.match(content_id or "") else None
            if row is None:
                raise ContentNotFound(content_id)
            row.title = clean
            row.title_folded = fold(clean)
            s.flush()
            s.expunge(row)
        log.info("content %s renamed to %r", content_id, clean)
        return _meta(row)

    def delete(
        self, content_id: str, *, users_of: Callable[[Session, str], list[str]]
    ) -> ContentMeta:
        """Delete an item nobody still needs. ``users_of`` names the bulletins still in play
        that use it (the scheduler knows them; this package does not know broadcasts); when
        there are any the item is kept and ``ContentError`` (409) names them. The check and
        the delete share one transaction. The file is left to the retention sweep (``purge``),
        which removes files no item refers to after a grace period: deleting it here could race
        an upload of the same recording that found it already on disk."""
        with self.db.session() as s:
            row = s.get(Content, content_id) if CONTENT_ID_RE.match(content_id or "") else None
            if row is None:
                raise ContentNotFound(content_id)
            users = users_of(s, content_id)
            if users:
                shown = ", ".join(users[:5]) + (
                    f" và {len(users) - 5} bản tin khác" if len(users) > 5 else ""
                )
                raise ContentError(
                    "content_in_use",
                    f"Không xóa được «{row.title}»: bản tin {shown} vẫn dùng âm thanh này. "
                    "Hãy hủy các bản tin đó hoặc chờ chúng phát xong rồi xóa.",
                    f"Cannot delete «{row.title}»: still used by {', '.join(users)}.",
                    http_status=409,
                )
            meta = _meta(row)
            s.delete(row)
        log.info("content %s deleted: %r", content_id, meta.title)
        return meta

    def path(self, content_id: str) -> Path:
        return self.file(content_id)[1]

    def file(self, content_id: str) -> tuple[ContentMeta, Path]:
        """The record and its audio file in one read: a node's download (``/media``) needs
        both, and 5,000 nodes fetch an alert at once (bench/media.py)."""
        row = self._load(content_id)
        p = self._file_for(row.sha256, row.mime)
        if not p.exists():
            raise ContentError(
                "file_missing",
                f"Tệp âm thanh của nội dung '{content_id}' không còn trên máy chủ.",
                f"The audio file of '{content_id}' is missing.",
                http_status=410,
            )
        return _meta(row), p

    # -- node access -----------------------------------------------------------------------

    def node_token(self, content_id: str, node_id: str, now_s: float | None = None) -> str:
        """A token valid for ``cfg.media_token_ttl_s`` from now (see ``broadcasts.tokens``)."""
        now_s = time.time() if now_s is None else now_s
        return node_token(
            self.settings.resolved_secret_key(),
            node_id,
            content_id,
            token_expiry(now_s, self.cfg.media_token_ttl_s),
        )

    def token_status(
        self, content_id: str, node_id: str, token: str, now_s: float | None = None
    ) -> str:
        """ "ok", "expired" or "bad"."""
        return token_status(
            self.settings.resolved_secret_key(),
            node_id,
            content_id,
            token,
            time.time() if now_s is None else now_s,
        )

    def token_ok(self, content_id: str, node_id: str, token: str) -> bool:
        return self.token_status(content_id, node_id, token) == "ok"

    def node_url(self, content_id: str, node_id: str, base_url: str) -> str:
        """The URL ``node_id`` downloads ``content_id`` from (Range-capable, token-bound)."""
        meta = self.get(content_id)
        ext = _EXT_BY_MIME.get(meta.mime, "")
        token = self.node_token(content_id, node_id)
        return (
            f"{base_url.rstrip('/')}/media/{content_id}{ext}"
            f"?node={quote(node_id, safe='')}&token={token}"
        )

    # -- retention -------------------------------------------------------------------------

    def purge(
        self,
        *,
        in_use: Callable[[Session], Collection[str]],
        now: int | None = None,
        retention_days: int | None = None,
    ) -> PurgeReport:
        """Delete items older than the retention period, except those a broadcast that is
        still in play (draft, submitted, approved, scheduled) refers to; then delete files
        no item refers to, stale temporary files and old TTS cache entries. ``in_use`` names
        the items still needed (the scheduler's ``content_in_use``: this package does not
        know broadcasts)."""
        now = now_ms() if now is None else now
        days = retention_days or self.cfg.retention_days
        cutoff = now - days * _DAY_MS
        report = PurgeReport()
        with self.db.session() as s:
            needed = set(in_use(s))
            old = s.scalars(select(Content).where(Content.created_ms < cutoff)).all()
            for row in old:
                if row.id in needed:
                    report.kept_in_use.append(row.id)
                    continue
                report.removed_ids.append(row.id)
                s.delete(row)
            s.flush()
            live_shas = set(s.scalars(select(Content.sha256).distinct()))
        report.removed_files += self._sweep_files(live_shas)
        if report.removed_ids:
            log.info(
                "purged %d content items (%d kept: still scheduled)",
                len(report.removed_ids),
                len(report.kept_in_use),
            )
        return report

    def _sweep_files(self, live_shas: set[str]) -> int:
        """File ages are judged by the wall clock (file times are real), whatever ``now``
        the retention was computed for."""
        removed = 0
        grace_s = 3600  # a file younger than this may belong to an add_file in progress
        now_s = time.time()
        if self.files_dir.exists():
            for f in self.files_dir.glob("*/*"):
                if f.stem not in live_shas and now_s - f.stat().st_mtime > grace_s:
                    f.unlink(missing_ok=True)
                    removed += 1
        for folder, max_age_s in (
            (self.tmp_dir, 86400.0),
            (self.previews_dir, 7 * 86400.0),
            (self.tts_cache_dir, self.cfg.retention_days * 86400.0),
        ):
            if folder.exists():
                for f in folder.rglob("*"):
                    if f.is_file() and now_s - f.stat().st_mtime > max_age_s:
                        f.unlink(missing_ok=True)
        return removed
