"""``loa tts ...`` and ``loa content ...``.

loa tts normalize "UBND xã thông báo lúc 17h30"     # prints the spoken form
loa tts say "Kính thưa bà con..." -o ban-tin.mp3 [--engine espeak|gtts|piper]
loa content add ghi-am.m4a --title "Lịch tiêm phòng" --language vi
loa content list [--language tay] [--search "tiem phong"]
loa content purge [--days 365]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Callable, Collection
from pathlib import Path

from sqlalchemy.orm import Session

from broadcasts.audio import AudioPipeline
from broadcasts.errors import ContentError
from broadcasts.models import CONTENT_LANGUAGES
from broadcasts.settings import ContentSettings
from broadcasts.store import ContentStore, content_root, make_tts
from broadcasts.tts import ENGINES
from loa.db import Database
from loa.errors import UserError
from loa.settings import get_settings
from loa.timeutil import format_datetime


def _store(content_settings: ContentSettings | None = None) -> ContentStore:
    settings = get_settings()
    db = Database(settings.resolved_database_url())
    db.create_all()
    return ContentStore(settings, db, content_settings)


def _guard(fn: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
    """Domain errors become the CLI's one-line Vietnamese error (exit 1)."""

    def run(args: argparse.Namespace) -> int:
        try:
            return fn(args)
        except ContentError as exc:
            raise UserError(exc.message) from exc

    return run


def _text_arg(text: str) -> str:
    return sys.stdin.read() if text == "-" else text


# -- tts ------------------------------------------------------------------------------------


def _tts_normalize(args: argparse.Namespace) -> int:
    print(make_tts(get_settings(), ContentSettings()).normalize(_text_arg(args.text)))
    return 0


def _tts_say(args: argparse.Namespace) -> int:
    out = Path(args.output)
    fmt = {".mp3": "mp3", ".ogg": "opus", ".opus": "opus"}.get(out.suffix.lower())
    if fmt is None:
        raise UserError("Tệp ra phải có đuôi .mp3, .ogg hoặc .opus.")
    cfg = ContentSettings()
    if fmt != cfg.delivery_format:
        cfg = cfg.model_copy(update={"delivery_format": fmt})
    settings = get_settings()
    tts = make_tts(settings, cfg)
    pipeline = AudioPipeline(cfg, content_root(settings) / "assets")
    with tempfile.TemporaryDirectory(prefix="loa-tts-") as tmp:
        speech = tts.speak(
            _text_arg(args.text), Path(tmp) / "speech.wav", engine=args.engine, voice=args.voice
        )
        if speech.fallback_reason:
            print(f"Cảnh báo: {speech.fallback_reason}; đã dùng espeak-ng.", file=sys.stderr)
        result = pipeline.process(
            speech.path, "speech.wav", Path(tmp), chime=False if args.no_chime else None
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        shutil.move(str(result.path), out)
    print(
        f"Đã ghi {out} ({result.duration_ms / 1000:.1f} giây, {result.loudness_lufs:.1f} LUFS, "
        f"bộ đọc {speech.engine}/{speech.voice})."
    )
    return 0


# -- content --------------------------------------------------------------------------------


def _content_add(args: argparse.Namespace) -> int:
    path = Path(args.file)
    if not path.is_file():
        raise UserError(f"Không tìm thấy tệp: {path}")
    store = _store()
    meta = store.add_file(
        path,
        filename=path.name,
        title=args.title or path.stem,
        language=args.language,
        source=args.source,
        creator=args.creator,
        chime=False if args.no_chime else None,
    )
    d = store.details(meta.id)
    print(
        f"Đã thêm {meta.id}: «{meta.title}» — {meta.duration_ms / 1000:.1f} giây, "
        f"{meta.bytes / 1024:.0f} KB, {d.loudness_lufs:.1f} LUFS, sha256 {meta.sha256[:12]}…"
    )
    return 0


def _content_list(args: argparse.Namespace) -> int:
    store = _store()
    items, total = store.list(
        offset=args.offset, limit=args.limit, language=args.language, q=args.search
    )
    if not items:
        print("Chưa có nội dung nào." if total == 0 else "Không có mục nào ở trang này.")
        return 0
    for d in items:
        m = d.meta
        print(
            f"{m.id}  {format_datetime(m.created_ms)}  {m.language:<5} {m.source:<8} "
            f"{m.duration_ms / 1000:7.1f} giây  {m.title}"
        )
    print(f"— {len(items)}/{total} mục")
    return 0


def _content_purge(args: argparse.Namespace) -> int:
    report = _store().purge(in_use=args.content_in_use, retention_days=args.days)
    print(
        f"Đã xóa {len(report.removed_ids)} mục, {report.removed_files} tệp; giữ lại "
        f"{len(report.kept_in_use)} mục còn trong lịch phát."
    )
    return 0


def register(
    subparsers: argparse._SubParsersAction, *, content_in_use: Callable[[Session], Collection[str]]
) -> None:
    """``content_in_use``: what the retention must keep (the scheduler knows; see
    ``ContentStore.purge``)."""
    tts = subparsers.add_parser("tts", help="đọc văn bản tiếng Việt thành tiếng")
    tts_sub = tts.add_subparsers(dest="tts_command", metavar="LỆNH", required=True)

    p = tts_sub.add_parser("normalize", help="in cách đọc của văn bản (số, ngày, viết tắt)")
    p.add_argument("text", help="văn bản, hoặc '-' để đọc từ stdin")
    p.set_defaults(func=_guard(_tts_normalize))

    p = tts_sub.add_parser("say", help="tổng hợp giọng nói ra tệp âm thanh")
    p.add_argument("text", help="văn bản, hoặc '-' để đọc từ stdin")
    p.add_argument("-o", "--output", required=True, help="tệp ra (.mp3, .ogg)")
    p.add_argument("--engine", choices=ENGINES, default=None)
    p.add_argument("--voice", default=None, help="giọng, ví dụ vi, vi-vn-x-south")
    p.add_argument("--no-chime", action="store_true", help="không chèn nhạc hiệu")
    p.set_defaults(func=_guard(_tts_say))

    content = subparsers.add_parser("content", help="kho nội dung phát thanh")
    c_sub = content.add_subparsers(dest="content_command", metavar="LỆNH", required=True)

    p = c_sub.add_parser("add", help="thêm tệp ghi âm (MP3, WAV, OGG/Opus, M4A/AAC, FLAC)")
    p.add_argument("file")
    p.add_argument("--title", default="", help="tiêu đề (mặc định: tên tệp)")
    p.add_argument("--language", choices=CONTENT_LANGUAGES, default="vi")
    p.add_argument("--source", choices=("upload", "province"), default="upload")
    p.add_argument("--creator", default="")
    p.add_argument("--no-chime", action="store_true", help="không chèn nhạc hiệu")
    p.set_defaults(func=_guard(_content_add))

    p = c_sub.add_parser("list", help="liệt kê nội dung, mới nhất trước")
    p.add_argument("--language", choices=CONTENT_LANGUAGES, default=None)
    p.add_argument("--search", default=None, help="tìm theo tiêu đề (không dấu cũng được)")
    p.add_argument("--limit", type=int, default=50)
    p.add_argument("--offset", type=int, default=0)
    p.set_defaults(func=_guard(_content_list))

    p = c_sub.add_parser("purge", help="xóa nội dung cũ hơn thời hạn lưu trữ")
    p.add_argument("--days", type=int, default=None, help="thời hạn (ngày)")
    p.set_defaults(func=_guard(_content_purge), content_in_use=content_in_use)
