"""End to end on a real broker: scheduled TTS bulletins reach the right simulated loudspeakers
at the right time, a node that was away catches up, an emergency pre-empts, and a controller
restart plays a slot exactly once."""

from __future__ import annotations

import asyncio
from datetime import datetime

from loa.timeutil import ICT, now_ms
from tests.scheduler.conftest import wait_for

BULLETIN = (
    "Ủy ban nhân dân xã thông báo: sáng thứ Bảy tuần này, trạm y tế xã tổ chức tiêm "
    "chủng cho trẻ em dưới năm tuổi. Đề nghị các gia đình đưa trẻ đến đúng giờ."
)
SHORT = "Thông báo khẩn: nước sông đang lên nhanh, bà con không đi qua ngầm tràn."

DC_NODES = ["dc-01", "dc-02", "dc-03", "dc-04"]


def iso_in(seconds: float) -> str:
    return datetime.fromtimestamp((now_ms() + seconds * 1000) / 1000, tz=ICT).isoformat()


def started_events(target) -> int:
    return sum(1 for e in target.events or [] if e.get("phase") == "started")


async def test_commune_bulletin_starts_together_and_a_returning_node_plays_it(network):
    net = network
    online = ["dc-01", "dc-02", "dc-03", "tt-01"]
    await net.fleet.start(online)
    await net.online(online)
    start_at = iso_in(10)
    out = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Lịch tiêm chủng",
            "tts_text": BULLETIN,
            "targets": {"communes": [net.ids["Đội Cấn"]]},
            "start_at": start_at,
            "volume": 70,
        },
    )
    assert out["status"] == "scheduled"
    bid = out["id"]

    # dc-04 has never connected: at dispatch time it is not online and the broker has no
    # session to queue for it. It comes up after dispatch but before the slot ends.
    airing = (await wait_for(lambda: net.airings(bid), 15, "the slot to be dispatched"))[0]
    assert airing.start_at_ms == airing.slot_ms
    assert airing.slot_ms - airing.dispatched_ms >= 2_000  # sent a lead time ahead
    await net.fleet.start(["dc-04"])

    airing = await net.wait_final(bid)
    targets = net.targets(airing.id)
    assert sorted(targets) == DC_NODES  # only the commune's nodes, not Tân Trào's
    for node_id in ["dc-01", "dc-02", "dc-03"]:
        t = targets[node_id]
        assert t.phase == "finished", (node_id, t.phase, t.error)
        assert abs(t.started_at_ms - airing.slot_ms) <= 200, (node_id, t.lateness_ms)
        assert abs(t.lateness_ms) <= 200
        assert t.finished_at_ms - t.started_at_ms >= airing.duration_ms - 200
        assert t.village_id is not None and t.commune_id == net.ids["Đội Cấn"]
        assert started_events(t) == 1
        assert [e["type"] for e in t.events][0] == "cmd_ack"
    late = targets["dc-04"]
    assert late.phase == "finished", (late.phase, late.error)
    assert late.started_at_ms is not None
    assert airing.status == "aired"

    detail = await asyncio.to_thread(net.service.get, net.officer(), bid)
    assert detail["status"] == "aired" and detail["aired_ratio"] == 1.0
    assert {o["node_id"] for o in detail["outcomes"]} == set(DC_NODES)
    assert all(o["phase"] == "finished" and o["started_at"] for o in detail["outcomes"])
    # The other commune's officer does not even see it.
    assert (await asyncio.to_thread(net.service.list, net.officer("Tân Trào")))["total"] == 0


async def test_emergency_preempts_a_normal_broadcast_on_the_same_nodes(network):
    net = network
    await net.fleet.start(DC_NODES)
    await net.online(DC_NODES)
    normal = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Bản tin thường",
            "tts_text": BULLETIN,
            "repeat": 3,
            "volume": 40,
            "targets": {"communes": [net.ids["Đội Cấn"]]},
        },
    )
    first = (await wait_for(lambda: net.airings(normal["id"]), 15, "dispatch"))[0]

    def all_started():
        a = net.scheduling.dispatcher._airings.get(first.id)
        return a is not None and all(t.phase == "started" for t in a.targets.values())

    await wait_for(all_started, 20, "the normal bulletin to be playing everywhere")

    # Without confirmation it is refused; with it, it goes out at once.
    emergency_body = {
        "title": "Khẩn cấp: lũ",
        "tts_text": SHORT,
        "priority": "emergency",
        "targets": {"communes": [net.ids["Đội Cấn"]]},
    }
    refused = await asyncio.to_thread(
        lambda: _error_of(net.service.create, net.province, emergency_body)
    )
    assert "xác nhận" in refused
    emergency = await asyncio.to_thread(
        net.service.create, net.province, {**emergency_body, "confirm": True}
    )
    assert emergency["volume"] == net.sched.emergency_volume

    def playing_emergency():
        return all(
            net.fleet.node(n).player.playing_id
            and net.fleet.node(n).player.playing_id.startswith(f"b{emergency['id']}-")
            for n in DC_NODES
        )

    await wait_for(playing_emergency, 20, "the emergency to play on every node")
    assert all(net.fleet.node(n).effective_volume == net.sched.emergency_volume for n in DC_NODES)

    e_airing = await net.wait_final(emergency["id"])
    n_airing = await net.wait_final(normal["id"])
    assert e_airing.status == "aired"
    assert all(t.phase == "finished" for t in net.targets(e_airing.id).values())
    normal_targets = net.targets(n_airing.id)
    assert sorted(normal_targets) == DC_NODES
    for t in normal_targets.values():
        assert t.phase == "preempted", (t.node_id, t.phase)
        assert t.started_at_ms is not None and t.finished_at_ms is not None
        assert t.error
    assert n_airing.status == "missed"
    detail = await asyncio.to_thread(net.service.get, net.officer(), normal["id"])
    assert detail["aired_ratio"] == 0.0
    assert {o["phase"] for o in detail["outcomes"]} == {"preempted"}


