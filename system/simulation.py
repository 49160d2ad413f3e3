"""What the simulator borrows from the registry: the clusters it should play."""

from __future__ import annotations

from sqlalchemy import select

from firmware_sim.fleet import NodeSpec
from loa.db import Database
from registry.models import Node


def simulated_nodes(db: Database) -> list[NodeSpec]:
    """Registered, not retired nodes marked ``simulated``, with their heartbeat_s."""
    with db.session() as session:
        rows = session.scalars(
            select(Node)
            .where(Node.simulated.is_(True), Node.retired_ms.is_(None))
            .order_by(Node.id)
        ).all()
        return [NodeSpec(r.id, heartbeat_s=r.heartbeat_s, speakers=r.speakers) for r in rows]
