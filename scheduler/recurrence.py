"""When a broadcast plays: a single time, or an RFC 5545 recurrence rule in Asia/Ho_Chi_Minh.

dateutil's ``rrule`` does the calendar arithmetic (month ends, leap years, "every Monday and
Thursday", "the 1st of each month"), which is exactly what hand-written date loops get wrong.
Occurrences are computed on naive local wall-clock time and then placed in the zone, so
"06:00 every day" stays 06:00 whatever the UTC offset, and are returned as epoch ms.
Exceptions are local dates on which the rule does not play (a holiday, a festival day).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import cast
from zoneinfo import ZoneInfo

from dateutil.rrule import rrule, rrulestr

from loa.timeutil import ICT
from scheduler.errors import InvalidBroadcast

ALLOWED_FREQS = ("DAILY", "WEEKLY", "MONTHLY", "YEARLY")
_FORBIDDEN_PARTS = ("DTSTART", "BYSECOND")
_DATE_FORMATS = ("%Y-%m-%d", "%d/%m/%Y")
# Times outside this range are typing mistakes (and would overflow date arithmetic).
MIN_YEAR, MAX_YEAR = 2000, 2100
# One search for occurrences looks at most this many periods (days, weeks, ...) ahead.
SEARCH_PERIODS = 2_000
MAX_COUNT = 1_000
MAX_INTERVAL = 1_000
MAX_SLOTS_PER_DAY = 48


def parse_local_date(text: str) -> date:
    """A date as ISO ``YYYY-MM-DD`` or Vietnamese ``dd/mm/yyyy``."""
    text = str(text).strip()
    for fmt in _DATE_FORMATS:
        try:
            parsed = datetime.strptime(text, fmt).date()
        except ValueError:
            continue
        if not MIN_YEAR <= parsed.year <= MAX_YEAR:
            raise InvalidBroadcast(f"Ngày phải trong khoảng năm {MIN_YEAR}–{MAX_YEAR}.")
        return parsed
    raise InvalidBroadcast(f"Ngày không hợp lệ: «{text}» (dùng dd/mm/yyyy hoặc yyyy-mm-dd).")


def parse_instant(text: str, tz: ZoneInfo = ICT) -> int:
    """An ISO 8601 date-time to epoch ms; without an offset it is local time (Việt Nam)."""
    raw = str(text).strip()
    try:
        dt = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        try:
            dt = datetime.strptime(raw, "%d/%m/%Y %H:%M")
        except ValueError:
            raise InvalidBroadcast(
                f"Thời điểm không hợp lệ: «{raw}» (dùng ISO 8601, ví dụ 2025-03-01T06:00:00+07:00,"
                " hoặc dd/mm/yyyy HH:MM)."
            ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=tz)
    if not MIN_YEAR <= dt.year <= MAX_YEAR:
        raise InvalidBroadcast(f"Thời điểm phải trong khoảng năm {MIN_YEAR}–{MAX_YEAR}.")
    return int(dt.timestamp() * 1000)


def _year_start_ms(year: int) -> int:
    return int(datetime(year, 1, 1, tzinfo=ICT).timestamp() * 1000)


def _end_of_local_day_ms(d: date, tz: ZoneInfo) -> int:
    return int(datetime.combine(d + timedelta(days=1), time(), tzinfo=tz).timestamp() * 1000) - 1


def _split_rule(rule: str) -> tuple[dict[str, str], list[str]]:
    body = rule.strip()
    if body.upper().startswith("RRULE:"):
        body = body[6:]
    if not body or "\n" in body:
        raise InvalidBroadcast("Quy tắc lặp phải là một dòng RRULE, ví dụ FREQ=DAILY;BYDAY=MO,TH.")
    parts: dict[str, str] = {}
    order: list[str] = []
    for chunk in body.strip(";").split(";"):
        key, sep, value = chunk.partition("=")
        key = key.strip().upper()
        if not sep or not key or not value.strip():
            raise InvalidBroadcast(f"Quy tắc lặp không hợp lệ ở «{chunk}».")
        parts[key] = value.strip()
        order.append(key)
    return parts, order


def _until_ms_from_rule(value: str, tz: ZoneInfo) -> int:
    """RRULE's UNTIL: a date (whole local day), a UTC time with Z, or a local time."""
    v = value.strip().upper()
    if re.match(r"\d{4}", v) and not MIN_YEAR <= int(v[:4]) <= MAX_YEAR:
        raise InvalidBroadcast(f"UNTIL phải trong khoảng năm {MIN_YEAR}–{MAX_YEAR}.")
    try:
        if re.fullmatch(r"\d{8}", v):
            return _end_of_local_day_ms(datetime.strptime(v, "%Y%m%d").date(), tz)
        if re.fullmatch(r"\d{8}T\d{6}Z", v):
            return int(
                datetime.strptime(v, "%Y%m%dT%H%M%SZ").replace(tzinfo=ZoneInfo("UTC")).timestamp()
                * 1000
            )
        if re.fullmatch(r"\d{8}T\d{6}", v):
            return int(datetime.strptime(v, "%Y%m%dT%H%M%S").replace(tzinfo=tz).timestamp() * 1000)
    except ValueError:
        pass
    raise InvalidBroadcast(f"UNTIL không hợp lệ: «{value}».")


