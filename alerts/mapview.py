"""An alert's area and clusters as a small offline map: SVG geometry computed here, drawn
inline by the page (no map tiles, no CDN: the dashboard works without the internet).

Equirectangular projection with the longitude scaled by cos(latitude) at the centre: over a
province (a hundred kilometres) the distortion is well under 1 %, and a circle of N km is
drawn as a circle. The view is fitted to the alert's polygons and circles and the targeted
clusters, with a margin; the other clusters inside it are drawn grey so an officer sees who
will *not* hear the warning next to who will. Villages are listed beside the map.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

from alerts.areas import Cluster
from alerts.cap import CapAlert
from loa.text import fold

KM_PER_DEG_LAT = 111.32
COLOURS = {
    "targeted": "#d84315",  # preview / not aired yet
    "started": "#2e7d32",
    "missing": "#c62828",
    "other": "#9e9e9e",
}
MAX_OTHERS = 4000  # grey points beyond this are left out (the count says so)


def areas_of(alert: CapAlert) -> list[dict[str, Any]]:
    """Every polygon and circle of every info block's areas, once each, as plain data."""
    out: list[dict[str, Any]] = []
    seen: set[tuple] = set()
    for info in alert.infos:
        for area in info.areas:
            polygons = [[list(p) for p in poly.points] for poly in area.polygons]
            circles = [{"lat": c.lat, "lon": c.lon, "radius_km": c.radius_km} for c in area.circles]
            key = (
                tuple(tuple(tuple(p) for p in poly) for poly in polygons),
                tuple((c["lat"], c["lon"], c["radius_km"]) for c in circles),
            )
            if (polygons or circles) and key not in seen:
                seen.add(key)
                out.append({"desc": area.desc, "polygons": polygons, "circles": circles})
    return out


def _extent(points: Iterable[tuple[float, float]]) -> tuple[float, float, float, float] | None:
    pts = list(points)
    if not pts:
        return None
    lats = [p[0] for p in pts]
    lons = [p[1] for p in pts]
    return min(lats), min(lons), max(lats), max(lons)


