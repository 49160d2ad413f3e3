"""One simulated cluster: an MQTT client that behaves as docs/protocol.md requires.

One task per node does everything periodic (connect, reconnect with back-off, heartbeat);
commands arrive through a paho topic callback and are handled synchronously, and uplink
messages are handed to paho without waiting for the broker (see ``mqtt_link``), so the
per-node cost is one task, one socket and a few kilobytes, and a fleet of thousands fits in
one process. Broadcast jobs get a task of their own only while they exist.

What survives a reboot (like a device's flash): configuration (heartbeat_s,
default_volume), the recently seen command ids and the hardware with its faults. What a
reboot resets: boot_id, seq, uptime, the volume (back to default_volume) and the playlist.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections import OrderedDict, deque
from dataclasses import dataclass
from typing import Literal

import aiomqtt
import paho.mqtt.client as mqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from pydantic import BaseModel

from firmware_sim import mqtt_link
from firmware_sim.faults import Fault
from firmware_sim.fetch import SharedHttp
from firmware_sim.hardware import WEAK_SIGNAL_DEFAULT_DBM, Hardware, Net, PowerSource
from firmware_sim.player import Player
from loa.protocol import (
    NODE_ID_RE,
    CmdAck,
    ConfigCmd,
    FaultEvent,
    Heartbeat,
    PlayCmd,
    Rejection,
    SelftestCmd,
    SelftestEvent,
    Status,
    StopCmd,
    StreamCmd,
    Topics,
    VolumeCmd,
    decode_command,
    encode,
    guess_cmd_id,
    lost_will,
)
from loa.timeutil import now_ms as real_now_ms

log = logging.getLogger(__name__)
mqtt_log = logging.getLogger("firmware_sim.mqtt")

FW_VERSION = "sim-1.0.0"
DEFAULT_CLOCK_OFFSET_FAULT_MS = 120_000
SEEN_CMD_IDS = 512  # duplicate detection window (a QoS 1 redelivery comes soon)
OUTBOX_MAX = 200  # events kept while offline, oldest dropped first
SESSION_EXPIRY_S = 7 * 86400  # MQTT 5: keep the session (queued commands) for a week
RECONNECT_MAX_S = 30.0

AMP_VI = {"ok": "tốt", "fault": "lỗi", "off": "tắt"}


@dataclass(slots=True)
class NodeStats:
    connects: int = 0
    heartbeats: int = 0
    commands: int = 0
    duplicates: int = 0
    events: int = 0
    dropped_events: int = 0


class SimNode:
    def __init__(
        self,
        node_id: str,
        host: str,
        port: int,
        *,
        topics: Topics | None = None,
        heartbeat_s: float = 30,
        keepalive_s: int = 60,
        speakers: int = 2,
        net: Net | None = None,
        power_source: PowerSource | None = None,
        password: str | None = None,
        clock_offset_ms: int = 0,
        default_volume: int = 70,
        http: SharedHttp | None = None,
        rng: random.Random | None = None,
        mqtt_version: Literal[4, 5] = 4,
        fw: str = FW_VERSION,
        battery_drain_v_per_h: float | None = None,
    ) -> None:
        if not NODE_ID_RE.match(node_id):
            raise ValueError(f"Mã cụm loa không hợp lệ: '{node_id}' (3-64 ký tự A-Z a-z 0-9 _ -)")
        self.node_id = node_id
        self.host, self.port = host, port
        self.topics = topics or Topics()
        self.heartbeat_s = heartbeat_s
        self.keepalive_s = keepalive_s
        self.password = password
        self.clock_offset_ms = clock_offset_ms
        self.default_volume = default_volume
        self.mqtt_version = mqtt_version
        self.fw = fw
        self.rng = rng or random.Random()
        hw_kw = {} if battery_drain_v_per_h is None else {"drain_v_per_h": battery_drain_v_per_h}
        self.hw = Hardware(
            node_id, speakers_total=speakers, net=net, power_source=power_source, **hw_kw
        )
        self.faults: dict[Fault, int | None] = {}
        self.stats = NodeStats()
        self.connected = asyncio.Event()
        self.http = http
        self._own_http = False
        self._seen: OrderedDict[str, None] = OrderedDict()
        self._outbox: deque[tuple[str, bytes, int, bool]] = deque(maxlen=OUTBOX_MAX)
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        self._ending: Literal["stop", "kill"] | None = None
        self._hung = False
        self._held: list[bytes] = []
        self._wakeup: asyncio.Future[None] | None = None
        self._next_beat = 0.0
        self._last_beat = 0.0
        # per boot
        self.boot_id = ""
        self.seq = 0
        self.volume = default_volume
        self._boot_mono = 0.0
        self._last_tick = 0.0
        self.player: Player | None = None
        self._status_topic = self.topics.status(node_id)
        self._heartbeat_topic = self.topics.heartbeat(node_id)
        self._events_topic = self.topics.events(node_id)
        self._cmd_topic = self.topics.cmd(node_id)

    # ================================================================== clock & state

    def now_ms(self) -> int:
        """The node's own clock: what it stamps and schedules by (NTP fault = offset)."""
        return real_now_ms() + self.clock_offset_ms

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @property
    def hung(self) -> bool:
        return self._hung

    @property
    def playing(self) -> str | None:
        return self.player.playing_id if self.player else None

    @property
    def effective_volume(self) -> int:
        override = self.player.volume_override if self.player else None
        return self.volume if override is None else override

    # ================================================================== life cycle

    def start(self) -> asyncio.Task[None]:
        """Boot: new boot_id, seq from 0, then connect (and keep reconnecting) in one task."""
        if self.running:
            raise RuntimeError(f"{self.node_id} is already running")
        loop = asyncio.get_running_loop()
        if self.http is None:
            self.http, self._own_http = SharedHttp.create(), True
        self._ending = None
        self._hung = False
        self._held.clear()
        self.boot_id = uuid.uuid4().hex[:16]
        self.seq = 0
        self.volume = self.default_volume
        self._boot_mono = self._last_tick = loop.time()
        self.player = Player(self, self.http)
        self._task = loop.create_task(self._run(), name=f"node-{self.node_id}")
        return self._task

    async def wait_connected(self, timeout: float | None = None) -> bool:
        try:
            async with asyncio.timeout(timeout):
                await self.connected.wait()
        except TimeoutError:
            return False
        return True

    async def stop(self) -> None:
        """Clean shutdown: end broadcasts, publish ``online: false, reason: shutdown``
        (retained), then DISCONNECT, so the broker drops the will."""
        if not self.running:
            return
        self._ending = "stop"
        await self._finish_task()
        if self._own_http and self.http is not None:
            await self.http.aclose()
            self.http, self._own_http = None, False

    async def kill(self, mode: mqtt_link.KillMode = "reset") -> None:
        """Abrupt death (power pulled): no goodbye, no DISCONNECT; the broker publishes the
        retained will ``online: false, reason: lost``. See ``mqtt_link.cut`` for the modes."""
        if not self.running:
            return
        self._ending = "kill"
        if self.player:
            self.player.shutdown(emit=False)
        client = self._client
        if client is not None:
            mqtt_link.cut(client, mode, hold_s=self.keepalive_s * 2 + 5)
        await self._finish_task()

    def hang(self) -> None:
        """Firmware hang: the MQTT stack keeps the link (pings go on, so no will), but the
        application stops heartbeating and handling commands."""
        self._hung = True

    def resume(self) -> None:
        """Leave the hang: beat at once and handle the commands that arrived meanwhile."""
        if not self._hung:
            return
        self._hung = False
        held, self._held = self._held, []
        for payload in held:
            self._handle_command(payload)
        self._next_beat = 0.0
        self._wake()

    async def _finish_task(self) -> None:
        task = self._task
        if task is None:
            return
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task

    # ================================================================== connection

    def _make_client(self) -> aiomqtt.Client:
        will = aiomqtt.Will(self._status_topic, lost_will(), qos=1, retain=True)
        kw: dict = {}
        if self.mqtt_version == 5:
            props = Properties(PacketTypes.CONNECT)
            props.SessionExpiryInterval = SESSION_EXPIRY_S
            kw = {"protocol": aiomqtt.ProtocolVersion.V5, "clean_start": False, "properties": props}
        else:
            kw = {"protocol": aiomqtt.ProtocolVersion.V311, "clean_session": False}
        client = aiomqtt.Client(
            self.host,
            self.port,
            identifier=self.node_id,
            username=self.node_id,
            password=self.password,
            will=will,
            keepalive=self.keepalive_s,
            timeout=10,
            logger=mqtt_log,
            **kw,
        )
        # Registered before CONNECT: a persistent session delivers queued commands at once.
        mqtt_link.paho(client).message_callback_add(self._cmd_topic, self._on_cmd_message)
        return client

    async def _run(self) -> None:
        backoff = 1.0
        while True:
            client = self._make_client()
            try:
                await self._connect(client)
            except aiomqtt.MqttError as exc:
                log.debug("%s: connect failed: %s", self.node_id, exc)
                await asyncio.sleep(backoff * (0.5 + self.rng.random()))
                backoff = min(backoff * 2, RECONNECT_MAX_S)
                continue
            backoff = 1.0
            mqtt_link.quiet_disconnect_errors(client)
            self._client = client
            try:
                await self._session(client)
            except aiomqtt.MqttError as exc:
                log.info("%s: connection lost: %s", self.node_id, exc)
                with contextlib.suppress(Exception):
                    await client.__aexit__(None, None, None)
            except asyncio.CancelledError:
                if self._ending != "kill":
                    await self._say_goodbye(client)
                raise
            finally:
                self._client = None
                self.connected.clear()
            await asyncio.sleep(backoff * (0.5 + self.rng.random()))

    async def _connect(self, client: aiomqtt.Client) -> None:
        """CONNECT, and if stopped or killed meanwhile, end that connection the way the
        node is ending (aiomqtt connects in an executor thread that a cancel cannot stop,
        which would leave an orphan connection behind)."""
        attempt = asyncio.ensure_future(client.__aenter__())
        try:
            await asyncio.shield(attempt)
        except asyncio.CancelledError:
            with contextlib.suppress(Exception):
                await attempt
                if self._ending == "kill":
                    mqtt_link.cut(client, "reset", hold_s=0)
                else:
                    await self._say_goodbye(client)
            raise

    async def _say_goodbye(self, client: aiomqtt.Client) -> None:
        if self.player:
            self.player.shutdown(emit=True)
        status = Status(online=False, reason="shutdown", ts=self.now_ms())
        try:
            await client.publish(self._status_topic, encode(status), qos=1, retain=True, timeout=5)
            await client.__aexit__(None, None, None)
        except (aiomqtt.MqttError, TimeoutError) as exc:
            log.warning("%s: clean shutdown incomplete: %s", self.node_id, exc)

    async def _session(self, client: aiomqtt.Client) -> None:
        # Subscribe before announcing "online": a command sent the moment the controller
        # sees the status must find the subscription in place (first connect).
        await client.subscribe(self._cmd_topic, qos=1)
        status = Status(online=True, fw=self.fw, boot_id=self.boot_id, ts=self.now_ms())
        await client.publish(self._status_topic, encode(status), qos=1, retain=True)
        self.stats.connects += 1
        self.connected.set()
        while self._outbox:
            self._send(*self._outbox.popleft())
        lost = mqtt_link.disconnected(client)
        loop = asyncio.get_running_loop()
        self._next_beat = 0.0  # first heartbeat right after connecting
        while True:
            now = loop.time()
            if now >= self._next_beat:
                if not self._hung:
                    self._beat()
                self._last_beat = now
                self._next_beat = now + self.heartbeat_s
            self._wakeup = loop.create_future()
            done, _ = await asyncio.wait(
                (lost, self._wakeup), timeout=max(0.0, self._next_beat - loop.time())
            )
            if lost in done:
                exc = lost.exception()
                raise aiomqtt.MqttError(f"disconnected: {exc}")

    def _wake(self) -> None:
        if self._wakeup is not None and not self._wakeup.done():
            self._wakeup.set_result(None)

    # ================================================================== uplink

    def _send(self, topic: str, payload: bytes, qos: int, retain: bool = False) -> None:
        """Hand a message to paho; QoS 1 messages wait in the outbox while offline."""
        client = self._client
        if client is not None and self.connected.is_set():
            info = mqtt_link.paho(client).publish(topic, payload, qos, retain)
            if info.rc == mqtt.MQTT_ERR_SUCCESS:
                return
        if qos > 0:
            if len(self._outbox) == self._outbox.maxlen:
                self.stats.dropped_events += 1
            self._outbox.append((topic, payload, qos, retain))

    def emit(self, event: BaseModel) -> None:
        self.stats.events += 1
        self._send(self._events_topic, encode(event), 1)

    def _beat(self) -> None:
        self._advance_hardware()
        playing = self.playing
        hw = self.hw
        hb = Heartbeat(
            seq=self.seq,
            ts=self.now_ms(),
            uptime_s=int(asyncio.get_running_loop().time() - self._boot_mono),
            volume=self.effective_volume,
            amp=hw.amp,
            speakers_ok=hw.speakers_ok,
            speakers_total=hw.speakers_total,
            power=hw.power,
            net=hw.net,
            rssi_dbm=hw.rssi_dbm(),
            playing=playing,
            battery_v=round(hw.battery_v, 2),
            temp_c=hw.temp_c(self.now_ms(), playing is not None),
            fw=self.fw,
        )
        self._send(self._heartbeat_topic, encode(hb), 0)
        self.seq += 1
        self.stats.heartbeats += 1

    def _advance_hardware(self) -> None:
        now = asyncio.get_running_loop().time()
        self.hw.advance(now - self._last_tick, self.playing is not None, self.rng)
        self._last_tick = now

    # ================================================================== commands

    def _on_cmd_message(
        self, _client: mqtt.Client, _userdata: object, message: mqtt.MQTTMessage
    ) -> None:
        # Runs inside paho's read callback: an exception here would tear the connection down.
        try:
            self._handle_command(message.payload)
        except Exception:
            log.exception("%s: command handling failed", self.node_id)

    def _handle_command(self, payload: bytes) -> None:
        if self._ending is not None:
            return
        if self._hung:
            self._held.append(payload)
            return
        self.stats.commands += 1
        try:
            cmd = decode_command(payload)
        except Rejection as exc:
            cmd_id = guess_cmd_id(payload)
            if cmd_id and self._already_seen(cmd_id):
                return
            self._ack(cmd_id, False, f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason)
            return
        if self._already_seen(cmd.cmd_id):
            return
        if cmd.expires_at is not None and cmd.expires_at < self.now_ms():
            self._ack(cmd.cmd_id, False, "expired")
            return
        self._ack(cmd.cmd_id, True)
        self._execute(cmd)

    def _already_seen(self, cmd_id: str) -> bool:
        """Protocol: one cmd_ack per command. A repeat (QoS 1 redelivery, a controller
        retry) is ignored without a second ack, and counted in ``stats.duplicates``."""
        if cmd_id in self._seen:
            self._seen.move_to_end(cmd_id)
            self.stats.duplicates += 1
            log.info("%s: duplicate cmd_id %s ignored", self.node_id, cmd_id)
            return True
        self._seen[cmd_id] = None
        if len(self._seen) > SEEN_CMD_IDS:
            self._seen.popitem(last=False)
        return False

    def _execute(self, cmd: object) -> None:
        assert self.player is not None
        if isinstance(cmd, PlayCmd | StreamCmd):
            self.player.submit(cmd)
        elif isinstance(cmd, StopCmd):
            self.player.stop(cmd.broadcast_id)
        elif isinstance(cmd, VolumeCmd):
            self.volume = cmd.level
        elif isinstance(cmd, ConfigCmd):
            if cmd.default_volume is not None:
                self.default_volume = cmd.default_volume
            if cmd.heartbeat_s is not None:
                self.heartbeat_s = cmd.heartbeat_s
                self._next_beat = self._last_beat + cmd.heartbeat_s
                self._wake()
        elif isinstance(cmd, SelftestCmd):
            self.emit(self._selftest())

    def _ack(self, cmd_id: str, ok: bool, error: str | None = None) -> None:
        self.emit(CmdAck(type="cmd_ack", ts=self.now_ms(), cmd_id=cmd_id, ok=ok, error=error))

    def _selftest(self) -> SelftestEvent:
        hw = self.hw
        ok = hw.amp == "ok" and hw.speakers_ok == hw.speakers_total and hw.speakers_total > 0
        detail = f"ampli {AMP_VI[hw.amp]}, {hw.speakers_ok}/{hw.speakers_total} loa tốt"
        return SelftestEvent(
            type="selftest",
            ts=self.now_ms(),
            ok=ok,
            speakers_ok=hw.speakers_ok,
            speakers_total=hw.speakers_total,
            detail=detail,
        )

    # ================================================================== faults

    def inject(self, fault: Fault | str, value: int | None = None) -> None:
        """Make a fault happen now; publishes the matching ``fault`` event where protocol v1
        has a code for it (amp_fault, speaker_line, power_lost)."""
        fault = Fault(fault)
        self._advance_hardware()
        hw = self.hw
        self.faults[fault] = value
        if fault is Fault.AMP:
            hw.set_amp_fault(True)
            self._fault_event("amp_fault", "Ampli báo lỗi (quá nhiệt hoặc chập mạch)")
        elif fault is Fault.SPEAKER_LINE:
            hw.set_speaker_lines_lost(1 if value is None else value)
            self._fault_event(
                "speaker_line",
                f"Đường dây loa hở/chập: còn {hw.speakers_ok}/{hw.speakers_total} loa hoạt động",
            )
        elif fault is Fault.POWER_CUT:
            hw.set_mains_cut(True)
            self._fault_event("power_lost", "Mất điện lưới, đang chạy bằng ắc quy")
        elif fault is Fault.WEAK_SIGNAL:
            hw.set_weak_signal(WEAK_SIGNAL_DEFAULT_DBM if value is None else value)
        elif fault is Fault.CLOCK_OFFSET:
            self.clock_offset_ms = DEFAULT_CLOCK_OFFSET_FAULT_MS if value is None else value

    def clear(self, fault: Fault | str) -> None:
        """Repair a fault. Only a restored mains has a protocol event (power_restored); the
        other repairs show in the next heartbeat."""
        fault = Fault(fault)
        self._advance_hardware()
        self.faults.pop(fault, None)
        if fault is Fault.AMP:
            self.hw.set_amp_fault(False)
        elif fault is Fault.SPEAKER_LINE:
            self.hw.set_speaker_lines_lost(0)
        elif fault is Fault.POWER_CUT:
            self.hw.set_mains_cut(False)
            self._fault_event("power_restored", "Có điện lưới trở lại")
        elif fault is Fault.WEAK_SIGNAL:
            self.hw.set_weak_signal(None)
        elif fault is Fault.CLOCK_OFFSET:
            self.clock_offset_ms = 0

    def _fault_event(self, code: str, detail: str) -> None:
        self.emit(FaultEvent(type="fault", ts=self.now_ms(), code=code, detail=detail))
