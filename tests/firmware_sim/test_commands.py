"""Protocol behaviour of a simulated node: acks, play/stream, Thông tư 39 priorities,
stop, volume, config, selftest, as seen by a raw subscriber through real mosquitto."""

from __future__ import annotations

import asyncio
import itertools
import os

from loa.protocol import (
    ConfigCmd,
    PlayCmd,
    SelftestCmd,
    StopCmd,
    StreamCmd,
    VolumeCmd,
)
from loa.timeutil import now_ms

_ids = itertools.count(1)


def cmd_id() -> str:
    return f"c-{os.getpid()}-{next(_ids)}"


def play(
    http_server,
    path: str,
    broadcast_id: str,
    *,
    duration_ms: int = 300,
    start_at: int = 0,
    priority: str = "normal",
    sha256: str | None = None,
    size: int = 20_000,
    **kw,
) -> PlayCmd:
    served = http_server.files.get(path) or http_server.add(path, os.urandom(size))
    return PlayCmd(
        cmd_id=cmd_id(),
        issued_at=now_ms(),
        broadcast_id=broadcast_id,
        url=f"{http_server.base}{path}",
        sha256=sha256 or served.sha256,
        bytes=len(served.data),
        duration_ms=duration_ms,
        start_at=start_at,
        priority=priority,
        **kw,
    )


async def started_node(fleet, controller, node_id: str, **kw):
    await fleet.start([node_id])
    await controller.wait_heartbeat(node_id)
    return fleet.node(node_id)


# ============================================================================ play


async def test_play_fetches_then_starts_on_time_by_node_clock_then_finishes(
    fleet, controller, http_server
):
    node = await started_node(fleet, controller, "cmd-play-1")
    start_at = node.now_ms() + 1500
    cmd = play(
        http_server, "/bulletin.mp3", "b-morning", duration_ms=1200, start_at=start_at, size=200_000
    )
    await controller.send("cmd-play-1", cmd)

    ack = await controller.wait_event("cmd-play-1", type="cmd_ack", cmd_id=cmd.cmd_id)
    assert ack.ok is True and ack.error is None
    fetched = await controller.wait_event("cmd-play-1", type="playback", phase="fetched")
    assert fetched.at < start_at, "content is fetched and checked before the start time"
    started = await controller.wait_event("cmd-play-1", timeout=4, type="playback", phase="started")
    assert 0 <= started.at - start_at < 200
    playing = await controller.wait_heartbeat(
        "cmd-play-1", pred=lambda hb: hb.playing == "b-morning"
    )
    assert playing.playing == "b-morning"
    finished = await controller.wait_event(
        "cmd-play-1", timeout=4, type="playback", phase="finished"
    )
    assert finished.at - started.at >= 1200
    assert controller.phases("cmd-play-1", "b-morning") == ["fetched", "started", "finished"]
    await controller.wait_heartbeat(
        "cmd-play-1", after=len(controller.received), pred=lambda hb: hb.playing is None
    )


