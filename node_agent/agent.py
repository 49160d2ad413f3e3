"""The node agent: one MQTT connection (docs/protocol.md), real sound, durable events.

Life of a ``play`` (protocol "Behaviour" 1-3, same rules as ``firmware_sim.player``):
accepted (``cmd_ack``) -> downloaded and verified into the cache (``fetched``) -> decoded to
PCM -> at ``start_at`` minus a little, it takes its turn by Thông tư 39 priority (a higher
level pre-empts the one playing, ``preempted``; the same or lower level waits) -> the
``Playout`` thread writes it to the sink so it is heard at ``start_at`` (``started`` with
that time) -> ``finished``. Each accepted broadcast ends with exactly one terminal event.
The job's phase is kept on disk, so a restart resumes a download and never plays a
bulletin twice.

A ``play`` with a node-made ``tone`` (docs/protocol.md) does not wait for its download: the
tone (``loa.tone``) is heard from ``start_at`` (``started`` with ``tone: true``) while the
speech is fetched and decoded alongside; the speech follows the tone, or, when it is not
ready by then, as soon as it is (silence meanwhile); a failed fetch ends the job ``failed``
with the fetch's error once the tone has sounded."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import signal
import subprocess
import threading
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import aiomqtt
import httpx
from pydantic import BaseModel

from loa.protocol import (
    MAX_PAYLOAD_BYTES,
    PRIORITY_RANK,
    CmdAck,
    ConfigCmd,
    FaultEvent,
    Heartbeat,
    PlaybackEvent,
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
from loa.tone import fetch_delay_s, tone_pcm
from node_agent import FW_VERSION, audio, telemetry
from node_agent.cache import ContentCache, FetchError
from node_agent.clock import ClockState, read_clock
from node_agent.config import NodeConfig
from node_agent.store import Store

log = logging.getLogger("loa.node")

# The turn is taken this long before start_at: enough to spawn the sink, prime it with
# silence and read its playback clock a few times (pacat reports it every 50 ms; the
# first sample is placed by it), short enough that a bulletin just ending is not in the way.
PREPARE_S = 0.5
# The sink is opened this long before start_at and held on silence (audio.Playout): enough
# for a sound server to start a new stream (an idle PulseAudio sink can take 1-2 s).
OPEN_AHEAD_S = 3.0
LATE_LIMIT_S = 120  # a bulletin recovered after a restart more than this late is not played
DECODE_AHEAD_S = 8.0  # decode this long before start_at (a 5-minute MP3 takes ~1 s on a Pi)
SELFTEST_FREQ = 1000.0
SELFTEST_S = 1.0
SELFTEST_MIN_LEVEL = 300.0  # Goertzel amplitude (~ -40 dBFS): heard


def now_ms() -> int:
    return int(time.time() * 1000)


@dataclass(eq=False)
class Job:
    cmd: PlayCmd | StreamCmd
    order: int
    rank: int = 0
    task: asyncio.Task[None] | None = None
    turn: asyncio.Future[None] | None = None
    # A toned play's speech: fetched and decoded while the tone sounds (_toned_speech).
    speech: asyncio.Task[None] | None = None
    playout: audio.Playout | None = None
    started: bool = False
    ended: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def broadcast_id(self) -> str:
        return self.cmd.broadcast_id


class Agent:
    def __init__(self, cfg: NodeConfig) -> None:
        self.cfg = cfg
        self.topics = Topics(cfg.topic_root)
        self.node_id = cfg.id
        self.store = Store(cfg.state_dir)
        self.cache = ContentCache(cfg.cache_dir, cfg.cache_max_mb * 1_048_576)
        self.boot_id = uuid.uuid4().hex[:12]
        self.epoch = time.time()
        saved = self.store.settings()  # from config commands, newer than the file
        self.default_volume = saved.get("default_volume", cfg.default_volume)
        self.heartbeat_s = saved.get("heartbeat_s", cfg.heartbeat_s)
        self.volume = self.default_volume  # a reboot returns to the default volume
        self.seq = 0
        self.current: Job | None = None
        self.waiting: list[Job] = []
        self.jobs: set[Job] = set()
        self._order = itertools.count()
        self._flush = asyncio.Event()
        self._stopping = asyncio.Event()
        self._beat_now = asyncio.Event()
        self.connected = False
        self.audio_fault: str | None = None
        self.clock: ClockState | None = None
        self.clock_fault: str | None = None
        self.speakers_ok = cfg.speakers_total
        self.sys_root = Path(cfg.sysfs_root)
        self.relay = telemetry.AmpRelay(cfg.gpio_amp, self.sys_root) if cfg.gpio_amp else None
        self.http: httpx.AsyncClient | None = None
        self._selftest_lock = asyncio.Lock()
        self._pcm: dict[str, list[Any]] = {}  # sha256 -> [pcm, jobs using it]
        self._decode_locks: dict[str, asyncio.Lock] = {}

    # ================================================================== lifecycle

    async def run(self) -> int:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(NotImplementedError, RuntimeError):
                loop.add_signal_handler(sig, self._stopping.set)
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(10.0, read=30.0), follow_redirects=False, trust_env=False
        )
        self._check_clock()
        self._recover_jobs()
        try:
            await self._mqtt_loop()
        finally:
            self._shutdown_jobs()
            await self.http.aclose()
            self.store.close()
        return 0

    def _make_client(self) -> aiomqtt.Client:
        scheme, host, port = self.cfg.broker_parts
        tls = None
        if scheme == "mqtts":
            tls = aiomqtt.TLSParameters(ca_certs=self.cfg.ca_file or None)
        return aiomqtt.Client(
            host,
            port,
            identifier=self.node_id,
            username=self.cfg.mqtt_username,
            password=self.cfg.password or None,
            clean_session=False,
            keepalive=self.cfg.keepalive_s,
            tls_params=tls,
            will=aiomqtt.Will(self.topics.status(self.node_id), lost_will(), qos=1, retain=True),
            max_queued_outgoing_messages=1000,
        )

    async def _mqtt_loop(self) -> None:
        backoff = 1.0
        while not self._stopping.is_set():
            client = self._make_client()
            try:
                async with client:
                    backoff = 1.0
                    await self._session(client)
                    return
            except aiomqtt.MqttError as exc:
                self.connected = False
                log.warning("MQTT: %s; thử lại sau %.0f s", exc, backoff)
            self.connected = False
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), backoff)
            backoff = min(backoff * 2, 30.0)

    async def _session(self, client: aiomqtt.Client) -> None:
        status = Status(online=True, fw=FW_VERSION, boot_id=self.boot_id, ts=now_ms())
        await client.publish(self.topics.status(self.node_id), encode(status), qos=1, retain=True)
        await client.subscribe(self.topics.cmd(self.node_id), qos=1)
        self.connected = True
        log.info("đã kết nối %s", self.cfg.broker)
        tasks = [
            asyncio.create_task(self._receive(client)),
            asyncio.create_task(self._flush_outbox(client)),
            asyncio.create_task(self._heartbeats(client)),
        ]
        stop = asyncio.create_task(self._stopping.wait())
        try:
            done, _ = await asyncio.wait([*tasks, stop], return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t is not stop and t.exception():
                    raise t.exception()  # type: ignore[misc]
            # Clean shutdown: end jobs, give the outbox a moment, say goodbye.
            self._shutdown_jobs()
            self._flush.set()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._drain(), 3)
            bye = Status(
                online=False, reason="shutdown", fw=FW_VERSION, boot_id=self.boot_id, ts=now_ms()
            )
            await client.publish(
                self.topics.status(self.node_id), encode(bye), qos=1, retain=True, timeout=3
            )
        finally:
            for t in [*tasks, stop]:
                t.cancel()
            await asyncio.gather(*tasks, stop, return_exceptions=True)

    async def _drain(self) -> None:
        while self.store.outbox_size():
            await asyncio.sleep(0.05)

    # ================================================================== outbound

    def emit(self, event: BaseModel) -> None:
        """Durable first, then sent: the row leaves the outbox only on the broker's PUBACK."""
        self.store.push(encode(event))
        self._flush.set()

    async def _flush_outbox(self, client: aiomqtt.Client) -> None:
        topic = self.topics.events(self.node_id)
        while True:
            rows = self.store.pending()
            if not rows:
                self._flush.clear()
                await self._flush.wait()
                continue
            for row_id, payload in rows:
                await client.publish(topic, payload, qos=1, timeout=30)
                self.store.delivered(row_id)

    async def _heartbeats(self, client: aiomqtt.Client) -> None:
        topic = self.topics.heartbeat(self.node_id)
        while True:
            # Reading the clock runs chronyc/timedatectl: off the loop. The fault, if any, is
            # emitted on the loop (the outbox signal is an asyncio.Event).
            self._apply_clock(await asyncio.to_thread(read_clock, self.cfg.clock_source))
            hb = await asyncio.to_thread(self.heartbeat)
            await client.publish(topic, encode(hb), qos=0)
            self._beat_now.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._beat_now.wait(), self.heartbeat_s)

    def heartbeat(self) -> Heartbeat:
        pw = telemetry.power(self.sys_root)
        net = telemetry.network(self.sys_root)
        hb = Heartbeat(
            seq=self.seq,
            ts=now_ms(),
            uptime_s=telemetry.uptime_s(),
            volume=self.current_volume(),
            amp=self.amp_state(),
            speakers_ok=min(self.speakers_ok, self.cfg.speakers_total),
            speakers_total=self.cfg.speakers_total,
            power=pw.source,
            net=net.kind,
            rssi_dbm=net.rssi_dbm,
            playing=self.playing_id,
            battery_v=pw.battery_v,
            temp_c=telemetry.cpu_temp_c(self.sys_root),
            ntp_offset_ms=self.clock.offset_ms if self.clock else None,
            cache_free_mb=min(
                self.cache.free_mb(), telemetry.disk_free_mb(self.cfg.cache_dir) or 0.0
            ),
            fw=FW_VERSION,
        )
        self.seq += 1
        return hb

    def current_volume(self) -> int:
        """What is heard now: a playing bulletin's own volume, else the node's."""
        cur = self.current
        if cur is not None and cur.started:
            return self.effective_volume(cur)
        return self.volume

    def amp_state(self) -> str:
        if self.audio_fault:
            return "fault"
        if self.relay is not None:
            state = self.relay.state()
            if state is False:
                return "off"
        return "ok"

    def _check_clock(self) -> None:
        self._apply_clock(read_clock(self.cfg.clock_source))

    def _apply_clock(self, state: ClockState) -> None:
        self.clock = state
        fault = self.clock.fault(self.cfg.clock_max_offset_ms)
        if fault and fault != self.clock_fault:
            log.warning("%s", fault)
            self.emit(FaultEvent(type="fault", ts=now_ms(), code="clock", detail=fault))
        self.clock_fault = fault

    @property
    def playing_id(self) -> str | None:
        cur = self.current
        return cur.broadcast_id if cur is not None and cur.started else None

    # ================================================================== commands

    async def _receive(self, client: aiomqtt.Client) -> None:
        async for message in client.messages:
            payload = message.payload
            if not isinstance(payload, bytes | bytearray):
                payload = str(payload).encode()
            try:
                self.handle_command(bytes(payload))
            except Exception:  # one bad command must not take the connection down
                log.exception("xử lý lệnh lỗi")

    def _ack(self, cmd_id: str, ok: bool, error: str | None = None) -> None:
        self.emit(CmdAck(type="cmd_ack", ts=now_ms(), cmd_id=cmd_id, ok=ok, error=error))

    def handle_command(self, payload: bytes) -> None:
        if len(payload) > MAX_PAYLOAD_BYTES:  # not even parsed: it could be anything
            self._ack("", False, f"oversized: {len(payload)} bytes > {MAX_PAYLOAD_BYTES}")
            return
        try:
            cmd = decode_command(payload)
        except Rejection as exc:
            cmd_id = guess_cmd_id(payload)
            if cmd_id and not self.store.first_sight(cmd_id):
                return
            self._ack(cmd_id, False, f"{exc.reason}: {exc.detail}" if exc.detail else exc.reason)
            return
        if not self.store.first_sight(cmd.cmd_id):
            log.info("lệnh %s lặp lại: bỏ qua", cmd.cmd_id)
            return
        now = now_ms()
        if cmd.expires_at is not None and cmd.expires_at < now:
            self._ack(cmd.cmd_id, False, "expired")
            return
        if self.cfg.max_command_age_s and now - cmd.issued_at > self.cfg.max_command_age_s * 1000:
            self._ack(cmd.cmd_id, False, "expired")
            return
        if isinstance(cmd, PlayCmd | StreamCmd):
            refusal = self._refuse_url(cmd)
            if refusal:
                self._ack(cmd.cmd_id, False, refusal)
                return
            if self.store.job_phase(cmd.broadcast_id) not in (None, "failed"):
                # The same broadcast again (a controller resend with a new cmd_id): it is
                # already in hand or done. Never play a slot twice.
                self._ack(cmd.cmd_id, True)
                return
        self._ack(cmd.cmd_id, True)
        self._execute(cmd)

    def _refuse_url(self, cmd: PlayCmd | StreamCmd) -> str | None:
        """Only the controller's own content (and streams) are played: a node must not be a
        loudspeaker for whatever URL reaches its command topic."""
        url = cmd.url
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            return f"url_refused: không phải URL http(s): {url[:120]}"
        if isinstance(cmd, PlayCmd):
            if not url.startswith(self.cfg.content_base):
                return (
                    f"url_refused: {url[:120]} không thuộc địa chỉ nội dung {self.cfg.content_base}"
                )
            return None
        if self.cfg.stream_base:
            if not url.startswith(self.cfg.stream_base):
                return f"url_refused: luồng {url[:120]} không thuộc {self.cfg.stream_base}"
            return None
        base = urlsplit(self.cfg.content_base)
        if parts.hostname != base.hostname:
            return (
                f"url_refused: luồng {url[:120]} không cùng máy chủ với "
                f"{self.cfg.content_base} (đặt stream_base)"
            )
        return None

    def _execute(self, cmd: Any) -> None:
        if isinstance(cmd, PlayCmd | StreamCmd):
            self.store.put_job(cmd.broadcast_id, cmd.model_dump(mode="json"), "accepted")
            self.submit(cmd)
        elif isinstance(cmd, StopCmd):
            self.stop(cmd.broadcast_id)
        elif isinstance(cmd, VolumeCmd):
            self.volume = cmd.level
            self._beat_now.set()
        elif isinstance(cmd, ConfigCmd):
            if cmd.default_volume is not None:
                self.default_volume = cmd.default_volume
                self.store.set_setting("default_volume", cmd.default_volume)
            if cmd.heartbeat_s is not None:
                self.heartbeat_s = cmd.heartbeat_s
                self.store.set_setting("heartbeat_s", cmd.heartbeat_s)
                self._beat_now.set()
        elif isinstance(cmd, SelftestCmd):
            asyncio.get_running_loop().create_task(self._selftest())

    # ================================================================== jobs

    def submit(self, cmd: PlayCmd | StreamCmd, *, resume: bool = False) -> Job:
        job = Job(cmd, next(self._order), rank=PRIORITY_RANK[cmd.priority])
        self.jobs.add(job)
        job.task = asyncio.get_running_loop().create_task(
            self._life(job, resume), name=f"job-{cmd.broadcast_id}"
        )
        return job

    def _recover_jobs(self) -> None:
        for bid, raw, phase in self.store.unfinished_jobs():
            try:
                cmd = decode_command(_json_bytes(raw))
            except Rejection:
                self.store.set_phase(bid, "failed")
                continue
            assert isinstance(cmd, PlayCmd | StreamCmd)
            if phase == "started" or (
                cmd.start_at and cmd.start_at / 1000 < time.time() - LATE_LIMIT_S
            ):
                # It was on air (or its slot is long gone) when the agent died: playing it
                # now would be the second airing or a wrong-time one. Close it.
                self.store.set_phase(bid, "failed")
                self._event(
                    bid,
                    "failed",
                    error="shutdown",
                    detail="bộ điều khiển nút khởi động lại giữa chừng; không phát lại",
                )
                continue
            log.info("tiếp tục bản tin %s sau khi khởi động lại", bid)
            self.submit(cmd, resume=True)

    def stop(self, broadcast_id: str | None) -> int:
        victims = [
            j
            for j in self.jobs
            if not j.ended and (broadcast_id is None or j.broadcast_id == broadcast_id)
        ]
        for job in victims:
            if job in self.waiting:
                self.waiting.remove(job)
            if job.started:
                self._end(job, "finished", reason="stopped")
            else:
                self._end(job, "failed", error="stopped")
            self._kill(job)
        return len(victims)

    def _shutdown_jobs(self) -> None:
        self.waiting.clear()
        for job in list(self.jobs):
            self._end(job, "failed", error="shutdown")
            self._kill(job)
        self.jobs.clear()

    def _kill(self, job: Job) -> None:
        if job.playout is not None:
            job.playout.cut()
        # The speech download goes in the same moment as the sound (docs/protocol.md: a stop
        # or pre-emption "abandons the download"), not one loop turn later when the job's
        # own clean-up runs: a fetch finishing in between would say "fetched" after the
        # job's terminal event and put "fetched" back on disk, and a restart would then
        # play the pre-empted (or stopped) bulletin.
        if job.speech is not None and not job.speech.done():
            job.speech.cancel()
        if job.task is not None and not job.task.done():
            job.task.cancel()

    async def _life(self, job: Job, resume: bool) -> None:
        cmd = job.cmd
        speech: asyncio.Task[None] | None = None
        try:
            if isinstance(cmd, PlayCmd) and cmd.tone is not None:
                job.extra["pcm_held"] = False
                source: Any = TonedSource(tone_pcm(cmd.tone, audio.RATE))
                speech = job.speech = asyncio.get_running_loop().create_task(
                    self._toned_speech(job, source)
                )
            elif isinstance(cmd, PlayCmd):
                assert self.http is not None
                path, _ = await self.cache.fetch(self.http, cmd.url, cmd.sha256, cmd.bytes)
                self.cache.in_use.add(cmd.sha256)
                self.store.set_phase(job.broadcast_id, "fetched")
                self._event(job.broadcast_id, "fetched")
                job.extra["fetched_at"] = now_ms()
                # Decoded PCM is large (5.8 MB a minute): made shortly before the slot, and
                # shared by the jobs that play the same file, not held for every queued job.
                await self._sleep_until(cmd.start_at / 1000 - DECODE_AHEAD_S if cmd.start_at else 0)
                pcm = await self._decoded(cmd.sha256, path)
                gap = int(cmd.gap_ms * audio.RATE / 1000) * audio.FRAME
                source = RepeatSource(pcm, cmd.repeat, gap)
            else:
                source = None
            slot = cmd.start_at / 1000 if cmd.start_at else 0.0
            # Switch the amplifier on early enough that its warm-up ends at the slot.
            amp_at = slot - PREPARE_S - self.cfg.amp_warmup_ms / 1000 if self.relay else slot
            await self._sleep_until(min(slot - OPEN_AHEAD_S, amp_at))
            done = self._open_playout(job)
            if self.relay is not None and cmd.start_at:
                await self._sleep_until(amp_at)
                await self._amp_on()
            await self._sleep_until(slot - PREPARE_S)
            victim = await self._take_turn(job)
            await self._amp_on()
            if source is None:
                source = await self._open_stream(cmd.url)
            start_at = max(slot, time.time() + self.cfg.output_latency_ms / 1000 + 0.2)
            if victim is not None:
                self._preempt(victim)
            await self._play(job, source, start_at, done)
        except FetchError as exc:
            log.warning("bản tin %s lỗi: %s", job.broadcast_id, exc)
            self._end(job, "failed", error=exc.error, detail=exc.detail)
        except OSError as exc:  # the cache's disk: full, read-only, failing card
            detail = f"bộ nhớ đệm {self.cfg.cache_dir}: {exc.strerror or exc}"
            self.emit(FaultEvent(type="fault", ts=now_ms(), code="storage", detail=detail))
            self._end(job, "failed", error="storage", detail=detail)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("bản tin %s lỗi nội bộ", job.broadcast_id)
            self._end(job, "failed", error="internal", detail=str(exc)[:200])
        finally:
            if speech is not None and not speech.done():
                speech.cancel()  # stopped or pre-empted during the tone
                with contextlib.suppress(asyncio.CancelledError):
                    await speech
            if job.playout is not None:
                job.playout.cut()  # a no-op after the end; silences a held one left behind
            self.jobs.discard(job)
            if job in self.waiting:
                self.waiting.remove(job)
            if isinstance(cmd, PlayCmd) and job.extra.get("pcm_held", True):
                self._release_pcm(cmd.sha256)
                if not any(
                    isinstance(j.cmd, PlayCmd) and j.cmd.sha256 == cmd.sha256 for j in self.jobs
                ):
                    self.cache.in_use.discard(cmd.sha256)
            if self.current is job:
                self.current = None
                self._next()
            if self.current is None and not self.waiting:
                await self._amp_off()

    async def _toned_speech(self, job: Job, source: TonedSource) -> None:
        """The speech of a toned ``play``: fetched, verified and decoded while the tone
        sounds, then handed to the playout (``source``); a failure is handed over too."""
        cmd = job.cmd
        assert isinstance(cmd, PlayCmd) and cmd.tone is not None and self.http is not None
        try:
            if not self.cache.has(cmd.sha256):  # spread over the tone (docs/protocol.md)
                await asyncio.sleep(fetch_delay_s(cmd.tone))
            path, _ = await self.cache.fetch(self.http, cmd.url, cmd.sha256, cmd.bytes)
            if job.ended:  # stopped or pre-empted meanwhile: its terminal event was the last
                return
            self.cache.in_use.add(cmd.sha256)
            if not job.started:  # on disk, "started" must stay: a restart never replays it
                self.store.set_phase(job.broadcast_id, "fetched")
            self._event(job.broadcast_id, "fetched")
            job.extra["fetched_at"] = now_ms()
            pcm = await self._decoded(cmd.sha256, path)
            job.extra["pcm_held"] = True
        except FetchError as exc:
            log.warning("bản tin %s lỗi: %s", job.broadcast_id, exc)
            source.fail(exc.error, exc.detail)
            return
        except OSError as exc:
            detail = f"bộ nhớ đệm {self.cfg.cache_dir}: {exc.strerror or exc}"
            self.emit(FaultEvent(type="fault", ts=now_ms(), code="storage", detail=detail))
            source.fail("storage", detail)
            return
        gap = int(cmd.gap_ms * audio.RATE / 1000) * audio.FRAME
        source.speech = RepeatSource(pcm, cmd.repeat, gap)

    async def _decoded(self, sha256: str, path: Any) -> bytes:
        lock = self._decode_locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            entry = self._pcm.get(sha256)
            if entry is None:
                try:
                    pcm = await asyncio.to_thread(audio.decode, path)
                except audio.AudioError as exc:
                    raise FetchError("not_audio", str(exc)) from None
                entry = self._pcm[sha256] = [pcm, 0]
            entry[1] += 1
            return entry[0]

    def _release_pcm(self, sha256: str) -> None:
        entry = self._pcm.get(sha256)
        if entry is not None:
            entry[1] -= 1
            if entry[1] <= 0:
                del self._pcm[sha256]

    async def _sleep_until(self, at: float) -> None:
        while (left := at - time.time()) > 0:
            await asyncio.sleep(min(left, 10.0))

    async def _take_turn(self, job: Job) -> Job | None:
        """None when the job may go; the job to pre-empt when it outranks the current one."""
        cur = self.current
        if cur is None:
            self.current = job
            return None
        if job.rank > cur.rank:
            self.current = job
            return cur
        job.turn = asyncio.get_running_loop().create_future()
        self.waiting.append(job)
        await job.turn
        return None

    def _preempt(self, victim: Job) -> None:
        self._end(victim, "preempted")
        self._kill(victim)

    def _next(self) -> None:
        if not self.waiting:
            return
        best = max(self.waiting, key=lambda j: (j.rank, -j.order))
        self.waiting.remove(best)
        self.current = best
        if best.turn is not None and not best.turn.done():
            best.turn.set_result(None)

    def effective_volume(self, job: Job) -> int:
        return job.cmd.volume if job.cmd.volume is not None else self.volume

    def _open_playout(self, job: Job) -> asyncio.Future[str]:
        """Open the job's sink, held on silence until ``_play`` releases it (see
        ``audio.Playout``). The future is the playout's outcome."""
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        sink = audio.make_sink(self.cfg.output, self.cfg.output_latency_ms, self.epoch)

        def started(at: float) -> None:
            loop.call_soon_threadsafe(self._mark_started, job, at)

        def finished(outcome: str) -> None:
            loop.call_soon_threadsafe(lambda: done.done() or done.set_result(outcome))

        job.playout = audio.Playout(
            sink,
            None,
            0.0,
            self.cfg.output_latency_ms / 1000,
            lambda: self.effective_volume(job),
            started,
            finished,
        )
        job.playout.start()
        return done

    async def _play(
        self, job: Job, source: Any, start_at: float, done: asyncio.Future[str]
    ) -> None:
        assert job.playout is not None
        job.playout.release(source, start_at)
        try:
            outcome = await asyncio.shield(done)
        except asyncio.CancelledError:
            job.playout.cut()
            raise
        finally:
            if isinstance(source, LiveSource):
                source.close()
        failure = getattr(source, "failure", None)
        if outcome.startswith("error:"):
            detail = outcome[6:]
            if not job.started:
                self._audio_fault(detail)
            self._end(job, "failed", error="audio", detail=detail)
        elif outcome == "end" and failure is not None:  # the tone sounded, the speech did not
            self._end(job, "failed", error=failure[0], detail=failure[1])
        elif outcome == "end" and getattr(source, "reason", "") == "stream_lost":
            self._end(job, "finished", reason="stream_lost")
        elif outcome == "end":
            if self.audio_fault:
                self.audio_fault = None
            self._end(
                job, "finished", **({"reason": "end"} if isinstance(job.cmd, StreamCmd) else {})
            )

    def _audio_fault(self, detail: str) -> None:
        if self.audio_fault != detail:
            self.emit(FaultEvent(type="fault", ts=now_ms(), code="audio_output", detail=detail))
        self.audio_fault = detail

    def _mark_started(self, job: Job, at: float) -> None:
        if job.ended:
            return
        job.started = True
        self.store.set_phase(job.broadcast_id, "started")
        # fetched_at repeats the fetch on the start (docs/protocol.md), for a controller that
        # took over after the fetched event went to its predecessor.
        self._event(
            job.broadcast_id,
            "started",
            at=int(at * 1000),
            fetched_at=job.extra.get("fetched_at"),
            tone=True if isinstance(job.cmd, PlayCmd) and job.cmd.tone is not None else None,
        )
        self._beat_now.set()

    def _end(self, job: Job, phase: str, **extra: Any) -> None:
        if job.ended:
            return
        job.ended = True
        self.store.set_phase(job.broadcast_id, phase)
        self._event(job.broadcast_id, phase, **extra)
        self._beat_now.set()

    def _event(
        self,
        broadcast_id: str,
        phase: str,
        *,
        at: int | None = None,
        error: str | None = None,
        **extra: Any,
    ) -> None:
        ts = now_ms()
        self.emit(
            PlaybackEvent(
                type="playback",
                ts=ts,
                broadcast_id=broadcast_id,
                phase=phase,
                at=at or ts,
                error=error,  # type: ignore[arg-type]
                **{k: v for k, v in extra.items() if v is not None},
            )
        )

    # ================================================================== streams

    async def _open_stream(self, url: str) -> LiveSource:
        source = LiveSource(url, self.cfg.stream_reconnect_s)
        await asyncio.to_thread(source.open)
        return source

    # ================================================================== amplifier

    async def _amp_on(self) -> None:
        if self.relay is None or self.relay.state() is True:
            return
        if self.relay.set(True) and self.cfg.amp_warmup_ms:
            await asyncio.sleep(self.cfg.amp_warmup_ms / 1000)

    async def _amp_off(self) -> None:
        if self.relay is not None:
            await asyncio.to_thread(self.relay.set, False)

    # ================================================================== self-test

    async def _selftest(self) -> None:
        async with self._selftest_lock:
            event = await self.selftest()
            self.emit(event)

    async def selftest(self) -> SelftestEvent:
        total = self.cfg.speakers_total
        if self.current is not None:
            return SelftestEvent(
                type="selftest",
                ts=now_ms(),
                ok=self.speakers_ok == total,
                speakers_ok=self.speakers_ok,
                speakers_total=total,
                detail="Đang phát bản tin: không phát âm thử; báo kết quả kiểm tra gần nhất",
            )
        pcm = audio.tone(SELFTEST_FREQ, SELFTEST_S, 0.5)
        recorder = None
        if self.cfg.capture:
            recorder = Recorder(self.cfg.capture)
            try:
                await asyncio.to_thread(recorder.start)
            except audio.AudioError as exc:
                recorder = None
                capture_problem = str(exc)
        loop = asyncio.get_running_loop()
        done: asyncio.Future[str] = loop.create_future()
        sink = audio.make_sink(self.cfg.output, self.cfg.output_latency_ms, self.epoch)
        await self._amp_on()
        playout = audio.Playout(
            sink,
            pcm,
            time.time() + 0.15,
            self.cfg.output_latency_ms / 1000,
            lambda: 100,
            lambda _at: None,
            lambda o: loop.call_soon_threadsafe(lambda: done.done() or done.set_result(o)),
        )
        playout.start()
        outcome = await done
        await asyncio.sleep(0.3)
        await self._amp_off()
        if outcome.startswith("error:"):
            if recorder:
                recorder.stop()
            self._audio_fault(outcome[6:])
            self.speakers_ok = 0
            return SelftestEvent(
                type="selftest",
                ts=now_ms(),
                ok=False,
                speakers_ok=0,
                speakers_total=total,
                detail=f"Không phát được âm thử: {outcome[6:]}",
            )
        self.audio_fault = None
        if recorder is None:
            detail = (
                "Đã phát âm thử 1 kHz; không có micro/nguồn thu (capture) nên không kiểm "
                "tra được loa có kêu"
            )
            if self.cfg.capture:
                detail = f"Đã phát âm thử; không thu được âm: {capture_problem}"
            return SelftestEvent(
                type="selftest",
                ts=now_ms(),
                ok=True,
                speakers_ok=total,
                speakers_total=total,
                detail=detail,
            )
        recorded = await asyncio.to_thread(recorder.stop)
        level = audio.goertzel_level(recorded, SELFTEST_FREQ)
        heard = level >= SELFTEST_MIN_LEVEL
        self.speakers_ok = total if heard else 0
        if not heard:
            self.emit(
                FaultEvent(
                    type="fault",
                    ts=now_ms(),
                    code="speaker_line",
                    detail=f"Tự kiểm tra: không nghe thấy âm thử (mức {level:.0f})",
                )
            )
        self._beat_now.set()
        detail = (
            f"Nghe thấy âm thử 1 kHz qua {self.cfg.capture} (mức {level:.0f})"
            if heard
            else f"Không nghe thấy âm thử qua {self.cfg.capture} (mức {level:.0f} < "
            f"{SELFTEST_MIN_LEVEL:.0f})"
        )
        return SelftestEvent(
            type="selftest",
            ts=now_ms(),
            ok=heard,
            speakers_ok=self.speakers_ok,
            speakers_total=total,
            detail=detail,
        )


