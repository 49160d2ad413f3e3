"""Response schemas of the fleet API (kept apart from the SQLAlchemy models)."""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from pydantic import BaseModel

T = TypeVar("T")


class NodeCounts(BaseModel):
    total: int = 0
    online: int = 0
    degraded: int = 0
    offline: int = 0
    unknown: int = 0


class HealthSummary(BaseModel):
    nodes: NodeCounts
    rejected_messages: dict[str, int]
    pending_nodes: int
    controller: dict[str, Any] | None = None
    generated_at: str


class NodeItem(BaseModel):
    id: str
    state: str
    available: bool
    reasons: list[str]
    flags: list[str] = []
    since: str | None
    last_heartbeat: str | None
    label: str
    village_id: int | None
    village: str | None
    commune_id: int | None
    commune: str | None
    simulated: bool


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int


class TransitionItem(BaseModel):
    at: str
    at_ms: int
    from_state: str
    to_state: str
    available: bool
    cause: str


class NodeDetail(NodeItem):
    heartbeat: dict[str, Any] | None
    clock_skew_ms: int | None
    fw: str | None
    heartbeat_s: int
    transitions: list[TransitionItem]