async def test_housekeeping_during_a_slow_publish_sends_each_command_once(network, monkeypatch):
    """A dispatch to thousands of clusters takes seconds to publish; its targets are "pending"
    until their PUBACK. Housekeeping (every 0.5 s here) took those for unsent and published
    them a second time, doubling the load on the broker and the nodes in the very seconds an
    emergency needs. Reproduced with a broker slow to acknowledge and one command at a time."""
    net = network
    await net.fleet.start(DC_NODES)
    await net.online(DC_NODES)
    dispatcher = net.scheduling.dispatcher
    plays: list[str] = []
    real_send = dispatcher.commands.send

    async def slow_send(node_id, cmd, **kw):
        if cmd.type == "play":
            plays.append(node_id)
        await asyncio.sleep(0.6)
        await real_send(node_id, cmd, **kw)

    monkeypatch.setattr(dispatcher.commands, "send", slow_send)
    monkeypatch.setattr(dispatcher.sched, "publish_concurrency", 1)
    out = await asyncio.to_thread(net.service.create, net.province, _flood_warning(net))
    airing = await net.wait_final(out["id"])
    assert airing.status == "aired"
    assert sorted(plays) == DC_NODES  # each node's command once, though it took 2.4 s
    assert all(t.phase == "finished" for t in net.targets(airing.id).values())


async def test_housekeeping_leaves_a_dispatch_in_progress_alone(network, monkeypatch, caplog):
    """A once-job leaves the job store when it fires; until the airing is written the
    broadcast looked "scheduled without a job" to housekeeping, which re-added the job. It
    fired at once and APScheduler logged "skipped: maximum number of running instances
    reached" in the middle of every large emergency: a frightening line for whoever reads
    the log during an alert. Reproduced with a dispatch slow to write its airing."""
    import logging
    import time

    net = network
    await net.fleet.start(DC_NODES)
    await net.online(DC_NODES)
    dispatcher = net.scheduling.dispatcher
    real_create = dispatcher._create_airing

    def slow_create(*args, **kw):
        time.sleep(1.5)  # 3 housekeeping passes (0.5 s) while the airing is being written
        return real_create(*args, **kw)

    monkeypatch.setattr(dispatcher, "_create_airing", slow_create)
    with caplog.at_level(logging.WARNING, logger="apscheduler"):
        out = await asyncio.to_thread(net.service.create, net.province, _flood_warning(net))
        airing = await net.wait_final(out["id"])
    assert airing.status == "aired"
    assert len(net.airings(out["id"])) == 1
    assert "maximum number of running instances" not in caplog.text


def _flood_warning(net) -> dict:
    return {
        "title": "Khẩn cấp: lũ",
        "tts_text": SHORT,
        "priority": "emergency",
        "confirm": True,
        "targets": {"communes": [net.ids["Đội Cấn"]]},
    }


def _error_of(fn, *args) -> str:
    from scheduler.errors import ScheduleError

    try:
        fn(*args)
    except ScheduleError as err:
        return err.message
    raise AssertionError("expected a refusal")


async def test_controller_restart_between_scheduling_and_slot_plays_exactly_once(network):
    net = network
    await net.fleet.start(DC_NODES)
    await net.online(DC_NODES)
    officer = net.officer()
    # Slot A is dispatched before the crash (its lead time falls before it), slot B after.
    a = await asyncio.to_thread(
        net.service.create,
        officer,
        {
            "title": "Bản tin A",
            "tts_text": SHORT,
            "start_at": iso_in(6),
            "targets": {"villages": [net.ids["Thôn Tân Lập"]]},
        },
    )
    b = await asyncio.to_thread(
        net.service.create,
        officer,
        {
            "title": "Bản tin B",
            "tts_text": SHORT,
            "start_at": iso_in(11),
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"]]},
        },
    )
    await wait_for(lambda: net.airings(a["id"]), 10, "slot A dispatched")
    assert net.airings(b["id"]) == []

    await net.kill_controller()
    await asyncio.sleep(2.0)
    await net.start_controller()  # new controller, dispatcher and scheduler objects

    a_airing = await net.wait_final(a["id"])
    b_airing = await net.wait_final(b["id"])
    assert len(net.airings(a["id"])) == 1 and len(net.airings(b["id"])) == 1
    for airing, nodes in ((a_airing, ["dc-03", "dc-04"]), (b_airing, ["dc-01", "dc-02"])):
        targets = net.targets(airing.id)
        assert sorted(targets) == nodes
        for t in targets.values():
            assert t.phase == "finished", (t.node_id, t.phase, t.error)
            assert started_events(t) == 1
            assert abs(t.lateness_ms) <= 200
        assert airing.status == "aired"
    detail = await asyncio.to_thread(net.service.get, officer, b["id"])
    assert detail["status"] == "aired"


