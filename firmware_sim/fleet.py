"""Many simulated nodes in one process, and the in-process control surface for tests/demo.

Nodes share one event loop, one HTTP pool and one random generator; each has its own MQTT
connection. Starting is staggered (``connect_rate`` nodes per second) because a thousand
CONNECTs in the same millisecond is a storm no real network produces and that would only
measure the broker's accept queue.
"""

from __future__ import annotations

import asyncio
import logging
import random
import resource
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal

from firmware_sim.faults import Fault
from firmware_sim.fetch import SharedHttp
from firmware_sim.mqtt_link import KillMode
from firmware_sim.node import SimNode
from loa.protocol import Topics

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class NodeSpec:
    node_id: str
    heartbeat_s: float | None = None  # None = the fleet's default
    speakers: int = 2


@dataclass(frozen=True, slots=True)
class FleetSummary:
    nodes: int
    connected: int
    running: int
    killed: int
    hung: int
    heartbeats: int
    commands: int
    duplicates: int
    events: int

    def vietnamese(self, *, stopped: bool = False) -> str:
        head = (
            f"Đã dừng mô phỏng {_n(self.nodes)} cụm loa ({_n(self.connected)} còn kết nối "
            f"đến lúc dừng), "
            if stopped
            else f"Mô phỏng {_n(self.nodes)} cụm loa: {_n(self.connected)} đang kết nối, "
        )
        return (
            head + f"{_n(self.killed)} bị ngắt đột ngột, {_n(self.hung)} bị treo; "
            f"đã gửi {_n(self.heartbeats)} nhịp tim và {_n(self.events)} sự kiện, "
            f"nhận {_n(self.commands)} lệnh ({_n(self.duplicates)} lệnh trùng)."
        )


def _n(value: int) -> str:
    """Vietnamese thousands separator: 12345 -> "12.345"."""
    return f"{value:,}".replace(",", ".")


def generate_node_ids(count: int, prefix: str = "sim") -> list[str]:
    width = max(4, len(str(count)))
    return [f"{prefix}-{i:0{width}d}" for i in range(1, count + 1)]


