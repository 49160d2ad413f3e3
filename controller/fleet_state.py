"""In-memory fleet state and the protocol's state rules applied to it.

The ingest keeps every node's state here and only *records* changes to the database in
batches: a heartbeat costs a dictionary update, not a database round trip.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from loa.protocol import (
    HealthThresholds,
    Heartbeat,
    NodeState,
    degradation_reasons,
    heartbeat_timeout_ms,
    is_audible,
)


@dataclass(slots=True)
class Transition:
    node_id: str
    at_ms: int
    from_state: str
    to_state: str
    available: bool
    cause: str


@dataclass(slots=True)
class NodeRuntime:
    node_id: str
    heartbeat_s: int
    state: NodeState = NodeState.UNKNOWN
    available: bool = False
    since_ms: int = 0
    reasons: tuple[str, ...] = ()
    # None = never heard a status; True/False = last retained status.
    status_online: bool | None = None
    # Controller clock when the last heartbeat (or an online status) arrived.
    last_heard_ms: int | None = None
    last_heartbeat_ms: int | None = None
    heartbeat: Heartbeat | None = None
    boot_id: str | None = None
    fw: str | None = None
    clock_skew_ms: int | None = None
    last_sample_ms: int = 0
    offline_cause: str = ""
    sweep_queued: bool = False  # has an entry in the ingest's deadline queue
    # After a watch gap (restart, broker outage): a fresh grace from when watching resumed,
    # so the node gets 3 x heartbeat_s to be heard before it counts as silent, and what it
    # was before the gap (its last heartbeat, its boot) to recognise continuity.
    grace_ms: int | None = None
    gap_from_ms: int | None = None
    gap_boot_id: str | None = None

    def heard_ms(self) -> int | None:
        """The instant the heartbeat time-out counts from: last heard, or the grace."""
        if self.grace_ms is None:
            return self.last_heard_ms
        return max(self.last_heard_ms or 0, self.grace_ms)


@dataclass
class FleetState:
    """Nodes by id, and the rules of docs/protocol.md, "What the controller derives"."""

    thresholds: HealthThresholds = field(default_factory=HealthThresholds)
    nodes: dict[str, NodeRuntime] = field(default_factory=dict)

    def derive(self, rt: NodeRuntime, now_ms: int) -> tuple[NodeState, bool, tuple[str, ...]]:
        """(state, available for 8.3, reasons) from what is known now."""
        if rt.status_online is False:
            return NodeState.OFFLINE, False, (rt.offline_cause or "offline",)
        if rt.status_online is None and rt.last_heard_ms is None:
            return rt.state, rt.available, rt.reasons
        heard = rt.heard_ms()
        if heard is None or now_ms - heard > heartbeat_timeout_ms(rt.heartbeat_s):
            return NodeState.OFFLINE, False, ("heartbeat_timeout",)
        hb = rt.heartbeat
        if hb is None:
            return NodeState.ONLINE, False, ("awaiting_heartbeat",)
        reasons = tuple(degradation_reasons(hb, self.thresholds))
        state = NodeState.DEGRADED if reasons else NodeState.ONLINE
        return state, is_audible(hb), reasons

    def apply(self, rt: NodeRuntime, now_ms: int, cause: str) -> Transition | None:
        """Re-derive ``rt``; return the transition when state or availability changed."""
        state, available, reasons = self.derive(rt, now_ms)
        rt.reasons = reasons
        if state == rt.state and available == rt.available:
            return None
        at = now_ms
        if (
            state == NodeState.OFFLINE
            and rt.state in (NodeState.ONLINE, NodeState.DEGRADED)
            and rt.last_heard_ms is not None
        ):
            # Nothing proves the node audible after last heard + time-out: a silence found
            # late (the sweeper's tick, a restart, a will delivered after a gap) is dated
            # when it became one, not when it was noticed.
            due = rt.last_heard_ms + heartbeat_timeout_ms(rt.heartbeat_s)
            if due < now_ms:
                at = max(rt.since_ms, due)
        tr = Transition(rt.node_id, at, str(rt.state), str(state), available, cause)
        rt.state, rt.available, rt.since_ms = state, available, at
        return tr