async def test_cancelling_a_playing_broadcast_stops_it_on_its_nodes(network):
    net = network
    nodes = ["dc-01", "dc-02"]
    await net.fleet.start(nodes)
    await net.online(nodes)
    out = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Sẽ hủy giữa chừng",
            "tts_text": BULLETIN,
            "repeat": 3,
            "targets": {"villages": [net.ids["Thôn Đồng Tâm"]]},
        },
    )
    first = (await wait_for(lambda: net.airings(out["id"]), 15, "dispatch"))[0]

    def playing():
        return all(
            net.fleet.node(n).player.playing_id == f"b{out['id']}-a{first.id}" for n in nodes
        )

    await wait_for(playing, 20, "the bulletin to play")
    cancelled = await asyncio.to_thread(net.service.cancel, net.officer(), out["id"])
    assert cancelled["status"] == "cancelled"
    await wait_for(
        lambda: all(net.fleet.node(n).player.playing_id is None for n in nodes),
        10,
        "the nodes to stop",
    )
    airing = await net.wait_final(out["id"], timeout=10)
    assert airing.status == "cancelled"
    for t in net.targets(airing.id).values():
        last = t.events[-1]
        assert last["phase"] == "finished" and last.get("extra", {}).get("reason") == "stopped"
    assert out["id"] not in net.scheduling.runtime.job_ids()


async def test_node_with_a_clock_five_minutes_fast_still_starts_on_time(network):
    """The controller measures each node's clock skew from its heartbeats and sends
    ``start_at`` in the node's own clock, so a skewed node starts with the others."""
    from firmware_sim.fleet import Fleet

    net = network
    await net.fleet.start(["dc-01"])
    fast = Fleet(
        net.broker.host, net.broker.port, heartbeat_s=10, seed=3, clock_offset_ms=5 * 60_000
    )
    try:
        await fast.start(["dc-02"])
        await net.online(["dc-01", "dc-02"])
        await wait_for(
            lambda: (net.controller.ingest.fleet.nodes["dc-02"].clock_skew_ms or 0) > 4 * 60_000,
            15,
            "the skew to be measured",
        )
        out = await asyncio.to_thread(
            net.service.create,
            net.officer(),
            {
                "title": "Giờ phát thống nhất",
                "tts_text": SHORT,
                "targets": {"nodes": ["dc-01", "dc-02"]},
                "start_at": iso_in(10),
            },
        )
        airing = await net.wait_final(out["id"])
        targets = net.targets(airing.id)
        for node_id in ("dc-01", "dc-02"):
            t = targets[node_id]
            assert t.phase == "finished", (node_id, t.phase, t.error)
            assert abs(t.started_at_ms - airing.slot_ms) <= 300, (node_id, t.lateness_ms)
        # What the fast node itself reported is five minutes ahead.
        started = next(e for e in targets["dc-02"].events if e.get("phase") == "started")
        assert started["at"] - airing.slot_ms > 4 * 60_000
    finally:
        await fast.stop()


async def test_broker_restart_during_a_dispatch_loses_no_broadcast(network):
    """The broker goes down after the play commands went out and comes back before the
    slot ends: every node still plays it once and its proof of play reaches the controller."""
    net = network
    nodes = ["dc-01", "dc-02", "dc-03"]
    await net.fleet.start(nodes)
    await net.online(nodes)
    out = await asyncio.to_thread(
        net.service.create,
        net.officer(),
        {
            "title": "Thông báo mất điện",
            "tts_text": BULLETIN,
            "targets": {"nodes": nodes},
            "start_at": iso_in(8),
        },
    )
    airing = (await wait_for(lambda: net.airings(out["id"]), 15, "the slot to be dispatched"))[0]
    await wait_for(
        lambda: all(t.phase in ("acked", "fetched") for t in net.targets(airing.id).values()),
        15,
        "the nodes to ack",
    )
    await asyncio.to_thread(net.broker.restart)
    airing = await net.wait_final(out["id"], timeout=60)
    targets = net.targets(airing.id)
    for node_id in nodes:
        t = targets[node_id]
        assert t.phase == "finished", (node_id, t.phase, t.error)
        assert started_events(t) == 1
    assert airing.status == "aired"
