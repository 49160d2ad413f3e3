"""Live ``stream`` commands: heard while the source sends, ``stream_lost`` when it does not
come back within the reconnect time."""

from __future__ import annotations

import time

from tests.node_agent.conftest import make_audio, now_ms, wait_until


def test_a_stream_is_heard_and_a_lost_one_is_reported(rig):
    make_audio(rig.media.root / "live.mp3", seconds=30.0, bitrate="64k")
    rig.media.rate_bps = 90_000  # a little faster than real time, like a live source
    rig.node("dc-01", stream_reconnect_s=1).start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    cmd = rig.simple(
        "dc-01",
        "stream",
        broadcast_id="s-live",
        url=rig.media.base + "live.mp3",
        priority="normal",
        start_at=0,
    )
    assert rig.wait_event("dc-01", cmd_id=cmd["cmd_id"])["ok"] is True
    started = rig.wait_event("dc-01", phase="started", broadcast_id="s-live")
    wait_until(lambda: now_ms() > started["at"] + 2000, 5, "two seconds of stream")
    assert rec.level(started["at"] / 1000 + 0.5, started["at"] / 1000 + 1.5) > 3000
    rig.media.broken = True
    cut = time.time()
    lost = rig.wait_event("dc-01", phase="finished", broadcast_id="s-live", timeout=30)
    assert lost["reason"] == "stream_lost", lost
    assert lost["at"] / 1000 - cut < 20
    # A stream from a host that is not the controller's is refused.
    other = rig.simple(
        "dc-01",
        "stream",
        broadcast_id="s-evil",
        priority="normal",
        url="http://203.0.113.5:8000/live",
    )
    assert rig.wait_event("dc-01", cmd_id=other["cmd_id"])["error"].startswith("url_refused")
