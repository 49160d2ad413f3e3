"""Indicator 8.3 over the API: verdicts with evidence, report downloads, the province's
thresholds and manual attestations of wired/FM stations with their scanned records.

Thin on purpose: parse, check who may ask, call ``indicator``, map its errors to
4xx with the Vietnamese message as ``detail``. A commune officer sees (and is counted over)
only the communes of their account; changing thresholds or attesting a station is the
province's act, and both are audited. Every route is typed with the models of
``dashboard.indicator_schemas``; request validation errors are answered in Vietnamese and
name the field. Routes doing database work are plain ``def`` (FastAPI runs them in its
thread pool).

The verdicts are encoded once with ``json.dumps`` and sent as they are: for 3,000 clusters
the answer is ~0.8 MB and FastAPI's generic encoder (``jsonable_encoder``) alone took
longer than the evaluation. The encoded answer is reused while no row it read changed, for
at most ``indicator_answer_ttl_s`` (``indicator.answers`` says why that is exact).
``EvaluationOut`` documents the answer; a test validates real answers against it.
"""

from __future__ import annotations

import json
from datetime import date
from typing import Annotated
from urllib.parse import quote

from fastapi import APIRouter, Body, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import Response
from sqlalchemy.orm import Session

from alerts.evidence import period_lines
from dashboard.deps import DbSession, get_ctx
from dashboard.indicator_schemas import (
    AttestationIn,
    AttestationList,
    AttestationOut,
    CriteriaIn,
    CriteriaList,
    CriteriaOut,
    EvaluationOut,
    LetterheadIn,
    LetterheadOut,
    ScanOut,
    SettingsIn,
    SettingsOut,
    VietnameseValidationRoute,
)
from dashboard.models import User
from dashboard.security import audit, current_user, require_commune_access, require_role
from indicator import letterhead as letterheads
from indicator.answers import AnswerCache
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
from loa import idempotency
from loa.timeutil import format_datetime, now_ms

router = APIRouter(prefix="/api/v1", tags=["indicators"], route_class=VietnameseValidationRoute)
SETTINGS_FIELDS = {
    "availability_threshold": "availability",
    "aired_threshold": "aired",
    "broadcasts_per_week_min": "broadcasts_per_week_min",
    "default_period": "default_period",
    "coverage_threshold": "coverage",
}
FILE_RESPONSES = {
    200: {
        "content": {t: {} for t in sorted(set(MEDIA_TYPES.values()))},
        "description": "Báo cáo (html, pdf, docx, xlsx, csv)",
    }
}
SCAN_RESPONSES = {
    200: {
        "content": {"application/pdf": {}, "image/jpeg": {}, "image/png": {}},
        "description": "Bản quét biên bản, đúng như khi tải lên",
    }
}


def _changes(body: object, allowed: str) -> dict:
    """The fields the caller sent (an empty change is refused, naming what may change)."""
    changes = body.model_dump(exclude_unset=True) if body is not None else {}
    if not changes:
        raise InvalidInputError(f"Không có thay đổi nào ({allowed}).")
    return changes


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


def _day(value: str | None, label: str, required: bool) -> date | None:
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


# --------------------------------------------------------------------------- verdicts


