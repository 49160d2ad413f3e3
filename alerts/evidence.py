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

import csv
import json
from collections import defaultdict
from collections.abc import Collection
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.areas import Cluster, load_clusters
from alerts.figures import DERIVED, start_figures
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
AIRINGS_HEADER = ["alert_id", "broadcast_id", "dispatched_at", *DERIVED]
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
                # the first airing's figures (alerts.figures, as alert_airings.csv states them)
                "targeted": first["targeted"] if first else len(r.node_ids or []),
                "started": first["started"] if first else None,
                "first_started_s": first["first_started_s"] if first else None,
                "p99_s": first["p99_s"] if first else None,
            }
        )
    return out


# --------------------------------------------------------------------------- checking

TABLES = {
    "alerts.csv": ALERTS_HEADER,
    "alert_airings.csv": AIRINGS_HEADER,
    "alert_clusters.csv": CLUSTERS_HEADER,
    "alert_steps.csv": STEPS_HEADER,
}


class AlertEvidenceError(ValueError):
    """An alert table of an evidence folder cannot be read (a column missing, a time that is
    not a number): the folder cannot be checked. ``message`` is Vietnamese, ``message_en``
    English."""

    def __init__(self, message: str, message_en: str) -> None:
        super().__init__(message)
        self.message = message
        self.message_en = message_en


def read_alert_tables(folder: Path) -> dict[str, list[dict[str, str]]] | None:
    """The alert tables at the top of an evidence folder, as rows of text; None when the
    folder has none (written before issue 19, or by a writer without alerts). Each table
    must carry every column of its header."""
    present = [name for name in TABLES if (folder / name).is_file()]
    if not present:
        return None
    out: dict[str, list[dict[str, str]]] = {}
    for name, header in TABLES.items():
        path = folder / name
        if not path.is_file():
            raise AlertEvidenceError(
                f"Thiếu tệp {name} trong khi có {', '.join(present)}: không kiểm tra được "
                "số liệu cảnh báo.",
                f"{name} is missing while {', '.join(present)} is present: the alert "
                "figures cannot be checked.",
            )
        try:
            with path.open(newline="", encoding="utf-8") as f:
                reader = csv.DictReader(f)
                missing = [c for c in header if c not in (reader.fieldnames or [])]
                if missing:
                    raise AlertEvidenceError(
                        f"Tệp {name} thiếu cột {', '.join(missing)}.",
                        f"{name} lacks the column(s) {', '.join(missing)}.",
                    )
                out[name] = [
                    {k: (v if isinstance(v, str) else "") for k, v in row.items()} for row in reader
                ]
        except UnicodeDecodeError:
            raise AlertEvidenceError(
                f"Tệp {name} không phải văn bản UTF-8.", f"{name} is not UTF-8 text."
            ) from None
        except csv.Error as exc:
            raise AlertEvidenceError(
                f"Tệp {name} không đọc được như CSV: {exc}.", f"{name} is not valid CSV: {exc}."
            ) from None
    return out


def _int(table: str, line: int, row: dict[str, str], column: str, *, blank: bool = False):
    """The integer in ``column`` (None when empty and ``blank``), or a clear error naming the
    file, its line and the column."""
    value = row.get(column, "")
    if value == "" and blank:
        return None
    try:
        return int(value)
    except ValueError:
        raise AlertEvidenceError(
            f"Tệp {table}, dòng {line}, cột {column}: '{value}' không phải số nguyên.",
            f"{table}, line {line}, column {column}: '{value}' is not an integer.",
        ) from None


def _number(table: str, line: int, row: dict[str, str], column: str) -> None:
    """A figure cell must be empty or a number (seconds may have decimals): otherwise a clear
    error naming the file, its line and the column."""
    value = row.get(column, "")
    if column.endswith("_s") and value != "":
        try:
            float(value)
        except ValueError:
            raise AlertEvidenceError(
                f"Tệp {table}, dòng {line}, cột {column}: '{value}' không phải số.",
                f"{table}, line {line}, column {column}: '{value}' is not a number.",
            ) from None
    else:
        _int(table, line, row, column, blank=True)


def _cell(value: Any) -> str:
    """A value as ``csv.writer`` writes it in these tables (None as an empty cell)."""
    return "" if value is None else str(value)


