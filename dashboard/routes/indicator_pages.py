"""Indicator pages: province → commune → village → cluster, and the inspection form.

Server-rendered like the other pages (``ui.render``: login, CSP, no script needed), so a
phone on a weak link reads a verdict and what made it without running anything. Each level
is the same evaluation the API and the filed report use (``indicator``): the
page only chooses what to show. The inspection form of a FM/wired station posts the
attestation and its scanned record together; both are checked by the domain code and
audited in the same transaction.
"""

from __future__ import annotations

from datetime import date
from typing import Any
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import RedirectResponse

from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.routes.ui import STATE_COLORS, _time_ticks, page_role, render
from dashboard.security import (
    audit,
    can_access_node,
    node_commune_id,
    require_commune_access,
)
from indicator.drilldown import cluster_timeline
from indicator.errors import IndicatorError, InvalidInputError, PeriodError
from indicator.evaluate import VERDICT_TEXT, Evaluation, evaluate, split_text
from indicator.manual_inputs import (
    KIND_NAMES,
    MANUAL_KINDS,
    add_attestation,
    attestation_as_dict,
    current_thresholds,
    find_commune,
    list_attestations,
)
from indicator.periods import parse_day, parse_period
from indicator.scans import MAX_SCAN_BYTES, add_scan, scan_as_dict, scans_of
from loa.timeutil import format_date, ms_to_dt, now_ms
from registry.models import Node

router = APIRouter(include_in_schema=False)
TIMELINE_W = 1000
PAD_L, PAD_R = 46, 10
VIEWERS = ("commune", "province")


def period_choices(at_ms: int) -> list[tuple[str, str, dict]]:
    """The periods offered on every indicator page (as on the province page)."""
    today = ms_to_dt(at_ms)
    quarter, half = (today.month - 1) // 3 + 1, 1 if today.month <= 6 else 2
    prev_q = (today.year, quarter - 1) if quarter > 1 else (today.year - 1, 4)
    return [
        ("last30", "30 ngày qua", {}),
        (f"{today.year}-Q{quarter}", "Quý {q}/{y}", {"q": quarter, "y": today.year}),
        (f"{prev_q[0]}-Q{prev_q[1]}", "Quý {q}/{y}", {"q": prev_q[1], "y": prev_q[0]}),
        (
            f"{today.year}-H{half}",
            "6 tháng đầu năm {y}" if half == 1 else "6 tháng cuối năm {y}",
            {"y": today.year},
        ),
        (f"{today.year}", "Năm {y}", {"y": today.year}),
    ]


def _evaluate(s, user: User, period: str | None, scope: str | None, part: int | None):
    """The evaluation a page shows (one part of a period split between criteria sets when
    ``part`` is given), or an HTTP error with the domain's Vietnamese message."""
    at = now_ms()
    try:
        p = parse_period(period, now_ms=at, default=current_thresholds(s).default_period)
        e = evaluate(s, p, now=at, scope=scope, allowed_commune_ids=user.scope_commune_ids())
    except IndicatorError as exc:
        raise HTTPException(exc.status, exc.message) from None
    shown = e
    if e.parts and part is not None and 1 <= part <= len(e.parts):
        shown = e.parts[part - 1]
    return e, shown


def _context(
    request: Request, e: Evaluation, shown: Evaluation, period: str | None, part: int | None
) -> dict[str, Any]:
    at = now_ms()
    keys = [k for k, _l, _v in period_choices(at)]
    current = period or (e.whole or e.period).key
    return {
        "periods": period_choices(at),
        "period": current,
        "custom_period": current not in keys,
        "ev": shown,
        "whole": e,
        "part": part,
        "split": split_text(e),
        "qs": "?" + urlencode({"period": current, **({"part": part} if part else {})}),
        "verdict_text": VERDICT_TEXT,
    }


@router.get("/indicator")
def province_indicator(
    *,
    request: Request,
    s: DbSession,
    period: str | None = None,
    part: int | None = None,
    user: User = Depends(page_role(*VIEWERS)),
):
    """Every commune the user may see, with its verdict and coverage."""
    e, shown = _evaluate(s, user, period, None, part)
    return render(
        request,
        "indicator_province.html",
        user,
        **_context(request, e, shown, period, part),
        page={"view": "indicator"},
    )