def _encode(doc: dict) -> bytes:
    return json.dumps(doc, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()


def _answers(request: Request) -> AnswerCache:
    """The app's cache of verdict answers (``indicator.answers``), made on first use."""
    state = request.app.state
    cache = getattr(state, "indicator_answers", None)
    if cache is None:
        ttl_s = get_ctx(request).settings.indicator_answer_ttl_s
        cache = state.indicator_answers = AnswerCache(ttl_ms=int(ttl_s * 1000))
    return cache


@router.get("/indicators/radio", response_model=EvaluationOut)
@router.get("/indicators/8.3", response_model=EvaluationOut)
def indicator_8_3(
    *,
    request: Request,
    period: str | None = Query(
        None,
        max_length=60,
        description="2026-Q3, 2026-H1, 2026, 2026-07, last30, 01/07/2026-30/09/2026",
    ),
    scope: str | None = Query(
        None, max_length=80, description="province, district:MÃ hoặc commune:MÃ"
    ),
    user: User = Depends(current_user),
    s: DbSession,
) -> Response:
    at = now_ms()
    allowed = _visible(s, user, scope)

    def judge(at_ms: int) -> bytes:
        result = evaluate(
            s,
            _period(s, period, at_ms),
            now=at_ms,
            scope=scope,
            allowed_commune_ids=allowed,
            rollups=True,  # closed months from the roll-ups: same verdicts (tested)
        )
        return _encode(evaluation_as_dict(result))

    key = ("verdicts", period, scope, None if allowed is None else tuple(sorted(allowed)))
    return Response(_answers(request).answer(s, key, at, judge), media_type="application/json")


@router.get("/indicators/radio/report", response_class=Response, responses=FILE_RESPONSES)
@router.get("/indicators/8.3/report", response_class=Response, responses=FILE_RESPONSES)
def indicator_8_3_report(
    *,
    period: str | None = Query(None, max_length=60),
    format: str = Query("pdf", max_length=10, description="html, pdf, docx, xlsx, csv"),
    scope: str | None = Query(None, max_length=80),
    number_symbol: str | None = Query(None, max_length=300),
    signer_authority: str | None = Query(None, max_length=300),
    signer_title: str | None = Query(None, max_length=300),
    signer_name: str | None = Query(None, max_length=300),
    recipients: str | None = Query(None, max_length=2000, description="một nơi nhận mỗi dòng"),
    user: User = Depends(current_user),
    s: DbSession,
) -> Response:
    fmt = format.lower()
    if fmt not in MEDIA_TYPES:
        raise InvalidInputError(f"Định dạng '{format}' không hỗ trợ (html, pdf, docx, xlsx, csv).")
    at = now_ms()
    overrides = {
        k: v
        for k, v in (
            ("number_symbol", number_symbol),
            ("signer_authority", signer_authority),
            ("signer_title", signer_title),
            ("signer_name", signer_name),
            ("recipients", recipients),
        )
        if v is not None
    }
    report = build_report(
        s,
        _period(s, period, at),
        now=at,
        scope=scope,
        allowed_commune_ids=_visible(s, user, scope),
        letterhead=overrides,
        period_alerts=period_lines,
    )
    content = render(report, fmt)
    disposition = "inline" if fmt == "html" else "attachment"
    return Response(
        content,
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'{disposition}; filename="{report.filename(fmt)}"'},
    )


# --------------------------------------------------------------------------- settings


def _settings_doc(s: Session) -> dict:
    th = current_thresholds(s)
    return {
        "availability_threshold": th.availability,
        "aired_threshold": th.aired,
        "broadcasts_per_week_min": th.broadcasts_per_week_min,
        "default_period": th.default_period,
        "coverage_threshold": th.coverage,
        "changed_at": format_datetime(th.changed_ms) if th.changed_ms else None,
        "changed_by": th.changed_by or None,
    }


@router.get("/indicators/settings", response_model=SettingsOut)
def get_settings_(*, user: User = Depends(current_user), s: DbSession) -> dict:
    return _settings_doc(s)


@router.put("/indicators/settings", response_model=SettingsOut)
def put_settings(
    *,
    request: Request,
    body: Annotated[SettingsIn | None, Body()] = None,
    user: User = Depends(require_role("province")),
    s: DbSession,
) -> dict:
    changes = _changes(body, ", ".join(SETTINGS_FIELDS))
    before = _settings_doc(s)
    update_thresholds(s, by=user.username, **{SETTINGS_FIELDS[k]: v for k, v in changes.items()})
    after = _settings_doc(s)
    audit(
        s,
        "indicator.settings.update",
        user=user,
        target="8.3",
        request=request,
        status_code=200,
        detail={"before": before, "after": after},
    )
    return after


# --------------------------------------------------------------------------- letterhead


@router.get("/indicators/report-settings", response_model=LetterheadOut)
def get_report_settings(*, user: User = Depends(current_user), s: DbSession) -> dict:
    """The province's letterhead for filed reports (Nghị định 30/2020/NĐ-CP)."""
    return letterheads.current(s).as_dict()


@router.put("/indicators/report-settings", response_model=LetterheadOut)
def put_report_settings(
    *,
    request: Request,
    body: Annotated[LetterheadIn | None, Body()] = None,
    user: User = Depends(require_role("province")),
    s: DbSession,
) -> dict:
    changes = _changes(body, ", ".join(letterheads.FIELDS))
    before = letterheads.current(s).as_dict()
    after = letterheads.update(s, changes, by=user.username).as_dict()
    audit(
        s,
        "indicator.report_settings.update",
        user=user,
        target="letterhead",
        request=request,
        status_code=200,
        detail={"before": before, "after": after},
    )
    return after


# --------------------------------------------------------------------------- criteria sets


@router.get("/indicators/criteria", response_model=CriteriaList)
def get_criteria(*, user: User = Depends(current_user), s: DbSession) -> dict:
    """Every criteria set with the dates it is in force (the 2026-2030 set's code, wording
    and thresholds are the province's to enter)."""
    return {"items": [c.as_dict() for c in all_sets(s)]}


@router.put("/indicators/criteria/{key}", response_model=CriteriaOut)
def put_criteria(
    *,
    key: str,
    request: Request,
    body: Annotated[CriteriaIn | None, Body()] = None,
    user: User = Depends(require_role("province")),
    s: DbSession,
) -> dict:
    changes = _changes(body, ", ".join(CriteriaIn.model_fields))
    before = get_set(s, key).as_dict()
    after = update_set(s, key, changes, by=user.username).as_dict()
    audit(
        s,
        "indicator.criteria.update",
        user=user,
        target=key,
        request=request,
        status_code=200,
        detail={"before": before, "after": after},
    )
    return after


