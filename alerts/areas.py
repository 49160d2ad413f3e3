"""From a CAP alert's areas to the loudspeaker clusters that must play it.

Each ``area`` may give polygons, circles and geocodes; a cluster is chosen when any of them
covers it (CAP describes one area several ways; warning a cluster too many is better than
one too few). Coordinates are the cluster's own, else its commune's (a commune with no
surveyed clusters is still reached by a polygon over its centre). Geocodes name communes or
provinces, by Vietnamese administrative unit code or Loa's registry code; the value names
read as such, and a code-to-registry map, are settings of the province. A commune merged by
decree is followed to the commune that now holds its villages.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from alerts.cap import Area, CapAlert
from alerts.config import AlertSettings
from alerts.geo import bbox, in_circle, in_polygon
from registry.models import Commune, Node, Province, Village


@dataclass(frozen=True, slots=True)
class Cluster:
    node_id: str
    label: str
    village_id: int | None
    village_name: str
    commune_id: int | None
    commune_name: str
    province_id: int | None
    lat: float | None
    lon: float | None

    def as_dict(self) -> dict:
        return {
            "node_id": self.node_id,
            "label": self.label,
            "village_id": self.village_id,
            "village": self.village_name,
            "commune_id": self.commune_id,
            "commune": self.commune_name,
            "lat": self.lat,
            "lon": self.lon,
        }


def load_clusters(s: Session) -> list[Cluster]:
    """Every cluster in service, with where it is (its coordinates or its commune's)."""
    rows = s.execute(
        select(
            Node.id,
            Node.label,
            Node.lat,
            Node.lon,
            Village.id,
            Village.name,
            Commune.id,
            Commune.name,
            Commune.province_id,
            Commune.lat,
            Commune.lon,
        )
        .join(Village, Village.id == Node.village_id, isouter=True)
        .join(Commune, Commune.id == Village.commune_id, isouter=True)
        .where(Node.retired_ms.is_(None))
    ).all()
    out = []
    for nid, label, lat, lon, vid, vname, cid, cname, pid, clat, clon in rows:
        if lat is None or lon is None:
            lat, lon = clat, clon
        out.append(Cluster(nid, label or "", vid, vname or "", cid, cname or "", pid, lat, lon))
    return out


def _current_commune_ids(s: Session, codes: set[str]) -> set[int]:
    out: set[int] = set()
    for c in s.scalars(select(Commune).where(Commune.code.in_(sorted(codes)))):
        seen: set[int] = set()
        while c is not None and c.merged_into_id and c.id not in seen:
            seen.add(c.id)
            c = s.get(Commune, c.merged_into_id)
        if c is not None:
            out.add(c.id)
    return out


@dataclass
class Selection:
    clusters: list[Cluster]
    # Areas that matched no cluster, and geocodes naming nothing known (shown to the officer).
    empty_areas: list[str]
    unknown_geocodes: list[str]


def _geocode_targets(
    s: Session, areas: list[Area], settings: AlertSettings
) -> tuple[set[int], set[int], list[str]]:
    commune_names = {n.lower() for n in settings.geocode_commune_names}
    province_names = {n.lower() for n in settings.geocode_province_names}
    communes: set[str] = set()
    provinces: set[str] = set()
    for area in areas:
        for name, value in area.geocodes:
            code = settings.geocode_map.get(value, value)
            if name.lower() in commune_names:
                communes.add(code)
            elif name.lower() in province_names:
                provinces.add(code)
    commune_ids = _current_commune_ids(s, communes) if communes else set()
    province_ids = (
        set(s.scalars(select(Province.id).where(Province.code.in_(sorted(provinces)))))
        if provinces
        else set()
    )
    known_c = set(s.scalars(select(Commune.code).where(Commune.code.in_(sorted(communes)))))
    known_p = set(s.scalars(select(Province.code).where(Province.code.in_(sorted(provinces)))))
    unknown = sorted((communes - known_c) | (provinces - known_p))
    return commune_ids, province_ids, unknown


def _area_hits(
    area: Area,
    c: Cluster,
    by_commune: bool,
    by_province: bool,
    commune_ids: set[int],
    province_ids: set[int],
) -> bool:
    """Whether ``area`` covers cluster ``c``. ``by_commune`` / ``by_province``: whether the
    area has geocodes of that kind (worked out once per area, not once per cluster: an alert
    for a province tests thousands of clusters against each of its areas)."""
    if by_commune and c.commune_id in commune_ids:
        return True
    if by_province and c.province_id in province_ids:
        return True
    if c.lat is None or c.lon is None:
        return False
    for poly in area.polygons:
        lo_lat, lo_lon, hi_lat, hi_lon = bbox(poly)
        if (
            lo_lat <= c.lat <= hi_lat
            and lo_lon <= c.lon <= hi_lon
            and in_polygon(c.lat, c.lon, poly)
        ):
            return True
    return any(in_circle(c.lat, c.lon, circle) for circle in area.circles)


def _area_ids(s: Session, area: Area, settings: AlertSettings) -> tuple[set[int], set[int]]:
    ids = _geocode_targets(s, [area], settings)
    return ids[0], ids[1]


def select_clusters(
    s: Session, alert: CapAlert, settings: AlertSettings, clusters: list[Cluster] | None = None
) -> Selection:
    """The clusters covered by any area of any info block of ``alert``."""
    clusters = clusters if clusters is not None else load_clusters(s)
    areas = alert.areas()
    _, _, unknown = _geocode_targets(s, areas, settings)
    chosen: dict[str, Cluster] = {}
    empty: list[str] = []
    commune_names = {n.lower() for n in settings.geocode_commune_names}
    province_names = {n.lower() for n in settings.geocode_province_names}
    for area in areas:
        commune_ids, province_ids = _area_ids(s, area, settings)
        by_commune = any(name.lower() in commune_names for name, _ in area.geocodes)
        by_province = any(name.lower() in province_names for name, _ in area.geocodes)
        hits = [
            c
            for c in clusters
            if _area_hits(area, c, by_commune, by_province, commune_ids, province_ids)
        ]
        if not hits:
            empty.append(area.desc)
        for c in hits:
            chosen[c.node_id] = c
    return Selection(sorted(chosen.values(), key=lambda c: c.node_id), empty, unknown)


def targets_for(clusters: list[Cluster], all_clusters: list[Cluster]) -> dict:
    """Scheduler targets for exactly these clusters: whole villages where every cluster of the
    village is chosen (fewer ids to check), single clusters otherwise."""
    chosen = {c.node_id for c in clusters}
    by_village: dict[int, list[str]] = {}
    for c in all_clusters:
        if c.village_id is not None:
            by_village.setdefault(c.village_id, []).append(c.node_id)
    villages = sorted(v for v, nodes in by_village.items() if all(n in chosen for n in nodes))
    in_villages = {n for v in villages for n in by_village[v]}
    nodes = sorted(chosen - in_villages)
    return {"villages": villages, "nodes": nodes}
