"""Reporting periods for indicator 8.3, as the province names them.

A period is a half-open window ``[start_ms, end_ms)`` whose boundaries are midnights in
Asia/Ho_Chi_Minh: the 2026 third quarter starts at 01/07/2026 00:00 ICT, so a transition at
30/09/2026 23:59:59 ICT belongs to it and one at 01/10/2026 00:00 ICT does not. Everything
downstream (availability, weeks, airings) uses these bounds and never a UTC date.

Accepted forms (case-insensitive): ``2026-Q3`` / ``Q3/2026``, ``2026-H1`` / ``H1/2026``,
``2026``, ``2026-07`` / ``07/2026``, ``last30`` (any ``lastN``, N days up to now) and explicit
ranges of whole days with the end day included: ``2026-07-01..2026-09-30`` or
``01/07/2026-30/09/2026``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from indicator.errors import PeriodError
from loa.timeutil import ICT, format_date

DAY_MS = 86_400_000
WEEK_MS = 7 * DAY_MS
MIN_YEAR, MAX_YEAR = 2000, 2100
MAX_LAST_DAYS = 3660

_QUARTER = re.compile(r"^(?:(\d{4})-?q([1-4])|q([1-4])[/-](\d{4}))$")
_HALF = re.compile(r"^(?:(\d{4})-?h([12])|h([12])[/-](\d{4}))$")
_YEAR = re.compile(r"^(\d{4})$")
_MONTH = re.compile(r"^(?:(\d{4})-(\d{1,2})|(\d{1,2})/(\d{4}))$")
_LAST = re.compile(r"^last-?(\d{1,4})(?:d|days?)?$")
_DATE = r"\d{4}-\d{1,2}-\d{1,2}|\d{1,2}/\d{1,2}/\d{4}"
_RANGE = re.compile(rf"^({_DATE})\s*(?:\.\.|–|—|-|đến|to)\s*({_DATE})$")

FORMS_HELP = "2026-Q3, 2026-H1, 2026, 2026-07, last30 hoặc khoảng ngày 01/07/2026-30/09/2026"


@dataclass(frozen=True)
class Period:
    """One reporting window with the names a report prints for it."""

    key: str  # canonical form, e.g. "2026-Q3"
    kind: str  # "quarter" | "half" | "year" | "month" | "last_days" | "range"
    start_ms: int
    end_ms: int  # exclusive
    label: str  # "Quý 3/2026"
    title: str  # words after "chỉ tiêu 8.3 ...": "quý 3 năm 2026"

    @property
    def first_day(self) -> str:
        return format_date(self.start_ms)

    @property
    def last_day(self) -> str:
        return format_date(self.end_ms - 1)

    def evaluation_window(self, now_ms: int) -> tuple[int, int]:
        """The part of the period that has happened: an ongoing quarter is judged so far.

        A period that has not started has nothing to judge, which is the caller's error."""
        if self.start_ms >= now_ms:
            raise PeriodError(f"Kỳ {self.label} chưa bắt đầu (bắt đầu ngày {self.first_day}).")
        return self.start_ms, min(self.end_ms, now_ms)


def _midnight_ms(d: date) -> int:
    return int(datetime(d.year, d.month, d.day, tzinfo=ICT).timestamp() * 1000)


def _year(text: str) -> int:
    year = int(text)
    if not MIN_YEAR <= year <= MAX_YEAR:
        raise PeriodError(f"Năm {year} nằm ngoài khoảng {MIN_YEAR}-{MAX_YEAR}.")
    return year


def parse_day(text: str) -> date:
    """A calendar day written dd/mm/yyyy (or ISO yyyy-mm-dd)."""
    text = text.strip()
    if not re.fullmatch(_DATE, text):
        raise PeriodError(f"Ngày '{text}' không đúng dạng dd/mm/yyyy.")
    try:
        if "/" in text:
            d, m, y = (int(p) for p in text.split("/"))
        else:
            y, m, d = (int(p) for p in text.split("-"))
        day = date(y, m, d)
    except ValueError:
        raise PeriodError(f"Ngày '{text}' không tồn tại.") from None
    _year(str(day.year))
    return day


def quarter(year: int, q: int) -> Period:
    start = date(year, 3 * q - 2, 1)
    end = date(year + 1, 1, 1) if q == 4 else date(year, 3 * q + 1, 1)
    return Period(
        f"{year}-Q{q}",
        "quarter",
        _midnight_ms(start),
        _midnight_ms(end),
        f"Quý {q}/{year}",
        f"quý {q} năm {year}",
    )


