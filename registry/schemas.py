"""Read models of the registry as the API shows them (kept apart from the SQLAlchemy tables).

Times are epoch milliseconds, as everywhere in Loa; the few places a person reads a date also
carry it formatted dd/mm/yyyy in Asia/Ho_Chi_Minh."""

from __future__ import annotations

from pydantic import BaseModel, Field

NODE_STATES = ("online", "degraded", "offline", "unknown")


class NodeCounts(BaseModel):
    total: int = 0
    online: int = 0
    degraded: int = 0
    offline: int = 0
    unknown: int = 0

    def add(self, state: str, count: int = 1) -> None:
        key = state if state in NODE_STATES else "unknown"
        setattr(self, key, getattr(self, key) + count)
        self.total += count


class UnitRef(BaseModel):
    id: int
    code: str
    name: str


class CommuneSummary(BaseModel):
    id: int
    code: str
    name: str
    province: UnitRef
    district: UnitRef | None = None
    station_kind: str
    lat: float | None = None
    lon: float | None = None
    villages: int = Field(description="Số thôn hiện thuộc xã")
    nodes: NodeCounts


class CommunePage(BaseModel):
    items: list[CommuneSummary]
    total: int
    limit: int
    offset: int


class NodeInfo(BaseModel):
    id: str
    label: str
    state: str
    available: bool = False
    since_ms: int | None = None
    last_heartbeat_ms: int | None = None
    reasons: str = ""
    simulated: bool
    speakers: int
    lat: float | None = None
    lon: float | None = None


class VillageDetail(BaseModel):
    id: int
    code: str
    name: str
    nodes: list[NodeInfo]
    node_counts: NodeCounts


class NameRecord(BaseModel):
    name: str
    valid_from_ms: int
    valid_to_ms: int | None = None
    valid_from: str
    valid_to: str | None = None


class CommuneDetail(BaseModel):
    id: int
    code: str
    name: str
    province: UnitRef
    district: UnitRef | None = None
    station_kind: str
    lat: float | None = None
    lon: float | None = None
    created_ms: int
    retired_ms: int | None = None
    merged_into: UnitRef | None = None
    merged_from: list[UnitRef] = Field(default_factory=list)
    names: list[NameRecord] = Field(default_factory=list)
    nodes: NodeCounts
    villages: list[VillageDetail]


class SearchHit(BaseModel):
    kind: str  # "commune" | "village" | "node"
    id: int | str
    code: str
    name: str
    commune: UnitRef | None = None
    village: UnitRef | None = None
    retired: bool = False
    merged_into: UnitRef | None = None


class SearchResult(BaseModel):
    q: str
    communes: list[SearchHit]
    villages: list[SearchHit]
    nodes: list[SearchHit]


class PendingNodeOut(BaseModel):
    id: str
    first_seen_ms: int
    last_seen_ms: int
    first_seen: str
    last_seen: str
    messages: int
    last_channel: str
    last_payload: str


class ApproveRequest(BaseModel):
    village_id: int
    label: str = ""
    speakers: int = 2  # checked by the service, so the refusal is in Vietnamese


class ApprovedNodeOut(BaseModel):
    """A pending cluster once placed in its village."""

    id: str
    village_id: int
    village: str
    commune_id: int
    simulated: bool
    registered_ms: int | None = None


class ImportOut(BaseModel):
    """What an import changed, in words (``message``) and in figures."""

    message: str
    created: dict[str, int]
    updated: dict[str, int]
    renamed: int
    moved: int
    pending_approved: int
