"""Uplink ingest: every status, heartbeat and event a node publishes.

``handle()`` is synchronous and pure in-memory so that it is fast and easy to test; the
service around it feeds it MQTT messages, runs the sweeper (heartbeat time-outs) and hands
a batch to the ``TelemetryWriter`` once per flush interval. A bad message is counted by
reason and never stops the next good one.
"""

from __future__ import annotations

import asyncio
import heapq
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy import func, select

from controller.fleet_state import FleetState, NodeRuntime, Transition
from controller.models import NodeLive
from controller.stats import LagHistogram
from controller.telemetry_writer import (
    MAX_BACKLOG_SAMPLES,
    Batch,
    PendingSighting,
    TelemetryWriter,
    live_row,
)
from loa.db import Database
from loa.protocol import (
    NODE_ID_RE,
    Channel,
    CmdAck,
    HealthThresholds,
    Heartbeat,
    NodeEvent,
    NodeState,
    PlaybackEvent,
    Rejection,
    Status,
    Topics,
    decode_event,
    decode_heartbeat,
    decode_status,
    heartbeat_timeout_ms,
    is_audible,
)
from loa.settings import Settings
from loa.timeutil import now_ms
from registry.models import Node

log = logging.getLogger("loa.ingest")


class IngestObserver:
    """What the ingest tells the rest of the system, in memory, as it happens.

    The one seam between the ingest and its readers (the dispatcher's proof of play, node
    command answers, the InfluxDB sink), in the manner of ThingsBoard's
    ``DeviceStateService``: each input named and typed. A reader overrides what it needs.
    Every method runs on the ingest's event loop inside the handling of one MQTT message:
    it must return at once (queue any work) and never block; an exception is logged and
    the ingest goes on."""

    def on_transition(self, transition: Transition) -> None:
        """A node changed state (online / degraded / offline / unknown)."""

    def on_event(self, node_id: str, event: NodeEvent, received_ms: int) -> None:
        """A node reported an event (acknowledgement, playback, fault, self-test)."""

    def on_heartbeat(self, node_id: str, heartbeat: Heartbeat, received_ms: int) -> None:
        """A heartbeat was accepted."""


def _everyone(_node_id: str) -> bool:
    return True


@dataclass(frozen=True)
class RegistryRead:
    """What a registry re-read found (read in a thread, applied on the loop)."""

    rows: list[tuple[str, int | None]]
    live: dict[str, NodeLive]


