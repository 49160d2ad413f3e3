"""Connection life of a simulated node, seen by a raw MQTT subscriber through a real broker
(Debian mosquitto and amqtt): retained status, heartbeats, clean stop, abrupt death, hang."""

from __future__ import annotations

import asyncio
import time

import pytest

from firmware_sim.fleet import Fleet
from loa.protocol import Channel, PlayCmd, VolumeCmd
from loa.timeutil import now_ms
from tests.firmware_sim.conftest import RawController

KEEPALIVE_S = 2
# mosquitto 2.0 runs its keepalive sweep only every 5-6 s (keepalive.c), so a client that
# just goes quiet is dropped up to that much later than 1.5 x keepalive.
BROKER_SWEEP_S = 7


@pytest.fixture
async def ctl(broker):
    async with RawController(broker.host, broker.port) as c:
        yield c


@pytest.fixture
async def nodes(broker):
    f = Fleet(broker.host, broker.port, heartbeat_s=1, keepalive_s=KEEPALIVE_S, seed=1)
    yield f
    await f.stop()


async def retained_status(broker, node_id: str, timeout: float = 3.0):
    """What a controller connecting *now* gets: the retained status message."""
    async with RawController(broker.host, broker.port, client_id="late-joiner") as late:
        rec = await late.wait_for(
            lambda r: r.node_id == node_id and r.channel == Channel.STATUS, timeout
        )
    assert rec.retain, "status must be retained"
    return late.statuses(node_id)[0]


async def test_status_is_retained_online_and_heartbeats_count_up(broker, ctl, nodes):
    assert await nodes.start(["lc-node-1"]) == 1
    status, _ = await ctl.wait_status("lc-node-1", online=True)
    node = nodes.node("lc-node-1")
    assert status.boot_id == node.boot_id and status.fw and status.ts

    await ctl.wait_for(lambda r: len(ctl.heartbeats("lc-node-1")) >= 3, timeout=6)
    beats = ctl.heartbeats("lc-node-1")  # decode_heartbeat validated every one of them
    assert [hb.seq for hb in beats[:3]] == [0, 1, 2]
    assert all(abs(hb.ts - now_ms()) < 10_000 for hb in beats)
    assert beats[0].playing is None and beats[0].speakers_ok == beats[0].speakers_total

    late = await retained_status(broker, "lc-node-1")
    assert late.online is True and late.boot_id == node.boot_id


async def test_clean_stop_publishes_shutdown_and_no_will(broker, ctl, nodes):
    await nodes.start(["lc-node-2"])
    await ctl.wait_status("lc-node-2", online=True)
    await nodes.stop_node("lc-node-2")
    status, _ = await ctl.wait_status("lc-node-2", online=False)
    assert status.reason == "shutdown"
    await asyncio.sleep(1.5 * KEEPALIVE_S + 0.5)
    assert [s.reason for s in ctl.statuses("lc-node-2") if not s.online] == ["shutdown"]
    late = await retained_status(broker, "lc-node-2")
    assert late.online is False and late.reason == "shutdown"


async def _kill_and_expect_will(broker, ctl, nodes, node_id: str, mode: str) -> None:
    await nodes.start([node_id])
    await ctl.wait_status(node_id, online=True)
    await ctl.wait_heartbeat(node_id)
    killed_at = time.monotonic()
    await nodes.kill(node_id, mode=mode)
    limit = 1.5 * KEEPALIVE_S + (BROKER_SWEEP_S if mode == "silent" else 0)
    status, rec = await ctl.wait_status(node_id, timeout=limit + 2, online=False)
    assert status.reason == "lost"
    assert rec.at - killed_at <= limit
    if mode == "silent":
        # A vanished link is only noticed by the broker's keepalive timer, not at once.
        assert rec.at - killed_at >= KEEPALIVE_S
    seen = len(ctl.heartbeats(node_id))
    await asyncio.sleep(1.5)
    assert len(ctl.heartbeats(node_id)) == seen, "a dead node does not heartbeat"
    assert nodes.summary().killed == 1
    late = await retained_status(broker, node_id)
    assert late.online is False and late.reason == "lost"


async def test_abrupt_kill_makes_the_broker_publish_the_will(broker, ctl, nodes):
    """Socket closed under the client, no DISCONNECT: the will comes at once."""
    await _kill_and_expect_will(broker, ctl, nodes, "lc-node-3", "reset")


async def test_silent_death_is_found_by_the_broker_keepalive(mosquitto_broker):
    """The link just goes quiet (no FIN, no pings): the broker times the node out."""
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        f = Fleet(
            mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1, keepalive_s=KEEPALIVE_S
        )
        try:
            await _kill_and_expect_will(mosquitto_broker, ctl, f, "lc-node-6", "silent")
        finally:
            await f.stop()