async def test_repeat_and_gap_make_the_airing_longer(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-play-2")
    await controller.send(
        "cmd-play-2", play(http_server, "/r.mp3", "b-rep", duration_ms=300, repeat=3, gap_ms=200)
    )
    started = await controller.wait_event("cmd-play-2", type="playback", phase="started")
    finished = await controller.wait_event("cmd-play-2", type="playback", phase="finished")
    assert finished.at - started.at >= 3 * 300 + 2 * 200


async def test_wrong_checksum_and_missing_file_fail(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-play-3")
    await controller.send("cmd-play-3", play(http_server, "/x.mp3", "b-bad", sha256="0" * 64))
    failed = await controller.wait_event("cmd-play-3", type="playback", broadcast_id="b-bad")
    assert failed.phase == "failed" and failed.error == "checksum"

    missing = play(http_server, "/x.mp3", "b-404")
    missing = missing.model_copy(update={"url": f"{http_server.base}/nothing-here.mp3"})
    await controller.send("cmd-play-3", missing)
    failed = await controller.wait_event("cmd-play-3", type="playback", broadcast_id="b-404")
    assert failed.phase == "failed" and failed.error == "download"

    short = play(http_server, "/x.mp3", "b-size")
    await controller.send("cmd-play-3", short.model_copy(update={"bytes": short.bytes + 10}))
    failed = await controller.wait_event("cmd-play-3", type="playback", broadcast_id="b-size")
    assert failed.phase == "failed" and failed.error == "download"
    for b in ("b-bad", "b-404", "b-size"):
        assert "started" not in controller.phases("cmd-play-3", b)


async def test_interrupted_download_resumes_with_range(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-play-4")
    served = http_server.add("/cut.mp3", os.urandom(300_000), truncate_first=True)
    await controller.send("cmd-play-4", play(http_server, "/cut.mp3", "b-cut"))
    await controller.wait_event(
        "cmd-play-4", type="playback", broadcast_id="b-cut", phase="finished"
    )
    assert served.requests[0] == ""
    assert len(served.requests) == 2 and served.requests[1].startswith("bytes=")
    resumed_from = int(served.requests[1][6:-1])
    assert 0 < resumed_from < len(served.data)


# ============================================================================ acks


async def test_expired_malformed_and_duplicate_commands(fleet, controller, http_server):
    node = await started_node(fleet, controller, "cmd-ack-1")

    expired = play(http_server, "/e.mp3", "b-old").model_copy(
        update={"expires_at": node.now_ms() - 1000}
    )
    await controller.send("cmd-ack-1", expired)
    ack = await controller.wait_event("cmd-ack-1", type="cmd_ack", cmd_id=expired.cmd_id)
    assert ack.ok is False and ack.error == "expired"

    await controller.send("cmd-ack-1", b'{"cmd_id": "bad-1", "type": "play", "issued_at": 1}')
    ack = await controller.wait_event("cmd-ack-1", type="cmd_ack", cmd_id="bad-1")
    assert ack.ok is False and "broadcast_id" in ack.error

    await controller.send(
        "cmd-ack-1", b'{"cmd_id": "bad-2", "type": "volume", "issued_at": 1, "level": 250}'
    )
    ack = await controller.wait_event("cmd-ack-1", type="cmd_ack", cmd_id="bad-2")
    assert ack.ok is False and "level" in ack.error

    await controller.send("cmd-ack-1", b"this is not json")
    ack = await controller.wait_event("cmd-ack-1", type="cmd_ack", cmd_id="")
    assert ack.ok is False and ack.error.startswith("not_json")

    vol = VolumeCmd(cmd_id=cmd_id(), issued_at=now_ms(), level=10)
    await controller.send("cmd-ack-1", vol)
    await controller.send("cmd-ack-1", vol)  # a controller retry / QoS 1 redelivery
    await controller.send("cmd-ack-1", SelftestCmd(cmd_id="after-dup", issued_at=now_ms()))
    await controller.wait_event("cmd-ack-1", type="cmd_ack", cmd_id="after-dup")
    acks = [e for e in controller.events("cmd-ack-1", "cmd_ack") if e.cmd_id == vol.cmd_id]
    assert len(acks) == 1 and acks[0].ok
    assert node.stats.duplicates == 1
    assert not controller.phases("cmd-ack-1", "b-old")


# ============================================================================ priorities


async def test_emergency_preempts_normal(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-prio-1")
    await controller.send("cmd-prio-1", play(http_server, "/n.mp3", "b-normal", duration_ms=10_000))
    await controller.wait_event(
        "cmd-prio-1", type="playback", broadcast_id="b-normal", phase="started"
    )
    await controller.send(
        "cmd-prio-1",
        play(http_server, "/em.mp3", "b-flood", duration_ms=1500, priority="emergency"),
    )
    hb = await controller.wait_heartbeat(
        "cmd-prio-1", pred=lambda h: h.playing is not None, after=len(controller.received)
    )
    assert hb.playing == "b-flood"
    await controller.wait_event(
        "cmd-prio-1", type="playback", broadcast_id="b-flood", phase="finished"
    )
    assert controller.phases("cmd-prio-1", "b-normal") == ["fetched", "started", "preempted"]
    assert controller.phases("cmd-prio-1", "b-flood") == ["fetched", "started", "finished"]
    order = [(e.broadcast_id, e.phase) for e in controller.events("cmd-prio-1", "playback")]
    assert order.index(("b-normal", "preempted")) < order.index(("b-flood", "started"))


async def test_same_or_lower_level_waits_its_turn(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-prio-2")
    await controller.send(
        "cmd-prio-2", play(http_server, "/a.mp3", "b-first", duration_ms=1200, priority="priority")
    )
    await controller.wait_event(
        "cmd-prio-2", type="playback", broadcast_id="b-first", phase="started"
    )
    await controller.send(
        "cmd-prio-2", play(http_server, "/b.mp3", "b-normal-late", duration_ms=200)
    )
    await controller.send(
        "cmd-prio-2", play(http_server, "/c.mp3", "b-second", duration_ms=200, priority="priority")
    )
    await controller.wait_event(
        "cmd-prio-2", type="playback", broadcast_id="b-normal-late", phase="finished", timeout=6
    )
    evs = {(e.broadcast_id, e.phase): e for e in controller.events("cmd-prio-2", "playback")}
    assert ("b-first", "preempted") not in evs
    assert evs[("b-first", "finished")].at <= evs[("b-second", "started")].at
    # After the one playing, the highest waiting level goes first, then the normal one.
    assert evs[("b-second", "finished")].at <= evs[("b-normal-late", "started")].at


# ============================================================================ stop


async def test_stop_one_broadcast_or_everything(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-stop-1")
    await controller.send("cmd-stop-1", play(http_server, "/l.mp3", "b-long", duration_ms=30_000))
    await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-long", phase="started"
    )
    await controller.send("cmd-stop-1", play(http_server, "/q.mp3", "b-queued", duration_ms=30_000))
    await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-queued", phase="fetched"
    )
    stop_one = StopCmd(cmd_id=cmd_id(), issued_at=now_ms(), broadcast_id="b-long")
    await controller.send("cmd-stop-1", stop_one)
    stopped = await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-long", phase="finished"
    )
    assert stopped.reason == "stopped"
    # the waiting one gets its turn
    await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-queued", phase="started"
    )
    await controller.send(
        "cmd-stop-1", play(http_server, "/q2.mp3", "b-queued-2", duration_ms=30_000)
    )
    await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-queued-2", phase="fetched"
    )
    await controller.send("cmd-stop-1", StopCmd(cmd_id=cmd_id(), issued_at=now_ms()))
    ended = await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-queued-2", phase="failed"
    )
    assert ended.error == "stopped"
    await controller.wait_event(
        "cmd-stop-1", type="playback", broadcast_id="b-queued", phase="finished"
    )
    await controller.wait_heartbeat(
        "cmd-stop-1", after=len(controller.received), pred=lambda hb: hb.playing is None
    )
    assert fleet.node("cmd-stop-1").player.jobs == set()