class RepeatSource:
    """``repeat`` times the PCM with ``gap`` bytes of silence between, chunk by chunk, without
    copying it ``repeat`` times."""

    def __init__(self, pcm: bytes, repeat: int, gap: int) -> None:
        self.view = memoryview(pcm)
        self.repeat, self.gap = repeat, gap
        self.round, self.pos, self.in_gap = 0, 0, False
        self.chunk = audio.CHUNK_FRAMES * audio.FRAME

    def __call__(self) -> bytes:
        while self.round < self.repeat:
            limit = self.gap if self.in_gap else len(self.view)
            if self.pos < limit:
                n = min(self.chunk, limit - self.pos)
                data = bytes(n) if self.in_gap else bytes(self.view[self.pos : self.pos + n])
                self.pos += n
                return data
            self.pos = 0
            if self.in_gap or self.round == self.repeat - 1:
                self.in_gap = False
                self.round += 1
            else:
                self.in_gap = True
        return b""


class TonedSource:
    """A node-made warning tone, then the speech (a ``RepeatSource`` set by the event loop
    when it is fetched and decoded), as PCM chunks for ``Playout``. Until the speech is
    there it yields silence, so the sink keeps running; after ``fail`` it ends."""

    def __init__(self, tone: bytes) -> None:
        self.tone = memoryview(tone)
        self.pos = 0
        self.chunk = audio.CHUNK_FRAMES * audio.FRAME
        self.speech: RepeatSource | None = None  # set from the event loop (one assignment)
        self.failure: tuple[str, str] | None = None

    def fail(self, error: str, detail: str) -> None:
        self.failure = (error, detail)

    def __call__(self) -> bytes:
        if self.pos < len(self.tone):
            data = bytes(self.tone[self.pos : self.pos + self.chunk])
            self.pos += len(data)
            return data
        if self.speech is not None:
            return self.speech()
        if self.failure is not None:
            return b""
        return bytes(self.chunk)


