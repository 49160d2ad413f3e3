"""The register as it was: as-of queries over validity intervals.

A quarter that ended before two communes merged must be judged on the villages and clusters
each commune had *then*, and printed under the names of that time. These queries read the
interval tables (``VillageMembership``, ``NodePlacement``, ``NameHistory``) and return spans
clipped to the asked window. Bulk versions answer for a whole province in one query per
table (no query per commune or village), which is what indicator 8.3 evaluation uses.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

from sqlalchemy import and_, or_, select
from sqlalchemy.orm import Session

from registry.models import (
    Commune,
    NameHistory,
    NodePlacement,
    Village,
    VillageMembership,
)

# Keeps every IN (...) list under old SQLite's 999-parameter limit.
_CHUNK = 900


@dataclass(frozen=True, slots=True)
class Span:
    """``member_id`` belonged to ``owner_id`` during ``[start_ms, end_ms)`` (clipped)."""

    owner_id: int
    member_id: int | str
    start_ms: int
    end_ms: int

    @property
    def length_ms(self) -> int:
        return self.end_ms - self.start_ms


def _chunks(ids: Sequence) -> Iterator[Sequence]:
    for i in range(0, len(ids), _CHUNK):
        yield ids[i : i + _CHUNK]


def _overlapping(model, start_ms: int, end_ms: int):
    """Intervals ``[valid_from, valid_to)`` that share at least one instant with the window."""
    return and_(
        model.valid_from_ms < end_ms, or_(model.valid_to_ms.is_(None), model.valid_to_ms > start_ms)
    )


def _spans(rows: Iterable, start_ms: int, end_ms: int) -> list[Span]:
    spans = []
    for owner, member, lo, hi in rows:
        a = max(lo, start_ms)
        b = end_ms if hi is None else min(hi, end_ms)
        if b > a:
            spans.append(Span(owner, member, a, b))
    return spans


def _filtered(session: Session, stmt, column, ids: Sequence | None) -> list:
    if ids is None:
        return list(session.execute(stmt))
    ids = list(dict.fromkeys(ids))
    rows: list = []
    for chunk in _chunks(ids):
        rows.extend(session.execute(stmt.where(column.in_(chunk))))
    return rows


# --------------------------------------------------------------------------- memberships


def memberships(
    session: Session, start_ms: int, end_ms: int, commune_ids: Sequence[int] | None = None
) -> list[Span]:
    """Village-in-commune spans overlapping the window (owner = commune, member = village)."""
    m = VillageMembership
    stmt = select(m.commune_id, m.village_id, m.valid_from_ms, m.valid_to_ms).where(
        _overlapping(m, start_ms, end_ms)
    )
    return _spans(_filtered(session, stmt, m.commune_id, commune_ids), start_ms, end_ms)


def villages_by_commune(
    session: Session, start_ms: int, end_ms: int, commune_ids: Sequence[int] | None = None
) -> dict[int, list[Span]]:
    """Bulk: for each commune, the spans of its villages within the window."""
    out: dict[int, list[Span]] = defaultdict(list)
    for span in memberships(session, start_ms, end_ms, commune_ids):
        out[span.owner_id].append(span)
    return dict(out)


def villages_of_commune(
    session: Session, commune_id: int, start_ms: int, end_ms: int
) -> list[Span]:
    """The villages a commune had at any time in the window, each with when it had them."""
    return memberships(session, start_ms, end_ms, [commune_id])


def communes_of_village(
    session: Session, village_id: int, start_ms: int, end_ms: int
) -> list[Span]:
    m = VillageMembership
    stmt = select(m.commune_id, m.village_id, m.valid_from_ms, m.valid_to_ms).where(
        _overlapping(m, start_ms, end_ms), m.village_id == village_id
    )
    return _spans(session.execute(stmt), start_ms, end_ms)


# --------------------------------------------------------------------------- placements


def placements(
    session: Session, start_ms: int, end_ms: int, village_ids: Sequence[int] | None = None
) -> list[Span]:
    """Node-in-village spans overlapping the window (owner = village, member = node id)."""
    p = NodePlacement
    stmt = select(p.village_id, p.node_id, p.valid_from_ms, p.valid_to_ms).where(
        _overlapping(p, start_ms, end_ms)
    )
    return _spans(_filtered(session, stmt, p.village_id, village_ids), start_ms, end_ms)


def nodes_by_village(
    session: Session, start_ms: int, end_ms: int, village_ids: Sequence[int] | None = None
) -> dict[int, list[Span]]:
    """Bulk: for each village, the spans of the clusters placed in it within the window."""
    out: dict[int, list[Span]] = defaultdict(list)
    for span in placements(session, start_ms, end_ms, village_ids):
        out[span.owner_id].append(span)
    return dict(out)


def nodes_of_village(session: Session, village_id: int, start_ms: int, end_ms: int) -> list[Span]:
    return placements(session, start_ms, end_ms, [village_id])


# --------------------------------------------------------------------------- names

_ENTITY_MODELS = {"commune": Commune, "village": Village}


def names_at(session: Session, entity: str, ids: Sequence[int], at_ms: int) -> dict[int, str]:
    """Bulk: the name each commune or village bore at ``at_ms``.

    ``NameHistory`` holds earlier names with their intervals; an entity with no row covering
    ``at_ms`` has kept its current name since, so the current name answers."""
    model = _ENTITY_MODELS.get(entity)
    if model is None:
        raise ValueError(f"unknown entity {entity!r}")
    ids = list(dict.fromkeys(ids))
    names: dict[int, str] = {}
    for chunk in _chunks(ids):
        names.update(list(session.execute(select(model.id, model.name).where(model.id.in_(chunk)))))
    h = NameHistory
    for chunk in _chunks(ids):
        stmt = (
            select(h.entity_id, h.name, h.valid_from_ms)
            .where(
                h.entity == entity,
                h.entity_id.in_(chunk),
                h.valid_from_ms <= at_ms,
                or_(h.valid_to_ms.is_(None), h.valid_to_ms > at_ms),
            )
            .order_by(h.valid_from_ms)
        )
        for entity_id, name, _ in session.execute(stmt):
            names[entity_id] = name  # latest-starting row wins if intervals ever overlap
    return names


def name_at(session: Session, entity: str, entity_id: int, at_ms: int) -> str | None:
    """The name of one commune or village at a time (None if it does not exist)."""
    return names_at(session, entity, [entity_id], at_ms).get(entity_id)


def communes_existing(session: Session, start_ms: int, end_ms: int) -> list[Commune]:
    """Communes that existed at some instant of the window (created before its end, not
    retired before its start): a merged commune still answers for the quarters it lived."""
    c = Commune
    stmt = (
        select(c)
        .where(c.created_ms < end_ms, or_(c.retired_ms.is_(None), c.retired_ms > start_ms))
        .order_by(c.code)
    )
    return list(session.scalars(stmt))
