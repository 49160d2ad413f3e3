"""Dispatch: time from dispatching one slot to 99% of ``cmd_ack`` for a fleet of simulated
nodes, and how closely the nodes then start together; against a baseline in the same run.

Three processes on one machine, as in the embedded deployment: this one (broker child,
controller with ingest, dispatcher, scheduler), a content server (the dashboard's ``/media``
route under uvicorn) and a fleet worker (``firmware_sim.Fleet``: one real MQTT client per
node). For each fleet size:

1. *baseline*: a bare aiomqtt client publishes the same ``play`` commands (same per-node URLs
   and fields, fresh ``cmd_id``) straight to every node and times the acks it receives (then
   stops those jobs);
2. *dispatcher*: a province-wide TTS broadcast is scheduled; the clock runs from the moment
   the dispatcher starts the slot (Airing + per-node AiringTarget rows committed, URLs
   signed, commands published) to the 99th-percentile ack seen by the ingest. The nodes then
   fetch the audio and start at ``start_at`` by their own clocks; the spread is the
   node-reported start time minus ``start_at`` (and how many had fetched in time).

    .venv/bin/python bench/dispatch.py [--nodes 1000 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from sqlalchemy import insert  # noqa: E402

from bench._common import RESULTS  # noqa: E402
from controller.process import ControllerService  # noqa: E402
from firmware_sim.fleet import generate_node_ids  # noqa: E402
from loa.broker import EmbeddedBroker, free_port  # noqa: E402
from loa.db import Database  # noqa: E402
from loa.protocol import PlayCmd, StopCmd, Topics, decode_event, encode  # noqa: E402
from loa.settings import Settings  # noqa: E402
from loa.text import fold  # noqa: E402
from loa.timeutil import now_ms  # noqa: E402
from registry.models import Commune, Node, Province, Village  # noqa: E402
from system.schema import create_schema  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
PREFIX = "bn"
TEXT = "Thông báo của Ủy ban nhân dân xã về lịch tiêm chủng tuần này."
NODES_PER_VILLAGE = 25
VILLAGES_PER_COMMUNE = 10


def log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def pct(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, max(0, int(round(q * len(s) + 0.5)) - 1))]


def spread(offsets: list[int]) -> dict:
    if not offsets:
        return {"nodes": 0}
    return {
        "nodes": len(offsets),
        "p50_ms": pct(offsets, 0.5),
        "p99_ms": pct(offsets, 0.99),
        "min_ms": min(offsets),
        "max_ms": max(offsets),
        "range_ms": max(offsets) - min(offsets),
        "mean_abs_ms": round(statistics.fmean(abs(x) for x in offsets), 1),
    }


# --------------------------------------------------------------------------- workers


def fleet_worker(host: str, port: int, count: int) -> None:
    from firmware_sim.fleet import Fleet

    _exit_with_parent()

    async def run() -> None:
        fleet = Fleet(
            host, port, heartbeat_s=600, keepalive_s=600, connect_rate=800, seed=1, max_downloads=64
        )
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        connected = await fleet.start(generate_node_ids(count, PREFIX), timeout=120)
        print(f"connected {connected}", flush=True)
        await stop.wait()
        await fleet.stop()

    asyncio.run(run())


def content_worker(db_url: str, data_dir: str, port: int, secret: str) -> None:
    _exit_with_parent()
    import uvicorn
    from fastapi import FastAPI
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from dashboard.routes import content
    from system.root import api_context

    settings = Settings(data_dir=Path(data_dir), database_url=db_url, secret_key=secret)
    db = Database(db_url)
    # The /media route holds its request session while the store opens a second one; with
    # the default SQLite pool (5 + 10) 64 parallel downloads wait on each other for 30 s and
    # fail. A pool as large as the download concurrency keeps the measurement about dispatch
    # (reported to the content package).
    db.engine.dispose()
    db.engine = create_engine(
        db_url,
        connect_args={"check_same_thread": False, "timeout": 30},
        pool_size=80,
        max_overflow=80,
    )
    db.sessionmaker = sessionmaker(db.engine, expire_on_commit=False)
    app = FastAPI()
    app.state.ctx = api_context(settings, db)
    app.include_router(content.router)
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def spawn(*args: str) -> subprocess.Popen:
    """A worker process; its output is drained by a thread so it can never block on a full
    pipe, and it exits on its own if this process dies (see ``_exit_with_parent``)."""
    import threading

    proc = subprocess.Popen(
        [sys.executable, __file__, *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    proc.lines = []  # type: ignore[attr-defined]

    def drain() -> None:
        for line in proc.stdout:  # type: ignore[union-attr]
            proc.lines.append(line.rstrip())  # type: ignore[attr-defined]

    threading.Thread(target=drain, daemon=True).start()
    return proc


def _exit_with_parent() -> None:
    """Workers must not outlive an interrupted benchmark."""
    import threading

    parent = os.getppid()

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(1)
        os._exit(0)

    threading.Thread(target=watch, daemon=True).start()


def wait_port(port: int, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
            return
        time.sleep(0.1)
    raise RuntimeError(f"port {port} did not open")


def stop_proc(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


# --------------------------------------------------------------------------- setup


def build_registry(db: Database, ids: list[str]) -> None:
    """Communes of 10 villages of 25 clusters each, written in bulk."""
    with db.session() as s:
        prov = Province(code="bench", name="Tỉnh Đo Kiểm")
        s.add(prov)
        s.flush()
        per_commune = NODES_PER_VILLAGE * VILLAGES_PER_COMMUNE
        rows = []
        for ci in range(0, len(ids), per_commune):
            name = f"Xã Số {ci // per_commune + 1}"
            c = Commune(code=f"bc{ci}", province_id=prov.id, name=name, name_folded=fold(name))
            s.add(c)
            s.flush()
            for vi in range(ci, min(ci + per_commune, len(ids)), NODES_PER_VILLAGE):
                vname = f"Thôn {vi // NODES_PER_VILLAGE + 1}"
                v = Village(code=f"bv{vi}", name=vname, name_folded=fold(vname), commune_id=c.id)
                s.add(v)
                s.flush()
                rows += [
                    {
                        "id": n,
                        "village_id": v.id,
                        "heartbeat_s": 600,
                        "simulated": True,
                        "registered_ms": 0,
                    }
                    for n in ids[vi : vi + NODES_PER_VILLAGE]
                ]
        s.execute(insert(Node), rows)


async def wait_until(pred, timeout: float, what: str, interval: float = 0.05, progress=None):
    deadline = time.monotonic() + timeout
    next_report = time.monotonic() + 15
    while time.monotonic() < deadline:
        value = pred()
        if value:
            return value
        if progress is not None and time.monotonic() > next_report:
            log(f"  waiting for {what}: {progress()}")
            next_report += 15
        await asyncio.sleep(interval)
    raise RuntimeError(f"timed out waiting for {what}")


# --------------------------------------------------------------------------- runs


async def baseline(settings: Settings, gateway, meta, ids: list[str], lead_s: float) -> dict:
    """Bare aiomqtt: publish every node's play command and time the acks."""
    topics = Topics(settings.topic_root)
    urls = gateway.node_urls(meta.id, ids, settings.public_base_url)
    issued = now_ms()
    start_at = issued + int(lead_s * 1000)
    cmds = {
        n: PlayCmd(
            cmd_id=f"base-{n}-{issued}",
            issued_at=issued,
            expires_at=start_at + meta.duration_ms,
            broadcast_id="bench-baseline",
            url=urls[n],
            sha256=meta.sha256,
            bytes=meta.bytes,
            duration_ms=meta.duration_ms,
            start_at=start_at,
            priority="normal",
        )
        for n in ids
    }
    want = {c.cmd_id for c in cmds.values()}
    acks: dict[str, int] = {}
    finished: set[str] = set()
    async with aiomqtt.Client(
        settings.mqtt_host,
        settings.mqtt_port,
        identifier="bench-baseline",
        max_inflight_messages=100,
        keepalive=600,
        max_queued_incoming_messages=0,
    ) as client:
        await client.subscribe(f"{topics.root}/nodes/+/events", qos=1)

        async def reader() -> None:
            try:
                await read(client)
            except aiomqtt.MqttError as exc:
                log(f"baseline client lost its connection: {exc}")

        async def read(client: aiomqtt.Client) -> None:
            async for msg in client.messages:
                parsed = topics.parse(msg.topic.value)
                if parsed is None:
                    continue
                try:
                    ev = decode_event(bytes(msg.payload))
                except Exception:
                    continue
                node = parsed[0]
                if ev.type == "cmd_ack" and ev.cmd_id in want:
                    acks.setdefault(ev.cmd_id, now_ms())
                elif (
                    ev.type == "playback"
                    and ev.broadcast_id == "bench-baseline"
                    and ev.phase in ("finished", "failed", "preempted")
                ):
                    finished.add(node)

        task = asyncio.create_task(reader())
        t0 = now_ms()
        sem = asyncio.Semaphore(256)

        async def one(n: str) -> None:
            async with sem:
                await client.publish(topics.cmd(n), encode(cmds[n]), qos=1)

        await asyncio.gather(*(one(n) for n in ids))
        published_ms = now_ms() - t0
        need = int(0.99 * len(ids) + 0.999)
        await wait_until(
            lambda: len(acks) >= need, 300, "baseline acks", progress=lambda: f"{len(acks)} acks"
        )
        ack_times = sorted(v - t0 for v in acks.values())
        # The baseline's only figure is the ack time: stop its downloads and playback so the
        # dispatcher run starts from a quiet fleet.
        stops = {
            n: StopCmd(
                cmd_id=f"stop-{n}-{issued}", issued_at=now_ms(), broadcast_id="bench-baseline"
            )
            for n in ids
        }

        async def stop_one(n: str) -> None:
            async with sem:
                await client.publish(topics.cmd(n), encode(stops[n]), qos=1)

        await asyncio.gather(*(stop_one(n) for n in ids))
        with contextlib.suppress(RuntimeError):
            await wait_until(
                lambda: len(finished) >= len(ids),
                60,
                "baseline jobs to end",
                progress=lambda: f"{len(finished)} ended",
            )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    return {
        "publish_ms": published_ms,
        "ack_p50_ms": pct(ack_times, 0.5),
        "ack_99pct_ms": ack_times[need - 1],
        "acks": len(acks),
    }


