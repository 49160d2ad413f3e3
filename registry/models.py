"""Registry tables.

Communes and villages are merged, split and renamed by decree; measurements taken under an
old name must stay attributable. So membership (village in commune, node in village) and
names are kept as validity intervals ``[valid_from_ms, valid_to_ms)``; ``valid_to_ms`` None
means "still so". The current view is the rows whose interval is open.
"""

from __future__ import annotations

from sqlalchemy import ForeignKey, Index, String, UniqueConstraint
from sqlalchemy.orm import Mapped, mapped_column

from loa.db import Base


class Province(Base):
    __tablename__ = "province"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    name: Mapped[str] = mapped_column(String(200))


class District(Base):
    """Optional grouping kept for pre-2025 reports; never required."""

    __tablename__ = "district"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    province_id: Mapped[int] = mapped_column(ForeignKey("province.id"))
    name: Mapped[str] = mapped_column(String(200))


class Commune(Base):
    __tablename__ = "commune"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(32), unique=True)
    province_id: Mapped[int] = mapped_column(ForeignKey("province.id"), index=True)
    district_id: Mapped[int | None] = mapped_column(ForeignKey("district.id"))
    name: Mapped[str] = mapped_column(String(200))
    name_folded: Mapped[str] = mapped_column(String(200), index=True)
    # "ip" sends telemetry; "fm" and "wired" need a manual attestation for 8.3.
    station_kind: Mapped[str] = mapped_column(String(8), default="ip")
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    created_ms: Mapped[int] = mapped_column(default=0)
    retired_ms: Mapped[int | None]
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("commune.id"))


class Village(Base):
    __tablename__ = "village"
    id: Mapped[int] = mapped_column(primary_key=True)
    code: Mapped[str] = mapped_column(String(48), unique=True)
    name: Mapped[str] = mapped_column(String(200))
    name_folded: Mapped[str] = mapped_column(String(200), index=True)
    # Current commune; the dated truth is in VillageMembership.
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"), index=True)
    created_ms: Mapped[int] = mapped_column(default=0)
    retired_ms: Mapped[int | None]
    merged_into_id: Mapped[int | None] = mapped_column(ForeignKey("village.id"))


class VillageMembership(Base):
    __tablename__ = "village_membership"
    id: Mapped[int] = mapped_column(primary_key=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("village.id"), index=True)
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"), index=True)
    valid_from_ms: Mapped[int]
    valid_to_ms: Mapped[int | None]


class Node(Base):
    """A cluster: one IP receiver + amplifier + 1-4 loudspeakers = one MQTT client."""

    __tablename__ = "node"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    village_id: Mapped[int | None] = mapped_column(ForeignKey("village.id"), index=True)
    label: Mapped[str] = mapped_column(String(200), default="")
    vendor: Mapped[str] = mapped_column(String(100), default="")
    speakers: Mapped[int] = mapped_column(default=2)
    heartbeat_s: Mapped[int] = mapped_column(default=30)
    # False = installed but not commissioned: registered, not driven by the simulator.
    simulated: Mapped[bool] = mapped_column(default=True)
    lat: Mapped[float | None]
    lon: Mapped[float | None]
    registered_ms: Mapped[int] = mapped_column(default=0)
    retired_ms: Mapped[int | None]


class NodePlacement(Base):
    __tablename__ = "node_placement"
    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[str] = mapped_column(ForeignKey("node.id"), index=True)
    village_id: Mapped[int] = mapped_column(ForeignKey("village.id"), index=True)
    valid_from_ms: Mapped[int]
    valid_to_ms: Mapped[int | None]


class NameHistory(Base):
    """Earlier names of communes and villages, so old reports print the name of their time."""

    __tablename__ = "name_history"
    __table_args__ = (Index("ix_name_history_entity", "entity", "entity_id"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    entity: Mapped[str] = mapped_column(String(16))  # "commune" | "village"
    entity_id: Mapped[int]
    name: Mapped[str] = mapped_column(String(200))
    valid_from_ms: Mapped[int]
    valid_to_ms: Mapped[int | None]


class PendingNode(Base):
    """A client that spoke on our topics with an id nobody registered: shown for approval."""

    __tablename__ = "pending_node"
    id: Mapped[str] = mapped_column(String(64), primary_key=True)
    first_seen_ms: Mapped[int]
    last_seen_ms: Mapped[int]
    messages: Mapped[int] = mapped_column(default=0)
    last_channel: Mapped[str] = mapped_column(String(16), default="")
    last_payload: Mapped[str] = mapped_column(String(2000), default="")


__all__ = [
    "Province",
    "District",
    "Commune",
    "Village",
    "VillageMembership",
    "Node",
    "NodePlacement",
    "NameHistory",
    "PendingNode",
    "UniqueConstraint",
]