async def test_hang_keeps_the_link_but_stops_heartbeats(broker, ctl, nodes):
    await nodes.start(["lc-node-4"])
    await ctl.wait_heartbeat("lc-node-4")
    nodes.hang("lc-node-4")
    await asyncio.sleep(0.2)
    seen = len(ctl.heartbeats("lc-node-4"))
    await asyncio.sleep(1.5 * KEEPALIVE_S + 1.5)  # long enough for a will, had the link died
    assert len(ctl.heartbeats("lc-node-4")) == seen
    assert all(s.online for s in ctl.statuses("lc-node-4")), "no will while hung"
    # Commands sent while hung are handled on recovery; heartbeats resume with seq going on.
    await ctl.send("lc-node-4", VolumeCmd(cmd_id="hang-vol", issued_at=now_ms(), level=33))
    await asyncio.sleep(0.3)
    assert ctl.events("lc-node-4") == []
    nodes.resume("lc-node-4")
    await ctl.wait_event("lc-node-4", type="cmd_ack", cmd_id="hang-vol", ok=True)
    hb = await ctl.wait_heartbeat("lc-node-4", after=len(ctl.received))
    assert hb.seq == seen and hb.volume == 33


async def test_mqtt5_node_speaks_the_same_protocol(mosquitto_broker):
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        f = Fleet(
            mosquitto_broker.host,
            mosquitto_broker.port,
            heartbeat_s=1,
            keepalive_s=KEEPALIVE_S,
            mqtt_version=5,
        )
        try:
            await f.start(["lc-v5-node"])
            await ctl.wait_status("lc-v5-node", online=True)
            await ctl.wait_heartbeat("lc-v5-node")
            await f.kill("lc-v5-node")
            status, _ = await ctl.wait_status("lc-v5-node", online=False, timeout=5)
            assert status.reason == "lost"
        finally:
            await f.stop()


async def test_restart_is_a_new_boot_and_queued_commands_arrive(mosquitto_broker, http_server):
    """Persistent session: a command sent while the node is dead is delivered on reboot."""
    async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
        f = Fleet(
            mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1, keepalive_s=KEEPALIVE_S
        )
        try:
            await f.start(["lc-node-5"])
            first_boot = f.node("lc-node-5").boot_id
            await ctl.wait_for(lambda r: len(ctl.heartbeats("lc-node-5")) >= 2, timeout=5)
            await f.kill("lc-node-5")
            await ctl.wait_status("lc-node-5", online=False)
            served = http_server.add("/a.mp3", b"x" * 1000)
            await ctl.send(
                "lc-node-5",
                PlayCmd(
                    cmd_id="while-away",
                    issued_at=now_ms(),
                    broadcast_id="b-away",
                    url=f"{http_server.base}/a.mp3",
                    sha256=served.sha256,
                    bytes=1000,
                    duration_ms=100,
                ),
            )
            mark = len(ctl.received)
            assert await f.restart("lc-node-5")
            status, _ = await ctl.wait_status(
                "lc-node-5", online=True, boot_id=f.node("lc-node-5").boot_id
            )
            assert status.boot_id != first_boot
            hb = await ctl.wait_heartbeat("lc-node-5", after=mark)
            assert hb.seq == 0 and hb.uptime_s == 0
            await ctl.wait_event("lc-node-5", type="cmd_ack", cmd_id="while-away", ok=True)
            await ctl.wait_event(
                "lc-node-5", type="playback", broadcast_id="b-away", phase="finished"
            )
        finally:
            await f.stop()


async def test_node_reconnects_after_a_broker_restart_and_delivers_what_it_kept(mosquitto_broker):
    """Same boot (seq goes on); a fault event raised while the broker was away is sent
    once the link is back."""
    f = Fleet(mosquitto_broker.host, mosquitto_broker.port, heartbeat_s=1, keepalive_s=KEEPALIVE_S)
    try:
        async with RawController(mosquitto_broker.host, mosquitto_broker.port) as ctl:
            await f.start(["lc-node-7"])
            await ctl.wait_for(lambda r: len(ctl.heartbeats("lc-node-7")) >= 2, timeout=5)
            last_seq = ctl.heartbeats("lc-node-7")[-1].seq
            boot_id = f.node("lc-node-7").boot_id
        await asyncio.to_thread(mosquitto_broker.stop)
        for _ in range(50):
            if not f.node("lc-node-7").connected.is_set():
                break
            await asyncio.sleep(0.1)
        assert not f.node("lc-node-7").connected.is_set()
        f.inject("lc-node-7", "amp_fault")  # happens while offline
        await asyncio.to_thread(mosquitto_broker.start)
        async with RawController(
            mosquitto_broker.host, mosquitto_broker.port, client_id="ctl-after"
        ) as ctl:
            await ctl.wait_event("lc-node-7", type="fault", code="amp_fault", timeout=15)
            status, _ = await ctl.wait_status("lc-node-7", online=True, boot_id=boot_id)
            hb = await ctl.wait_heartbeat("lc-node-7", pred=lambda h: h.seq > last_seq)
            assert hb.amp == "fault"
            assert f.node("lc-node-7").stats.connects == 2
    finally:
        await f.stop()
