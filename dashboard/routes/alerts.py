"""Emergency alerts API (CAP 1.2). Thin: the work is in ``alerts.workflow``.

    POST /api/v1/alerts/cap              body: the CAP XML (application/xml)   -> 202 / 200 dup
    POST /api/v1/alerts/upload           multipart: file (an officer's upload) -> as above
    POST /api/v1/alerts/preview          body: the CAP XML -> clusters by village, text; no
                                         storing, no airing
    GET  /api/v1/alerts                  received alerts, newest first
    GET  /api/v1/alerts/messages         every document received, refused ones with why
    GET  /api/v1/alerts/messages/{id}/raw  the stored document, byte for byte
    GET  /api/v1/alerts/{id}             the alert with its proof of play and timeline
    GET  /api/v1/alerts/{id}/proof.csv | proof.json   that proof as a download
    POST /api/v1/alerts/{id}/approve | /reject | /stop
    GET  /api/v1/alerts/templates        PUT /api/v1/alerts/templates  {event, template}

A refused document answers 4xx with ``detail`` (Vietnamese), ``detail_en`` and ``code``; it is
stored with that reason all the same (``/messages``).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, HTTPException, Path, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse, RedirectResponse, Response

from alerts.errors import AlertError, CapRefused
from alerts.schemas import (
    AlertDuplicate,
    AlertOut,
    AlertPage,
    AlertReceived,
    AlertReport,
    MessageOut,
    PreviewOut,
    RejectIn,
    TemplateIn,
    TemplateOut,
    TemplateSaved,
)
from alerts.workflow import AlertService
from dashboard.context import AppContext
from dashboard.deps import get_ctx
from dashboard.models import User
from dashboard.routes.broadcasts import actor_of
from dashboard.routes.ui import page_role, render
from dashboard.security import current_user, require_role
from dashboard.validation import typed_route

api = APIRouter(prefix="/api/v1/alerts", tags=["alerts"])
pages = APIRouter(include_in_schema=False)

XML_TYPES = ("application/xml", "text/xml", "application/cap+xml")
MAX_ID = 2**63 - 1


def get_alerts(ctx: AppContext = Depends(get_ctx)) -> AlertService:
    return ctx.alerts


async def _body(request: Request, limit: int) -> tuple[bytes, int | None]:
    """At most ``limit`` + 1 bytes of the body: a huge document is refused without being
    read whole (the first bytes are kept with the refusal)."""
    declared = request.headers.get("content-length")
    data = bytearray()
    async for chunk in request.stream():
        data += chunk
        if len(data) > limit:
            total = int(declared) if declared and declared.isdecimal() else len(data)
            return bytes(data[:limit]), total
    return bytes(data), None


def _answer(out: dict[str, Any]) -> JSONResponse:
    return JSONResponse(out, status_code=200 if out.get("result") == "duplicate" else 202)


async def _receive(
    request: Request, user: User, svc: AlertService, raw: bytes, truncated: int | None, source: str
) -> JSONResponse:
    request.state.audited = True  # the service writes its own audit rows (see the hook)
    # ``Idempotency-Key`` as for every creating endpoint (``loa.idempotency``).
    out = await run_in_threadpool(
        svc.receive,
        raw,
        source=source,
        source_ref=user.username,
        trusted_source=True,
        truncated_from=truncated,
        client_key=request.headers.get("idempotency-key"),
    )
    return _answer(out)


RECEIVED: dict[int | str, dict[str, Any]] = {
    200: {
        "model": AlertReceived | AlertDuplicate,
        "description": "Đã nhận trước đó / the same document or key again",
    }
}


@api.post("/cap", status_code=202, response_model=AlertReceived, responses=RECEIVED)
async def post_cap(
    request: Request,
    user: User = Depends(require_role("province")),
    svc: AlertService = Depends(get_alerts),
):
    ctype = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if ctype not in XML_TYPES:
        raise HTTPException(
            415, "Nội dung phải là tài liệu CAP 1.2 dạng XML (Content-Type: application/xml)."
        )
    raw, truncated = await _body(request, svc.settings.max_bytes)
    return await _receive(request, user, svc, raw, truncated, "api")


@api.post("/upload", status_code=202, response_model=AlertReceived, responses=RECEIVED)
async def upload_cap(
    request: Request,
    user: User = Depends(require_role("province")),
    svc: AlertService = Depends(get_alerts),
):
    form = await request.form(max_files=1, max_fields=4)
    file = form.get("file")
    if file is None or isinstance(file, str):
        raise HTTPException(422, "Chưa chọn tệp CAP (trường «file»).")
    limit = svc.settings.max_bytes
    raw = await file.read(limit + 1)
    truncated = None
    if len(raw) > limit:
        truncated = file.size or len(raw)
        raw = raw[:limit]
    return await _receive(request, user, svc, raw, truncated, "upload")


@api.post("/preview", response_model=PreviewOut)
async def preview_cap(
    request: Request,
    user: User = Depends(require_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
):
    """Which clusters (by village, with coordinates) and what text, before anything airs."""
    raw, truncated = await _body(request, svc.settings.max_bytes)
    if truncated is not None:
        raise HTTPException(413, f"Tài liệu CAP quá lớn (tối đa {svc.settings.max_bytes} byte).")
    request.state.audited = True  # reads only
    return await run_in_threadpool(svc.preview, raw)


@api.get("", response_model=AlertPage)
async def list_alerts(
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    user: User = Depends(current_user),
    svc: AlertService = Depends(get_alerts),
):
    return await run_in_threadpool(svc.list, actor_of(user), limit=limit, offset=offset)


@api.get("/messages", response_model=list[MessageOut])
async def list_messages(
    limit: int = Query(50, ge=1, le=500),
    user: User = Depends(require_role("province", "technician")),
    svc: AlertService = Depends(get_alerts),
):
    return await run_in_threadpool(svc.messages, limit=limit)


@api.get("/messages/{message_id}/raw")
async def raw_message(
    message_id: int = Path(..., ge=1, le=MAX_ID),
    user: User = Depends(require_role("province", "technician")),
    svc: AlertService = Depends(get_alerts),
):
    raw = await run_in_threadpool(svc.raw, message_id)
    # Served as an attachment of a neutral type: never rendered by the browser.
    return Response(
        raw,
        media_type="application/octet-stream",
        headers={"Content-Disposition": f'attachment; filename="cap-{message_id}.xml"'},
    )


# Exclude unset: the default template ("*") has no ``recordings`` key, as it never had.
@api.get("/templates", response_model=list[TemplateOut], response_model_exclude_unset=True)
async def templates(user: User = Depends(current_user), svc: AlertService = Depends(get_alerts)):
    return await run_in_threadpool(svc.templates)


@typed_route(api, "PUT", "/templates", response_model=TemplateSaved)
async def set_template(
    request: Request,
    body: TemplateIn,
    user: User = Depends(require_role("province")),
    svc: AlertService = Depends(get_alerts),
):
    request.state.audited = True
    return await run_in_threadpool(
        svc.set_template,
        actor_of(user),
        body.event,
        body.template,
        body.recordings,
        tone_pattern=body.tone_pattern,
        tone_hz=body.tone_hz,
    )


@api.get("/{alert_id}/proof.{fmt}")
async def alert_proof_file(
    alert_id: int = Path(..., ge=1, le=MAX_ID),
    fmt: str = Path(..., pattern="^(csv|json)$"),
    user: User = Depends(current_user),
    svc: AlertService = Depends(get_alerts),
) -> Response:
    """One alert's proof as a download (``alerts.proof``): CSV formula-safe, or JSON."""
    from alerts.proof import proof_csv, proof_json

    report = await run_in_threadpool(svc.report, actor_of(user), alert_id)
    body, media = (
        (proof_csv(report), "text/csv; charset=utf-8")
        if fmt == "csv"
        else (proof_json(report), "application/json")
    )
    return Response(
        body,
        media_type=media,
        headers={
            "Content-Disposition": f'attachment; filename="canh-bao-{alert_id}-bang-chung.{fmt}"'
        },
    )


