"""The API tells the leading controller's scheduler at once that a broadcast was scheduled or
cancelled, instead of leaving it to the scheduler's next housekeeping pass.

In the production layout (docker-compose.yml: ``loa serve --no-controller`` beside ``loa
controller``) the API process only writes the broadcast's rows; the scheduler runs in the
leading controller and found new rows on its housekeeping pass, every ``LOA_HOUSEKEEPING_S``
(5 s). An emergency alert received by the API therefore went on air up to 5 s late, and a
cancelled one kept playing up to 5 s: the whole of issue 19's budget.

One MQTT message on ``{root}/scheduler/wake`` (QoS 1, not retained; docs/protocol.md,
"Controller topics"), JSON ``{"broadcast_id": 12, "change": "scheduled"}`` or
``"cancelled"``. Every controller subscribes plainly; only the leader's scheduler acts on it
(a follower's has no job store). The message only says "look again now": the scheduler
re-reads the broadcast from the database and does what housekeeping would have done, so a
forged, repeated or lost wake changes nothing but timing, and housekeeping stays the safety
net for a wake lost with the broker.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from controller.command_publisher import CommandPublisher
from loa.loops import call_in_loop

log = logging.getLogger("loa.scheduler")

Change = Literal["scheduled", "cancelled"]


class Wake(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    broadcast_id: int = Field(ge=1)
    change: Change


def wake_topic(topic_root: str) -> str:
    return f"{topic_root.rstrip('/')}/scheduler/wake"


def encode_wake(broadcast_id: int, change: Change) -> bytes:
    return Wake(broadcast_id=broadcast_id, change=change).model_dump_json().encode()


def decode_wake(payload: bytes) -> Wake | None:
    """The wake, or None for anything else (logged once per message, never raised: a bad
    message on the topic must not disturb the controller's MQTT loop)."""
    try:
        return Wake.model_validate_json(payload)
    except ValidationError as exc:
        log.warning(
            "Bỏ qua tin đánh thức bộ lập lịch không hợp lệ (%d byte): %s",
            len(payload),
            exc.errors()[0].get("msg", "?") if exc.errors() else exc,
        )
        return None


class RemoteScheduler:
    """The scheduler's hook (``scheduler.workflow.RuntimeHook``) for a process that does not
    run the scheduler: each change becomes a wake published on the process's own MQTT link.

    Thread-safe and returns at once, as the hook must (API routes for database work run in
    a thread pool). Without a connection the wake is dropped with a log line: the
    housekeeping pass picks the broadcast up anyway."""

    def __init__(self, publisher: CommandPublisher, topic_root: str) -> None:
        self.publisher = publisher
        self.topic = wake_topic(topic_root)
        self._loop: asyncio.AbstractEventLoop | None = None
        self._pending: set[asyncio.Task[None]] = set()

    def bind(self, loop: asyncio.AbstractEventLoop) -> None:
        """The event loop the MQTT link runs on (set when the process starts)."""
        self._loop = loop

    def on_scheduled(self, broadcast_id: int) -> None:
        self._send(encode_wake(broadcast_id, "scheduled"))

    def on_cancelled(self, broadcast_id: int) -> None:
        self._send(encode_wake(broadcast_id, "cancelled"))

    def _send(self, payload: bytes) -> None:
        loop = self._loop
        if loop is None or loop.is_closed():
            return
        call_in_loop(loop, self._spawn, payload)

    def _spawn(self, payload: bytes) -> None:
        task = asyncio.get_running_loop().create_task(self._publish(payload))
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)

    async def _publish(self, payload: bytes) -> None:
        try:
            await self.publisher.publish(self.topic, payload, wait_s=2.0)
        except Exception as exc:  # NotConnected, MqttError: housekeeping covers it
            log.warning("Không báo được bộ lập lịch (%s); lượt rà soát kế tiếp sẽ nhận", exc)


__all__ = ["RemoteScheduler", "Wake", "decode_wake", "encode_wake", "wake_topic"]
