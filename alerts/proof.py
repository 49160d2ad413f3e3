"""One alert's proof as a file an officer can keep or send on: CSV (one row per fact, UTF-8
with BOM so spreadsheets read the diacritics) or JSON (the report as the web page shows it).

The CSV rows are the same facts as the alert page: the received/approved/... steps, then per
airing the targeted count, first cluster started, 50 % and 99 % of the targeted clusters
started, and one row per targeted cluster that did not start, with why. Every text cell goes
through ``loa.text.spreadsheet_safe``: a CAP headline or a refusal reason comes from outside
and must not run as a formula when the file is opened in a spreadsheet."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from loa.text import spreadsheet_safe

HEADER = [
    "section",
    "at",
    "at_ms",
    "action",
    "label",
    "actor",
    "node_id",
    "village",
    "commune",
    "value",
    "detail",
]


def proof_rows(report: dict[str, Any]) -> list[list[Any]]:
    """The facts of ``AlertService.report`` as rows under ``HEADER``."""
    rows: list[list[Any]] = [
        [
            "alert",
            report.get("received_at") or "",
            "",
            "received",
            "Cảnh báo",
            "",
            "",
            "",
            "",
            report.get("state") or "",
            " | ".join(
                str(report.get(k) or "")
                for k in ("identifier", "sender", "msg_type", "status", "severity", "headline")
            ),
        ]
    ]
    for st in report.get("steps", []):
        rows.append(
            [
                "step",
                st["at"] or "",
                st["at_ms"],
                st["action"],
                st["label"],
                st["actor"] or "",
                "",
                "",
                "",
                "",
                _detail(st["detail"]),
            ]
        )
    for a in report.get("airings", []):
        bid = a["broadcast_id"]
        for key, label, at, secs in (
            ("targeted", "Số cụm loa nhắm tới", "", a["targeted"]),
            ("started", "Số cụm loa đã phát", "", a["started"]),
            ("first_started", "Cụm loa đầu tiên phát", a["first_started_at"], a["first_started_s"]),
            ("p50", "50 % cụm loa đã phát", a["p50_at"], a["p50_s"]),
            ("p99", "99 % cụm loa đã phát", a["p99_at"], a["p99_s"]),
        ):
            ms = a.get(f"{key}_ms") if key != "first_started" else a["first_started_ms"]
            rows.append(
                [
                    f"airing {bid}",
                    at or "",
                    ms if ms is not None else "",
                    key,
                    label,
                    "",
                    "",
                    "",
                    "",
                    "" if secs is None else secs,
                    "",
                ]
            )
        for m in a["not_started"]:
            rows.append(
                [
                    f"airing {bid}",
                    "",
                    "",
                    "not_started",
                    "Cụm loa chưa phát",
                    "",
                    m["node_id"],
                    m["village"],
                    m["commune"],
                    m["phase"] or "",
                    m["reason"],
                ]
            )
    return [[spreadsheet_safe(c) for c in r] for r in rows]


def _detail(detail: Any) -> str:
    if not detail:
        return ""
    if isinstance(detail, dict) and "reason" in detail:  # the reason first, readable
        rest = {k: v for k, v in detail.items() if k != "reason"}
        return str(detail["reason"]) + (
            " | " + json.dumps(rest, ensure_ascii=False, sort_keys=True, default=str)
            if rest
            else ""
        )
    return (
        detail
        if isinstance(detail, str)
        else json.dumps(detail, ensure_ascii=False, sort_keys=True, default=str)
    )


def proof_csv(report: dict[str, Any]) -> bytes:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(HEADER)
    w.writerows(proof_rows(report))
    return ("\ufeff" + buf.getvalue()).encode("utf-8")


def proof_json(report: dict[str, Any]) -> bytes:
    return json.dumps(report, ensure_ascii=False, indent=1, default=str).encode("utf-8")