@api.get("/{alert_id}", response_model=AlertReport)
async def get_alert(
    alert_id: int = Path(..., ge=1, le=MAX_ID),
    user: User = Depends(current_user),
    svc: AlertService = Depends(get_alerts),
):
    return await run_in_threadpool(svc.report, actor_of(user), alert_id)


def _decision(name: str):
    async def route(
        request: Request,
        alert_id: int = Path(..., ge=1, le=MAX_ID),
        user: User = Depends(require_role("province", "commune")),
        svc: AlertService = Depends(get_alerts),
    ):
        request.state.audited = True
        return await run_in_threadpool(getattr(svc, name), actor_of(user), alert_id)

    route.__name__ = f"{name}_alert"
    return route


api.post("/{alert_id}/approve", response_model=AlertOut)(_decision("approve"))
api.post("/{alert_id}/stop", response_model=AlertOut)(_decision("stop"))


@typed_route(api, "POST", "/{alert_id}/reject", response_model=AlertOut)
async def reject_alert(
    request: Request,
    alert_id: int = Path(..., ge=1, le=MAX_ID),
    body: RejectIn | None = None,
    user: User = Depends(require_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
):
    """Refuse to air an alert awaiting approval; ``reason`` is kept with it."""
    request.state.audited = True
    reason = body.reason if body is not None and body.reason else ""
    return await run_in_threadpool(svc.reject, actor_of(user), alert_id, reason)


# --------------------------------------------------------------------------- pages


@pages.get("/alerts")
async def alerts_page(
    request: Request,
    user: User = Depends(page_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
    edit: str | None = Query(None, max_length=200),
):
    data = await run_in_threadpool(svc.list, actor_of(user), limit=100)
    messages = await run_in_threadpool(svc.messages, limit=30) if user.role == "province" else []
    templates = await run_in_threadpool(svc.templates) if user.role == "province" else []
    # ``?edit=lu quet``: the template form comes filled with that event's words and tone,
    # so changing one of them does not silently reset the other.
    editing = next((t for t in templates if edit is not None and t["event_key"] == edit), None)
    return render(
        request,
        "alerts.html",
        user,
        alerts=data["items"],
        messages=messages,
        templates=templates,
        editing=editing,
        page={"view": "alerts"},
    )


@pages.post("/alerts/templates")
async def alerts_template_page(
    request: Request,
    user: User = Depends(page_role("province")),
    svc: AlertService = Depends(get_alerts),
):
    """The province edits the spoken template of an event type from the alerts page."""
    form = await request.form(max_fields=8)
    event, template = form.get("event"), form.get("template")
    request.state.audited = True
    try:
        if not isinstance(event, str) or not isinstance(template, str):
            raise AlertError(
                "bad_template",
                "Cần loại sự kiện và mẫu lời đọc.",
                "Event and template are required.",
            )
        tone_pattern, tone_hz = _form_tone(form)
        await run_in_threadpool(
            svc.set_template,
            actor_of(user),
            event,
            template,
            tone_pattern=tone_pattern,
            tone_hz=tone_hz,
            keep_recordings=True,  # the form has no recordings field: never clear them
        )
    except AlertError as exc:
        return await _list_page(request, user, svc, template_error=exc.message)
    return RedirectResponse("/alerts?ok=saved", 303)


def _form_tone(form: Any) -> tuple[str | None, float | None]:
    """The template form's tone: ``tone`` "default" (the province's), "none", or "custom"
    with ``tone_pattern``; ``tone_hz`` empty = the default. The service checks the values."""
    choice = form.get("tone") or "default"
    pattern = form.get("tone_pattern")
    pattern = pattern.strip() if isinstance(pattern, str) else ""
    raw_hz = form.get("tone_hz")
    raw_hz = raw_hz.strip().replace(",", ".") if isinstance(raw_hz, str) else ""
    try:
        hz = float(raw_hz) if raw_hz else None
    except ValueError:
        hz = -1.0  # refused by the service with the field named
    if choice == "none":
        return "", hz
    if choice == "custom":
        if not pattern:
            raise AlertError(
                "bad_tone",
                "«tone_pattern»: hãy nhập mẫu tín hiệu, ví dụ 3x20/10.",
                "'tone_pattern': enter a pattern such as 3x20/10.",
            )
        return pattern, hz
    return None, hz


async def _list_page(request: Request, user: User, svc: AlertService, **extra: Any):
    data = await run_in_threadpool(svc.list, actor_of(user), limit=100)
    messages = await run_in_threadpool(svc.messages, limit=30)
    templates = await run_in_threadpool(svc.templates)
    return render(
        request,
        "alerts.html",
        user,
        422,
        alerts=data["items"],
        messages=messages,
        templates=templates,
        page={"view": "alerts"},
        **extra,
    )


@pages.post("/alerts/upload")
async def alerts_upload_page(
    request: Request,
    user: User = Depends(page_role("province")),
    svc: AlertService = Depends(get_alerts),
):
    """The web upload: the alert's page on success; the list with the reason on refusal."""
    form = await request.form(max_files=1, max_fields=4)
    file = form.get("file")
    error = None
    if file is None or isinstance(file, str):
        error = "Chưa chọn tệp CAP."
    else:
        limit = svc.settings.max_bytes
        raw = await file.read(limit + 1)
        truncated = (file.size or len(raw)) if len(raw) > limit else None
        request.state.audited = True  # the service writes its own audit rows
        try:
            out = await run_in_threadpool(
                svc.receive,
                raw[:limit],
                source="upload",
                source_ref=user.username,
                trusted_source=True,
                truncated_from=truncated,
            )
        except CapRefused as exc:
            error = exc.message
        else:
            return RedirectResponse(f"/alerts/{out.get('alert_id') or out['id']}", 303)
    return await _list_page(request, user, svc, upload_error=error)


@pages.post("/alerts/preview")
async def alert_preview_page(
    request: Request,
    user: User = Depends(page_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
):
    """What an uploaded document would do, on the map and by village: nothing is stored or
    aired. A refused document comes back to the list with the reason."""
    form = await request.form(max_files=1, max_fields=4)
    file = form.get("file")
    if file is None or isinstance(file, str):
        return await _list_page(request, user, svc, preview_error="Chưa chọn tệp CAP.")
    raw = await file.read(svc.settings.max_bytes + 1)
    request.state.audited = True  # a preview changes nothing
    try:
        preview = await run_in_threadpool(svc.preview, raw)
    except AlertError as exc:
        return await _list_page(request, user, svc, preview_error=exc.message)
    area = await run_in_threadpool(svc.area_map, preview)
    return render(
        request,
        "alert_preview.html",
        user,
        p=preview,
        map=area,
        filename=file.filename or "",
        page={"view": "alert_preview"},
    )


@pages.get("/alerts/{alert_id}")
async def alert_page(
    request: Request,
    alert_id: int = Path(..., ge=1, le=MAX_ID),
    user: User = Depends(page_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
):
    report = await run_in_threadpool(svc.report, actor_of(user), alert_id)
    area = await run_in_threadpool(svc.area_map, report)
    return render(request, "alert.html", user, a=report, map=area, page={"view": "alert"})


@pages.post("/alerts/{alert_id}/{action}")
async def alert_action_page(
    request: Request,
    alert_id: int = Path(..., ge=1, le=MAX_ID),
    action: str = Path(..., pattern="^(approve|reject|stop)$"),
    user: User = Depends(page_role("province", "commune")),
    svc: AlertService = Depends(get_alerts),
):
    request.state.audited = True
    fn = getattr(svc, action)
    await run_in_threadpool(fn, actor_of(user), alert_id)
    return RedirectResponse(f"/alerts/{alert_id}?ok=saved", 303)


router = APIRouter()
router.include_router(api)
router.include_router(pages)


__all__ = ["router"]
