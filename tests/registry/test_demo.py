"""The demo province loads, is idempotent and has what the demo needs."""

from __future__ import annotations

from sqlalchemy import func, select

from loa.text import fold
from registry.demo import DEMO_EFFECTIVE_MS, load_demo_province
from registry.models import Commune, District, Node, Village, VillageMembership

REAL_NAMES = [
    "Đội Cấn",
    "Hòa Lạc",
    "Kiên Mộc",
    "Hữu Lễ",
    "Tú Xuyên",
    "Liên Hội",
    "Cao Lâu",
    "Tân Liên",
]


def test_demo_province_meets_the_counts(db):
    summary = load_demo_province(db)
    assert summary.communes >= 10
    assert 80 <= summary.nodes <= 120
    assert len(summary.uncommissioned_nodes) >= 3
    assert summary.manual_communes == ["ls-tumich", "ls-vule"]
    assert summary.nodes == len(summary.simulated_nodes) + len(summary.uncommissioned_nodes)
    assert "ls-doican-t01-c" in summary.uncommissioned_nodes

    with db.session() as s:
        communes = s.scalars(select(Commune)).all()
        assert set(REAL_NAMES) <= {c.name for c in communes}
        assert s.scalar(select(func.count(District.id))) >= 1
        for commune in (c for c in communes if c.retired_ms is None):
            villages = s.scalars(select(Village).where(Village.commune_id == commune.id)).all()
            assert 3 <= len(villages) <= 6, commune.name
            for village in villages:
                assert fold(village.name).split()[0] in ("thon", "ban"), village.name
                nodes = s.scalars(select(Node).where(Node.village_id == village.id)).all()
                if commune.station_kind == "ip":
                    assert 1 <= len(nodes) <= 4, village.name  # 1-3 plus one uncommissioned
                    assert all(n.id.startswith(village.code + "-") for n in nodes)
                else:
                    assert nodes == []  # FM / wired: no clusters, attested by hand
        for node in s.scalars(select(Node)):
            assert 21.0 < node.lat < 22.8 and 106.0 < node.lon < 107.5, node.id
        # The register as it is starts on 01/07/2025 (two-level local government); its one
        # earlier history is the 2025 merger of Yên Phúc into Hữu Lễ (issue 16).
        assert (
            s.scalar(
                select(func.min(VillageMembership.valid_from_ms)).where(
                    VillageMembership.valid_to_ms.is_(None)
                )
            )
            == DEMO_EFFECTIVE_MS
        )
        merged = next(c for c in communes if c.retired_ms is not None)
        assert (merged.name, merged.retired_ms) == ("Yên Phúc", DEMO_EFFECTIVE_MS)
        assert s.get(Commune, merged.merged_into_id).name == "Hữu Lễ"


def test_demo_province_loads_twice_without_change(db):
    load_demo_province(db)
    again = load_demo_province(db)
    assert not again.imported.changed
    assert again.nodes == load_demo_province(db).nodes
