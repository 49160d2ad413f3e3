"""Fixtures for the simulated nodes: a raw aiomqtt subscriber playing the controller, a
local content server (with Range) and a local live-stream server, all on random ports.

Brokers come from tests/conftest.py (``mosquitto_broker``, ``broker`` = mosquitto and amqtt).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

import aiomqtt
import pytest

from firmware_sim.fleet import Fleet
from loa.protocol import (
    Channel,
    Topics,
    decode_event,
    decode_heartbeat,
    decode_status,
)

TOPICS = Topics()


# ============================================================================ controller


@dataclass
class Received:
    node_id: str
    channel: Channel
    payload: bytes
    retain: bool
    at: float  # time.monotonic() on arrival
    wall_ms: int  # real clock on arrival, epoch ms


class RawController:
    """Subscribes to every node topic and records what arrives, in order."""

    def __init__(self, host: str, port: int, client_id: str = "test-controller") -> None:
        self.host, self.port, self.client_id = host, port, client_id
        self.received: list[Received] = []
        self._cond = asyncio.Condition()
        self._client: aiomqtt.Client | None = None
        self._reader: asyncio.Task | None = None

    async def __aenter__(self) -> RawController:
        self._client = aiomqtt.Client(self.host, self.port, identifier=self.client_id)
        await self._client.__aenter__()
        await self._client.subscribe(f"{TOPICS.root}/nodes/#", qos=1)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, aiomqtt.MqttError):
                await self._reader
        if self._client:
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _read(self) -> None:
        assert self._client
        async for msg in self._client.messages:
            parsed = TOPICS.parse(str(msg.topic))
            if parsed is None:
                continue
            rec = Received(
                parsed[0],
                parsed[1],
                bytes(msg.payload),
                msg.retain,
                time.monotonic(),
                time.time_ns() // 1_000_000,
            )
            async with self._cond:
                self.received.append(rec)
                self._cond.notify_all()

    async def wait_for(
        self, pred: Callable[[Received], bool], timeout: float = 5.0, after: int = 0
    ) -> Received:
        """First message (from index ``after`` on) matching ``pred``; fails after timeout."""

        def find() -> Received | None:
            return next((r for r in self.received[after:] if pred(r)), None)

        async with self._cond:
            try:
                await asyncio.wait_for(self._cond.wait_for(lambda: find() is not None), timeout)
            except TimeoutError:
                got = [(r.node_id, r.channel, r.payload[:80]) for r in self.received[after:]]
                raise AssertionError(f"nothing matching within {timeout} s; got {got}") from None
            return find()  # type: ignore[return-value]

    # ---------------------------------------------------------------- typed views

    def of(self, node_id: str, channel: Channel) -> list[Received]:
        return [r for r in self.received if r.node_id == node_id and r.channel == channel]

    def heartbeats(self, node_id: str):
        return [decode_heartbeat(r.payload) for r in self.of(node_id, Channel.HEARTBEAT)]

    def events(self, node_id: str, type_: str | None = None):
        evs = [decode_event(r.payload) for r in self.of(node_id, Channel.EVENTS)]
        return [e for e in evs if type_ is None or e.type == type_]

    def statuses(self, node_id: str):
        return [decode_status(r.payload) for r in self.of(node_id, Channel.STATUS)]

    async def wait_event(self, node_id: str, timeout: float = 5.0, **match):
        """Wait for an event of ``node_id`` whose fields equal ``match``; returns it decoded."""

        def pred(r: Received) -> bool:
            if r.node_id != node_id or r.channel != Channel.EVENTS:
                return False
            ev = decode_event(r.payload)
            return all(getattr(ev, k, None) == v for k, v in match.items())

        return decode_event((await self.wait_for(pred, timeout)).payload)

    async def wait_heartbeat(
        self, node_id: str, timeout: float = 5.0, after: int = 0, pred: Callable = lambda hb: True
    ):
        def match(r: Received) -> bool:
            return (
                r.node_id == node_id
                and r.channel == Channel.HEARTBEAT
                and pred(decode_heartbeat(r.payload))
            )

        return decode_heartbeat((await self.wait_for(match, timeout, after)).payload)

    async def wait_status(self, node_id: str, timeout: float = 5.0, **match):
        def pred(r: Received) -> bool:
            if r.node_id != node_id or r.channel != Channel.STATUS:
                return False
            st = decode_status(r.payload)
            return all(getattr(st, k, None) == v for k, v in match.items())

        rec = await self.wait_for(pred, timeout)
        return decode_status(rec.payload), rec

    def phases(self, node_id: str, broadcast_id: str) -> list[str]:
        return [e.phase for e in self.events(node_id, "playback") if e.broadcast_id == broadcast_id]

    async def send(self, node_id: str, cmd) -> None:
        """Publish a command (a protocol model, or raw bytes for malformed ones)."""
        assert self._client
        payload = cmd if isinstance(cmd, bytes) else cmd.model_dump_json(exclude_none=True).encode()
        await self._client.publish(TOPICS.cmd(node_id), payload, qos=1)


@pytest.fixture
async def controller(mosquitto_broker):
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        yield ctl


@pytest.fixture
async def fleet(mosquitto_broker):
    f = Fleet(
        mosquitto_broker.host,
        mosquitto_broker.port,
        heartbeat_s=1,
        keepalive_s=3,
        connect_rate=500,
        seed=7,
    )
    yield f
    await f.stop()


# ============================================================================ HTTP servers


@dataclass
class ServedFile:
    data: bytes
    truncate_first: bool = False  # first GET sends half the body, then drops the connection
    requests: list[str] = field(default_factory=list)  # Range header of each GET ("" = none)

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


class HttpServer:
    """``http.server`` in a thread on a random port; content and streams set per test."""

    def __init__(self) -> None:
        self.files: dict[str, ServedFile] = {}
        self.stream_bytes_sent: dict[str, int] = {}
        outer = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                url = urlparse(self.path)
                if url.path.startswith("/live/"):
                    outer._stream(self, url.path, parse_qs(url.query))
                else:
                    outer._file(self, url.path)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host}:{port}"

    def add(self, path: str, data: bytes, **kw) -> ServedFile:
        self.files[path] = ServedFile(data, **kw)
        return self.files[path]

    def _file(self, h: BaseHTTPRequestHandler, path: str) -> None:
        f = self.files.get(path)
        if f is None:
            h.send_error(404)
            return
        rng = h.headers.get("Range", "")
        f.requests.append(rng)
        start = 0
        if rng.startswith("bytes=") and rng.endswith("-"):
            start = int(rng[6:-1])
        body = f.data[start:]
        h.send_response(206 if start else 200)
        h.send_header("Content-Length", str(len(body)))
        h.send_header("Accept-Ranges", "bytes")
        if start:
            h.send_header("Content-Range", f"bytes {start}-{len(f.data) - 1}/{len(f.data)}")
        h.end_headers()
        if f.truncate_first and len(f.requests) == 1:
            h.wfile.write(body[: len(body) // 2])
            h.wfile.flush()
            h.close_connection = True
            with contextlib.suppress(OSError):
                h.connection.shutdown(2)
            return
        h.wfile.write(body)

    def _stream(self, h: BaseHTTPRequestHandler, path: str, query: dict) -> None:
        """Live stream: 1 KiB every 20 ms for ``seconds`` (default: until the client leaves)."""
        seconds = float(query.get("seconds", ["3600"])[0])
        h.send_response(200)
        h.send_header("Content-Type", "audio/mpeg")
        h.send_header("Connection", "close")
        h.end_headers()
        h.close_connection = True
        self.stream_bytes_sent.setdefault(path, 0)
        deadline = time.monotonic() + seconds
        chunk = b"\xff\xfb" + bytes(1022)
        try:
            while time.monotonic() < deadline:
                h.wfile.write(chunk)
                h.wfile.flush()
                self.stream_bytes_sent[path] += len(chunk)
                time.sleep(0.02)
        except OSError:
            return  # the node hung up (stop / pre-emption)

    def __enter__(self) -> HttpServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def http_server():
    with HttpServer() as srv:
        yield srv
