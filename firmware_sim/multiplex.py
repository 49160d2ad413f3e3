"""Multiplexed ingest-load mode: many *virtual* nodes over a few MQTT connections.

A real simulated node (``SimNode``) is one MQTT client with its own socket and Last Will, as
the protocol requires; about 5,000 of them fit in one process. A nation-scale controller
(100,000+ clusters) must be load-tested on this 2-core machine too, so this mode puts the
uplink traffic of many nodes on a handful of connections:

* every virtual node announces ``{"online": true, ...}`` on its own status topic once
  (retained, QoS 1) at start, at ``announce_rate`` nodes per second, and
  ``{"online": false, "reason": "shutdown"}`` (retained, QoS 1) on a clean stop;
* every virtual node publishes a protocol-valid heartbeat (``loa.protocol.Heartbeat`` and
  ``encode``, values from the same ``Hardware`` model as ``SimNode``) every ``heartbeat_s``.
  The beats of all nodes are spread evenly over the period (beat ``j`` is due at
  ``t0 + j * heartbeat_s / n``), not sent in bursts, and each carries ``ts`` = the wall
  clock at the moment it is published, so a controller's ``processed - ts`` is its real
  ingest lag;
* the fleet measures itself: heartbeats published, achieved rate, and how late against its
  schedule each beat went out (p50/p99/max), so a slow publisher is never mistaken for a
  slow controller.

Cost. Through paho's ``publish`` a QoS 0 message costs ~250 µs of CPU here (a socket write,
an event-loop writer registration, a self-pipe wake-up and a ReasonCode/Properties pair per
message), which would make the load generator, not the controller, the bottleneck at
100,000 nodes. So heartbeats due in the same scheduler tick are framed as MQTT PUBLISH
packets (QoS 0: fixed header, topic, payload; see ``publish_frame``) and handed to paho's
outgoing queue as one write per connection (``_Link.send_frames``); paho still owns the
socket, ordering, partial writes and keep-alive, and the broker parses every frame (the
tests decode every message it delivers). Consecutive nodes of the schedule share a link in
blocks of about one tick's worth of beats, so a tick is usually one write. Statuses (QoS 1,
retained) go through paho's ``publish``, which tracks their acknowledgements.

What virtual nodes do NOT have, by construction:

* **no per-node Last Will.** One connection carries thousands of nodes, and MQTT gives a
  connection one will, so the broker cannot announce which node died. When a connection is
  lost the controller sees its nodes go offline by heartbeat time-out (3 x heartbeat_s),
  never by a ``lost`` will. Use real nodes (``loa sim --nodes``) to test wills.
* no commands (nothing subscribes to ``cmd`` topics), no playback, no faults, no events;
* client ids are ``{prefix}-mux-…``, not node ids, so a broker with per-node passwords and
  ACLs (``loa nodes provision``) refuses them: this is a loopback/bench tool.

It is an ingest load generator, not a device model.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import random
import secrets
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from typing import Literal

import aiomqtt
import paho.mqtt.client as mqtt

from firmware_sim import mqtt_link
from firmware_sim.fleet import _n
from firmware_sim.hardware import Hardware
from firmware_sim.node import FW_VERSION
from loa.protocol import NODE_ID_RE, Heartbeat, Status, Topics, encode
from loa.timeutil import now_ms as real_now_ms

log = logging.getLogger(__name__)
mqtt_log = logging.getLogger("firmware_sim.mqtt")

MUX_FW_VERSION = f"{FW_VERSION}+mux"
MIN_TICK_S = 0.01  # scheduler granularity: beats due within 10 ms go out together
BLOCK_S = 0.01  # consecutive nodes per link: about this many seconds of beats
MAX_BATCH = 2_000  # beats per loop turn before yielding, so sockets get written
INFLIGHT_QOS1 = 1_000  # per connection: statuses in flight before paho queues them
RECONNECT_MAX_S = 30.0
DEFAULT_CONNECTIONS = 40
DEFAULT_ANNOUNCE_RATE = 5_000.0
DEFAULT_VOLUME = 70

Phase = Literal["connecting", "announcing", "beating", "stopping", "stopped"]


class LatenessHistogram:
    """How late (ms) each beat was published against its schedule: 1 ms buckets to 10 s,
    then one overflow bucket (the exact maximum is kept separately). Bounded memory however
    long the fleet runs."""

    LIMIT_MS = 10_000

    def __init__(self) -> None:
        self.counts = [0] * (self.LIMIT_MS + 2)
        self.total = 0
        self.max_ms = 0.0

    def add(self, late_s: float) -> None:
        ms = max(0.0, late_s * 1000)
        self.counts[min(int(ms), self.LIMIT_MS + 1)] += 1
        self.total += 1
        if ms > self.max_ms:
            self.max_ms = ms

    def quantile(self, q: float) -> float | None:
        """Upper edge (ms) of the bucket holding the q-quantile; None when empty."""
        if not self.total:
            return None
        rank = max(1, int(q * self.total + 0.999999))
        seen = 0
        for i, c in enumerate(self.counts):
            seen += c
            if seen >= rank:
                return float(i + 1) if i <= self.LIMIT_MS else round(self.max_ms, 1)
        return round(self.max_ms, 1)  # pragma: no cover - rank <= total


@dataclass(slots=True)
class VirtualNode:
    node_id: str
    link: int
    status_topic: str
    heartbeat_topic: str
    hw: Hardware
    boot_mono: float = 0.0
    announced: bool = False


@dataclass(frozen=True, slots=True)
class VirtualFleetStats:
    nodes: int
    connections: int
    connected: int
    heartbeat_s: float
    phase: Phase
    announced: int  # online statuses acknowledged by the broker (QoS 1)
    announce_s: float  # from the first online status to the last acknowledgement
    heartbeats: int  # heartbeats handed to a connected link (ts stamped just before)
    skipped: int  # beats that fell due while their link was down
    shutdowns: int  # shutdown statuses acknowledged by the broker
    disconnects: int
    beating_s: float  # time since the heartbeat schedule started
    rate_per_s: float  # achieved: heartbeats / beating_s
    expected_per_s: float  # nodes / heartbeat_s
    late_ms_p50: float | None
    late_ms_p99: float | None
    late_ms_max: float | None
    at_ms: int

    def as_dict(self) -> dict:
        return asdict(self)

    def vietnamese(self) -> str:
        n = _n

        def ms(v: float | None) -> str:
            return "-" if v is None else f"{v:.0f}"

        return (
            f"Cụm loa ảo: {n(self.nodes)} cụm trên {self.connections} kết nối MQTT "
            f"({self.connected} đang nối); {n(self.announced)} đã báo trực tuyến, "
            f"{n(self.shutdowns)} đã báo tắt (shutdown); đã gửi {n(self.heartbeats)} nhịp "
            f"tim ({self.rate_per_s:.1f}/giây, kế hoạch {self.expected_per_s:.1f}/giây), "
            f"{n(self.skipped)} nhịp bỏ lỡ do mất kết nối; trễ so với lịch p50 "
            f"{ms(self.late_ms_p50)} ms, p99 {ms(self.late_ms_p99)} ms, tối đa "
            f"{ms(self.late_ms_max)} ms."
        )


class _Link:
    """One MQTT connection carrying many virtual nodes; reconnects on its own."""

    def __init__(self, fleet: VirtualFleet, index: int, client_id: str) -> None:
        self.fleet = fleet
        self.index = index
        self.client_id = client_id
        self.client: aiomqtt.Client | None = None
        self.up = asyncio.Event()
        self.task: asyncio.Task[None] | None = None

    def _make_client(self) -> aiomqtt.Client:
        f = self.fleet
        kw: dict = (
            {"protocol": aiomqtt.ProtocolVersion.V5}
            if f.mqtt_version == 5
            else {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": True}
        )
        return aiomqtt.Client(
            f.host,
            f.port,
            identifier=self.client_id,
            keepalive=f.keepalive_s,
            timeout=10,
            logger=mqtt_log,
            max_inflight_messages=INFLIGHT_QOS1,
            **kw,
        )

    async def run(self) -> None:
        backoff = 1.0
        while True:
            client = self._make_client()
            try:
                await client.__aenter__()
            except aiomqtt.MqttError as exc:
                log.warning("%s: connect failed: %s", self.client_id, exc)
                await asyncio.sleep(backoff * (0.5 + random.random()))
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            backoff = 1.0
            mqtt_link.quiet_disconnect_errors(client)
            self.client = client
            self.up.set()
            try:
                await mqtt_link.disconnected(client)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the connection ended: count it, connect again
                log.warning("%s: connection lost: %s", self.client_id, exc)
            finally:
                self.up.clear()
                self.client = None
            self.fleet.disconnects += 1
            await asyncio.sleep(backoff * (0.5 + random.random()))

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool = False
    ) -> mqtt.MQTTMessageInfo | None:
        """Hand to paho without awaiting (no task per message); None when the link is down."""
        client = self.client
        if client is None or not self.up.is_set():
            return None
        info = mqtt_link.paho(client).publish(topic, payload, qos, retain)
        return info if info.rc == mqtt.MQTT_ERR_SUCCESS else None

    def send_frames(self, frames: list[bytes]) -> bool:
        """Queue ready-made QoS 0 PUBLISH frames as one write on paho's outgoing queue (paho
        has no batch publish). False when the link is down (the frames are dropped, as a
        device drops QoS 0 messages while offline)."""
        client = self.client
        if client is None or not self.up.is_set():
            return False
        inner = mqtt_link.paho(client)
        if not inner.is_connected():
            return False
        # Private paho 2.x API (checked against 2.2): _packet_queue(command, packet, mid, qos,
        # info). paho writes the bytes in order with its other packets and handles partial
        # writes; PUBLISH with qos 0 marks ``info`` published once all bytes are out.
        inner._packet_queue(
            mqtt.PUBLISH,
            b"".join(frames),
            0,
            0,  # noqa: SLF001
            mqtt.MQTTMessageInfo(0),
        )
        return True

    async def close(self) -> None:
        if self.task is not None:
            self.task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self.task
        client = self.client
        self.client = None
        self.up.clear()
        if client is not None:
            with contextlib.suppress(Exception):
                await client.__aexit__(None, None, None)


class VirtualFleet:
    """``node_ids`` carried by ``connections`` MQTT links: consecutive slots of the
    heartbeat schedule share a link in blocks of ~``BLOCK_S`` of beats, blocks go round-robin
    over the links (see the module docstring for why)."""

    def __init__(
        self,
        host: str,
        port: int,
        node_ids: Sequence[str],
        *,
        connections: int = DEFAULT_CONNECTIONS,
        heartbeat_s: float = 30.0,
        topics: Topics | None = None,
        keepalive_s: int = 60,
        announce_rate: float = DEFAULT_ANNOUNCE_RATE,
        mqtt_version: Literal[4, 5] = 4,
        clock_offset_ms: int = 0,
        client_prefix: str = "sim",
        seed: int | None = None,
        clock: Callable[[], int] = real_now_ms,
    ) -> None:
        if not node_ids:
            raise ValueError("Cần ít nhất một cụm loa ảo")
        bad = [i for i in node_ids if not NODE_ID_RE.match(i)]
        if bad:
            raise ValueError(f"Mã cụm loa không hợp lệ: {', '.join(bad[:5])}")
        if heartbeat_s <= 0 or announce_rate <= 0 or connections < 1:
            raise ValueError("heartbeat_s, announce_rate và connections phải dương")
        self.host, self.port = host, port
        self.topics = topics or Topics()
        self.heartbeat_s = heartbeat_s
        self.keepalive_s = keepalive_s
        self.announce_rate = announce_rate
        self.mqtt_version = mqtt_version
        self.clock_offset_ms = clock_offset_ms
        self._clock = clock
        self.rng = random.Random(seed)
        n_links = min(connections, len(node_ids))
        token = secrets.token_hex(3)  # two fleets (or shards) never share a client id
        self.links = [_Link(self, k, f"{client_prefix}-mux-{token}-{k}") for k in range(n_links)]
        block = max(1, math.ceil(len(node_ids) / heartbeat_s * BLOCK_S))
        self.nodes = [
            VirtualNode(
                node_id,
                (i // block) % n_links,
                self.topics.status(node_id),
                self.topics.heartbeat(node_id),
                Hardware(node_id),
            )
            for i, node_id in enumerate(node_ids)
        ]
        self._v5 = mqtt_version == 5
        self._frames: list[list[bytes]] = [[] for _ in self.links]
        self._framed: list[list[float]] = [[] for _ in self.links]  # due time of each frame
        self.phase: Phase = "connecting"
        self.announced = 0
        self.heartbeats = 0
        self.skipped = 0
        self.shutdowns = 0
        self.disconnects = 0
        self.lateness = LatenessHistogram()
        self._beat_task: asyncio.Task[None] | None = None
        self._beat_t0: float | None = None
        self._beat_t1: float | None = None
        self._announce_s = 0.0

    def now_ms(self) -> int:
        return self._clock() + self.clock_offset_ms

    # ------------------------------------------------------------------ life cycle

    async def start(self, *, connect_timeout: float = 30.0) -> None:
        """Connect every link, announce every node online (paced, waits for the broker's
        acknowledgements), then start the heartbeat schedule in the background."""
        for link in self.links:
            link.task = asyncio.create_task(link.run(), name=f"mux-{link.index}")
        try:
            async with asyncio.timeout(connect_timeout):
                await asyncio.gather(*(link.up.wait() for link in self.links))
        except TimeoutError:
            up = sum(link.up.is_set() for link in self.links)
            raise ConnectionError(
                f"chỉ {up}/{len(self.links)} kết nối MQTT tới {self.host}:"
                f"{self.port} thành công sau {connect_timeout:g} giây"
            ) from None
        self.phase = "announcing"
        await self._announce_all()
        self.phase = "beating"
        self._beat_task = asyncio.create_task(self._beat_loop(), name="mux-beats")

    async def stop(self, *, ack_timeout: float = 60.0) -> None:
        """Clean stop: no more beats, every announced node says ``shutdown`` (retained,
        QoS 1, acknowledged), then each link sends DISCONNECT."""
        if self.phase == "stopped":
            return
        self.phase = "stopping"
        if self._beat_task is not None:
            self._beat_task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._beat_task
            self._beat_t1 = time.monotonic()
        infos = []
        for i, node in enumerate(n for n in self.nodes if n.announced):
            status = Status(online=False, reason="shutdown", ts=self.now_ms())
            info = self.links[node.link].publish(node.status_topic, encode(status), 1, True)
            if info is not None:
                infos.append(info)
            if i % 1000 == 999:
                await asyncio.sleep(0)  # let paho write what it has queued
        self.shutdowns = await _wait_acked(infos, ack_timeout)
        for link in self.links:
            await link.close()
        self.phase = "stopped"

    async def __aenter__(self) -> VirtualFleet:
        await self.start()
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ announce

    async def _announce_all(self, ack_timeout: float = 60.0) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        interval = 1.0 / self.announce_rate
        infos: list[mqtt.MQTTMessageInfo] = []
        i, n = 0, len(self.nodes)
        while i < n:
            due = min(n, int((loop.time() - t0) / interval) + 1)
            while i < due:
                node = self.nodes[i]
                node.boot_mono = loop.time()
                status = Status(
                    online=True, fw=MUX_FW_VERSION, boot_id=secrets.token_hex(8), ts=self.now_ms()
                )
                info = self.links[node.link].publish(node.status_topic, encode(status), 1, True)
                if info is not None:
                    infos.append(info)
                    node.announced = True
                i += 1
            await asyncio.sleep(max(MIN_TICK_S, t0 + i * interval - loop.time()))
        self.announced = await _wait_acked(infos, ack_timeout)
        self._announce_s = loop.time() - t0

    # ------------------------------------------------------------------ heartbeats

    async def _beat_loop(self) -> None:
        """Beat ``j`` (node ``j % n``, its seq ``j // n``) is due at ``t0 + j * period/n``."""
        n = len(self.nodes)
        interval = self.heartbeat_s / n
        t0 = self._beat_t0 = time.monotonic()
        j = 0
        while True:
            target = int((time.monotonic() - t0) / interval) + 1
            due = min(target, j + MAX_BATCH)
            while j < due:
                self._beat(self.nodes[j % n], j // n, t0 + j * interval)
                j += 1
            self._send_framed()
            if target > j:  # behind schedule: let the links write, then catch up
                await asyncio.sleep(0)
            else:
                await asyncio.sleep(max(MIN_TICK_S, t0 + j * interval - time.monotonic()))

    def _beat(self, node: VirtualNode, seq: int, due_at: float) -> None:
        hw = node.hw
        hw.advance(self.heartbeat_s if seq else 0.0, False, self.rng)
        now = time.monotonic()
        ts = self.now_ms()
        hb = Heartbeat(
            seq=seq,
            ts=ts,
            uptime_s=int(now - node.boot_mono) if node.boot_mono else 0,
            volume=DEFAULT_VOLUME,
            amp=hw.amp,
            speakers_ok=hw.speakers_ok,
            speakers_total=hw.speakers_total,
            power=hw.power,
            net=hw.net,
            rssi_dbm=hw.rssi_dbm(),
            playing=None,
            battery_v=round(hw.battery_v, 2),
            temp_c=hw.temp_c(ts, False),
            fw=MUX_FW_VERSION,
        )
        self._frames[node.link].append(publish_frame(node.heartbeat_topic, encode(hb), v5=self._v5))
        self._framed[node.link].append(due_at)

    def _send_framed(self) -> None:
        now = time.monotonic()
        for link, frames, due in zip(self.links, self._frames, self._framed, strict=True):
            if not frames:
                continue
            if link.send_frames(frames):
                self.heartbeats += len(frames)
                for due_at in due:
                    self.lateness.add(now - due_at)
            else:
                self.skipped += len(frames)
            frames.clear()
            due.clear()

    # ------------------------------------------------------------------ figures

    def stats(self) -> VirtualFleetStats:
        beating_s = (
            (self._beat_t1 or time.monotonic()) - self._beat_t0
            if self._beat_t0 is not None
            else 0.0
        )
        return VirtualFleetStats(
            nodes=len(self.nodes),
            connections=len(self.links),
            connected=sum(link.up.is_set() for link in self.links),
            heartbeat_s=self.heartbeat_s,
            phase=self.phase,
            announced=self.announced,
            announce_s=round(self._announce_s, 3),
            heartbeats=self.heartbeats,
            skipped=self.skipped,
            shutdowns=self.shutdowns,
            disconnects=self.disconnects,
            beating_s=round(beating_s, 3),
            rate_per_s=round(self.heartbeats / beating_s, 2) if beating_s > 0 else 0.0,
            expected_per_s=round(len(self.nodes) / self.heartbeat_s, 2),
            late_ms_p50=self.lateness.quantile(0.5),
            late_ms_p99=self.lateness.quantile(0.99),
            late_ms_max=round(self.lateness.max_ms, 1) if self.lateness.total else None,
            at_ms=real_now_ms(),
        )


async def _wait_acked(infos: list[mqtt.MQTTMessageInfo], timeout: float) -> int:
    """How many of these QoS 1 publishes the broker acknowledged within ``timeout``."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    pending = infos
    acked = 0
    while True:
        still = []
        for info in pending:
            try:
                done = info.is_published()
            except (RuntimeError, ValueError):  # the link died with it in flight
                continue
            if done:
                acked += 1
            else:
                still.append(info)
        pending = still
        if not pending or loop.time() >= deadline:
            return acked
        await asyncio.sleep(0.02)


def publish_frame(topic: str, payload: bytes, *, v5: bool = False) -> bytes:
    """One MQTT PUBLISH packet, QoS 0, not retained (MQTT 3.1.1 section 3.3; MQTT 5 adds an
    empty property list): fixed header 0x30, remaining length, UTF-8 topic with its 16-bit
    length, payload. QoS 0 has no packet identifier."""
    t = topic.encode()
    body_len = 2 + len(t) + (1 if v5 else 0) + len(payload)
    return b"".join(
        (
            b"\x30",
            _remaining_length(body_len),
            len(t).to_bytes(2, "big"),
            t,
            b"\x00" if v5 else b"",
            payload,
        )
    )


def _remaining_length(n: int) -> bytes:
    """MQTT variable byte integer: 7 bits per byte, high bit = more bytes follow."""
    out = bytearray()
    while True:
        byte, n = n % 128, n // 128
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)
