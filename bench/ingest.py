"""Ingest throughput: heartbeats per second the controller sustains, against a bare aiomqtt
receive loop measured in the same run on the same broker.

Method (so that the consumer, not the publisher, is what is measured on a 2-core machine):
each consumer first opens its persistent session and goes away; the publisher then puts N
heartbeats for K registered nodes into the broker (mosquitto queues them for the absent
session); the consumer reconnects and the clock runs from its connect until the N-th
heartbeat has been received (bare loop) or validated and applied to fleet state (controller,
with its sweeper and batched database flushes running as in production).

Also in the same run (issue 16): the cost of the roll-ups' day-counter triggers on the write
path. The controller is measured a second time on a database whose triggers were dropped,
and, since a heartbeat run writes few transitions (one per node coming online), the worst
case is measured on its own: transitions inserted in the ingest writer's batches (one
executemany per flush), every row firing the trigger, with and without it.

    .venv/bin/python bench/ingest.py [--messages 100000] [--nodes 5000]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import aiomqtt
import paho.mqtt.client as paho

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import RESULTS, bulk_register  # noqa: E402
from controller.models import NodeTransition  # noqa: E402
from controller.process import ControllerService  # noqa: E402
from indicator.models import drop_rollup_trigger_ddl  # noqa: E402
from loa.broker import EmbeddedBroker  # noqa: E402
from loa.db import Database  # noqa: E402
from loa.protocol import Topics  # noqa: E402
from loa.settings import Settings  # noqa: E402
from loa.timeutil import now_ms  # noqa: E402
from system.schema import create_schema  # noqa: E402

QUEUE_CONFIG = "max_queued_messages 2000000\nqueue_qos0_messages true\nmax_queued_bytes 0\n"


def node_ids(k: int) -> list[str]:
    return [f"bench-{i:05d}" for i in range(k)]


def publish_heartbeats(port: int, ids: list[str], n: int) -> float:
    """Publish n QoS 0 heartbeats round-robin over ids with paho; returns seconds taken."""
    topics = Topics()
    client = paho.Client(paho.CallbackAPIVersion.VERSION2, client_id="bench-publisher")
    client.max_queued_messages_set(0)
    client.connect("127.0.0.1", port, keepalive=60)
    client.loop_start()
    t0 = time.perf_counter()
    ts = now_ms()
    for i in range(n):
        node = ids[i % len(ids)]
        body = {
            "seq": i // len(ids),
            "ts": ts,
            "uptime_s": 100,
            "volume": 70,
            "amp": "ok",
            "speakers_ok": 2,
            "speakers_total": 2,
            "power": "mains",
            "net": "4g",
            "rssi_dbm": -80 - (i % 20),
            "playing": None,
            "temp_c": 31.5,
        }
        info = client.publish(topics.heartbeat(node), json.dumps(body), qos=0)
        if i % 5000 == 0:
            info.wait_for_publish(30)
    info.wait_for_publish(60)
    # A final QoS 1 round trip proves the broker has accepted everything before we go on.
    client.publish("bench/fence", b"1", qos=1).wait_for_publish(60)
    elapsed = time.perf_counter() - t0
    client.loop_stop()
    client.disconnect()
    return elapsed


async def prime_session(port: int, client_id: str, topic: str) -> None:
    async with aiomqtt.Client("127.0.0.1", port, identifier=client_id, clean_session=False) as c:
        await c.subscribe(topic, qos=0)


async def bare_loop(port: int, n: int) -> float:
    topic = "loa/v1/nodes/+/heartbeat"
    await prime_session(port, "bench-bare", topic)
    publish_heartbeats(port, node_ids(ARGS.nodes), n)
    received = 0
    t0 = time.perf_counter()
    try:
        async with (
            asyncio.timeout(ARGS.timeout_s),
            aiomqtt.Client(
                "127.0.0.1",
                port,
                identifier="bench-bare",
                clean_session=False,
                max_queued_incoming_messages=0,
            ) as c,
        ):
            async for _m in c.messages:
                received += 1
                if received >= n:
                    break
    except TimeoutError:
        raise SystemExit(
            f"bare loop: {received} of {n} heartbeats in {ARGS.timeout_s} s; "
            "the broker dropped or never delivered the rest"
        ) from None
    return time.perf_counter() - t0


async def controller_loop(port: int, n: int, db: Database, data_dir: Path) -> tuple[float, dict]:
    settings = Settings(
        data_dir=data_dir,
        database_url=db.url,
        mqtt_port=port,
        flush_interval_s=1.0,
        history_sample_s=300,
    )
    svc = ControllerService(settings, db, client_id="bench-controller")
    await svc.start()
    await svc.wait_connected()
    await svc.stop()
    publish_heartbeats(port, node_ids(ARGS.nodes), n)
    svc = ControllerService(settings, db, client_id="bench-controller")
    t0, c0 = time.perf_counter(), time.process_time()
    await svc.start()
    deadline = t0 + ARGS.timeout_s
    # Rejected heartbeats count as handled: waiting for them to be accepted would never end.
    while svc.ingest.accepted["heartbeat"] + sum(svc.ingest.rejected.values()) < n:
        if time.perf_counter() > deadline:
            await svc.stop()
            raise SystemExit(
                f"controller: {svc.ingest.accepted['heartbeat']} of {n} heartbeats "
                f"accepted, rejected {dict(svc.ingest.rejected)}, after "
                f"{ARGS.timeout_s} s"
            )
        await asyncio.sleep(0.005)
    elapsed, cpu = time.perf_counter() - t0, time.process_time() - c0
    await svc.stop()
    return elapsed, {
        # CPU time of this process (the controller runs in it; SQLite and its triggers too):
        # on a shared machine it moves far less with the load than the wall time does.
        "cpu_s": round(cpu, 3),
        "rejected": dict(svc.ingest.rejected),
        "flushes": svc.ingest.writer.flushes,
        "flush_errors": svc.ingest.writer.flush_errors,
    }


def register_nodes(db: Database, k: int) -> None:
    bulk_register(db, node_ids(k))


def drop_triggers(db: Database) -> None:
    """The baseline database: the roll-ups' day-counter triggers dropped."""
    with db.engine.begin() as conn:
        for statement in drop_rollup_trigger_ddl(db.engine.dialect.name):
            conn.exec_driver_sql(statement)


