"""Benchmark: how many simulated nodes one process holds, and at what cost.

    python -m firmware_sim.bench --nodes 1000 --heartbeat-s 5 \
        --out bench/results/firmware_sim_fleet.json

Against a real mosquitto child process it measures, in one run:
* baseline: N bare aiomqtt clients (connect, subscribe, idle) = the floor set by the MQTT
  library itself;
* the fleet: N SimNodes heartbeating every ``heartbeat_s``: start time, memory per node, CPU
  of the process, heartbeats delivered per second (counted by ``mosquitto_sub`` in its own
  process so counting does not load the fleet);
* one ``play`` to every node for the same ``start_at`` (commands published and events
  collected by child processes): how late each started by its own
  clock (p50/p95/max) and whether every node fetched, started and finished.
Prints the figures and writes them as JSON.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path
from tempfile import TemporaryDirectory

import aiomqtt
import psutil

from firmware_sim.fleet import Fleet, generate_node_ids, raise_fd_limit
from loa.broker import EmbeddedBroker, free_port
from loa.protocol import PlayCmd, Topics, decode_event
from loa.timeutil import now_ms

TOPICS = Topics()


def rss_mb() -> float:
    return psutil.Process().memory_info().rss / 2**20


def cpu_s() -> float:
    t = psutil.Process().cpu_times()
    return t.user + t.system


async def bare_clients(host: str, port: int, n: int, rate: float) -> dict:
    """Baseline: what N idle aiomqtt connections cost, with nothing of ours on top."""
    rss0 = rss_mb()
    clients = []
    t0 = time.monotonic()
    for i in range(n):
        c = aiomqtt.Client(host, port, identifier=f"bare-{i}", keepalive=60)
        await c.__aenter__()
        await c.subscribe(f"bare/{i}/cmd", qos=1)
        clients.append(c)
        await asyncio.sleep(max(0.0, t0 + (i + 1) / rate - time.monotonic()))
    connect_s = time.monotonic() - t0
    await asyncio.sleep(2)
    c0 = cpu_s()
    await asyncio.sleep(10)
    cpu = (cpu_s() - c0) / 10
    rss = rss_mb() - rss0
    for c in clients:
        await c.__aexit__(None, None, None)
    return {
        "clients": n,
        "connect_s": round(connect_s, 2),
        "rss_mb": round(rss, 1),
        "kb_per_client": round(rss * 1024 / n, 1),
        "cpu_percent_idle": round(cpu * 100, 1),
    }


class HeartbeatCounter:
    """``mosquitto_sub`` in its own process, counting heartbeat lines."""

    def __init__(self, host: str, port: int) -> None:
        self.count = 0
        self.proc = subprocess.Popen(
            [
                "mosquitto_sub",
                "-h",
                host,
                "-p",
                str(port),
                "-t",
                f"{TOPICS.root}/nodes/+/heartbeat",
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        assert self.proc.stdout
        for _line in self.proc.stdout:
            self.count += 1

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(5)


async def fleet_run(
    host: str,
    port: int,
    n: int,
    heartbeat_s: float,
    rate: float,
    window_s: float,
    audio_dir: Path,
    lead_s: float,
) -> dict:
    counter = HeartbeatCounter(host, port)
    try:
        await asyncio.sleep(0.5)
        rss0 = rss_mb()
        fleet = Fleet(
            host, port, heartbeat_s=heartbeat_s, keepalive_s=60, connect_rate=rate, seed=1
        )
        ids = generate_node_ids(n, "bench")
        t0 = time.monotonic()
        connected = await fleet.start(ids)
        start_s = time.monotonic() - t0
        await asyncio.sleep(heartbeat_s + 1)
        rss_connected = rss_mb() - rss0
        c0, b0, w0 = cpu_s(), counter.count, time.monotonic()
        await asyncio.sleep(window_s)
        elapsed = time.monotonic() - w0
        cpu = (cpu_s() - c0) / elapsed
        hb_rate = (counter.count - b0) / elapsed
        result = {
            "nodes": n,
            "connected": connected,
            "heartbeat_s": heartbeat_s,
            "start_s": round(start_s, 2),
            "rss_mb": round(rss_connected, 1),
            "kb_per_node": round(rss_connected * 1024 / n, 1),
            "cpu_percent_steady": round(cpu * 100, 1),
            "heartbeats_per_s": round(hb_rate, 1),
            "heartbeats_per_s_expected": round(n / heartbeat_s, 1),
        }
        result["play_to_all"] = await play_to_all(
            host, port, fleet, ids, audio_dir, lead_ms=int(lead_s * 1000)
        )
        result["reconnects"] = sum(node.stats.connects for node in fleet.nodes.values()) - n
        t1 = time.monotonic()
        await fleet.stop()
        result["stop_s"] = round(time.monotonic() - t1, 2)
        return result
    finally:
        counter.close()


async def play_to_all(
    host: str,
    port: int,
    fleet: Fleet,
    ids: list[str],
    audio_dir: Path,
    size: int = 64_000,
    lead_ms: int = 45_000,
) -> dict:
    """One bulletin to every node for the same instant; lateness by each node's clock."""
    data = os.urandom(size)
    (audio_dir / "b.mp3").write_bytes(data)
    # The content server runs in its own process, as the dashboard does in production;
    # in this process it would compete with the fleet for the GIL.
    http_port = free_port()
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "http.server",
            str(http_port),
            "--bind",
            "127.0.0.1",
            "--directory",
            str(audio_dir),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        await asyncio.sleep(1.0)
        url = f"http://127.0.0.1:{http_port}/b.mp3"
        sha = hashlib.sha256(data).hexdigest()
        start_at = now_ms() + lead_ms
        # Controller side in child processes (one publishes the commands, one collects the
        # events), as in production: in this process they would share the event loop with the
        # fleet and the figures would measure their load on it instead of the nodes.
        out = audio_dir / "phases.json"
        collector = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_sim.bench",
            "--collect",
            str(out),
            "--host",
            host,
            "--port",
            str(port),
            "--expect",
            str(len(ids)),
            "--until-ms",
            str(start_at + 60_000),
            stdout=asyncio.subprocess.PIPE,
        )
        assert collector.stdout
        await collector.stdout.readline()  # "ready": subscribed
        cmds = [
            [
                TOPICS.cmd(node_id),
                PlayCmd(
                    cmd_id=f"bench-{i}",
                    issued_at=now_ms(),
                    broadcast_id="bench-b",
                    url=url,
                    sha256=sha,
                    bytes=size,
                    duration_ms=1000,
                    start_at=start_at,
                ).model_dump_json(exclude_none=True),
            ]
            for i, node_id in enumerate(ids)
        ]
        (audio_dir / "cmds.json").write_text(json.dumps(cmds))
        t_pub = now_ms()
        publisher = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "firmware_sim.bench",
            "--publish",
            str(audio_dir / "cmds.json"),
            "--host",
            host,
            "--port",
            str(port),
        )
        await publisher.wait()
        publish_ms = now_ms() - t_pub
        await collector.wait()
        collected = json.loads(out.read_text())
        phases: dict[str, dict[str, int]] = collected["phases"]
        errors: dict[str, int] = collected["errors"]
    finally:
        server.terminate()
        server.wait(5)
    # Lateness is the node scheduler's only for nodes that had the file before start_at;
    # the others waited for the content server (python http.server manages ~40-60 requests
    # a second on this machine, so 1,000 downloads take ~20 s: the lead time allows for it).
    ready = [p for p in phases.values() if "started" in p and p.get("fetched", 0) <= start_at]
    late = sorted(p["started"] - start_at for p in ready)
    fetched = sorted(p["fetched"] - start_at for p in phases.values() if "fetched" in p)

    def pct(values: list[int], q: float) -> int | None:
        return values[min(len(values) - 1, int(q * len(values)))] if values else None

    return {
        "nodes": len(ids),
        "bytes": size,
        "lead_ms": lead_ms,
        "publish_all_cmds_ms": publish_ms,
        "fetched": len(fetched),
        "fetched_rel_start_ms_p50": pct(fetched, 0.5),
        "fetched_rel_start_ms_max": fetched[-1] if fetched else None,
        "started": sum("started" in p for p in phases.values()),
        "finished": sum("finished" in p for p in phases.values()),
        "failed": sum("failed" in p for p in phases.values()),
        "errors": errors,
        "fetched_in_time": len(ready),
        "start_late_ms_p50": pct(late, 0.5),
        "start_late_ms_p95": pct(late, 0.95),
        "start_late_ms_max": late[-1] if late else None,
        "start_early": sum(x < 0 for x in late),
    }


