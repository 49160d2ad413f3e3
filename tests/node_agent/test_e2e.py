"""The whole chain with real sound: the controller schedules a TTS bulletin for a village,
two ``loa node run`` processes on their provisioned credentials download it from the
controller's ``/media`` and it is *heard* on both at the slot, together."""

from __future__ import annotations

import asyncio
import contextlib

import pytest
import uvicorn

from controller.provision import read_controller_env
from firmware_sim.fleet import Fleet
from loa.broker import free_port
from scheduler.config import SchedulerSettings
from scheduler.content import ContentGateway
from tests.conftest import settings_for
from tests.node_agent.conftest import wait_until
from tests.scheduler.conftest import FAST, Network
from tests.scheduler.conftest import wait_for as async_wait_for
from tests.scheduler.test_dispatch_e2e import SHORT, iso_in

# Runs in the SQLite pass only: the subject is the node agent's sound; its database paths run in
# tests/scheduler.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture
async def commune(rig, settings, db):
    from sqlalchemy import select

    from broadcasts.store import ContentStore
    from dashboard.app import create_app
    from registry.models import Commune, Village
    from system.root import api_context

    env = read_controller_env(rig.broker.password_file.parent)
    http_port = free_port()
    base_url = f"http://127.0.0.1:{http_port}"
    cfg = settings_for(
        settings,
        rig.broker,
        http_port=http_port,
        public_base_url=base_url,
        heartbeat_s=10,
        mqtt_username=env["LOA_MQTT_USERNAME"],
        mqtt_password=env["LOA_MQTT_PASSWORD"],
    )

    with db.session() as s:  # the rig made the registry
        ids = {c.name: c.id for c in s.scalars(select(Commune))}
        ids |= {v.name: v.id for v in s.scalars(select(Village))}
    store = ContentStore(cfg, db)
    net = Network(
        settings=cfg,
        db=db,
        ids=ids,
        broker=rig.broker,
        base_url=base_url,
        store=store,
        content=ContentGateway(store),
        sched=SchedulerSettings(**FAST),
        fleet=Fleet(rig.broker.host, rig.broker.port, heartbeat_s=10),
    )
    await net.start_controller()
    net.ctx = api_context(
        cfg, db, content=store, controller=net.controller, scheduling=net.scheduling
    )
    app = create_app(net.ctx)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=http_port, log_level="warning", lifespan="on")
    )
    server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
    serving = asyncio.create_task(server.serve())
    await async_wait_for(lambda: server.started or serving.done(), 15, "the dashboard")
    rig.content_base = f"{base_url}/media/"
    try:
        yield net
    finally:
        server.should_exit = True
        with contextlib.suppress(Exception):
            await asyncio.wait_for(serving, 10)
        if net.scheduling is not None:
            await net.scheduling.stop()
        if net.controller is not None:
            await net.controller.stop()


async def test_a_scheduled_tts_bulletin_is_heard_on_two_nodes_at_the_slot(rig, commune):
    net = commune
    nodes = ["dc-01", "dc-02"]
    procs = [rig.node(n).start() for n in nodes]
    recs = {n: rig.record(n) for n in nodes}
    await net.online(nodes, timeout=20)
    out = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Thông báo nước lên",
            "tts_text": SHORT,
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"]]},
            "start_at": iso_in(8),
            "volume": 90,
        },
    )
    airing = await net.wait_final(out["id"], timeout=60)
    targets = net.targets(airing.id)
    assert sorted(targets) == nodes
    heard = {}
    for n in nodes:
        t = targets[n]
        assert t.phase == "finished", (n, t.phase, t.error, procs[nodes.index(n)].log_text())
        onsets = recs[n].onsets(threshold=800, after=airing.slot_ms / 1000 - 3)
        assert onsets, f"nothing heard on {n}"
        heard[n] = onsets[0] * 1000 - airing.slot_ms
        # Speech starts within a few tens of ms of the slot (TTS may begin with a breath).
        assert -30 < heard[n] < 300, heard
        assert abs(t.started_at_ms - airing.slot_ms) <= 50, t.started_at_ms - airing.slot_ms
        # The whole bulletin is heard, not a fragment.
        end = recs[n].silent_from(onsets[0])
        assert end is not None and end * 1000 - onsets[0] * 1000 > airing.duration_ms * 0.7
    assert abs(heard["dc-01"] - heard["dc-02"]) < 60, heard
    assert airing.status == "aired"
    wait_until(lambda: all(p.proc.poll() is None for p in procs), 1, "nodes alive")


async def test_a_controller_restart_mid_bulletin_loses_neither_the_sound_nor_its_proof(
    rig, commune
):
    """The controller dies once the play command is acknowledged, before the slot: the real
    agents play at ``start_at`` by their own clocks (heard in the recordings), their
    playback events wait in the broker for the controller's persistent session, and the
    restarted controller records the airing as aired."""
    net = commune
    nodes = ["dc-01", "dc-02"]
    procs = [rig.node(n).start() for n in nodes]
    recs = {n: rig.record(n) for n in nodes}
    await net.online(nodes, timeout=20)
    out = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Thông báo lịch tiêm phòng",
            "tts_text": SHORT,
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"]]},
            "start_at": iso_in(10),
            "volume": 90,
        },
    )

    def acknowledged():
        rows = net.airings(out["id"])
        if not rows:
            return False
        targets = net.targets(rows[-1].id)
        return (
            sorted(targets) == nodes
            and all(t.phase in ("acked", "fetched") for t in targets.values())
            and rows[-1]
        )

    airing = await async_wait_for(acknowledged, 20, "both agents to acknowledge the play")
    await net.kill_controller()
    # The slot passes with no controller running; the bulletin is heard all the same.
    for n in nodes:
        await async_wait_for(
            lambda n=n: recs[n].onsets(threshold=800, after=airing.slot_ms / 1000 - 3),
            40,
            f"sound on {n}",
        )
        onset = recs[n].onsets(threshold=800, after=airing.slot_ms / 1000 - 3)[0]
        assert -30 < onset * 1000 - airing.slot_ms < 300, (n, onset * 1000 - airing.slot_ms)
    await net.start_controller()
    final = await net.wait_final(out["id"], timeout=60)
    targets = net.targets(final.id)
    assert {n: targets[n].phase for n in nodes} == {n: "finished" for n in nodes}, {
        n: (targets[n].phase, targets[n].error) for n in nodes
    }
    assert all(abs(targets[n].started_at_ms - final.slot_ms) <= 50 for n in nodes)
    assert final.status == "aired"
    assert all(p.proc.poll() is None for p in procs)
