"""The letterhead of a report that can be filed as is (Nghị định 30/2020/NĐ-CP, Phụ lục I).

Who issues it, under whom, its number symbol, the place on the date line, who signs and in
what capacity, and who receives it are the province's settings (``report_settings``), and
any of them can be overridden for one report (CLI flags, API query). Since 01/07/2025
grassroots information belongs to the culture sector, so the default issuer is the Sở Văn
hóa, Thể thao và Du lịch under the provincial People's Committee.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from sqlalchemy import select
from sqlalchemy.orm import Session

from indicator.errors import InvalidInputError
from indicator.models import ReportSettings
from indicator.vn import province_heading, province_place
from loa.timeutil import now_ms

MAX_FIELD = 300
MAX_RECIPIENTS = 2000


@dataclass(frozen=True)
class Letterhead:
    superior: str = ""  # "UBND TỈNH LẠNG SƠN" (empty: from the province's name)
    issuer: str = "SỞ VĂN HÓA, THỂ THAO VÀ DU LỊCH"
    number_symbol: str = "/BC-SVHTTDL"  # the number itself is written in when registered
    place: str = ""  # "Lạng Sơn" (empty: from the province's name)
    signer_authority: str = "KT. GIÁM ĐỐC"  # "TM. ỦY BAN NHÂN DÂN", "KT. GIÁM ĐỐC"...
    signer_title: str = "PHÓ GIÁM ĐỐC"
    signer_name: str = ""
    recipients: str = (
        "Cục Thông tin cơ sở và Thông tin đối ngoại (Bộ VHTTDL);\n"
        "UBND tỉnh (để báo cáo);\nUBND các xã;\nLưu: VT."
    )

    def for_province(self, province_name: str) -> Letterhead:
        """Blank superior/place filled from the province ("Lạng Sơn" -> "UBND TỈNH ...")."""
        return replace(
            self,
            superior=self.superior or province_heading(province_name or "…"),
            place=self.place or province_place(province_name or "…"),
        )

    @property
    def recipient_lines(self) -> list[str]:
        return [
            f"- {line.strip().lstrip('- ').strip()}"
            for line in self.recipients.splitlines()
            if line.strip()
        ]

    @property
    def number_line(self) -> str:
        symbol = self.number_symbol.strip()
        return f"Số:       {symbol}" if symbol.startswith("/") else f"Số: {symbol}"

    def as_dict(self) -> dict:
        return asdict(self)


FIELDS = tuple(f.name for f in fields(Letterhead))


def check(changes: dict) -> dict:
    """Validated changes (strings, not too long); unknown fields refused by name."""
    unknown = sorted(set(changes) - set(FIELDS))
    if unknown:
        raise InvalidInputError(
            f"Trường không được hỗ trợ: {', '.join(unknown)} (được phép: {', '.join(FIELDS)})."
        )
    out = {}
    for key, value in changes.items():
        if value is None:
            continue
        if not isinstance(value, str):
            raise InvalidInputError(f"Trường {key} phải là chuỗi.")
        limit = MAX_RECIPIENTS if key == "recipients" else MAX_FIELD
        if len(value) > limit:
            raise InvalidInputError(f"Trường {key} dài quá {limit} ký tự.")
        out[key] = value.strip() if key != "recipients" else value.strip("\n")
    return out


def current(session: Session) -> Letterhead:
    row = session.scalars(
        select(ReportSettings).order_by(ReportSettings.id.desc()).limit(1)
    ).first()
    if row is None:
        return Letterhead()
    return Letterhead(**{k: v for k, v in (row.doc or {}).items() if k in FIELDS})


def update(
    session: Session, changes: dict, *, by: str = "", at_ms: int | None = None
) -> Letterhead:
    """Record a new version of the province's letterhead (nothing written if invalid)."""
    new = replace(current(session), **check(changes))
    session.add(
        ReportSettings(
            doc=new.as_dict(), changed_ms=now_ms() if at_ms is None else at_ms, changed_by=by[:64]
        )
    )
    session.flush()
    return new


def for_report(session: Session, overrides: dict | None) -> Letterhead:
    """The province's letterhead with one report's overrides."""
    return replace(current(session), **check(overrides or {}))
