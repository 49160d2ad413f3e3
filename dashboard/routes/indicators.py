"""Indicator 8.3 over the API: verdicts with evidence, report downloads, the province's
thresholds and manual attestations of wired/FM stations.

Thin on purpose: parse, check who may ask, call ``indicator``, map its errors to
4xx with the Vietnamese message as ``detail``. A commune officer sees (and is counted over)
only the communes of their account; changing thresholds or attesting a station is the
province's act, and both are audited.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Any
from urllib.parse import quote

from fastapi import APIRouter, Depends, File, Query, Request, UploadFile
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import Response
from sqlalchemy.orm import Session

from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.security import audit, current_user, require_commune_access, require_role
from indicator import letterhead as letterheads
from indicator.criteria import all_sets, get_set, update_set
from indicator.errors import InvalidInputError, NotFoundError, PeriodError
from indicator.evaluate import evaluate, evaluation_as_dict
from indicator.manual_inputs import (
    add_attestation,
    attestation_as_dict,
    current_thresholds,
    find_commune,
    list_attestations,
    update_thresholds,
)
from indicator.models import ManualAttestation
from indicator.periods import Period, parse_day, parse_period
from indicator.reports import MEDIA_TYPES, build_report, render
from indicator.scans import MAX_SCAN_BYTES, add_scan, get_scan, scan_as_dict, scans_of
from loa.timeutil import format_datetime, now_ms

router = APIRouter(prefix="/api/v1", tags=["indicators"])
MAX_BODY = 16_384
SETTINGS_FIELDS = {"availability_threshold": "availability", "aired_threshold": "aired",
                   "broadcasts_per_week_min": "broadcasts_per_week_min",
                   "default_period": "default_period", "coverage_threshold": "coverage"}
CRITERIA_FIELDS = ("indicator_code", "indicator_text", "name", "legal_basis",
                   "availability_threshold", "aired_threshold", "broadcasts_per_week_min")
ATTESTATION_FIELDS = {"inspector", "valid_until", "attested_on", "note", "station_kind"}




def _period(s: Session, text: str | None, at_ms: int) -> Period:
    return parse_period(text, now_ms=at_ms, default=current_thresholds(s).default_period)


def _visible(s: Session, user: User, scope: str | None):
    """The communes ``user`` may be told about; asking for someone else's commune by name
    is refused rather than answered with an empty list."""
    allowed = user.scope_commune_ids()
    kind, _, ref = (scope or "").partition(":")
    if allowed is not None and kind.strip().lower() == "commune" and ref:
        require_commune_access(user, find_commune(s, ref.strip()).id)
    return allowed


async def _json_object(request: Request, allowed: set[str]) -> dict[str, Any]:
    """The request body as a JSON object with only known fields (Vietnamese errors)."""
    raw = await request.body()
    if len(raw) > MAX_BODY:
        raise InvalidInputError(f"Nội dung gửi lên quá lớn (tối đa {MAX_BODY} byte).")
    try:
        body = json.loads(raw or b"{}")
    except (ValueError, UnicodeDecodeError):
        raise InvalidInputError("Nội dung gửi lên không phải JSON hợp lệ.") from None
    if not isinstance(body, dict):
        raise InvalidInputError("Nội dung gửi lên phải là một đối tượng JSON.")
    unknown = sorted(set(body) - allowed)
    if unknown:
        raise InvalidInputError(f"Trường không được hỗ trợ: {', '.join(unknown)} "
                                f"(được phép: {', '.join(sorted(allowed))}).")
    return body


def _day(body: dict, key: str, label: str, required: bool) -> date | None:
    value = body.get(key)
    if value is None or value == "":
        if required:
            raise InvalidInputError(f"Thiếu {label} (dd/mm/yyyy).")
        return None
    if not isinstance(value, str):
        raise InvalidInputError(f"{label} phải là chuỗi dd/mm/yyyy.")
    try:
        return parse_day(value)
    except PeriodError as exc:
        raise InvalidInputError(f"{label}: {exc.message}") from None


def _text(body: dict, key: str) -> str:
    value = body.get(key, "")
    if value is None:
        return ""
    if not isinstance(value, str):
        raise InvalidInputError(f"Trường {key} phải là chuỗi.")
    return value


# --------------------------------------------------------------------------- verdicts


@router.get("/indicators/radio")
@router.get("/indicators/8.3")
def indicator_8_3(*, 
    period: str | None = Query(None, max_length=60,
                               description="2026-Q3, 2026-H1, 2026, 2026-07, last30, "
                                           "01/07/2026-30/09/2026"),
    scope: str | None = Query(None, max_length=80,
                              description="province, district:MÃ hoặc commune:MÃ"),
    user: User = Depends(current_user),
    s: DbSession,
):
    at = now_ms()
    result = evaluate(s, _period(s, period, at), now=at, scope=scope,
                      allowed_commune_ids=_visible(s, user, scope))
    return evaluation_as_dict(result)


@router.get("/indicators/radio/report")
@router.get("/indicators/8.3/report")
def indicator_8_3_report(*, 
    period: str | None = Query(None, max_length=60),
    format: str = Query("pdf", description="html, pdf, docx, xlsx, csv"),
    scope: str | None = Query(None, max_length=80),
    number_symbol: str | None = Query(None, max_length=300),
    signer_authority: str | None = Query(None, max_length=300),
    signer_title: str | None = Query(None, max_length=300),
    signer_name: str | None = Query(None, max_length=300),
    recipients: str | None = Query(None, max_length=2000,
                                   description="một nơi nhận mỗi dòng"),
    user: User = Depends(current_user),
    s: DbSession,
):
    fmt = format.lower()
    if fmt not in MEDIA_TYPES:
        raise InvalidInputError(f"Định dạng '{format}' không hỗ trợ "
                                "(html, pdf, docx, xlsx, csv).")
    at = now_ms()
    overrides = {k: v for k, v in (("number_symbol", number_symbol),
                                   ("signer_authority", signer_authority),
                                   ("signer_title", signer_title),
                                   ("signer_name", signer_name),
                                   ("recipients", recipients)) if v is not None}
    report = build_report(s, _period(s, period, at), now=at, scope=scope,
                          allowed_commune_ids=_visible(s, user, scope),
                          letterhead=overrides)
    content = render(report, fmt)
    disposition = "inline" if fmt == "html" else "attachment"
    return Response(content, media_type=MEDIA_TYPES[fmt], headers={
        "Content-Disposition": f'{disposition}; filename="{report.filename(fmt)}"'})


# --------------------------------------------------------------------------- settings


def _settings_doc(s: Session) -> dict:
    th = current_thresholds(s)
    return {"availability_threshold": th.availability, "aired_threshold": th.aired,
            "broadcasts_per_week_min": th.broadcasts_per_week_min,
            "default_period": th.default_period, "coverage_threshold": th.coverage,
            "changed_at": format_datetime(th.changed_ms) if th.changed_ms else None,
            "changed_by": th.changed_by or None}


@router.get("/indicators/settings")
def get_settings_(*, user: User = Depends(current_user),
                  s: DbSession):
    return _settings_doc(s)


@router.put("/indicators/settings")
async def put_settings(*, request: Request, user: User = Depends(require_role("province")),
                       s: DbSession):
    body = await _json_object(request, set(SETTINGS_FIELDS))
    if not body:
        raise InvalidInputError("Không có thay đổi nào (availability_threshold, "
                                "aired_threshold, broadcasts_per_week_min, default_period, "
                                "coverage_threshold).")

    def write() -> dict[str, Any]:  # database work off the event loop
        before = _settings_doc(s)
        update_thresholds(s, by=user.username,
                          **{SETTINGS_FIELDS[k]: v for k, v in body.items()})
        after = _settings_doc(s)
        audit(s, "indicator.settings.update", user=user, target="8.3", request=request,
              status_code=200, detail={"before": before, "after": after})
        return after

    return await run_in_threadpool(write)


# --------------------------------------------------------------------------- letterhead


@router.get("/indicators/report-settings")
def get_report_settings(*, user: User = Depends(current_user), s: DbSession):
    """The province's letterhead for filed reports (Nghị định 30/2020/NĐ-CP)."""
    return letterheads.current(s).as_dict()


