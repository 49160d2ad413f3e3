"""Availability of clusters over any window, from stored state transitions alone.

A node is *available* (audible, in the sense of indicator 8.3) from a transition whose
``available`` flag is true until the next transition that clears it; before a node's first
transition its state is "unknown" and it is unavailable. Availability over ``[start, end)``
is the available time inside the window divided by the window's length. Windows are usually
periods (midnights in Asia/Ho_Chi_Minh, see ``periods``), but any millisecond bounds work.

Placement: a cluster placed in a village for only part of a window counts for that village
only while it was placed there; the time outside its placement counts as "not available in
this village" (the denominator stays the village's whole window). So a cluster installed in
the middle of a quarter cannot make its village pass that quarter on its own, and a cluster
moved away stops counting for its old village from the day it moved.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import NodeTransition
from indicator.intervals import Interval, total
from indicator.sqlstream import ordered_join, stream_batches
from registry.models import Node

_CHUNK = 900


def _last_transition_value(
    session: Session, column, before, node_ids: Sequence[str] | None
) -> list:
    """(node id, ``column`` of that node's last transition matching ``before``) for every
    node or the given ones: one indexed lookup per node, in chunks of ids."""
    t = NodeTransition
    last = (
        select(column)
        .where(t.node_id == Node.id, before)
        .order_by(t.at_ms.desc(), t.id.desc())
        .limit(1)
        .correlate(Node)
        .scalar_subquery()
    )
    stmt = select(Node.id, last)
    if node_ids is None:
        return list(session.execute(stmt))
    rows: list = []
    ids = list(dict.fromkeys(node_ids))
    for i in range(0, len(ids), _CHUNK):
        rows.extend(session.execute(stmt.where(Node.id.in_(ids[i : i + _CHUNK]))))
    return rows


def _initial_flags(
    session: Session, start_ms: int, node_ids: Sequence[str] | None
) -> dict[str, bool]:
    """The ``available`` flag of each node's last transition before ``start`` (one indexed
    lookup per node through ``ix_transition_node_at_available``, portable to PostgreSQL)."""
    t = NodeTransition
    rows = _last_transition_value(session, t.available, t.at_ms < start_ms, node_ids)
    return {node: bool(flag) for node, flag in rows}


_WINDOW_SQL = (
    # Node-major on purpose: one range seek per node in ix_transition_node_at_available reads
    # each node's window from the index alone, in time order, whatever the table's size.
    "SELECT n.id, t.at_ms, t.available FROM node n {join} node_transition t "
    "ON t.node_id = n.id AND t.at_ms >= :start AND t.at_ms < :end {where} "
    "ORDER BY n.id, t.at_ms, t.id"
)


def _window_batches(
    session: Session, start_ms: int, end_ms: int, node_ids: Sequence[str] | None
) -> Iterator[list[tuple[str, int, int]]]:
    """``(node, at_ms, available)`` of the window, grouped by node, in time order."""
    params = {"start": start_ms, "end": end_ms}
    join = ordered_join(session)
    if node_ids is None:
        yield from stream_batches(session, _WINDOW_SQL.format(join=join, where=""), params)
        return
    ids = sorted(set(node_ids))
    for i in range(0, len(ids), _CHUNK):
        chunk = ids[i : i + _CHUNK]
        marks = ", ".join(f":n{j}" for j in range(len(chunk)))
        yield from stream_batches(
            session,
            _WINDOW_SQL.format(join=join, where=f"WHERE n.id IN ({marks})"),
            {**params, **{f"n{j}": node for j, node in enumerate(chunk)}},
        )


def available_intervals(
    session: Session, start_ms: int, end_ms: int, node_ids: Sequence[str] | None = None
) -> dict[str, list[Interval]]:
    """Bulk: each node's available intervals inside the window (two queries in all).

    One streaming pass: rows arrive grouped by node, so each node's intervals are closed
    when the next node starts, without holding the transitions themselves in memory. This
    loop sees every transition of the province, hence its plain style."""
    initial = _initial_flags(session, start_ms, node_ids)
    out: dict[str, list[Interval]] = {}
    node, current, since, ivs = None, 0, start_ms, []
    for batch in _window_batches(session, start_ms, end_ms, node_ids):
        for row_node, at, available in batch:
            if row_node != node:
                if node is not None:
                    if current and end_ms > since:
                        ivs.append((since, end_ms))
                    out[node] = ivs
                node, since, ivs = row_node, start_ms, []
                current = 1 if initial.get(row_node) else 0
            if available != current:
                if current and at > since:
                    ivs.append((since, at))
                current, since = available, at
    if node is not None:
        if current and end_ms > since:
            ivs.append((since, end_ms))
        out[node] = ivs
    wanted = initial.keys() if node_ids is None else node_ids
    for node in wanted:  # no transition inside the window: the state at its start held
        if node not in out:
            out[node] = [(start_ms, end_ms)] if initial.get(node, False) else []
    return out


def availability_by_node(
    session: Session, start_ms: int, end_ms: int, node_ids: Sequence[str] | None = None
) -> dict[str, float]:
    """Bulk: share of the window each node was available (0.0-1.0)."""
    length = end_ms - start_ms
    if length <= 0:
        raise ValueError("empty window")
    return {
        node: total(ivs) / length
        for node, ivs in available_intervals(session, start_ms, end_ms, node_ids).items()
    }


def availability(session: Session, node_id: str, start_ms: int, end_ms: int) -> float:
    """Share of ``[start, end)`` one node was available (seconds available / window)."""
    return availability_by_node(session, start_ms, end_ms, [node_id]).get(node_id, 0.0)


def states_at(
    session: Session, at_ms: int, node_ids: Sequence[str] | None = None
) -> dict[str, str]:
    """Each node's state at an instant ("unknown" before its first transition), for the
    report's "clusters by state" at the end of a period."""
    t = NodeTransition
    rows = _last_transition_value(session, t.to_state, t.at_ms <= at_ms, node_ids)
    return {node: state or "unknown" for node, state in rows}
