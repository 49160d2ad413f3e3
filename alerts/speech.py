"""What the loudspeakers say: a Vietnamese text built from the alert by the province's
template for its event type, spoken through the content package's normaliser and TTS; and the
optional warning tones before it, generated here (sine blasts), never shipped as files.

A template is plain text with placeholders in braces. Each line is one sentence; a line whose
placeholders are all empty for this alert is left out, so "Hướng dẫn: {huong_dan}" is not read
when the alert gives no instruction.
"""

from __future__ import annotations

import re
import string
from datetime import datetime

from alerts.cap import CapAlert, Info
from alerts.errors import AlertError
from loa.protocol import TONE_HZ
from loa.text import decimal_vi, fold
from loa.timeutil import ICT

PLACEHOLDERS = {
    "su_kien": "sự kiện (event)",
    "tieu_de": "tiêu đề (headline)",
    "khu_vuc": "khu vực (areaDesc)",
    "huong_dan": "hướng dẫn (instruction)",
    "mo_ta": "mô tả (description)",
    "het_han": "thời điểm hết hiệu lực (expires)",
    "muc_do": "mức độ (severity)",
    "noi_gui": "nơi phát tin (senderName)",
}
DEFAULT_TEMPLATE = (
    "Thông báo khẩn cấp về {su_kien}.\n"
    "{tieu_de}.\n"
    "Khu vực ảnh hưởng: {khu_vuc}.\n"
    "Mức độ: {muc_do}.\n"
    "{huong_dan}\n"
    "Cảnh báo có hiệu lực đến {het_han}.\n"
    "Nguồn tin: {noi_gui}."
)
ALL_CLEAR_TEMPLATE = (
    "Thông báo: cảnh báo {su_kien} cho khu vực {khu_vuc} đã được bãi bỏ. "
    "Bà con trở lại sinh hoạt bình thường và tiếp tục theo dõi thông tin."
)
DRILL_PREFIX = "Đây là tin diễn tập, không phải cảnh báo thật."
SEVERITY_VI = {
    "Extreme": "đặc biệt nguy hiểm",
    "Severe": "nguy hiểm",
    "Moderate": "trung bình",
    "Minor": "nhẹ",
    "Unknown": "",
}
MAX_TEMPLATE = 4000
# A long list of areas is read up to this many names, then "and N other areas": a
# loudspeaker listener needs to know their own place is named, not a minute of names.
MAX_SPOKEN_AREAS = 6


def event_key(event: str) -> str:
    """Templates are looked up by the folded event name ("Lũ quét" -> "lu quet")."""
    return re.sub(r"\s+", " ", fold(event or "")).strip()


def check_template(template: str) -> str:
    if not isinstance(template, str) or not template.strip():
        raise AlertError("bad_template", "Mẫu lời đọc đang trống.", "The template is empty.")
    if len(template) > MAX_TEMPLATE:
        raise AlertError(
            "bad_template",
            f"Mẫu lời đọc dài quá {MAX_TEMPLATE} ký tự.",
            f"Template longer than {MAX_TEMPLATE} characters.",
        )
    try:
        names = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise AlertError(
            "bad_template",
            f"Mẫu lời đọc sai cú pháp ngoặc nhọn: {exc}.",
            f"Template brace syntax error: {exc}.",
        ) from None
    unknown = sorted({n for n in names if n not in PLACEHOLDERS})
    if unknown:
        known = ", ".join("{" + k + "}" for k in PLACEHOLDERS)
        raise AlertError(
            "bad_template",
            f"Chỗ trống không rõ: {', '.join(unknown)}. Dùng được: {known}.",
            f"Unknown placeholders: {', '.join(unknown)}.",
        )
    return template.strip()


def spoken_time(ms: int) -> str:
    dt = datetime.fromtimestamp(ms / 1000, tz=ICT)
    return f"{dt.hour} giờ {dt.minute:02d} phút, ngày {dt:%d/%m/%Y}"


def values(alert: CapAlert, info: Info) -> dict[str, str]:
    areas = [a.desc for i in alert.infos if i is info for a in i.areas] or [
        a.desc for a in alert.areas()
    ]
    areas = list(dict.fromkeys(a for a in areas if a))
    area_text = ", ".join(areas[:MAX_SPOKEN_AREAS])
    if len(areas) > MAX_SPOKEN_AREAS:
        area_text += f" và {len(areas) - MAX_SPOKEN_AREAS} khu vực khác"
    expires = info.expires_ms
    return {
        "su_kien": info.event.strip(),
        "tieu_de": (info.headline or "").strip().rstrip("."),
        "khu_vuc": area_text,
        "huong_dan": (info.instruction or "").strip(),
        "mo_ta": (info.description or "").strip(),
        "het_han": spoken_time(expires) if expires else "",
        "muc_do": SEVERITY_VI.get(info.severity, ""),
        "noi_gui": (info.sender_name or "").strip(),
    }


def render(template: str, vals: dict[str, str]) -> str:
    lines = []
    for line in template.splitlines():
        names = [f for _, f, _, _ in string.Formatter().parse(line) if f]
        if names and all(not vals.get(n) for n in names):
            continue
        text = line.format_map({k: vals.get(k, "") for k in PLACEHOLDERS}).strip()
        if text:
            if text[-1] not in ".!?:;":
                text += "."
            lines.append(text)
    return " ".join(lines)


