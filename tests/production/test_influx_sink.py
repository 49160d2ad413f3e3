"""The InfluxDB sink against a real server speaking the InfluxDB v2 write API: Debian's
VictoriaMetrics (``/api/v2/write``), read back through its export API. Heartbeats come in
through the real ``Ingest``, as in production."""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path

import httpx
import pytest

from controller.influx_sink import InfluxSettings, InfluxSink
from controller.ingest import Ingest
from loa.broker import free_port
from loa.timeutil import now_ms
from system.root import System
from tests.factories import make_registry

NODES = ["vm-a", "vm-b", "vm-c"]


class VictoriaMetrics:
    """A throwaway single-node VictoriaMetrics on a random loopback port."""

    def __init__(self) -> None:
        self.binary = shutil.which("victoria-metrics")
        self.root = Path(tempfile.mkdtemp(prefix="loa-vm-"))
        self.port = free_port()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> VictoriaMetrics:
        self.proc = subprocess.Popen(
            [
                self.binary,
                f"-storageDataPath={self.root / 'data'}",
                f"-httpListenAddr=127.0.0.1:{self.port}",
                "-retentionPeriod=1y",
                "-loggerLevel=ERROR",
            ],
            stdout=subprocess.DEVNULL,
            stderr=(self.root / "vm.log").open("ab"),
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "vm.log").read_text()[-2000:])
            try:
                if httpx.get(f"{self.url}/health", timeout=0.5).text.strip() == "OK":
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise RuntimeError("victoria-metrics did not start")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(15)
        self.proc = None

    def series(self, node: str | None = None) -> dict[tuple[str, str], dict[int, float]]:
        """``{(metric, node): {timestamp_ms: value}}`` of everything stored."""
        httpx.get(f"{self.url}/internal/force_flush", timeout=10).raise_for_status()
        match = '{__name__=~"heartbeat_.*"%s}' % (f',node="{node}"' if node else "")
        r = httpx.get(f"{self.url}/api/v1/export", params={"match[]": match}, timeout=10)
        r.raise_for_status()
        out: dict[tuple[str, str], dict[int, float]] = defaultdict(dict)
        for line in r.text.splitlines():
            row = json.loads(line)
            key = (row["metric"]["__name__"], row["metric"]["node"])
            out[key].update(zip(row["timestamps"], row["values"], strict=True))
            out[key]["tags"] = {
                k: v
                for k, v in row["metric"].items()  # type: ignore[index]
                if k not in ("__name__", "node")
            }
        return out

    def cleanup(self) -> None:
        self.stop()
        shutil.rmtree(self.root, ignore_errors=True)


@pytest.fixture
def vm():
    if shutil.which("victoria-metrics") is None:
        pytest.fail("Debian victoria-metrics is required: apt-get install -y victoria-metrics")
    server = VictoriaMetrics().start()
    yield server
    server.cleanup()


def _hb(seq: int, ts: int, **over) -> bytes:
    body = {
        "seq": seq,
        "ts": ts,
        "uptime_s": 100 + seq,
        "volume": 60,
        "amp": "ok",
        "speakers_ok": 2,
        "speakers_total": 2,
        "power": "mains",
        "net": "4g",
        "rssi_dbm": -70 - seq % 100,
        "playing": None,
    }
    body.update(over)
    return json.dumps(body).encode()


def _ingest_with_sink(settings, db, vm_url: str, **cfg) -> tuple[Ingest, InfluxSink]:
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": NODES}})
    ingest = Ingest(settings, db)
    ingest.load_registry()
    sink = InfluxSink(
        InfluxSettings(
            url=vm_url,
            token="t",
            org="loa",
            bucket="telemetry",
            flush_interval_s=0.05,
            timeout_s=3,
            **cfg,
        )
    )
    ingest.observe(sink)
    return ingest, sink


def _beat(ingest: Ingest, node: str, seq: int, at: int, **over) -> bool:
    return ingest.handle(f"loa/v1/nodes/{node}/heartbeat", _hb(seq, at, **over), at)


