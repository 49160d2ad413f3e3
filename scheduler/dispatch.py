"""Dispatch: turn one slot of a broadcast into commands to its nodes, and follow what each node
does with it (proof of play).

Per docs/protocol.md: ``play`` goes out a lead time ahead with ``start_at`` and
``expires_at``, so every node fetches the file first and starts on its own clock together
with the others; live broadcasts get ``stream``; cancelling sends ``stop``.

Idempotence: the slot becomes an ``Airing`` row (unique on broadcast and slot) and one
``AiringTarget`` per node with its own ``cmd_id``, committed *before* anything is published.
A second dispatch of the same slot (a restart, a second process, a retried job) finds the row
and only re-sends what was never sent, with the same ``cmd_id`` (a node ignores a command id
it has seen), so a slot never plays twice.

Events arrive synchronously from the ingest (``on_event``); they update in-memory state of
the active airings at once (O(1) dictionary work) and are written to the database in batches
by ``flush``. After a slot ends (+ a margin) the airing is judged: targets that never
acknowledged become ``never_acked``, and the airing is aired / partly_aired / missed.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, cast

from sqlalchemy import Row, insert, select, update
from sqlalchemy.exc import IntegrityError

from controller.command_publisher import CommandPublisher, new_cmd_id
from controller.fleet_state import Transition
from controller.ingest import Ingest, IngestObserver
from controller.models import NodeEventLog
from loa.db import Database, core_table
from loa.protocol import (
    CmdAck,
    NodeEvent,
    PlaybackEvent,
    PlayCmd,
    Priority,
    Rejection,
    StopCmd,
    StreamCmd,
    Tone,
    decode_event,
)
from loa.settings import Settings
from loa.timeutil import now_ms
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.lifecycle import refresh_broadcast_status
from scheduler.models import Airing, AiringTarget, Broadcast
from scheduler.outcomes import PHASE_RANK, TERMINAL_PHASES, airing_status
from scheduler.targets import resolve_nodes
from scheduler.workflow import OPEN_STATUSES, LiveLike

if TYPE_CHECKING:
    from broadcasts.store import ContentMeta

log = logging.getLogger("loa.dispatch")

ONLINE_STATES = ("online", "degraded")
EARLY_EVENTS_MAX = 200_000
MSG_NEVER_ACKED = "Cụm loa không phản hồi lệnh phát"
MSG_NOT_STARTED = "Cụm loa nhận lệnh nhưng không bắt đầu phát trong khung giờ"
MSG_CONTENT_GONE = "Nội dung âm thanh không còn trong kho"
MSG_LIVE_DOWN = "Máy chủ phát trực tiếp (Icecast) không chạy; không có âm thanh để phát"


def wire_broadcast_id(broadcast_id: int, airing_id: int) -> str:
    """The ``broadcast_id`` a node sees and reports back: one per airing, so a playback event
    maps to exactly one slot even for a recurring broadcast."""
    return f"b{broadcast_id}-a{airing_id}"


def _event_key(record: dict[str, Any]) -> tuple[object, ...]:
    """What a target's event record is evidence of (see ``Dispatcher._known``). A flagged
    (implausible) record does not hide a plausible one that comes later."""
    if record.get("type") == "cmd_ack":
        return ("cmd_ack", bool(record.get("ok")))
    return ("playback", record.get("phase"), bool(record.get("implausible")))


# Why a playback event is not taken as proof of play (kept on the target, flagged).
IMPLAUSIBLE = {
    "no_fetch": "bắt đầu phát khi chưa tải nội dung (không có 'fetched' hay bản lưu sẵn)",
    "off_schedule": "thời điểm bắt đầu phát quá xa giờ phát đã định",
    "not_started": "báo phát xong khi chưa bắt đầu phát",
    "before_start": "báo phát xong trước lúc bắt đầu phát",
}


@dataclass(slots=True)
class TargetState:
    id: int
    airing_id: int
    node_id: str
    cmd_id: str
    phase: str = "pending"
    started_at_ms: int | None = None
    finished_at_ms: int | None = None
    lateness_ms: int | None = None
    error: str | None = None
    events: list[dict[str, Any]] = field(default_factory=list)
    cmd: PlayCmd | StreamCmd | None = None
    sends: int = 0
    last_sent_ms: int = 0
    # Node clock minus controller clock when the command was sent: start_at goes out in the
    # node's clock, and its playback times come back in it.
    skew_ms: int = 0
    # Queued or in flight in ``_publish``: still "pending" until its PUBACK, and must not be
    # taken for unsent by housekeeping (a 5,000-node dispatch takes seconds to publish).
    publishing: bool = False


@dataclass(slots=True)
class ActiveAiring:
    id: int
    broadcast_id: int
    wire_id: str
    priority: str
    start_at_ms: int  # reference for lateness (the dispatch time for "at once")
    ends_ms: int
    is_stream: bool
    # Streams from this process's Icecast (not an outside stream_url): when that server is
    # down nothing can play, so the airing is closed at once instead of held to its end.
    live_mount: str | None = None
    targets: dict[str, TargetState] = field(default_factory=dict)  # by node id
    stop_sent: bool = False
    cancelled: bool = False
    # Its ``play`` carries a node-made warning tone: a ``started`` with ``tone: true`` may come
    # before the speech is fetched (the tone needs no download).
    toned: bool = False


@dataclass(frozen=True, slots=True)
class DispatchResult:
    airing_id: int | None
    nodes: int
    published: int
    created: bool


class Dispatcher(IngestObserver):
    def __init__(
        self,
        settings: Settings,
        db: Database,
        commands: CommandPublisher,
        *,
        content: ContentGateway | None = None,
        sched: SchedulerSettings | None = None,
        live: LiveLike | None = None,
        base_url: str | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.settings = settings
        self.db = db
        self.commands = commands
        self.content = content
        self.sched = sched or SchedulerSettings()
        self.live = live
        self.base_url = (
            base_url
            or settings.public_base_url
            or f"http://{settings.http_host}:{settings.http_port}"
        ).rstrip("/")
        self.clock = clock
        self._airings: dict[int, ActiveAiring] = {}
        self._by_cmd: dict[str, TargetState] = {}
        self._by_wire: dict[tuple[str, str], TargetState] = {}
        self._dirty: dict[int, TargetState] = {}
        self._flush_lock = asyncio.Lock()
        self._slot_locks: dict[tuple[int, int], asyncio.Lock] = {}
        self._tasks: set[asyncio.Task[object]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._ingest: Ingest | None = None
        # Events that arrive before ``recover`` ran (see ``on_event``).
        self._ready = False
        self._early: deque[tuple[str, NodeEvent, int]] = deque(maxlen=EARLY_EVENTS_MAX)
        self.last_dispatch: dict[str, int] = {}
        self.stats = {
            "published": 0,
            "resent": 0,
            "events": 0,
            "unmatched_events": 0,
            "duplicate_events": 0,
            "implausible_events": 0,
        }

    # ------------------------------------------------------------------ wiring

    def observe(self, ingest: Ingest) -> None:
        """Hear ``ingest``'s events and transitions (proof of play, resends) and read its
        fleet state (who is online, whose clock is skewed)."""
        ingest.observe(self)
        self._ingest = ingest

    def start(self) -> None:
        """Background flush/finalise loop (call from the event loop)."""
        if self._runner is None:
            self._runner = asyncio.create_task(self.run(), name="loa-dispatch")

    async def stop(self) -> None:
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._runner
            self._runner = None
        for t in list(self._tasks):
            t.cancel()
        for t in list(self._tasks):
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        await self.flush()

    def forget(self) -> None:
        """Drop the airings held in memory: another controller leads now, and when this one
        leads again ``recover`` reloads what is still running from the database."""
        self._airings.clear()
        self._by_cmd.clear()
        self._by_wire.clear()
        self._ready = False
        self._early.clear()

    async def run(self) -> None:
        """Flush often; judge ended airings and close streams at the housekeeping pace."""
        flush_s = self.sched.dispatch_flush_s
        house_every = max(1, round(self.sched.housekeeping_s / flush_s))
        tick = 0
        while True:
            await asyncio.sleep(flush_s)
            tick += 1
            try:
                await self.flush()
                if tick % house_every == 0:
                    await self.housekeeping()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("dispatch housekeeping failed")

    async def housekeeping(self) -> None:
        now = self.clock()
        self._fail_dead_live()
        await self._close_streams(now)
        await self._retry_unsent(now)
        await self._retry_unacked(now)
        await self.finalize_due(now)

    def _spawn(self, coro: Coroutine[Any, Any, object]) -> None:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    # ------------------------------------------------------------------ dispatch

    async def dispatch(self, broadcast_id: int, slot_ms: int) -> DispatchResult:
        """Send one slot of a scheduled broadcast to its nodes (idempotent on the slot)."""
        # One lock per slot: the database makes a slot unique; the lock only spares a second
        # in-process attempt the work. A fleet-wide dispatch never holds up an emergency.
        key = (broadcast_id, slot_ms)
        lock = self._slot_locks.setdefault(key, asyncio.Lock())
        try:
            async with lock:
                return await self._dispatch(broadcast_id, slot_ms)
        finally:
            if not lock.locked() and self._slot_locks.get(key) is lock:
                del self._slot_locks[key]

    async def _dispatch(self, broadcast_id: int, slot_ms: int) -> DispatchResult:
        now = self.clock()
        try:
            created = await asyncio.to_thread(self._create_airing, broadcast_id, slot_ms, now)
        except IntegrityError:
            created = None  # another dispatcher made it first: resume below
        if created is None:
            airing_id = await asyncio.to_thread(self._find_airing, broadcast_id, slot_ms)
            if airing_id is None:
                return DispatchResult(None, 0, 0, False)
            if airing_id not in self._airings:
                for loaded in await asyncio.to_thread(self._read_active, [airing_id]):
                    if loaded.id not in self._airings:  # another task may have got there
                        self._register(loaded)
            active = self._airings.get(airing_id)
            if active is None:
                return DispatchResult(airing_id, 0, 0, False)
            unsent = [t for t in active.targets.values() if t.phase == "pending"]
            published = await self._publish(unsent)
            return DispatchResult(airing_id, len(active.targets), published, False)
        active = created
        prepared = self.clock()
        self._register(active)
        published = await self._publish(list(active.targets.values()))
        done = self.clock()
        self.last_dispatch = {
            "airing_id": active.id,
            "nodes": len(active.targets),
            "prepare_ms": prepared - now,
            "publish_ms": done - prepared,
        }
        log.info(
            "Đã gửi lệnh phát %s tới %d/%d cụm loa (chuẩn bị %d ms, gửi %d ms)",
            active.wire_id,
            published,
            len(active.targets),
            prepared - now,
            done - prepared,
        )
        return DispatchResult(active.id, len(active.targets), published, True)

    def _live_down(self, b: Broadcast) -> bool:
        return bool(
            b.stream_mount and self.live is not None and not getattr(self.live, "running", True)
        )

    def _fail_dead_live(self) -> None:
        """Issue 18: the live server is down, so no cluster that has not started can play;
        they are failed now (and the airing judged at once, ``_all_done``), which frees the
        slot, rather than waited for until the planned end (30 minutes by default)."""
        if self.live is None or getattr(self.live, "running", True):
            return
        for a in self._airings.values():
            if not a.live_mount:
                continue
            for ts in a.targets.values():
                if PHASE_RANK[ts.phase] < PHASE_RANK["started"]:
                    ts.phase = "failed"
                    ts.error = ts.error or MSG_LIVE_DOWN
                    self._dirty[ts.id] = ts

    def _find_airing(self, broadcast_id: int, slot_ms: int) -> int | None:
        with self.db.session() as s:
            return s.scalar(
                select(Airing.id).where(
                    Airing.broadcast_id == broadcast_id, Airing.slot_ms == slot_ms
                )
            )

    def _create_airing(self, broadcast_id: int, slot_ms: int, now: int) -> ActiveAiring | None:
        with self.db.session() as s:
            b = s.get(Broadcast, broadcast_id)
            if b is None or b.status != "scheduled":
                return None
            if (
                s.scalar(
                    select(Airing.id).where(
                        Airing.broadcast_id == broadcast_id, Airing.slot_ms == slot_ms
                    )
                )
                is not None
            ):
                return None
            meta = None
            if not b.stream_url:
                meta = self.content.get(b.content_id) if (self.content and b.content_id) else None
            immediate = b.priority == "emergency"
            if immediate:
                start_at, ref = 0, now
                ends = now + b.duration_ms + int(self.sched.emergency_fetch_allowance_s * 1000)
            else:
                late_start = now + int(self.sched.late_start_delay_s * 1000)
                start_at = slot_ms if slot_ms >= now else late_start
                ref, ends = start_at, start_at + b.duration_ms
            airing = Airing(
                broadcast_id=b.id,
                slot_ms=slot_ms,
                duration_ms=b.duration_ms,
                language=b.language,
                priority=b.priority,
                status="dispatched",
                dispatched_ms=now,
                start_at_ms=ref,
                ends_ms=ends,
            )
            s.add(airing)
            s.flush()
            nodes = resolve_nodes(s, b.targets)
            wire = wire_broadcast_id(b.id, airing.id)
            phase, error = "pending", None
            if not b.stream_url and meta is None:
                phase, error = "failed", MSG_CONTENT_GONE
            elif self._live_down(b):
                phase, error = "failed", MSG_LIVE_DOWN
            if nodes:
                s.execute(
                    insert(core_table(AiringTarget)),
                    [
                        {
                            "airing_id": airing.id,
                            "node_id": n.node_id,
                            "village_id": n.village_id,
                            "commune_id": n.commune_id,
                            "cmd_id": new_cmd_id(),
                            "phase": phase,
                            "error": error,
                            "updated_ms": now,
                            "events": [],
                        }
                        for n in nodes
                    ],
                )
            active = ActiveAiring(
                id=airing.id,
                broadcast_id=b.id,
                wire_id=wire,
                priority=b.priority,
                start_at_ms=ref,
                ends_ms=ends,
                is_stream=bool(b.stream_url),
                live_mount=b.stream_mount if self.live is not None else None,
                toned=bool(b.tone) and not b.stream_url,
            )
            rows = s.execute(
                select(AiringTarget.id, AiringTarget.node_id, AiringTarget.cmd_id).where(
                    AiringTarget.airing_id == airing.id
                )
            ).all()
            urls = self._urls(b, meta, [r[1] for r in rows]) if phase == "pending" else {}
            template = self._template(b, meta, wire, start_at, ends, now) if urls else None
            for tid, node_id, cmd_id in rows:
                assert cmd_id is not None  # every row was inserted with one just above
                ts = TargetState(
                    id=tid,
                    airing_id=airing.id,
                    node_id=node_id,
                    cmd_id=cmd_id,
                    phase=phase,
                    error=error,
                )
                if template is not None:
                    ts.cmd = self._command(template, urls[node_id], cmd_id)
                active.targets[node_id] = ts
            if phase == "failed" or not nodes:
                airing.status = "missed"
                airing.finalized_ms = now
                refresh_broadcast_status(s, b, now, self.sched)
                return None
            return active

    def _urls(self, b: Broadcast, meta: ContentMeta | None, node_ids: list[str]) -> dict[str, str]:
        if b.stream_url:
            url = b.stream_url
            if b.stream_mount and self.live is not None:
                url = self.live.listen_url(b.stream_mount)
            return dict.fromkeys(node_ids, url)
        # Content without a gateway or a meta failed the airing before any URL is asked for.
        assert self.content is not None and meta is not None
        return self.content.node_urls(meta.id, node_ids, self.base_url)

    def _template(
        self,
        b: Broadcast,
        meta: ContentMeta | None,
        wire: str,
        start_at: int,
        expires_at: int,
        now: int,
    ) -> PlayCmd | StreamCmd:
        """The airing's command, validated once; each node gets a copy with its own
        ``cmd_id`` and signed URL (validating thousands of identical commands is waste)."""
        volume = self.sched.emergency_volume if b.priority == "emergency" else b.volume
        priority = cast(Priority, b.priority)  # checked when the broadcast was created
        if b.stream_url:
            return StreamCmd(
                cmd_id="-",
                issued_at=now,
                expires_at=expires_at,
                broadcast_id=wire,
                url="-",
                priority=priority,
                start_at=start_at,
                volume=volume,
            )
        assert meta is not None  # as in _urls
        return PlayCmd(
            cmd_id="-",
            issued_at=now,
            expires_at=expires_at,
            broadcast_id=wire,
            url="-",
            sha256=meta.sha256,
            bytes=meta.bytes,
            duration_ms=meta.duration_ms,
            start_at=start_at,
            priority=priority,
            volume=volume,
            repeat=max(1, b.repeat),
            gap_ms=int(self.sched.repeat_gap_s * 1000),
            tone=Tone.model_validate(b.tone) if b.tone else None,
        )

    @staticmethod
    def _command(template: PlayCmd | StreamCmd, url: str, cmd_id: str) -> PlayCmd | StreamCmd:
        return template.model_copy(update={"cmd_id": cmd_id, "url": url})

    def _register(self, active: ActiveAiring) -> None:
        self._airings[active.id] = active
        for ts in active.targets.values():
            self._by_cmd[ts.cmd_id] = ts
            self._by_wire[(ts.node_id, active.wire_id)] = ts

    def _unregister(self, active: ActiveAiring) -> None:
        self._airings.pop(active.id, None)
        for ts in active.targets.values():
            self._by_cmd.pop(ts.cmd_id, None)
            self._by_wire.pop((ts.node_id, active.wire_id), None)

    async def _publish(self, targets: list[TargetState]) -> int:
        """Publish each target's command, in parallel (bounded). Returns how many went out."""
        # Claimed here, before the first await: a housekeeping pass or a node coming back
        # online while this publish is under way sees them as taken, not as unsent.
        targets = [t for t in targets if t.cmd is not None and not t.publishing]
        if not targets:
            return 0
        for t in targets:
            t.publishing = True
        sem = asyncio.Semaphore(self.sched.publish_concurrency)
        sent = 0

        async def one(ts: TargetState) -> None:
            nonlocal sent
            assert ts.cmd is not None  # filtered above
            try:
                ts.skew_ms = self._clock_skew(ts.node_id)
                cmd = ts.cmd
                if ts.skew_ms and getattr(cmd, "start_at", 0):
                    cmd = cmd.model_copy(
                        update={
                            "start_at": cmd.start_at + ts.skew_ms,
                            "expires_at": (
                                (cmd.expires_at + ts.skew_ms) if cmd.expires_at else None
                            ),
                        }
                    )
                async with sem:
                    try:
                        await self.commands.send(ts.node_id, cmd)
                    except Exception as exc:  # NotConnected, MqttError: retried by housekeeping
                        log.warning("Không gửi được lệnh tới %s: %s", ts.node_id, exc)
                        return
                sent += 1
                ts.sends += 1
                ts.last_sent_ms = self.clock()
                if ts.phase == "pending":
                    ts.phase = "sent"
                    self._dirty[ts.id] = ts
            finally:
                ts.publishing = False

        await asyncio.gather(*(one(t) for t in targets))
        self.stats["published"] += sent
        return sent

    # ------------------------------------------------------------------ events

    def on_event(self, node_id: str, event: NodeEvent, received_ms: int) -> None:
        """Ingest observer: cheap, synchronous, in the event loop.

        Until ``recover`` has reloaded the airings that were running before a restart, events
        are held back: the broker delivers what nodes said while the controller was down as
        soon as it reconnects, and those are exactly the events proof of play needs."""
        if not self._ready:
            if isinstance(event, CmdAck | PlaybackEvent):
                self._early.append((node_id, event, received_ms))
            return
        self._apply_event(node_id, event, received_ms)

    def _apply_event(self, node_id: str, event: NodeEvent, received_ms: int) -> None:
        if isinstance(event, CmdAck):
            ts = self._by_cmd.get(event.cmd_id)
            if ts is None or ts.node_id != node_id:
                return
            self._apply_ack(ts, event, received_ms)
        elif isinstance(event, PlaybackEvent):
            ts = self._by_wire.get((node_id, event.broadcast_id))
            if ts is None:
                self.stats["unmatched_events"] += 1
                return
            self._apply_playback(ts, event, received_ms)
        else:
            return
        self.stats["events"] += 1

    def _known(self, ts: TargetState, record: dict[str, Any]) -> bool:
        """Keyed de-duplication: a target keeps one record per kind of event (an ack ok or
        not, each playback phase), the first one received. A repeat, whether replayed from
        the database after a takeover or sent 20,000 times by a node with a new ``at`` each
        time, is counted and changes nothing, so ``events`` stays a handful of records and
        the target is not rewritten at each flush. The keys are read from ``events`` itself,
        which holds at most ``len(PHASE_RANK) + 2`` records."""
        key = _event_key(record)
        if any(_event_key(r) == key for r in ts.events):
            self.stats["duplicate_events"] += 1
            return True
        return False

    def _apply_ack(self, ts: TargetState, ack: CmdAck, rx: int) -> None:
        record = {"type": "cmd_ack", "ok": ack.ok, "error": ack.error, "ts": ack.ts, "rx": rx}
        if self._known(ts, record):
            return
        ts.events.append(record)
        if ack.ok:
            if PHASE_RANK[ts.phase] < PHASE_RANK["acked"]:
                ts.phase = "acked"
        elif PHASE_RANK[ts.phase] < PHASE_RANK["acked"]:
            ts.phase = "failed"
            ts.error = (ack.error or "refused")[:300]
        self._dirty[ts.id] = ts

    def _apply_playback(self, ts: TargetState, ev: PlaybackEvent, rx: int) -> None:
        record: dict[str, Any] = {
            "type": "playback",
            "phase": ev.phase,
            "at": ev.at,
            "error": ev.error,
            "rx": rx,
        }
        extra = {
            k: v
            for k, v in (ev.model_extra or {}).items()
            if isinstance(v, str | int | float | bool)
        }
        if extra:
            record["extra"] = extra
        at = ev.at - ts.skew_ms  # the node's clock, brought back to the controller's
        reason = self._implausible(ts, ev, at)
        if reason is not None:
            record["implausible"] = reason
        if self._known(ts, record):
            return
        ts.events.append(record)
        self._dirty[ts.id] = ts
        if reason is not None:
            # Evidence, not proof: the target's phase and times are left as they were.
            self.stats["implausible_events"] += 1
            log.warning(
                "Sự kiện phát không hợp lý từ %s cho %s: %s (%s: %s)",
                ts.node_id,
                ev.broadcast_id,
                ev.phase,
                reason,
                IMPLAUSIBLE[reason],
            )
            return
        if ev.phase == "started":
            ts.started_at_ms = at
            active = self._airings.get(ts.airing_id)
            if active is not None:
                ts.lateness_ms = at - active.start_at_ms
        if ev.phase in ("finished", "preempted"):
            ts.finished_at_ms = at
        if ev.phase == "failed":
            ts.error = (ev.error or "failed")[:300]
        if ev.phase == "preempted" and ts.error is None:
            ts.error = "Bị ngắt bởi bản tin ưu tiên cao hơn"
        if PHASE_RANK[ev.phase] > PHASE_RANK[ts.phase] or (
            ts.phase == "started" and ev.phase in ("finished", "preempted", "failed")
        ):
            ts.phase = ev.phase

    def _implausible(self, ts: TargetState, ev: PlaybackEvent, at: int) -> str | None:
        """Proof of play must hang together: a ``started`` needs the media fetched first
        (``fetched``, or ``cached: true`` on the event for a copy the node already had; a live
        stream needs none) and a time near start_at (``proof_tolerance_s`` early, up to the
        slot's end); a ``finished`` needs a plausible ``started`` before it."""
        tolerance = int(self.sched.proof_tolerance_s * 1000)
        active = self._airings.get(ts.airing_id)
        if ev.phase == "started":
            fetched = any(
                r.get("phase") == "fetched" and not r.get("implausible") for r in ts.events
            )
            extra = ev.model_extra or {}
            cached = extra.get("cached") is True
            # The node's own record of the fetch, repeated on the start: the ``fetched`` event
            # may have gone to a controller that died before writing it (a takeover).
            fetched_at = extra.get("fetched_at")
            fetched = fetched or (
                isinstance(fetched_at, int)
                and not isinstance(fetched_at, bool)
                and fetched_at <= ev.at
            )
            # A node-made tone sounds before (and without) the download: its start is proof
            # that the alert sounded; the speech's own outcome follows (finished or failed).
            toned = extra.get("tone") is True and active is not None and active.toned
            if active is not None and not active.is_stream and not (fetched or cached or toned):
                return "no_fetch"
            if active is not None and not (
                active.start_at_ms - tolerance <= at <= active.ends_ms + tolerance
            ):
                return "off_schedule"
        elif ev.phase == "finished":
            if ts.started_at_ms is None:
                return "not_started"
            if at < ts.started_at_ms - tolerance:
                return "before_start"
        return None

    def on_transition(self, transition: Transition) -> None:
        """Ingest observer: a node that comes back gets what it has not acknowledged."""
        node_id = transition.node_id
        if transition.to_state in ONLINE_STATES and transition.from_state not in ONLINE_STATES:
            loop = asyncio.get_running_loop()
            loop.call_later(self.sched.resend_delay_s, lambda: self._spawn(self.resend_to(node_id)))

    async def resend_to(self, node_id: str) -> int:
        now = self.clock()
        due = [
            a.targets[node_id]
            for a in self._airings.values()
            if node_id in a.targets
            and now < a.ends_ms
            and a.targets[node_id].phase in ("pending", "sent")
        ]
        sent = await self._publish(due)
        if sent:
            self.stats["resent"] += sent
            log.info("Gửi lại %d lệnh phát cho %s khi trực tuyến trở lại", sent, node_id)
        return sent

    def _clock_skew(self, node_id: str) -> int:
        """A node's measured clock skew when it is large enough to matter (the ingest flags
        it above ``clock_skew_warn_ms``), else 0: small offsets are network delay."""
        rt = self._ingest.fleet.nodes.get(node_id) if self._ingest is not None else None
        skew = rt.clock_skew_ms if rt is not None and rt.clock_skew_ms is not None else 0
        return skew if abs(skew) > self.settings.clock_skew_warn_ms else 0

    def _is_online(self, node_id: str) -> bool:
        if self._ingest is None:
            return False
        rt = self._ingest.fleet.nodes.get(node_id)
        return rt is not None and str(getattr(rt.state, "value", rt.state)) in ONLINE_STATES

    async def _retry_unacked(self, now: int) -> None:
        """An online node that has not acknowledged gets the same command again (same
        ``cmd_id``, so a node that did get it ignores the copy). This covers a node that
        announced itself online a moment before it subscribed to its command topic, and a
        command lost with a broker restart."""
        every = int(self.sched.ack_retry_s * 1000)
        due = [
            t
            for a in self._airings.values()
            if now < a.ends_ms and not a.cancelled
            for t in a.targets.values()
            if t.phase == "sent"
            and t.cmd is not None
            and t.sends < self.sched.max_sends
            and now - t.last_sent_ms >= every
            and self._is_online(t.node_id)
        ]
        if due:
            sent = await self._publish(due)
            self.stats["resent"] += sent

    async def _retry_unsent(self, now: int) -> None:
        due = [
            t
            for a in self._airings.values()
            if now < a.ends_ms
            for t in a.targets.values()
            if t.phase == "pending" and t.cmd is not None
        ]
        if due:
            await self._publish(due)

    # ------------------------------------------------------------------ persistence

    async def flush(self) -> int:
        async with self._flush_lock:
            if not self._dirty:
                return 0
            batch, self._dirty = self._dirty, {}
            now = self.clock()
            rows = [
                {
                    "id": t.id,
                    "phase": t.phase,
                    "started_at_ms": t.started_at_ms,
                    "finished_at_ms": t.finished_at_ms,
                    "lateness_ms": t.lateness_ms,
                    "error": t.error,
                    "updated_ms": now,
                    "events": list(t.events),
                }
                for t in batch.values()
            ]
            try:
                await asyncio.to_thread(self._write_rows, rows)
            except Exception:
                # Keep them for the next flush: nothing is lost on a busy database.
                for tid, t in batch.items():
                    self._dirty.setdefault(tid, t)
                raise
            return len(rows)

    def _write_rows(self, rows: list[dict[str, Any]]) -> None:
        with self.db.session() as s:
            s.execute(update(AiringTarget), rows)

    async def finalize_due(self, now: int | None = None) -> list[int]:
        """Judge every airing whose slot ended more than the margin ago."""
        now = self.clock() if now is None else now
        margin = int(self.sched.ack_margin_s * 1000)
        due = [a for a in self._airings.values() if now >= a.ends_ms + margin or self._all_done(a)]
        if not due:
            return []
        for a in due:
            for ts in a.targets.values():
                if ts.phase in ("pending", "sent"):
                    ts.phase = "never_acked"
                    ts.error = ts.error or MSG_NEVER_ACKED
                    self._dirty[ts.id] = ts
                elif ts.phase in ("acked", "fetched") and ts.error is None:
                    ts.error = MSG_NOT_STARTED
                    self._dirty[ts.id] = ts
        await self.flush()
        ended_mounts = await asyncio.to_thread(self._write_final, due, now)
        live = self.live
        if ended_mounts and live is not None and hasattr(live, "retire_mount"):
            for mount in ended_mounts:
                try:
                    await asyncio.to_thread(live.retire_mount, mount)
                except Exception as exc:  # the server is down: nothing to retire there
                    log.warning("Không gỡ được điểm phát %s khỏi Icecast: %s", mount, exc)
        for a in due:
            self._unregister(a)
        return [a.id for a in due]

    @staticmethod
    def _all_done(a: ActiveAiring) -> bool:
        """Every node has told how it ended: nothing more to wait for."""
        return bool(a.targets) and all(t.phase in TERMINAL_PHASES for t in a.targets.values())

    def _write_final(self, airings: list[ActiveAiring], now: int) -> list[str]:
        """Judge the airings; returns the live mounts whose broadcast is now over (their
        source password is withdrawn from Icecast: nobody may go on air there any more)."""
        ended: list[str] = []
        with self.db.session() as s:
            touched: set[int] = set()
            for a in airings:
                row = s.get(Airing, a.id)
                if row is None:
                    continue
                row.status = (
                    "cancelled"
                    if a.cancelled
                    else airing_status(t.phase for t in a.targets.values())
                )
                row.finalized_ms = now
                touched.add(a.broadcast_id)
            s.flush()
            for bid in touched:
                b = s.get(Broadcast, bid)
                if b is not None:
                    refresh_broadcast_status(s, b, now, self.sched)
                    if b.stream_mount and b.status not in OPEN_STATUSES:
                        ended.append(b.stream_mount)
        return ended

    async def recover(self) -> int:
        """After a restart: take back the airings still running and send what never went."""
        ids = await asyncio.to_thread(self._unfinished_airings)
        fresh = [i for i in ids if i not in self._airings]
        if fresh:
            for loaded in await asyncio.to_thread(self._read_active, fresh):
                if loaded.id not in self._airings:
                    self._register(loaded)
        if fresh:
            # What the thread reads is taken from the loop's dicts here, not in the thread.
            followed = [a for i in fresh if (a := self._airings.get(i)) is not None]
            nodes = sorted({n for a in followed for n in a.targets})
            for node_id, event, received_ms in await asyncio.to_thread(
                self._stored_events, [a.id for a in followed], nodes
            ):
                self._apply_event(node_id, event, received_ms)
        self._ready = True
        early, self._early = self._early, deque(maxlen=EARLY_EVENTS_MAX)
        for node_id, event, received_ms in early:
            self._apply_event(node_id, event, received_ms)
        now = self.clock()
        pending = [
            t
            for i in fresh
            if (a := self._airings.get(i)) and now < a.ends_ms
            for t in a.targets.values()
            if t.phase == "pending"
        ]
        await self._publish(pending)
        return len(fresh)

    def _stored_events(
        self, airing_ids: list[int], nodes: list[str]
    ) -> list[tuple[str, NodeEvent, int]]:
        """Acks and playback events the ingest stored for these airings' nodes since they
        were dispatched. With several controllers, what nodes said while no controller led
        was stored by whichever took it; the new leader completes proof of play from here.
        Applying one twice changes nothing (``_apply_ack`` / ``_apply_playback``)."""
        if not airing_ids:
            return []
        with self.db.session() as s:
            since = min(
                s.scalar(select(Airing.dispatched_ms).where(Airing.id == i)) or 0
                for i in airing_ids
            )
            rows: list[Row[str, int, dict[str, Any]]] = []
            for i in range(0, len(nodes), 900):  # SQLite's bound-parameter limit
                rows += s.execute(
                    select(NodeEventLog.node_id, NodeEventLog.at_ms, NodeEventLog.payload).where(
                        NodeEventLog.node_id.in_(nodes[i : i + 900]),
                        NodeEventLog.at_ms >= since,
                        NodeEventLog.type.in_(("cmd_ack", "playback")),
                    )
                ).all()
        out = []
        for node_id, at_ms, payload in sorted(rows, key=lambda r: r[1]):
            try:
                out.append((node_id, decode_event(json.dumps(payload).encode()), at_ms))
            except Rejection:  # not a valid event (stored by an older version): skip it
                continue
        return out

    def _unfinished_airings(self) -> list[int]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Airing.id).where(
                        Airing.status == "dispatched", Airing.finalized_ms.is_(None)
                    )
                )
            )

    def _read_active(self, airing_ids: list[int]) -> list[ActiveAiring]:
        """Airings still being followed, rebuilt from the database. Runs in a worker thread
        and only *reads*: the loop iterates ``_airings``, so the caller registers the result
        there (``_register``), never this thread."""
        out: list[ActiveAiring] = []
        with self.db.session() as s:
            for aid in airing_ids:
                a = s.get(Airing, aid)
                if a is None or a.status != "dispatched" or a.finalized_ms is not None:
                    continue
                b = s.get(Broadcast, a.broadcast_id)
                if b is None:
                    continue
                wire = wire_broadcast_id(b.id, a.id)
                meta = None
                if not b.stream_url and self.content is not None and b.content_id:
                    meta = self.content.get(b.content_id)
                start_at = 0 if b.priority == "emergency" else (a.start_at_ms or a.slot_ms)
                active = ActiveAiring(
                    id=a.id,
                    broadcast_id=b.id,
                    wire_id=wire,
                    priority=b.priority,
                    start_at_ms=a.start_at_ms or a.slot_ms,
                    ends_ms=a.ends_ms or a.slot_ms + b.duration_ms,
                    is_stream=bool(b.stream_url),
                    live_mount=b.stream_mount if self.live is not None else None,
                    toned=bool(b.tone) and not b.stream_url,
                )
                rows = s.scalars(select(AiringTarget).where(AiringTarget.airing_id == a.id)).all()
                urls = (
                    self._urls(b, meta, [t.node_id for t in rows])
                    if meta is not None or b.stream_url
                    else {}
                )
                template = (
                    self._template(
                        b, meta, wire, start_at, active.ends_ms, a.dispatched_ms or self.clock()
                    )
                    if urls
                    else None
                )
                for t in rows:
                    ts = TargetState(
                        id=t.id,
                        airing_id=a.id,
                        node_id=t.node_id,
                        cmd_id=t.cmd_id or new_cmd_id(),
                        phase=t.phase,
                        started_at_ms=t.started_at_ms,
                        finished_at_ms=t.finished_at_ms,
                        lateness_ms=t.lateness_ms,
                        error=t.error,
                        events=list(t.events or []),
                    )
                    if template is not None:
                        ts.cmd = self._command(template, urls[t.node_id], ts.cmd_id)
                    active.targets[t.node_id] = ts
                out.append(active)
        return out

    # ------------------------------------------------------------------ stop, streams

    async def cancel_broadcast(self, broadcast_id: int) -> int:
        """Stop a cancelled broadcast on every node that has it. Its airings stay followed
        until the nodes confirm (or the margin passes), so the record shows who had already
        played what, and are then closed as ``cancelled``."""
        active = [a for a in self._airings.values() if a.broadcast_id == broadcast_id]
        stopped = 0
        now = self.clock()
        for a in active:
            a.cancelled = True
            a.ends_ms = min(a.ends_ms, now)
            stopped += await self._send_stop(a)
        return stopped

    async def _send_stop(self, a: ActiveAiring) -> int:
        now = self.clock()
        a.stop_sent = True
        targets = [t for t in a.targets.values() if t.phase not in ("pending", "failed")]
        sem = asyncio.Semaphore(self.sched.publish_concurrency)
        sent = 0

        async def one(ts: TargetState) -> None:
            nonlocal sent
            async with sem:
                try:
                    await self.commands.send(
                        ts.node_id,
                        StopCmd(cmd_id=new_cmd_id(), issued_at=now, broadcast_id=a.wire_id),
                    )
                    sent += 1
                except Exception as exc:
                    log.warning("Không gửi được lệnh dừng tới %s: %s", ts.node_id, exc)

        await asyncio.gather(*(one(t) for t in targets))
        return sent

    async def _close_streams(self, now: int) -> None:
        """A live slot ends at its planned length: nodes are told to stop listening."""
        for a in list(self._airings.values()):
            if a.is_stream and not a.stop_sent and now >= a.ends_ms:
                await self._send_stop(a)

    # ------------------------------------------------------------------ introspection

    def active_airings(self) -> list[ActiveAiring]:
        return list(self._airings.values())
