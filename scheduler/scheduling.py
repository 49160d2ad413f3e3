"""Scheduling next to a running controller: the dispatcher (observing the ingest), the
scheduler runtime (APScheduler on the database), the workflow service, and optionally the
Icecast live server, started and stopped together. The composition root (``system.root``),
the benchmarks and the tests build it with ``build_scheduling``, so all wire it one way."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass

from broadcasts.store import ContentStore
from controller.process import ControllerService, LeaderRole
from loa.db import Database
from loa.settings import Settings
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.dispatch import Dispatcher
from scheduler.errors import Unavailable
from scheduler.live import IcecastServer
from scheduler.runtime import SchedulerRuntime
from scheduler.workflow import BroadcastService

log = logging.getLogger("loa.scheduler")


def default_content(settings: Settings, db: Database) -> ContentGateway:
    """A content store of its own, for callers that do not share one."""
    return ContentGateway(ContentStore(settings, db))


@dataclass
class Scheduling:
    dispatcher: Dispatcher
    runtime: SchedulerRuntime
    broadcasts: BroadcastService
    live: IcecastServer | None = None
    owns_live: bool = False
    started: bool = False

    def leader_role(self) -> LeaderRole:
        """Exactly one scheduler per fleet: it runs on the controller that leads (the only
        one when a controller runs alone)."""

        async def start() -> None:
            try:
                await self.start()
            except Exception:
                log.exception("Không khởi động được bộ lập lịch phát thanh")

        return LeaderRole(
            "bộ lập lịch phát thanh",
            start,
            self.stop,
            needs_fleet_mirror=lambda: bool(self.dispatcher.active_airings()),
        )

    async def start(self) -> None:
        """Start the live server (if we own one), the dispatch loop and the scheduler."""
        if self.started:
            return
        self.started = True
        if self.live is not None and self.owns_live and not self.live.running:
            try:
                self.live.restore_mounts(await asyncio.to_thread(self.broadcasts.open_live_mounts))
            except Exception:  # the owners of open live broadcasts must make new ones
                log.exception("Không nạp lại được các điểm phát trực tiếp đang mở")
            try:
                # Forked by the process-lifetime spawner thread whatever thread calls it
                # (scheduler.live._Spawner): it lives as long as Loa, and no longer.
                await asyncio.to_thread(self.live.start)
            except Unavailable as exc:
                # Live broadcasts answer with this reason; everything else works.
                log.warning("%s", exc.message)
        self.dispatcher.start()
        await self.runtime.start()

    async def stop(self) -> None:
        """Idempotent: the app lifespan and the service loop may both call it."""
        if not self.started:
            return
        self.started = False
        await self.runtime.stop()
        await self.dispatcher.stop()
        self.dispatcher.forget()
        if self.live is not None and self.owns_live:
            await asyncio.to_thread(self.live.stop)


def build_scheduling(
    settings: Settings,
    db: Database,
    controller: ControllerService,
    *,
    content: ContentGateway | None = None,
    sched: SchedulerSettings | None = None,
    live: IcecastServer | None = None,
    with_live: bool = False,
    base_url: str | None = None,
) -> Scheduling:
    """Objects only (nothing started): ``controller`` is a ``ControllerService`` whose ingest
    and command publisher the dispatcher uses. With ``with_live`` an Icecast server in
    ``data_dir`` is started by ``Scheduling.start`` when icecast2 is installed; a missing
    icecast2 only disables live broadcasts, with a clear message."""
    sched = sched or SchedulerSettings()
    content = content if content is not None else default_content(settings, db)
    owns_live = False
    if live is None and with_live:
        live = IcecastServer(
            settings.data_dir,
            host=sched.icecast_host,
            port=sched.icecast_port,
            binary=sched.icecast_binary,
            public_url=sched.icecast_public_url,
        )
        owns_live = True
    dispatcher = Dispatcher(
        settings,
        db,
        controller.commands,
        content=content,
        sched=sched,
        live=live,
        base_url=base_url,
    )
    dispatcher.observe(controller.ingest)
    runtime = SchedulerRuntime(db, sched, dispatcher)
    # An API process elsewhere says when it scheduled or cancelled a broadcast (a runtime
    # that is not running, as on a follower, ignores it).
    controller.on_schedule_wake(runtime.on_wake)
    service = BroadcastService(db, sched, content=content, live=live, runtime=runtime)
    return Scheduling(dispatcher, runtime, service, live, owns_live)


async def start_scheduling(
    settings: Settings,
    db: Database,
    controller: ControllerService,
    *,
    content: ContentGateway | None = None,
    sched: SchedulerSettings | None = None,
    live: IcecastServer | None = None,
    start_live: bool = False,
    base_url: str | None = None,
) -> Scheduling:
    """``build_scheduling`` + ``start`` (the controller must be running)."""
    scheduling = build_scheduling(
        settings,
        db,
        controller,
        content=content,
        sched=sched,
        live=live,
        with_live=start_live,
        base_url=base_url,
    )
    await scheduling.start()
    return scheduling
