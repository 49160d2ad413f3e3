"""Criteria sets with effective dates: which national rules judge a period.

The 2021-2025 national rural-development criteria (Quyết định 318/QĐ-TTg, 2022) numbered the
radio indicator "8.3". Quyết định 51/2025/QĐ-TTg replaced them from 15/02/2026 with a set
that has no "8.3" (docs/indicator.md). Its annex is not available to Loa, so the 2026-2030
set ships with today's rule as its default and the province enters the indicator's code,
wording and thresholds (API ``PUT /api/v1/indicators/criteria/2026-2030`` or
``loa indicator criteria``).

A period is judged by the set in force on each of its days; a period spanning two sets is
split at the boundary (``split``) and every answer names the set(s) it used.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from datetime import date, timedelta

from sqlalchemy import select
from sqlalchemy.orm import Session

from indicator.errors import InvalidInputError, NotFoundError
from indicator.manual_inputs import Thresholds, _share
from indicator.models import CriteriaSet
from indicator.periods import _midnight_ms
from loa.timeutil import now_ms

RADIO_WORDING = "Xã có đài truyền thanh và hệ thống loa đến các thôn"
MAX_TEXT = {"name": 300, "legal_basis": 500, "indicator_code": 32, "indicator_text": 500}


@dataclass(frozen=True)
class Criteria:
    key: str
    name: str
    legal_basis: str
    indicator_code: str
    indicator_text: str
    valid_from: date
    valid_to: date | None
    availability: float | None = None
    aired: float | None = None
    broadcasts_per_week_min: int | None = None
    changed_ms: int = 0
    changed_by: str = ""

    @property
    def label(self) -> str:
        """How a sentence names the indicator: "chỉ tiêu 8.3", or, before the province has
        entered the 2026-2030 code, "chỉ tiêu truyền thanh cơ sở"."""
        return (
            f"chỉ tiêu {self.indicator_code}"
            if self.indicator_code
            else "chỉ tiêu truyền thanh cơ sở"
        )

    @property
    def start_ms(self) -> int:
        return _midnight_ms(self.valid_from)

    @property
    def end_ms(self) -> int | None:
        return None if self.valid_to is None else _midnight_ms(self.valid_to + timedelta(1))

    def thresholds(self, province: Thresholds) -> Thresholds:
        """The province's thresholds with this set's own where it has them."""
        return replace(
            province,
            availability=province.availability if self.availability is None else self.availability,
            aired=province.aired if self.aired is None else self.aired,
            broadcasts_per_week_min=province.broadcasts_per_week_min
            if self.broadcasts_per_week_min is None
            else self.broadcasts_per_week_min,
        )

    def as_dict(self) -> dict:
        return {
            "key": self.key,
            "code": self.indicator_code,
            "name": self.name,
            "legal_basis": self.legal_basis,
            "indicator_text": self.indicator_text,
            "label": self.label,
            "valid_from": self.valid_from.strftime("%d/%m/%Y"),
            "valid_to": self.valid_to.strftime("%d/%m/%Y") if self.valid_to else None,
            "availability_threshold": self.availability,
            "aired_threshold": self.aired,
            "broadcasts_per_week_min": self.broadcasts_per_week_min,
            "changed_by": self.changed_by or None,
        }


BUILT_IN = (
    Criteria(
        "2021-2025",
        "Bộ tiêu chí quốc gia về xã nông thôn mới giai đoạn 2021-2025",
        "Quyết định số 318/QĐ-TTg ngày 08/3/2022 của Thủ tướng Chính phủ",
        "8.3",
        RADIO_WORDING,
        date(2021, 1, 1),
        date(2026, 2, 14),
    ),
    Criteria(
        "2026-2030",
        "Bộ tiêu chí quốc gia về xã nông thôn mới giai đoạn 2026-2030",
        "Quyết định số 51/2025/QĐ-TTg của Thủ tướng Chính phủ",
        "",
        RADIO_WORDING,
        date(2026, 2, 15),
        date(2030, 12, 31),
    ),
)


def _from_row(row: CriteriaSet) -> Criteria:
    return Criteria(
        row.key,
        row.name,
        row.legal_basis,
        row.indicator_code,
        row.indicator_text,
        row.valid_from,
        row.valid_to,
        row.availability_threshold,
        row.aired_threshold,
        row.broadcasts_per_week_min,
        row.changed_ms,
        row.changed_by,
    )


def all_sets(session: Session) -> list[Criteria]:
    """Every set, the stored ones replacing the built-in ones of the same key, by date."""
    stored = {r.key: _from_row(r) for r in session.scalars(select(CriteriaSet))}
    sets = {c.key: c for c in BUILT_IN} | stored
    return sorted(sets.values(), key=lambda c: c.valid_from)


def get_set(session: Session, key: str) -> Criteria:
    for c in all_sets(session):
        if c.key == key:
            return c
    raise NotFoundError(
        f"Không có bộ tiêu chí '{key}' (có: {', '.join(c.key for c in all_sets(session))})."
    )


def sets_for(session: Session, start_ms: int, end_ms: int) -> list[tuple[int, int, Criteria]]:
    """The window cut where the set in force changes: ``(start, end, set)`` parts. Days no
    set covers (before 2021) are judged by the earliest set, said in its dates."""
    sets = all_sets(session)
    parts: list[tuple[int, int, Criteria]] = []
    for i, c in enumerate(sets):
        lo = start_ms if i == 0 else max(start_ms, c.start_ms)
        hi = end_ms if i == len(sets) - 1 or c.end_ms is None else min(end_ms, c.end_ms)
        if hi > lo:
            parts.append((lo, hi, c))
    return parts


def update_set(
    session: Session, key: str, changes: dict, *, by: str = "", at_ms: int | None = None
) -> Criteria:
    """Change the code, wording, legal basis, name or thresholds of a set (its dates are
    the law's and stay). Every value is checked before anything is written."""
    old = get_set(session, key)
    values = {
        "name": old.name,
        "legal_basis": old.legal_basis,
        "indicator_code": old.indicator_code,
        "indicator_text": old.indicator_text,
        "availability_threshold": old.availability,
        "aired_threshold": old.aired,
        "broadcasts_per_week_min": old.broadcasts_per_week_min,
    }
    unknown = sorted(set(changes) - set(values))
    if unknown:
        raise InvalidInputError(
            f"Trường không được hỗ trợ: {', '.join(unknown)} "
            f"(được phép: {', '.join(sorted(values))})."
        )
    for field_name, value in changes.items():
        if field_name in MAX_TEXT:
            if not isinstance(value, str):
                raise InvalidInputError(f"Trường {field_name} phải là chuỗi.")
            value = value.strip()
            if len(value) > MAX_TEXT[field_name]:
                raise InvalidInputError(
                    f"Trường {field_name} dài quá {MAX_TEXT[field_name]} ký tự."
                )
            if field_name in ("name", "legal_basis", "indicator_text") and not value:
                raise InvalidInputError(f"Trường {field_name} không được để trống.")
        elif field_name == "broadcasts_per_week_min":
            if value is not None and (
                isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100
            ):
                raise InvalidInputError(
                    "Số buổi phát tối thiểu mỗi tuần phải là số nguyên 0-100 (hoặc null)."
                )
        elif value is not None:
            value = _share(
                "Ngưỡng khả dụng"
                if field_name == "availability_threshold"
                else "Ngưỡng tỉ lệ phát",
                value,
            )
        values[field_name] = value
    row = session.get(CriteriaSet, key)
    if row is None:
        row = CriteriaSet(key=key, valid_from=old.valid_from, valid_to=old.valid_to)
        session.add(row)
    for k, v in values.items():
        setattr(row, k, v)
    row.changed_ms = now_ms() if at_ms is None else at_ms
    row.changed_by = by[:64]
    session.flush()
    return _from_row(row)