def _commune_id(s, user: User, ref: str) -> int:
    try:
        commune = find_commune(s, ref)
    except IndicatorError as exc:
        raise HTTPException(exc.status, exc.message) from None
    require_commune_access(user, commune.id)
    return commune.id


def _commune_verdict(shown: Evaluation, commune_id: int):
    for c in shown.communes:
        if c.id == commune_id or any(p["id"] == commune_id for p in c.predecessors):
            return c
    raise HTTPException(404, "Xã không có trong kỳ báo cáo này.")


def _attestations(s, commune_id: int) -> list[dict]:
    rows = list_attestations(s, commune_id)
    scans = scans_of(s, [r.id for r in rows])
    return [
        {**attestation_as_dict(r), "scans": [scan_as_dict(x) for x in scans.get(r.id, [])]}
        for r in rows
    ]


def _commune_render(
    request: Request,
    s,
    user: User,
    ref: str,
    period: str | None,
    part: int | None,
    form_error: str | None = None,
    form: dict | None = None,
    status_code: int = 200,
):
    cid = _commune_id(s, user, ref)
    e, shown = _evaluate(s, user, period, f"commune:{cid}", part)
    c = _commune_verdict(shown, cid)
    commune = find_commune(s, cid)
    return render(
        request,
        "indicator_commune.html",
        user,
        status_code,
        **_context(request, e, shown, period, part),
        c=c,
        attestations=_attestations(s, cid),
        can_attest=user.role == "province" and commune.station_kind in MANUAL_KINDS,
        station_kind=commune.station_kind,
        kind_names=KIND_NAMES,
        form_error=form_error,
        form=form or {},
        max_scan_mb=MAX_SCAN_BYTES // 1048576,
        today=format_date(now_ms()),
        page={"view": "indicator"},
    )


@router.get("/indicator/communes/{ref}")
def commune_indicator(
    *,
    ref: str,
    request: Request,
    s: DbSession,
    period: str | None = None,
    part: int | None = None,
    user: User = Depends(page_role(*VIEWERS)),
):
    """One commune: verdict, coverage, criteria, predecessors, weeks, villages,
    attestations (and, for the province, the inspection form of a FM/wired station)."""
    return _commune_render(request, s, user, ref, period, part)


@router.get("/indicator/communes/{ref}/villages/{village_id}")
def village_indicator(
    *,
    ref: str,
    village_id: int,
    request: Request,
    s: DbSession,
    period: str | None = None,
    part: int | None = None,
    user: User = Depends(page_role(*VIEWERS)),
):
    """One village: its coverage, availability, broadcasts and each cluster's share."""
    cid = _commune_id(s, user, ref)
    e, shown = _evaluate(s, user, period, f"commune:{cid}", part)
    c = _commune_verdict(shown, cid)
    v = next((v for v in c.villages if v.id == village_id), None)
    if v is None:
        raise HTTPException(404, "Thôn không thuộc xã này trong kỳ báo cáo.")
    return render(
        request,
        "indicator_village.html",
        user,
        **_context(request, e, shown, period, part),
        c=c,
        v=v,
        page={"view": "indicator"},
    )


def timeline_svg(tl) -> dict[str, Any]:
    """Coloured state bands; unobserved stretches hatched grey (neither up nor down)."""
    t0, t1 = tl.start_ms, tl.end_ms

    def x(t: int) -> float:
        return PAD_L + (t - t0) / max(1, t1 - t0) * (TIMELINE_W - PAD_L - PAD_R)

    bands = []
    for seg in tl.segments:
        x0, x1 = x(seg.start_ms), x(seg.end_ms)
        kind = ("proven" if seg.proven else "unobserved") if not seg.observed else seg.state
        bands.append(
            {
                "x": round(x0, 1),
                "w": round(max(x1 - x0, 0.5), 1),
                "kind": kind,
                "color": STATE_COLORS.get(seg.state, "#9e9e9e")
                if seg.observed
                else ("#90caf9" if seg.proven else "#e0e0e0"),
                "from_ms": seg.start_ms,
                "to_ms": seg.end_ms,
                "state": seg.state,
            }
        )
    return {
        "w": TIMELINE_W,
        "h": 40,
        "bands": bands,
        "x0": PAD_L,
        "x1": TIMELINE_W - PAD_R,
        "xticks": _time_ticks(t0, t1, TIMELINE_W),
    }


