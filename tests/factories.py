"""Small registries built directly in the database for tests."""

from __future__ import annotations

from loa.db import Database
from loa.text import fold
from registry.models import (
    Commune,
    Node,
    NodePlacement,
    Province,
    Village,
    VillageMembership,
)


def make_registry(
    db: Database,
    *,
    communes: dict[str, dict[str, list[str]]],
    heartbeat_s: int = 30,
    since_ms: int = 0,
    simulated: bool = True,
) -> dict:
    """``communes`` = {commune name: {village name: [node ids]}}. Returns ids by name."""
    ids: dict[str, int] = {}
    with db.session() as s:
        prov = Province(code="test", name="Tỉnh Thử Nghiệm")
        s.add(prov)
        s.flush()
        for ci, (cname, villages) in enumerate(communes.items()):
            c = Commune(
                code=f"c{ci}",
                province_id=prov.id,
                name=cname,
                name_folded=fold(cname),
                created_ms=since_ms,
            )
            s.add(c)
            s.flush()
            ids[cname] = c.id
            for vi, (vname, nodes) in enumerate(villages.items()):
                v = Village(
                    code=f"c{ci}v{vi}",
                    name=vname,
                    name_folded=fold(vname),
                    commune_id=c.id,
                    created_ms=since_ms,
                )
                s.add(v)
                s.flush()
                ids[vname] = v.id
                s.add(
                    VillageMembership(
                        village_id=v.id, commune_id=c.id, valid_from_ms=since_ms, valid_to_ms=None
                    )
                )
                for node_id in nodes:
                    s.add(
                        Node(
                            id=node_id,
                            village_id=v.id,
                            heartbeat_s=heartbeat_s,
                            simulated=simulated,
                            registered_ms=since_ms,
                        )
                    )
                    s.flush()
                    s.add(
                        NodePlacement(
                            node_id=node_id,
                            village_id=v.id,
                            valid_from_ms=since_ms,
                            valid_to_ms=None,
                        )
                    )
    return ids
