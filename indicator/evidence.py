"""Evidence others can recompute: the raw rows behind a report, and a check of them.

``write_evidence`` puts in a folder, as CSV (UTF-8, one header row), everything a verdict
was computed from: the criteria set and thresholds, the register as it stood (communes,
villages with the part of the period each belonged, clusters with their placements), every
state transition of those clusters in the period (and the last one before it, the starting
state), the controller's watch spans and the gaps between them, the continuity nodes proved,
the airings aimed at each village with whether they were played, the attestations, and the
verdicts. ``MANIFEST.sha256`` lists each file's SHA-256 (``sha256sum -c`` reads it).

Other packages add tables of the whole period through a seam the indicator defines
(``PeriodTables``): the composition passes the emergency alerts' (``alerts.evidence``), written
at the top of the folder (``alerts.csv``, ``alert_airings.csv``, ``alert_clusters.csv``,
``alert_steps.csv``) and hashed in the manifest like every other file.

``verify_evidence`` uses that folder alone: it checks the manifest (a changed, missing or
extra file is reported by name), rebuilds the facts from the CSV rows and judges every
commune again with the same rules (``evaluate._judge_commune``), then compares with the
verdicts written. The package that wrote a period table checks it through a second seam
(``PeriodChecks``): the alerts' figures (targeted, started, first start, 50 %/99 %) are
recomputed from ``alert_clusters.csv`` with the writer's own formula, so a forger who edits
a figure and rewrites the manifest is caught. A period split at a change of criteria set
has one sub-folder per part.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections import defaultdict
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from types import SimpleNamespace

from sqlalchemy import select
from sqlalchemy.orm import Session

from controller.models import ControllerWatch, NodeTransition
from indicator import evaluate as ev
from indicator import intervals as iv
from indicator.coverage import continuity_rows
from indicator.errors import InvalidInputError
from indicator.manual_inputs import Thresholds
from indicator.sqlstream import stream_rows
from indicator.vn import language_key
from loa.timeutil import ms_to_dt
from registry import history

MANIFEST = "MANIFEST.sha256"
FILES = (
    "period.json",
    "criteria.csv",
    "communes.csv",
    "villages.csv",
    "placements.csv",
    "transitions.csv",
    "watch.csv",
    "watch_gaps.csv",
    "continuity.csv",
    "airings.csv",
    "attestations.csv",
    "attestation_scans.csv",
    "verdicts.csv",
)


# (session, start_ms, end_ms, commune ids or None for the whole province) ->
# [(file name, header, rows)]: tables of the whole period another package adds to the folder
# (the indicator does not import it; the composition root passes it in).
PeriodTables = Callable[
    [Session, int, int, Collection[int] | None], list[tuple[str, list[str], list[list]]]
]

# (folder) -> (differences found, what was recomputed; "" when the folder has none of its
# tables): the check of those tables, by the package that wrote them and with its own
# formulas (the emergency alerts' figures are recomputed by ``alerts.evidence.period_checks``).
# Raises ``ValueError`` (its text for the inspector) when its tables cannot be read. Passed in
# by the composition root, like ``PeriodTables``.
PeriodChecks = Callable[[Path], tuple[list[str], str]]


def _ivs(text: str) -> list[iv.Interval]:
    return [tuple(int(x) for x in part.split("-")) for part in text.split(";") if part]


def _ivs_text(ivs: list[iv.Interval]) -> str:
    return ";".join(f"{a}-{b}" for a, b in ivs)


def _write(path: Path, header: list[str], rows) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(header)
        w.writerows(rows)


def _read(path: Path) -> list[dict]:
    with path.open(newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _fraction(value: float | None) -> str:
    return "" if value is None else repr(value)


# --------------------------------------------------------------------------- writing


def write_evidence(
    session: Session,
    e: ev.Evaluation,
    folder: Path,
    *,
    period_tables: PeriodTables | None = None,
) -> list[Path]:
    """Write the evidence of ``e`` (and of each part when split) under ``folder``, with the
    tables ``period_tables`` gives for the whole period at its top."""
    folder.mkdir(parents=True, exist_ok=True)
    parts = e.parts or [e]
    written: list[Path] = []
    for i, part in enumerate(parts, 1):
        target = folder if len(parts) == 1 else folder / f"part-{i}"
        target.mkdir(parents=True, exist_ok=True)
        written += _write_part(session, part, target)
    if period_tables is not None:
        start, end = parts[0].start_ms, parts[-1].end_ms
        for name, header, rows in period_tables(session, start, end, period_communes(e)):
            if name in FILES or "/" in name or not name.endswith(".csv"):
                raise ValueError(f"period table name {name!r} is taken or not a CSV file name")
            _write(folder / name, header, rows)
            written.append(folder / name)
    lines = [
        f"{hashlib.sha256(p.read_bytes()).hexdigest()}  {p.relative_to(folder)}"
        for p in sorted(written)
    ]
    (folder / MANIFEST).write_text("\n".join(lines) + "\n", encoding="utf-8")
    return written


def period_communes(e: ev.Evaluation) -> list[int] | None:
    """The communes an evaluation covers (merged ones included), None when it is the whole
    province: what the tables of other packages are narrowed to."""
    if e.scope == "province":
        return None
    return sorted(
        {m for part in e.parts or [e] for c in part.communes for m in _members(part, c.id)}
    )


def _members(e: ev.Evaluation, commune_id: int) -> list[int]:
    f = e.facts
    return f.members.get(commune_id, [commune_id]) if f is not None else [commune_id]


def _write_part(session: Session, e: ev.Evaluation, d: Path) -> list[Path]:
    f = e.facts
    if f is None:
        raise InvalidInputError("Đánh giá này không giữ dữ liệu gốc để xuất bằng chứng.")
    th, c = e.thresholds, e.criteria
    (d / "period.json").write_text(
        json.dumps(
            {
                "key": e.period.key,
                "label": e.period.label,
                "start_ms": e.start_ms,
                "end_ms": e.end_ms,
                "evaluated_ms": e.evaluated_ms,
                "scope": e.scope,
                "province": e.province_name,
            },
            ensure_ascii=False,
            indent=1,
        ),
        encoding="utf-8",
    )
    _write(
        d / "criteria.csv",
        [
            "key",
            "code",
            "name",
            "legal_basis",
            "valid_from",
            "valid_to",
            "availability",
            "aired",
            "broadcasts_per_week_min",
            "coverage",
        ],
        [
            [
                c.key if c else "",
                c.indicator_code if c else "",
                c.name if c else "",
                c.legal_basis if c else "",
                c.valid_from.isoformat() if c else "",
                c.valid_to.isoformat() if c and c.valid_to else "",
                repr(th.availability),
                repr(th.aired),
                th.broadcasts_per_week_min,
                repr(th.coverage),
            ]
        ],
    )
    _write(
        d / "communes.csv",
        [
            "id",
            "code",
            "name",
            "district_id",
            "district_name",
            "station_kind",
            "window_start_ms",
            "window_end_ms",
            "members",
            "first_cluster_after_ms",
        ],
        [
            [
                v.id,
                v.code,
                v.name,
                v.district_id or "",
                v.district_name or "",
                v.station_kind,
                *f.windows[v.id],
                ";".join(str(m) for m in f.members.get(v.id, [v.id])),
                f.first_cluster_after.get(v.id, ""),
            ]
            for v in e.communes
        ],
    )
    _write(
        d / "villages.csv",
        ["commune_id", "village_id", "code", "name", "window"],
        [
            [
                cid,
                vid,
                f.villages[vid].code,
                f.village_names.get(vid, f.villages[vid].name),
                _ivs_text(w),
            ]
            for cid, vw in sorted(f.village_windows.items())
            for vid, w in sorted(vw.items())
        ],
    )
    village_ids = sorted({v for vw in f.village_windows.values() for v in vw})
    spans = [s for v in village_ids for s in f.spans_by_village.get(v, [])]
    _write(
        d / "placements.csv",
        ["village_id", "node_id", "from_ms", "to_ms"],
        [[s.owner_id, s.member_id, s.start_ms, s.end_ms] for s in spans],
    )
    nodes = sorted({str(s.member_id) for s in spans})
    _write(
        d / "transitions.csv",
        ["node_id", "at_ms", "to_state", "available"],
        _transition_rows(session, nodes, e.start_ms, e.end_ms),
    )
    w = ControllerWatch
    watch = session.execute(
        select(w.controller_id, w.start_ms, w.end_ms, w.end_cause)
        .where(w.start_ms < e.end_ms, w.end_ms > e.start_ms)
        .order_by(w.start_ms, w.id)
    ).all()
    _write(
        d / "watch.csv",
        ["controller_id", "start_ms", "end_ms", "end_cause"],
        [list(r) for r in watch],
    )
    _write(d / "watch_gaps.csv", ["from_ms", "to_ms"], [list(g) for g in f.unobserved])
    _write(
        d / "continuity.csv",
        ["node_id", "from_ms", "to_ms", "boot_id", "uptime_s"],
        [
            [r.node_id, r.from_ms, r.to_ms, r.boot_id, r.uptime_s]
            for r in continuity_rows(session, e.start_ms, e.end_ms, nodes)
        ],
    )
    ids = sorted({m for v in e.communes for m in f.members.get(v.id, [v.id])})
    sql, params = ev._target_query(
        session, ev.TARGET_ROWS_SQL, e.start_ms, e.end_ms, e.evaluated_ms, ids
    )
    _write(
        d / "airings.csv",
        ["commune_id", "village_id", "airing_id", "played", "slot_ms", "duration_ms", "language"],
        [list(r) for r in stream_rows(session, sql, params)],
    )
    _write(
        d / "attestations.csv",
        ["id", "commune_id", "attested_on", "valid_until", "inspector", "note", "station_kind"],
        [
            [
                r.id,
                cid,
                r.attested_on.isoformat(),
                r.valid_until.isoformat(),
                r.inspector,
                r.note,
                r.station_kind,
            ]
            for cid in ids
            for r in f.attestations.get(cid, [])
        ],
    )
    scan_files = _write_scans(
        session, [r.id for cid in ids for r in f.attestations.get(cid, [])], d
    )
    _write(d / "verdicts.csv", _VERDICT_HEADER, _verdict_rows(e.communes))
    return [d / name for name in FILES] + scan_files


def _write_scans(session: Session, attestation_ids: list[int], d: Path) -> list[Path]:
    """The scanned paper records of the attestations, as files beside the CSV rows (named
    in ``attestation_scans.csv`` with their SHA-256, and hashed in the manifest)."""
    from indicator.scans import evidence_name, scans_of

    rows, files = [], []
    for aid, scans in sorted(scans_of(session, attestation_ids).items()):
        for scan in scans:
            name = evidence_name(scan)
            (d / name).parent.mkdir(parents=True, exist_ok=True)
            (d / name).write_bytes(scan.data)
            files.append(d / name)
            rows.append(
                [
                    aid,
                    scan.id,
                    name,
                    scan.filename,
                    scan.media_type,
                    scan.size_bytes,
                    scan.sha256,
                    scan.created_ms,
                    scan.created_by,
                ]
            )
    _write(
        d / "attestation_scans.csv",
        [
            "attestation_id",
            "scan_id",
            "file",
            "original_name",
            "media_type",
            "size_bytes",
            "sha256",
            "uploaded_ms",
            "uploaded_by",
        ],
        rows,
    )
    return files


def _transition_rows(session: Session, nodes: list[str], start_ms: int, end_ms: int) -> list:
    t = NodeTransition
    rows: list = []
    for i in range(0, len(nodes), 900):
        chunk = nodes[i : i + 900]
        for node in chunk:  # the state each node started the period in
            last = session.execute(
                select(t.at_ms, t.to_state, t.available)
                .where(t.node_id == node, t.at_ms < start_ms)
                .order_by(t.at_ms.desc(), t.id.desc())
                .limit(1)
            ).first()
            if last is not None:
                rows.append([node, last[0], last[1], int(last[2])])
        rows += [
            [n, a, s, int(av)]
            for n, a, s, av in session.execute(
                select(t.node_id, t.at_ms, t.to_state, t.available)
                .where(t.node_id.in_(chunk), t.at_ms >= start_ms, t.at_ms < end_ms)
                .order_by(t.node_id, t.at_ms, t.id)
            )
        ]
    return rows


_VERDICT_HEADER = [
    "level",
    "commune_id",
    "village_id",
    "verdict",
    "passed",
    "coverage",
    "availability",
    "aimed",
    "played",
]


def _verdict_rows(communes: list[ev.CommuneVerdict]) -> list[list]:
    rows = []
    for c in communes:
        rows.append(
            ["commune", c.id, "", c.verdict, c.passed, _fraction(c.coverage), "", c.airings, ""]
        )
        rows += [
            [
                "village",
                c.id,
                v.id,
                v.verdict,
                "" if v.passed is None else v.passed,
                _fraction(v.coverage),
                _fraction(v.availability),
                v.aimed,
                v.played,
            ]
            for v in c.villages
        ]
    return rows


# --------------------------------------------------------------------------- verifying


@dataclass
class VerifyResult:
    ok: bool
    tampered: list[str] = field(default_factory=list)  # files whose hash differs / missing
    mismatches: list[str] = field(default_factory=list)  # verdicts that differ
    communes: int = 0
    # figures of the period tables (emergency alerts) that differ from their recomputation,
    # or why those tables could not be read
    period_mismatches: list[str] = field(default_factory=list)
    period_checked: str = ""  # what the period checks recomputed, for the text

    def text(self) -> str:
        if self.tampered:
            return (
                "Bằng chứng đã bị thay đổi: "
                + "; ".join(self.tampered)
                + ". Không thể xác nhận kết quả."
            )
        said = []
        if self.mismatches:
            said.append(
                "Tính lại từ dữ liệu gốc KHÔNG khớp với kết quả đã ghi: "
                + "; ".join(self.mismatches[:10])
            )
        if self.period_mismatches:
            said.append(
                "Số liệu cảnh báo khẩn cấp tính lại KHÔNG khớp với số đã ghi: "
                + "; ".join(self.period_mismatches[:10])
                + (
                    f" (và {len(self.period_mismatches) - 10} chỗ khác)"
                    if len(self.period_mismatches) > 10
                    else ""
                )
            )
        if said:
            return "\n".join(said)
        also = f"; tính lại {self.period_checked} cũng khớp" if self.period_checked else ""
        return (
            f"Khớp: tính lại {self.communes} xã từ dữ liệu gốc cho cùng kết quả{also}; "
            "mọi tệp đúng mã SHA-256 trong MANIFEST.sha256."
        )


def verify_evidence(folder: Path, *, period_checks: PeriodChecks | None = None) -> VerifyResult:
    """Check the manifest, then recompute every verdict (``_recompute``) and, through
    ``period_checks`` (the composition passes the alerts' check), the figures of the period
    tables; ``ok`` only when every hash and every recomputed figure matches."""
    manifest = folder / MANIFEST
    if not manifest.is_file():
        raise InvalidInputError(
            f"Thư mục '{folder}' không có {MANIFEST}: không phải thư mục bằng chứng của Loa."
        )
    listed: dict[str, str] = {}
    for line in manifest.read_text(encoding="utf-8").splitlines():
        digest, _, name = line.partition("  ")
        if name:
            listed[name] = digest
    result = VerifyResult(ok=False)
    for name, digest in sorted(listed.items()):
        path = folder / name
        if not path.is_file():
            result.tampered.append(f"thiếu {name}")
        elif hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            result.tampered.append(f"{name} khác mã SHA-256 đã ghi")
    present = (
        {str(p.relative_to(folder)) for p in folder.rglob("*.csv")}
        | {str(p.relative_to(folder)) for p in folder.rglob("period.json")}
        | {str(p.relative_to(folder)) for p in folder.rglob("scans/*") if p.is_file()}
    )
    result.tampered += [f"tệp lạ {n}" for n in sorted(present - set(listed))]
    if result.tampered:
        return result
    parts = sorted({Path(n).parent for n in listed if Path(n).name == "period.json"})
    for part in parts:
        result.mismatches += _recompute(folder / part, result)
    if period_checks is not None:
        try:
            found, result.period_checked = period_checks(folder)
        except ValueError as exc:
            found = [f"không đọc được: {exc}"]
        result.period_mismatches += found
    result.ok = not result.mismatches and not result.period_mismatches
    return result


def _recompute(d: Path, result: VerifyResult) -> list[str]:
    period = json.loads((d / "period.json").read_text(encoding="utf-8"))
    start, end = period["start_ms"], period["end_ms"]
    crit = _read(d / "criteria.csv")[0]
    th = Thresholds(
        float(crit["availability"]),
        float(crit["aired"]),
        int(crit["broadcasts_per_week_min"]),
        coverage=float(crit["coverage"]),
    )
    communes = _read(d / "communes.csv")
    village_windows: dict[int, dict[int, list[iv.Interval]]] = defaultdict(dict)
    villages, names = {}, {}
    for r in _read(d / "villages.csv"):
        vid = int(r["village_id"])
        village_windows[int(r["commune_id"])][vid] = _ivs(r["window"])
        villages[vid] = SimpleNamespace(id=vid, code=r["code"], name=r["name"])
        names[vid] = r["name"]
    spans: dict[int, list[history.Span]] = defaultdict(list)
    for r in _read(d / "placements.csv"):
        spans[int(r["village_id"])].append(
            history.Span(int(r["village_id"]), r["node_id"], int(r["from_ms"]), int(r["to_ms"]))
        )
    available, states = _intervals_from(_read(d / "transitions.csv"), start, end)
    observed = iv.union(
        iv.clip(
            sorted((int(r["start_ms"]), int(r["end_ms"])) for r in _read(d / "watch.csv")),
            start,
            end,
        )
    )
    bridges: dict[str, list[iv.Interval]] = defaultdict(list)
    for r in _read(d / "continuity.csv"):
        bridges[r["node_id"]].append((int(r["from_ms"]), int(r["to_ms"])))
    aimed: dict[tuple[int, int], set] = defaultdict(set)
    played: dict[tuple[int, int], set] = defaultdict(set)
    heard: dict[int, dict[int, tuple]] = defaultdict(dict)
    for r in _read(d / "airings.csv"):
        key, aid = (int(r["commune_id"]), int(r["village_id"])), int(r["airing_id"])
        aimed[key].add(aid)
        if r["played"] == "1":
            played[key].add(aid)
            heard[key[0]][aid] = (
                aid,
                int(r["slot_ms"]),
                int(r["duration_ms"] or 0),
                language_key(r["language"]),
            )
    attestations: dict[int, list] = defaultdict(list)
    for r in _read(d / "attestations.csv"):
        attestations[int(r["commune_id"])].append(
            SimpleNamespace(
                id=int(r["id"]),
                attested_on=date.fromisoformat(r["attested_on"]),
                valid_until=date.fromisoformat(r["valid_until"]),
                inspector=r["inspector"],
                note=r["note"],
                station_kind=r["station_kind"],
            )
        )
    facts = ev._Facts(
        th,
        {int(r["id"]): (int(r["window_start_ms"]), int(r["window_end_ms"])) for r in communes},
        village_windows,
        villages,
        names,
        spans,
        available,
        states,
        ev.AiringEvidence(
            {k: (len(v), len(played.get(k, ()))) for k, v in aimed.items()},
            {c: sorted(h.values(), key=lambda p: p[1]) for c, h in heard.items()},
        ),
        attestations,
        {},
        ms_to_dt(end - 1).date(),
    )
    facts.observed = observed
    facts.unobserved = iv.complement(observed, start, end)
    facts.bridges = {n: iv.union(iv.clip(sorted(b), start, end)) for n, b in bridges.items()}
    facts.members = {int(r["id"]): [int(m) for m in r["members"].split(";")] for r in communes}
    facts.first_cluster_after = {
        int(r["id"]): int(r["first_cluster_after_ms"])
        for r in communes
        if r["first_cluster_after_ms"]
    }
    recomputed = []
    for r in communes:
        c = SimpleNamespace(
            id=int(r["id"]),
            code=r["code"],
            station_kind=r["station_kind"],
            district_id=int(r["district_id"]) if r["district_id"] else None,
        )
        recomputed.append(ev._judge_commune(c, r["name"], facts))
    result.communes += len(recomputed)
    written = {(r["level"], r["commune_id"], r["village_id"]): r for r in _read(d / "verdicts.csv")}
    again = {(r[0], str(r[1]), str(r[2])): r for r in _verdict_rows(recomputed)}
    out = []
    for key in sorted(set(written) | set(again)):
        a, b = written.get(key), again.get(key)
        if a is None or b is None:
            out.append(f"{key[0]} {key[1]}/{key[2]}: chỉ có ở một bên")
            continue
        fresh = dict(zip(_VERDICT_HEADER, [str(x) for x in b], strict=True))
        diff = [k for k in _VERDICT_HEADER if a[k] != fresh[k]]
        if diff:
            out.append(
                f"{'xã' if key[0] == 'commune' else 'thôn'} {key[1]}"
                f"{'/' + key[2] if key[2] else ''}: "
                + ", ".join(f"{k} ghi {a[k]!r}, tính lại {fresh[k]!r}" for k in diff)
            )
    return out


def _intervals_from(rows: list[dict], start: int, end: int):
    """Each node's available intervals in ``[start, end)`` and its state at ``end - 1``,
    from transition rows (the first row of a node may precede ``start``: its starting
    state), exactly as ``availability.available_intervals`` reads the table."""
    by_node: dict[str, list[tuple[int, str, int]]] = defaultdict(list)
    for r in rows:
        by_node[r["node_id"]].append((int(r["at_ms"]), r["to_state"], int(r["available"])))
    available, states = {}, {}
    for node, items in by_node.items():
        current, since, ivs, state = 0, start, [], "unknown"
        for at, to_state, flag in items:
            if at < start:
                current, state = flag, to_state
                continue
            if flag != current:
                if current and at > since:
                    ivs.append((since, at))
                current, since = flag, at
            if at <= end - 1:
                state = to_state
        if current and end > since:
            ivs.append((since, end))
        available[node], states[node] = ivs, state
    return available, states