async def test_heartbeats_are_written_in_batches_and_read_back(settings, db, vm):
    ingest, sink = _ingest_with_sink(settings, db, vm.url, batch_size=25)
    t0 = now_ms() - 60_000
    for seq in range(40):
        for i, node in enumerate(NODES):
            extra = {"battery_v": 12.5 - seq / 100, "power": "battery"} if node == "vm-c" else {}
            assert _beat(ingest, node, seq, t0 + seq * 1000 + i, **extra)
    assert not ingest.handle("loa/v1/nodes/vm-a/heartbeat", b"{broken", t0)  # never sent
    assert sink.queued == 120
    try:
        assert await sink.flush()
        assert (sink.written, sink.dropped, sink.errors, sink.queued) == (120, 0, 0, 0)
        stored = vm.series()
    finally:
        sink.close()
    rssi_b = stored[("heartbeat_rssi_dbm", "vm-b")]
    assert {ts: v for ts, v in rssi_b.items() if ts != "tags"} == {
        t0 + seq * 1000 + 1: -70 - seq for seq in range(40)
    }
    assert rssi_b["tags"] == {"power": "mains", "net": "4g", "amp": "ok"}
    battery = stored[("heartbeat_battery_v", "vm-c")]
    assert battery[t0 + 39 * 1000 + 2] == pytest.approx(12.11)
    assert battery["tags"]["power"] == "battery"
    assert ("heartbeat_battery_v", "vm-a") not in stored  # absent field, no invented zero
    assert len([k for k in stored[("heartbeat_seq", "vm-a")] if k != "tags"]) == 40


async def test_server_down_ingest_goes_on_drops_counted_then_writing_resumes(settings, db, vm):
    ingest, sink = _ingest_with_sink(settings, db, vm.url, batch_size=40, queue_max=150)
    t0 = now_ms() - 120_000
    try:
        assert _beat(ingest, "vm-a", 0, t0)
        assert await sink.flush() and sink.written == 1

        vm.stop()
        for seq in range(1, 201):  # 200 beats while the server is away
            assert _beat(ingest, "vm-a", seq, t0 + seq * 100)
        assert ingest.fleet.nodes["vm-a"].heartbeat.seq == 200  # ingest unaffected
        assert await ingest.flush()  # and so is the SQL side
        assert sink.dropped == 50 and sink.queued == 150
        assert not await sink.flush()
        assert sink.errors == 1 and sink.queued == 150 and sink.last_error
        assert not await sink.flush()  # inside the back-off: no new attempt
        assert sink.errors == 1
        assert not await sink.flush(force=True)
        assert sink.errors == 2 and sink.dropped == 50

        vm.start()
        assert _beat(ingest, "vm-a", 201, t0 + 201 * 100)  # queue full: dropped too
        assert sink.dropped == 51
        assert await sink.flush(force=True)
        assert (sink.written, sink.queued) == (151, 0)
        seqs = sorted(
            v for k, v in vm.series("vm-a")[("heartbeat_seq", "vm-a")].items() if k != "tags"
        )
        # The oldest 150 of the outage were kept, the newest 50 and the one after dropped.
        assert seqs == [0, *range(1, 151)]
        assert _beat(ingest, "vm-a", 202, t0 + 202 * 100)
        assert await sink.flush()
        assert sink.written == 152
    finally:
        sink.close()


async def test_the_root_wires_the_sink_only_when_a_url_is_configured(settings, db, vm, monkeypatch):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["vm-z"]}})
    monkeypatch.delenv("LOA_INFLUX_URL", raising=False)
    assert System(settings, db=db, http=False).influx is None

    monkeypatch.setenv("LOA_INFLUX_FLUSH_INTERVAL_S", "0.05")
    # Loa's Settings reads LOA_INFLUX_URL / _BUCKET from the environment at start.
    settings = settings.model_copy(update={"influx_url": vm.url, "influx_bucket": "loa-test"})
    system = System(settings, db=db, http=False)
    sink, controller = system.influx, system.controller
    assert sink is not None and controller is not None and sink.cfg.bucket == "loa-test"
    controller.ingest.load_registry()
    # (VictoriaMetrics hides the last 30 s from queries: -search.latencyOffset)
    assert _beat(controller.ingest, "vm-z", 5, now_ms() - 60_000)
    sink.start()
    try:
        for _ in range(100):
            if sink.written:
                break
            await asyncio.sleep(0.05)
        assert sink.written == 1 and sink.stats()["errors"] == 0
    finally:
        await sink.stop()
    stored = vm.series("vm-z")[("heartbeat_seq", "vm-z")]
    assert [v for k, v in stored.items() if k != "tags"] == [5]