# --------------------------------------------------------------------------- attestations


@router.get("/communes/{commune_ref}/attestations", response_model=AttestationList)
def get_attestations(*, commune_ref: str, user: User = Depends(current_user), s: DbSession) -> dict:
    commune = find_commune(s, commune_ref)
    require_commune_access(user, commune.id)
    rows = list_attestations(s, commune.id)
    scans = scans_of(s, [r.id for r in rows])
    return {
        "commune_id": commune.id,
        "commune": commune.name,
        "items": [
            {**attestation_as_dict(r), "scans": [scan_as_dict(x) for x in scans.get(r.id, [])]}
            for r in rows
        ],
    }


@router.post("/communes/{commune_ref}/attestations", status_code=201, response_model=AttestationOut)
def post_attestation(
    *,
    commune_ref: str,
    request: Request,
    body: Annotated[AttestationIn | None, Body()] = None,
    user: User = Depends(require_role("province")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
) -> dict:
    """Record an inspection. ``Idempotency-Key`` (``loa.idempotency``): a retry answers the
    first record instead of a second one; record, audit row and key are one transaction."""
    body = body or AttestationIn()
    key = idempotency.check_key(idempotency_key)
    asked = {"commune": commune_ref, **body.model_dump()}
    if key is not None:
        earlier = idempotency.earlier(s, user.username, key, "indicator.attestation.create", asked)
        if earlier is not None:
            answer: dict = earlier.response
            return answer
    row = add_attestation(
        s,
        commune_ref,
        inspector=body.inspector or "",
        valid_until=_day(body.valid_until, "Ngày hết hiệu lực", True),
        attested_on=_day(body.attested_on, "Ngày kiểm tra", False),
        note=body.note or "",
        station_kind=body.station_kind or None,
        by=user.username,
    )
    doc = attestation_as_dict(row)
    audit(
        s,
        "indicator.attestation.create",
        user=user,
        target=f"commune:{row.commune_id}",
        request=request,
        status_code=201,
        detail=doc,
    )
    out = {**doc, "scans": []}
    if key is not None:
        idempotency.remember(
            s,
            user.username,
            key,
            "indicator.attestation.create",
            asked,
            resource_id=row.id,
            response=out,
            now_ms=now_ms(),
        )
    return out


# --------------------------------------------------------------------------- scans


@router.post("/attestations/{attestation_id}/scans", status_code=201, response_model=ScanOut)
def post_attestation_scan(
    *,
    attestation_id: int,
    request: Request,
    scan: UploadFile = File(...),
    user: User = Depends(require_role("province")),
    s: DbSession,
) -> dict:
    """Attach the scanned paper record (PDF, JPEG or PNG, checked by content) to an
    inspection already recorded; audited with the scan's SHA-256."""
    row = s.get(ManualAttestation, attestation_id)
    if row is None:
        raise NotFoundError(f"Không tìm thấy biên bản kiểm tra số {attestation_id}.")
    require_commune_access(user, row.commune_id)
    saved = add_scan(
        s, row, scan.file.read(MAX_SCAN_BYTES + 1), scan.filename or "", by=user.username
    )
    doc = scan_as_dict(saved)
    audit(
        s,
        "indicator.attestation.scan.create",
        user=user,
        target=f"attestation:{attestation_id}",
        request=request,
        status_code=201,
        detail=doc,
    )
    return doc


@router.get(
    "/attestations/{attestation_id}/scans/{scan_id}",
    response_class=Response,
    responses=SCAN_RESPONSES,
)
def get_attestation_scan(
    *,
    attestation_id: int,
    scan_id: int,
    download: bool = False,
    user: User = Depends(current_user),
    s: DbSession,
) -> Response:
    """The scan as it was received, shown in the browser (or downloaded with
    ``?download=1``); sandboxed so a PDF cannot run anything on this site."""
    row = get_scan(s, scan_id)
    attestation = s.get(ManualAttestation, row.attestation_id)
    if row.attestation_id != attestation_id or attestation is None:
        raise NotFoundError(f"Không tìm thấy bản quét biên bản số {scan_id}.")
    require_commune_access(user, attestation.commune_id)
    disposition = "attachment" if download else "inline"
    return Response(
        row.data,
        media_type=row.media_type,
        headers={
            "Content-Disposition": f"{disposition}; filename*=UTF-8''{quote(row.filename)}",
            "Content-Security-Policy": "default-src 'none'; sandbox",
            "X-Content-Type-Options": "nosniff",
            "Cache-Control": "private, no-store",
            "X-Scan-SHA256": row.sha256,
        },
    )
