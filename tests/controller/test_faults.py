"""Faults the controller must survive, on real processes: broker restart, controller kill -9,
a flapping node, a database that refuses writes, a node with a skewed clock."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys

import aiomqtt
import pytest
from sqlalchemy import event, func, select

from controller.models import NodeLive, NodeTransition
from controller.process import ControllerService
from firmware_sim.fleet import Fleet
from loa.broker import EmbeddedBroker
from loa.protocol import VolumeCmd
from loa.timeutil import now_ms
from tests.conftest import settings_for
from tests.controller.test_ingest_broker import heartbeat, wait_for
from tests.factories import make_registry

NODES = [f"fault-{i:02d}" for i in range(12)]


UP = {"online", "degraded"}


def all_online(svc: ControllerService, nodes=NODES) -> bool:
    """Every node up (online, or degraded by a simulated weak signal)."""
    return all(svc.ingest.fleet.nodes[n].state in UP for n in nodes)


@pytest.fixture
def registry(db):
    return make_registry(db, communes={"Liên Hội": {"Thôn Nà Lừa": NODES}}, heartbeat_s=1)


async def test_broker_restart_nodes_and_controller_reconnect_and_queued_command_arrives(
    tmp_path, settings, db, registry
):
    broker = EmbeddedBroker(kind="mosquitto", data_dir=tmp_path / "broker").start()
    try:
        cfg = settings_for(settings, broker, heartbeat_s=1)
        svc = ControllerService(cfg, db, client_id="ctl-restart")
        await svc.start()
        await svc.wait_connected()
        async with Fleet(broker.host, broker.port, heartbeat_s=1, keepalive_s=5) as fleet:
            await fleet.start(NODES)
            await wait_for(lambda: all_online(svc), 15)
            # One node is away (clean stop) when a command is sent: its persistent session
            # queues it, and the queue must survive the broker restart.
            await fleet.stop_node(NODES[0])
            await svc.commands.send(
                NODES[0], VolumeCmd(cmd_id="vol-33", issued_at=now_ms(), level=33)
            )
            await asyncio.sleep(0.5)
            broker.restart()
            await wait_for(lambda: svc.connected.is_set(), 20)
            await fleet.start([NODES[0]])
            await wait_for(lambda: all_online(svc), 30)
            await wait_for(lambda: svc.ingest.fleet.nodes[NODES[0]].heartbeat.volume == 33, 15)
        assert svc.reconnects >= 1
        await svc.stop()
    finally:
        broker.cleanup()


async def test_flapping_node_gives_one_transition_per_real_change(broker, settings, db, registry):
    svc = ControllerService(
        settings_for(settings, broker, heartbeat_s=1), db, client_id=f"ctl-flap-{broker.kind}"
    )
    await svc.start()
    await svc.wait_connected()
    node = NODES[1]
    async with Fleet(broker.host, broker.port, heartbeat_s=1, keepalive_s=5) as fleet:
        for _ in range(4):
            await fleet.start([node])
            await wait_for(lambda: svc.ingest.fleet.nodes[node].state in UP, 10)
            await fleet.kill(node)
            await wait_for(lambda: svc.ingest.fleet.nodes[node].state == "offline", 10)
    await svc.stop()
    with db.session() as s:
        rows = s.execute(
            select(NodeTransition.to_state, NodeTransition.cause)
            .where(NodeTransition.node_id == node)
            .order_by(NodeTransition.at_ms, NodeTransition.id)
        ).all()
    states = [r.to_state for r in rows]
    # online (status) -> online+audible (first heartbeat) -> offline (will), four times.
    assert states.count("offline") == 4
    assert all(a != "offline" or b != "offline" for a, b in zip(states, states[1:], strict=False))
    assert {r.cause for r in rows if r.to_state == "offline"} == {"will_lost"}


def _controller_process(settings, client_id: str) -> subprocess.Popen:
    env = {
        **os.environ,
        "LOA_DATABASE_URL": settings.database_url,
        "LOA_MQTT_PORT": str(settings.mqtt_port),
        "LOA_DATA_DIR": str(settings.data_dir),
        "LOA_CONTROLLER_CLIENT_ID": client_id,
        "LOA_FLUSH_INTERVAL_S": "0.2",
        "LOA_LOG_LEVEL": "WARNING",
    }
    return subprocess.Popen(
        [sys.executable, "-m", "system", "controller"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def _live_states(db) -> dict[str, str]:
    with db.session() as s:
        return dict(s.execute(select(NodeLive.node_id, NodeLive.state)).all())


async def test_controller_kill_9_and_restart_rebuilds_state_without_false_outages(
    mosquitto_broker, settings, db, registry
):
    cfg = settings_for(settings, mosquitto_broker, heartbeat_s=1)
    proc = _controller_process(cfg, "ctl-kill9")
    try:
        async with Fleet(
            mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1, keepalive_s=5
        ) as fleet:
            await fleet.start(NODES)
            # Up = online or degraded (a simulated signal may dip below the threshold).
            await wait_for(
                lambda: (
                    set(_live_states(db).values()) <= UP and len(_live_states(db)) == len(NODES)
                ),
                30,
                step=0.3,
            )
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            killed_at = now_ms()
            await asyncio.sleep(1.5)
            proc = _controller_process(cfg, "ctl-kill9")
            await asyncio.sleep(4)  # > 3 x heartbeat_s: a lost state would show as outages
            with db.session() as s:
                outages = s.scalar(
                    select(func.count())
                    .select_from(NodeTransition)
                    .where(NodeTransition.to_state == "offline", NodeTransition.at_ms >= killed_at)
                )
            assert outages == 0
            assert set(_live_states(db).values()) <= UP
            # And the restarted controller still sees a real outage.
            await fleet.kill(NODES[2])
            await wait_for(lambda: _live_states(db)[NODES[2]] == "offline", 10, step=0.2)
    finally:
        proc.terminate()
        proc.wait(10)


async def test_database_refusing_writes_keeps_everything_until_it_accepts_again(
    mosquitto_broker, settings, db, registry
):
    svc = ControllerService(
        settings_for(settings, mosquitto_broker, heartbeat_s=1), db, client_id="ctl-diskfull"
    )
    full = {"on": False}

    @event.listens_for(db.engine, "before_cursor_execute")
    def disk_full(conn, cursor, statement, *_):
        if full["on"] and statement.lstrip().upper().startswith(("INSERT", "UPDATE")):
            # The same error SQLite raises when the disk fills up.
            import sqlite3

            raise sqlite3.OperationalError("database or disk is full")

    await svc.start()
    await svc.wait_connected()
    full["on"] = True
    async with Fleet(mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1) as fleet:
        await fleet.start(NODES[:4])
        await wait_for(lambda: all_online(svc, NODES[:4]), 10)
        await wait_for(lambda: svc.ingest.writer.flush_errors >= 2, 10)
        assert "disk is full" in svc.ingest.writer.last_error
        with db.session() as s:
            assert s.scalar(select(func.count()).select_from(NodeTransition)) == 0
        full["on"] = False
        await wait_for(lambda: svc.ingest.batch.empty() and not svc.ingest._dirty, 10)
    await svc.stop()
    with db.session() as s:
        written = s.scalars(
            select(NodeTransition).where(NodeTransition.node_id.in_(NODES[:4]))
        ).all()
    # Each node: online on status, audible on first heartbeat, offline on clean stop.
    assert sorted({t.node_id for t in written}) == NODES[:4]
    assert all(
        any(t.to_state in UP and t.available for t in written if t.node_id == n) for n in NODES[:4]
    )


@pytest.mark.parametrize("offset_ms", [5 * 60_000, -5 * 60_000])
async def test_node_clock_five_minutes_off_is_flagged_not_refused(
    mosquitto_broker, settings, db, registry, offset_ms
):
    svc = ControllerService(
        settings_for(settings, mosquitto_broker, heartbeat_s=1), db, client_id="ctl-skew"
    )
    await svc.start()
    await svc.wait_connected()
    async with Fleet(
        mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1, clock_offset_ms=offset_ms
    ) as fleet:
        await fleet.start(NODES[:1])
        await wait_for(lambda: svc.ingest.fleet.nodes[NODES[0]].state in UP, 10)
    skew = svc.ingest.fleet.nodes[NODES[0]].clock_skew_ms
    assert abs(skew - offset_ms) < 2_000
    assert svc.ingest.rejected["future_timestamp"] == 0
    await svc.stop()
    with db.session() as s:
        assert abs(s.get(NodeLive, NODES[0]).clock_skew_ms - offset_ms) < 2_000


async def test_heartbeat_from_far_future_is_refused_and_the_next_good_one_applies(
    mosquitto_broker, settings, db, registry
):
    svc = ControllerService(
        settings_for(settings, mosquitto_broker, heartbeat_s=1), db, client_id="ctl-future"
    )
    await svc.start()
    await svc.wait_connected()
    async with aiomqtt.Client(mosquitto_broker.host, mosquitto_broker.port) as c:
        topic = f"loa/v1/nodes/{NODES[3]}/heartbeat"
        await c.publish(topic, heartbeat(1, ts=now_ms() + 3_600_000), qos=1)
        await c.publish(topic, heartbeat(2), qos=1)
    await wait_for(lambda: svc.ingest.fleet.nodes[NODES[3]].heartbeat is not None, 5)
    assert svc.ingest.rejected["future_timestamp"] == 1
    assert svc.ingest.fleet.nodes[NODES[3]].heartbeat.seq == 2
    await svc.stop()
