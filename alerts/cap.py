"""Reading a CAP 1.2 document safely, checking it against the official schema, and turning it
into plain values.

A CAP document comes from outside (a provincial system, a feed on the internet, an officer's
upload), so the XML parser is locked down the way defusedxml locks the standard library:

- the size is capped *before* parsing (``max_bytes``);
- no entity is ever expanded (``resolve_entities=False``), nothing is fetched
  (``no_network=True``), no DTD is loaded, libxml2's own limits stay on (``huge_tree=False``);
- any ``<!DOCTYPE`` is refused outright: CAP has none, and it is the door for XXE and
  "billion laughs";
- the root must be ``alert`` in the CAP 1.2 namespace, and the whole document must validate
  against ``schema/CAP-v1.2.xsd`` (OASIS, see ``schema/README.md``).

Then the values the schema leaves as free strings (``polygon``, ``circle``, ``references``,
the time stamps) are parsed here, and a document whose values cannot be read is refused with
the element named, so nothing half-understood is ever aired.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import datetime
from functools import lru_cache
from pathlib import Path

from lxml import etree

from alerts.errors import CapRefused

CAP_NS = "urn:oasis:names:tc:emergency:cap:1.2"
OLD_NAMESPACES = {
    "urn:oasis:names:tc:emergency:cap:1.1": "1.1",
    "urn:oasis:names:tc:emergency:cap:1.0": "1.0",
    "http://www.incident.com/cap/1.0": "1.0",
}
DSIG_NS = "http://www.w3.org/2000/09/xmldsig#"
SCHEMA_PATH = Path(__file__).resolve().parent / "schema" / "CAP-v1.2.xsd"
DEFAULT_MAX_BYTES = 512 * 1024
SEVERITY_RANK = {"Extreme": 4, "Severe": 3, "Moderate": 2, "Minor": 1, "Unknown": 0}
_Q = f"{{{CAP_NS}}}"
_NUMBER = r"[-+]?\d+(?:\.\d+)?"
_PAIR = re.compile(rf"^({_NUMBER}),({_NUMBER})$")
_CIRCLE = re.compile(rf"^({_NUMBER}),({_NUMBER})\s+({_NUMBER})$")


def refuse(code: str, vi: str, en: str, status: int = 422) -> CapRefused:
    return CapRefused(code, vi, en, status)


@dataclass(frozen=True)
class Polygon:
    points: tuple[tuple[float, float], ...]  # (lat, lon), closed: first == last


@dataclass(frozen=True)
class Circle:
    lat: float
    lon: float
    radius_km: float


@dataclass
class Area:
    desc: str
    polygons: list[Polygon] = field(default_factory=list)
    circles: list[Circle] = field(default_factory=list)
    geocodes: list[tuple[str, str]] = field(default_factory=list)


@dataclass
class Info:
    language: str
    categories: list[str]
    event: str
    urgency: str
    severity: str
    certainty: str
    response_types: list[str] = field(default_factory=list)
    event_codes: list[tuple[str, str]] = field(default_factory=list)
    effective_ms: int | None = None
    onset_ms: int | None = None
    expires_ms: int | None = None
    sender_name: str | None = None
    headline: str | None = None
    description: str | None = None
    instruction: str | None = None
    web: str | None = None
    contact: str | None = None
    parameters: list[tuple[str, str]] = field(default_factory=list)
    areas: list[Area] = field(default_factory=list)


@dataclass(frozen=True)
class Reference:
    sender: str
    identifier: str
    sent_ms: int


@dataclass
class CapAlert:
    identifier: str
    sender: str
    sent_ms: int
    sent: str
    status: str
    msg_type: str
    scope: str
    source: str | None = None
    restriction: str | None = None
    addresses: str | None = None
    codes: list[str] = field(default_factory=list)
    note: str | None = None
    references: list[Reference] = field(default_factory=list)
    incidents: str | None = None
    infos: list[Info] = field(default_factory=list)
    signed: bool = False

    def expires_ms(self) -> int | None:
        """The latest expiry of its info blocks (None = no info says when it ends)."""
        values = [i.expires_ms for i in self.infos if i.expires_ms is not None]
        if not values or len(values) < len(self.infos):
            return None
        return max(values)

    def max_severity(self) -> str:
        return max(
            (i.severity for i in self.infos),
            key=lambda s: SEVERITY_RANK.get(s, 0),
            default="Unknown",
        )

    def info_for(self, languages: tuple[str, ...] = ("vi", "vi-VN")) -> Info | None:
        """The info block to speak: Vietnamese first, else the first one."""
        for lang in languages:
            for info in self.infos:
                if info.language.lower() == lang.lower():
                    return info
        for info in self.infos:
            if info.language.lower().startswith("vi"):
                return info
        return self.infos[0] if self.infos else None

    def areas(self) -> list[Area]:
        return [a for i in self.infos for a in i.areas]


@lru_cache(maxsize=1)
def _schema() -> etree.XMLSchema:
    parser = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False)
    return etree.XMLSchema(etree.parse(str(SCHEMA_PATH), parser))


def _parser() -> etree.XMLParser:
    return etree.XMLParser(
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
        remove_blank_text=False,
        collect_ids=False,
    )


def _doctype_refusal() -> CapRefused:
    return refuse(
        "doctype",
        "Tài liệu có khai báo DOCTYPE/ENTITY; CAP không dùng DOCTYPE và "
        "nó bị từ chối để chống tấn công XXE và «billion laughs».",
        "DOCTYPE declarations are refused (XXE / entity expansion protection).",
    )


def parse_xml(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> etree._Element:
    """The root element of a well-formed document with no DTD, or a refusal."""
    if not isinstance(raw, bytes | bytearray):
        raise refuse(
            "not_bytes",
            "Tài liệu CAP phải là dữ liệu XML.",
            "A CAP document must be XML bytes.",
            400,
        )
    if len(raw) > max_bytes:
        raise refuse(
            "too_large",
            f"Tài liệu CAP quá lớn ({len(raw):,} byte; tối đa {max_bytes:,} byte).".replace(
                ",", "."
            ),
            f"CAP document too large ({len(raw)} bytes; at most {max_bytes}).",
            413,
        )
    if not raw.strip():
        raise refuse("empty", "Tài liệu CAP trống.", "Empty CAP document.", 400)
    if b"<!DOCTYPE" in raw[:4096] or b"<!ENTITY" in raw:
        raise _doctype_refusal()
    try:
        root = etree.fromstring(bytes(raw), _parser())
    except etree.XMLSyntaxError as exc:
        text = str(exc)
        if "entity" in text.lower() or "amplification" in text.lower():
            raise refuse(
                "entities",
                "Tài liệu có khai báo thực thể XML (ENTITY), không được "
                "chấp nhận vì lý do an toàn.",
                f"XML entities are not accepted: {text}",
            ) from None
        raise refuse(
            "malformed", f"Tài liệu không phải XML hợp lệ: {text}", f"Malformed XML: {text}"
        ) from None
    except ValueError as exc:  # e.g. an encoding declaration lxml cannot honour
        raise refuse(
            "malformed", f"Tài liệu không phải XML hợp lệ: {exc}", f"Malformed XML: {exc}"
        ) from None
    tree = root.getroottree()
    if tree.docinfo.doctype or tree.docinfo.internalDTD is not None:
        raise _doctype_refusal()
    for el in root.iter(etree.Entity):
        raise refuse(
            "entities",
            f"Tài liệu có tham chiếu thực thể XML không được phép ({el!s}).",
            "Entity references are not accepted.",
        )
    return root


def check_root(root: etree._Element) -> None:
    qname = etree.QName(root)
    if qname.namespace in OLD_NAMESPACES:
        v = OLD_NAMESPACES[qname.namespace]
        raise refuse(
            "cap_version",
            f"Đây là CAP {v}; Loa chỉ nhận CAP 1.2 (không gian tên {CAP_NS}).",
            f"CAP {v} is not accepted; only CAP 1.2 ({CAP_NS}).",
        )
    if qname.namespace != CAP_NS or qname.localname != "alert":
        ns = qname.namespace or "(không có)"
        raise refuse(
            "namespace",
            f"Phần tử gốc phải là «alert» trong không gian tên {CAP_NS}; "
            f"nhận được «{qname.localname}», không gian tên {ns}.",
            f"Root must be 'alert' in namespace {CAP_NS}; got '{qname.localname}' "
            f"in {qname.namespace or 'no namespace'}.",
        )


def validate(root: etree._Element) -> None:
    schema = _schema()
    if not schema.validate(root):
        errors = [e for e in schema.error_log]
        first = errors[0] if errors else None
        where = f"dòng {first.line}: " if first is not None else ""
        message = first.message if first is not None else "không rõ"
        raise refuse(
            "schema",
            f"Tài liệu không đúng lược đồ CAP 1.2 ({where}{message}).",
            f"Not valid against the CAP 1.2 schema (line "
            f"{first.line if first is not None else '?'}: {message}).",
        )


# --------------------------------------------------------------------------- values


def parse_time(text: str, element: str) -> int:
    try:
        dt = datetime.fromisoformat(text.strip())
    except ValueError:
        dt = None
    if dt is None or dt.tzinfo is None:
        raise refuse(
            "bad_time",
            f"Thời điểm «{element}» không đọc được: {text!r} (cần dạng 2026-12-05T07:30:00+07:00).",
            f"Unreadable time in '{element}': {text!r}.",
        )
    return int(dt.timestamp() * 1000)


def _lat_lon(lat_s: str, lon_s: str, element: str, raw: str) -> tuple[float, float]:
    lat, lon = float(lat_s), float(lon_s)
    if not (-90 <= lat <= 90 and -180 <= lon <= 180):
        raise refuse(
            "bad_area",
            f"Tọa độ ngoài phạm vi trong «{element}»: {raw[:80]!r}.",
            f"Coordinates out of range in '{element}': {raw[:80]!r}.",
        )
    return lat, lon


def parse_polygon(text: str) -> Polygon:
    """CAP: "lat,lon lat,lon ..." (WGS 84), at least four pairs, the first equal to the last."""
    pairs = text.split()
    points = []
    for p in pairs:
        m = _PAIR.match(p)
        if m is None:
            raise refuse(
                "bad_area",
                f"Đa giác («polygon») không đọc được ở «{p[:40]}».",
                f"Unreadable polygon point {p[:40]!r}.",
            )
        points.append(_lat_lon(m.group(1), m.group(2), "polygon", text))
    if len(points) < 4 or points[0] != points[-1]:
        raise refuse(
            "bad_area",
            "Đa giác («polygon») cần ít nhất 4 điểm và điểm cuối trùng điểm đầu.",
            "A polygon needs at least 4 points, the last equal to the first.",
        )
    return Polygon(tuple(points))


def parse_circle(text: str) -> Circle:
    """CAP: "lat,lon radius" with the radius in kilometres."""
    m = _CIRCLE.match(text.strip())
    if m is None:
        raise refuse(
            "bad_area",
            f"Vòng tròn («circle») không đọc được: {text[:80]!r} "
            "(cần «vĩ độ,kinh độ bán kính_km»).",
            f"Unreadable circle {text[:80]!r} (expected 'lat,lon radius_km').",
        )
    lat, lon = _lat_lon(m.group(1), m.group(2), "circle", text)
    radius = float(m.group(3))
    if radius < 0:
        raise refuse("bad_area", "Bán kính vòng tròn không được âm.", "Negative circle radius.")
    return Circle(lat, lon, radius)


def parse_references(text: str) -> list[Reference]:
    """CAP: space-separated "sender,identifier,sent" triples."""
    out = []
    for triple in text.split():
        parts = triple.split(",")
        if len(parts) != 3 or not parts[0] or not parts[1]:
            raise refuse(
                "bad_references",
                f"«references» không đọc được ở «{triple[:80]}» (cần «sender,identifier,sent»).",
                f"Unreadable reference {triple[:80]!r} (sender,identifier,sent).",
            )
        out.append(Reference(parts[0], parts[1], parse_time(parts[2], "references")))
    return out


def _text(el: etree._Element, name: str) -> str | None:
    child = el.find(_Q + name)
    if child is None or child.text is None:
        return None
    return child.text.strip()


def _texts(el: etree._Element, name: str) -> list[str]:
    return [c.text.strip() for c in el.findall(_Q + name) if c.text and c.text.strip()]


def _pairs(el: etree._Element, name: str) -> list[tuple[str, str]]:
    return [
        ((_text(c, "valueName") or ""), (_text(c, "value") or "")) for c in el.findall(_Q + name)
    ]


def _optional_time(el: etree._Element, name: str) -> int | None:
    value = _text(el, name)
    return parse_time(value, name) if value else None


def _info(el: etree._Element) -> Info:
    areas = []
    for a in el.findall(_Q + "area"):
        areas.append(
            Area(
                desc=_text(a, "areaDesc") or "",
                polygons=[parse_polygon(t) for t in _texts(a, "polygon")],
                circles=[parse_circle(t) for t in _texts(a, "circle")],
                geocodes=_pairs(a, "geocode"),
            )
        )
    return Info(
        language=_text(el, "language") or "en-US",
        categories=_texts(el, "category"),
        event=_text(el, "event") or "",
        urgency=_text(el, "urgency") or "Unknown",
        severity=_text(el, "severity") or "Unknown",
        certainty=_text(el, "certainty") or "",
        response_types=_texts(el, "responseType"),
        event_codes=_pairs(el, "eventCode"),
        effective_ms=_optional_time(el, "effective"),
        onset_ms=_optional_time(el, "onset"),
        expires_ms=_optional_time(el, "expires"),
        sender_name=_text(el, "senderName"),
        headline=_text(el, "headline"),
        description=_text(el, "description"),
        instruction=_text(el, "instruction"),
        web=_text(el, "web"),
        contact=_text(el, "contact"),
        parameters=_pairs(el, "parameter"),
        areas=areas,
    )


def read_alert(root: etree._Element) -> CapAlert:
    """Values of a schema-valid ``alert`` element."""
    sent = _text(root, "sent") or ""
    refs = _text(root, "references")
    alert = CapAlert(
        identifier=_text(root, "identifier") or "",
        sender=_text(root, "sender") or "",
        sent=sent,
        sent_ms=parse_time(sent, "sent"),
        status=_text(root, "status") or "",
        msg_type=_text(root, "msgType") or "",
        scope=_text(root, "scope") or "",
        source=_text(root, "source"),
        restriction=_text(root, "restriction"),
        addresses=_text(root, "addresses"),
        codes=_texts(root, "code"),
        note=_text(root, "note"),
        references=parse_references(refs) if refs else [],
        incidents=_text(root, "incidents"),
        infos=[_info(i) for i in root.findall(_Q + "info")],
        signed=root.find(f"{{{DSIG_NS}}}Signature") is not None,
    )
    if not alert.identifier or not alert.sender:
        raise refuse(
            "schema",
            "«identifier» và «sender» không được để trống.",
            "'identifier' and 'sender' must not be empty.",
        )
    for bad in (" ", ",", "<", "&"):
        if bad in alert.identifier or bad in alert.sender:
            raise refuse(
                "schema",
                "«identifier» và «sender» không được chứa dấu cách, dấu phẩy, "
                "«<» hoặc «&» (CAP 1.2 mục 3.2.1).",
                "'identifier' and 'sender' must not contain spaces, commas, '<' or '&'.",
            )
    if alert.msg_type in ("Update", "Cancel") and not alert.references:
        raise refuse(
            "bad_references",
            f"Bản tin loại {alert.msg_type} phải có «references» chỉ tới cảnh báo trước đó.",
            f"A {alert.msg_type} message must reference the earlier alert.",
        )
    return alert


def load(raw: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> tuple[etree._Element, CapAlert]:
    """Parse, check and read one CAP 1.2 document (signature checked by the caller)."""
    root = parse_xml(raw, max_bytes=max_bytes)
    check_root(root)
    validate(root)
    return root, read_alert(root)


__all__ = [
    "CAP_NS",
    "Area",
    "CapAlert",
    "Circle",
    "Info",
    "Polygon",
    "Reference",
    "load",
    "parse_circle",
    "parse_polygon",
    "parse_references",
    "parse_xml",
]
