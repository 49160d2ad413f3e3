"""The officer's browser microphone as the source of a live broadcast's Icecast mount.

Why this way: a phone cannot run an Icecast source client, and the mount's source address
carries its password, which the officer must never see. So the page records the microphone
(MediaRecorder, WebM/Opus chunks of ~250 ms) and posts each chunk, in order, to the server;
here one ``ffmpeg`` per live broadcast reads the chunks on stdin and sends MP3 (what every
node plays, as in ``scheduler.live``) to the mount as its source. The password stays in this
process (it is on ffmpeg's command line, readable only by Loa's own user).

Failure (docs/reliability.md, "Live broadcasts"): when the browser is gone (no chunk for
``idle_s``) or ffmpeg dies, a watchdog ends the feed and calls ``on_failed``; the service
then marks the broadcast ``failed``, stops it on the clusters and frees its slot. ffmpeg is
forked by the process-lifetime spawner with the parent-death signal, so a killed Loa leaves
no ffmpeg behind either.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from scheduler.errors import Conflict, InvalidBroadcast
from scheduler.live import IcecastServer, _child_setup, spawn

log = logging.getLogger("loa.mic")

MAX_CHUNK_BYTES = 256 * 1024  # ~250 ms of Opus is a few kB; a big margin for slow timers
IDLE_S = 6.0  # no chunk for this long: the browser (or its network) is gone
MSG_BROWSER_GONE = "Mất tín hiệu từ trình duyệt (micrô) quá {s:.0f} giây."
MSG_ENCODER_DIED = "Bộ chuyển tiếp âm thanh (ffmpeg) dừng bất ngờ: {detail}"
MSG_NOT_OPEN = "Buổi phát trực tiếp này không còn nhận âm thanh (đã dừng hoặc bị lỗi)."


@dataclass(eq=False)
class MicFeed:
    broadcast_id: int
    mount: str
    proc: subprocess.Popen[bytes]
    last_chunk: float = field(default_factory=time.monotonic)
    next_seq: int = 0
    bytes_in: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock)
    failed: str | None = None
    closed: bool = False


class MicFeeds:
    """Open feeds by broadcast id, and the watchdog that fails the dead ones."""

    def __init__(
        self,
        live: IcecastServer,
        on_failed: Callable[[int, str], None],
        *,
        idle_s: float = IDLE_S,
        ffmpeg: str = "ffmpeg",
    ) -> None:
        self.live = live
        self.on_failed = on_failed
        self.idle_s = idle_s
        self.ffmpeg = ffmpeg
        self.feeds: dict[int, MicFeed] = {}
        self.ended: dict[int, str | None] = {}  # broadcast id -> why it failed (None: stopped)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._watchdog: threading.Thread | None = None

    # ------------------------------------------------------------------ feeding

    def _command(self, mount: str) -> list[str]:
        return [
            self.ffmpeg,
            "-hide_banner",
            "-loglevel",
            "error",
            "-probesize",
            "32768",
            "-analyzeduration",
            "0",
            "-fflags",
            "+nobuffer",
            "-i",
            "pipe:0",
            "-vn",
            "-ac",
            "1",
            "-ar",
            "44100",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "64k",
            "-content_type",
            "audio/mpeg",
            "-f",
            "mp3",
            self.live.source_url(mount),
        ]

    def _open(self, broadcast_id: int, mount: str) -> MicFeed:
        proc = spawn(
            self._command(mount),
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            start_new_session=True,
            preexec_fn=_child_setup(None),
        )
        feed = MicFeed(broadcast_id, mount, proc)
        self.feeds[broadcast_id] = feed
        self._ensure_watchdog()
        log.info("live %s: microphone feed opened (ffmpeg pid %s)", broadcast_id, proc.pid)
        return feed

    def push(self, broadcast_id: int, mount: str, seq: int, chunk: bytes) -> int:
        """Append the chunk ``seq`` (0, 1, 2… in order) of the broadcast's recording; the
        first one starts the feed. Returns the bytes received so far."""
        if len(chunk) > MAX_CHUNK_BYTES:
            raise InvalidBroadcast(
                f"Đoạn âm thanh quá lớn ({len(chunk)} byte; tối đa {MAX_CHUNK_BYTES} byte)."
            )
        with self._lock:
            if broadcast_id in self.ended:
                raise Conflict(MSG_NOT_OPEN)
            feed = self.feeds.get(broadcast_id)
            if feed is None:
                if seq != 0:
                    raise Conflict(
                        "Buổi phát chưa bắt đầu: đoạn âm thanh đầu tiên phải có số thứ tự 0."
                    )
                feed = self._open(broadcast_id, mount)
        with feed.lock:
            if feed.closed:
                raise Conflict(MSG_NOT_OPEN)
            if seq == feed.next_seq - 1:
                return feed.bytes_in  # a retry of the last chunk: already written
            if seq != feed.next_seq:
                raise Conflict(
                    f"Đoạn âm thanh số {seq} không đúng thứ tự (đang chờ đoạn số {feed.next_seq})."
                )
            try:
                assert feed.proc.stdin is not None
                feed.proc.stdin.write(chunk)
                feed.proc.stdin.flush()
            except (BrokenPipeError, OSError, ValueError):
                pass  # ffmpeg is gone: the watchdog reports why
            else:
                feed.next_seq += 1
                feed.bytes_in += len(chunk)
                feed.last_chunk = time.monotonic()
            return feed.bytes_in

    def stop(self, broadcast_id: int, timeout_s: float = 5.0) -> bool:
        """The officer ended the broadcast: the stream is closed cleanly (ffmpeg finishes what
        it has), so the clusters hear it to the end and report it played."""
        with self._lock:
            feed = self.feeds.pop(broadcast_id, None)
            self.ended.setdefault(broadcast_id, None)
        if feed is None:
            return False
        self._close(feed, timeout_s)
        return True

    def status(self, broadcast_id: int) -> dict[str, Any]:
        with self._lock:
            feed = self.feeds.get(broadcast_id)
            if feed is not None:
                return {"state": "on_air", "bytes": feed.bytes_in, "chunks": feed.next_seq}
            if broadcast_id in self.ended:
                why = self.ended[broadcast_id]
                return {"state": "failed" if why else "stopped", "error": why}
            return {"state": "waiting"}

    def _close(self, feed: MicFeed, timeout_s: float) -> None:
        with feed.lock:
            feed.closed = True
            with contextlib.suppress(OSError, ValueError):
                if feed.proc.stdin is not None:
                    feed.proc.stdin.close()
        try:
            feed.proc.wait(timeout_s)
        except subprocess.TimeoutExpired:
            feed.proc.kill()
            feed.proc.wait(5)
        if feed.proc.stderr is not None:
            feed.proc.stderr.close()

    # ------------------------------------------------------------------ watchdog

    def _ensure_watchdog(self) -> None:
        if self._watchdog is None or not self._watchdog.is_alive():
            self._stop.clear()
            self._watchdog = threading.Thread(
                target=self._watch, name="loa-mic-watchdog", daemon=True
            )
            self._watchdog.start()

    def _watch(self) -> None:
        while not self._stop.wait(0.5):
            self.check_once()

    def check_once(self) -> list[int]:
        """Fail every feed whose browser went quiet or whose ffmpeg died; returns their ids."""
        now = time.monotonic()
        dead: list[tuple[MicFeed, str]] = []
        with self._lock:
            for bid, feed in list(self.feeds.items()):
                code = feed.proc.poll()
                if code is not None:
                    err = b""
                    with contextlib.suppress(OSError, ValueError):
                        err = feed.proc.stderr.read() if feed.proc.stderr else b""
                    detail = err.decode("utf-8", "replace").strip()[-200:] or f"mã {code}"
                    why = MSG_ENCODER_DIED.format(detail=detail)
                elif now - feed.last_chunk > self.idle_s:
                    why = MSG_BROWSER_GONE.format(s=self.idle_s)
                else:
                    continue
                del self.feeds[bid]
                self.ended[bid] = why
                dead.append((feed, why))
        for feed, why in dead:
            log.warning("live %s failed: %s", feed.broadcast_id, why)
            self._close(feed, 2.0)
            try:
                self.on_failed(feed.broadcast_id, why)
            except Exception:
                log.exception("could not mark live broadcast %s failed", feed.broadcast_id)
        return [f.broadcast_id for f, _ in dead]

    def close_all(self) -> None:
        """At shutdown: end every feed (their broadcasts stay as they are)."""
        self._stop.set()
        with self._lock:
            feeds = list(self.feeds.values())
            self.feeds.clear()
        for feed in feeds:
            self._close(feed, 2.0)
