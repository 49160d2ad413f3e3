"""Controller -> node commands (QoS 1, not retained: the node's persistent session queues a
command while the node is away)."""

from __future__ import annotations

import asyncio
import uuid

import aiomqtt

from loa.protocol import Command, Topics, encode


class NotConnected(RuntimeError):
    pass


def new_cmd_id() -> str:
    return uuid.uuid4().hex


class CommandPublisher:
    """Publishes through whatever MQTT client the controller currently holds, waiting a
    bounded time for a reconnect instead of failing the moment the broker blinks."""

    def __init__(self, topics: Topics) -> None:
        self.topics = topics
        self._client: aiomqtt.Client | None = None
        self._connected = asyncio.Event()
        self.sent = 0

    def attach(self, client: aiomqtt.Client | None) -> None:
        self._client = client
        if client is None:
            self._connected.clear()
        else:
            self._connected.set()

    @property
    def connected(self) -> bool:
        return self._client is not None

    async def send(self, node_id: str, cmd: Command, *, wait_s: float = 10.0) -> None:
        await self.publish(self.topics.cmd(node_id), encode(cmd), wait_s=wait_s)
        self.sent += 1

    async def publish(self, topic: str, payload: bytes, *, wait_s: float = 10.0) -> None:
        """QoS 1, not retained, on the current client (``send`` for node commands; the
        scheduler wake, ``controller.schedule_wake``, for the others)."""
        if self._client is None:
            try:
                await asyncio.wait_for(self._connected.wait(), wait_s)
            except TimeoutError:
                raise NotConnected("Mất kết nối tới broker MQTT") from None
        assert self._client is not None
        await self._client.publish(topic, payload, qos=1, retain=False)