def area_map(
    clusters: list[Cluster],
    targeted: Iterable[str],
    areas: list[dict[str, Any]],
    *,
    not_started: Iterable[str] | None = None,
    width: int = 640,
) -> dict[str, Any] | None:
    """SVG geometry: ``points`` (targeted first-class, others grey), ``polygons``,
    ``circles``, a scale bar, and the targeted ``villages`` for the list beside it. None when
    nothing has coordinates. ``not_started``: after an airing, the targeted clusters that did
    not start (red; the others green); None before any airing (all one colour)."""
    wanted = set(targeted)
    missing = None if not_started is None else set(not_started)
    placed = [c for c in clusters if c.lat is not None and c.lon is not None]
    mine = [c for c in placed if c.node_id in wanted]
    shape_pts: list[tuple[float, float]] = []
    for a in areas:
        for poly in a["polygons"]:
            shape_pts += [(p[0], p[1]) for p in poly]
        for c in a["circles"]:
            dlat = c["radius_km"] / KM_PER_DEG_LAT
            dlon = dlat / max(0.05, math.cos(math.radians(c["lat"])))
            shape_pts += [(c["lat"] - dlat, c["lon"] - dlon), (c["lat"] + dlat, c["lon"] + dlon)]
    ext = _extent(shape_pts + [(c.lat, c.lon) for c in mine])  # type: ignore[misc]
    if ext is None:
        return None
    lo_lat, lo_lon, hi_lat, hi_lon = ext
    # At least ~2 km across, plus a 20 % margin each side (the neighbours not warned show).
    span_lat = max(hi_lat - lo_lat, 0.02)
    mid_lat = (lo_lat + hi_lat) / 2
    kx = math.cos(math.radians(mid_lat))
    span_lon = max(hi_lon - lo_lon, 0.02 / max(kx, 0.05))
    lo_lat, hi_lat = mid_lat - span_lat * 0.7, mid_lat + span_lat * 0.7
    mid_lon = (lo_lon + hi_lon) / 2
    lo_lon, hi_lon = mid_lon - span_lon * 0.7, mid_lon + span_lon * 0.7
    scale = width / ((hi_lon - lo_lon) * kx)  # px per degree of latitude
    height = int(min(max((hi_lat - lo_lat) * scale, 240), 720))
    # Centre vertically when the height was clamped.
    top_lat = mid_lat + height / 2 / scale

    def xy(lat: float, lon: float) -> tuple[float, float]:
        return round((lon - lo_lon) * kx * scale, 1), round((top_lat - lat) * scale, 1)

    def inside(c: Cluster) -> bool:
        x, y = xy(c.lat, c.lon)  # type: ignore[arg-type]
        return 0 <= x <= width and 0 <= y <= height

    points = []
    others = [c for c in placed if c.node_id not in wanted and inside(c)]
    for c in others[:MAX_OTHERS]:
        x, y = xy(c.lat, c.lon)  # type: ignore[arg-type]
        points.append(_point(c, x, y, "other"))
    for c in mine:  # drawn last: on top of the grey ones
        state = (
            "targeted" if missing is None else ("missing" if c.node_id in missing else "started")
        )
        x, y = xy(c.lat, c.lon)  # type: ignore[arg-type]
        points.append(_point(c, x, y, state))
    polygons = [
        {"desc": a["desc"], "points": " ".join("{},{}".format(*xy(p[0], p[1])) for p in poly)}
        for a in areas
        for poly in a["polygons"]
    ]
    circles = []
    for a in areas:
        for c in a["circles"]:
            x, y = xy(c["lat"], c["lon"])
            circles.append(
                {
                    "desc": a["desc"],
                    "cx": x,
                    "cy": y,
                    "r": round(c["radius_km"] / KM_PER_DEG_LAT * scale, 1),
                }
            )
    km_per_px = KM_PER_DEG_LAT / scale
    bar_km = _nice(km_per_px * width / 5)
    return {
        "w": width,
        "h": height,
        "points": points,
        "polygons": polygons,
        "circles": circles,
        "scale_km": bar_km,
        "scale_px": round(bar_km / km_per_px, 1),
        "targeted": len(wanted),
        "targeted_placed": len(mine),
        "others_shown": min(len(others), MAX_OTHERS),
        "others_hidden": max(0, len(others) - MAX_OTHERS),
        "villages": villages_of([c for c in clusters if c.node_id in wanted], missing),
        "colours": COLOURS,
    }


def _point(c: Cluster, x: float, y: float, state: str) -> dict[str, Any]:
    return {
        "x": x,
        "y": y,
        "state": state,
        "fill": COLOURS[state],
        "node_id": c.node_id,
        "title": f"{c.node_id} · {c.village_name} · {c.commune_name}",
    }


def villages_of(clusters: list[Cluster], missing: set[str] | None) -> list[dict[str, Any]]:
    """The targeted clusters by commune and village, with how many started (after an
    airing), sorted by commune then village name."""
    groups: dict[tuple[str, str], list[Cluster]] = {}
    for c in clusters:
        groups.setdefault((c.commune_name, c.village_name), []).append(c)
    return [
        {
            "commune": commune,
            "village": village,
            "clusters": len(cs),
            "started": None if missing is None else sum(c.node_id not in missing for c in cs),
            "placed": sum(c.lat is not None for c in cs),
        }
        for (commune, village), cs in sorted(
            groups.items(), key=lambda kv: (fold(kv[0][0]), fold(kv[0][1]))
        )
    ]


def _nice(km: float) -> float | int:
    """A round length for the scale bar (1, 2 or 5 × a power of ten; "2 km", not "2,0")."""
    if km <= 0:
        return 1
    power = 10.0 ** math.floor(math.log10(km))
    value = next((s * power for s in (1, 2, 5) if km <= s * power), 10 * power)
    return int(value) if value >= 1 else round(value, 3)