async def through_dispatcher(
    settings: Settings, db: Database, controller, gateway, meta, ids: list[str], lead_s: float
) -> dict:
    from scheduler.config import SchedulerSettings
    from scheduler.models import Airing
    from scheduler.scheduling import start_scheduling
    from scheduler.targets import Actor

    sched = SchedulerSettings(
        dispatch_lead_s=lead_s,
        ack_margin_s=5,
        housekeeping_s=1,
        dispatch_flush_s=1.0,
        slot_grace_s=60,
    )
    scheduling = await start_scheduling(
        settings, db, controller, content=gateway, sched=sched, base_url=settings.public_base_url
    )
    try:
        start_iso = time.strftime("%Y-%m-%dT%H:%M:%S%z", time.localtime(time.time() + lead_s + 1))
        out = await asyncio.to_thread(
            scheduling.broadcasts.create,
            Actor("province", None, "bench"),
            {
                "title": "Đo kiểm",
                "content_id": meta.id,
                "targets": {"province": True},
                "priority": "priority",
                "start_at": start_iso,
            },
        )
        dispatcher = scheduling.dispatcher

        def active():
            return next(
                (a for a in dispatcher.active_airings() if a.broadcast_id == out["id"]), None
            )

        airing = await wait_until(active, 60, "the dispatch")
        with db.session() as s:
            row = s.get(Airing, airing.id)
            t0, start_at = row.dispatched_ms, row.start_at_ms
        need = int(0.99 * len(ids) + 0.999)

        def ack_times():
            times = [
                next((e["rx"] for e in t.events if e["type"] == "cmd_ack"), None)
                for t in airing.targets.values()
            ]
            return [x - t0 for x in times if x is not None]

        await wait_until(
            lambda: len(ack_times()) >= need,
            300,
            "dispatcher acks",
            progress=lambda: f"{len(ack_times())} acks",
        )
        acks = sorted(ack_times())
        publish_done = now_ms() - t0
        await wait_until(
            lambda: airing.id not in {a.id for a in dispatcher.active_airings()},
            lead_s + meta.duration_ms / 1000 + 120,
            "the airing to be judged",
        )
        starts = [
            t.started_at_ms - start_at
            for t in airing.targets.values()
            if t.started_at_ms is not None
        ]
        fetched = [
            next((e["rx"] for e in t.events if e.get("phase") == "fetched"), None)
            for t in airing.targets.values()
        ]
        fetched_ms = [x - t0 for x in fetched if x is not None]
        in_time = sum(1 for x in fetched if x is not None and x <= start_at)
        phases: dict[str, int] = {}
        for t in airing.targets.values():
            phases[t.phase] = phases.get(t.phase, 0) + 1
        return {
            "prepare_ms": dispatcher.last_dispatch.get("prepare_ms"),
            "publish_ms": dispatcher.last_dispatch.get("publish_ms"),
            "ack_p50_ms": pct(acks, 0.5),
            "ack_99pct_ms": acks[need - 1],
            "acks": len(acks),
            "observed_after_ms": publish_done,
            "fetched_99pct_ms": pct(fetched_ms, 0.99) if fetched_ms else None,
            "fetched_before_start": in_time,
            "start": spread(starts),
            "phases": phases,
        }
    finally:
        await scheduling.stop()