def check_alert_tables(tables: dict[str, list[dict[str, str]]]) -> list[str]:
    """Recompute every derived figure of the alert tables from their raw rows and name each
    difference (Vietnamese: the alert, the airing, the column, both values).

    From ``alert_clusters.csv`` (one row per targeted cluster per airing: played, started at)
    and each alert's reception in ``alerts.csv``, ``start_figures`` (the writer's own
    formula) gives targeted, started, first start, 50 % and 99 % (ms and seconds) of every
    airing of ``alert_airings.csv``. Also checked: each cluster row says played exactly when
    it has a start time; each alert's broadcasts are its airings; its label and ISO times are
    those of its state and ms; it targets no more clusters than each airing counts.
    ``AlertEvidenceError`` when a cell that must be a number is not."""
    out: list[str] = []
    alerts: dict[str, dict[str, str]] = {}
    received: dict[str, int] = {}
    targeted: dict[str, int] = {}
    for line, r in enumerate(tables["alerts.csv"], 2):
        alerts[r["alert_id"]] = r
        received[r["alert_id"]] = _int("alerts.csv", line, r, "received_ms")
        _int("alerts.csv", line, r, "approved_ms", blank=True)
        targeted[r["alert_id"]] = _int("alerts.csv", line, r, "clusters_targeted")

    def name(alert_id: str) -> str:
        a = alerts.get(alert_id)
        return f"cảnh báo {alert_id}" + (f" ({a['identifier']})" if a and a["identifier"] else "")

    for alert_id, a in alerts.items():
        for col, ms_col in (("received_at", "received_ms"), ("approved_at", "approved_ms")):
            fresh = _cell(iso(int(a[ms_col])) if a[ms_col] else None)
            if a[col] != fresh:
                out.append(f"{name(alert_id)}, cột {col}: ghi {a[col]!r}, tính lại {fresh!r}")
        label = spreadsheet_safe(STATE_LABELS_VI.get(a["state"], a["state"]))
        if a["state_label"] != label:
            out.append(
                f"{name(alert_id)}, cột state_label: ghi {a['state_label']!r}, tính lại {label!r}"
            )

    rows: dict[tuple[str, str], list[dict[str, str]]] = defaultdict(list)
    started: dict[tuple[str, str], list[int]] = defaultdict(list)
    for line, r in enumerate(tables["alert_clusters.csv"], 2):
        key = (r["alert_id"], r["broadcast_id"])
        rows[key].append(r)
        at = _int("alert_clusters.csv", line, r, "started_ms", blank=True)
        if r["played"] not in ("0", "1"):
            raise AlertEvidenceError(
                f"Tệp alert_clusters.csv, dòng {line}, cột played: '{r['played']}' không phải "
                "0 hoặc 1.",
                f"alert_clusters.csv, line {line}, column played: '{r['played']}' is not 0 or 1.",
            )
        if (r["played"] == "1") != (at is not None):
            out.append(
                f"{name(key[0])}, lượt phát {key[1]}, cụm loa {r['node_id']}: cột played ghi "
                f"{r['played']!r} nhưng started_ms ghi {r['started_ms']!r}"
            )
        elif at is not None:
            started[key].append(at)

    airings: dict[tuple[str, str], dict[str, str]] = {}
    for line, r in enumerate(tables["alert_airings.csv"], 2):
        key = (r["alert_id"], r["broadcast_id"])
        for col in DERIVED:
            _number("alert_airings.csv", line, r, col)
        airings[key] = r
        if key[0] not in received:
            out.append(f"{name(key[0])}, lượt phát {key[1]}: không có trong alerts.csv")
            continue
        fresh = start_figures(len(rows.get(key, [])), started.get(key, []), received[key[0]])
        for col in DERIVED:
            if r[col] != _cell(fresh[col]):
                out.append(
                    f"{name(key[0])}, lượt phát {key[1]}, cột {col}: ghi {r[col]!r}, "
                    f"tính lại {_cell(fresh[col])!r} từ alert_clusters.csv"
                )
    for key in sorted(set(rows) - set(airings)):
        out.append(
            f"{name(key[0])}, lượt phát {key[1]}: có cụm loa trong alert_clusters.csv "
            "nhưng không có trong alert_airings.csv"
        )
    for alert_id, a in alerts.items():
        listed = [b for b in a["broadcast_ids"].split(";") if b]
        mine = sorted(b for aid, b in airings if aid == alert_id)
        if sorted(listed) != mine:
            out.append(
                f"{name(alert_id)}, cột broadcast_ids: ghi {a['broadcast_ids']!r}, các lượt "
                f"phát trong alert_airings.csv là {';'.join(mine)!r}"
            )
        n = targeted[alert_id]
        for b in mine:
            counted = len(rows.get((alert_id, b), []))
            if n > counted:
                out.append(
                    f"{name(alert_id)}, cột clusters_targeted: ghi {n}, nhiều hơn {counted} "
                    f"cụm loa của lượt phát {b} trong alert_clusters.csv"
                )
    return out


def period_checks(folder: Path) -> tuple[list[str], str]:
    """What ``indicator.evidence.verify_evidence`` asks of this package (the composition
    passes it in as ``PeriodChecks``): the differences found in the folder's alert tables and
    what was recomputed (nothing, "", when the folder has no alert tables: written before
    alerts, verified as before). ``AlertEvidenceError`` (a ``ValueError``) when they cannot
    be read."""
    tables = read_alert_tables(folder)
    if tables is None:
        return [], ""
    checked = (
        f"số liệu {len(tables['alert_airings.csv'])} lượt phát của "
        f"{len(tables['alerts.csv'])} cảnh báo khẩn cấp (từ từng cụm loa)"
    )
    return check_alert_tables(tables), checked