def raise_fd_limit(wanted: int) -> int:
    """One socket per node: lift the soft open-files limit towards the hard one."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = wanted if hard == resource.RLIM_INFINITY else min(wanted, hard)
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
        return target
    return soft


class Fleet:
    def __init__(
        self,
        host: str = "127.0.0.1",
        port: int = 1883,
        *,
        topics: Topics | None = None,
        heartbeat_s: float = 30,
        keepalive_s: int = 60,
        connect_rate: float = 200.0,
        mqtt_version: Literal[4, 5] = 4,
        clock_offset_ms: int = 0,
        passwords: Mapping[str, str] | Callable[[str], str | None] | None = None,
        seed: int | None = None,
        max_downloads: int = 64,
        battery_drain_v_per_h: float | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.topics = topics or Topics()
        self.heartbeat_s = heartbeat_s
        self.keepalive_s = keepalive_s
        self.connect_rate = connect_rate
        self.mqtt_version = mqtt_version
        self.clock_offset_ms = clock_offset_ms
        self.passwords = passwords
        self.rng = random.Random(seed)
        self.max_downloads = max_downloads
        self.battery_drain_v_per_h = battery_drain_v_per_h
        self.nodes: dict[str, SimNode] = {}
        self.http: SharedHttp | None = None
        self._killed: set[str] = set()

    async def __aenter__(self) -> Fleet:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ start / stop

    async def start(
        self, nodes: Iterable[str | NodeSpec], *, wait: bool = True, timeout: float | None = None
    ) -> int:
        """Boot the given nodes, staggered; returns how many are connected when it returns
        (all of them, unless ``timeout`` ran out; the rest keep retrying in the background)."""
        specs = [n if isinstance(n, NodeSpec) else NodeSpec(n) for n in nodes]
        if self.http is None:
            self.http = SharedHttp.create(self.max_downloads)
        raise_fd_limit(len(self.nodes) + len(specs) + 256)
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        started: list[SimNode] = []
        for i, spec in enumerate(specs):
            node = self.nodes.get(spec.node_id) or self._make_node(spec)
            self.nodes[spec.node_id] = node
            node.http = self.http
            if not node.running:
                node.start()
                started.append(node)
            self._killed.discard(spec.node_id)
            delay = t0 + (i + 1) / self.connect_rate - loop.time()
            if delay > 0:
                await asyncio.sleep(delay)
        if not wait:
            return sum(n.connected.is_set() for n in started)
        if timeout is None:
            timeout = 30.0 + len(specs) / max(self.connect_rate, 1.0)
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(n.connected.is_set() for n in started):
            await asyncio.sleep(0.05)
        return sum(n.connected.is_set() for n in started)

    def _make_node(self, spec: NodeSpec) -> SimNode:
        return SimNode(
            spec.node_id,
            self.host,
            self.port,
            topics=self.topics,
            heartbeat_s=spec.heartbeat_s or self.heartbeat_s,
            keepalive_s=self.keepalive_s,
            speakers=spec.speakers,
            password=self._password(spec.node_id),
            clock_offset_ms=self.clock_offset_ms,
            http=self.http,
            rng=self.rng,
            mqtt_version=self.mqtt_version,
            battery_drain_v_per_h=self.battery_drain_v_per_h,
        )

    def _password(self, node_id: str) -> str | None:
        if self.passwords is None:
            return None
        if callable(self.passwords):
            return self.passwords(node_id)
        return self.passwords.get(node_id)

    async def stop(self) -> None:
        """Clean stop of every running node (each publishes ``reason: shutdown``)."""
        running = [n for n in self.nodes.values() if n.running]
        # Bounded concurrency: thousands of simultaneous goodbyes would time out at the broker.
        sem = asyncio.Semaphore(200)

        async def _stop(node: SimNode) -> None:
            async with sem:
                await node.stop()

        await asyncio.gather(*(_stop(n) for n in running), return_exceptions=True)
        if self.http is not None:
            await self.http.aclose()
            self.http = None

    # ------------------------------------------------------------------ control surface

    def node(self, node_id: str) -> SimNode:
        try:
            return self.nodes[node_id]
        except KeyError:
            raise KeyError(f"Không có cụm loa mô phỏng '{node_id}'") from None

    async def kill(self, node_id: str, mode: KillMode = "reset") -> None:
        await self.node(node_id).kill(mode)
        self._killed.add(node_id)

    async def stop_node(self, node_id: str) -> None:
        await self.node(node_id).stop()

    async def restart(self, node_id: str, *, timeout: float = 10.0) -> bool:
        """Boot a stopped or killed node again (new boot_id, seq from 0)."""
        node = self.node(node_id)
        if node.running:
            await node.stop()
        self._killed.discard(node_id)
        node.start()
        return await node.wait_connected(timeout)

    def hang(self, node_id: str) -> None:
        self.node(node_id).hang()

    def resume(self, node_id: str) -> None:
        self.node(node_id).resume()

    def inject(self, node_id: str, fault: Fault | str, value: int | None = None) -> None:
        self.node(node_id).inject(fault, value)

    def clear(self, node_id: str, fault: Fault | str) -> None:
        self.node(node_id).clear(fault)

    # ------------------------------------------------------------------ figures

    def summary(self) -> FleetSummary:
        nodes = list(self.nodes.values())
        return FleetSummary(
            nodes=len(nodes),
            connected=sum(n.connected.is_set() for n in nodes),
            running=sum(n.running for n in nodes),
            killed=len(self._killed),
            hung=sum(n.hung and n.running for n in nodes),
            heartbeats=sum(n.stats.heartbeats for n in nodes),
            commands=sum(n.stats.commands for n in nodes),
            duplicates=sum(n.stats.duplicates for n in nodes),
            events=sum(n.stats.events for n in nodes),
        )