class Ingest:
    def __init__(
        self,
        settings: Settings,
        db: Database,
        *,
        owns: Callable[[str], bool] = _everyone,
        will_hold_ms: int = 0,
    ) -> None:
        """``owns``: which nodes this process keeps state for (all of them, unless several
        controllers share the fleet: ``controller.cluster``). ``will_hold_ms``: see
        ``_on_status``."""
        self.settings = settings
        self.db = db
        self.topics = Topics(settings.topic_root)
        self.fleet = FleetState(HealthThresholds(settings.battery_low_v, settings.weak_signal_dbm))
        self.writer = TelemetryWriter(db)
        self.batch = Batch()
        self.rejected: Counter[str] = Counter()
        self.accepted: Counter[str] = Counter()
        self.last_rejections: list[dict[str, Any]] = []
        self._observers: tuple[IngestObserver, ...] = ()
        self._dirty: set[str] = set()
        self.unknown_seen = False
        self._flush_lock = asyncio.Lock()
        # Processing time minus the heartbeat's own ``ts``: how far behind the fleet we are.
        self.heartbeat_lag = LagHistogram()
        self.owns = owns
        # (first instant the node counts as silent, node): at most one entry per node, so
        # the sweeper looks only at nodes that may be due instead of at the whole fleet.
        self._deadlines: list[tuple[int, str]] = []
        self.event_guard = NodeEventGuard(settings.node_event_rate_per_s, settings.node_event_burst)
        self.writer.max_pending = settings.max_pending_nodes
        # False while the controller is not connected to the broker (controller.watch): a
        # node's silence then proves nothing, so the sweeper waits for ``resume``.
        self.watching = True
        # A broker that shuts down publishes every node's will just before it drops the
        # controller too: applied at once, each would be an outage no loudspeaker had. With
        # a hold, a will is applied (dated when received) only if the controller is still
        # connected this much later; a disconnection in between discards it (pause()).
        # A will delivered while the node is in its grace after a gap (typically the
        # retained one the broker kept) says nothing about when the node was lost: it is
        # held until the grace ends, and dropped if the node comes back first.
        self.will_hold_ms = will_hold_ms
        self._held_wills: dict[str, tuple[int, int | None, bytes]] = {}  # due, dated, will

    # ------------------------------------------------------------------ observers

    def observe(self, observer: IngestObserver) -> None:
        """Tell ``observer`` of every transition, event and heartbeat from now on (the
        composition root wires them, ``system.root``)."""
        self._observers = (*self._observers, observer)

    # ------------------------------------------------------------------ registry

    def registry_fingerprint(self) -> tuple[object, ...]:
        """A summary of the node table the database computes without returning rows: when
        it has not changed, a periodic re-read (100,000 rows) can be skipped."""
        with self.db.session() as s:
            return tuple(
                s.execute(
                    select(
                        func.count(),
                        func.sum(Node.heartbeat_s),
                        func.max(Node.registered_ms),
                        func.count(Node.retired_ms),
                        func.max(Node.retired_ms),
                        func.max(Node.id),
                        func.min(Node.id),
                    )
                ).one()
            )

    def load_registry(self) -> None:
        """(Re)load registered nodes, in the calling thread (tests, tools): read, then apply."""
        self.apply_registry(self.read_registry())

    def read_registry(self) -> RegistryRead:
        """Read registered nodes (and, on the first load, their last stored state). Runs in a
        worker thread and only *reads*: the event loop iterates ``fleet.nodes``, so the
        change is applied there (``apply_registry``), never from the thread."""
        with self.db.session() as s:
            rows = s.execute(
                select(Node.id, Node.heartbeat_s).where(Node.retired_ms.is_(None))
            ).all()
        live = self.writer.load_live() if not self.fleet.nodes else {}
        return RegistryRead([(node_id, hb_s) for node_id, hb_s in rows], live)

    def apply_registry(self, read: RegistryRead) -> None:
        """Apply a registry read on the loop: keeps runtime state of nodes already known and
        restores the last stored state of the others, so a restart does not invent
        transitions."""
        now = now_ms()
        registered = {node_id for node_id, _ in read.rows}
        for node_id, hb_s in read.rows:
            rt = self.fleet.nodes.get(node_id)
            if rt is None:
                rt = NodeRuntime(node_id=node_id, heartbeat_s=hb_s or self.settings.heartbeat_s)
                stored = read.live.get(node_id)
                if stored is not None:
                    self._restore(rt, stored, now)
                self.fleet.nodes[node_id] = rt
            else:
                rt.heartbeat_s = hb_s or self.settings.heartbeat_s
        for gone in set(self.fleet.nodes) - registered:
            del self.fleet.nodes[gone]

    def _expect(self, rt: NodeRuntime) -> None:
        """Queue the node for the sweeper after it was heard (once: a later heartbeat only
        moves its deadline, which the sweeper reads when the queued one comes up)."""
        heard = rt.heard_ms()
        if not rt.sweep_queued and heard is not None:
            rt.sweep_queued = True
            heapq.heappush(
                self._deadlines, (heard + heartbeat_timeout_ms(rt.heartbeat_s) + 1, rt.node_id)
            )

    def _restore(self, rt: NodeRuntime, stored: NodeLive, now: int) -> None:
        """Take a node's last stored state (a restart, or a node handed over by another
        controller) without inventing a transition."""
        rt.state = NodeState(stored.state)
        rt.available = stored.available
        rt.since_ms = stored.since_ms
        rt.boot_id, rt.fw = stored.boot_id, stored.fw
        rt.clock_skew_ms = stored.clock_skew_ms
        if stored.heartbeat:
            try:
                rt.heartbeat = Heartbeat.model_validate(stored.heartbeat)
            except ValueError:
                rt.heartbeat = None
        if rt.state in (NodeState.ONLINE, NodeState.DEGRADED):
            # Last heard is what was stored, not now: a node that fell silent while no
            # controller watched goes offline at last heard + time-out. It still gets
            # 3 x heartbeat_s from now to be heard (the grace) before that is decided.
            rt.last_heartbeat_ms = stored.last_heartbeat_ms
            rt.last_heard_ms = stored.last_heartbeat_ms or stored.since_ms
            self._open_gap(rt, now)

    def _open_gap(self, rt: NodeRuntime, now: int) -> None:
        rt.grace_ms = now
        if rt.gap_from_ms is None:
            rt.gap_from_ms, rt.gap_boot_id = rt.last_heartbeat_ms, rt.boot_id
        self._expect(rt)

    def pause(self) -> None:
        """The controller lost the broker: stop judging silence (see ``watching``)."""
        self.watching = False
        self._held_wills.clear()

    def resume(self, now: int | None = None) -> None:
        """Connected (again): every node that was online gets a fresh grace from ``now``,
        so the time the controller could not hear anyone is not taken as node outages."""
        now = now if now is not None else now_ms()
        for rt in self.fleet.nodes.values():
            if rt.state in (NodeState.ONLINE, NodeState.DEGRADED) and self.owns(rt.node_id):
                self._open_gap(rt, now)
        self.watching = True

    def _close_gap(self, rt: NodeRuntime, hb: Heartbeat, now: int) -> None:
        """First heartbeat after a watch gap. Same boot as before it, an uptime reaching
        back to the last heartbeat before it, audible on both sides: the node ran through
        the gap, which is recorded (``NodeContinuity``) for the indicator to count."""
        gap_from, boot = rt.gap_from_ms, rt.gap_boot_id
        rt.grace_ms = rt.gap_from_ms = rt.gap_boot_id = None
        if gap_from is None or not boot or rt.boot_id != boot or not rt.available:
            return
        booted_by = now - (hb.uptime_s + 1) * 1000  # uptime_s is whole seconds
        if booted_by <= gap_from < now and is_audible(hb):
            self.batch.continuity.append(
                {
                    "node_id": rt.node_id,
                    "from_ms": gap_from,
                    "to_ms": now,
                    "boot_id": boot[:64],
                    "uptime_s": hb.uptime_s,
                }
            )

    def adopt(self, stored: dict[str, NodeLive], now: int | None = None) -> int:
        """Nodes this controller has just come to own: take their state as their previous
        owner last wrote it, unless we have heard from them since. Returns how many."""
        now = now if now is not None else now_ms()
        taken = 0
        for node_id, row in stored.items():
            rt = self.fleet.nodes.get(node_id)
            if rt is None or (rt.last_heartbeat_ms or 0) > (row.last_heartbeat_ms or 0):
                continue
            self._restore(rt, row, now)
            rt.status_online = row.status_online if rt.state != NodeState.UNKNOWN else None
            taken += 1
        return taken

    def mirror(self, rows: list[tuple[str, str, bool, int | None]]) -> None:
        """State of nodes another controller owns, as it last wrote it (node, state,
        available, clock skew): what the scheduler needs to know about every node."""
        for node_id, state, available, skew in rows:
            rt = self.fleet.nodes.get(node_id)
            if rt is not None and not self.owns(node_id):
                rt.state, rt.available, rt.clock_skew_ms = NodeState(state), available, skew

    # ------------------------------------------------------------------ messages

    def handle(self, topic: str, payload: bytes, received_ms: int | None = None) -> bool:
        """Apply one uplink message. Returns False when it was rejected (and counted)."""
        now = received_ms if received_ms is not None else now_ms()
        parsed = self.topics.parse(topic)
        if parsed is None:
            self._reject("bad_topic", topic[:120], None, now)
            return False
        node_id, channel = parsed
        rt = self.fleet.nodes.get(node_id)
        if rt is None:
            self.unknown_seen = True  # the registry may have just approved it: re-read soon
            self._sight_pending(node_id, channel, payload, now)
            self._reject("unknown_node", node_id[:64], node_id, now)
            return False
        if channel is Channel.EVENTS and not self.event_guard.allow(node_id, now):
            self._reject("rate_limited", "events faster than the node's limit", node_id, now)
            return False
        try:
            if channel is Channel.HEARTBEAT:
                self._on_heartbeat(rt, payload, now)
            elif channel is Channel.STATUS:
                self._on_status(rt, payload, now)
            elif channel is Channel.EVENTS:
                self._on_event(rt, payload, now)
            else:  # a node publishing on a cmd topic: not ours to apply
                raise Rejection("bad_topic", f"node published on {channel}")
        except Rejection as rej:
            self._reject(rej.reason, rej.detail, node_id, now)
            return False
        self.accepted[channel] += 1
        return True

    def _on_heartbeat(self, rt: NodeRuntime, payload: bytes, now: int) -> None:
        hb = decode_heartbeat(payload)
        skew = hb.ts - now
        if skew > self.settings.max_clock_skew_s * 1000:
            raise Rejection(
                "future_timestamp", f"ts is {skew // 1000} s ahead of the controller clock"
            )
        rt.clock_skew_ms = skew
        self.heartbeat_lag.observe(now - hb.ts)
        if rt.grace_ms is not None:
            self._close_gap(rt, hb, now)
        rt.heartbeat = hb
        rt.last_heard_ms = rt.last_heartbeat_ms = now
        self._expect(rt)
        if rt.status_online is None:
            # A client that never published a status but heartbeats is evidently connected.
            rt.status_online = True
        if hb.fw:
            rt.fw = hb.fw
        self._update(rt, now, "heartbeat")
        self._dirty.add(rt.node_id)
        for observer in self._observers:
            try:
                observer.on_heartbeat(rt.node_id, hb, now)
            except Exception:  # an observer's bug must not stop ingest
                log.exception("heartbeat observer failed for %s", rt.node_id)
        if now - rt.last_sample_ms >= self.settings.history_sample_s * 1000:
            rt.last_sample_ms = now
            if len(self.batch.samples) < MAX_BACKLOG_SAMPLES:
                self.batch.samples.append(
                    {
                        "node_id": rt.node_id,
                        "at_ms": now,
                        "rssi_dbm": hb.rssi_dbm,
                        "temp_c": hb.temp_c,
                        "battery_v": hb.battery_v,
                        "volume": hb.volume,
                        "amp": hb.amp,
                        "speakers_ok": hb.speakers_ok,
                        "speakers_total": hb.speakers_total,
                        "power": hb.power,
                    }
                )
            else:
                self.writer.dropped_samples += 1

    def _on_status(self, rt: NodeRuntime, payload: bytes, now: int) -> None:
        st = decode_status(payload)
        self._held_wills.pop(rt.node_id, None)  # a newer status replaces a held will
        if not st.online and st.reason == "lost":
            if rt.grace_ms is not None and rt.state in (NodeState.ONLINE, NodeState.DEGRADED):
                due = rt.grace_ms + heartbeat_timeout_ms(rt.heartbeat_s)
                self._held_wills[rt.node_id] = (due, None, payload)
                return
            if self.will_hold_ms > 0:
                self._held_wills[rt.node_id] = (now + self.will_hold_ms, now, payload)
                return
        self._apply_status(rt, st, now)

    def release_wills(self, now: int | None = None) -> None:
        """Apply held wills whose hold has passed while the controller stayed connected."""
        if not self._held_wills or not self.watching:
            return
        now = now if now is not None else now_ms()
        due = [(n, at, p) for n, (when, at, p) in self._held_wills.items() if when <= now]
        for node_id, at, payload in due:
            del self._held_wills[node_id]
            rt = self.fleet.nodes.get(node_id)
            if rt is not None:
                # Dated when received; a will held through a grace is dated by the
                # time-out rule instead (last heard + 3 x heartbeat_s, FleetState.apply).
                self._apply_status(
                    rt, decode_status(payload), max(now if at is None else at, rt.since_ms)
                )

    def _apply_status(self, rt: NodeRuntime, st: Status, now: int) -> None:
        rt.status_online = st.online
        if st.online:
            rt.last_heard_ms = now  # grace: first heartbeat due within 3 x heartbeat_s
            self._expect(rt)
            rt.boot_id = st.boot_id or rt.boot_id
            rt.fw = st.fw or rt.fw
            rt.offline_cause = ""
            cause = "status_online"
        else:
            rt.offline_cause = (
                "will_lost" if st.reason == "lost" else f"status_{st.reason or 'offline'}"
            )
            cause = rt.offline_cause
        self._update(rt, now, cause)
        self._dirty.add(rt.node_id)

    def _on_event(self, rt: NodeRuntime, payload: bytes, now: int) -> None:
        ev = decode_event(payload)
        if self.event_guard.seen_before(rt.node_id, ev):
            raise Rejection("duplicate_event", f"{ev.type} already received from this node")
        self.batch.events.append(
            {
                "node_id": rt.node_id,
                "at_ms": now,
                "type": ev.type,
                "payload": ev.model_dump(mode="json"),
            }
        )
        for observer in self._observers:
            try:
                observer.on_event(rt.node_id, ev, now)
            except Exception:  # an observer's bug must not stop ingest
                log.exception("event observer failed for %s", rt.node_id)

    def _update(self, rt: NodeRuntime, now: int, cause: str) -> None:
        tr = self.fleet.apply(rt, now, cause)
        if tr is not None:
            self._record(tr)

    def _record(self, tr: Transition) -> None:
        self.batch.transitions.append(tr)
        self._dirty.add(tr.node_id)
        for observer in self._observers:
            try:
                observer.on_transition(tr)
            except Exception:  # an observer's bug must not stop ingest
                log.exception("transition observer failed for %s", tr.node_id)

    def _reject(self, reason: str, detail: str, node_id: str | None, now: int) -> None:
        self.rejected[reason] += 1
        entry = self.batch.rejected.setdefault(reason, [0, detail, now])
        entry[0] += 1
        entry[1], entry[2] = detail, now
        self.last_rejections.append(
            {"reason": reason, "detail": detail, "node_id": node_id, "at_ms": now}
        )
        if len(self.last_rejections) > 200:
            del self.last_rejections[:100]
        log.debug("rejected %s from %s: %s", reason, node_id, detail)

    def _sight_pending(self, node_id: str, channel: Channel, payload: bytes, now: int) -> None:
        if not NODE_ID_RE.match(node_id):
            return
        p = self.batch.pending.get(node_id)
        if p is None and len(self.batch.pending) >= self.writer.max_pending:
            self.writer.dropped_pending += 1  # an open broker: ids invented without bound
            return
        text = payload[:2000].decode("utf-8", errors="replace")
        if p is None:
            self.batch.pending[node_id] = PendingSighting(now, now, 1, str(channel), text)
        else:
            p.last_seen_ms, p.messages = now, p.messages + 1
            p.channel, p.payload = str(channel), text

    # ------------------------------------------------------------------ sweeper and flush

    def sweep(self, now: int | None = None) -> int:
        """Turn silent nodes offline (no heartbeat for 3 x heartbeat_s). Returns how many.

        Only nodes whose queued deadline has come are looked at: at 100,000 nodes a scan of
        the whole fleet every 0.5 s would cost a third of a core."""
        now = now if now is not None else now_ms()
        changed = 0
        if not self.watching:
            return 0
        self.release_wills(now)
        heap, owns, nodes = self._deadlines, self.owns, self.fleet.nodes
        while heap and heap[0][0] <= now:
            _, node_id = heapq.heappop(heap)
            rt = nodes.get(node_id)
            if rt is None:
                continue
            rt.sweep_queued = False
            if rt.state not in (NodeState.ONLINE, NodeState.DEGRADED) or not owns(node_id):
                continue  # queued again when it is next heard (or handed to us)
            heard = rt.heard_ms()
            if heard is not None and heard + heartbeat_timeout_ms(rt.heartbeat_s) >= now:
                self._expect(rt)  # heard since it was queued: wait for its new deadline
                continue
            tr = self.fleet.apply(rt, now, "heartbeat_timeout")
            if tr is not None:
                self._record(tr)
                changed += 1
        return changed

    def take_batch(self) -> Batch:
        for node_id in self._dirty:
            rt = self.fleet.nodes.get(node_id)
            if rt is not None:
                self.batch.live[node_id] = live_row(rt)
        self._dirty.clear()
        batch, self.batch = self.batch, Batch()
        return batch

    async def flush(self) -> bool:
        """Write what accumulated; on failure keep it for the next flush. True on success."""
        async with self._flush_lock:
            batch = self.take_batch()
            if batch.empty():
                return True
            try:
                await asyncio.to_thread(self.writer.write, batch)
                return True
            except Exception as exc:
                self.writer.flush_errors += 1
                self.writer.last_error = f"{type(exc).__name__}: {exc}"[:300]
                log.error("Không ghi được dữ liệu đo (sẽ thử lại): %s", self.writer.last_error)
                self.batch.merge_older(batch)
                return False


