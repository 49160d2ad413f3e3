"""The demo province used by ``loa demo``: a Lạng Sơn-like register loaded from package data.

It goes through the ordinary importer, so the demo exercises the same code path (and leaves
the same history rows) as a province importing its own file; loading it twice is harmless.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from importlib import resources

from sqlalchemy import func, select

from loa.db import Database
from loa.text import fold
from loa.timeutil import ICT, dt_to_ms, now_ms
from registry.importer import ImportSummary, import_text
from registry.models import Commune, Node, Province, Village, VillageMembership

DEMO_FILE = "demo_province.yaml"
DEMO_PROVINCE_CODE = "LS"
# The register "starts" when two-level local government did (01/07/2025), so every period a
# demo report can ask about lies inside the villages' membership intervals.
DEMO_EFFECTIVE_MS = dt_to_ms(datetime(2025, 7, 1, tzinfo=ICT))


# One merger of the 2025 reform, so the demo shows a commune judged with its predecessor: on
# 01/07/2025 Yên Phúc (two villages) merged into Hữu Lễ. Fictional like the rest of the demo.
MERGED_CODE, MERGED_NAME, MERGED_INTO = "ls-yenphuc", "Yên Phúc", "ls-huule"
MERGED_VILLAGES = ("ls-huule-t03", "ls-huule-t04")
BEFORE_REFORM_MS = dt_to_ms(datetime(2021, 1, 1, tzinfo=ICT))


def _merge_of_2025(s) -> None:
    """Write the register's history before 01/07/2025 for Hữu Lễ and its predecessor."""
    if s.scalar(select(Commune.id).where(Commune.code == MERGED_CODE)) is not None:
        return
    into = s.scalar(select(Commune).where(Commune.code == MERGED_INTO))
    if into is None:
        return
    old = Commune(
        code=MERGED_CODE,
        name=MERGED_NAME,
        name_folded=fold(MERGED_NAME),
        province_id=into.province_id,
        district_id=into.district_id,
        station_kind="ip",
        created_ms=BEFORE_REFORM_MS,
        retired_ms=DEMO_EFFECTIVE_MS,
        merged_into_id=into.id,
    )
    s.add(old)
    s.flush()
    into.created_ms = BEFORE_REFORM_MS
    for village in s.scalars(select(Village).where(Village.commune_id == into.id)):
        village.created_ms = min(village.created_ms or BEFORE_REFORM_MS, BEFORE_REFORM_MS)
        owner = old.id if village.code in MERGED_VILLAGES else into.id
        s.add(
            VillageMembership(
                village_id=village.id,
                commune_id=owner,
                valid_from_ms=BEFORE_REFORM_MS,
                valid_to_ms=DEMO_EFFECTIVE_MS,
            )
        )
    s.flush()


@dataclass
class DemoSummary:
    province: str
    province_name: str
    communes: int
    villages: int
    nodes: int
    simulated_nodes: list[str] = field(default_factory=list)
    uncommissioned_nodes: list[str] = field(default_factory=list)
    manual_communes: list[str] = field(default_factory=list)  # fm / wired: need attestation
    imported: ImportSummary | None = None

    def __str__(self) -> str:
        return self.text()

    def text(self) -> str:
        return (
            f"{self.province_name} ({self.province}): {self.communes} xã, "
            f"{self.villages} thôn, {self.nodes} cụm loa "
            f"({len(self.simulated_nodes)} mô phỏng, "
            f"{len(self.uncommissioned_nodes)} chờ thiết bị thật: "
            f"{', '.join(self.uncommissioned_nodes)})."
        )


def demo_yaml() -> str:
    return resources.files("registry").joinpath(DEMO_FILE).read_text("utf-8")


def load_demo_province(db: Database, at_ms: int | None = DEMO_EFFECTIVE_MS) -> DemoSummary:
    """Import the demo register into ``db`` (tables must exist) and describe what is there."""
    if at_ms is not None and at_ms > now_ms():
        at_ms = None  # a clock set before 01/07/2025: the register starts now instead
    with db.session() as s:
        imported = import_text(s, demo_yaml(), "yaml", at_ms)
        if at_ms == DEMO_EFFECTIVE_MS:
            _merge_of_2025(s)
    with db.session() as s:
        province_id = select(Province.id).where(Province.code == DEMO_PROVINCE_CODE)
        communes = list(
            s.scalars(
                select(Commune)
                .where(Commune.retired_ms.is_(None), Commune.province_id.in_(province_id))
                .order_by(Commune.code)
            )
        )
        commune_ids = [c.id for c in communes]
        villages = (
            s.scalar(
                select(func.count(Village.id)).where(
                    Village.retired_ms.is_(None), Village.commune_id.in_(commune_ids)
                )
            )
            or 0
        )
        nodes = list(
            s.execute(
                select(Node.id, Node.simulated)
                .join(Village, Node.village_id == Village.id)
                .where(Node.retired_ms.is_(None), Village.commune_id.in_(commune_ids))
                .order_by(Node.id)
            )
        )
        return DemoSummary(
            province=DEMO_PROVINCE_CODE,
            province_name=s.scalar(select(Province.name).where(Province.code == DEMO_PROVINCE_CODE))
            or DEMO_PROVINCE_CODE,
            communes=len(communes),
            villages=villages,
            nodes=len(nodes),
            simulated_nodes=[n for n, sim in nodes if sim],
            uncommissioned_nodes=[n for n, sim in nodes if not sim],
            manual_communes=[c.code for c in communes if c.station_kind != "ip"],
            imported=imported,
        )