async def main_async(args: argparse.Namespace) -> dict:
    raise_fd_limit(2 * args.nodes + 512)
    with TemporaryDirectory() as tmp:
        broker = EmbeddedBroker(kind="mosquitto", data_dir=Path(tmp) / "broker")
        broker.start()
        try:
            baseline = await bare_clients(broker.host, broker.port, args.nodes, args.rate)
            fleet = await fleet_run(
                broker.host,
                broker.port,
                args.nodes,
                args.heartbeat_s,
                args.rate,
                args.window_s,
                Path(tmp),
                args.lead_s,
            )
        finally:
            broker.cleanup()
    return {
        "name": "firmware_sim_fleet",
        "when_ms": now_ms(),
        "cpu_count": os.cpu_count(),
        "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
        "baseline_bare_aiomqtt": baseline,
        "fleet": fleet,
    }


def publish_file(path: str, host: str, port: int) -> None:
    """Child process: publish [topic, payload] pairs at QoS 1, pipelined, and wait for all."""
    import paho.mqtt.client as mqtt

    pairs = json.loads(Path(path).read_text())
    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_inflight_messages_set(1000)
    client.connect(host, port)
    client.loop_start()
    infos = [client.publish(topic, payload, qos=1) for topic, payload in pairs]
    for info in infos:
        info.wait_for_publish(30)
    client.disconnect()
    client.loop_stop()


