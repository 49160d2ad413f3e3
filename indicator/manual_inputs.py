"""Thresholds and manual attestations: the two things a person changes about indicator 8.3.

Both are validated here once, so the API, the CLI and the demo refuse the same bad input
with the same Vietnamese sentence, and nothing is written unless everything is valid."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date

from sqlalchemy import select
from sqlalchemy.orm import Session

from indicator.errors import InvalidInputError, NotFoundError, PeriodError
from indicator.models import ManualAttestation, ProvinceIndicatorSettings
from indicator.periods import parse_period
from loa.timeutil import ms_to_dt, now_ms
from registry.models import Commune

MANUAL_KINDS = ("fm", "wired")
KIND_NAMES = {"ip": "IP (CNTT-VT)", "fm": "FM không dây", "wired": "hữu tuyến"}
MAX_INSPECTOR = 200
MAX_NOTE = 2000


@dataclass(frozen=True)
class Thresholds:
    """The settings in force; defaults are the programme's figures (90%, 80%, 1/week)."""

    availability: float = 0.90
    aired: float = 0.80
    broadcasts_per_week_min: int = 1
    default_period: str = "last30"
    changed_ms: int = 0
    changed_by: str = ""
    coverage: float = 0.90  # observed share of in-service time a verdict needs

    def as_dict(self) -> dict:
        return asdict(self)


def current_thresholds(session: Session) -> Thresholds:
    row = session.scalars(
        select(ProvinceIndicatorSettings).order_by(ProvinceIndicatorSettings.id.desc()).limit(1)
    ).first()
    if row is None:
        return Thresholds()
    return Thresholds(
        row.availability_threshold,
        row.aired_threshold,
        row.broadcasts_per_week_min,
        row.default_period,
        row.changed_ms,
        row.changed_by,
        0.90 if row.coverage_threshold is None else row.coverage_threshold,
    )


def _share(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise InvalidInputError(f"{name} phải là một số từ 0 đến 1 (ví dụ 0.9 cho 90%).")
    value = float(value)
    if not 0 < value <= 1:
        raise InvalidInputError(f"{name} phải lớn hơn 0 và không quá 1 (nhận được {value}).")
    return round(value, 4)


def update_thresholds(
    session: Session,
    *,
    availability: float | None = None,
    aired: float | None = None,
    broadcasts_per_week_min: int | None = None,
    default_period: str | None = None,
    by: str = "",
    at_ms: int | None = None,
    coverage: float | None = None,
) -> Thresholds:
    """Record a new version of the thresholds (the old ones stay, for the record)."""
    at_ms = now_ms() if at_ms is None else at_ms
    old = current_thresholds(session)
    new_availability = (
        old.availability if availability is None else _share("Ngưỡng khả dụng", availability)
    )
    new_aired = old.aired if aired is None else _share("Ngưỡng tỉ lệ phát", aired)
    new_coverage = (
        old.coverage if coverage is None else _share("Ngưỡng thời gian giám sát", coverage)
    )
    per_week = old.broadcasts_per_week_min
    if broadcasts_per_week_min is not None:
        if (
            isinstance(broadcasts_per_week_min, bool)
            or not isinstance(broadcasts_per_week_min, int)
            or not 0 <= broadcasts_per_week_min <= 100
        ):
            raise InvalidInputError("Số buổi phát tối thiểu mỗi tuần phải là số nguyên 0-100.")
        per_week = broadcasts_per_week_min
    period = old.default_period
    if default_period is not None:
        try:
            parse_period(default_period, now_ms=at_ms)
        except PeriodError as exc:
            raise InvalidInputError(f"Kỳ mặc định: {exc.message}") from None
        period = default_period.strip()
    session.add(
        ProvinceIndicatorSettings(
            availability_threshold=new_availability,
            aired_threshold=new_aired,
            broadcasts_per_week_min=per_week,
            default_period=period,
            changed_ms=at_ms,
            changed_by=by[:64],
            coverage_threshold=new_coverage,
        )
    )
    session.flush()
    return current_thresholds(session)


# --------------------------------------------------------------------------- attestations


def find_commune(session: Session, ref: int | str) -> Commune:
    """A commune by numeric id or by code, or a 404 naming what was asked."""
    commune = None
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdecimal()):
        commune = session.get(Commune, int(ref))
    if commune is None and isinstance(ref, str):
        commune = session.scalars(select(Commune).where(Commune.code == ref)).first()
    if commune is None:
        raise NotFoundError(f"Không tìm thấy xã '{ref}'.")
    return commune


