"""Real parts for the node agent tests: our own PulseAudio with null sinks (recorded through
their monitors), Debian mosquitto with the passwords and ACL of ``loa nodes provision``,
a Range-capable media server, and ``loa node run`` as real processes."""

from __future__ import annotations

import contextlib
import csv
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from controller.provision import provision
from loa.broker import EmbeddedBroker
from tests.factories import make_registry
from tests.node_agent.media import MediaServer
from tests.node_agent.pulse import PulseServer, Recording
from tests.production.mqtt_support import Mqtt, broker_dir, hand_to_broker

REPO = Path(__file__).resolve().parents[2]
SINKS = ["n1", "n2", "n3"]
NODES = {"dc-01": "n1", "dc-02": "n2", "dc-03": "n3"}
COMMUNES = {"Đội Cấn": {"Thôn Đồng Tâm": ["dc-01", "dc-02"], "Thôn Tân Lập": ["dc-03"]}}
SYNCED = (
    "Reference ID    : C0A80001 (ntp.local)\nStratum         : 3\n"
    "System time     : 0.000210000 seconds fast of NTP time\n"
    "Leap status     : Normal\n"
)


def now_ms() -> int:
    return int(time.time() * 1000)


def wait_until(predicate, timeout: float, what: str, interval: float = 0.05):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def make_audio(
    path: Path, *, seconds: float, freq: int = 440, volume: float = 4.0, bitrate: str = "96k"
) -> Path:
    """An MP3 tone; lavfi's sine is at 1/8 of full scale, so volume 4 makes it half."""
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            f"sine=frequency={freq}:duration={seconds}:sample_rate=48000",
            "-af",
            f"volume={volume}",
            "-ac",
            "1",
            "-b:a",
            bitrate,
            str(path),
        ],
        check=True,
    )
    return path


@pytest.fixture(scope="module")
def pulse(tmp_path_factory):
    server = PulseServer(tmp_path_factory.mktemp("pulse"), SINKS)
    server.start()
    yield server
    server.stop()