def collect_events(path: str, host: str, port: int, expect: int, until_ms: int) -> None:
    """Child process: record each node's playback phases until all ended or ``until_ms``."""
    import paho.mqtt.client as mqtt

    phases: dict[str, dict[str, int]] = {}
    errors: dict[str, int] = {}
    ended = threading.Event()
    count = [0]
    subscribed = threading.Event()

    def on_message(_c, _u, msg) -> None:
        ev = decode_event(msg.payload)
        if ev.type != "playback":
            return
        phases.setdefault(msg.topic.split("/")[-2], {})[ev.phase] = ev.at
        if ev.error:
            errors[ev.error] = errors.get(ev.error, 0) + 1
        if ev.phase in ("finished", "failed", "preempted"):
            count[0] += 1
            if count[0] >= expect:
                ended.set()

    client = mqtt.Client(mqtt.CallbackAPIVersion.VERSION2, client_id="bench-collector")
    client.on_message = on_message
    client.on_subscribe = lambda *_a: subscribed.set()
    client.connect(host, port)
    client.subscribe(f"{TOPICS.root}/nodes/+/events", qos=1)
    client.loop_start()
    subscribed.wait(10)
    print("ready", flush=True)
    ended.wait(max(0.0, (until_ms - now_ms()) / 1000))
    client.disconnect()
    client.loop_stop()
    Path(path).write_text(json.dumps({"phases": phases, "errors": errors}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--publish", help=argparse.SUPPRESS)
    parser.add_argument("--collect", help=argparse.SUPPRESS)
    parser.add_argument("--expect", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--until-ms", type=int, default=0, help=argparse.SUPPRESS)
    parser.add_argument("--host", default="127.0.0.1", help=argparse.SUPPRESS)
    parser.add_argument("--port", type=int, default=1883, help=argparse.SUPPRESS)
    parser.add_argument("--nodes", type=int, default=1000)
    parser.add_argument("--heartbeat-s", type=float, default=5.0)
    parser.add_argument("--rate", type=float, default=200.0, help="connects per second")
    parser.add_argument("--window-s", type=float, default=20.0)
    parser.add_argument(
        "--lead-s", type=float, default=45.0, help="play command sent this long before its start_at"
    )
    parser.add_argument("--out", default="bench/results/firmware_sim_fleet.json")
    args = parser.parse_args()
    if args.publish:
        publish_file(args.publish, args.host, args.port)
        return
    if args.collect:
        collect_events(args.collect, args.host, args.port, args.expect, args.until_ms)
        return
    result = asyncio.run(main_async(args))
    text = json.dumps(result, indent=2, ensure_ascii=False)
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n")


if __name__ == "__main__":
    main()
