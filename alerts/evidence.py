"""The emergency alerts of a report period, for the indicator's evidence folder and report.

The indicator (same rank) must not import this package, nor this one the indicator: the
indicator defines two seams (``indicator.evidence.PeriodTables``,
``indicator.reports.PeriodAlerts``) as plain callables, and the composition (``system/cli``,
``dashboard/routes/indicators``) hands it these functions.

``period_tables`` gives four CSV tables, the same facts as each alert's page:

- ``alerts.csv``: one row per alert received in the period (received, approved, by whom,
  state, decision, number of clusters targeted);
- ``alert_airings.csv``: one row per airing (the first and each repeat): targeted, started,
  first cluster started, 50 % and 99 % of the targeted clusters started (ms and seconds from
  reception);
- ``alert_clusters.csv``: one row per targeted cluster per airing: played or not, when, and
  why not (the phase the cluster reached, its error, or "never sent");
- ``alert_steps.csv``: the alert's timeline (every audited step).

Text that came from outside (headline, sender, a refusal reason) goes through
``loa.text.spreadsheet_safe``: an inspector opens these files in a spreadsheet.
"""

from __future__ import annotations

import json
from collections.abc import Collection
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.areas import Cluster, load_clusters
from alerts.models import AlertStep, CapAlert
from alerts.workflow import (
    STATE_LABELS_VI,
    STEP_LABELS_VI,
    AlertService,
    not_started_reason,
    targets_by_node,
)
from loa.text import spreadsheet_safe
from scheduler.workflow import iso

ALERTS_HEADER = [
    "alert_id",
    "identifier",
    "sender",
    "sent",
    "msg_type",
    "status",
    "severity",
    "urgency",
    "event",
    "headline",
    "area_desc",
    "drill",
    "decision",
    "state",
    "state_label",
    "received_ms",
    "received_at",
    "approved_ms",
    "approved_at",
    "approved_by",
    "expires_ms",
    "closed_ms",
    "clusters_targeted",
    "broadcast_ids",
]
AIRINGS_HEADER = [
    "alert_id",
    "broadcast_id",
    "dispatched_at",
    "targeted",
    "started",
    "first_started_ms",
    "first_started_s",
    "p50_ms",
    "p50_s",
    "p99_ms",
    "p99_s",
]
CLUSTERS_HEADER = [
    "alert_id",
    "broadcast_id",
    "node_id",
    "village",
    "commune",
    "played",
    "started_ms",
    "phase",
    "reason",
]
STEPS_HEADER = ["alert_id", "at_ms", "at", "action", "label", "actor", "detail"]


def _alerts_of(
    s: Session, start_ms: int, end_ms: int, commune_ids: Collection[int] | None
) -> tuple[list[CapAlert], dict[str, Cluster]]:
    """Alerts received in ``[start_ms, end_ms)``; narrowed to those reaching a cluster of
    ``commune_ids`` unless it is None (the whole province, alerts that reached no one too)."""
    rows = list(
        s.scalars(
            select(CapAlert)
            .where(CapAlert.received_ms >= start_ms, CapAlert.received_ms < end_ms)
            .order_by(CapAlert.received_ms, CapAlert.id)
        )
    )
    clusters = {c.node_id: c for c in load_clusters(s)}
    if commune_ids is not None:
        wanted = set(commune_ids)
        mine = {n for n, c in clusters.items() if c.commune_id in wanted}
        rows = [r for r in rows if mine & set(r.node_ids or [])]
    return rows, clusters


def _safe(row: list[Any]) -> list[Any]:
    return [spreadsheet_safe(c) if isinstance(c, str) else c for c in row]


def _blank(value: Any) -> Any:
    return "" if value is None else value


