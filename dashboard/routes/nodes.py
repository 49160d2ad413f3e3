"""Nodes: list with filters and paging, and one node's detail."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from pydantic import BaseModel, Field
from sqlalchemy.orm import Session

from controller import fleet_queries
from controller.fleet_queries import NodeFilter, NodeNotFound
from dashboard.deps import DbSession, get_settings
from dashboard.models import User
from dashboard.schemas import NodeDetail, NodeItem, Page, TransitionItem
from dashboard.security import audit_hook, current_user, require_role, scope_commune_ids
from loa.protocol import NodeState
from loa.settings import Settings
from loa.timeutil import format_datetime

router = APIRouter(prefix="/api/v1", tags=["nodes"])


def _flags(live, skew_warn_ms: int) -> list[str]:
    """Facts a technician should see that do not change the node's state."""
    flags = []
    if live and live.clock_skew_ms is not None and abs(live.clock_skew_ms) > skew_warn_ms:
        flags.append("clock_skew")
    return flags


def _item(node, live, village, commune, skew_warn_ms: int = 2000) -> dict:
    return {
        "flags": _flags(live, skew_warn_ms),
        "id": node.id,
        "state": live.state if live else NodeState.UNKNOWN.value,
        "available": bool(live and live.available),
        "reasons": [r for r in (live.reasons.split(",") if live and live.reasons else []) if r],
        "since": format_datetime(live.since_ms) if live and live.since_ms else None,
        "last_heartbeat": (
            format_datetime(live.last_heartbeat_ms) if live and live.last_heartbeat_ms else None
        ),
        "label": node.label,
        "village_id": village.id if village else None,
        "village": village.name if village else None,
        "commune_id": commune.id if commune else None,
        "commune": commune.name if commune else None,
        "simulated": node.simulated,
    }


@router.get("/nodes", response_model=Page[NodeItem])
def list_nodes(
    *,
    state: NodeState | None = None,
    commune: int | None = Query(None, description="commune id"),
    village: int | None = Query(None, description="village id"),
    q: str | None = Query(None, max_length=100, description="tìm không dấu: 'doi can'"),
    limit: int = Query(50, ge=1, le=1000),
    offset: int = Query(0, ge=0),
    s: DbSession,
    settings: Settings = Depends(get_settings),
    user: User = Depends(current_user),
):
    rows, total = fleet_queries.list_nodes(
        s,
        NodeFilter(
            state=state.value if state else None,
            commune_id=commune,
            village_id=village,
            q=q,
            commune_scope=scope_commune_ids(user),
        ),
        limit=limit,
        offset=offset,
    )
    items = [_item(*r, settings.clock_skew_warn_ms) for r in rows]
    return {"items": items, "total": total, "limit": limit, "offset": offset}


def _visible_node(s: Session, user: User, node_id: str) -> tuple:
    """The node with its live state, village and commune, if ``user`` may see it; 404 for
    one outside their communes, the same answer as for an id that does not exist (node ids
    are not enumerable)."""
    try:
        node, live, village, commune = fleet_queries.get_node(s, node_id)
    except NodeNotFound as exc:
        raise HTTPException(404, str(exc)) from None
    if not user.can_access_commune(commune.id if commune else None):
        raise HTTPException(404, str(NodeNotFound(node_id)))
    return node, live, village, commune


@router.get("/nodes/{node_id}", response_model=NodeDetail)
def node_detail(
    node_id: str,
    s: DbSession,
    settings: Settings = Depends(get_settings),
    user: User = Depends(current_user),
):
    node, live, village, commune = _visible_node(s, user, node_id)
    transitions = [
        TransitionItem(
            at=format_datetime(t.at_ms),
            at_ms=t.at_ms,
            from_state=t.from_state,
            to_state=t.to_state,
            available=t.available,
            cause=t.cause,
        )
        for t in fleet_queries.recent_transitions(s, node_id)
    ]
    return {
        **_item(node, live, village, commune, settings.clock_skew_warn_ms),
        "heartbeat": live.heartbeat if live else None,
        "clock_skew_ms": live.clock_skew_ms if live else None,
        "fw": live.fw if live else None,
        "heartbeat_s": node.heartbeat_s,
        "transitions": transitions,
    }


class PositionIn(BaseModel):
    """Decimal degrees (WGS 84), inside Vietnam; both null to clear them."""

    lat: float | str | None = Field(None, examples=[21.8537])
    lon: float | str | None = Field(None, examples=[106.761])


class PositionOut(BaseModel):
    id: str
    lat: float | None
    lon: float | None


@router.put("/nodes/{node_id}/position", response_model=PositionOut)
def set_position(
    node_id: str,
    body: PositionIn,
    request: Request,
    s: DbSession,
    user: User = Depends(require_role("technician", "province")),
):
    """Where a cluster stands (an alert's polygon or circle reaches it by this), audited as
    ``registry.node_position`` with the old and new values."""
    from registry import changes

    _visible_node(s, user, node_id)
    hook = audit_hook(user=user, request=request, status_code=200)
    _, after = changes.set_node_position(s, node_id, body.lat, body.lon, audit=hook)
    return {"id": node_id, "lat": after[0], "lon": after[1]}