@router.get("/indicator/clusters/{node_id}")
def cluster_indicator(
    *,
    node_id: str,
    request: Request,
    s: DbSession,
    period: str | None = None,
    part: int | None = None,
    village: int | None = None,
    commune: str | None = None,
    user: User = Depends(page_role(*VIEWERS)),
):
    """One cluster over the period: the transitions and airings that made the verdict."""
    if s.get(Node, node_id) is None or not can_access_node(s, user, node_id):
        raise HTTPException(404, f"Không tìm thấy cụm loa '{node_id}'.")
    # Judged within one commune (the one asked, else the cluster's own): a province-wide
    # evaluation per cluster page would cost seconds on a large province.
    cid = _commune_id(s, user, commune) if commune is not None else node_commune_id(s, node_id)
    e, shown = _evaluate(s, user, period, None if cid is None else f"commune:{cid}", part)
    try:
        tl = cluster_timeline(s, node_id, shown.start_ms, shown.end_ms, shown.evaluated_ms)
    except IndicatorError as exc:
        raise HTTPException(exc.status, exc.message) from None
    evidence = None
    for c in shown.communes:
        for v in c.villages:
            for ce in v.clusters:
                if ce.node_id == node_id and (village is None or v.id == village):
                    evidence = (c, v, ce)
    return render(
        request,
        "indicator_cluster.html",
        user,
        **_context(request, e, shown, period, part),
        tl=tl,
        svg=timeline_svg(tl),
        evidence=evidence,
        page={"view": "indicator"},
    )


def _form_day(value: str, label: str, required: bool) -> date | None:
    value = (value or "").strip()
    if not value:
        if required:
            raise InvalidInputError(f"Thiếu {label} (dd/mm/yyyy).")
        return None
    try:
        return parse_day(value)
    except PeriodError as exc:
        raise InvalidInputError(f"{label}: {exc.message}") from None


@router.post("/indicator/communes/{ref}/attestations")
def attest_form(
    *,
    ref: str,
    request: Request,
    s: DbSession,
    inspector: str = Form(""),
    attested_on: str = Form(""),
    valid_until: str = Form(""),
    station_kind: str = Form(""),
    note: str = Form(""),
    period: str = Form(""),
    scan: UploadFile | None = File(None),
    user: User = Depends(page_role("province")),
):
    """Record an inspection with its scanned record; on a bad field, the form comes back
    with what was typed and the reason, and nothing is written."""
    form = {
        "inspector": inspector,
        "attested_on": attested_on,
        "valid_until": valid_until,
        "station_kind": station_kind,
        "note": note,
    }
    try:
        if scan is None or not scan.filename:
            raise InvalidInputError("Thiếu tệp biên bản kiểm tra (bản quét PDF, JPEG hoặc PNG).")
        data = scan.file.read(MAX_SCAN_BYTES + 1)
        row = add_attestation(
            s,
            ref,
            inspector=inspector,
            valid_until=_form_day(valid_until, "Ngày hết hiệu lực", True),
            attested_on=_form_day(attested_on, "Ngày kiểm tra", False),
            note=note,
            station_kind=station_kind or None,
            by=user.username,
        )
        require_commune_access(user, row.commune_id)
        saved = add_scan(s, row, data, scan.filename, by=user.username)
    except InvalidInputError as exc:
        s.rollback()
        return _commune_render(
            request,
            s,
            user,
            ref,
            period or None,
            None,
            form_error=exc.message,
            form=form,
            status_code=422,
        )
    doc = {**attestation_as_dict(row), "scans": [scan_as_dict(saved)]}
    audit(
        s,
        "indicator.attestation.create",
        user=user,
        target=f"commune:{row.commune_id}",
        request=request,
        status_code=303,
        detail=doc,
    )
    qs = urlencode({"ok": "saved", **({"period": period} if period else {})})
    return RedirectResponse(f"/indicator/communes/{row.commune_id}?{qs}#attestations", 303)