ALLOWED_PARTS = {
    "FREQ",
    "INTERVAL",
    "COUNT",
    "UNTIL",
    "BYDAY",
    "BYMONTHDAY",
    "BYMONTH",
    "BYHOUR",
    "BYMINUTE",
    "WKST",
}
_MONTH_DAYS = {
    1: 31,
    2: 29,
    3: 31,
    4: 30,
    5: 31,
    6: 30,
    7: 31,
    8: 31,
    9: 30,
    10: 31,
    11: 30,
    12: 31,
}
_BYDAY_RE = re.compile(r"^([+-]?[1-5])?(MO|TU|WE|TH|FR|SA|SU)$")


def _int_list(parts: dict[str, str], key: str, lo: int, hi: int) -> list[int]:
    values = []
    for item in parts[key].split(","):
        item = item.strip()
        if not re.fullmatch(r"[+-]?\d{1,3}", item) or not lo <= abs(int(item)) <= hi:
            raise InvalidBroadcast(f"{key} không hợp lệ: «{item}».")
        if lo == 0 and item.startswith("-"):
            raise InvalidBroadcast(f"{key} không hợp lệ: «{item}».")
        values.append(int(item))
    return values


def _check_parts(parts: dict[str, str]) -> None:
    """Only the parts an officer needs (days, weekdays, months, times), and never a rule that
    can match no date at all: dateutil searches such a rule to the year 9999, which would
    hang the scheduler."""
    unknown = sorted(set(parts) - ALLOWED_PARTS)
    if unknown:
        raise InvalidBroadcast(f"Không hỗ trợ {', '.join(unknown)} trong quy tắc lặp.")
    months = _int_list(parts, "BYMONTH", 1, 12) if "BYMONTH" in parts else list(range(1, 13))
    if any(m < 0 for m in months):
        raise InvalidBroadcast("BYMONTH không hợp lệ.")
    if "BYMONTHDAY" in parts:
        days = _int_list(parts, "BYMONTHDAY", 1, 31)
        if not any(abs(d) <= _MONTH_DAYS[m] for m in months for d in days):
            raise InvalidBroadcast(
                "Quy tắc lặp không bao giờ trúng ngày nào (ngày không có trong các tháng đã chọn)."
            )
    hours = _int_list(parts, "BYHOUR", 0, 23) if "BYHOUR" in parts else [0]
    minutes = _int_list(parts, "BYMINUTE", 0, 59) if "BYMINUTE" in parts else [0]
    if len(set(hours)) * len(set(minutes)) > MAX_SLOTS_PER_DAY:
        raise InvalidBroadcast(f"Tối đa {MAX_SLOTS_PER_DAY} lần phát mỗi ngày.")
    if "BYDAY" in parts:
        for item in parts["BYDAY"].upper().split(","):
            if not _BYDAY_RE.match(item.strip()):
                raise InvalidBroadcast(f"BYDAY không hợp lệ: «{item}» (ví dụ MO,TH hoặc 1MO).")


