"""The browser-microphone feed (``scheduler.mic``) against a real Icecast 2 and a real
ffmpeg: chunks of a WebM/Opus recording (as MediaRecorder makes them) put a source on the
mount; a dead encoder and a silent browser are each reported as a failure, once, with a
Vietnamese reason; bad chunks are refused with a clear message and lose nothing."""

from __future__ import annotations

import os
import signal
import subprocess
import time

import pytest

from scheduler.errors import Conflict, InvalidBroadcast
from scheduler.live import IcecastServer
from scheduler.mic import MAX_CHUNK_BYTES, MicFeeds


@pytest.fixture(scope="module")
def webm_chunks(tmp_path_factory) -> list[bytes]:
    """8 s of a 440 Hz tone as WebM/Opus, cut in ~0.5 s pieces (the page's chunk size)."""
    path = tmp_path_factory.mktemp("mic") / "tone.webm"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-loglevel",
            "error",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=440:duration=8",
            "-c:a",
            "libopus",
            "-b:a",
            "48k",
            str(path),
        ],
        check=True,
    )
    data = path.read_bytes()
    n = max(1, len(data) // 16)
    return [data[i : i + n] for i in range(0, len(data), n)]


@pytest.fixture
def icecast(tmp_path):
    server = IcecastServer(tmp_path / "live")
    server.start()
    yield server
    server.stop()


def _wait(cond, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.1)
    return False


def test_chunks_go_on_air_and_a_dead_encoder_fails_the_broadcast(icecast, webm_chunks):
    failed: list[tuple[int, str]] = []
    feeds = MicFeeds(icecast, lambda bid, why: failed.append((bid, why)), idle_s=30)
    mount = icecast.new_mount()
    try:
        for seq, chunk in enumerate(webm_chunks[:6]):
            feeds.push(7, mount, seq, chunk)
        assert _wait(lambda: mount in icecast.live_mounts(), 10), "no source on the mount"
        # A retry of the last chunk is taken once; a gap is refused, nothing is written.
        before = feeds.status(7)["bytes"]
        assert feeds.push(7, mount, 5, webm_chunks[5]) == before
        with pytest.raises(Conflict, match="không đúng thứ tự"):
            feeds.push(7, mount, 9, webm_chunks[6])
        with pytest.raises(InvalidBroadcast, match="quá lớn"):
            feeds.push(7, mount, 6, b"\0" * (MAX_CHUNK_BYTES + 1))
        assert feeds.status(7) == {"state": "on_air", "bytes": before, "chunks": 6}

        os.kill(feeds.feeds[7].proc.pid, signal.SIGKILL)  # the encoder dies
        assert _wait(lambda: bool(failed), 10)
        assert failed == [(7, failed[0][1])]
        assert "ffmpeg" in failed[0][1] and "dừng bất ngờ" in failed[0][1]
        assert feeds.status(7)["state"] == "failed"
        with pytest.raises(Conflict, match="không còn nhận âm thanh"):
            feeds.push(7, mount, 6, webm_chunks[6])
    finally:
        feeds.close_all()


def test_a_silent_browser_fails_the_broadcast_and_stop_does_not(icecast, webm_chunks):
    failed: list[tuple[int, str]] = []
    feeds = MicFeeds(icecast, lambda bid, why: failed.append((bid, why)), idle_s=2)
    quiet, stopped = icecast.new_mount(), icecast.new_mount()
    try:
        with pytest.raises(Conflict, match="số thứ tự 0"):
            feeds.push(1, quiet, 3, webm_chunks[0])
        feeds.push(1, quiet, 0, webm_chunks[0])
        feeds.push(2, stopped, 0, webm_chunks[0])
        pid = feeds.feeds[1].proc.pid
        assert feeds.stop(2) is True  # the officer's stop: closed cleanly, not a failure
        assert feeds.status(2) == {"state": "stopped", "error": None}
        assert _wait(lambda: bool(failed), 8)  # broadcast 1's browser said nothing for 2 s
        assert [b for b, _ in failed] == [1]
        assert "trình duyệt" in failed[0][1]
        # Its ffmpeg is gone too.
        assert _wait(lambda: not os.path.exists(f"/proc/{pid}"), 5)
    finally:
        feeds.close_all()
