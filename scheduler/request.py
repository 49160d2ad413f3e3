"""Reading a broadcast request (API body, CLI arguments) into a checked, typed form.

Validation is done here rather than by a Pydantic schema so that every refusal carries a
Vietnamese sentence naming the field, which is what a commune officer on a phone needs.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from pydantic import ValidationError

from loa.protocol import (
    PRIORITY_RANK,
    TONE_HZ,
    TONE_MAX_COUNT,
    TONE_MAX_OFF_MS,
    TONE_MAX_ON_MS,
    Tone,
)
from scheduler.errors import InvalidBroadcast
from scheduler.recurrence import Recurrence, build_recurrence, parse_instant
from scheduler.targets import normalize_targets

PRIORITY_LABELS = {"normal": "Thường", "priority": "Ưu tiên", "emergency": "Khẩn cấp"}
MAX_REPEAT = 20
MAX_TITLE = 300
MAX_TTS_CHARS = 20_000
# A requested start this close to "now" in the past is taken as "now" (clock drift, typing).
PAST_TOLERANCE_MS = 5_000
MSG_NO_TIME = (
    'Chưa chọn giờ phát: hãy nhập ngày và giờ phát, hoặc chọn «Phát ngay» («start_at»: "now").'
)
KNOWN_FIELDS = {
    "tone",
    "title",
    "tts_text",
    "content_id",
    "stream",
    "stream_url",
    "language",
    "voice",
    "engine",
    "targets",
    "start_at",
    "recurrence",
    "priority",
    "volume",
    "repeat",
    "confirm",
    "draft",
    "duration_s",
}


@dataclass
class BroadcastRequest:
    title: str
    targets: dict[str, Any]
    priority: str = "normal"
    tts_text: str | None = None
    content_id: str | None = None
    stream: bool = False
    stream_url: str | None = None
    language: str = "vi"
    voice: str | None = None
    engine: str | None = None
    start_at_ms: int | None = None  # None = as soon as possible
    recurrence: Recurrence | None = None
    volume: int | None = None
    repeat: int = 1
    confirm: bool = False
    draft: bool = False
    duration_s: int | None = None
    # A node-made warning tone before the content (``loa.protocol.Tone``; emergency alerts).
    tone: Tone | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def int_field(payload: dict[str, Any], key: str, lo: int, hi: int, label: str) -> int | None:
    value = payload.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or int(value) != value:
        raise InvalidBroadcast(f"{label} phải là số nguyên từ {lo} đến {hi}.")
    if not lo <= int(value) <= hi:
        raise InvalidBroadcast(f"{label} phải trong khoảng {lo}–{hi}.")
    return int(value)


def _bool_field(payload: dict[str, Any], key: str) -> bool:
    value = payload.get(key, False)
    if not isinstance(value, bool):
        raise InvalidBroadcast(f"«{key}» phải là true hoặc false.")
    return value


def parse_when(
    payload: dict[str, Any], now_ms: int, *, allow_past_recurrence: bool = True
) -> tuple[int | None, Recurrence | None]:
    """``start_at`` (ISO 8601, local time when no offset) and an optional ``recurrence``."""
    start_raw = payload.get("start_at")
    start_ms = None
    if isinstance(start_raw, str) and not start_raw.strip():
        # An empty "Giờ phát" must never mean "in a minute": the officer says "now" or a time.
        raise InvalidBroadcast(MSG_NO_TIME)
    if start_raw not in (None, "now"):
        start_ms = parse_instant(start_raw)
    rec_raw = payload.get("recurrence")
    if rec_raw in (None, "", {}):
        if start_ms is not None and start_ms < now_ms - PAST_TOLERANCE_MS:
            raise InvalidBroadcast("Thời điểm phát đã qua; hãy chọn một thời điểm trong tương lai.")
        if start_ms is not None and start_ms < now_ms:
            start_ms = now_ms
        return start_ms, None
    if isinstance(rec_raw, str):
        rec_raw = {"rrule": rec_raw}
    if not isinstance(rec_raw, dict) or not isinstance(rec_raw.get("rrule"), str):
        raise InvalidBroadcast("«recurrence» cần trường «rrule», ví dụ FREQ=DAILY.")
    if start_ms is None:
        raise InvalidBroadcast("Lịch lặp cần «start_at»: ngày và giờ phát đầu tiên.")
    exceptions = rec_raw.get("exceptions") or []
    if not isinstance(exceptions, list):
        raise InvalidBroadcast("«recurrence.exceptions» phải là danh sách ngày.")
    recurrence = build_recurrence(
        rec_raw["rrule"],
        start_ms,
        until=rec_raw.get("until"),
        exceptions=[str(x) for x in exceptions],
    )
    if recurrence.next_after(now_ms - 1) is None:
        raise InvalidBroadcast("Lịch lặp không còn lần phát nào trong tương lai.")
    if not allow_past_recurrence and start_ms < now_ms - PAST_TOLERANCE_MS:
        raise InvalidBroadcast("Thời điểm phát đã qua; hãy chọn một thời điểm trong tương lai.")
    return start_ms, recurrence


def parse_request(payload: Any, now_ms: int) -> BroadcastRequest:
    if not isinstance(payload, dict):
        raise InvalidBroadcast("Yêu cầu phải là một đối tượng JSON.")
    unknown = sorted(set(payload) - KNOWN_FIELDS)
    if unknown:
        raise InvalidBroadcast(f"Trường không rõ: {', '.join(unknown)}.")
    title = payload.get("title")
    if not isinstance(title, str) or not title.strip():
        raise InvalidBroadcast("Thiếu tiêu đề bản tin («title»).")
    if len(title) > MAX_TITLE:
        raise InvalidBroadcast(f"Tiêu đề dài quá {MAX_TITLE} ký tự.")

    tts_text = payload.get("tts_text")
    content_id = payload.get("content_id")
    stream = _bool_field(payload, "stream")
    stream_url = payload.get("stream_url")
    sources = [tts_text is not None, content_id is not None, stream or stream_url is not None]
    if sum(sources) != 1:
        raise InvalidBroadcast(
            "Chọn đúng một nguồn phát: «tts_text» (đọc văn bản), "
            "«content_id» (tệp đã tải lên) hoặc «stream» (phát trực tiếp)."
        )
    if tts_text is not None:
        if not isinstance(tts_text, str) or not tts_text.strip():
            raise InvalidBroadcast("Nội dung cần đọc («tts_text») đang trống.")
        if len(tts_text) > MAX_TTS_CHARS:
            raise InvalidBroadcast(f"Nội dung cần đọc dài quá {MAX_TTS_CHARS} ký tự.")
    if content_id is not None and (not isinstance(content_id, str) or not content_id.strip()):
        raise InvalidBroadcast("«content_id» không hợp lệ.")
    if stream_url is not None and (
        not isinstance(stream_url, str) or not stream_url.startswith(("http://", "https://"))
    ):
        raise InvalidBroadcast("«stream_url» phải là địa chỉ http(s) của luồng phát trực tiếp.")

    priority = payload.get("priority", "normal")
    if priority not in PRIORITY_RANK:
        raise InvalidBroadcast(
            "Mức ưu tiên phải là normal (thường), priority (ưu tiên) hoặc emergency (khẩn cấp)."
        )
    language = payload.get("language", "vi")
    if not isinstance(language, str) or not language.strip():
        raise InvalidBroadcast("«language» không hợp lệ.")

    for key in ("voice", "engine"):
        value = payload.get(key)
        if value is not None and (not isinstance(value, str) or len(value) > 100):
            raise InvalidBroadcast(f"«{key}» phải là tên giọng đọc / bộ đọc (chuỗi ngắn).")
    if len(language) > 8:
        raise InvalidBroadcast("«language» không hợp lệ.")

    start_ms, recurrence = parse_when(payload, now_ms)
    return BroadcastRequest(
        title=title.strip(),
        targets=normalize_targets(payload.get("targets")),
        priority=priority,
        tts_text=tts_text.strip() if isinstance(tts_text, str) else None,
        content_id=content_id.strip() if isinstance(content_id, str) else None,
        stream=stream or stream_url is not None,
        stream_url=stream_url,
        language=language.strip(),
        voice=payload.get("voice"),
        engine=payload.get("engine"),
        start_at_ms=start_ms,
        recurrence=recurrence,
        volume=int_field(payload, "volume", 0, 100, "Âm lượng («volume»)"),
        repeat=int_field(payload, "repeat", 1, MAX_REPEAT, "Số lần phát lặp («repeat»)") or 1,
        confirm=_bool_field(payload, "confirm"),
        draft=_bool_field(payload, "draft"),
        duration_s=int_field(
            payload, "duration_s", 10, 6 * 3600, "Thời lượng phát trực tiếp («duration_s»)"
        ),
        tone=_tone_field(payload, stream=stream or stream_url is not None),
    )


def _tone_field(payload: dict[str, Any], *, stream: bool) -> Tone | None:
    """``tone``: a warning tone the nodes make themselves before a file (never a stream)."""
    raw = payload.get("tone")
    if raw is None:
        return None
    if stream:
        raise InvalidBroadcast(
            "Tín hiệu cảnh báo («tone») chỉ dùng với tệp âm thanh, không với phát trực tiếp."
        )
    try:
        return Tone.model_validate(raw)
    except ValidationError as exc:
        where = ", ".join(".".join(map(str, e["loc"])) or "tone" for e in exc.errors()[:3])
        raise InvalidBroadcast(
            f"Tín hiệu cảnh báo («tone») không hợp lệ ({where}): cần hz {TONE_HZ[0]}–{TONE_HZ[1]}, "
            f"on_ms 100–{TONE_MAX_ON_MS}, off_ms 0–{TONE_MAX_OFF_MS}, count 1–{TONE_MAX_COUNT}."
        ) from None
