"""Raw heartbeat telemetry to InfluxDB 2 (production), beside the downsampled history in SQL.

Every accepted heartbeat becomes one point — measurement ``heartbeat``, tags ``node``,
``power``, ``net``, ``amp``, numeric fields (signal, volume, speakers, battery, temperature,
clock skew...) at the controller's receive time — so technicians can graph any node at full
resolution without loading PostgreSQL.

The sink must never slow or stop ingest, whatever the InfluxDB server does:

* the ingest listener only appends a flat tuple to a bounded queue (O(1), no I/O, no
  serialisation);
  when the queue is full the point is dropped and counted;
* a background task takes batches off the queue and writes them through influxdb-client's
  synchronous write API in a worker thread (the library does the HTTP, line-protocol
  escaping and auth); a failed batch goes back to the front of the queue and is retried
  with exponential back-off, except batches the server rejects as malformed (400/413/422),
  which are dropped and counted rather than retried forever;
* counters ``written``, ``dropped``, ``errors`` (plus ``queued`` and ``last_error``) show
  what happened, in ``stats()``.

The library's own batching mode is not used: it buffers without bound and does not report
what it dropped, which is exactly what an operator needs to see.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from typing import TYPE_CHECKING, Any

from pydantic_settings import BaseSettings, SettingsConfigDict

from controller.ingest import IngestObserver
from loa.protocol import Heartbeat

if TYPE_CHECKING:
    from influxdb_client.client.write.point import Point

    from loa.settings import Settings

log = logging.getLogger("loa.influx")

MEASUREMENT = "heartbeat"
NOT_RETRYABLE = {400, 413, 422}
MAX_BACKOFF_S = 30.0


class InfluxSettings(BaseSettings):
    """``LOA_INFLUX_*``. Kept here until they move into ``loa.settings.Settings``."""

    model_config = SettingsConfigDict(env_prefix="LOA_INFLUX_", env_file=None, extra="ignore")

    url: str = ""  # empty = no InfluxDB: raw telemetry is not kept
    token: str = ""
    org: str = "loa"
    bucket: str = "telemetry"
    batch_size: int = 5000
    flush_interval_s: float = 1.0
    queue_max: int = 100_000
    timeout_s: float = 10.0

    @classmethod
    def from_settings(cls, settings: Settings | None = None) -> InfluxSettings:
        """Environment first (tuning knobs); the ``influx_*`` connection fields of Loa's
        ``Settings`` override it."""
        cfg = cls()
        if settings is not None:
            for name in cls.model_fields:
                value = getattr(settings, f"influx_{name}", None)
                if value not in (None, ""):
                    setattr(cfg, name, value)
        return cfg


# What a queued heartbeat keeps: a flat tuple (~0.2 KB) instead of the parsed model
# (~1.4 KB), so a full queue during a long InfluxDB outage stays small.
_INT_FIELDS = (
    "seq",
    "uptime_s",
    "volume",
    "speakers_ok",
    "speakers_total",
    "rssi_dbm",
    "ntp_offset_ms",
)
_FLOAT_FIELDS = ("battery_v", "temp_c", "cache_free_mb")
# (node, received, ts, power, net, amp, playing, *_INT_FIELDS, *_FLOAT_FIELDS)
Sample = tuple[str, int, int, str, str, str, bool, *tuple[float | None, ...]]


def compact(node_id: str, hb: Heartbeat, received_ms: int) -> Sample:
    return (
        node_id,
        received_ms,
        hb.ts,
        hb.power,
        hb.net,
        hb.amp,
        hb.playing is not None,
        *(getattr(hb, f) for f in _INT_FIELDS),
        *(getattr(hb, f) for f in _FLOAT_FIELDS),
    )


def sample_point(sample: Sample) -> Point:
    """One InfluxDB point: strings that are enums become tags, everything else a number
    (InfluxDB-compatible stores such as VictoriaMetrics keep numbers only). Absent optional
    fields are left out, never written as zero."""
    from influxdb_client.client.write.point import Point
    from influxdb_client.domain.write_precision import WritePrecision

    node_id, received_ms, ts, power, net, amp, playing = sample[:7]
    p: Point = (
        Point(MEASUREMENT)
        .tag("node", node_id)
        .tag("power", power)
        .tag("net", net)
        .tag("amp", amp)
        .field("amp_ok", 1 if amp == "ok" else 0)
        .field("playing", 1 if playing else 0)
        .field("clock_skew_ms", ts - received_ms)
        .time(received_ms, WritePrecision.MS)
    )
    ints = sample[7 : 7 + len(_INT_FIELDS)]
    floats = sample[7 + len(_INT_FIELDS) :]
    for name, value in zip(_INT_FIELDS, ints, strict=True):
        if value is not None:
            p.field(name, int(value))
    for name, value in zip(_FLOAT_FIELDS, floats, strict=True):
        if value is not None:
            p.field(name, float(value))
    return p


def heartbeat_point(node_id: str, hb: Heartbeat, received_ms: int) -> Point:
    return sample_point(compact(node_id, hb, received_ms))


class InfluxSink(IngestObserver):
    def __init__(self, cfg: InfluxSettings) -> None:
        from influxdb_client.client.influxdb_client import InfluxDBClient
        from influxdb_client.client.write_api import SYNCHRONOUS

        self.cfg = cfg
        self._client = InfluxDBClient(
            url=cfg.url,
            token=cfg.token,
            org=cfg.org,
            timeout=int(cfg.timeout_s * 1000),
            enable_gzip=True,
        )
        self._write_api = self._client.write_api(write_options=SYNCHRONOUS)
        self._queue: deque[Sample] = deque()
        self._runner: asyncio.Task[None] | None = None
        self.written = 0
        self.dropped = 0
        self.errors = 0
        self.last_error = ""
        self.last_write_ms = 0
        self._failures = 0
        self._retry_at = 0.0
        self._lock = asyncio.Lock()

    # ------------------------------------------------------------------ ingest side

    def on_heartbeat(self, node_id: str, heartbeat: Heartbeat, received_ms: int) -> None:
        """The ingest observer: constant time, never raises, never waits."""
        if len(self._queue) >= self.cfg.queue_max:
            self.dropped += 1
            return
        self._queue.append(compact(node_id, heartbeat, received_ms))

    # ------------------------------------------------------------------ writer side

    @property
    def queued(self) -> int:
        return len(self._queue)

    def stats(self) -> dict[str, Any]:
        return {
            "written": self.written,
            "dropped": self.dropped,
            "errors": self.errors,
            "queued": self.queued,
            "last_error": self.last_error,
            "last_write_ms": self.last_write_ms,
            "url": self.cfg.url,
            "bucket": self.cfg.bucket,
        }

    def _write(self, items: list[Sample]) -> None:
        from influxdb_client.domain.write_precision import WritePrecision

        points = [sample_point(item) for item in items]
        # WritePrecision's members are plain strings although write() names the class.
        self._write_api.write(
            bucket=self.cfg.bucket,
            org=self.cfg.org,
            record=points,
            write_precision=WritePrecision.MS,  # type: ignore[arg-type]
        )

    async def flush(self, *, force: bool = False) -> bool:
        """Write what is queued, batch by batch. False when a batch failed (it is kept for
        the next attempt unless the server called it malformed). Respects the back-off
        unless ``force``."""
        async with self._lock:
            if not force and time.monotonic() < self._retry_at:
                return False
            while self._queue:
                n = min(len(self._queue), self.cfg.batch_size)
                batch = [self._queue.popleft() for _ in range(n)]
                try:
                    await asyncio.to_thread(self._write, batch)
                except Exception as exc:  # network, HTTP, anything: never reaches ingest
                    self._on_failure(batch, exc)
                    return False
                self.written += n
                self.last_write_ms = int(time.time() * 1000)
                self._failures = 0
                self._retry_at = 0.0
            return True

    def _on_failure(self, batch: list[Sample], exc: Exception) -> None:
        self.errors += 1
        status = getattr(exc, "status", None)
        self.last_error = f"{type(exc).__name__}: {status or ''} {exc}".strip()[:300]
        if status in NOT_RETRYABLE:
            self.dropped += len(batch)
            log.error("InfluxDB từ chối %d điểm đo (bỏ qua): %s", len(batch), self.last_error)
        else:
            # Back in front, oldest first; anything beyond the bound is dropped and counted.
            self._queue.extendleft(reversed(batch))
            overflow = len(self._queue) - self.cfg.queue_max
            for _ in range(max(0, overflow)):
                self._queue.pop()
                self.dropped += 1
            log.warning("Không ghi được InfluxDB (sẽ thử lại): %s", self.last_error)
        self._failures += 1
        backoff = min(MAX_BACKOFF_S, self.cfg.flush_interval_s * 2**self._failures)
        self._retry_at = time.monotonic() + backoff

    async def run(self) -> None:
        """The background writer; cancelled by ``stop``."""
        while True:
            await asyncio.sleep(self.cfg.flush_interval_s)
            await self.flush()

    def start(self) -> None:
        """Run the writer on the running loop (the composition root calls this)."""
        if self._runner is None:
            self._runner = asyncio.get_running_loop().create_task(self.run(), name="loa-influx")

    async def stop(self) -> None:
        """Stop the writer, one last attempt for what is queued, then close the HTTP pool."""
        if self._runner is not None:
            self._runner.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await self._runner
            self._runner = None
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.flush(force=True), self.cfg.timeout_s + 1)
        self.close()

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._write_api.close()
        with contextlib.suppress(Exception):
            self._client.close()
