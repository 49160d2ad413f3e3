"""Import and export of the register (YAML or CSV, see ``formats``).

Import is two passes. The first reads the whole file and checks it against itself and the
database (codes, duplicates, retired units, dates), collecting every problem with its line;
if there is any, ``ImportFailed`` lists them all and nothing is written. The second applies
the file through the ``service`` operations, so an import that renames or moves a unit leaves
the same history rows as doing it by hand. Units are matched by code and clusters by id
(upsert): importing the same file twice changes nothing the second time. Units missing from
the file are left alone; an import never deletes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import select
from sqlalchemy.orm import Session

from loa.db import Database
from loa.text import fold, slugify
from loa.timeutil import format_datetime
from registry import changes as svc
from registry import validate as v
from registry.errors import ImportFailed, ImportIssue, RegistryError
from registry.formats import (
    CommuneRec,
    DistrictRec,
    NodeRec,
    ProvinceRec,
    RegistryDoc,
    VillageRec,
    decode_bytes,
    detect_format,
    parse,
    render_csv,
    render_yaml,
)
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

KINDS = ("province", "district", "commune", "village", "node")
YAML_HEADER = (
    "# Sổ đăng ký Loa (loa-registry/1): tỉnh > huyện (không bắt buộc) > xã > thôn > "
    "cụm loa.\n# Sửa rồi nhập lại bằng: loa registry import TỆP\n"
)


@dataclass
class ImportSummary:
    created: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    updated: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    renamed: int = 0
    moved: int = 0
    pending_approved: int = 0

    @property
    def changed(self) -> bool:
        return (
            any(self.created.values())
            or any(self.updated.values())
            or bool(self.renamed or self.moved or self.pending_approved)
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "created": dict(self.created),
            "updated": dict(self.updated),
            "renamed": self.renamed,
            "moved": self.moved,
            "pending_approved": self.pending_approved,
        }

    def text(self) -> str:
        c, u = self.created, self.updated
        return (
            f"Thêm mới: {c['province']} tỉnh, {c['district']} huyện, {c['commune']} xã, "
            f"{c['village']} thôn, {c['node']} cụm loa. Cập nhật: {sum(u.values())} mục; "
            f"đổi tên {self.renamed}; chuyển {self.moved}."
        )


# --------------------------------------------------------------------------- entry points


def import_text(s: Session, text: str, fmt: str, at_ms: int | None = None) -> ImportSummary:
    """Validate all of ``text`` then apply it; raises ``ImportFailed`` with every issue."""
    at = svc.resolve_time(at_ms)
    doc, issues = parse(text, fmt)
    if issues:
        raise ImportFailed(issues)
    reg = _Register(s)
    issues = _Checker(reg, at).check(doc)
    if issues:
        raise ImportFailed(issues)
    return _apply(s, doc, at, reg)


def import_bytes(s: Session, data: bytes, filename: str, at_ms: int | None = None) -> ImportSummary:
    return import_text(s, decode_bytes(data), detect_format(filename), at_ms)


def import_file(db: Database, path: str | Path, at_ms: int | None = None) -> ImportSummary:
    path = Path(path)
    fmt = detect_format(path.name)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise RegistryError(f"Không đọc được tệp {path}: {exc.strerror}.") from exc
    with db.session() as s:
        return import_text(s, decode_bytes(data), fmt, at_ms)


def export_text(s: Session, fmt: str) -> str:
    doc = export_doc(s)
    return render_yaml(doc, YAML_HEADER) if fmt == "yaml" else render_csv(doc)


def export_file(db: Database, path: str | Path) -> RegistryDoc:
    path = Path(path)
    fmt = detect_format(path.name)
    with db.session() as s:
        doc = export_doc(s)
    text = render_yaml(doc, YAML_HEADER) if fmt == "yaml" else render_csv(doc)
    # CSV gets a BOM so spreadsheet programs read the diacritics as UTF-8.
    path.write_text(text, encoding="utf-8-sig" if fmt == "csv" else "utf-8")
    return doc


def export_doc(s: Session) -> RegistryDoc:
    """The current register (retired units are history, not part of a snapshot)."""
    provinces = list(s.scalars(select(Province).order_by(Province.code)))
    districts = list(s.scalars(select(District).order_by(District.code)))
    communes = list(
        s.scalars(select(Commune).where(Commune.retired_ms.is_(None)).order_by(Commune.code))
    )
    villages = list(
        s.scalars(select(Village).where(Village.retired_ms.is_(None)).order_by(Village.code))
    )
    nodes = list(s.scalars(select(Node).where(Node.retired_ms.is_(None)).order_by(Node.id)))
    district_code = {d.id: d.code for d in districts}

    nodes_of: dict[int, list[NodeRec]] = {}
    for n in nodes:
        if n.village_id is None:
            continue
        nodes_of.setdefault(n.village_id, []).append(
            NodeRec(
                n.id,
                0,
                {
                    "label": n.label,
                    "speakers": n.speakers,
                    "simulated": n.simulated,
                    "lat": n.lat,
                    "lon": n.lon,
                    "vendor": n.vendor,
                    "heartbeat_s": n.heartbeat_s,
                },
            )
        )
    villages_of: dict[int, list[VillageRec]] = {}
    for vil in villages:
        villages_of.setdefault(vil.commune_id, []).append(
            VillageRec(vil.code, vil.name, 0, nodes_of.get(vil.id, []))
        )
    doc = RegistryDoc()
    by_province: dict[int, ProvinceRec] = {}
    for p in provinces:
        by_province[p.id] = ProvinceRec(p.code, p.name, 0)
        doc.provinces.append(by_province[p.id])
    for d in districts:
        by_province[d.province_id].districts.append(DistrictRec(d.code, d.name, 0))
    for c in communes:
        by_province[c.province_id].communes.append(
            CommuneRec(
                c.code,
                c.name,
                0,
                district_code.get(c.district_id) if c.district_id else None,
                {"station_kind": c.station_kind, "lat": c.lat, "lon": c.lon},
                villages_of.get(c.id, []),
            )
        )
    return doc


# --------------------------------------------------------------------------- snapshot


class _Register:
    """The register as the import finds it, one query per table, so checking and applying a
    5,000-cluster file costs lookups in dicts rather than a query per row. Rows created by
    the import are added as they are made."""

    def __init__(self, s: Session) -> None:
        self.provinces = {row.code: row for row in s.scalars(select(Province))}
        self.districts = {row.code: row for row in s.scalars(select(District))}
        self.communes = {row.code: row for row in s.scalars(select(Commune))}
        self.villages = {row.code: row for row in s.scalars(select(Village))}
        self.nodes = {row.id: row for row in s.scalars(select(Node))}
        self.communes_by_id = {row.id: row for row in self.communes.values()}
        self.villages_by_id = {row.id: row for row in self.villages.values()}
        self.open_names = {
            (row.entity, row.entity_id): row
            for row in s.scalars(select(NameHistory).where(NameHistory.valid_to_ms.is_(None)))
        }
        self.open_memberships = {
            row.village_id: row
            for row in s.scalars(
                select(VillageMembership).where(VillageMembership.valid_to_ms.is_(None))
            )
        }
        self.open_placements = {
            row.node_id: row
            for row in s.scalars(select(NodePlacement).where(NodePlacement.valid_to_ms.is_(None)))
        }


# --------------------------------------------------------------------------- checks


class _Checker:
    """First pass: everything that would make the second pass refuse, found up front."""

    def __init__(self, reg: _Register, at: int) -> None:
        self.reg, self.at = reg, at
        self.issues: list[ImportIssue] = []
        self.seen: dict[tuple[str, str], int] = {}

    def add(self, line: int, field_name: str, message: str) -> None:
        self.issues.append(ImportIssue(line, field_name, f"Dòng {line}: {message}"))

    def check(self, doc: RegistryDoc) -> list[ImportIssue]:
        for province in doc.provinces:
            self._province(province)
        return self.issues

    def _unique(self, kind: str, code: str, line: int, field_name: str) -> bool:
        first = self.seen.setdefault((kind, code), line)
        if first != line:
            self.add(
                line, field_name, f"mã {v.KIND_NOUN[kind]} '{code}' lặp lại (đã có ở dòng {first})"
            )
            return False
        return True

    def _too_early(self, line: int, field_name: str, since_ms: int, what: str) -> None:
        if self.at < since_ms:
            self.add(
                line,
                field_name,
                f"thời điểm nhập {format_datetime(self.at)} sớm hơn "
                f"{what} ({format_datetime(since_ms)})",
            )

    def _province(self, p: ProvinceRec) -> None:
        if p.code is None:  # CSV without province_code: match by name, else derive a code
            same = [row for row in self.reg.provinces.values() if fold(row.name) == fold(p.name)]
            p.code = same[0].code if same else slugify(p.name)[:32]
            if not same and not self._valid_code("province", p.code):
                self.add(
                    p.line,
                    "province",
                    f"không tạo được mã tỉnh từ tên '{p.name}'; hãy thêm cột province_code",
                )
        self._unique("province", p.code, p.line, "code")
        existing = self.reg.provinces.get(p.code)
        keys: dict[str, str] = {}
        for d in p.districts:
            key = d.code
            if d.code is None:
                same = [
                    row
                    for row in self.reg.districts.values()
                    if existing is not None
                    and row.province_id == existing.id
                    and fold(row.name) == fold(d.name)
                ]
                d.code = same[0].code if same else slugify(f"{p.code} {d.name}")[:32]
                key = f"name:{fold(d.name)}"
                if not same and not self._valid_code("district", d.code):
                    self.add(
                        d.line,
                        "district",
                        f"không tạo được mã huyện từ tên '{d.name}'; hãy thêm cột district_code",
                    )
            keys[key] = d.code
            self._unique("district", d.code, d.line, "code")
        for c in p.communes:
            if c.district is not None:
                c.district = keys.get(c.district, c.district)
            self._commune(c)

    @staticmethod
    def _valid_code(kind: str, code: str) -> bool:
        try:
            v.check_code(kind, code)
        except RegistryError:
            return False
        return True

    def _commune(self, c: CommuneRec) -> None:
        if not self._unique("commune", c.code, c.line, "code"):
            return
        row = self.reg.communes.get(c.code)
        if row is not None and row.retired_ms is not None:
            heir = self.reg.communes_by_id.get(row.merged_into_id or -1)
            self.add(
                c.line, "code", svc._retired_message("xã", row.name, row.code, row.retired_ms, heir)
            )
            return
        if row is not None and row.name != c.name:
            self._name_change("commune", row.id, c.line)
        created = row.created_ms if row is not None else self.at
        for vil in c.villages:
            self._village(vil, row, created)

    def _name_change(self, entity: str, entity_id: int, line: int) -> None:
        current = self.reg.open_names.get((entity, entity_id))
        if current is not None:
            self._too_early(line, "name", current.valid_from_ms, "lần đặt tên hiện tại")

    def _village(self, vil: VillageRec, commune: Commune | None, commune_created: int) -> None:
        if not self._unique("village", vil.code, vil.line, "code"):
            return
        row = self.reg.villages.get(vil.code)
        if row is not None and row.retired_ms is not None:
            heir = self.reg.villages_by_id.get(row.merged_into_id or -1)
            self.add(
                vil.line,
                "code",
                svc._retired_message("thôn", row.name, row.code, row.retired_ms, heir),
            )
            return
        if row is None:
            self._too_early(vil.line, "code", commune_created, "ngày lập xã")
        else:
            if row.name != vil.name:
                self._name_change("village", row.id, vil.line)
            if commune is None or row.commune_id != commune.id:
                membership = self.reg.open_memberships.get(row.id)
                if membership is not None:
                    self._too_early(
                        vil.line,
                        "code",
                        membership.valid_from_ms,
                        "lần thôn được gắn vào xã hiện tại",
                    )
                self._too_early(vil.line, "code", commune_created, "ngày lập xã mới")
        created = row.created_ms if row is not None else self.at
        for node in vil.nodes:
            self._node(node, row, created)

    def _node(self, n: NodeRec, village: Village | None, village_created: int) -> None:
        if not self._unique("node", n.id, n.line, "id"):
            return
        row = self.reg.nodes.get(n.id)
        if row is not None and row.retired_ms is not None:
            self.add(n.line, "id", f"cụm loa '{n.id}' đã ngừng sử dụng; hãy dùng mã khác")
            return
        if row is None or village is None or row.village_id != village.id:
            self._too_early(n.line, "id", village_created, "ngày lập thôn")
        if row is not None and (village is None or row.village_id != village.id):
            placement = self.reg.open_placements.get(n.id)
            if placement is not None:
                self._too_early(
                    n.line, "id", placement.valid_from_ms, "lần cụm được lắp vào thôn hiện tại"
                )


# --------------------------------------------------------------------------- apply


def _apply(s: Session, doc: RegistryDoc, at: int, reg: _Register) -> ImportSummary:
    summary = ImportSummary()
    pending = set(s.scalars(select(PendingNode.id)))
    line = 0
    try:
        for p in doc.provinces:
            line = p.line
            province = _apply_province(s, p, reg, summary)
            for d in p.districts:
                line = d.line
                _apply_district(s, province, d, reg, summary)
            for c in p.communes:
                line = c.line
                commune = _apply_commune(s, province, c, at, reg, summary)
                for vil in c.villages:
                    line = vil.line
                    village = _apply_village(s, commune, vil, at, reg, summary)
                    for n in vil.nodes:
                        line = n.line
                        _apply_node(s, village, n, at, reg, summary)
                        if n.id in pending:  # it announced itself before being imported
                            s.delete(s.get(PendingNode, n.id))
                            summary.pending_approved += 1
    except RegistryError as exc:  # the checks should have caught it; still refuse cleanly
        raise ImportFailed([ImportIssue(line, "", f"Dòng {line}: {exc.message}")]) from exc
    return summary


def _apply_province(s: Session, p: ProvinceRec, reg: _Register, summary: ImportSummary) -> Province:
    row = reg.provinces.get(p.code)
    if row is None:
        row = reg.provinces[p.code] = svc.add_province(s, p.code, p.name)
        summary.created["province"] += 1
    elif row.name != p.name:
        svc.update_province(s, row.id, name=p.name)
        summary.updated["province"] += 1
    return row


def _apply_district(
    s: Session, province: Province, d: DistrictRec, reg: _Register, summary: ImportSummary
) -> None:
    row = reg.districts.get(d.code)
    if row is None:
        reg.districts[d.code] = svc.add_district(s, province.id, d.code, d.name)
        summary.created["district"] += 1
    elif row.name != d.name or row.province_id != province.id:
        svc.update_district(s, row.id, name=d.name, province=province.id)
        summary.updated["district"] += 1


def _apply_commune(
    s: Session, province: Province, c: CommuneRec, at: int, reg: _Register, summary: ImportSummary
) -> Commune:
    district_id = reg.districts[c.district].id if c.district else None
    row = reg.communes.get(c.code)
    if row is None:
        row = reg.communes[c.code] = svc.insert_commune(
            s,
            province.id,
            district_id,
            c.code,
            c.name,
            at,
            station_kind=c.attrs.get("station_kind", "ip"),
            lat=c.attrs.get("lat"),
            lon=c.attrs.get("lon"),
        )
        summary.created["commune"] += 1
        return row
    changes: dict[str, object] = {}
    if row.province_id != province.id:
        changes["province"] = province.id
    if row.district_id != district_id:
        changes["district"] = district_id
    for key in ("station_kind", "lat", "lon"):
        if key in c.attrs and getattr(row, key) != c.attrs[key]:
            changes[key] = c.attrs[key]
    if changes:
        svc.update_commune(s, row.id, **changes)
        summary.updated["commune"] += 1
    if row.name != c.name:
        svc.rename_commune(s, row.id, c.name, at)
        summary.renamed += 1
    return row


def _apply_village(
    s: Session, commune: Commune, vil: VillageRec, at: int, reg: _Register, summary: ImportSummary
) -> Village:
    row = reg.villages.get(vil.code)
    if row is None:
        row = reg.villages[vil.code] = svc.insert_village(s, commune.id, vil.code, vil.name, at)
        summary.created["village"] += 1
        return row
    if row.commune_id != commune.id:
        svc.move_village(s, row.id, commune.id, at)
        summary.moved += 1
    if row.name != vil.name:
        svc.rename_village(s, row.id, vil.name, at)
        summary.renamed += 1
    return row


def _apply_node(
    s: Session, village: Village, n: NodeRec, at: int, reg: _Register, summary: ImportSummary
) -> None:
    row = reg.nodes.get(n.id)
    if row is None:
        # Checked in the first pass (values in parsing, uniqueness and dates by _Checker).
        reg.nodes[n.id] = svc.insert_node(s, n.id, village.id, at, **n.attrs)
        summary.created["node"] += 1
        return
    changes = {key: value for key, value in n.attrs.items() if getattr(row, key) != value}
    if changes:
        svc.update_node(s, row.id, **changes)
        summary.updated["node"] += 1
    if row.village_id != village.id:
        svc.move_node(s, row.id, village.id, at)
        summary.moved += 1
