"""The server half of live from the phone, heard on a real node: WebM/Opus chunks as the
browser's MediaRecorder posts them go through ``scheduler.mic`` (ffmpeg) to a real Icecast
mount; the real node agent plays the mount into a PulseAudio null sink, and ``parec`` hears
the 440 Hz tone that was "spoken" into the microphone."""

from __future__ import annotations

import subprocess
import threading
import time

import pytest

from scheduler.live import IcecastServer
from scheduler.mic import MicFeeds
from tests.node_agent.conftest import now_ms, wait_until
from tests.node_agent.pulse import RATE

# Runs in the SQLite pass only: the subject is the node agent's sound; its database paths run in
# tests/scheduler.
pytestmark = pytest.mark.sqlite_pass_only


def _zero_crossing_hz(samples) -> float:
    crossings = sum(1 for a, b in zip(samples, samples[1:], strict=False) if (a < 0) != (b < 0))
    return crossings / 2 / (len(samples) / RATE) if samples else 0.0


def test_browser_chunks_through_icecast_are_heard_at_a_real_node(rig, tmp_path):
    tone = tmp_path / "mic.webm"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=14",
            "-af",
            "volume=4",
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            str(tone),
        ],
        check=True,
    )
    data = tone.read_bytes()
    step = max(1, len(data) // 28)  # ~0.5 s a chunk, as the page sends them
    chunks = [data[i : i + step] for i in range(0, len(data), step)]
    server = IcecastServer(tmp_path / "live")
    server.start()
    failed: list[tuple[int, str]] = []
    feeds = MicFeeds(server, lambda bid, why: failed.append((bid, why)))
    stop = threading.Event()
    try:
        mount = server.new_mount()

        def browser() -> None:
            for seq, chunk in enumerate(chunks):
                if stop.is_set():
                    return
                feeds.push(1, mount, seq, chunk)
                time.sleep(0.5)

        sender = threading.Thread(target=browser, daemon=True)
        sender.start()
        wait_until(lambda: mount in server.live_mounts(), 10, "a source on the mount")

        rig.node("dc-01").start()
        rig.listen()
        rec = rig.record("dc-01")
        rig.wait_online("dc-01")
        cmd = rig.simple(
            "dc-01",
            "stream",
            broadcast_id="live-mic",
            priority="normal",
            url=server.listen_url(mount),
            start_at=0,
        )
        assert rig.wait_event("dc-01", cmd_id=cmd["cmd_id"])["ok"] is True
        started = rig.wait_event("dc-01", phase="started", broadcast_id="live-mic")
        t0 = started["at"] / 1000
        wait_until(lambda: now_ms() / 1000 > t0 + 4, 10, "four seconds of the live stream")
        assert server.listeners().get(mount) == 1  # the node is the mount's one listener
        assert rec.level(t0 + 1.5, t0 + 3.5) > 3000
        heard = rec.samples()[rec.index_of(t0 + 1.5) : rec.index_of(t0 + 3.5)]
        assert 420 <= _zero_crossing_hz(heard) <= 460  # the microphone's tone, not noise

        # The officer stops: the source closes cleanly and the node reports the end.
        stop.set()
        sender.join(5)
        assert feeds.stop(1) is True
        done = rig.wait_event("dc-01", phase="finished", broadcast_id="live-mic", timeout=30)
        assert done["at"] / 1000 > t0 + 4
        assert failed == []
    finally:
        stop.set()
        feeds.close_all()
        server.stop()
