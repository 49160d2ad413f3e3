"""A whole commune network on loopback for the scheduling tests: Debian mosquitto on a random
port, the controller (ingest + command publisher), the content store with offline TTS, the
dashboard app served by uvicorn (nodes download audio from its ``/media`` route), the
dispatcher and APScheduler runtime, and simulated nodes that follow the protocol."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
import uvicorn
from sqlalchemy import select

from controller.process import ControllerService
from dashboard.context import AppContext
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from loa.db import Database
from loa.settings import Settings
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.models import Airing, AiringTarget
from scheduler.scheduling import Scheduling, build_scheduling
from scheduler.targets import Actor
from scheduler.workflow import BroadcastService
from tests.conftest import settings_for
from tests.factories import make_registry

# Small figures so a slot goes by in seconds, not minutes.
FAST = dict(
    dispatch_lead_s=3.0,
    slot_grace_s=20.0,
    ack_margin_s=1.5,
    housekeeping_s=0.5,
    dispatch_flush_s=0.2,
    resend_delay_s=1.0,
    ack_retry_s=2.0,
    start_now_delay_s=4.0,
    late_start_delay_s=2.0,
    repeat_gap_s=0.5,
    stream_default_duration_s=30,
)

COMMUNES = {
    "Đội Cấn": {"Thôn Đồng Tâm": ["dc-01", "dc-02"], "Thôn Tân Lập": ["dc-03", "dc-04"]},
    "Tân Trào": {"Thôn Mới": ["tt-01"]},
}


async def wait_for(
    predicate: Callable[[], Any], timeout: float, what: str, interval: float = 0.1
) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if asyncio.iscoroutine(value):
            value = await value
        if value:
            return value
        await asyncio.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


@dataclass
class Network:
    settings: Settings
    db: Database
    ids: dict[str, int]
    broker: Any
    base_url: str
    store: Any
    content: ContentGateway
    sched: SchedulerSettings
    fleet: Fleet
    controller: ControllerService | None = None
    scheduling: Scheduling | None = None
    # What the served API sees (``system.root.api_context``), kept pointing at the running
    # controller and scheduler across restarts.
    ctx: AppContext | None = None
    province: Actor = field(default_factory=lambda: Actor("province", None, "so-vhtt"))

    def officer(self, commune: str = "Đội Cấn") -> Actor:
        return Actor("commune", frozenset({self.ids[commune]}), f"canbo-{commune}")

    @property
    def service(self):
        assert self.scheduling is not None
        return self.scheduling.broadcasts

    async def start_controller(self) -> None:
        """(Re)start controller and scheduling: new objects on the same database, as after
        a process restart."""
        self.controller = ControllerService(self.settings, self.db)
        # As ``loa serve`` wires it: the dispatcher listens before the controller connects,
        # so events queued by the broker while we were down are not missed.
        self.scheduling = build_scheduling(
            self.settings,
            self.db,
            self.controller,
            content=self.content,
            sched=self.sched,
            base_url=self.base_url,
        )
        await self.controller.start()
        await self.controller.wait_connected()
        await self.scheduling.start()
        self._expose()

    def _expose(self) -> None:
        """Point the API at the running services (or at none, after a crash)."""
        if self.ctx is None:
            return
        self.ctx.controller = self.controller
        self.ctx.node_commands = self.controller.node_commands if self.controller else None
        if self.scheduling is not None:
            self.ctx.broadcasts, self.ctx.live = self.scheduling.broadcasts, self.scheduling.live
        else:  # as an API without a scheduler in its process: it only writes rows
            self.ctx.broadcasts = BroadcastService(self.db, self.sched, content=self.content)
            self.ctx.live = None
        self.ctx.alerts.broadcasts = self.ctx.broadcasts

    async def kill_controller(self) -> None:
        """Stop controller and scheduler as a crash would leave them: nothing is cleaned up
        in the database or the job store."""
        assert self.scheduling is not None and self.controller is not None
        await self.scheduling.runtime.stop()
        if self.scheduling.dispatcher._runner is not None:
            self.scheduling.dispatcher._runner.cancel()
        await self.controller.stop()
        self.scheduling = None
        self.controller = None
        self._expose()

    def targets(self, airing_id: int) -> dict[str, AiringTarget]:
        with self.db.session() as s:
            return {
                t.node_id: t
                for t in s.scalars(select(AiringTarget).where(AiringTarget.airing_id == airing_id))
            }

    def airings(self, broadcast_id: int) -> list[Airing]:
        with self.db.session() as s:
            return list(
                s.scalars(
                    select(Airing)
                    .where(Airing.broadcast_id == broadcast_id)
                    .order_by(Airing.slot_ms)
                )
            )

    async def wait_final(self, broadcast_id: int, timeout: float = 40.0) -> Airing:
        def done():
            rows = self.airings(broadcast_id)
            return rows[-1] if rows and rows[-1].finalized_ms else None

        return await wait_for(done, timeout, f"broadcast {broadcast_id} to be judged")

    async def online(self, node_ids: list[str], timeout: float = 15.0) -> None:
        assert self.controller is not None
        fleet_state = self.controller.ingest.fleet.nodes

        def ok():
            return all(fleet_state[n].state.value in ("online", "degraded") for n in node_ids)

        await wait_for(ok, timeout, f"nodes {node_ids} online at the controller")


@pytest.fixture
async def network(tmp_path, mosquitto_broker, settings, db):
    from broadcasts.store import ContentStore
    from dashboard.app import create_app
    from system.root import api_context

    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    cfg = settings_for(
        settings, mosquitto_broker, http_port=http_port, public_base_url=base_url, heartbeat_s=10
    )
    ids = make_registry(db, communes=COMMUNES, heartbeat_s=10)
    store = ContentStore(cfg, db)
    net = Network(
        settings=cfg,
        db=db,
        ids=ids,
        broker=mosquitto_broker,
        base_url=base_url,
        store=store,
        content=ContentGateway(store),
        sched=SchedulerSettings(**FAST),
        fleet=Fleet(
            mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=10, connect_rate=500, seed=7
        ),
    )
    await net.start_controller()
    net.ctx = api_context(
        cfg, db, content=store, controller=net.controller, scheduling=net.scheduling
    )
    app = create_app(net.ctx)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="on")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await wait_for(lambda: server.started or serving.done(), 15, "the dashboard to serve")
    if serving.done():
        serving.result()
    try:
        yield net
    finally:
        await net.fleet.stop()
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        if net.scheduling is not None:
            await net.scheduling.stop()
        if net.controller is not None:
            await net.controller.stop()