def today_ict(at_ms: int | None = None) -> date:
    return ms_to_dt(now_ms() if at_ms is None else at_ms).date()


def add_attestation(
    session: Session,
    commune_ref: int | str,
    *,
    inspector: str,
    valid_until: date,
    attested_on: date | None = None,
    note: str = "",
    station_kind: str | None = None,
    by: str = "",
    at_ms: int | None = None,
) -> ManualAttestation:
    """Record an inspection of a wired/FM station. IP communes are judged on telemetry and
    cannot be attested: a paper record must not override what the clusters reported."""
    at_ms = now_ms() if at_ms is None else at_ms
    commune = find_commune(session, commune_ref)
    today = today_ict(at_ms)
    attested_on = attested_on or today
    kind = station_kind or (commune.station_kind if commune.station_kind in MANUAL_KINDS else None)
    if kind is None:
        raise InvalidInputError(
            f"{commune.name} dùng đài IP: chỉ tiêu 8.3 được tính từ dữ liệu của các cụm loa; "
            "xác nhận thủ công chỉ dành cho đài FM hoặc hữu tuyến."
        )
    if kind not in MANUAL_KINDS:
        raise InvalidInputError(f"Loại đài '{kind}' không hợp lệ (fm hoặc wired).")
    inspector = (inspector or "").strip()
    if not inspector:
        raise InvalidInputError("Thiếu tên người kiểm tra.")
    if len(inspector) > MAX_INSPECTOR:
        raise InvalidInputError(f"Tên người kiểm tra dài quá {MAX_INSPECTOR} ký tự.")
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise InvalidInputError(f"Ghi chú dài quá {MAX_NOTE} ký tự.")
    if attested_on > today:
        raise InvalidInputError(
            f"Ngày kiểm tra {attested_on:%d/%m/%Y} ở tương lai (hôm nay {today:%d/%m/%Y})."
        )
    if valid_until < attested_on:
        raise InvalidInputError(
            f"Hiệu lực đến {valid_until:%d/%m/%Y} trước ngày kiểm tra {attested_on:%d/%m/%Y}."
        )
    if commune.retired_ms is not None and attested_on >= today_ict(commune.retired_ms):
        raise InvalidInputError(
            f"{commune.name} đã thôi tồn tại từ {today_ict(commune.retired_ms):%d/%m/%Y}."
        )
    row = ManualAttestation(
        commune_id=commune.id,
        attested_on=attested_on,
        valid_until=valid_until,
        inspector=inspector,
        note=note,
        station_kind=kind,
        created_ms=at_ms,
        created_by=by[:64],
    )
    session.add(row)
    session.flush()
    return row


def list_attestations(session: Session, commune_id: int) -> list[ManualAttestation]:
    return list(
        session.scalars(
            select(ManualAttestation)
            .where(ManualAttestation.commune_id == commune_id)
            .order_by(ManualAttestation.attested_on.desc(), ManualAttestation.id.desc())
        )
    )


def attestation_as_dict(row: ManualAttestation) -> dict:
    return {
        "id": row.id,
        "commune_id": row.commune_id,
        "attested_on": row.attested_on.strftime("%d/%m/%Y"),
        "valid_until": row.valid_until.strftime("%d/%m/%Y"),
        "inspector": row.inspector,
        "note": row.note,
        "station_kind": row.station_kind,
        "created_by": row.created_by,
    }