@dataclass(frozen=True)
class Recurrence:
    """A validated rule. ``rule`` is stored without UNTIL (kept in ``until_ms``) so the bound
    is always interpreted the same way."""

    rule: str
    dtstart_ms: int
    until_ms: int | None = None
    exdates: tuple[str, ...] = field(default_factory=tuple)
    tz_name: str = "Asia/Ho_Chi_Minh"

    @property
    def tz(self) -> ZoneInfo:
        return ZoneInfo(self.tz_name)

    def _rrule(self, until_local: datetime | None = None) -> rrule:
        start_local = datetime.fromtimestamp(self.dtstart_ms / 1000, tz=self.tz).replace(
            tzinfo=None
        )
        # One RRULE line (the parser refuses more) gives an rrule, never an rruleset.
        rr = cast(rrule, rrulestr(self.rule, dtstart=start_local, cache=False))
        return rr.replace(until=until_local) if until_local is not None else rr

    def _to_ms(self, local: datetime) -> int:
        return int(local.replace(tzinfo=self.tz).timestamp() * 1000)

    def _keep(self, local: datetime) -> bool:
        return local.date().isoformat() not in self.exdates

    def _search_cap(self, start_local: datetime) -> datetime:
        """How far one search may look: ``SEARCH_PERIODS`` periods of the rule's frequency,
        never past ``MAX_YEAR``. dateutil walks period by period even when nothing matches
        (``FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30``), so an unbounded search could take minutes."""
        freq = self.rule.upper().split("FREQ=", 1)[1].split(";", 1)[0]
        days = {"DAILY": 1, "WEEKLY": 7, "MONTHLY": 31, "YEARLY": 366}.get(freq, 366)
        cap = datetime(MAX_YEAR, 12, 31, 23, 59, 59)
        try:
            return min(cap, start_local + timedelta(days=days * SEARCH_PERIODS))
        except OverflowError:
            return cap

    def iter_from(self, from_ms: int) -> Iterator[int]:
        """Occurrences (epoch ms) at or after ``from_ms``, in order, within ``until_ms`` and
        the search cap."""
        start = datetime.fromtimestamp(from_ms / 1000, tz=self.tz).replace(tzinfo=None)
        until_local = self._search_cap(start)
        if self.until_ms is not None:
            until_local = min(
                until_local,
                datetime.fromtimestamp(self.until_ms / 1000, tz=self.tz).replace(tzinfo=None),
            )
        if until_local < start:
            return
        rr = self._rrule(until_local)
        # rrule works in whole seconds; step back one so a slot at from_ms itself is included.
        for local in rr.xafter(start - timedelta(seconds=1), inc=False):
            ms = self._to_ms(local)
            if self.until_ms is not None and ms > self.until_ms:
                return
            if ms >= from_ms and self._keep(local):
                yield ms

    def next_after(self, after_ms: int) -> int | None:
        """The first occurrence strictly after ``after_ms``."""
        for ms in self.iter_from(after_ms + 1):
            return ms
        return None

    def between(self, from_ms: int, to_ms: int, limit: int = 10_000) -> list[int]:
        """Occurrences in ``[from_ms, to_ms)``, at most ``limit`` of them."""
        out: list[int] = []
        for ms in self.iter_from(from_ms):
            if ms >= to_ms or len(out) >= limit:
                break
            out.append(ms)
        return out

    def first(self, n: int, from_ms: int) -> list[int]:
        out: list[int] = []
        for ms in self.iter_from(from_ms):
            out.append(ms)
            if len(out) >= n:
                break
        return out


