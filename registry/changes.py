"""Registry operations: add, rename, move, merge, split, retire, approve.

Every function works inside the caller's session and checks all its preconditions before its
first write, so a refused request changes nothing; the caller's ``Database.session()`` block is
the transaction (it rolls back on any exception), which makes each call all-or-nothing.

History is never overwritten. A village's commune, a node's village and a unit's name are
validity intervals ``[valid_from_ms, valid_to_ms)``: a change closes the open interval at the
time of the change and opens a new one, so "which villages did commune A have on 1 June?"
stays answerable after A is merged away. ``Village.commune_id`` and ``Node.village_id`` are
kept equal to the open interval, for cheap current-state queries.

Units are referred to by ``Ref``: an ``int`` is a database id (API), a ``str`` a code (CLI,
import files)."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from loa.text import fold
from loa.timeutil import format_date, format_datetime, now_ms
from registry import validate as v
from registry.errors import ConflictError, InvalidInputError, NotFoundError
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

Ref = int | str
# A change dated this far ahead is refused: registers record decisions already in force.
FUTURE_TOLERANCE_MS = 5 * 60 * 1000


class _Unset:
    """Marks "leave this field as it is" in update functions (None is a real value there)."""

    def __repr__(self) -> str:
        return "UNSET"


UNSET: Any = _Unset()


# --------------------------------------------------------------------------- time


def resolve_time(at_ms: int | None) -> int:
    """The time of a change: now by default; never in the future."""
    current = now_ms()
    if at_ms is None:
        return current
    if at_ms > current + FUTURE_TOLERANCE_MS:
        raise InvalidInputError(
            f"Thời điểm {format_datetime(at_ms)} ở tương lai; chỉ ghi "
            "những thay đổi đã có hiệu lực."
        )
    return at_ms


def _not_before(at_ms: int, since_ms: int, what: str) -> None:
    if at_ms < since_ms:
        raise InvalidInputError(
            f"Thời điểm {format_datetime(at_ms)} sớm hơn {what} ({format_datetime(since_ms)})."
        )


# --------------------------------------------------------------------------- lookups


def get_province(s: Session, ref: Ref) -> Province:
    row = (
        s.get(Province, ref)
        if isinstance(ref, int)
        else s.scalar(select(Province).where(Province.code == ref))
    )
    if row is None:
        raise NotFoundError(f"Không tìm thấy tỉnh '{ref}'.")
    return row


def get_district(s: Session, ref: Ref) -> District:
    row = (
        s.get(District, ref)
        if isinstance(ref, int)
        else s.scalar(select(District).where(District.code == ref))
    )
    if row is None:
        raise NotFoundError(f"Không tìm thấy huyện '{ref}'.")
    return row


def get_commune(s: Session, ref: Ref, *, current: bool = True) -> Commune:
    """A commune by id or code; with ``current`` a retired one is refused, naming its heir."""
    row = (
        s.get(Commune, ref)
        if isinstance(ref, int)
        else s.scalar(select(Commune).where(Commune.code == ref))
    )
    if row is None:
        raise NotFoundError(f"Không tìm thấy xã '{ref}'.")
    if current and row.retired_ms is not None:
        raise ConflictError(
            _retired_message(
                "Xã",
                row.name,
                row.code,
                row.retired_ms,
                s.get(Commune, row.merged_into_id) if row.merged_into_id else None,
            )
        )
    return row


def get_village(s: Session, ref: Ref, *, current: bool = True) -> Village:
    row = (
        s.get(Village, ref)
        if isinstance(ref, int)
        else s.scalar(select(Village).where(Village.code == ref))
    )
    if row is None:
        raise NotFoundError(f"Không tìm thấy thôn '{ref}'.")
    if current and row.retired_ms is not None:
        raise ConflictError(
            _retired_message(
                "Thôn",
                row.name,
                row.code,
                row.retired_ms,
                s.get(Village, row.merged_into_id) if row.merged_into_id else None,
            )
        )
    return row


def get_node(s: Session, node_id: str, *, current: bool = True) -> Node:
    row = s.get(Node, node_id)
    if row is None:
        raise NotFoundError(f"Không tìm thấy cụm loa '{node_id}'.")
    if current and row.retired_ms is not None:
        raise ConflictError(
            f"Cụm loa '{node_id}' đã ngừng sử dụng từ {format_date(row.retired_ms)}."
        )
    return row


def _retired_message(
    noun: str, name: str, code: str, retired_ms: int, heir: Commune | Village | None
) -> str:
    text = f"{noun} {name} ({code}) đã ngừng từ {format_date(retired_ms)}"
    if heir is not None:
        text += f", sáp nhập vào {heir.name} ({heir.code})"
    return text + "."


# --------------------------------------------------------------------------- intervals


def _open_name(s: Session, entity: str, entity_id: int) -> NameHistory | None:
    return s.scalar(
        select(NameHistory).where(
            NameHistory.entity == entity,
            NameHistory.entity_id == entity_id,
            NameHistory.valid_to_ms.is_(None),
        )
    )


def _open_membership(s: Session, village_id: int) -> VillageMembership | None:
    return s.scalar(
        select(VillageMembership).where(
            VillageMembership.village_id == village_id, VillageMembership.valid_to_ms.is_(None)
        )
    )


def _open_placement(s: Session, node_id: str) -> NodePlacement | None:
    return s.scalar(
        select(NodePlacement).where(
            NodePlacement.node_id == node_id, NodePlacement.valid_to_ms.is_(None)
        )
    )


def _current_villages(s: Session, commune_id: int) -> list[Village]:
    return list(
        s.scalars(
            select(Village)
            .where(Village.commune_id == commune_id, Village.retired_ms.is_(None))
            .order_by(Village.code)
        )
    )


def _current_nodes(s: Session, village_id: int) -> list[Node]:
    return list(
        s.scalars(
            select(Node)
            .where(Node.village_id == village_id, Node.retired_ms.is_(None))
            .order_by(Node.id)
        )
    )


def _check_membership_movable(s: Session, village: Village, at_ms: int) -> VillageMembership:
    membership = _open_membership(s, village.id)
    if membership is None:  # only possible if rows were edited by hand
        raise ConflictError(
            f"Thôn {village.name} ({village.code}) không có thời hạn thuộc xã "
            "đang mở; sổ đăng ký cần kiểm tra lại."
        )
    _not_before(
        at_ms, membership.valid_from_ms, f"lần thôn {village.name} được gắn vào xã hiện tại"
    )
    return membership


def _check_placement_movable(s: Session, node: Node, at_ms: int) -> NodePlacement | None:
    placement = _open_placement(s, node.id)
    if placement is not None:
        _not_before(at_ms, placement.valid_from_ms, f"lần cụm {node.id} được lắp vào thôn hiện tại")
    return placement


def _check_name_changeable(
    s: Session, entity: str, entity_id: int, at_ms: int, noun: str
) -> NameHistory | None:
    current = _open_name(s, entity, entity_id)
    if current is not None:
        _not_before(at_ms, current.valid_from_ms, f"lần đặt tên {noun} hiện tại")
    return current


def _open_new_name(s: Session, entity: str, entity_id: int, name: str, at_ms: int) -> None:
    s.add(
        NameHistory(
            entity=entity, entity_id=entity_id, name=name, valid_from_ms=at_ms, valid_to_ms=None
        )
    )


def _close(interval: Any, at_ms: int) -> None:
    if interval is not None:
        interval.valid_to_ms = at_ms


# --------------------------------------------------------------------------- province, district


def add_province(s: Session, code: str, name: str) -> Province:
    code, name = v.check_code("province", code), v.check_name("province", name)
    if s.scalar(select(Province.id).where(Province.code == code)) is not None:
        raise ConflictError(f"Mã tỉnh '{code}' đã có.")
    row = Province(code=code, name=name)
    s.add(row)
    s.flush()
    return row


def update_province(s: Session, ref: Ref, *, name: str) -> Province:
    row = get_province(s, ref)
    row.name = v.check_name("province", name)
    s.flush()
    return row


def add_district(s: Session, province: Ref, code: str, name: str) -> District:
    code, name = v.check_code("district", code), v.check_name("district", name)
    parent = get_province(s, province)
    if s.scalar(select(District.id).where(District.code == code)) is not None:
        raise ConflictError(f"Mã huyện '{code}' đã có.")
    row = District(code=code, name=name, province_id=parent.id)
    s.add(row)
    s.flush()
    return row


def update_district(s: Session, ref: Ref, *, name: str = UNSET, province: Ref = UNSET) -> District:
    row = get_district(s, ref)
    new_name = v.check_name("district", name) if name is not UNSET else row.name
    province_id = get_province(s, province).id if province is not UNSET else row.province_id
    row.name, row.province_id = new_name, province_id
    s.flush()
    return row


# --------------------------------------------------------------------------- communes


def _district_for(s: Session, district: Ref | None, province_id: int) -> int | None:
    if district is None:
        return None
    row = get_district(s, district)
    if row.province_id != province_id:
        raise ConflictError(f"Huyện {row.name} ({row.code}) không thuộc tỉnh của xã.")
    return row.id


def add_commune(
    s: Session,
    code: str,
    name: str,
    province: Ref,
    *,
    district: Ref | None = None,
    station_kind: str = "ip",
    lat: float | None = None,
    lon: float | None = None,
    at_ms: int | None = None,
) -> Commune:
    code, name = v.check_code("commune", code), v.check_name("commune", name)
    station_kind = v.check_station_kind(station_kind)
    lat, lon = v.check_lat(lat), v.check_lon(lon)
    at = resolve_time(at_ms)
    parent = get_province(s, province)
    district_id = _district_for(s, district, parent.id)
    if s.scalar(select(Commune.id).where(Commune.code == code)) is not None:
        raise ConflictError(f"Mã xã '{code}' đã có.")
    row = insert_commune(
        s, parent.id, district_id, code, name, at, station_kind=station_kind, lat=lat, lon=lon
    )
    s.flush()
    return row


def insert_commune(
    s: Session,
    province_id: int,
    district_id: int | None,
    code: str,
    name: str,
    at_ms: int,
    *,
    station_kind: str = "ip",
    lat: float | None = None,
    lon: float | None = None,
) -> Commune:
    """The rows of a new commune (commune, open name), unchecked; for the importer."""
    row = Commune(
        code=code,
        name=name,
        name_folded=fold(name),
        province_id=province_id,
        district_id=district_id,
        station_kind=station_kind,
        lat=lat,
        lon=lon,
        created_ms=at_ms,
    )
    s.add(row)
    s.flush()
    _open_new_name(s, "commune", row.id, name, at_ms)
    return row


def update_commune(
    s: Session,
    ref: Ref,
    *,
    province: Ref = UNSET,
    district: Ref | None = UNSET,
    station_kind: str = UNSET,
    lat: float | None = UNSET,
    lon: float | None = UNSET,
) -> Commune:
    """Attributes without history. Names change only through ``rename_commune``."""
    row = get_commune(s, ref)
    province_id = get_province(s, province).id if province is not UNSET else row.province_id
    if district is not UNSET:
        district_id = _district_for(s, district, province_id)
    elif row.district_id is not None and province_id != row.province_id:
        district_id = None  # the old district belongs to the old province
    else:
        district_id = row.district_id
    kind = v.check_station_kind(station_kind) if station_kind is not UNSET else row.station_kind
    new_lat = v.check_lat(lat) if lat is not UNSET else row.lat
    new_lon = v.check_lon(lon) if lon is not UNSET else row.lon
    row.province_id, row.district_id, row.station_kind = province_id, district_id, kind
    row.lat, row.lon = new_lat, new_lon
    s.flush()
    return row


def rename_commune(s: Session, ref: Ref, new_name: str, at_ms: int | None = None) -> Commune:
    row = get_commune(s, ref)
    name = v.check_name("commune", new_name)
    at = resolve_time(at_ms)
    if name == row.name:
        raise InvalidInputError(f"Xã '{row.code}' đã mang tên {name}.")
    current = _check_name_changeable(s, "commune", row.id, at, "xã")
    _close(current, at)
    _open_new_name(s, "commune", row.id, name, at)
    row.name, row.name_folded = name, fold(name)
    s.flush()
    return row


@dataclass
class MergeResult:
    source_code: str
    target_code: str
    at_ms: int
    moved: list[str] = field(default_factory=list)


def merge_communes(s: Session, source: Ref, target: Ref, at_ms: int | None = None) -> MergeResult:
    """Merge commune ``source`` into ``target`` at ``at_ms``: its villages change commune at
    that instant (their old membership is closed, not edited), and ``source`` is retired with
    a pointer to ``target`` so old reports can say where it went."""
    src, dst = get_commune(s, source), get_commune(s, target)
    at = resolve_time(at_ms)
    if src.id == dst.id:
        raise InvalidInputError("Không thể sáp nhập một xã vào chính nó.")
    _not_before(at, src.created_ms, f"ngày lập xã {src.name}")
    _not_before(at, dst.created_ms, f"ngày lập xã {dst.name}")
    villages = _current_villages(s, src.id)
    memberships = [_check_membership_movable(s, village, at) for village in villages]
    src_name = _check_name_changeable(s, "commune", src.id, at, "xã")

    for village, membership in zip(villages, memberships, strict=True):
        _close(membership, at)
        s.add(
            VillageMembership(
                village_id=village.id, commune_id=dst.id, valid_from_ms=at, valid_to_ms=None
            )
        )
        village.commune_id = dst.id
    _close(src_name, at)
    src.retired_ms, src.merged_into_id = at, dst.id
    s.flush()
    return MergeResult(src.code, dst.code, at, [village.code for village in villages])


def split_commune(
    s: Session,
    source: Ref,
    new_code: str,
    new_name: str,
    villages: Iterable[Ref],
    at_ms: int | None = None,
    *,
    district: Ref | None = UNSET,
    station_kind: str | None = None,
) -> Commune:
    """Create a commune from some villages of ``source``; ``source`` keeps the rest."""
    src = get_commune(s, source)
    chosen = [get_village(s, ref) for ref in villages]
    if not chosen:
        raise InvalidInputError("Hãy chọn ít nhất một thôn để tách.")
    for village in chosen:
        if village.commune_id != src.id:
            raise ConflictError(f"Thôn {village.name} ({village.code}) không thuộc xã {src.name}.")
    if len({village.id for village in chosen}) != len(chosen):
        raise InvalidInputError("Danh sách thôn có thôn bị lặp.")
    at = resolve_time(at_ms)
    for village in chosen:
        _check_membership_movable(s, village, at)
    district_ref = (
        (s.get(District, src.district_id).code if src.district_id else None)
        if district is UNSET
        else district
    )
    new = add_commune(
        s,
        new_code,
        new_name,
        src.province_id,
        district=district_ref,
        station_kind=station_kind or src.station_kind,
        at_ms=at,
    )
    for village in chosen:
        _move_village(s, village, new, at)
    s.flush()
    return new


def retire_commune(s: Session, ref: Ref, at_ms: int | None = None) -> Commune:
    row = get_commune(s, ref)
    at = resolve_time(at_ms)
    _not_before(at, row.created_ms, f"ngày lập xã {row.name}")
    remaining = _current_villages(s, row.id)
    if remaining:
        raise ConflictError(
            f"Xã {row.name} còn {len(remaining)} thôn; hãy chuyển hoặc sáp nhập "
            "các thôn trước khi cho xã ngừng."
        )
    name = _check_name_changeable(s, "commune", row.id, at, "xã")
    _close(name, at)
    row.retired_ms = at
    s.flush()
    return row


# --------------------------------------------------------------------------- villages


def add_village(
    s: Session, commune: Ref, code: str, name: str, at_ms: int | None = None
) -> Village:
    code, name = v.check_code("village", code), v.check_name("village", name)
    at = resolve_time(at_ms)
    parent = get_commune(s, commune)
    _not_before(at, parent.created_ms, f"ngày lập xã {parent.name}")
    if s.scalar(select(Village.id).where(Village.code == code)) is not None:
        raise ConflictError(f"Mã thôn '{code}' đã có.")
    row = insert_village(s, parent.id, code, name, at)
    s.flush()
    return row


def insert_village(s: Session, commune_id: int, code: str, name: str, at_ms: int) -> Village:
    """The rows of a new village (village, open membership, open name), unchecked; flushed
    once for the id only. For the importer, like ``insert_node``."""
    row = Village(
        code=code, name=name, name_folded=fold(name), commune_id=commune_id, created_ms=at_ms
    )
    s.add(row)
    s.flush()
    s.add(
        VillageMembership(
            village_id=row.id, commune_id=commune_id, valid_from_ms=at_ms, valid_to_ms=None
        )
    )
    _open_new_name(s, "village", row.id, name, at_ms)
    return row


def rename_village(s: Session, ref: Ref, new_name: str, at_ms: int | None = None) -> Village:
    row = get_village(s, ref)
    name = v.check_name("village", new_name)
    at = resolve_time(at_ms)
    if name == row.name:
        raise InvalidInputError(f"Thôn '{row.code}' đã mang tên {name}.")
    current = _check_name_changeable(s, "village", row.id, at, "thôn")
    _close(current, at)
    _open_new_name(s, "village", row.id, name, at)
    row.name, row.name_folded = name, fold(name)
    s.flush()
    return row


def _move_village(s: Session, village: Village, target: Commune, at: int) -> None:
    membership = _check_membership_movable(s, village, at)
    _close(membership, at)
    s.add(
        VillageMembership(
            village_id=village.id, commune_id=target.id, valid_from_ms=at, valid_to_ms=None
        )
    )
    village.commune_id = target.id


def move_village(s: Session, ref: Ref, commune: Ref, at_ms: int | None = None) -> Village:
    village, target = get_village(s, ref), get_commune(s, commune)
    at = resolve_time(at_ms)
    if village.commune_id == target.id:
        raise InvalidInputError(f"Thôn {village.name} đã thuộc xã {target.name}.")
    _not_before(at, target.created_ms, f"ngày lập xã {target.name}")
    _move_village(s, village, target, at)
    s.flush()
    return village


def merge_villages(s: Session, source: Ref, target: Ref, at_ms: int | None = None) -> MergeResult:
    """Merge village ``source`` into ``target``: its clusters move at ``at_ms`` and ``source``
    leaves its commune and is retired, pointing at ``target``."""
    src, dst = get_village(s, source), get_village(s, target)
    at = resolve_time(at_ms)
    if src.id == dst.id:
        raise InvalidInputError("Không thể sáp nhập một thôn vào chính nó.")
    _not_before(at, dst.created_ms, f"ngày lập thôn {dst.name}")
    nodes = _current_nodes(s, src.id)
    placements = [_check_placement_movable(s, node, at) for node in nodes]
    membership = _check_membership_movable(s, src, at)
    name = _check_name_changeable(s, "village", src.id, at, "thôn")

    for node, placement in zip(nodes, placements, strict=True):
        _close(placement, at)
        s.add(NodePlacement(node_id=node.id, village_id=dst.id, valid_from_ms=at, valid_to_ms=None))
        node.village_id = dst.id
    _close(membership, at)
    _close(name, at)
    src.retired_ms, src.merged_into_id = at, dst.id
    s.flush()
    return MergeResult(src.code, dst.code, at, [node.id for node in nodes])


def retire_village(s: Session, ref: Ref, at_ms: int | None = None) -> Village:
    row = get_village(s, ref)
    at = resolve_time(at_ms)
    nodes = _current_nodes(s, row.id)
    if nodes:
        raise ConflictError(
            f"Thôn {row.name} còn {len(nodes)} cụm loa; hãy chuyển hoặc cho các cụm ngừng trước."
        )
    membership = _check_membership_movable(s, row, at)
    name = _check_name_changeable(s, "village", row.id, at, "thôn")
    _close(membership, at)
    _close(name, at)
    row.retired_ms = at
    s.flush()
    return row


# --------------------------------------------------------------------------- nodes


def add_node(
    s: Session,
    node_id: str,
    village: Ref,
    *,
    label: str = "",
    speakers: int = 2,
    simulated: bool = True,
    lat: float | None = None,
    lon: float | None = None,
    vendor: str = "",
    heartbeat_s: int = 30,
    at_ms: int | None = None,
) -> Node:
    node_id = v.check_code("node", node_id)
    label, vendor = v.check_label(label), v.check_vendor(vendor)
    speakers, heartbeat_s = v.check_speakers(speakers), v.check_heartbeat_s(heartbeat_s)
    lat, lon = v.check_lat(lat), v.check_lon(lon)
    at = resolve_time(at_ms)
    parent = get_village(s, village)
    existing = s.get(Node, node_id)
    if existing is not None:
        state = "đã ngừng sử dụng" if existing.retired_ms is not None else "đã được đăng ký"
        raise ConflictError(f"Cụm loa '{node_id}' {state}.")
    row = insert_node(
        s,
        node_id,
        parent.id,
        at,
        label=label,
        vendor=vendor,
        speakers=speakers,
        heartbeat_s=heartbeat_s,
        simulated=bool(simulated),
        lat=lat,
        lon=lon,
    )
    s.flush()
    return row


def insert_node(
    s: Session,
    node_id: str,
    village_id: int,
    at_ms: int,
    *,
    label: str = "",
    vendor: str = "",
    speakers: int = 2,
    heartbeat_s: int = 30,
    simulated: bool = True,
    lat: float | None = None,
    lon: float | None = None,
) -> Node:
    """The rows of a new cluster (node + open placement), unchecked and unflushed: for the
    importer, which has validated every value and looked up every id before writing, and
    lets SQLAlchemy insert thousands of clusters in a few batched statements."""
    row = Node(
        id=node_id,
        village_id=village_id,
        label=label,
        vendor=vendor,
        speakers=speakers,
        heartbeat_s=heartbeat_s,
        simulated=simulated,
        lat=lat,
        lon=lon,
        registered_ms=at_ms,
    )
    s.add(row)
    s.add(
        NodePlacement(node_id=node_id, village_id=village_id, valid_from_ms=at_ms, valid_to_ms=None)
    )
    return row


def update_node(
    s: Session,
    node_id: str,
    *,
    label: str = UNSET,
    speakers: int = UNSET,
    simulated: bool = UNSET,
    lat: float | None = UNSET,
    lon: float | None = UNSET,
    vendor: str = UNSET,
    heartbeat_s: int = UNSET,
) -> Node:
    """Attributes without history; a change of village goes through ``move_node``."""
    row = get_node(s, node_id)
    values = {
        "label": v.check_label(label) if label is not UNSET else row.label,
        "speakers": v.check_speakers(speakers) if speakers is not UNSET else row.speakers,
        "simulated": bool(simulated) if simulated is not UNSET else row.simulated,
        "lat": v.check_lat(lat) if lat is not UNSET else row.lat,
        "lon": v.check_lon(lon) if lon is not UNSET else row.lon,
        "vendor": v.check_vendor(vendor) if vendor is not UNSET else row.vendor,
        "heartbeat_s": (
            v.check_heartbeat_s(heartbeat_s) if heartbeat_s is not UNSET else row.heartbeat_s
        ),
    }
    for key, value in values.items():
        setattr(row, key, value)
    s.flush()
    return row


# audit(session, action, target, detail): the caller's hook that writes the shared audit log
# in the same transaction (the dashboard owns that table and knows who asked and from where;
# the registry sits below it and says what changed). See dashboard.security.audit_hook.
AuditHook = Callable[[Session, str, str, dict[str, Any]], None]
NODE_POSITION_ACTION = "registry.node_position"


def set_node_position(
    s: Session, node_id: str, lat: object, lon: object, *, audit: AuditHook
) -> tuple[tuple[float | None, float | None], tuple[float | None, float | None]]:
    """A cluster's coordinates set (or cleared) by hand, checked to lie in Vietnam
    (``validate.check_vn_position``), and audited as ``registry.node_position`` with the old
    and the new value. One function for the API and the web form, so both write the same
    record; a refused value raises before anything is written, audit included. Returns
    (before, after)."""
    row = get_node(s, node_id)
    if row.retired_ms is not None:
        raise InvalidInputError(f"Cụm loa '{node_id}' đã ngừng sử dụng.")
    new = v.check_vn_position(lat, lon)
    before = (row.lat, row.lon)
    row.lat, row.lon = new
    s.flush()
    audit(s, NODE_POSITION_ACTION, node_id, {"before": list(before), "after": list(new)})
    return before, new


def move_node(s: Session, node_id: str, village: Ref, at_ms: int | None = None) -> Node:
    node, target = get_node(s, node_id), get_village(s, village)
    at = resolve_time(at_ms)
    if node.village_id == target.id:
        raise InvalidInputError(f"Cụm loa '{node_id}' đã ở thôn {target.name}.")
    _not_before(at, target.created_ms, f"ngày lập thôn {target.name}")
    placement = _check_placement_movable(s, node, at)
    _close(placement, at)
    s.add(NodePlacement(node_id=node.id, village_id=target.id, valid_from_ms=at, valid_to_ms=None))
    node.village_id = target.id
    s.flush()
    return node


def retire_node(s: Session, node_id: str, at_ms: int | None = None) -> Node:
    node = get_node(s, node_id)
    at = resolve_time(at_ms)
    placement = _check_placement_movable(s, node, at)
    _close(placement, at)
    node.retired_ms, node.village_id = at, None
    s.flush()
    return node


def approve_pending(
    s: Session,
    node_id: str,
    village: Ref,
    *,
    label: str = "",
    speakers: int = 2,
    at_ms: int | None = None,
) -> Node:
    """Register a device that announced itself (a real one: ``simulated=False``) and drop it
    from the pending list, in one step so it is never both or neither."""
    pending = s.get(PendingNode, node_id)
    if pending is None:
        raise NotFoundError(f"Không có cụm loa '{node_id}' trong danh sách chờ duyệt.")
    node = add_node(
        s, node_id, village, label=label, speakers=speakers, simulated=False, at_ms=at_ms
    )
    s.delete(pending)
    s.flush()
    return node