class NodeProc:
    """One ``loa node run`` process with its TOML config and log."""

    def __init__(self, rig: Rig, node_id: str, **overrides: Any) -> None:
        self.rig, self.node_id = rig, node_id
        self.dir = rig.tmp / f"node-{node_id}"
        self.dir.mkdir(exist_ok=True)
        self.clock_file = self.dir / "chronyc.txt"
        if not self.clock_file.exists():
            self.clock_file.write_text(SYNCED)
        sink = NODES[node_id]
        values: dict[str, Any] = {
            "credentials_line": rig.credential_lines[node_id],
            "broker": f"mqtt://{rig.broker.host}:{rig.broker.port}",
            "content_base": rig.content_base,
            "output": f"pulse:{sink}",
            "capture": f"pulse:{sink}.monitor",
            "cache_dir": str(self.dir / "cache"),
            "state_dir": str(self.dir / "state"),
            "heartbeat_s": 5,
            "keepalive_s": 5,
            "clock_source": f"file:{self.clock_file}",
            "output_latency_ms": 40,
        } | overrides
        self.config = self.dir / "node.toml"
        self.config.write_text(
            "".join(f"{k} = {json.dumps(v, ensure_ascii=False)}\n" for k, v in values.items()),
            encoding="utf-8",
        )
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = self.dir / "node.log"

    def start(self, extra_env: dict[str, str] | None = None) -> NodeProc:
        env = {**os.environ, **self.rig.pulse.env, "PYTHONUNBUFFERED": "1", **(extra_env or {})}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "system", "node", "run", "--config", str(self.config)],
            cwd=REPO,
            env=env,
            stdout=self.log.open("ab"),
            stderr=subprocess.STDOUT,
        )
        return self

    def kill9(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(10)

    def stop(self) -> int | None:
        if self.proc is None or self.proc.poll() is not None:
            return None if self.proc is None else self.proc.returncode
        self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()

    def log_text(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""


@dataclass
class Rig:
    tmp: Path
    broker: EmbeddedBroker
    pulse: PulseServer
    media: MediaServer
    credential_lines: dict[str, str]
    controller_user: str
    controller_password: str
    content_base: str = ""
    listener: Mqtt | None = None
    seen: list[tuple[str, dict]] = field(default_factory=list)
    nodes: list[NodeProc] = field(default_factory=list)
    recordings: list[Recording] = field(default_factory=list)

    # ------------------------------------------------------------------ processes

    def node(self, node_id: str, **overrides: Any) -> NodeProc:
        n = NodeProc(self, node_id, **overrides)
        self.nodes.append(n)
        return n

    def record(self, node_id: str) -> Recording:
        rec = Recording(self.pulse, NODES[node_id])
        rec.wait_ready()
        self.recordings.append(rec)
        return rec

    # ------------------------------------------------------------------ MQTT

    def listen(self) -> Mqtt:
        if self.listener is None:
            # A persistent session: what nodes send while a broker restarts is queued for it.
            c = Mqtt(
                self.broker.host,
                self.broker.port,
                self.controller_user,
                self.controller_password,
                client_id=f"test-{uuid.uuid4().hex[:6]}",
                clean_session=False,
            )
            assert c.connect().ok
            c.subscribe("loa/v1/nodes/+/events")
            c.subscribe("loa/v1/nodes/+/heartbeat")
            c.subscribe("loa/v1/nodes/+/status")
            self.listener = c
        return self.listener

    def drop_listener(self) -> None:
        if self.listener is not None:
            with contextlib.suppress(Exception):
                self.listener.close()
            self.listener = None

    def send(self, node_id: str, cmd: dict[str, Any] | bytes) -> dict | bytes:
        payload = cmd if isinstance(cmd, bytes) else json.dumps(cmd).encode()
        self.listen().publish(f"loa/v1/nodes/{node_id}/cmd", payload)
        return cmd

    def collect(self) -> list[tuple[str, dict]]:
        if self.listener is not None:
            for topic, payload in self.listener.drain():
                parts = topic.split("/")
                with contextlib.suppress(ValueError):
                    self.seen.append((f"{parts[3]}/{parts[4]}", json.loads(payload)))
        return self.seen

    def events(self, node_id: str, **match: Any) -> list[dict]:
        return [
            e
            for t, e in self.collect()
            if t == f"{node_id}/events" and all(e.get(k) == v for k, v in match.items())
        ]

    def heartbeats(self, node_id: str) -> list[dict]:
        return [e for t, e in self.collect() if t == f"{node_id}/heartbeat"]

    def wait_event(self, node_id: str, timeout: float = 15, **match: Any) -> dict:
        return wait_until(
            lambda: (self.events(node_id, **match) or [None])[-1],
            timeout,
            f"{node_id} event {match}",
        )

    def wait_online(self, *node_ids: str, timeout: float = 20) -> None:
        def ok():
            return all(any(t == f"{n}/heartbeat" for t, _ in self.collect()) for n in node_ids)

        wait_until(ok, timeout, f"heartbeats of {node_ids}")

    # ------------------------------------------------------------------ commands

    def publish_file(self, name: str, path: Path) -> tuple[str, str, int]:
        target = self.media.root / name
        if path != target:
            target.write_bytes(path.read_bytes())
        data = target.read_bytes()
        return self.media.base + name, hashlib.sha256(data).hexdigest(), len(data)

    def play(
        self,
        node_id: str,
        name: str,
        *,
        start_in: float = 2.0,
        bid: str | None = None,
        duration_ms: int = 1000,
        **extra: Any,
    ) -> dict:
        url, sha, size = self.publish_file(name, self.media.root / name)
        cmd = {
            "cmd_id": uuid.uuid4().hex,
            "type": "play",
            "issued_at": now_ms(),
            "broadcast_id": bid or f"b-{uuid.uuid4().hex[:8]}",
            "url": url,
            "sha256": sha,
            "bytes": size,
            "duration_ms": duration_ms,
            "start_at": now_ms() + int(start_in * 1000) if start_in else 0,
        } | extra
        self.send(node_id, cmd)
        return cmd

    def simple(self, node_id: str, kind: str, **fields: Any) -> dict:
        cmd = {"cmd_id": uuid.uuid4().hex, "type": kind, "issued_at": now_ms()} | fields
        self.send(node_id, cmd)
        return cmd


@pytest.fixture
def rig(tmp_path, db, pulse):
    make_registry(db, communes=COMMUNES, heartbeat_s=10)
    media = MediaServer(tmp_path / "media").start()
    (tmp_path / "media").mkdir(exist_ok=True)
    with broker_dir() as root:
        config_dir, data_dir = root / "mqtt", root / "data"
        result = provision(db, config_dir)
        hand_to_broker(config_dir, data_dir)
        broker = EmbeddedBroker(
            kind="mosquitto",
            data_dir=data_dir,
            password_file=config_dir / "passwd",
            acl_file=config_dir / "acl",
        )
        broker.start()
        with (config_dir / "credentials.csv").open(encoding="utf-8") as fh:
            rows = list(csv.reader(fh))
        lines = {r[0]: ",".join(r) for r in rows[1:]}
        r = Rig(
            tmp=tmp_path,
            broker=broker,
            pulse=pulse,
            media=media,
            credential_lines=lines,
            controller_user=result.controller_user,
            controller_password=result.controller_password,
            content_base=media.base,
        )
        try:
            yield r
        finally:
            for n in r.nodes:
                n.stop()
            for rec in r.recordings:
                rec.stop()
            r.drop_listener()
            broker.cleanup()
            media.stop()
            for sink in SINKS:
                with contextlib.suppress(Exception):
                    pulse.mute(sink, False)