class NodeEventGuard:
    """Per-node limits on events, the one uplink whose cost grows with its volume (each is
    stored in the event log and handed to the dispatcher): a token bucket (``rate_per_s``
    sustained, ``burst`` at once) and a bounded memory of the last ``keep`` event keys, so a
    node repeating "started" for one broadcast 20,000 times (distinct only by ``at``) is
    counted and dropped instead of stalling the controller. Heartbeats and status overwrite
    the node's state and are not limited here."""

    def __init__(self, rate_per_s: float, burst: int, keep: int = 64) -> None:
        self.rate_per_ms = rate_per_s / 1000
        self.burst = float(burst)
        self.keep = keep
        self._buckets: dict[str, tuple[float, int]] = {}
        self._keys: dict[str, dict[tuple[object, ...], None]] = {}

    def allow(self, node_id: str, now: int) -> bool:
        tokens, last = self._buckets.get(node_id, (self.burst, now))
        tokens = min(self.burst, tokens + max(0, now - last) * self.rate_per_ms)
        ok = tokens >= 1
        self._buckets[node_id] = (tokens - 1 if ok else tokens, now)
        return ok

    @staticmethod
    def key(ev: NodeEvent) -> tuple[object, ...] | None:
        """What makes an event new: a playback phase of a broadcast, an answer to a command.
        Faults and self-tests may repeat and are only rate-limited."""
        if isinstance(ev, PlaybackEvent):
            return ("playback", ev.broadcast_id, ev.phase)
        if isinstance(ev, CmdAck):
            return ("cmd_ack", ev.cmd_id, ev.ok)
        return None

    def seen_before(self, node_id: str, ev: NodeEvent) -> bool:
        key = self.key(ev)
        if key is None:
            return False
        keys = self._keys.setdefault(node_id, {})
        if key in keys:
            return True
        keys[key] = None
        if len(keys) > self.keep:
            del keys[next(iter(keys))]  # oldest first (dicts keep insertion order)
        return False