@router.put("/indicators/report-settings")
async def put_report_settings(*, request: Request,
                              user: User = Depends(require_role("province")), s: DbSession):
    body = await _json_object(request, set(letterheads.FIELDS))
    if not body:
        raise InvalidInputError(f"Không có thay đổi nào ({', '.join(letterheads.FIELDS)}).")

    def write() -> dict[str, Any]:  # database work off the event loop
        before = letterheads.current(s).as_dict()
        after = letterheads.update(s, body, by=user.username).as_dict()
        audit(s, "indicator.report_settings.update", user=user, target="letterhead",
              request=request, status_code=200, detail={"before": before, "after": after})
        return after

    return await run_in_threadpool(write)


# --------------------------------------------------------------------------- criteria sets


@router.get("/indicators/criteria")
def get_criteria(*, user: User = Depends(current_user), s: DbSession):
    """Every criteria set with the dates it is in force (the 2026-2030 set's code, wording
    and thresholds are the province's to enter)."""
    return {"items": [c.as_dict() for c in all_sets(s)]}


@router.put("/indicators/criteria/{key}")
async def put_criteria(*, key: str, request: Request,
                       user: User = Depends(require_role("province")), s: DbSession):
    body = await _json_object(request, set(CRITERIA_FIELDS))
    if not body:
        raise InvalidInputError(f"Không có thay đổi nào ({', '.join(CRITERIA_FIELDS)}).")

    def write() -> dict[str, Any]:  # database work off the event loop
        before = get_set(s, key).as_dict()
        after = update_set(s, key, body, by=user.username).as_dict()
        audit(s, "indicator.criteria.update", user=user, target=key, request=request,
              status_code=200, detail={"before": before, "after": after})
        return after

    return await run_in_threadpool(write)


