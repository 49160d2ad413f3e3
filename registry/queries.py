"""Read side of the registry: lists, details, search and "as of" history lookups.

Lists of communes with their clusters' states join the controller's live state, so they
live above both, in ``controller/commune_directory.py``.
"""

from __future__ import annotations

from typing import overload

from sqlalchemy import ColumnElement, func, or_, select
from sqlalchemy.orm import Session

from loa.text import fold
from loa.timeutil import format_date, format_datetime
from registry.changes import Ref, get_commune, get_village
from registry.errors import InvalidInputError
from registry.models import (
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
from registry.schemas import (
    NameRecord,
    PendingNodeOut,
    SearchHit,
    SearchResult,
    UnitRef,
)

MAX_PAGE = 500
MAX_QUERY = 200


@overload
def unit_ref(row: Province | District | Commune | Village) -> UnitRef: ...
@overload
def unit_ref(row: Province | District | Commune | Village | None) -> UnitRef | None: ...
def unit_ref(row: Province | District | Commune | Village | None) -> UnitRef | None:
    return None if row is None else UnitRef(id=row.id, code=row.code, name=row.name)


def search_tokens(q: str) -> list[str]:
    if len(q) > MAX_QUERY:
        raise InvalidInputError(f"Chuỗi tìm kiếm dài quá {MAX_QUERY} ký tự.")
    return fold(q).split()


def _like(token: str) -> str:
    escaped = token.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
    return f"%{escaped}%"


def text_match(tokens: list[str], folded_name, code) -> list[ColumnElement[bool]]:
    """Every token must appear in the folded name or the code ("doi can" finds "Đội Cấn")."""
    return [
        or_(folded_name.like(_like(t), escape="\\"), func.lower(code).like(_like(t), escape="\\"))
        for t in tokens
    ]


# --------------------------------------------------------------------------- counts


def rows_by_id(s: Session, model, ids: set[int]) -> dict:
    if not ids:
        return {}
    return {row.id: row for row in s.scalars(select(model).where(model.id.in_(ids)))}


def name_history(s: Session, entity: str, entity_id: int) -> list[NameRecord]:
    rows = s.scalars(
        select(NameHistory)
        .where(NameHistory.entity == entity, NameHistory.entity_id == entity_id)
        .order_by(NameHistory.valid_from_ms, NameHistory.id)
    )
    return [
        NameRecord(
            name=r.name,
            valid_from_ms=r.valid_from_ms,
            valid_to_ms=r.valid_to_ms,
            valid_from=format_date(r.valid_from_ms),
            valid_to=format_date(r.valid_to_ms) if r.valid_to_ms else None,
        )
        for r in rows
    ]


# --------------------------------------------------------------------------- search


def search(
    s: Session, q: str, limit: int = 20, scope: frozenset[int] | None = None
) -> SearchResult:
    """Communes, villages and clusters whose name, code or label contains every word of ``q``,
    ignoring diacritics and case. Retired (merged) units are listed after current ones, with
    the unit they went to, so a search under an old name still leads somewhere."""
    tokens = search_tokens(q)
    if not tokens:
        return SearchResult(q=q, communes=[], villages=[], nodes=[])
    limit = max(1, min(limit, 100))
    in_scope: list[ColumnElement[bool]] = []
    village_scope: list[ColumnElement[bool]] = []
    if scope is not None:
        in_scope = [Commune.id.in_(sorted(scope))]
        village_scope = [Village.commune_id.in_(sorted(scope))]

    communes = list(
        s.scalars(
            select(Commune)
            .where(*in_scope, *text_match(tokens, Commune.name_folded, Commune.code))
            .order_by(Commune.retired_ms.is_not(None), Commune.name_folded)
            .limit(limit)
        )
    )
    heirs = rows_by_id(s, Commune, {c.merged_into_id for c in communes if c.merged_into_id})
    commune_hits = [
        SearchHit(
            kind="commune",
            id=c.id,
            code=c.code,
            name=c.name,
            retired=c.retired_ms is not None,
            merged_into=unit_ref(heirs.get(c.merged_into_id)),
        )
        for c in communes
    ]

    villages = list(
        s.scalars(
            select(Village)
            .where(*village_scope, *text_match(tokens, Village.name_folded, Village.code))
            .order_by(Village.retired_ms.is_not(None), Village.name_folded)
            .limit(limit)
        )
    )
    village_heirs = rows_by_id(s, Village, {v.merged_into_id for v in villages if v.merged_into_id})
    parents = rows_by_id(s, Commune, {v.commune_id for v in villages})
    village_hits = [
        SearchHit(
            kind="village",
            id=v.id,
            code=v.code,
            name=v.name,
            commune=unit_ref(parents[v.commune_id]),
            retired=v.retired_ms is not None,
            merged_into=unit_ref(village_heirs.get(v.merged_into_id)),
        )
        for v in villages
    ]

    return SearchResult(
        q=q,
        communes=commune_hits,
        villages=village_hits,
        nodes=_search_nodes(s, tokens, limit, village_scope),
    )


def _search_nodes(
    s: Session, tokens: list[str], limit: int, village_scope: list[ColumnElement[bool]]
) -> list[SearchHit]:
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
    villages = rows_by_id(s, Village, {vid for _, _, vid in matched if vid})
    communes = rows_by_id(s, Commune, {v.commune_id for v in villages.values()})
    hits = []
    for node_id, label, village_id in matched:
        village = villages.get(village_id)
        hits.append(
            SearchHit(
                kind="node",
                id=node_id,
                code=node_id,
                name=label or node_id,
                village=unit_ref(village),
                commune=unit_ref(communes.get(village.commune_id)) if village else None,
            )
        )
    return hits


# --------------------------------------------------------------------------- history


def _valid_at(model, at_ms: int) -> list[ColumnElement[bool]]:
    return [
        model.valid_from_ms <= at_ms,
        or_(model.valid_to_ms.is_(None), model.valid_to_ms > at_ms),
    ]


def villages_of_commune_at(s: Session, commune: Ref, at_ms: int) -> list[Village]:
    """The villages that belonged to ``commune`` at ``at_ms`` (also for a merged-away one)."""
    commune_id = get_commune(s, commune, current=False).id
    return list(
        s.scalars(
            select(Village)
            .join(VillageMembership, VillageMembership.village_id == Village.id)
            .where(VillageMembership.commune_id == commune_id, *_valid_at(VillageMembership, at_ms))
            .order_by(Village.code)
        )
    )


def commune_of_village_at(s: Session, village: Ref, at_ms: int) -> Commune | None:
    village_id = get_village(s, village, current=False).id
    return s.scalar(
        select(Commune)
        .join(VillageMembership, VillageMembership.commune_id == Commune.id)
        .where(VillageMembership.village_id == village_id, *_valid_at(VillageMembership, at_ms))
    )


def nodes_of_village_at(s: Session, village: Ref, at_ms: int) -> list[str]:
    village_id = get_village(s, village, current=False).id
    return list(
        s.scalars(
            select(NodePlacement.node_id)
            .where(NodePlacement.village_id == village_id, *_valid_at(NodePlacement, at_ms))
            .order_by(NodePlacement.node_id)
        )
    )


def village_of_node_at(s: Session, node_id: str, at_ms: int) -> Village | None:
    return s.scalar(
        select(Village)
        .join(NodePlacement, NodePlacement.village_id == Village.id)
        .where(NodePlacement.node_id == node_id, *_valid_at(NodePlacement, at_ms))
    )


def name_at(s: Session, entity: str, entity_id: int, at_ms: int) -> str | None:
    """The name a commune or village bore at ``at_ms``: old reports print the old name."""
    return s.scalar(
        select(NameHistory.name).where(
            NameHistory.entity == entity,
            NameHistory.entity_id == entity_id,
            *_valid_at(NameHistory, at_ms),
        )
    )


# --------------------------------------------------------------------------- pending


def count_pending(s: Session) -> int:
    return s.scalar(select(func.count()).select_from(PendingNode)) or 0


def list_pending(s: Session, limit: int = 100, offset: int = 0) -> list[PendingNodeOut]:
    """Most recently seen first, one page (an open broker can fill the table)."""
    rows = s.scalars(
        select(PendingNode)
        .order_by(PendingNode.last_seen_ms.desc(), PendingNode.id)
        .limit(limit)
        .offset(offset)
    )
    return [
        PendingNodeOut(
            id=p.id,
            first_seen_ms=p.first_seen_ms,
            last_seen_ms=p.last_seen_ms,
            first_seen=format_datetime(p.first_seen_ms),
            last_seen=format_datetime(p.last_seen_ms),
            messages=p.messages,
            last_channel=p.last_channel,
            last_payload=p.last_payload,
        )
        for p in rows
    ]
