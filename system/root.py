"""The composition root: every service of a Loa process, built with explicit constructor
arguments, started in order and stopped in reverse.

``loa controller``, ``loa serve`` and ``loa demo`` (``system.processes``), the tests and the
benchmarks build a process with ``System`` (or the API's part alone with ``api_context``);
nothing else assembles services, and nothing finds one by name. What is wired here:

- the controller (MQTT ingest, sweeper, writer, node commands);
- on the controller that leads (the only one when it runs alone), its fleet-wide duties:
  scheduling (dispatcher, scheduler runtime, Icecast), the alarm engine, the CAP alert timer;
- the ingest's observers: the dispatcher (proof of play), node command answers, InfluxDB;
- the API's view of all this (``dashboard.context.AppContext``) and the FastAPI app.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from fastapi import FastAPI
from sqlalchemy import select

from alerts.config import AlertSettings
from alerts.runtime import AlertRuntime
from alerts.workflow import AlertService
from broadcasts.store import ContentStore
from controller.alarms import AlarmService
from controller.influx_sink import InfluxSettings, InfluxSink
from controller.node_commands import CommandLink, NodeCommands
from controller.notify import NotificationService, Notifier, NotifyConfig
from controller.process import ControllerService, LeaderRole
from dashboard.app import create_app, warm_routes
from dashboard.context import AppContext
from dashboard.models import User
from dashboard.security import alerts_audit, username_key
from loa.db import Database, open_database
from loa.settings import Settings, get_settings
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from scheduler.scheduling import Scheduling, build_scheduling
from scheduler.workflow import BroadcastService, RuntimeHook

log = logging.getLogger("loa")


def api_database(settings: Settings) -> Database:
    """The API's own engine, its pool above the API's database slots (``dashboard.deps``):
    ingest, dispatch and the scheduler write through another, so a flood of API requests
    cannot take the connections their writes need (issue 17, finding 2)."""
    return Database(
        settings.resolved_database_url(),
        pool_size=2 * settings.api_db_concurrency + 2,
        max_overflow=10,
    )


def api_context(
    settings: Settings,
    db: Database,
    *,
    services_db: Database | None = None,
    content: ContentStore | None = None,
    controller: ControllerService | None = None,
    scheduling: Scheduling | None = None,
    node_commands: NodeCommands | None = None,
    scheduler_hook: RuntimeHook | None = None,
) -> AppContext:
    """What the API sees: the in-process controller's and scheduler's services when they run
    here, else services that only write rows for the processes that run them. Routes read
    through ``db``; the services write through ``services_db`` (default: the same)."""
    services_db = services_db if services_db is not None else db
    store = content if content is not None else ContentStore(settings, services_db)
    gateway = ContentGateway(store)
    if scheduling is not None:
        broadcasts = scheduling.broadcasts
    else:
        # ``scheduler_hook``: how the scheduler of another process hears of a change.
        broadcasts = BroadcastService(
            services_db, SchedulerSettings(), content=gateway, runtime=scheduler_hook
        )
    alerts = AlertService(
        services_db, broadcasts, AlertSettings(), content=gateway, audit=alerts_audit
    )
    if node_commands is None and controller is not None:
        node_commands = controller.node_commands
    return AppContext(
        settings,
        db,
        store,
        broadcasts,
        alerts,
        node_commands=node_commands,
        live=scheduling.live if scheduling is not None else None,
        controller=controller,
    )


def user_scope(db: Database):
    """For ``controller.notify``: a user's communes (None = the whole province), False for
    an unknown or disabled account. Users live in the dashboard, above the controller."""

    def scope_of(username: str) -> frozenset[int] | None | bool:
        with db.session() as s:
            user = s.scalar(select(User).where(User.username_key == username_key(username)))
            if user is None or not user.active:
                return False
            return user.scope_commune_ids()

    return scope_of


def command_services(settings: Settings | None = None) -> AppContext:
    """What a one-shot command (``loa schedule``, ``loa alerts``) acts through: the services
    the API would use, on the process's database, with no controller and no HTTP."""
    return System(settings or get_settings(), controller=False, http=False).api