def insert_transitions(db: Database, rows: int, batch: int) -> float:
    """CPU seconds (SQLite and its triggers run in this process) to insert ``rows``
    transitions in batches of ``batch`` (one transaction and one executemany per batch, as
    the ingest writer flushes), spread over two days."""
    from sqlalchemy import insert

    ids = node_ids(ARGS.nodes)
    base = now_ms() - 86_400_000
    c0 = time.process_time()
    for i in range(0, rows, batch):
        with db.session() as s:
            s.execute(
                insert(NodeTransition),
                [
                    {
                        "node_id": ids[k % len(ids)],
                        "at_ms": base + k * 1_000,
                        "from_state": "online",
                        "to_state": "offline",
                        "available": False,
                        "cause": "bench",
                    }
                    for k in range(i, min(rows, i + batch))
                ],
            )
    return time.process_time() - c0


def fresh_database(path: Path, triggers: bool) -> Database:
    db = Database(f"sqlite:///{path}")
    create_schema(db)
    if not triggers:
        drop_triggers(db)
    register_nodes(db, ARGS.nodes)
    return db


async def main() -> dict:
    n = ARGS.messages
    load: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="loa-bench-") as tmp:
        tmpdir = Path(tmp)
        with EmbeddedBroker(
            kind="mosquitto", data_dir=tmpdir / "broker", extra_config=QUEUE_CONFIG
        ) as broker:
            load["bare_loop"] = os.getloadavg()[0]
            bare_s = await bare_loop(broker.port, n)
            # With and without the triggers, alternated and the order swapped each round, on
            # fresh databases (every node comes online once in each, so each run writes the
            # same transitions); best of each, so a burst of load does not decide it.
            load["controller"] = os.getloadavg()[0]
            runs: dict[bool, list[tuple[float, dict]]] = {True: [], False: []}
            for i in range(ARGS.rounds):
                for triggers in (True, False) if i % 2 == 0 else (False, True):
                    db = fresh_database(tmpdir / f"bench-{i}-{triggers}.db", triggers)
                    runs[triggers].append(
                        await controller_loop(broker.port, n, db, tmpdir / f"data-{i}-{triggers}")
                    )
                    if triggers or i < ARGS.rounds - 1:
                        db.dispose()
                    else:
                        bare_db = db
            ctl_s, ctl_info = min(runs[True], key=lambda r: r[0])
            nt_s, nt_info = min(runs[False], key=lambda r: r[0])
            load["controller_end"] = os.getloadavg()[0]
        # Worst case: every row a transition, alternated the same way.
        if ARGS.rounds % 2 == 0:  # the last round ran the bare database first: made anew
            bare_db.dispose()
            bare_db = fresh_database(tmpdir / "inserts-without.db", False)
        with_db = fresh_database(tmpdir / "inserts-with.db", True)
        rows = ARGS.transitions
        load["transition_inserts"] = os.getloadavg()[0]
        with_t, without_t = [], []
        for _ in range(ARGS.rounds):
            with_t.append(insert_transitions(with_db, rows, 500))
            without_t.append(insert_transitions(bare_db, rows, 500))
        with_db.dispose()
        bare_db.dispose()
    bare_rate, ctl_rate = n / bare_s, n / ctl_s
    nt_rate = n / nt_s
    controller_runs = {
        "with_triggers_s": [round(r[0], 3) for r in runs[True]],
        "without_triggers_s": [round(r[0], 3) for r in runs[False]],
        "with_triggers_cpu_s": [r[1]["cpu_s"] for r in runs[True]],
        "without_triggers_cpu_s": [r[1]["cpu_s"] for r in runs[False]],
    }
    cpu_with = min(r[1]["cpu_s"] for r in runs[True])
    cpu_without = min(r[1]["cpu_s"] for r in runs[False])
    result = {
        "benchmark": "ingest",
        "messages": n,
        "nodes": ARGS.nodes,
        "cpus": os.cpu_count(),
        "bare_aiomqtt_per_s": round(bare_rate),
        "controller_per_s": round(ctl_rate),
        "ratio": round(ctl_rate / bare_rate, 3),
        "target_per_s": 10_000,
        "target_ratio": 0.6,
        "controller": ctl_info,
        "controller_without_rollup_triggers_per_s": round(nt_rate),
        "controller_without_rollup_triggers": nt_info,
        "controller_runs": controller_runs,
        "rollup_triggers_cost_pct": round(100 * (1 - ctl_rate / nt_rate), 1),
        # The same on CPU time (best of each): what the triggers cost the controller's work.
        "rollup_triggers_cpu_cost_pct": round(100 * (cpu_with / cpu_without - 1), 1),
        "transition_inserts": {
            "rows": rows,
            "batch": 500,
            "with_triggers_per_cpu_s": round(rows / min(with_t)),
            "without_triggers_per_cpu_s": round(rows / min(without_t)),
            "runs_with_cpu_s": [round(x, 3) for x in with_t],
            "runs_without_cpu_s": [round(x, 3) for x in without_t],
            "rollup_triggers_cost_pct": round(100 * (1 - min(without_t) / min(with_t)), 1),
        },
        "load_1m_before": {k: round(v, 2) for k, v in load.items()},
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }
    return result


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=100_000)
    parser.add_argument("--nodes", type=int, default=5_000)
    parser.add_argument(
        "--rounds", type=int, default=2, help="alternated runs with and without the triggers"
    )
    parser.add_argument(
        "--transitions",
        type=int,
        default=50_000,
        help="transitions inserted directly, with and without the roll-ups' triggers",
    )
    parser.add_argument(
        "--timeout-s",
        type=float,
        default=300.0,
        help="give up (exit non-zero, with the counts) after this long",
    )
    ARGS = parser.parse_args()
    res = asyncio.run(main())
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "ingest.json").write_text(json.dumps(res, indent=2) + "\n")
    print(f"bare aiomqtt loop : {res['bare_aiomqtt_per_s']:>8,} heartbeats/s")
    print(
        f"Loa controller    : {res['controller_per_s']:>8,} heartbeats/s "
        f"({res['ratio']:.0%} of bare; targets >= 10,000/s and >= 60%)"
    )
    print(
        f"without roll-up triggers: {res['controller_without_rollup_triggers_per_s']:>8,} "
        f"heartbeats/s (triggers cost {res['rollup_triggers_cost_pct']} % of the rate, "
        f"{res['rollup_triggers_cpu_cost_pct']} % more CPU)"
    )
    ti = res["transition_inserts"]
    print(
        f"transition inserts: {ti['with_triggers_per_cpu_s']:,}/CPU s with triggers, "
        f"{ti['without_triggers_per_cpu_s']:,} without (cost {ti['rollup_triggers_cost_pct']} %)"
    )
