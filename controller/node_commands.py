"""A technician's commands to one node (volume, self-test, stop) and the node's answer.

The answer (``cmd_ack``, and for a self-test the ``selftest`` event) is awaited briefly so the
page can say at once whether the node took the command. A process that hears the node's
events (a lone controller, or the leader of several) gets them from its ingest. One that
does not reads them from the event log the leader writes each flush. That covers a
controller that does not lead, and an API-only ``loa serve --no-controller``, which publishes
through a ``CommandLink`` of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Callable
from typing import Any

import aiomqtt
from sqlalchemy import select

from controller.cluster import process_client_id
from controller.command_publisher import CommandPublisher, new_cmd_id
from controller.ingest import IngestObserver
from controller.models import NodeEventLog
from controller.mqtt_transport import stay_connected
from controller.schedule_wake import RemoteScheduler
from loa.db import Database
from loa.protocol import (
    CmdAck,
    NodeEvent,
    Rejection,
    SelftestCmd,
    SelftestEvent,
    StopCmd,
    Topics,
    VolumeCmd,
    decode_event,
)
from loa.settings import Settings
from loa.timeutil import now_ms

log = logging.getLogger("loa.commands")

ANSWER_POLL_S = 0.25  # how often a process that does not hear the events reads the log
KINDS = ("volume", "selftest", "stop")  # what ``send`` takes


class NodeCommands(IngestObserver):
    """``send`` publishes one command and waits up to ``wait_s`` for each answer."""

    def __init__(
        self,
        db: Database,
        commands: CommandPublisher,
        *,
        answers_elsewhere: Callable[[], bool] = lambda: False,
    ) -> None:
        self.db = db
        self.commands = commands
        # True while the node's events reach another process (see the module docstring).
        self.answers_elsewhere = answers_elsewhere
        self._waiters: dict[str, asyncio.Future[NodeEvent]] = {}

    def on_event(self, node_id: str, event: NodeEvent, received_ms: int) -> None:
        """Ingest observer: hands an answer to the ``send`` waiting for it."""
        if isinstance(event, CmdAck):
            key = event.cmd_id
        elif isinstance(event, SelftestEvent):
            key = f"selftest:{node_id}"
        else:
            return
        waiter = self._waiters.pop(key, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(event)

    async def send(
        self,
        node_id: str,
        kind: str,
        *,
        level: int | None = None,
        broadcast_id: str | None = None,
        wait_s: float = 5.0,
    ) -> dict[str, Any]:
        """``{"cmd_id", "sent", "acked"}``: ``acked`` is the node's ``ok``, or None when it
        did not answer in time (the broker keeps the command for its persistent session);
        ``error`` with it, and ``selftest`` for a self-test that reported."""
        now = now_ms()
        cmd_id = new_cmd_id()
        if kind == "volume":
            if level is None:  # as VolumeCmd's own validation would, before anything is sent
                raise ValueError("volume: level is required")
            cmd: VolumeCmd | SelftestCmd | StopCmd = VolumeCmd(
                cmd_id=cmd_id, issued_at=now, level=level
            )
        elif kind == "selftest":
            cmd = SelftestCmd(cmd_id=cmd_id, issued_at=now)
        elif kind == "stop":
            cmd = StopCmd(cmd_id=cmd_id, issued_at=now, broadcast_id=broadcast_id)
        else:
            raise ValueError(kind)
        loop = asyncio.get_running_loop()
        ack_future = loop.create_future()
        self._waiters[cmd_id] = ack_future
        selftest_future = None
        if kind == "selftest":
            selftest_future = loop.create_future()
            self._waiters[f"selftest:{node_id}"] = selftest_future
        try:
            # The event log stores receive times on the receiving controller's clock; a
            # second earlier, so an answer stamped by another machine's clock is not missed.
            since = now - 1000
            await self.commands.send(node_id, cmd, wait_s=min(wait_s, 10.0))
            result: dict[str, Any] = {"cmd_id": cmd_id, "sent": True, "acked": None}
            try:
                ack = await self._answer(
                    ack_future, node_id, "cmd_ack", since, wait_s, cmd_id=cmd_id
                )
                result.update(acked=ack.ok, error=ack.error)
                if selftest_future is not None:
                    st = await self._answer(selftest_future, node_id, "selftest", since, wait_s)
                    result["selftest"] = {
                        "ok": st.ok,
                        "speakers_ok": st.speakers_ok,
                        "speakers_total": st.speakers_total,
                        "detail": st.detail,
                    }
            except TimeoutError:
                pass
            return result
        finally:
            self._waiters.pop(cmd_id, None)
            if selftest_future is not None:
                self._waiters.pop(f"selftest:{node_id}", None)

    async def _answer(
        self,
        future: asyncio.Future[NodeEvent],
        node_id: str,
        event_type: str,
        since_ms: int,
        wait_s: float,
        *,
        cmd_id: str | None = None,
    ) -> Any:
        """The answer from the ingest, or, while answers go elsewhere, from the event log.
        Raises ``TimeoutError``."""
        if not self.answers_elsewhere():
            return await asyncio.wait_for(future, wait_s)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            remaining = deadline - loop.time()
            try:
                return await asyncio.wait_for(
                    asyncio.shield(future), max(0.0, min(ANSWER_POLL_S, remaining))
                )
            except TimeoutError:
                stored = await asyncio.to_thread(
                    self._stored_answer, node_id, event_type, since_ms, cmd_id
                )
                if stored is not None:
                    return stored
                if loop.time() >= deadline:
                    raise

    def _stored_answer(
        self, node_id: str, event_type: str, since_ms: int, cmd_id: str | None
    ) -> Any:
        with self.db.session() as s:
            rows = s.scalars(
                select(NodeEventLog.payload)
                .where(
                    NodeEventLog.node_id == node_id,
                    NodeEventLog.at_ms >= since_ms,
                    NodeEventLog.type == event_type,
                )
                .order_by(NodeEventLog.at_ms)
            ).all()
        for payload in rows:
            if cmd_id is not None and payload.get("cmd_id") != cmd_id:
                continue
            try:
                return decode_event(json.dumps(payload).encode())
            except Rejection:
                continue
        return None


class CommandLink:
    """An API-only process's own MQTT connection, for node commands only: it subscribes to
    nothing, so it takes no share of the fleet's messages. It logs in with a login of its
    own (``LOA_MQTT_USERNAME``/``LOA_MQTT_PASSWORD`` from ``api.env``, written by ``loa nodes
    provision``), whose ACL may publish commands only. The provisioned broker replaces every
    client id by the user name (``use_username_as_clientid``), so sharing a controller's
    login would knock that controller off the broker. The client id it asks for stays one of
    its own, so that an older broker set-up where it still shares the controller's login
    keeps working."""

    def __init__(self, settings: Settings, db: Database) -> None:
        self.settings = settings
        self.commands = CommandPublisher(Topics(settings.topic_root))
        self.node_commands = NodeCommands(db, self.commands, answers_elsewhere=lambda: True)
        # The scheduler runs in the leading controller: it is told of each broadcast this
        # process schedules or cancels, at once (controller.schedule_wake).
        self.scheduler_wake = RemoteScheduler(self.commands, settings.topic_root)
        self.client_id = process_client_id(f"{settings.controller_client_id}-api")
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        return aiomqtt.Client(
            s.mqtt_host,
            s.mqtt_port,
            identifier=self.client_id,
            username=s.mqtt_username,
            password=s.mqtt_password,
            clean_session=True,
            keepalive=s.keepalive_s,
        )

    async def _up(self, client: aiomqtt.Client) -> None:
        self.commands.attach(client)
        log.info(
            "Đường gửi lệnh tới cụm loa đã kết nối broker %s:%s",
            self.settings.mqtt_host,
            self.settings.mqtt_port,
        )

    def _lost(self, exc: Exception) -> None:
        log.warning("Đường gửi lệnh mất kết nối broker (%s); đang thử lại", exc)

    def start(self) -> None:
        self.scheduler_wake.bind(asyncio.get_running_loop())
        if self._task is None:
            self._task = asyncio.create_task(
                stay_connected(
                    self._client,
                    self._up,
                    lambda: self.commands.attach(None),
                    self._stopping,
                    on_lost=self._lost,
                ),
                name="loa-command-link",
            )

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._task
            self._task = None