class System:
    """One Loa process. ``controller``: run the controller and, while it leads, the
    fleet-wide duties; ``http``: build the API (``app``); without a controller the API sends
    node commands through a connection of its own (``command_link``)."""

    def __init__(
        self,
        settings: Settings,
        *,
        controller: bool = True,
        http: bool = True,
        db: Database | None = None,
        api_db: Database | None = None,
        client_id: str | None = None,
        sched: SchedulerSettings | None = None,
        live: bool = True,
        command_link: bool = True,
    ) -> None:
        self.settings = settings
        self._owns_db = db is None
        self.db = db if db is not None else open_database(settings)
        if api_db is None:
            api_db = api_database(settings) if http and self._owns_db else self.db
        self.api_db = api_db
        self.content = ContentStore(settings, self.db)
        self.controller: ControllerService | None = None
        self.scheduling: Scheduling | None = None
        self.alarms: AlarmService | None = None
        self.notifications: NotificationService | None = None
        self.alert_runtime: AlertRuntime | None = None
        self.influx: InfluxSink | None = None
        self.command_link: CommandLink | None = None
        node_commands: NodeCommands | None = None
        if controller:
            self.controller = ControllerService(settings, self.db, client_id=client_id)
            self.scheduling = build_scheduling(
                settings,
                self.db,
                self.controller,
                content=ContentGateway(self.content),
                sched=sched,
                with_live=live,
            )
            self.controller.add_leader_role(self.scheduling.leader_role())
            self.alarms = AlarmService.from_settings(self.db, settings)
            self.controller.add_leader_role(
                LeaderRole("cảnh báo", self._start_alarms, self.alarms.stop)
            )
            # Alarm e-mails and webhooks: on the leader only (one sender), own thread.
            self.notifications = NotificationService(
                Notifier(self.db, NotifyConfig.from_settings(settings), user_scope(self.db))
            )
            self.controller.add_leader_role(
                LeaderRole("thông báo", self.notifications.start, self.notifications.stop)
            )
            influx = InfluxSettings.from_settings(settings)
            if influx.url:
                self.influx = InfluxSink(influx)
                self.controller.ingest.observe(self.influx)
                log.info(
                    "Ghi số liệu nhịp tim vào InfluxDB %s (bucket %s)", influx.url, influx.bucket
                )
        elif http and command_link:
            self.command_link = CommandLink(settings, self.db)
            node_commands = self.command_link.node_commands
        # In-process services write through the controller's engine (as the scheduler
        # does); without a controller, through the API's.
        self.api = api_context(
            settings,
            self.api_db,
            services_db=self.db if controller else self.api_db,
            content=self.content,
            controller=self.controller,
            scheduling=self.scheduling,
            node_commands=node_commands,
            scheduler_hook=self.command_link.scheduler_wake if self.command_link else None,
        )
        self.alerts = self.api.alerts
        if self.controller is not None:
            self.alert_runtime = AlertRuntime(self.alerts)
            self.controller.add_leader_role(
                LeaderRole("cảnh báo CAP", self.alert_runtime.start, self.alert_runtime.stop)
            )
        self.app: FastAPI | None = create_app(self.api) if http else None

    async def _start_alarms(self) -> None:
        assert self.alarms is not None
        self.alarms.start()

    async def start(self) -> None:
        """Connect to the broker and run; the fleet-wide duties start once this controller
        leads (at once when it runs alone)."""
        if self.command_link is not None:
            self.command_link.start()
        if self.app is not None:  # off the loop the ingest is about to run on
            await asyncio.to_thread(warm_routes, self.app)
        if self.controller is not None:
            await self.controller.start()
        if self.influx is not None:
            self.influx.start()

    async def stop(self) -> None:
        """The reverse of ``start``; each step runs even if one before it failed, and the
        database engines close last."""
        steps = []
        if self.influx is not None:
            steps.append(self.influx.stop)
        if self.controller is not None:
            steps.append(self.controller.stop)  # steps down: its duties stop, in reverse
        for duty in (self.alert_runtime, self.notifications, self.alarms, self.scheduling):
            if duty is not None:  # idempotent: already stopped with the leadership
                steps.append(duty.stop)
        if self.command_link is not None:
            steps.append(self.command_link.stop)
        for step in steps:
            try:
                await step()
            except Exception:
                log.exception("Không dừng được %s", getattr(step, "__qualname__", step))
        if self._owns_db:
            with contextlib.suppress(Exception):
                self.db.dispose()
            if self.api_db is not self.db:
                with contextlib.suppress(Exception):
                    self.api_db.dispose()
