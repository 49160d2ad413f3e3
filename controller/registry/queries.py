"""Read side of the registry: lists, details, search and "as of" history lookups.

Node state is read from ``controller.models.NodeLive`` (written by the ingest); a registered
cluster without a NodeLive row has never been heard from and counts as ``unknown``. Counts
are done with GROUP BY in the database so a province of thousands of clusters lists quickly.
"""

from __future__ import annotations

from sqlalchemy import ColumnElement, Select, func, or_, select
from sqlalchemy.orm import Session

from controller.models import NodeLive
from controller.registry.errors import InvalidInputError, NotFoundError
from controller.registry.models import (
    Commune,
    District,
    NameHistory,
    Node,
    NodePlacement,
    PendingNode,
    Province,
    Village,
    VillageMembership,
)
from controller.registry.schemas import (
    CommuneDetail,
    CommunePage,
    CommuneSummary,
    NameRecord,
    NodeCounts,
    NodeInfo,
    PendingNodeOut,
    SearchHit,
    SearchResult,
    UnitRef,
    VillageDetail,
)
from controller.registry.service import Ref, get_commune, get_village
from loa.text import fold
from loa.timeutil import format_date, format_datetime

MAX_PAGE = 500
MAX_QUERY = 200


def _ref(row: Province | District | Commune | Village | None) -> UnitRef | None:
    return None if row is None else UnitRef(id=row.id, code=row.code, name=row.name)


def _tokens(q: str) -> list[str]:
    if len(q) > MAX_QUERY:
        raise InvalidInputError(f"Chuỗi tìm kiếm dài quá {MAX_QUERY} ký tự.")
    return fold(q).split()


def _like(token: str) -> str:
    escaped = token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def _text_match(tokens: list[str], folded_name, code) -> list[ColumnElement[bool]]:
    """Every token must appear in the folded name or the code ("doi can" finds "Đội Cấn")."""
    return [or_(folded_name.like(_like(t), escape="\\"),
                func.lower(code).like(_like(t), escape="\\")) for t in tokens]


# --------------------------------------------------------------------------- counts


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
        .group_by(Village.commune_id, state))
    for commune_id, node_state, count in rows:
        counts[commune_id].add(node_state, count)
    return counts


def village_counts_by_commune(s: Session, commune_ids: list[int]) -> dict[int, int]:
    if not commune_ids:
        return {}
    rows = s.execute(select(Village.commune_id, func.count(Village.id))
                     .where(Village.retired_ms.is_(None), Village.commune_id.in_(commune_ids))
                     .group_by(Village.commune_id))
    return {commune_id: count for commune_id, count in rows}


# --------------------------------------------------------------------------- communes


def _resolve_filter(s: Session, model: type[Province] | type[District], value: str,
                    noun: str) -> int:
    row = s.scalar(select(model).where(model.code == value))
    if row is None and value.isdecimal():
        row = s.get(model, int(value))
    if row is None:
        raise InvalidInputError(f"Không có {noun} '{value}'.")
    return row.id


def _commune_select(s: Session, q: str | None, district: str | None,
                    province: str | None, scope: frozenset[int] | None) -> Select:
    stmt = select(Commune).where(Commune.retired_ms.is_(None))
    if scope is not None:
        stmt = stmt.where(Commune.id.in_(sorted(scope)))
    if province:
        stmt = stmt.where(Commune.province_id == _resolve_filter(s, Province, province, "tỉnh"))
    if district:
        stmt = stmt.where(Commune.district_id == _resolve_filter(s, District, district, "huyện"))
    if q:
        stmt = stmt.where(*_text_match(_tokens(q), Commune.name_folded, Commune.code))
    return stmt


