"""Alarms: list (scoped to the user's communes) and acknowledge (technician, province).

The engine that raises and clears alarms is ``controller.alarms.AlarmService``; when the API
runs in the same process as the controller and nobody started one, ``setup`` starts it with
the app so the demo has alarms without extra wiring."""

from __future__ import annotations

from typing import ClassVar, Literal

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, StrictStr
from sqlalchemy import case, func, select
from sqlalchemy.orm import Session

from controller.alarms import (
    ALARM_LABELS_VI,
    ALARM_SEVERITY,
    SEVERITY_LABELS_VI,
    Alarm,
    acknowledge,
)
from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.security import audit, current_user, require_role, scope_commune_ids
from dashboard.validation import typed_post
from loa.timeutil import format_datetime
from registry.models import Commune, Node, Village

router = APIRouter(prefix="/api/v1", tags=["alarms"])


class AlarmItem(BaseModel):
    id: int
    node_id: str
    node_label: str
    kind: str
    label: str
    severity: int
    active: bool
    commune_id: int | None
    commune: str | None
    village: str | None
    raised: str
    raised_ms: int
    cleared: str | None
    acked_by: str | None
    acked: str | None
    ack_note: str | None = None
    severity_label: str = ""
    flaps: int
    detail: str


class AlarmPage(BaseModel):
    items: list[AlarmItem]
    total: int
    open: int
    open_unacked: int


def _scoped(q, user: User):
    scope = scope_commune_ids(user)
    return q if scope is None else q.where(Alarm.commune_id.in_(scope))


def alarm_query(
    user: User, state: str = "open", node: str | None = None, commune: int | None = None
):
    q = _scoped(select(Alarm), user)
    if state == "open":
        q = q.where(Alarm.cleared_ms.is_(None))
    elif state == "cleared":
        q = q.where(Alarm.cleared_ms.is_not(None))
    if node:
        q = q.where(Alarm.node_id == node)
    if commune is not None:
        q = q.where(Alarm.commune_id == commune)
    return q


def list_alarms(
    s: Session,
    user: User,
    *,
    state: str = "open",
    node: str | None = None,
    commune: int | None = None,
    limit: int = 50,
    offset: int = 0,
) -> AlarmPage:
    """Open alarms first, the worst kinds first, newest first; used by the API and pages."""
    q = alarm_query(user, state, node, commune)
    total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
    severity = case(*[(Alarm.kind == k, v) for k, v in ALARM_SEVERITY.items()], else_=1)
    rows = s.scalars(
        q.order_by(
            Alarm.cleared_ms.is_not(None), severity.desc(), Alarm.raised_ms.desc(), Alarm.id.desc()
        )
        .limit(limit)
        .offset(offset)
    ).all()
    node_ids = {a.node_id for a in rows}
    info = (
        {
            n: (label, village, commune)
            for n, label, village, commune in s.execute(
                select(Node.id, Node.label, Village.name, Commune.name)
                .outerjoin(Village, Village.id == Node.village_id)
                .outerjoin(Commune, Commune.id == Village.commune_id)
                .where(Node.id.in_(node_ids))
            )
        }
        if node_ids
        else {}
    )
    items = []
    for a in rows:
        label, village, commune_name = info.get(a.node_id, ("", None, None))
        items.append(
            AlarmItem(
                id=a.id,
                node_id=a.node_id,
                node_label=label or "",
                kind=a.kind,
                label=ALARM_LABELS_VI.get(a.kind, a.kind),
                severity=ALARM_SEVERITY.get(a.kind, 1),
                active=a.cleared_ms is None,
                commune_id=a.commune_id,
                commune=commune_name,
                village=village,
                raised=format_datetime(a.raised_ms),
                raised_ms=a.raised_ms,
                cleared=format_datetime(a.cleared_ms) if a.cleared_ms else None,
                acked_by=a.acked_by,
                acked=format_datetime(a.acked_ms) if a.acked_ms else None,
                ack_note=a.ack_note,
                severity_label=SEVERITY_LABELS_VI.get(ALARM_SEVERITY.get(a.kind, 1), ""),
                flaps=a.flaps,
                detail=a.detail,
            )
        )
    open_rows = alarm_query(user, "open").subquery()
    counts = s.execute(
        select(func.count(), func.count().filter(open_rows.c.acked_ms.is_(None))).select_from(
            open_rows
        )
    ).one()
    return AlarmPage(items=items, total=total, open=counts[0] or 0, open_unacked=counts[1] or 0)


@router.get("/alarms", response_model=AlarmPage)
def get_alarms(
    *,
    state: Literal["open", "cleared", "all"] = "open",
    node: str | None = Query(None, max_length=64),
    commune: int | None = None,
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0),
    user: User = Depends(current_user),
    s: DbSession,
):
    return list_alarms(s, user, state=state, node=node, commune=commune, limit=limit, offset=offset)


MAX_NOTE = 500


def acknowledge_alarm(
    s: Session, user: User, alarm_id: int, note: str | None, request: Request
) -> AlarmItem:
    """Acknowledge with an optional note ("đã báo điện lực"), for the API and the page
    alike; out of scope looks the same as missing (no probing of other communes' alarms)."""
    alarm = s.get(Alarm, alarm_id)
    if alarm is None or not user.can_access_commune(alarm.commune_id):
        raise HTTPException(404, "Không tìm thấy cảnh báo")
    if note is not None and not isinstance(note, str):
        raise HTTPException(422, "Ghi chú («note») phải là chuỗi.")
    note = (note or "").strip()
    if len(note) > MAX_NOTE:
        raise HTTPException(422, f"Ghi chú dài quá {MAX_NOTE} ký tự.")
    acknowledge(s, alarm_id, user.username, note=note or None)
    audit(
        s,
        "alarm.ack",
        user=user,
        target=f"{alarm.node_id}:{alarm.kind}",
        request=request,
        status_code=200,
        detail={"alarm_id": alarm_id, **({"note": note} if note else {})},
    )
    s.commit()
    page = list_alarms(s, user, state="all", node=alarm.node_id, limit=500)
    return next(i for i in page.items if i.id == alarm_id)


class AckIn(BaseModel):
    """What was done or who was told ("đã báo điện lực"); optional."""

    refusals: ClassVar[dict[str, str]] = {"note": "Ghi chú («note») phải là chuỗi."}
    note: StrictStr | None = None


@typed_post(router, "/alarms/{alarm_id}/ack", response_model=AlarmItem)
def ack_alarm(
    *,
    alarm_id: int,
    request: Request,
    body: AckIn | None = None,
    user: User = Depends(require_role("technician", "province")),
    s: DbSession,
):
    """Body (optional): ``{"note": "…"}``, what was done or who was told."""
    return acknowledge_alarm(s, user, alarm_id, body.note if body else None, request)
