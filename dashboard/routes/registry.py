"""Registry API: search, pending clusters and their approval, import and export.

Thin: parse the request, call ``registry``, let the registry's domain errors
become 4xx answers with their Vietnamese message (``dashboard.app``'s domain-error handler)."""

from __future__ import annotations

import hashlib

from fastapi import APIRouter, Depends, File, Header, Query, Request, UploadFile
from fastapi.responses import JSONResponse, Response

from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.security import (
    audit,
    current_user,
    require_commune_access,
    require_role,
    scope_commune_ids,
)
from loa import idempotency
from loa.timeutil import ms_to_dt, now_ms
from registry import changes, importer, queries
from registry.errors import InvalidInputError
from registry.formats import MAX_FILE_BYTES, decode_bytes, detect_format
from registry.schemas import (
    ApprovedNodeOut,
    ApproveRequest,
    ImportOut,
    PendingNodeOut,
    SearchResult,
)

router = APIRouter(prefix="/api/v1", tags=["registry"])

MEDIA_TYPES = {"yaml": "application/yaml; charset=utf-8", "csv": "text/csv; charset=utf-8"}


@router.get("/search", response_model=SearchResult)
def search(
    *,
    q: str = Query(..., description="chữ cần tìm, không cần dấu: 'doi can'"),
    limit: int = Query(20, ge=1, le=100),
    user: User = Depends(current_user),
    s: DbSession,
):
    return queries.search(s, q, limit, scope=scope_commune_ids(user))


@router.get("/pending-nodes", response_model=list[PendingNodeOut])
def pending_nodes(
    *,
    response: Response,
    limit: int = Query(100, ge=1, le=500),
    offset: int = Query(0, ge=0, le=2**31 - 1),
    _: User = Depends(require_role("technician", "province")),
    s: DbSession,
):
    """One page, most recently seen first; ``X-Total-Count`` tells how many there are."""
    response.headers["X-Total-Count"] = str(queries.count_pending(s))
    return queries.list_pending(s, limit=limit, offset=offset)


@router.post("/pending-nodes/{node_id}/approve", response_model=ApprovedNodeOut)
def approve_pending_node(
    *,
    node_id: str,
    body: ApproveRequest,
    request: Request,
    user: User = Depends(require_role("technician", "province")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
) -> dict[str, object]:
    """Place a pending cluster in a village; ``Idempotency-Key`` (``loa.idempotency``) makes
    a retry answer the first approval, remembered in the same transaction."""
    key = idempotency.check_key(idempotency_key)
    asked = {"node_id": node_id, **body.model_dump()}
    if key is not None:
        row = idempotency.earlier(s, user.username, key, "registry.approve_node", asked)
        if row is not None:
            return row.response
    village = changes.get_village(s, body.village_id)
    require_commune_access(user, village.commune_id)
    node = changes.approve_pending(s, node_id, village.id, label=body.label, speakers=body.speakers)
    audit(
        s,
        "registry.approve_node",
        user=user,
        target=node.id,
        request=request,
        status_code=200,
        detail={"village_id": village.id, "village_code": village.code},
    )
    out = {
        "id": node.id,
        "village_id": village.id,
        "village": village.name,
        "commune_id": village.commune_id,
        "simulated": node.simulated,
        "registered_ms": node.registered_ms,
    }
    if key is not None:
        idempotency.remember(
            s,
            user.username,
            key,
            "registry.approve_node",
            asked,
            resource_id=node.id,
            response=out,
            now_ms=now_ms(),
        )
    return out


@router.post("/registry/import", response_model=ImportOut)
def import_registry(
    *,
    request: Request,
    file: UploadFile = File(...),
    format: str | None = Query(None, description="yaml | csv (mặc định: theo đuôi tên tệp)"),
    user: User = Depends(require_role("province")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
) -> dict[str, object] | JSONResponse:
    """Upload a YAML or CSV register. Any error: 422 with every bad line, nothing written.
    ``Idempotency-Key``: a retry of the same file answers the first import's summary."""
    key = idempotency.check_key(idempotency_key)
    fmt = _format(format) if format else detect_format(file.filename or "")
    data = file.file.read(MAX_FILE_BYTES + 1)
    if len(data) > MAX_FILE_BYTES:
        return JSONResponse(
            status_code=413,
            content={"detail": f"Tệp lớn quá {MAX_FILE_BYTES // (1024 * 1024)} MB."},
        )
    asked = {"format": fmt, "sha256": hashlib.sha256(data).hexdigest()}
    if key is not None:
        row = idempotency.earlier(s, user.username, key, "registry.import", asked)
        if row is not None:
            return row.response
    summary = importer.import_text(s, decode_bytes(data), fmt)
    audit(
        s,
        "registry.import",
        user=user,
        target=file.filename or "",
        request=request,
        status_code=200,
        detail=summary.as_dict(),
    )
    out = {"message": summary.text(), **summary.as_dict()}
    if key is not None:
        idempotency.remember(
            s, user.username, key, "registry.import", asked, response=out, now_ms=now_ms()
        )
    return out


def _format(value: str) -> str:
    fmt = value.strip().lower()
    if fmt not in MEDIA_TYPES:
        raise InvalidInputError(f"Định dạng '{value}' không hỗ trợ: dùng yaml hoặc csv.")
    return fmt


@router.get("/registry/export")
def export_registry(
    *,
    format: str = Query("yaml", description="yaml | csv"),
    _: User = Depends(require_role("province")),
    s: DbSession,
) -> Response:
    fmt = _format(format)
    text = importer.export_text(s, fmt)
    # CSV gets a BOM so spreadsheet programs read the diacritics as UTF-8.
    body = ("\ufeff" + text) if fmt == "csv" else text
    filename = f"loa-so-dang-ky-{ms_to_dt(now_ms()).strftime('%d-%m-%Y')}.{fmt}"
    return Response(
        content=body.encode("utf-8"),
        media_type=MEDIA_TYPES[fmt],
        headers={"Content-Disposition": f'attachment; filename="{filename}"'},
    )