def list_communes(s: Session, *, q: str | None = None, district: str | None = None,
                  province: str | None = None, limit: int = 50, offset: int = 0,
                  scope: frozenset[int] | None = None) -> CommunePage:
    """Current communes, sorted by name, with village count and clusters by state.
    ``scope`` limits the list to the communes a user may see (None: all)."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidInputError(f"limit phải từ 1 đến {MAX_PAGE}.")
    if offset < 0:
        raise InvalidInputError("offset không được âm.")
    stmt = _commune_select(s, q, district, province, scope)
    total = s.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    communes = list(s.scalars(stmt.order_by(Commune.name_folded, Commune.code)
                              .limit(limit).offset(offset)))
    ids = [c.id for c in communes]
    nodes = node_counts_by_commune(s, ids)
    villages = village_counts_by_commune(s, ids)
    provinces = _by_id(s, Province, {c.province_id for c in communes})
    districts = _by_id(s, District, {c.district_id for c in communes if c.district_id})
    items = [CommuneSummary(
        id=c.id, code=c.code, name=c.name, province=_ref(provinces[c.province_id]),
        district=_ref(districts.get(c.district_id)) if c.district_id else None,
        station_kind=c.station_kind, lat=c.lat, lon=c.lon, villages=villages.get(c.id, 0),
        nodes=nodes[c.id]) for c in communes]
    return CommunePage(items=items, total=total, limit=limit, offset=offset)


def _by_id(s: Session, model, ids: set[int]) -> dict:
    if not ids:
        return {}
    return {row.id: row for row in s.scalars(select(model).where(model.id.in_(ids)))}


def _node_infos(s: Session, village_ids: list[int]) -> dict[int, list[NodeInfo]]:
    result: dict[int, list[NodeInfo]] = {vid: [] for vid in village_ids}
    if not village_ids:
        return result
    rows = s.execute(select(Node, NodeLive)
                     .outerjoin(NodeLive, NodeLive.node_id == Node.id)
                     .where(Node.village_id.in_(village_ids), Node.retired_ms.is_(None))
                     .order_by(Node.id))
    for node, live in rows:
        result[node.village_id].append(NodeInfo(
            id=node.id, label=node.label, state=live.state if live else "unknown",
            available=bool(live and live.available),
            since_ms=live.since_ms if live else None,
            last_heartbeat_ms=live.last_heartbeat_ms if live else None,
            reasons=live.reasons if live else "", simulated=node.simulated,
            speakers=node.speakers, lat=node.lat, lon=node.lon))
    return result


def name_history(s: Session, entity: str, entity_id: int) -> list[NameRecord]:
    rows = s.scalars(select(NameHistory).where(NameHistory.entity == entity,
                                               NameHistory.entity_id == entity_id)
                     .order_by(NameHistory.valid_from_ms, NameHistory.id))
    return [NameRecord(name=r.name, valid_from_ms=r.valid_from_ms, valid_to_ms=r.valid_to_ms,
                       valid_from=format_date(r.valid_from_ms),
                       valid_to=format_date(r.valid_to_ms) if r.valid_to_ms else None)
            for r in rows]


def commune_detail(s: Session, commune_id: int) -> CommuneDetail:
    """One commune with its current villages, their clusters and states, and its history."""
    commune = s.get(Commune, commune_id)
    if commune is None:
        raise NotFoundError(f"Không tìm thấy xã có mã số {commune_id}.")
    villages = list(s.scalars(select(Village).where(
        Village.commune_id == commune.id, Village.retired_ms.is_(None))
        .order_by(Village.name_folded, Village.code)))
    nodes = _node_infos(s, [village.id for village in villages])
    village_details = []
    for village in villages:
        counts = NodeCounts()
        for node in nodes[village.id]:
            counts.add(node.state)
        village_details.append(VillageDetail(id=village.id, code=village.code,
                                             name=village.name, nodes=nodes[village.id],
                                             node_counts=counts))
    merged_from = s.scalars(select(Commune).where(Commune.merged_into_id == commune.id)
                            .order_by(Commune.code))
    return CommuneDetail(
        id=commune.id, code=commune.code, name=commune.name,
        province=_ref(s.get(Province, commune.province_id)),
        district=_ref(s.get(District, commune.district_id)) if commune.district_id else None,
        station_kind=commune.station_kind, lat=commune.lat, lon=commune.lon,
        created_ms=commune.created_ms, retired_ms=commune.retired_ms,
        merged_into=_ref(s.get(Commune, commune.merged_into_id))
        if commune.merged_into_id else None,
        merged_from=[_ref(c) for c in merged_from],
        names=name_history(s, "commune", commune.id),
        nodes=node_counts_by_commune(s, [commune.id])[commune.id],
        villages=village_details)


# --------------------------------------------------------------------------- search


def search(s: Session, q: str, limit: int = 20,
           scope: frozenset[int] | None = None) -> SearchResult:
    """Communes, villages and clusters whose name, code or label contains every word of ``q``,
    ignoring diacritics and case. Retired (merged) units are listed after current ones, with
    the unit they went to, so a search under an old name still leads somewhere."""
    tokens = _tokens(q)
    if not tokens:
        return SearchResult(q=q, communes=[], villages=[], nodes=[])
    limit = max(1, min(limit, 100))
    in_scope: list[ColumnElement[bool]] = []
    village_scope: list[ColumnElement[bool]] = []
    if scope is not None:
        in_scope = [Commune.id.in_(sorted(scope))]
        village_scope = [Village.commune_id.in_(sorted(scope))]

    communes = list(s.scalars(
        select(Commune).where(*in_scope, *_text_match(tokens, Commune.name_folded, Commune.code))
        .order_by(Commune.retired_ms.is_not(None), Commune.name_folded).limit(limit)))
    heirs = _by_id(s, Commune, {c.merged_into_id for c in communes if c.merged_into_id})
    commune_hits = [SearchHit(kind="commune", id=c.id, code=c.code, name=c.name,
                              retired=c.retired_ms is not None,
                              merged_into=_ref(heirs.get(c.merged_into_id)))
                    for c in communes]

    villages = list(s.scalars(
        select(Village).where(*village_scope,
                              *_text_match(tokens, Village.name_folded, Village.code))
        .order_by(Village.retired_ms.is_not(None), Village.name_folded).limit(limit)))
    village_heirs = _by_id(s, Village, {v.merged_into_id for v in villages if v.merged_into_id})
    parents = _by_id(s, Commune, {v.commune_id for v in villages})
    village_hits = [SearchHit(kind="village", id=v.id, code=v.code, name=v.name,
                              commune=_ref(parents[v.commune_id]),
                              retired=v.retired_ms is not None,
                              merged_into=_ref(village_heirs.get(v.merged_into_id)))
                    for v in villages]

    return SearchResult(q=q, communes=commune_hits, villages=village_hits,
                        nodes=_search_nodes(s, tokens, limit, village_scope))


def _search_nodes(s: Session, tokens: list[str], limit: int,
                  village_scope: list[ColumnElement[bool]]) -> list[SearchHit]:
    # Node has no folded label column, so labels are folded here; a province's few thousand
    # short labels fold in milliseconds. (A ``label_folded`` column would move this to SQL.)
    stmt = select(Node.id, Node.label, Node.village_id).where(Node.retired_ms.is_(None))
    if village_scope:
        stmt = stmt.join(Village, Node.village_id == Village.id).where(*village_scope)
    rows = s.execute(stmt.order_by(Node.id))
    matched = []
    for node_id, label, village_id in rows:
        haystack = f"{fold(label)} {node_id.lower()}"
        if all(token in haystack for token in tokens):
            matched.append((node_id, label, village_id))
            if len(matched) >= limit:
                break
    villages = _by_id(s, Village, {vid for _, _, vid in matched if vid})
    communes = _by_id(s, Commune, {v.commune_id for v in villages.values()})
    hits = []
    for node_id, label, village_id in matched:
        village = villages.get(village_id)
        hits.append(SearchHit(kind="node", id=node_id, code=node_id, name=label or node_id,
                              village=_ref(village),
                              commune=_ref(communes.get(village.commune_id)) if village else None))
    return hits


# --------------------------------------------------------------------------- history


def _valid_at(model, at_ms: int) -> list[ColumnElement[bool]]:
    return [model.valid_from_ms <= at_ms,
            or_(model.valid_to_ms.is_(None), model.valid_to_ms > at_ms)]


def villages_of_commune_at(s: Session, commune: Ref, at_ms: int) -> list[Village]:
    """The villages that belonged to ``commune`` at ``at_ms`` (also for a merged-away one)."""
    commune_id = get_commune(s, commune, current=False).id
    return list(s.scalars(
        select(Village).join(VillageMembership, VillageMembership.village_id == Village.id)
        .where(VillageMembership.commune_id == commune_id, *_valid_at(VillageMembership, at_ms))
        .order_by(Village.code)))


def commune_of_village_at(s: Session, village: Ref, at_ms: int) -> Commune | None:
    village_id = get_village(s, village, current=False).id
    return s.scalar(
        select(Commune).join(VillageMembership, VillageMembership.commune_id == Commune.id)
        .where(VillageMembership.village_id == village_id, *_valid_at(VillageMembership, at_ms)))


def nodes_of_village_at(s: Session, village: Ref, at_ms: int) -> list[str]:
    village_id = get_village(s, village, current=False).id
    return list(s.scalars(
        select(NodePlacement.node_id)
        .where(NodePlacement.village_id == village_id, *_valid_at(NodePlacement, at_ms))
        .order_by(NodePlacement.node_id)))


def village_of_node_at(s: Session, node_id: str, at_ms: int) -> Village | None:
    return s.scalar(
        select(Village).join(NodePlacement, NodePlacement.village_id == Village.id)
        .where(NodePlacement.node_id == node_id, *_valid_at(NodePlacement, at_ms)))


def name_at(s: Session, entity: str, entity_id: int, at_ms: int) -> str | None:
    """The name a commune or village bore at ``at_ms``: old reports print the old name."""
    return s.scalar(select(NameHistory.name).where(
        NameHistory.entity == entity, NameHistory.entity_id == entity_id,
        *_valid_at(NameHistory, at_ms)))


# --------------------------------------------------------------------------- pending


def count_pending(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(PendingNode)) or 0


def list_pending(s: Session, limit: int = 100, offset: int = 0) -> list[PendingNodeOut]:
    """Most recently seen first, one page (an open broker can fill the table)."""
    rows = s.scalars(select(PendingNode).order_by(PendingNode.last_seen_ms.desc(),
                                                  PendingNode.id)
                     .limit(limit).offset(offset))
    return [PendingNodeOut(id=p.id, first_seen_ms=p.first_seen_ms, last_seen_ms=p.last_seen_ms,
                           first_seen=format_datetime(p.first_seen_ms),
                           last_seen=format_datetime(p.last_seen_ms), messages=p.messages,
                           last_channel=p.last_channel, last_payload=p.last_payload)
            for p in rows]