async def run_size(count: int, lead_s: float) -> dict:
    tmp = Path(tempfile.mkdtemp(prefix=f"loa-bench-dispatch-{count}-"))
    broker = EmbeddedBroker(
        kind="mosquitto", data_dir=tmp / "broker", extra_config="max_queued_messages 100000\n"
    )
    broker.start()
    db = Database(f"sqlite:///{tmp / 'loa.db'}")
    create_schema(db)
    ids = generate_node_ids(count, PREFIX)
    build_registry(db, ids)
    http_port = free_port()
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db.url,
        mqtt_host=broker.host,
        mqtt_port=broker.port,
        http_port=http_port,
        public_base_url=f"http://127.0.0.1:{http_port}",
        heartbeat_s=600,
        flush_interval_s=1.0,
        secret_key="bench-secret",
    )
    from broadcasts.bulletins import synthesize_bulletin
    from broadcasts.store import ContentStore
    from scheduler.content import ContentGateway

    store = ContentStore(settings, db)
    meta = await asyncio.to_thread(synthesize_bulletin, store, TEXT, title="Đo kiểm")
    gateway = ContentGateway(store)
    log(f"{count} nodes: content {meta.bytes} bytes, {meta.duration_ms} ms")
    content_proc = spawn(
        "--content-worker", db.url, str(settings.data_dir), str(http_port), "bench-secret"
    )
    fleet_proc = None
    controller = ControllerService(settings, db)
    try:
        wait_port(http_port)
        await controller.start()
        await controller.wait_connected()
        fleet_proc = spawn("--fleet-worker", broker.host, str(broker.port), str(count))
        nodes = controller.ingest.fleet.nodes
        t_connect = time.monotonic()
        # The fleet reports when every node has connected *and subscribed* (a node says
        # "online" a moment before it subscribes to its commands).
        await wait_until(
            lambda: any(x.startswith("connected") for x in fleet_proc.lines),
            count / 100 + 60,
            "the fleet to connect",
        )
        await wait_until(
            lambda: sum(nodes[n].state.value in ("online", "degraded") for n in ids) == count,
            count / 100 + 60,
            "every node online",
        )
        await asyncio.sleep(2)
        log(f"{count} nodes online in {time.monotonic() - t_connect:.1f} s")
        await baseline(settings, gateway, meta, ids, lead_s)  # warm-up, not recorded
        base = await baseline(settings, gateway, meta, ids, lead_s)
        log(f"baseline: 99% acks in {base['ack_99pct_ms']} ms")
        disp = await through_dispatcher(settings, db, controller, gateway, meta, ids, lead_s)
        log(f"dispatcher: 99% acks in {disp['ack_99pct_ms']} ms; start {disp['start']}")
        return {
            "nodes": count,
            "lead_s": lead_s,
            "content_bytes": meta.bytes,
            "content_ms": meta.duration_ms,
            "baseline_bare_aiomqtt": base,
            "dispatcher": disp,
            "ack_99pct_ratio": round(disp["ack_99pct_ms"] / max(1, base["ack_99pct_ms"]), 2),
        }
    finally:
        await controller.stop()
        if fleet_proc is not None:
            stop_proc(fleet_proc)
        stop_proc(content_proc)
        broker.cleanup()
        db.dispose()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> int:
    import logging

    # aiomqtt warns at more than 10 publishes awaiting PUBACK; a fleet-wide dispatch has
    # hundreds in flight by design.
    logging.getLogger("mqtt").setLevel(logging.ERROR)
    if len(sys.argv) > 1 and sys.argv[1] == "--fleet-worker":
        fleet_worker(sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
        return 0
    if len(sys.argv) > 1 and sys.argv[1] == "--content-worker":
        content_worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--nodes", type=int, nargs="+", default=[1000, 5000])
    parser.add_argument(
        "--lead-s",
        type=float,
        default=None,
        help="start_at after dispatch (default: 20 s + 40 ms per node, the "
        "time the content server needs to serve every node)",
    )
    parser.add_argument("--out", type=Path, default=RESULTS / "dispatch.json")
    args = parser.parse_args()
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))  # the broker inherits it
    runs = []
    for n in args.nodes:
        lead = args.lead_s if args.lead_s is not None else 20 + 0.04 * n
        runs.append(asyncio.run(run_size(n, lead)))
    result = {
        "benchmark": "dispatch",
        "cpus": os.cpu_count(),
        "runs": runs,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": "python bench/dispatch.py --nodes " + " ".join(map(str, args.nodes)),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2, ensure_ascii=False) + "\n")
    print(json.dumps(result, indent=2, ensure_ascii=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
