"""The demo province's clusters carry coordinates around Lạng Sơn city, so a CAP polygon or
circle drawn there (as a hydro-met service would) picks the right villages."""

from __future__ import annotations

from alerts.areas import load_clusters, select_clusters
from alerts.cap import load
from alerts.config import AlertSettings
from registry.demo import load_demo_province
from tests.alerts import capdocs as d


def test_polygon_around_lang_son_city_selects_the_demo_villages_there(db):
    load_demo_province(db)
    with db.session() as s:
        clusters = load_clusters(s)
        assert clusters and all(c.lat is not None and c.lon is not None for c in clusters)
        _, alert = load(
            d.thunderstorm(
                polygon="21.80,106.66 21.80,106.80 21.92,106.80 21.92,106.66 21.80,106.66"
            )
        )
        chosen = select_clusters(s, alert, AlertSettings(), clusters).clusters
        _, quake = load(
            d.earthquake_update(references="a,b,2026-01-01T00:00:00+07:00", circle="22.30,106.47 5")
        )
        near_doican = select_clusters(s, quake, AlertSettings(), clusters).clusters
    assert chosen and {c.commune_name for c in chosen} == {"Tân Liên"}
    assert near_doican and {c.commune_name for c in near_doican} == {"Đội Cấn"}