def build_recurrence(
    rule: str,
    dtstart_ms: int,
    *,
    until: str | int | None = None,
    exceptions: list[str] | None = None,
    tz: ZoneInfo = ICT,
) -> Recurrence:
    """Validate a user's RRULE with its bounds; raises :class:`InvalidBroadcast` in Vietnamese.

    ``until`` may be a local date (the whole day counts), an ISO date-time, or epoch ms."""
    parts, order = _split_rule(rule)
    for bad in _FORBIDDEN_PARTS:
        if bad in parts:
            raise InvalidBroadcast(f"Không dùng {bad} trong quy tắc lặp; giờ phát lấy từ start_at.")
    freq = parts.get("FREQ", "").upper()
    if freq not in ALLOWED_FREQS:
        raise InvalidBroadcast(
            "Chỉ hỗ trợ lặp theo ngày, tuần, tháng hoặc năm (FREQ=DAILY|WEEKLY|MONTHLY|YEARLY)."
        )
    if "COUNT" in parts and ("UNTIL" in parts or until is not None):
        raise InvalidBroadcast("Không dùng đồng thời COUNT và ngày kết thúc (UNTIL).")

    until_candidates: list[int] = []
    if "UNTIL" in parts:
        until_candidates.append(_until_ms_from_rule(parts.pop("UNTIL"), tz))
        order.remove("UNTIL")
    if until is not None and until != "":
        if isinstance(until, int) and not isinstance(until, bool):
            if not _year_start_ms(MIN_YEAR) <= until < _year_start_ms(MAX_YEAR + 1):
                raise InvalidBroadcast(
                    f"Ngày kết thúc phải trong khoảng năm {MIN_YEAR}–{MAX_YEAR}."
                )
            until_candidates.append(until)
        elif re.fullmatch(r"\d{4}-\d{2}-\d{2}|\d{2}/\d{2}/\d{4}", str(until).strip()):
            until_candidates.append(_end_of_local_day_ms(parse_local_date(str(until)), tz))
        else:
            until_candidates.append(parse_instant(str(until), tz))
    until_ms = min(until_candidates) if until_candidates else None
    if until_ms is not None and until_ms < dtstart_ms:
        raise InvalidBroadcast("Ngày kết thúc lặp phải sau ngày bắt đầu.")

    _check_parts(parts)
    for key, top in (("INTERVAL", MAX_INTERVAL), ("COUNT", MAX_COUNT)):
        if key in parts and not (parts[key].isdecimal() and 1 <= int(parts[key]) <= top):
            raise InvalidBroadcast(f"{key} phải là số nguyên từ 1 đến {top}.")
    count = int(parts.pop("COUNT")) if "COUNT" in parts else None
    if count is not None:
        order.remove("COUNT")
    clean = ";".join(f"{k}={parts[k]}" for k in order)
    exdates = tuple(sorted({parse_local_date(x).isoformat() for x in (exceptions or [])}))
    recurrence = Recurrence(
        rule=clean, dtstart_ms=dtstart_ms, until_ms=until_ms, exdates=exdates, tz_name=tz.key
    )
    try:
        recurrence._rrule()
    except (ValueError, TypeError) as exc:
        raise InvalidBroadcast(f"Quy tắc lặp không hợp lệ: {exc}") from None
    if count is not None:
        # COUNT becomes an end time, so every later computation has the same simple bound.
        # (RFC 5545 counts exception dates among the COUNT occurrences; so do we.)
        plain = Recurrence(rule=clean, dtstart_ms=dtstart_ms, until_ms=until_ms, tz_name=tz.key)
        slots = plain.first(count, dtstart_ms)
        if slots:
            recurrence = Recurrence(
                rule=clean,
                dtstart_ms=dtstart_ms,
                until_ms=slots[-1],
                exdates=exdates,
                tz_name=tz.key,
            )
    return recurrence


def describe_slot(ms: int, tz: ZoneInfo = ICT) -> str:
    """``06:00 01/03/2025`` — how a slot is named in messages to officers."""
    return datetime.fromtimestamp(ms / 1000, tz=tz).strftime("%H:%M %d/%m/%Y")