# --------------------------------------------------------------------------- attestations


@router.get("/communes/{commune_ref}/attestations")
def get_attestations(*, commune_ref: str, user: User = Depends(current_user),
                     s: DbSession):
    commune = find_commune(s, commune_ref)
    require_commune_access(user, commune.id)
    rows = list_attestations(s, commune.id)
    scans = scans_of(s, [r.id for r in rows])
    return {"commune_id": commune.id, "commune": commune.name,
            "items": [{**attestation_as_dict(r),
                       "scans": [scan_as_dict(x) for x in scans.get(r.id, [])]}
                      for r in rows]}


@router.post("/communes/{commune_ref}/attestations", status_code=201)
async def post_attestation(*, commune_ref: str, request: Request,
                           user: User = Depends(require_role("province")),
                           s: DbSession):
    body = await _json_object(request, ATTESTATION_FIELDS)

    def write() -> dict[str, Any]:  # database work off the event loop
        row = add_attestation(
            s, commune_ref, inspector=_text(body, "inspector"),
            valid_until=_day(body, "valid_until", "Ngày hết hiệu lực", True),
            attested_on=_day(body, "attested_on", "Ngày kiểm tra", False),
            note=_text(body, "note"), station_kind=_text(body, "station_kind") or None,
            by=user.username)
        doc = attestation_as_dict(row)
        audit(s, "indicator.attestation.create", user=user, target=f"commune:{row.commune_id}",
              request=request, status_code=201, detail=doc)
        return doc

    return await run_in_threadpool(write)


# --------------------------------------------------------------------------- scans


@router.post("/attestations/{attestation_id}/scans", status_code=201)
def post_attestation_scan(*, attestation_id: int, request: Request,
                          scan: UploadFile = File(...),
                          user: User = Depends(require_role("province")), s: DbSession):
    """Attach the scanned paper record (PDF, JPEG or PNG, checked by content) to an
    inspection already recorded; audited with the scan's SHA-256."""
    row = s.get(ManualAttestation, attestation_id)
    if row is None:
        raise NotFoundError(f"Không tìm thấy biên bản kiểm tra số {attestation_id}.")
    require_commune_access(user, row.commune_id)
    saved = add_scan(s, row, scan.file.read(MAX_SCAN_BYTES + 1), scan.filename or "",
                     by=user.username)
    doc = scan_as_dict(saved)
    audit(s, "indicator.attestation.scan.create", user=user,
          target=f"attestation:{attestation_id}", request=request, status_code=201,
          detail=doc)
    return doc


@router.get("/attestations/{attestation_id}/scans/{scan_id}")
def get_attestation_scan(*, attestation_id: int, scan_id: int, download: bool = False,
                         user: User = Depends(current_user), s: DbSession):
    """The scan as it was received, shown in the browser (or downloaded with
    ``?download=1``); sandboxed so a PDF cannot run anything on this site."""
    row = get_scan(s, scan_id)
    attestation = s.get(ManualAttestation, row.attestation_id)
    if row.attestation_id != attestation_id or attestation is None:
        raise NotFoundError(f"Không tìm thấy bản quét biên bản số {scan_id}.")
    require_commune_access(user, attestation.commune_id)
    disposition = "attachment" if download else "inline"
    return Response(row.data, media_type=row.media_type, headers={
        "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(row.filename)}",
        "Content-Security-Policy": "default-src 'none'; sandbox",
        "X-Content-Type-Options": "nosniff", "Cache-Control": "private, no-store",
        "X-Scan-SHA256": row.sha256})
