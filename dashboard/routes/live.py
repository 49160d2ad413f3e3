"""Live fleet updates for the technician's page, as Server-Sent Events.

One ``FleetWatcher`` per app polls the database once a second (``NodeLive`` is written by the
ingest, possibly in another process, so the database is the one place every process shares)
and fans the *changes* out to every open stream, each filtered to its user's communes. SSE
rather than WebSocket: it is one-way, plain HTTP, goes through proxies, and the browser's
``EventSource`` reconnects by itself on a weak link.

Events: ``hello`` (sent on connect; the page (re)loads its table then), ``counts`` (nodes by
state, when they change), ``nodes`` (list of changed nodes), ``alarms`` (alarm list changed:
fetch ``/api/v1/alarms`` again). A comment line every 15 s keeps proxies from closing it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Literal

from fastapi import APIRouter, Depends, FastAPI, Request
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, Field
from sqlalchemy import func, select

from controller.alarms import Alarm
from controller.models import NodeLive
from dashboard.models import User
from dashboard.security import current_user, scope_commune_ids
from loa.db import Database
from loa.timeutil import format_datetime
from registry.models import Node, Village

log = logging.getLogger(__name__)
router = APIRouter(prefix="/api/v1", tags=["live"])

STATES = ("online", "degraded", "offline", "unknown")
KEEPALIVE_S = 15.0
# A stream ends after this long; EventSource reconnects at once. Bounds how long a server
# shutdown can be held up by an open stream and recycles stale scopes (a disabled user).
MAX_STREAM_S = 300.0


@dataclass(frozen=True, slots=True)
class NodeView:
    state: str
    reasons: str
    available: bool
    since_ms: int | None
    commune_id: int | None

    def as_json(self, node_id: str) -> dict:
        return {
            "id": node_id,
            "state": self.state,
            "available": self.available,
            "reasons": [r for r in self.reasons.split(",") if r],
            "since": format_datetime(self.since_ms) if self.since_ms else None,
            "commune_id": self.commune_id,
        }


@dataclass(eq=False)  # identity: each open stream is its own subscriber
class Subscriber:
    scope: frozenset[int] | None
    queue: asyncio.Queue = field(default_factory=lambda: asyncio.Queue(maxsize=50))
    overflowed: bool = False

    def sees(self, commune_id: int | None) -> bool:
        return self.scope is None or commune_id in self.scope


class FleetWatcher:
    def __init__(self, db: Database, interval_s: float = 1.0) -> None:
        self.db = db
        self.interval_s = interval_s
        self.nodes: dict[str, NodeView] = {}
        self.alarm_version: tuple = ()
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task | None = None
        self._ready = asyncio.Event()
        self.polls = 0

    # ------------------------------------------------------------------ polling

    def _poll(self) -> tuple[dict[str, NodeView], tuple]:
        with self.db.session() as s:
            rows = s.execute(
                select(
                    Node.id,
                    Village.commune_id,
                    NodeLive.state,
                    NodeLive.reasons,
                    NodeLive.available,
                    NodeLive.since_ms,
                )
                .outerjoin(NodeLive, NodeLive.node_id == Node.id)
                .outerjoin(Village, Village.id == Node.village_id)
                .where(Node.retired_ms.is_(None))
            ).all()
            version = tuple(
                s.execute(
                    select(
                        func.count(),
                        func.max(Alarm.id),
                        func.max(Alarm.cleared_ms),
                        func.max(Alarm.acked_ms),
                    )
                ).one()
            )
        nodes = {
            nid: NodeView(state or "unknown", reasons or "", bool(avail), since, commune)
            for nid, commune, state, reasons, avail, since in rows
        }
        return nodes, version

    async def _run(self) -> None:
        while True:
            try:
                nodes, version = await asyncio.to_thread(self._poll)
                self._publish(nodes, version)
                self.polls += 1
                self._ready.set()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("live fleet poll failed")
            await asyncio.sleep(self.interval_s)

    def _publish(self, nodes: dict[str, NodeView], version: tuple) -> None:
        first = not self._ready.is_set()
        changed = {nid: v for nid, v in nodes.items() if self.nodes.get(nid) != v}
        removed = set(self.nodes) - set(nodes)
        alarms_changed = version != self.alarm_version
        self.nodes, self.alarm_version = nodes, version
        if first:
            return
        for sub in list(self.subscribers):
            events: list[tuple[str, object]] = []
            mine = [v.as_json(nid) for nid, v in changed.items() if sub.sees(v.commune_id)]
            if mine or removed:
                events.append(("counts", self.counts(sub.scope)))
            if mine:
                events.append(("nodes", mine))
            if alarms_changed:
                events.append(("alarms", {"version": list(version)}))
            for ev in events:
                try:
                    sub.queue.put_nowait(ev)
                except asyncio.QueueFull:
                    sub.overflowed = True  # a slow client: tell it to reload instead

    def counts(self, scope: frozenset[int] | None, commune_id: int | None = None) -> dict:
        c: Counter[str] = Counter()
        for v in self.nodes.values():
            if (scope is None or v.commune_id in scope) and (
                commune_id is None or v.commune_id == commune_id
            ):
                c[v.state] += 1
        out = {st: c.get(st, 0) for st in STATES}
        out["total"] = sum(c.values())
        return out

    # ------------------------------------------------------------------ subscribers

    async def subscribe(self, scope: frozenset[int] | None) -> Subscriber:
        if self._task is None or self._task.done():
            self._ready = asyncio.Event()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="live-fleet")
        sub = Subscriber(scope)
        self.subscribers.add(sub)
        await asyncio.wait_for(self._ready.wait(), 30)
        return sub

    def unsubscribe(self, sub: Subscriber) -> None:
        self.subscribers.discard(sub)
        if not self.subscribers and self._task is not None:
            self._task.cancel()  # nobody watching: stop polling
            self._task = None

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data, ensure_ascii=False)}\n\n".encode()


def get_watcher(request: Request) -> FleetWatcher:
    app = request.app
    watcher = getattr(app.state, "fleet_watcher", None)
    if watcher is None:
        watcher = app.state.fleet_watcher = FleetWatcher(app.state.ctx.db)
    return watcher


class EventStream(StreamingResponse):
    """A Server-Sent Events stream (documented as such in ``/openapi.json``)."""

    media_type = "text/event-stream"


class FleetCounts(BaseModel):
    online: int
    degraded: int
    offline: int
    unknown: int
    total: int


class FleetNode(BaseModel):
    id: str
    state: str
    available: bool
    reasons: list[str]
    since: str | None = Field(description="dd/mm/yyyy HH:MM:SS, Asia/Ho_Chi_Minh")
    commune_id: int | None


class FleetHello(BaseModel):
    counts: FleetCounts


class AlarmsChanged(BaseModel):
    version: list[int | None] = Field(description="changes whenever the alarm list changes")


class FleetEvent(BaseModel):
    """One event of the stream: ``event:`` is the name, ``data:`` one line of JSON of the
    shape for that name (``hello``: FleetHello, ``counts``: FleetCounts, ``nodes``: a list
    of FleetNode, ``alarms``: AlarmsChanged)."""

    event: Literal["hello", "counts", "nodes", "alarms"]
    data: FleetHello | FleetCounts | list[FleetNode] | AlarmsChanged


@router.get(
    "/live/fleet",
    response_class=EventStream,
    responses={200: {"model": FleetEvent, "description": "text/event-stream of FleetEvent"}},
)
async def live_fleet(
    request: Request,
    commune: int | None = None,
    user: User = Depends(current_user),
    watcher: FleetWatcher = Depends(get_watcher),
) -> EventStream:
    """Server-Sent Events stream of fleet changes in the user's scope (see module doc)."""
    scope = scope_commune_ids(user)
    if commune is not None and scope is not None and commune not in scope:
        scope = frozenset()
    elif commune is not None:
        scope = frozenset({commune})

    async def stream() -> AsyncIterator[bytes]:
        sub = await watcher.subscribe(scope)
        loop = asyncio.get_running_loop()
        ends_at = loop.time() + MAX_STREAM_S
        try:
            yield b"retry: 2000\n\n"
            yield sse("hello", {"counts": watcher.counts(scope)})
            while loop.time() < ends_at:
                if sub.overflowed:
                    sub.overflowed = False
                    while not sub.queue.empty():
                        sub.queue.get_nowait()
                    yield sse("hello", {"counts": watcher.counts(scope)})
                try:
                    event, data = await asyncio.wait_for(sub.queue.get(), KEEPALIVE_S)
                except TimeoutError:
                    yield b": ping\n\n"
                    continue
                yield sse(event, data)
        finally:
            watcher.unsubscribe(sub)

    return EventStream(
        stream(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


async def stop_watcher(app: FastAPI) -> None:
    """At the app's shutdown (``dashboard.app``'s lifespan): end the database poll."""
    watcher = getattr(app.state, "fleet_watcher", None)
    if watcher is not None:
        await watcher.stop()
