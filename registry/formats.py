"""Registry files: YAML (nested) and CSV (one row per cluster), parsed into one document model.

Both parsers keep the line number of everything they read, because the person fixing a
2,000-line file needs "Dòng 812: ..." and not "invalid value". Parsing never stops at the
first problem: every issue in the file is collected, so one round of corrections suffices.

YAML (``loa-registry/1``)::

    format: loa-registry/1
    provinces:
      - code: LS
        name: Lạng Sơn
        districts:                 # optional grouping (pre-2025 reports)
          - code: ls-caoloc
            name: Cao Lộc
            communes: [ ...commune... ]
        communes: [ ...commune... ]  # communes outside any district
    # commune: {code, name, station_kind: ip|fm|wired, lat, lon, villages: [...]}
    # village: {code, name, nodes: [...]}
    # node:    {id, label, speakers: 1-4, simulated: true|false, lat, lon, vendor, heartbeat_s}

Scalars are read as text and converted per field, so a code like ``001`` stays ``001`` and a
wrong type is reported with its field instead of silently becoming a number or a boolean.

CSV: header row with the columns of ``CSV_COLUMNS`` (``province_code`` and ``district_code``
optional); one row per cluster. A row with an empty ``node_id`` declares a village without
clusters, one with an empty ``village_code`` a commune without villages. Comma or semicolon
separated, UTF-8 (with or without BOM); decimal commas are accepted in lat/lon.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

from loa.text import fold, spreadsheet_safe, spreadsheet_text
from registry import validate as v
from registry.errors import ImportIssue, InvalidInputError

FORMAT_TAG = "loa-registry/1"
MAX_FILE_BYTES = 5 * 1024 * 1024
MAX_YAML_NODES = 500_000  # alias expansion guard ("billion laughs")
CSV_COLUMNS = (
    "province",
    "district",
    "commune_code",
    "commune",
    "village_code",
    "village",
    "node_id",
    "label",
    "speakers",
    "simulated",
    "lat",
    "lon",
    "station_kind",
    "province_code",
    "district_code",
)
CSV_REQUIRED = CSV_COLUMNS[:13]
_TRUE = {"true", "yes", "1", "có", "co", "x"}
_FALSE = {"false", "no", "0", "không", "khong"}
_DECIMAL_COMMA = re.compile(r"^-?\d+,\d+$")


# --------------------------------------------------------------------------- document model


@dataclass
class NodeRec:
    id: str
    line: int
    attrs: dict[str, Any] = field(default_factory=dict)  # only the fields the file gives


@dataclass
class VillageRec:
    code: str
    name: str
    line: int
    nodes: list[NodeRec] = field(default_factory=list)


@dataclass
class CommuneRec:
    code: str
    name: str
    line: int
    district: str | None = None  # district code (or key, until resolved)
    attrs: dict[str, Any] = field(default_factory=dict)  # station_kind, lat, lon when given
    villages: list[VillageRec] = field(default_factory=list)


@dataclass
class DistrictRec:
    code: str | None  # None: CSV without district_code, resolved by name against the db
    name: str
    line: int


@dataclass
class ProvinceRec:
    code: str | None
    name: str
    line: int
    districts: list[DistrictRec] = field(default_factory=list)
    communes: list[CommuneRec] = field(default_factory=list)


@dataclass
class RegistryDoc:
    provinces: list[ProvinceRec] = field(default_factory=list)


def detect_format(filename: str) -> str:
    lower = filename.lower()
    if lower.endswith((".yaml", ".yml")):
        return "yaml"
    if lower.endswith(".csv"):
        return "csv"
    raise InvalidInputError(
        f"Không rõ định dạng tệp '{filename}': dùng đuôi .yaml, .yml hoặc .csv."
    )


def decode_bytes(data: bytes) -> str:
    if len(data) > MAX_FILE_BYTES:
        raise InvalidInputError(f"Tệp lớn quá {MAX_FILE_BYTES // (1024 * 1024)} MB.")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise InvalidInputError(
            f"Dòng {line}: tệp không phải mã UTF-8; hãy lưu lại với bảng mã UTF-8."
        ) from exc


def parse(text: str, fmt: str) -> tuple[RegistryDoc, list[ImportIssue]]:
    return parse_yaml(text) if fmt == "yaml" else parse_csv(text)


class _Issues:
    """Collects problems as "Dòng N: ..." lines."""

    def __init__(self) -> None:
        self.items: list[ImportIssue] = []

    def add(self, line: int, field_name: str, message: str) -> None:
        self.items.append(ImportIssue(line, field_name, f"Dòng {line}: {message}"))

    def check(self, line: int, field_name: str, fn: Callable[[], Any]) -> Any:
        """Run one field check; on failure record it and return None."""
        try:
            return fn()
        except InvalidInputError as exc:
            self.add(line, field_name, exc.message)
            return None


# --------------------------------------------------------------------------- text -> values


def _number(text: str, noun: str) -> float:
    raw = text.strip()
    if _DECIMAL_COMMA.match(raw):
        raw = raw.replace(",", ".")
    try:
        return float(raw)
    except ValueError:
        raise InvalidInputError(f"{noun} '{text}' không phải là số") from None


def _integer(text: str, noun: str) -> int:
    try:
        return int(text.strip())
    except ValueError:
        raise InvalidInputError(f"{noun} '{text}' không phải là số nguyên") from None


def _boolean(text: str, noun: str) -> bool:
    raw = text.strip().lower()
    if raw in _TRUE:
        return True
    if raw in _FALSE:
        return False
    raise InvalidInputError(f"{noun} '{text}' không hợp lệ (true/false, có/không)")


# Node fields: file key -> converter from text to the checked value.
NODE_FIELDS: dict[str, Callable[[str], Any]] = {
    "label": v.check_label,
    "speakers": lambda t: v.check_speakers(_integer(t, "số loa")),
    "simulated": lambda t: _boolean(t, "mô phỏng"),
    "lat": lambda t: v.check_lat(_number(t, "vĩ độ")),
    "lon": lambda t: v.check_lon(_number(t, "kinh độ")),
    "vendor": v.check_vendor,
    "heartbeat_s": lambda t: v.check_heartbeat_s(_integer(t, "chu kỳ heartbeat")),
}
COMMUNE_FIELDS: dict[str, Callable[[str], Any]] = {
    "station_kind": v.check_station_kind,
    "lat": NODE_FIELDS["lat"],
    "lon": NODE_FIELDS["lon"],
}


# --------------------------------------------------------------------------- YAML


@dataclass
class _Scalar:
    text: str
    is_null: bool
    line: int


@dataclass
class _Map:
    line: int
    items: dict[str, Any] = field(default_factory=dict)
    key_lines: dict[str, int] = field(default_factory=dict)


@dataclass
class _Seq:
    line: int
    items: list[Any] = field(default_factory=list)


class _TooBig(Exception):
    pass


def _convert(node: yaml.Node, issues: _Issues, budget: list[int]) -> Any:
    """YAML node graph -> _Map/_Seq/_Scalar keeping lines (the composer gives us marks)."""
    budget[0] -= 1
    if budget[0] < 0:
        raise _TooBig
    line = node.start_mark.line + 1
    if isinstance(node, yaml.ScalarNode):
        return _Scalar(node.value, node.tag == "tag:yaml.org,2002:null", line)
    if isinstance(node, yaml.SequenceNode):
        return _Seq(line, [_convert(child, issues, budget) for child in node.value])
    result = _Map(line)
    for key_node, value_node in node.value:
        key_line = key_node.start_mark.line + 1
        if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
            issues.add(key_line, "", "khóa YAML phức tạp (hoặc '<<') không được hỗ trợ")
            continue
        if key_node.value in result.items:
            issues.add(
                key_line,
                key_node.value,
                f"khóa '{key_node.value}' lặp lại (đã có ở dòng "
                f"{result.key_lines[key_node.value]})",
            )
            continue
        result.items[key_node.value] = _convert(value_node, issues, budget)
        result.key_lines[key_node.value] = key_line
    return result


class _YamlReader:
    def __init__(self) -> None:
        self.issues = _Issues()

    def read(self, text: str) -> RegistryDoc:
        loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
        try:
            root_node = yaml.compose(text, Loader=loader)
        except yaml.MarkedYAMLError as exc:
            mark = exc.problem_mark or exc.context_mark
            line = mark.line + 1 if mark else 1
            self.issues.add(line, "", f"YAML không hợp lệ: {exc.problem or exc}")
            return RegistryDoc()
        except yaml.YAMLError as exc:
            self.issues.add(1, "", f"YAML không hợp lệ: {exc}")
            return RegistryDoc()
        if root_node is None:
            self.issues.add(1, "", "tệp rỗng")
            return RegistryDoc()
        try:
            root = _convert(root_node, self.issues, [MAX_YAML_NODES])
        except _TooBig:
            self.issues.add(1, "", "tệp YAML quá lớn hoặc lồng bí danh quá sâu")
            return RegistryDoc()
        top = self._map(root, "tệp", {"format", "provinces"})
        if top is None:
            return RegistryDoc()
        fmt = top.items.get("format")
        if fmt is not None and (not isinstance(fmt, _Scalar) or fmt.text != FORMAT_TAG):
            self.issues.add(
                top.key_lines["format"],
                "format",
                f"định dạng '{getattr(fmt, 'text', fmt)}' không hỗ trợ (cần '{FORMAT_TAG}')",
            )
        provinces = self._list(top, "provinces", required=True)
        return RegistryDoc([p for p in (self._province(item) for item in provinces) if p])

    # ----------------------------------------------------------------- helpers

    def _map(self, value: Any, what: str, allowed: set[str]) -> _Map | None:
        if not isinstance(value, _Map):
            line = getattr(value, "line", 1)
            self.issues.add(line, "", f"{what} phải là một bảng khóa: giá trị")
            return None
        for key, key_line in value.key_lines.items():
            if key not in allowed:
                self.issues.add(
                    key_line,
                    key,
                    f"khóa '{key}' không dùng được ở {what} (dùng: {', '.join(sorted(allowed))})",
                )
        return value

    def _list(self, parent: _Map, key: str, required: bool = False) -> list[Any]:
        value = parent.items.get(key)
        if value is None or (isinstance(value, _Scalar) and value.is_null):
            if required:
                self.issues.add(parent.line, key, f"thiếu danh sách '{key}'")
            return []
        if not isinstance(value, _Seq):
            self.issues.add(parent.key_lines[key], key, f"'{key}' phải là một danh sách")
            return []
        return value.items

    def _text(self, parent: _Map, key: str) -> tuple[str | None, int]:
        """The scalar text under ``key`` (None when absent or null) and its line."""
        value = parent.items.get(key)
        line = parent.key_lines.get(key, parent.line)
        if value is None or (isinstance(value, _Scalar) and value.is_null):
            return None, line
        if not isinstance(value, _Scalar):
            self.issues.add(line, key, f"'{key}' phải là một giá trị đơn")
            return None, line
        return value.text, line

    def _checked(self, parent: _Map, key: str, check: Callable[[Any], Any]) -> Any:
        text, line = self._text(parent, key)
        return self.issues.check(line, key, lambda: check(text))

    def _attrs(self, parent: _Map, fields: dict[str, Callable[[str], Any]]) -> dict[str, Any]:
        attrs: dict[str, Any] = {}
        for key, convert in fields.items():
            if key not in parent.items:
                continue
            text, line = self._text(parent, key)
            if text is None:
                if key in ("lat", "lon", "label", "vendor"):
                    attrs[key] = "" if key in ("label", "vendor") else None
                continue
            try:
                attrs[key] = convert(text)
            except InvalidInputError as exc:
                self.issues.add(line, key, exc.message)
        return attrs

    # ----------------------------------------------------------------- levels

    def _province(self, value: Any) -> ProvinceRec | None:
        m = self._map(value, "tỉnh", {"code", "name", "districts", "communes"})
        if m is None:
            return None
        code = self._checked(m, "code", lambda t: v.check_code("province", t))
        name = self._checked(m, "name", lambda t: v.check_name("province", t))
        province = ProvinceRec(code, name or "", m.line)
        for item in self._list(m, "districts"):
            dm = self._map(item, "huyện", {"code", "name", "communes"})
            if dm is None:
                continue
            dcode = self._checked(dm, "code", lambda t: v.check_code("district", t))
            dname = self._checked(dm, "name", lambda t: v.check_name("district", t))
            province.districts.append(DistrictRec(dcode, dname or "", dm.line))
            for citem in self._list(dm, "communes"):
                commune = self._commune(citem, dcode)
                if commune:
                    province.communes.append(commune)
        for citem in self._list(m, "communes"):
            commune = self._commune(citem, None)
            if commune:
                province.communes.append(commune)
        return province if code and name else None

    def _commune(self, value: Any, district: str | None) -> CommuneRec | None:
        m = self._map(value, "xã", {"code", "name", "station_kind", "lat", "lon", "villages"})
        if m is None:
            return None
        code = self._checked(m, "code", lambda t: v.check_code("commune", t))
        name = self._checked(m, "name", lambda t: v.check_name("commune", t))
        commune = CommuneRec(
            code or "", name or "", m.line, district, self._attrs(m, COMMUNE_FIELDS)
        )
        for item in self._list(m, "villages"):
            vm = self._map(item, "thôn", {"code", "name", "nodes"})
            if vm is None:
                continue
            vcode = self._checked(vm, "code", lambda t: v.check_code("village", t))
            vname = self._checked(vm, "name", lambda t: v.check_name("village", t))
            village = VillageRec(vcode or "", vname or "", vm.line)
            for nitem in self._list(vm, "nodes"):
                nm = self._map(nitem, "cụm loa", {"id", *NODE_FIELDS})
                if nm is None:
                    continue
                node_id = self._checked(nm, "id", lambda t: v.check_code("node", t))
                attrs = self._attrs(nm, NODE_FIELDS)
                if node_id:
                    village.nodes.append(NodeRec(node_id, nm.line, attrs))
            if vcode and vname:
                commune.villages.append(village)
        return commune if code and name else None


def parse_yaml(text: str) -> tuple[RegistryDoc, list[ImportIssue]]:
    reader = _YamlReader()
    doc = reader.read(text)
    return doc, reader.issues.items


# --------------------------------------------------------------------------- CSV


def _sniff_delimiter(text: str) -> str:
    header = text.split("\n", 1)[0]
    return ";" if header.count(";") > header.count(",") else ","


class _CsvReader:
    """Groups rows into the nested document, checking that rows which repeat a commune or a
    village agree with the first row that declared it."""

    def __init__(self) -> None:
        self.issues = _Issues()
        self.doc = RegistryDoc()
        self.provinces: dict[str, ProvinceRec] = {}
        self.districts: dict[tuple[str, str], DistrictRec] = {}
        self.province_key: dict[int, str] = {}  # id(ProvinceRec) -> its key in this file
        self.communes: dict[str, tuple[CommuneRec, str, str | None]] = {}
        self.villages: dict[str, tuple[VillageRec, str]] = {}
        self.nodes: dict[str, int] = {}

    def read(self, text: str) -> RegistryDoc:
        reader = csv.reader(io.StringIO(text, newline=""), delimiter=_sniff_delimiter(text))
        try:
            header = next(reader)
        except StopIteration:
            self.issues.add(1, "", "tệp rỗng")
            return self.doc
        except csv.Error as exc:
            self.issues.add(1, "", f"CSV không hợp lệ: {exc}")
            return self.doc
        columns = [c.strip().lower() for c in header]
        if not self._check_header(columns):
            return self.doc
        while True:
            try:
                row = next(reader)
            except StopIteration:
                break
            except csv.Error as exc:
                self.issues.add(reader.line_num, "", f"CSV không hợp lệ: {exc}")
                break
            if not any(cell.strip() for cell in row):
                continue
            if len(row) > len(columns):
                self.issues.add(
                    reader.line_num,
                    "",
                    f"dòng có {len(row)} ô, nhiều hơn {len(columns)} cột tiêu đề",
                )
                continue
            cells = {
                col: (spreadsheet_text(row[i].strip()) if i < len(row) else "")
                for i, col in enumerate(columns)
            }
            self._row(reader.line_num, cells)
        return self.doc

    def _check_header(self, columns: list[str]) -> bool:
        ok = True
        seen: set[str] = set()
        for col in columns:
            if col in seen:
                self.issues.add(1, col, f"cột '{col}' lặp lại")
                ok = False
            seen.add(col)
            if col not in CSV_COLUMNS:
                self.issues.add(
                    1, col, f"cột '{col}' không được hỗ trợ (các cột: {', '.join(CSV_COLUMNS)})"
                )
                ok = False
        for col in CSV_REQUIRED:
            if col not in seen:
                self.issues.add(1, col, f"thiếu cột '{col}'")
                ok = False
        return ok

    def _row(self, line: int, c: dict[str, str]) -> None:
        before = len(self.issues.items)
        province = self._province(line, c)
        district_key = self._district(line, c, province)
        if not c["commune_code"]:
            for col in ("commune", "village_code", "village", "node_id", "station_kind"):
                if c[col]:
                    self.issues.add(line, "commune_code", f"có '{col}' nhưng thiếu mã xã")
                    return
            return
        commune = self._commune(line, c, province, district_key)
        if not c["village_code"]:
            if c["village"] or c["node_id"]:
                self.issues.add(line, "village_code", "có thôn/cụm nhưng thiếu mã thôn")
            return
        village = self._village(line, c, commune)
        if not c["node_id"]:
            for col in ("label", "speakers", "simulated", "lat", "lon"):
                if c[col]:
                    self.issues.add(line, "node_id", f"có '{col}' nhưng thiếu mã cụm")
                    return
            return
        node_id = self.issues.check(line, "node_id", lambda: v.check_code("node", c["node_id"]))
        attrs: dict[str, Any] = {}
        for key in ("label", "speakers", "simulated", "lat", "lon"):
            if c[key]:
                value = self.issues.check(line, key, lambda k=key: NODE_FIELDS[k](c[k]))
                if value is not None:
                    attrs[key] = value
        if node_id is None:
            return
        if node_id in self.nodes:
            self.issues.add(
                line, "node_id", f"cụm '{node_id}' lặp lại (đã có ở dòng {self.nodes[node_id]})"
            )
            return
        self.nodes[node_id] = line
        if village is not None and len(self.issues.items) == before:
            village.nodes.append(NodeRec(node_id, line, attrs))

    def _province(self, line: int, c: dict[str, str]) -> ProvinceRec | None:
        name = self.issues.check(line, "province", lambda: v.check_name("province", c["province"]))
        code = c.get("province_code") or None
        if code is not None:
            code = self.issues.check(line, "province_code", lambda: v.check_code("province", code))
        if name is None:
            return None
        key = code or f"name:{fold(name)}"
        province = self.provinces.get(key)
        if province is None:
            province = ProvinceRec(code, name, line)
            self.provinces[key] = province
            self.province_key[id(province)] = key
            self.doc.provinces.append(province)
        elif province.name != name:
            self.issues.add(line, "province", f"tỉnh '{key}' có tên khác ở dòng {province.line}")
        return province

    def _district(self, line: int, c: dict[str, str], province: ProvinceRec | None) -> str | None:
        code = c.get("district_code") or None
        if not c["district"]:
            if code:
                self.issues.add(line, "district", "có district_code nhưng thiếu tên huyện")
            return None
        name = self.issues.check(line, "district", lambda: v.check_name("district", c["district"]))
        if code is not None:
            code = self.issues.check(line, "district_code", lambda: v.check_code("district", code))
        if name is None or province is None:
            return None
        key = code or f"name:{fold(name)}"
        pkey = self.province_key[id(province)]
        district = self.districts.get((pkey, key))
        if district is None:
            district = DistrictRec(code, name, line)
            self.districts[(pkey, key)] = district
            province.districts.append(district)
        elif district.name != name:
            self.issues.add(line, "district", f"huyện '{key}' có tên khác ở dòng {district.line}")
        # Communes point at the district by this key until the importer resolves codes.
        return key

    def _commune(
        self, line: int, c: dict[str, str], province: ProvinceRec | None, district_key: str | None
    ) -> CommuneRec | None:
        code = self.issues.check(
            line, "commune_code", lambda: v.check_code("commune", c["commune_code"])
        )
        name = self.issues.check(line, "commune", lambda: v.check_name("commune", c["commune"]))
        attrs: dict[str, Any] = {}
        if c["station_kind"]:
            kind = self.issues.check(
                line, "station_kind", lambda: v.check_station_kind(c["station_kind"])
            )
            if kind is not None:
                attrs["station_kind"] = kind
        if code is None or name is None or province is None:
            return None
        known = self.communes.get(code)
        if known is None:
            commune = CommuneRec(code, name, line, district_key, attrs)
            self.communes[code] = (commune, self.province_key[id(province)], district_key)
            province.communes.append(commune)
            return commune
        commune, pkey, dkey = known
        if commune.name != name:
            self.issues.add(line, "commune", f"xã '{code}' mang tên khác ở dòng {commune.line}")
        if pkey != self.province_key[id(province)] or dkey != district_key:
            self.issues.add(
                line, "commune_code", f"xã '{code}' thuộc tỉnh/huyện khác ở dòng {commune.line}"
            )
        kind = attrs.get("station_kind")
        if kind and commune.attrs.get("station_kind", kind) != kind:
            self.issues.add(
                line, "station_kind", f"xã '{code}' có loại đài khác ở dòng {commune.line}"
            )
        elif kind:
            commune.attrs["station_kind"] = kind
        return commune

    def _village(
        self, line: int, c: dict[str, str], commune: CommuneRec | None
    ) -> VillageRec | None:
        code = self.issues.check(
            line, "village_code", lambda: v.check_code("village", c["village_code"])
        )
        name = self.issues.check(line, "village", lambda: v.check_name("village", c["village"]))
        if code is None or name is None or commune is None:
            return None
        known = self.villages.get(code)
        if known is None:
            village = VillageRec(code, name, line)
            self.villages[code] = (village, commune.code)
            commune.villages.append(village)
            return village
        village, commune_code = known
        if village.name != name:
            self.issues.add(line, "village", f"thôn '{code}' mang tên khác ở dòng {village.line}")
        if commune_code != commune.code:
            self.issues.add(
                line, "village_code", f"thôn '{code}' thuộc xã khác ở dòng {village.line}"
            )
        return village


def parse_csv(text: str) -> tuple[RegistryDoc, list[ImportIssue]]:
    reader = _CsvReader()
    doc = reader.read(text)
    return doc, reader.issues.items


# --------------------------------------------------------------------------- rendering


def _node_yaml(node: NodeRec) -> dict[str, Any]:
    out: dict[str, Any] = {"id": node.id}
    for key in ("label", "speakers", "simulated", "lat", "lon"):
        if node.attrs.get(key) is not None:
            out[key] = node.attrs[key]
    if node.attrs.get("vendor"):
        out["vendor"] = node.attrs["vendor"]
    if node.attrs.get("heartbeat_s") not in (None, 30):
        out["heartbeat_s"] = node.attrs["heartbeat_s"]
    return out


def _commune_yaml(commune: CommuneRec) -> dict[str, Any]:
    out: dict[str, Any] = {
        "code": commune.code,
        "name": commune.name,
        "station_kind": commune.attrs.get("station_kind", "ip"),
    }
    for key in ("lat", "lon"):
        if commune.attrs.get(key) is not None:
            out[key] = commune.attrs[key]
    villages = []
    for village in commune.villages:
        entry: dict[str, Any] = {"code": village.code, "name": village.name}
        if village.nodes:
            entry["nodes"] = [_node_yaml(n) for n in village.nodes]
        villages.append(entry)
    if villages:
        out["villages"] = villages
    return out


def render_yaml(doc: RegistryDoc, header: str = "") -> str:
    provinces = []
    for province in doc.provinces:
        entry: dict[str, Any] = {"code": province.code, "name": province.name}
        districts = []
        for district in province.districts:
            communes = [_commune_yaml(c) for c in province.communes if c.district == district.code]
            d: dict[str, Any] = {"code": district.code, "name": district.name}
            if communes:
                d["communes"] = communes
            districts.append(d)
        if districts:
            entry["districts"] = districts
        loose = [_commune_yaml(c) for c in province.communes if c.district is None]
        if loose:
            entry["communes"] = loose
        provinces.append(entry)
    body = yaml.safe_dump(
        {"format": FORMAT_TAG, "provinces": provinces},
        allow_unicode=True,
        sort_keys=False,
        width=100,
        default_flow_style=False,
    )
    return header + body


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return str(spreadsheet_safe(value))  # names stored before the input guard was widened
    return str(value)


def render_csv(doc: RegistryDoc) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(CSV_COLUMNS)
    for province in doc.provinces:
        districts = {d.code: d for d in province.districts}
        base = {"province": province.name, "province_code": province.code}
        if not province.communes:
            writer.writerow([_fmt(base.get(col)) for col in CSV_COLUMNS])
        used = {commune.district for commune in province.communes}
        for district in province.districts:  # a district without communes: a row of its own
            if district.code not in used:
                writer.writerow(
                    [
                        _fmt(
                            {**base, "district": district.name, "district_code": district.code}.get(
                                col
                            )
                        )
                        for col in CSV_COLUMNS
                    ]
                )
        for commune in province.communes:
            district = districts.get(commune.district) if commune.district else None
            crow = {
                **base,
                "commune_code": commune.code,
                "commune": commune.name,
                "station_kind": commune.attrs.get("station_kind", "ip"),
                "district": district.name if district else None,
                "district_code": district.code if district else None,
            }
            rows: list[dict[str, Any]] = []
            for village in commune.villages:
                vrow = {**crow, "village_code": village.code, "village": village.name}
                rows.extend(
                    {
                        **vrow,
                        "node_id": n.id,
                        **{
                            k: n.attrs.get(k)
                            for k in ("label", "speakers", "simulated", "lat", "lon")
                        },
                    }
                    for n in village.nodes
                )
                if not village.nodes:
                    rows.append(vrow)
            if not commune.villages:
                rows.append(crow)
            for row in rows:
                writer.writerow([_fmt(row.get(col)) for col in CSV_COLUMNS])
    return out.getvalue()
