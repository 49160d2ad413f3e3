"""Communes as a technician lists them: registry units joined with the clusters' live state.

Node state is read from ``controller.models.NodeLive`` (written by the ingest); a registered
cluster without a NodeLive row has never been heard from and counts as ``unknown``. Counts
are done with GROUP BY in the database so a province of thousands of clusters lists quickly.
The registry alone (``registry/queries.py``) knows nothing of live state.
"""

from __future__ import annotations

from typing import TypeVar

from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from controller.models import NodeLive
from registry.errors import InvalidInputError, NotFoundError
from registry.models import Commune, District, Node, Province, Village
from registry.queries import MAX_PAGE, name_history, rows_by_id, search_tokens, text_match, unit_ref
from registry.schemas import (
    CommuneDetail,
    CommunePage,
    CommuneSummary,
    NodeCounts,
    NodeInfo,
    VillageDetail,
)


def node_counts_by_commune(s: Session, commune_ids: list[int]) -> dict[int, NodeCounts]:
    counts = {cid: NodeCounts() for cid in commune_ids}
    if not commune_ids:
        return counts
    state = func.coalesce(NodeLive.state, "unknown")
    rows = s.execute(
        select(Village.commune_id, state, func.count(Node.id))
        .join(Village, Node.village_id == Village.id)
        .outerjoin(NodeLive, NodeLive.node_id == Node.id)
        .where(Node.retired_ms.is_(None), Village.commune_id.in_(commune_ids))
        .group_by(Village.commune_id, state)
    )
    for commune_id, node_state, count in rows:
        counts[commune_id].add(node_state, count)
    return counts


def village_counts_by_commune(s: Session, commune_ids: list[int]) -> dict[int, int]:
    if not commune_ids:
        return {}
    rows = s.execute(
        select(Village.commune_id, func.count(Village.id))
        .where(Village.retired_ms.is_(None), Village.commune_id.in_(commune_ids))
        .group_by(Village.commune_id)
    )
    return {commune_id: count for commune_id, count in rows}


# --------------------------------------------------------------------------- communes


_Unit = TypeVar("_Unit", Province, District)


def _resolve_filter(s: Session, model: type[_Unit], value: str, noun: str) -> int:
    row = s.scalar(select(model).where(model.code == value))
    if row is None and value.isdecimal():
        row = s.get(model, int(value))
    if row is None:
        raise InvalidInputError(f"Không có {noun} '{value}'.")
    return row.id


def _commune_select(
    s: Session,
    q: str | None,
    district: str | None,
    province: str | None,
    scope: frozenset[int] | None,
) -> Select[Commune]:
    stmt = select(Commune).where(Commune.retired_ms.is_(None))
    if scope is not None:
        stmt = stmt.where(Commune.id.in_(sorted(scope)))
    if province:
        stmt = stmt.where(Commune.province_id == _resolve_filter(s, Province, province, "tỉnh"))
    if district:
        stmt = stmt.where(Commune.district_id == _resolve_filter(s, District, district, "huyện"))
    if q:
        stmt = stmt.where(*text_match(search_tokens(q), Commune.name_folded, Commune.code))
    return stmt


def list_communes(
    s: Session,
    *,
    q: str | None = None,
    district: str | None = None,
    province: str | None = None,
    limit: int = 50,
    offset: int = 0,
    scope: frozenset[int] | None = None,
) -> CommunePage:
    """Current communes, sorted by name, with village count and clusters by state.
    ``scope`` limits the list to the communes a user may see (None: all)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit phải từ 1 đến {MAX_PAGE}.")
    if offset < 0:
        raise InvalidInputError("offset không được âm.")
    stmt = _commune_select(s, q, district, province, scope)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    communes = list(
        s.scalars(stmt.order_by(Commune.name_folded, Commune.code).limit(limit).offset(offset))
    )
    ids = [c.id for c in communes]
    nodes = node_counts_by_commune(s, ids)
    villages = village_counts_by_commune(s, ids)
    provinces = rows_by_id(s, Province, {c.province_id for c in communes})
    districts = rows_by_id(s, District, {c.district_id for c in communes if c.district_id})
    items = [
        CommuneSummary(
            id=c.id,
            code=c.code,
            name=c.name,
            province=unit_ref(provinces[c.province_id]),
            district=unit_ref(districts.get(c.district_id)) if c.district_id else None,
            station_kind=c.station_kind,
            lat=c.lat,
            lon=c.lon,
            villages=villages.get(c.id, 0),
            nodes=nodes[c.id],
        )
        for c in communes
    ]
    return CommunePage(items=items, total=total, limit=limit, offset=offset)


def _node_infos(s: Session, village_ids: list[int]) -> dict[int, list[NodeInfo]]:
    result: dict[int, list[NodeInfo]] = {vid: [] for vid in village_ids}
    if not village_ids:
        return result
    rows = s.execute(
        select(Node, NodeLive)
        .outerjoin(NodeLive, NodeLive.node_id == Node.id)
        .where(Node.village_id.in_(village_ids), Node.retired_ms.is_(None))
        .order_by(Node.id)
    )
    for node, live in rows:
        assert node.village_id is not None  # the query asks for nodes of these villages
        result[node.village_id].append(
            NodeInfo(
                id=node.id,
                label=node.label,
                state=live.state if live else "unknown",
                available=bool(live and live.available),
                since_ms=live.since_ms if live else None,
                last_heartbeat_ms=live.last_heartbeat_ms if live else None,
                reasons=live.reasons if live else "",
                simulated=node.simulated,
                speakers=node.speakers,
                lat=node.lat,
                lon=node.lon,
            )
        )
    return result


def commune_detail(s: Session, commune_id: int) -> CommuneDetail:
    """One commune with its current villages, their clusters and states, and its history."""
    commune = s.get(Commune, commune_id)
    if commune is None:
        raise NotFoundError(f"Không tìm thấy xã có mã số {commune_id}.")
    villages = list(
        s.scalars(
            select(Village)
            .where(Village.commune_id == commune.id, Village.retired_ms.is_(None))
            .order_by(Village.name_folded, Village.code)
        )
    )
    nodes = _node_infos(s, [village.id for village in villages])
    village_details = []
    for village in villages:
        counts = NodeCounts()
        for node in nodes[village.id]:
            counts.add(node.state)
        village_details.append(
            VillageDetail(
                id=village.id,
                code=village.code,
                name=village.name,
                nodes=nodes[village.id],
                node_counts=counts,
            )
        )
    merged_from = s.scalars(
        select(Commune).where(Commune.merged_into_id == commune.id).order_by(Commune.code)
    )
    return CommuneDetail(
        id=commune.id,
        code=commune.code,
        name=commune.name,
        province=unit_ref(s.get_one(Province, commune.province_id)),
        district=unit_ref(s.get(District, commune.district_id)) if commune.district_id else None,
        station_kind=commune.station_kind,
        lat=commune.lat,
        lon=commune.lon,
        created_ms=commune.created_ms,
        retired_ms=commune.retired_ms,
        merged_into=unit_ref(s.get(Commune, commune.merged_into_id))
        if commune.merged_into_id
        else None,
        merged_from=[unit_ref(c) for c in merged_from],
        names=name_history(s, "commune", commune.id),
        nodes=node_counts_by_commune(s, [commune.id])[commune.id],
        villages=village_details,
    )
