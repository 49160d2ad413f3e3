"""Communes: the list a province officer scans (with clusters by state) and one commune's
villages and clusters. A commune officer sees only the communes of their account."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Query

from controller import commune_directory
from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.security import current_user, require_commune_access, scope_commune_ids
from registry.schemas import CommuneDetail, CommunePage

router = APIRouter(prefix="/api/v1", tags=["communes"])


@router.get("/communes", response_model=CommunePage)
def list_communes(
    *,
    q: str | None = Query(None, description="tìm theo tên hoặc mã, không cần dấu: 'doi can'"),
    district: str | None = Query(None, description="mã (hoặc mã số) huyện"),
    province: str | None = Query(None, description="mã (hoặc mã số) tỉnh"),
    limit: int = Query(50, description="1-500"),
    offset: int = Query(0),
    user: User = Depends(current_user),
    s: DbSession,
):
    return commune_directory.list_communes(
        s,
        q=q,
        district=district,
        province=province,
        limit=limit,
        offset=offset,
        scope=scope_commune_ids(user),
    )


@router.get("/communes/{commune_id}", response_model=CommuneDetail)
def commune_detail(*, commune_id: int, user: User = Depends(current_user), s: DbSession):
    detail = commune_directory.commune_detail(s, commune_id)
    require_commune_access(user, commune_id)
    return detail