# ============================================================================ stream


async def test_stream_is_read_until_it_ends_or_is_stopped(fleet, controller, http_server):
    node = await started_node(fleet, controller, "cmd-live-1")
    await controller.send(
        "cmd-live-1",
        StreamCmd(
            cmd_id=cmd_id(),
            issued_at=now_ms(),
            broadcast_id="b-live-short",
            url=f"{http_server.base}/live/short?seconds=1.0",
        ),
    )
    await controller.wait_event(
        "cmd-live-1", type="playback", broadcast_id="b-live-short", phase="started"
    )
    end = await controller.wait_event(
        "cmd-live-1", type="playback", broadcast_id="b-live-short", phase="finished"
    )
    assert end.reason == "end"
    assert node.player.stream_bytes_total == http_server.stream_bytes_sent["/live/short"] > 20_000

    await controller.send(
        "cmd-live-1",
        StreamCmd(
            cmd_id=cmd_id(),
            issued_at=now_ms(),
            broadcast_id="b-live",
            url=f"{http_server.base}/live/forever",
        ),
    )
    await controller.wait_event(
        "cmd-live-1", type="playback", broadcast_id="b-live", phase="started"
    )
    await controller.wait_heartbeat("cmd-live-1", pred=lambda hb: hb.playing == "b-live")
    await controller.send(
        "cmd-live-1", StopCmd(cmd_id=cmd_id(), issued_at=now_ms(), broadcast_id="b-live")
    )
    end = await controller.wait_event(
        "cmd-live-1", type="playback", broadcast_id="b-live", phase="finished"
    )
    assert end.reason == "stopped"
    await asyncio.sleep(0.3)
    sent = http_server.stream_bytes_sent["/live/forever"]
    await asyncio.sleep(0.3)
    assert http_server.stream_bytes_sent["/live/forever"] == sent, "node hung up the stream"

    await controller.send(
        "cmd-live-1",
        StreamCmd(
            cmd_id=cmd_id(),
            issued_at=now_ms(),
            broadcast_id="b-live-404",
            url=f"{http_server.base}/not-a-stream",
        ),
    )
    failed = await controller.wait_event("cmd-live-1", type="playback", broadcast_id="b-live-404")
    assert failed.phase == "failed" and failed.error == "stream"