def half_year(year: int, h: int) -> Period:
    start = date(year, 1 if h == 1 else 7, 1)
    end = date(year, 7, 1) if h == 1 else date(year + 1, 1, 1)
    words = f"6 tháng {'đầu' if h == 1 else 'cuối'} năm {year}"
    return Period(f"{year}-H{h}", "half", _midnight_ms(start), _midnight_ms(end), words, words)


def whole_year(year: int) -> Period:
    return Period(
        str(year),
        "year",
        _midnight_ms(date(year, 1, 1)),
        _midnight_ms(date(year + 1, 1, 1)),
        f"Năm {year}",
        f"năm {year}",
    )


def month(year: int, m: int) -> Period:
    if not 1 <= m <= 12:
        raise PeriodError(f"Tháng {m} không tồn tại.")
    end = date(year + 1, 1, 1) if m == 12 else date(year, m + 1, 1)
    return Period(
        f"{year}-{m:02d}",
        "month",
        _midnight_ms(date(year, m, 1)),
        _midnight_ms(end),
        f"Tháng {m}/{year}",
        f"tháng {m} năm {year}",
    )


def last_days(days: int, now_ms: int) -> Period:
    if not 1 <= days <= MAX_LAST_DAYS:
        raise PeriodError(f"Số ngày phải từ 1 đến {MAX_LAST_DAYS}, nhận được {days}.")
    start = now_ms - days * DAY_MS
    dates = f"{format_date(start)} – {format_date(now_ms - 1)}"
    return Period(
        f"last{days}",
        "last_days",
        start,
        now_ms,
        f"{days} ngày gần nhất ({dates})",
        f"{days} ngày gần nhất (từ {format_date(start)} đến {format_date(now_ms - 1)})",
    )


def day_range(first: date, last: date) -> Period:
    """Whole days ``first``..``last``, both included (as a person writes a range)."""
    if last < first:
        raise PeriodError(f"Ngày kết thúc {last:%d/%m/%Y} trước ngày bắt đầu {first:%d/%m/%Y}.")
    start, end = _midnight_ms(first), _midnight_ms(last + timedelta(days=1))
    text = f"từ {first:%d/%m/%Y} đến {last:%d/%m/%Y}"
    return Period(
        f"{first.isoformat()}..{last.isoformat()}",
        "range",
        start,
        end,
        text[0].upper() + text[1:],
        text,
    )


def parse_period(text: str | None, *, now_ms: int, default: str = "last30") -> Period:
    """Read a period as a user types it; raise ``PeriodError`` with the accepted forms."""
    raw = (text or "").strip() or default
    value = raw.lower().replace(" ", "") if "/" not in raw else raw.lower().strip()
    if m := _QUARTER.match(value):
        year, q = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        return quarter(_year(year), int(q))
    if m := _HALF.match(value):
        year, h = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        return half_year(_year(year), int(h))
    if m := _YEAR.match(value):
        return whole_year(_year(m.group(1)))
    if m := _LAST.match(value):
        return last_days(int(m.group(1)), now_ms)
    if m := _RANGE.match(raw.strip()):
        return day_range(parse_day(m.group(1)), parse_day(m.group(2)))
    if m := _MONTH.match(value):
        year, mo = (m.group(1), m.group(2)) if m.group(1) else (m.group(4), m.group(3))
        return month(_year(year), int(mo))
    raise PeriodError(f"Không hiểu kỳ báo cáo '{raw}'. Dạng hợp lệ: {FORMS_HELP}.")


def weeks(start_ms: int, end_ms: int) -> list[tuple[int, int]]:
    """Consecutive 7-day windows from ``start_ms``; a tail shorter than a week joins the last.

    Why not calendar weeks: a quarter starting on a Wednesday would begin and end with
    stubs of a few days, and a stub with no broadcast would fail a commune that airs every
    Monday. Merging the tail keeps every "week" between 7 and 13 days long."""
    if end_ms <= start_ms:
        return []
    count = max(1, (end_ms - start_ms) // WEEK_MS)
    bounds = [start_ms + i * WEEK_MS for i in range(count)] + [end_ms]
    return list(zip(bounds[:-1], bounds[1:], strict=True))


def week_index(slot_ms: int, start_ms: int, n_weeks: int) -> int:
    """Index into ``weeks(start, end)`` of a time inside the window."""
    return min((slot_ms - start_ms) // WEEK_MS, n_weeks - 1)
