"""What the API sees of the running system, handed to routes through ``app.state.ctx``.

Each field is a named, typed service built by the composition root (``system.root``); a
route asks for the one it needs. ``None`` means the service does not run in this process:
an API-only ``loa serve --no-controller`` has no controller and no live server, and answers
what needs them with a clear 503."""

from __future__ import annotations

from dataclasses import dataclass

from alerts.workflow import AlertService
from broadcasts.store import ContentStore
from controller.node_commands import NodeCommands
from controller.process import ControllerService
from loa.db import Database
from loa.settings import Settings
from scheduler.live import IcecastServer
from scheduler.workflow import BroadcastService


@dataclass
class AppContext:
    settings: Settings
    db: Database
    content: ContentStore
    broadcasts: BroadcastService
    alerts: AlertService
    # Technicians' commands to a node: the in-process controller's, or the command link of
    # an API-only process.
    node_commands: NodeCommands | None = None
    live: IcecastServer | None = None
    # The in-process controller (its ingest figures on the health page).
    controller: ControllerService | None = None
