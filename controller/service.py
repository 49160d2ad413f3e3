"""The controller process: one MQTT connection feeding the ingest, the sweeper, the batch
flusher, and the command publisher, with reconnects that lose nothing.

The MQTT session is persistent (``clean_session=False``, fixed client id), so QoS 1 events
published while the controller reconnects are queued by the broker and delivered after.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import Any

import aiomqtt

from controller.commands import CommandPublisher
from controller.ingest import Ingest
from controller.mqtt_transport import direct_delivery, use_buffered_reads
from loa.db import Database
from loa.settings import Settings

log = logging.getLogger("loa.controller")


class ControllerService:
    def __init__(self, settings: Settings, db: Database, *, client_id: str | None = None) -> None:
        self.settings = settings
        self.db = db
        self.ingest = Ingest(settings, db)
        self.commands = CommandPublisher(self.ingest.topics)
        self.client_id = client_id or settings.controller_client_id
        self.connected = asyncio.Event()
        self.started_at = time.time()
        self.reconnects = 0
        self._last_reload = time.monotonic()
        self._tasks: list[asyncio.Task] = []
        self._stopping = asyncio.Event()
        self.extra_tasks: list[Any] = []  # coroutines other packages attach (dispatch, alarms)

    async def start(self) -> None:
        await asyncio.to_thread(self.ingest.load_registry)
        self._tasks = [
            asyncio.create_task(self._mqtt_loop(), name="loa-mqtt"),
            asyncio.create_task(self._periodic(self._sweep_once, 0.5), name="loa-sweeper"),
            asyncio.create_task(self._flush_loop(), name="loa-flusher"),
            asyncio.create_task(self._periodic(self._maybe_reload_registry, 2.0),
                                name="loa-registry"),
        ]
        self._tasks += [asyncio.create_task(c) for c in self.extra_tasks]

    async def wait_connected(self, timeout_s: float = 15.0) -> None:
        await asyncio.wait_for(self.connected.wait(), timeout_s)

    async def stop(self) -> None:
        """Stop receiving, then let the flusher finish its write and flush the rest: a
        write is never cut off half-way."""
        self._stopping.set()
        flusher = [t for t in self._tasks if t.get_name() == "loa-flusher"]
        for t in self._tasks:
            if t not in flusher:
                t.cancel()
        for t in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await t
        self._tasks = []
        await self.ingest.flush()

    async def _flush_loop(self) -> None:
        while not self._stopping.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self.settings.flush_interval_s)
            try:
                await self.ingest.flush()
            except Exception:
                log.exception("flush failed")

    async def _sweep_once(self) -> None:
        self.ingest.sweep()

    async def _reload_registry(self) -> None:
        self.ingest.unknown_seen = False
        self._last_reload = time.monotonic()
        await asyncio.to_thread(self.ingest.load_registry)

    async def _maybe_reload_registry(self) -> None:
        """Every 30 s, or within 2 s of hearing an id we do not know (just approved or
        imported elsewhere), re-read the registry."""
        if self.ingest.unknown_seen or time.monotonic() - self._last_reload > 30:
            await self._reload_registry()

    async def reload_registry(self) -> None:
        """Call after registry changes so new nodes are accepted at once."""
        await self._reload_registry()

    async def _periodic(self, fn, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            try:
                await fn()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("periodic task %s failed", getattr(fn, "__name__", fn))

    def _client(self) -> aiomqtt.Client:
        s = self.settings
        client = use_buffered_reads(aiomqtt.Client(
            s.mqtt_host, s.mqtt_port, identifier=self.client_id, username=s.mqtt_username,
            password=s.mqtt_password, clean_session=False, keepalive=s.keepalive_s,
            queue_type=direct_delivery(self._on_message), max_inflight_messages=100))
        # A province-wide dispatch has thousands of publishes in flight; aiomqtt warns
        # above its default of 10.
        client.pending_calls_threshold = 10_000
        return client

    def _on_message(self, message: aiomqtt.Message) -> None:
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            payload = str(payload).encode()
        self.ingest.handle(message.topic.value, payload)

    async def _mqtt_loop(self) -> None:
        backoff = 0.5
        while not self._stopping.is_set():
            try:
                async with self._client() as client:
                    for topic in self.ingest.topics.uplink_filters(
                            self.settings.shared_subscription_group):
                        await client.subscribe(topic, qos=1)
                    self.commands.attach(client)
                    self.connected.set()
                    backoff = 0.5
                    log.info("Đã kết nối broker %s:%s", self.settings.mqtt_host,
                             self.settings.mqtt_port)
                    # Messages go to the ingest as they are decoded (DirectDelivery); this
                    # only returns, by MqttError, when the connection is lost.
                    async for _ in client.messages:
                        pass
            except aiomqtt.MqttError as exc:
                if self._stopping.is_set():
                    break
                self.reconnects += 1
                log.warning("Mất kết nối broker (%s); thử lại sau %.1f s", exc, backoff)
            finally:
                self.commands.attach(None)
                self.connected.clear()
            await asyncio.sleep(backoff)
            backoff = min(backoff * 2, 10.0)
