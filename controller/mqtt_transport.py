"""MQTT transport under aiomqtt/paho: buffered reads for the controller's high-volume
subscription, and ``stay_connected``, the reconnect loop of the controller's long-lived
clients (the controller's own and an API-only process's command link).

paho reads each MQTT packet with two or three tiny ``recv`` calls (command byte, length
bytes, body), so at province scale the controller spends its time in system calls and event
loop turns rather than in Loa. Wrapping the socket so that one ``recv`` fetches up to 256 KiB
and later small reads are served from memory removes that cost. aiomqtt already keeps
calling ``loop_read`` while the socket reports ``pending()`` bytes (its TLS path), so the
buffered bytes are drained without waiting for the socket to become readable again.

This touches paho's ``_create_socket`` hook and its ``_on_message_filtered`` table (private
names): ``tests/controller`` run the controller through them against real brokers, so a paho
change that breaks them fails there.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import aiomqtt

if TYPE_CHECKING:
    from paho.mqtt.client import SocketLike

log = logging.getLogger("loa.ingest")

READ_CHUNK = 256 * 1024


class BufferedSocket:
    __slots__ = ("_sock", "_buf", "_pos")

    def __init__(self, sock: SocketLike) -> None:
        self._sock = sock
        self._buf = b""
        self._pos = 0

    def recv(self, n: int) -> bytes:
        if self._pos >= len(self._buf):
            data = self._sock.recv(max(n, READ_CHUNK))  # raises BlockingIOError when empty
            if len(data) <= n:
                self._buf, self._pos = b"", 0
                return data
            self._buf, self._pos = data, 0
        end = self._pos + n
        out = self._buf[self._pos : end]
        self._pos = min(end, len(self._buf))
        return out

    def pending(self) -> int:
        inner = getattr(self._sock, "pending", None)
        return (len(self._buf) - self._pos) + (inner() if inner else 0)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._sock, name)


def use_buffered_reads(client: aiomqtt.Client) -> aiomqtt.Client:
    paho_client = client._client  # noqa: SLF001 - see module docstring
    create = paho_client._create_socket  # noqa: SLF001

    def create_buffered() -> BufferedSocket:
        return BufferedSocket(create())

    # Replacing paho's socket factory is the point of this function (module docstring).
    paho_client._create_socket = create_buffered  # type: ignore[method-assign]  # noqa: SLF001
    return client


class _NoTopicCallbacks:
    """Stands in for paho's per-topic callback table, which Loa never uses: paho walks it for
    every message (a recursive generator over the topic levels), about a tenth of the
    controller's CPU at 3,000 heartbeats/s."""

    def iter_match(self, _topic: str) -> tuple[()]:
        return ()

    def __setitem__(self, _key: str, _value: object) -> None:
        raise NotImplementedError("Loa does not use paho's per-topic callbacks")


def skip_topic_callbacks(client: aiomqtt.Client) -> aiomqtt.Client:
    """Every message goes to ``on_message`` straight away (touches paho's private
    ``_on_message_filtered``, see the module docstring)."""
    # A stand-in, not an MQTTMatcher: it has the two methods paho calls on it.
    client._client._on_message_filtered = _NoTopicCallbacks()  # type: ignore[assignment]  # noqa: SLF001
    return client


class DirectDelivery(asyncio.Queue[aiomqtt.Message]):
    """An aiomqtt ``queue_type`` that hands each message to a handler as paho decodes it.

    aiomqtt's ``async for message in client.messages`` costs a task and an ``asyncio.wait``
    per message; the ingest handler is synchronous and never blocks, so calling it straight
    from ``put_nowait`` (which aiomqtt calls on the event loop thread) removes that overhead.
    Iterating ``client.messages`` then only waits for a disconnection."""

    handler: Callable[[aiomqtt.Message], None]

    def put_nowait(self, item: aiomqtt.Message) -> None:
        try:
            self.handler(item)
        except Exception:  # the ingest counts bad input itself; this is a bug guard
            log.exception("ingest handler failed on %s", item.topic)


def direct_delivery(handler: Callable[[aiomqtt.Message], None]) -> type[DirectDelivery]:
    return type("IngestDelivery", (DirectDelivery,), {"handler": staticmethod(handler)})


async def _until_lost_or_stopping(client: aiomqtt.Client, stopping: asyncio.Event) -> None:
    """Return when ``stopping`` is set; raise ``MqttError`` when the connection is lost.

    A stop must not rely on cancelling this task alone: on Python 3.11 ``asyncio.wait_for``
    (which aiomqtt's ``subscribe`` uses) swallows a cancellation that arrives as its future
    completes, and the task then went on to wait for messages for ever (seen: ``bench/ingest.py``
    hung in ``ControllerService.stop`` about one run in five when the stop came while the
    controller was still subscribing)."""

    async def drain() -> None:
        async for _ in client.messages:  # ends only by MqttError, when the connection is lost
            pass

    lost = asyncio.ensure_future(drain())
    stop = asyncio.ensure_future(stopping.wait())
    try:
        await asyncio.wait({lost, stop}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        lost.cancel()
        stop.cancel()
    if lost.done() and not lost.cancelled() and (exc := lost.exception()) is not None:
        raise exc


async def stay_connected(
    make_client: Callable[[], aiomqtt.Client],
    on_up: Callable[[aiomqtt.Client], Awaitable[None]],
    on_down: Callable[[], None],
    stopping: asyncio.Event,
    *,
    on_lost: Callable[[Exception], None] | None = None,
) -> None:
    """Hold one MQTT connection until ``stopping`` is set: connect, ``on_up``, wait for the
    connection to drop, ``on_down``, then try again after 0.5 s, doubling to 10 s."""
    backoff = 0.5
    while not stopping.is_set():
        try:
            async with make_client() as client:
                await on_up(client)
                backoff = 0.5
                await _until_lost_or_stopping(client, stopping)
        except aiomqtt.MqttError as exc:
            if stopping.is_set():
                break
            if on_lost is not None:
                on_lost(exc)
        finally:
            on_down()
        await asyncio.sleep(backoff)
        backoff = min(backoff * 2, 10.0)
