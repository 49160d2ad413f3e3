"""Which point lies in a CAP area: polygons by ray casting, circles by great-circle distance.

A small function rather than shapely: CAP polygons are simple rings of a few dozen WGS 84
points over a province a hundred kilometres across, where the planar even-odd test on
(lon, lat) is exact enough (errors are metres) and shapely/GEOS would be a compiled
dependency for two formulas. Points exactly on an edge count as inside: an officer would
rather warn a house on the line than skip it.
"""

from __future__ import annotations

import math

from alerts.cap import Circle, Polygon

EARTH_RADIUS_KM = 6371.0088  # mean radius (IUGG)


def haversine_km(lat1: float, lon1: float, lat2: float, lon2: float) -> float:
    p1, p2 = math.radians(lat1), math.radians(lat2)
    dp, dl = p2 - p1, math.radians(lon2 - lon1)
    a = math.sin(dp / 2) ** 2 + math.cos(p1) * math.cos(p2) * math.sin(dl / 2) ** 2
    return 2 * EARTH_RADIUS_KM * math.asin(min(1.0, math.sqrt(a)))


def _on_segment(lat: float, lon: float, a: tuple[float, float], b: tuple[float, float]) -> bool:
    (y1, x1), (y2, x2) = a, b
    cross = (x2 - x1) * (lat - y1) - (y2 - y1) * (lon - x1)
    if abs(cross) > 1e-12:
        return False
    return (
        min(x1, x2) - 1e-12 <= lon <= max(x1, x2) + 1e-12
        and min(y1, y2) - 1e-12 <= lat <= max(y1, y2) + 1e-12
    )


def in_polygon(lat: float, lon: float, polygon: Polygon) -> bool:
    """Even-odd rule on the closed ring; on the boundary counts as inside."""
    pts = polygon.points
    inside = False
    for i in range(len(pts) - 1):
        a, b = pts[i], pts[i + 1]
        if _on_segment(lat, lon, a, b):
            return True
        (y1, x1), (y2, x2) = a, b
        if (y1 > lat) != (y2 > lat):
            x_cross = x1 + (lat - y1) * (x2 - x1) / (y2 - y1)
            if lon < x_cross:
                inside = not inside
    return inside


def in_circle(lat: float, lon: float, circle: Circle) -> bool:
    return haversine_km(lat, lon, circle.lat, circle.lon) <= circle.radius_km


def bbox(polygon: Polygon) -> tuple[float, float, float, float]:
    lats = [p[0] for p in polygon.points]
    lons = [p[1] for p in polygon.points]
    return min(lats), min(lons), max(lats), max(lons)
