"""The offline map of an alert (issue 19, item 3): fitted to the alert's polygons and
circles, targeted clusters in colour and every other cluster in view grey, villages listed;
drawn from the stored document on the alert's page and from the upload on the preview."""

from __future__ import annotations

import re

from alerts.mapview import area_map
from tests.alerts import capdocs as d
from tests.alerts.conftest import COORDS

GEOCODE_AREA = re.compile(rb"<area><areaDesc>X\xc3\xa3 c0</areaDesc>.*?</area>")
# A polygon over Khối 1 (hvt-01, hvt-02) and a 1 km circle around mp-01.
POLYGON = "21.845,106.755 21.845,106.766 21.855,106.766 21.855,106.755 21.845,106.755"
CIRCLE = "21.830,106.730 1.0"


def shaped(identifier: str = "MAP-1") -> bytes:
    area = (
        f"<area><areaDesc>Khối 1 và Nà Chuông</areaDesc><polygon>{POLYGON}</polygon>"
        f"<circle>{CIRCLE}</circle></area>"
    ).encode()
    doc = GEOCODE_AREA.sub(area, d.flood(identifier, communes=["c0"]))
    assert b"<polygon>" in doc
    return doc


def _inside_polygon_box(m: dict, x: float, y: float) -> bool:
    pts = [tuple(float(v) for v in p.split(",")) for p in m["polygons"][0]["points"].split()]
    xs, ys = [p[0] for p in pts], [p[1] for p in pts]
    return min(xs) <= x <= max(xs) and min(ys) <= y <= max(ys)


def test_preview_map_draws_the_area_targets_in_colour_and_others_grey(env):
    preview = env.alerts.preview(shaped())
    assert sorted(preview["node_ids"]) == ["hvt-01", "hvt-02", "mp-01"]
    m = env.alerts.area_map(preview)
    states = {p["node_id"]: p["state"] for p in m["points"]}
    assert {n for n, s in states.items() if s == "targeted"} == {"hvt-01", "hvt-02", "mp-01"}
    # hvt-03 and mp-02 are close by and drawn grey; Đồng Đăng (12 km north) is out of view.
    assert states["hvt-03"] == states["mp-02"] == "other"
    assert "dd-01" not in states
    assert len(m["polygons"]) == 1 and len(m["circles"]) == 1
    # North is up, east is right, and the points fall where the shapes are.
    by_id = {p["node_id"]: p for p in m["points"]}
    assert by_id["hvt-01"]["y"] > by_id["hvt-02"]["y"]  # 21.848 is south of 21.852
    assert by_id["mp-01"]["x"] < by_id["hvt-01"]["x"]  # 106.730 is west of 106.757
    assert _inside_polygon_box(m, by_id["hvt-01"]["x"], by_id["hvt-01"]["y"])
    assert not _inside_polygon_box(m, by_id["hvt-03"]["x"], by_id["hvt-03"]["y"])
    c = m["circles"][0]
    assert (by_id["mp-01"]["x"], by_id["mp-01"]["y"]) == (c["cx"], c["cy"])
    # Scaled to the area: the whole view is a few km across, not the province.
    assert 0 < m["scale_km"] <= 2 and 0 < m["scale_px"] < m["w"]
    assert all(0 <= p["x"] <= m["w"] and 0 <= p["y"] <= m["h"] for p in m["points"])
    assert [(v["commune"], v["village"], v["clusters"]) for v in m["villages"]] == [
        ("Hoàng Văn Thụ", "Khối 1", 2),
        ("Mai Pha", "Thôn Nà Chuông", 1),
    ]


def test_alert_page_map_reads_the_stored_document_and_colours_by_proof(env):
    out = env.alerts.receive(shaped("MAP-2"), source="api", trusted_source=True)
    report = env.alerts.report(env.province, out["id"])
    assert report["areas"][0]["circles"] == [{"lat": 21.83, "lon": 106.73, "radius_km": 1.0}]
    m = env.alerts.area_map(report)
    # Aired, nothing started (no fleet here): the targeted clusters are red.
    assert sorted(p["node_id"] for p in m["points"] if p["state"] == "missing") == [
        "hvt-01",
        "hvt-02",
        "mp-01",
    ]
    assert [v["started"] for v in m["villages"]] == [0, 0]


def test_geocode_only_alert_is_fitted_to_its_clusters_and_no_coordinates_no_map(env):
    preview = env.alerts.preview(d.flood("MAP-3", communes=["c1"]))
    m = env.alerts.area_map(preview)
    assert m["polygons"] == [] and m["circles"] == []
    assert {p["node_id"] for p in m["points"] if p["state"] == "targeted"} == {"mp-01", "mp-02"}
    assert area_map([], ["x"], []) is None
    assert set(COORDS) >= {p["node_id"] for p in m["points"]}