class LiveSource:
    """A live HTTP/Icecast stream as PCM chunks for ``Playout``. ffmpeg decodes (and rides
    out short network stalls itself); when the connection ends, the source is asked again
    for up to ``reconnect_s``: Icecast answers 404 once the studio stopped sending (the
    stream ended, ``reason = "end"``); anything else that lasts is ``"stream_lost"``."""

    def __init__(self, url: str, reconnect_s: int) -> None:
        self.url, self.reconnect_s = url, reconnect_s
        self.proc: subprocess.Popen[bytes] | None = None
        self.reason = ""
        self.closed = False
        self._pending: list[bytes] = []
        self._chunk = audio.CHUNK_FRAMES * audio.FRAME

    def _spawn(self) -> tuple[bytes, str]:
        self.proc = subprocess.Popen(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-reconnect",
                "1",
                "-reconnect_streamed",
                "1",
                "-reconnect_delay_max",
                "2",
                "-rw_timeout",
                "10000000",
                "-i",
                self.url,
                "-vn",
                "-f",
                "s16le",
                "-ac",
                "1",
                "-ar",
                str(audio.RATE),
                "-",
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert self.proc.stdout is not None
        first = self.proc.stdout.read(self._chunk)
        if first:
            return first, ""
        return b"", self._finish()

    def _finish(self) -> str:
        proc = self.proc
        if proc is None:
            return ""
        err = proc.stderr.read().decode("utf-8", "replace").strip() if proc.stderr else ""
        proc.wait()
        for pipe in (proc.stdout, proc.stderr):
            if pipe:
                pipe.close()
        self.proc = None
        return err

    def open(self) -> None:
        first, err = self._spawn()
        if not first:
            raise FetchError("stream", f"không mở được luồng: {err[-200:]}")
        self._pending.append(first)

    def __call__(self) -> bytes:
        if self._pending:
            return self._pending.pop()
        if self.proc is not None and self.proc.stdout is not None:
            data = self.proc.stdout.read(self._chunk)
            if data:
                return data
            self._finish()
        deadline = time.monotonic() + self.reconnect_s
        while not self.closed and time.monotonic() < deadline:
            first, err = self._spawn()
            if first:
                log.info("luồng %s nối lại được", self.url)
                return first
            if "404" in err:
                self.reason = "end"
                return b""
            time.sleep(0.5)
        self.reason = "" if self.closed else "stream_lost"
        return b""

    def close(self) -> None:
        self.closed = True
        proc = self.proc
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait()


class Recorder:
    """Captures from ``pulse:SOURCE`` (parec) or ``alsa:DEVICE`` (arecord) while the tone
    plays."""

    def __init__(self, spec: str) -> None:
        kind, _, target = spec.partition(":")
        if kind == "pulse":
            self.cmd = [
                "parec",
                "--raw",
                "--format=s16le",
                f"--rate={audio.RATE}",
                "--channels=1",
                "--latency-msec=20",
                f"--device={target}",
            ]
        else:
            self.cmd = [
                "arecord",
                "-q",
                "-D",
                target,
                "-t",
                "raw",
                "-f",
                "S16_LE",
                "-r",
                str(audio.RATE),
                "-c",
                "1",
            ]
        self.proc: subprocess.Popen[bytes] | None = None
        self._captured = bytearray()
        self._reader: threading.Thread | None = None

    def start(self) -> None:
        try:
            self.proc = subprocess.Popen(self.cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        except FileNotFoundError:
            raise audio.AudioError(f"không có {self.cmd[0]}") from None
        # Drained as it comes: a pipe left unread holds 0.68 s of audio, after which the
        # recorder stalls and a tone that started a little late is never captured.
        self._reader = threading.Thread(target=self._drain, name="loa-capture", daemon=True)
        self._reader.start()
        time.sleep(0.1)
        if self.proc.poll() is not None:
            self._reader.join(1)
            err = self.proc.stderr.read().decode("utf-8", "replace") if self.proc.stderr else ""
            raise audio.AudioError(f"không mở được nguồn thu: {err.strip()[:200]}")

    def _drain(self) -> None:
        proc = self.proc
        assert proc is not None and proc.stdout is not None
        while chunk := proc.stdout.read1(65536):
            self._captured += chunk

    def stop(self) -> bytes:
        proc = self.proc
        if proc is None:
            return b""
        proc.terminate()
        proc.wait(timeout=5)
        if self._reader is not None:
            self._reader.join(5)
        return bytes(self._captured)


def _json_bytes(raw: dict[str, Any]) -> bytes:
    import json

    return json.dumps(raw).encode()