def compose(alert: CapAlert, info: Info, template: str, *, drill: bool) -> str:
    text = render(template, values(alert, info))
    return f"{DRILL_PREFIX} {text} {DRILL_PREFIX}" if drill else text


def parse_tone_pattern(pattern: str) -> tuple[int, float, float] | None:
    """ "3x20/10" -> (3 blasts, 20 s each, 10 s gaps); "" -> None."""
    pattern = (pattern or "").strip()
    if not pattern:
        return None
    m = re.fullmatch(r"(\d{1,2})x(\d+(?:\.\d+)?)/(\d+(?:\.\d+)?)", pattern)
    if m is None:
        raise AlertError(
            "bad_tone",
            f"Mẫu tín hiệu cảnh báo không đọc được: {pattern!r} "
            "(ví dụ 3x20/10: ba hồi 20 giây, nghỉ 10 giây).",
            f"Unreadable tone pattern {pattern!r} (e.g. 3x20/10).",
        )
    count, blast, gap = int(m.group(1)), float(m.group(2)), float(m.group(3))
    if not (1 <= count <= 10 and 0.2 <= blast <= 60 and 0 <= gap <= 60):
        raise AlertError(
            "bad_tone",
            "Tín hiệu cảnh báo: 1–10 hồi, mỗi hồi 0,2–60 giây, nghỉ tối đa 60 giây.",
            "Tone: 1-10 blasts of 0.2-60 s, gaps up to 60 s.",
        )
    return count, blast, gap


def tone_segment(pattern: str, hz: float):
    """The warning blasts as a pydub segment (a sine with short fades, so no clicks)."""
    from pydub import AudioSegment
    from pydub.generators import Sine

    parsed = parse_tone_pattern(pattern)
    if parsed is None:
        return None
    count, blast, gap = parsed
    out = AudioSegment.silent(duration=0, frame_rate=22050)
    for i in range(count):
        out += (
            Sine(hz, sample_rate=22050)
            .to_audio_segment(duration=int(blast * 1000), volume=-6)
            .fade_in(30)
            .fade_out(30)
        )
        out += AudioSegment.silent(
            duration=int((gap if i < count - 1 else 1.0) * 1000), frame_rate=22050
        )
    return out


def tone_label(pattern: str | None) -> str:
    """What an officer reads for a pattern: "3 hồi 20 giây, nghỉ 10 giây"; "" -> "không có".
    The dashboard translates the same words through its catalogue (``dashboard.i18n``)."""
    parsed = parse_tone_pattern(pattern or "")
    if parsed is None:
        return "không có"
    count, blast, gap = parsed
    text = f"{count} hồi {decimal_vi(blast)} giây"
    return f"{text}, nghỉ {decimal_vi(gap)} giây" if count > 1 and gap else text


def check_tone(pattern: str | None, hz: float | None) -> tuple[str | None, float | None]:
    """A template's own tone, checked before anything is saved: ``pattern`` None = the
    default, "" = none, else readable by ``parse_tone_pattern`` (the one parser); ``hz``
    None = the default, else 50-8000 Hz (what the nodes accept, ``loa.protocol.TONE_HZ``).
    The error names the field, Vietnamese first."""
    if pattern is not None:
        if not isinstance(pattern, str):
            raise AlertError(
                "bad_tone",
                "«tone_pattern» phải là chuỗi, ví dụ 3x20/10.",
                "'tone_pattern' must be a string such as 3x20/10.",
            )
        pattern = pattern.strip()
        try:
            parse_tone_pattern(pattern)
        except AlertError as exc:
            raise AlertError(
                "bad_tone", f"«tone_pattern»: {exc.message}", f"'tone_pattern': {exc.message_en}"
            ) from None
    if hz is not None:
        if (
            isinstance(hz, bool)
            or not isinstance(hz, int | float)
            or not (TONE_HZ[0] <= hz <= TONE_HZ[1])
        ):
            raise AlertError(
                "bad_tone",
                f"«tone_hz»: tần số tín hiệu phải từ {TONE_HZ[0]} đến {TONE_HZ[1]} Hz.",
                f"'tone_hz': the tone frequency must be {TONE_HZ[0]}-{TONE_HZ[1]} Hz.",
            )
        hz = float(hz)
    return pattern, hz


def tone_info(chosen: dict) -> dict:
    """An alert's or template's tone for people and programs: the pattern, its parts
    (``count``, ``on_s``, ``off_s``; None without a tone), ``hz``, ``source`` (the template's
    event key, "template", or "default") and the Vietnamese ``label``."""
    pattern = chosen.get("pattern") or ""
    try:
        parsed = parse_tone_pattern(pattern)
        label = tone_label(pattern)
    except AlertError:  # a bad province setting: shown as it is, refused when airing
        parsed, label = None, f"không đọc được: {pattern}"
    count, on_s, off_s = parsed if parsed is not None else (None, None, None)
    return {
        "pattern": pattern,
        "hz": chosen.get("hz"),
        "source": chosen.get("source", ""),
        "count": count,
        "on_s": on_s,
        "off_s": off_s,
        "label": label,
    }