def period_tables(
    s: Session, start_ms: int, end_ms: int, commune_ids: Collection[int] | None
) -> list[tuple[str, list[str], list[list[Any]]]]:
    """The four tables (file name, header, rows) of the period's alerts."""
    alerts, clusters = _alerts_of(s, start_ms, end_ms, commune_ids)
    alert_rows, airing_rows, cluster_rows, step_rows = [], [], [], []
    for r in alerts:
        alert_rows.append(
            _safe(
                [
                    r.id,
                    r.identifier,
                    r.sender,
                    r.sent,
                    r.msg_type,
                    r.status,
                    r.severity,
                    r.urgency,
                    r.event,
                    r.headline,
                    r.area_desc,
                    int(r.drill),
                    r.decision,
                    r.state,
                    STATE_LABELS_VI.get(r.state, r.state),
                    r.received_ms,
                    iso(r.received_ms),
                    _blank(r.approved_ms),
                    _blank(iso(r.approved_ms)),
                    r.approved_by or "",
                    _blank(r.expires_ms),
                    _blank(r.closed_ms),
                    len(r.node_ids or []),
                    ";".join(str(b) for b in r.broadcast_ids or []),
                ]
            )
        )
        for bid in r.broadcast_ids or []:
            p = AlertService._airing_proof(s, bid, r, clusters)
            airing_rows.append(
                [
                    r.id,
                    bid,
                    _blank(p["dispatched_at"]),
                    p["targeted"],
                    p["started"],
                    _blank(p["first_started_ms"]),
                    _blank(p["first_started_s"]),
                    _blank(p["p50_ms"]),
                    _blank(p["p50_s"]),
                    _blank(p["p99_ms"]),
                    _blank(p["p99_s"]),
                ]
            )
            per_node, _ = targets_by_node(s, bid)
            for node_id in sorted(set(r.node_ids or []) | set(per_node)):
                t = per_node.get(node_id)
                c = clusters.get(node_id)
                played = t is not None and bool(t.started_at_ms)
                cluster_rows.append(
                    _safe(
                        [
                            r.id,
                            bid,
                            node_id,
                            c.village_name if c else "",
                            c.commune_name if c else "",
                            int(played),
                            t.started_at_ms if played and t is not None else "",
                            (t.phase if t is not None else "") or "",
                            "" if played else not_started_reason(t),
                        ]
                    )
                )
    ids = [r.id for r in alerts]
    for i in range(0, len(ids), 900):
        for st in s.scalars(
            select(AlertStep)
            .where(AlertStep.alert_id.in_(ids[i : i + 900]))
            .order_by(AlertStep.alert_id, AlertStep.at_ms, AlertStep.id)
        ):
            step_rows.append(
                _safe(
                    [
                        st.alert_id,
                        st.at_ms,
                        iso(st.at_ms),
                        st.action,
                        STEP_LABELS_VI.get(st.action, st.action),
                        st.actor,
                        json.dumps(st.detail, ensure_ascii=False, sort_keys=True, default=str)
                        if st.detail
                        else "",
                    ]
                )
            )
    return [
        ("alerts.csv", ALERTS_HEADER, alert_rows),
        ("alert_airings.csv", AIRINGS_HEADER, airing_rows),
        ("alert_clusters.csv", CLUSTERS_HEADER, cluster_rows),
        ("alert_steps.csv", STEPS_HEADER, step_rows),
    ]


def period_lines(
    s: Session, start_ms: int, end_ms: int, commune_ids: Collection[int] | None
) -> list[dict[str, Any]]:
    """One line per alert of the period for the filed report: received, what, severity,
    state, targeted/started of its first airing, first cluster and 99 % in seconds."""
    alerts, clusters = _alerts_of(s, start_ms, end_ms, commune_ids)
    out = []
    for r in alerts:
        first = (
            AlertService._airing_proof(s, r.broadcast_ids[0], r, clusters)
            if r.broadcast_ids
            else None
        )
        out.append(
            {
                "received_ms": r.received_ms,
                "title": r.headline or r.event or r.msg_type,
                "severity": r.severity,
                "state": STATE_LABELS_VI.get(r.state, r.state),
                "targeted": len(r.node_ids or []),
                "started": first["started"] if first else None,
                "first_started_s": first["first_started_s"] if first else None,
                "p99_s": first["p99_s"] if first else None,
            }
        )
    return out