async def test_emergency_file_preempts_a_live_stream(fleet, controller, http_server):
    await started_node(fleet, controller, "cmd-live-2")
    await controller.send(
        "cmd-live-2",
        StreamCmd(
            cmd_id=cmd_id(),
            issued_at=now_ms(),
            broadcast_id="b-relay",
            url=f"{http_server.base}/live/relay",
        ),
    )
    await controller.wait_event(
        "cmd-live-2", type="playback", broadcast_id="b-relay", phase="started"
    )
    await controller.send(
        "cmd-live-2",
        play(http_server, "/alarm.mp3", "b-alarm", duration_ms=200, priority="emergency"),
    )
    await controller.wait_event(
        "cmd-live-2", type="playback", broadcast_id="b-alarm", phase="finished"
    )
    assert controller.phases("cmd-live-2", "b-relay") == ["started", "preempted"]


# ============================================================================ settings


async def test_volume_config_and_selftest(fleet, controller, http_server):
    node = await started_node(fleet, controller, "cmd-set-1")
    vol = VolumeCmd(cmd_id=cmd_id(), issued_at=now_ms(), level=42)
    await controller.send("cmd-set-1", vol)
    await controller.wait_event("cmd-set-1", type="cmd_ack", cmd_id=vol.cmd_id, ok=True)
    hb = await controller.wait_heartbeat("cmd-set-1", after=len(controller.received))
    assert hb.volume == 42

    # a broadcast with its own volume plays at it, then the set level is back
    await controller.send(
        "cmd-set-1", play(http_server, "/v.mp3", "b-loud", duration_ms=1500, volume=90)
    )
    loud = await controller.wait_heartbeat("cmd-set-1", pred=lambda h: h.playing == "b-loud")
    assert loud.volume == 90
    after = await controller.wait_heartbeat(
        "cmd-set-1", after=len(controller.received), pred=lambda h: h.playing is None, timeout=6
    )
    assert after.volume == 42

    test = SelftestCmd(cmd_id=cmd_id(), issued_at=now_ms())
    await controller.send("cmd-set-1", test)
    result = await controller.wait_event("cmd-set-1", type="selftest")
    assert result.ok and result.speakers_ok == result.speakers_total == 2
    node.inject("speaker_line")
    await controller.send("cmd-set-1", SelftestCmd(cmd_id="selftest-2", issued_at=now_ms()))
    await controller.wait_event("cmd-set-1", type="cmd_ack", cmd_id="selftest-2")
    results = controller.events("cmd-set-1", "selftest")
    await controller.wait_for(lambda r: len(controller.events("cmd-set-1", "selftest")) == 2)
    results = controller.events("cmd-set-1", "selftest")
    assert results[1].ok is False and results[1].speakers_ok == 1

    cfg = ConfigCmd(cmd_id=cmd_id(), issued_at=now_ms(), heartbeat_s=5, default_volume=55)
    await controller.send("cmd-set-1", cfg)
    await controller.wait_event("cmd-set-1", type="cmd_ack", cmd_id=cfg.cmd_id, ok=True)
    mark = len(controller.heartbeats("cmd-set-1"))
    await asyncio.sleep(2.5)  # at the old 1 s period two or three beats would have come
    assert len(controller.heartbeats("cmd-set-1")) - mark <= 1
    assert node.heartbeat_s == 5 and node.default_volume == 55
    # default_volume applies from the next boot; the level set now stays until then
    assert node.volume == 42
