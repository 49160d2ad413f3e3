"""Sound out: ffmpeg decodes, the agent writes PCM to the sink itself at the deadline.

Why this stack (docs/node.md has the long version): ffmpeg decodes every format the
controller's content store produces and live Icecast streams, and is in every Debian-family
release; ``pacat`` (pulseaudio-utils, also served by PipeWire's pipewire-pulse) and
``aplay`` (alsa-utils) are the reference clients of the two sound systems a board has.
Decoding ahead into memory and writing the samples ourselves is what makes ``start_at``
precise: the sink is opened and fed silence before the deadline, so the first sample of
the bulletin goes out at the sample position that corresponds to ``start_at``, not "when a
player process got round to starting". Volume is applied to the samples (what is heard),
and stop or pre-emption kills the sink process, which drops its buffer at once.

Format everywhere: signed 16-bit little-endian, mono, 48 kHz."""

from __future__ import annotations

import array
import collections
import logging
import math
import os
import re
import shutil
import statistics
import struct
import subprocess
import sys
import threading
import time
import wave
from collections.abc import Callable
from pathlib import Path

log = logging.getLogger("loa.node")

RATE = 48_000
FRAME = 2  # bytes per frame (s16 mono)
CHUNK_FRAMES = RATE // 100  # 10 ms


class AudioError(Exception):
    """The output or the decoder failed; ``detail`` is Vietnamese for the technician."""


def decode(path: str | Path, *, timeout: float = 120) -> bytes:
    """Whole file -> PCM (s16le mono 48 kHz). Raises AudioError when it is not audio."""
    try:
        out = subprocess.run(
            [
                "ffmpeg",
                "-nostdin",
                "-v",
                "error",
                "-i",
                str(path),
                "-vn",
                "-f",
                "s16le",
                "-ac",
                "1",
                "-ar",
                str(RATE),
                "-",
            ],
            capture_output=True,
            timeout=timeout,
        )
    except FileNotFoundError:
        raise AudioError("không có ffmpeg (apt-get install ffmpeg)") from None
    except subprocess.TimeoutExpired:
        raise AudioError("giải mã quá lâu") from None
    if out.returncode != 0 or len(out.stdout) < FRAME * RATE // 100:
        msg = out.stderr.decode("utf-8", "replace").strip().splitlines()
        raise AudioError(
            "tệp không giải mã được thành âm thanh" + (f": {msg[-1][:160]}" if msg else "")
        )
    return out.stdout


def tone(freq: float = 1000.0, seconds: float = 1.0, level: float = 0.5) -> bytes:
    n = int(RATE * seconds)
    amp = int(32767 * level)
    ramp = RATE // 200  # 5 ms fade so the tone does not click
    samples = array.array(
        "h",
        (
            int(amp * math.sin(2 * math.pi * freq * i / RATE) * min(1.0, i / ramp, (n - i) / ramp))
            for i in range(n)
        ),
    )
    return samples.tobytes()


def gain(volume: int) -> float:
    """0-100 -> amplitude factor. Squared, so the steps sound even (loudness is roughly
    logarithmic); 100 = unchanged, 50 = -12 dB, 0 = silence."""
    v = max(0, min(100, volume)) / 100
    return v * v


def scale(pcm: bytes, factor: float) -> bytes:
    if factor >= 0.999:
        return pcm
    if factor <= 0.0:
        return bytes(len(pcm))
    samples = array.array("h")
    samples.frombytes(pcm)
    if sys.byteorder != "little":  # pragma: no cover - every supported board is LE
        samples.byteswap()
    out = array.array("h", [int(s * factor) for s in samples])
    return out.tobytes()


def rms(pcm: bytes) -> float:
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    if not samples:
        return 0.0
    return math.sqrt(sum(s * s for s in samples) / len(samples))


def goertzel_level(pcm: bytes, freq: float, rate: int = RATE) -> float:
    """Amplitude (0-32767 scale) of ``freq`` in ``pcm``: whether the self-test tone is in a
    recording, even with noise around it."""
    samples = array.array("h")
    samples.frombytes(pcm[: len(pcm) - len(pcm) % 2])
    n = len(samples)
    if n == 0:
        return 0.0
    coeff = 2 * math.cos(2 * math.pi * freq / rate)
    s1 = s2 = 0.0
    for x in samples:
        s0 = x + coeff * s1 - s2
        s2, s1 = s1, s0
    power = s1 * s1 + s2 * s2 - coeff * s1 * s2
    return 2 * math.sqrt(max(power, 0.0)) / n


# --------------------------------------------------------------------------- sinks


class Sink:
    """Where PCM goes. ``write`` must not block for long; pacing is the caller's job."""

    def open(self) -> None: ...
    def write(self, pcm: bytes) -> None: ...
    def close(self, *, abort: bool) -> None: ...


class ProcessSink(Sink):
    """A player process fed on stdin. With ``clock=True`` (``pacat -v``) it also reports the
    sound server's own stream clock: every 50 ms a line ``Time: T sec`` meaning "the sample
    at position T of what was written is being heard now". ``heard_anchor`` turns that into
    the wall time at which written position 0 is (was) heard, so the agent places the
    bulletin's first sample by the sink's real playback position instead of assuming the
    sink started the instant it was opened (it does not: it waits for its prebuffer, and
    the server adds its own latency)."""

    def __init__(self, cmd: list[str], what: str, *, clock: bool = False) -> None:
        self.cmd, self.what, self.clock = cmd, what, clock
        self.proc: subprocess.Popen[bytes] | None = None
        self._err = bytearray()  # stderr that is not a clock line, for error messages
        self._anchors: collections.deque[float] = collections.deque(maxlen=ANCHOR_READINGS)
        self._reader: threading.Thread | None = None
        self.underruns = 0

    def open(self) -> None:
        if not shutil.which(self.cmd[0]):
            raise AudioError(f"không có {self.cmd[0]} ({self.what})")
        # Clock lines are parsed: keep them in English whatever the board's locale.
        env = {**os.environ, "LC_ALL": "C"} if self.clock else None
        self.proc = subprocess.Popen(
            self.cmd,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            env=env,
        )
        # stderr is always drained: ``pacat -v`` writes a line every 50 ms and would block
        # (and stall the sound) once a full pipe stops being read.
        self._reader = threading.Thread(target=self._read_stderr, name="loa-sink-err", daemon=True)
        self._reader.start()
        time.sleep(0.02)
        if self.proc.poll() is not None:
            self._reader.join(1)
            raise AudioError(f"không mở được đầu ra âm thanh {self.what}: {self._error()}")

    def _read_stderr(self) -> None:
        proc = self.proc
        if proc is None or proc.stderr is None:
            return
        fd = proc.stderr.fileno()
        buf = b""
        last_pos = 0.0
        while True:
            try:
                chunk = os.read(fd, 4096)
            except OSError:
                return
            now = time.time()
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            for raw in lines:
                line = raw.strip()
                m = _CLOCK_LINE.search(line)
                if line.startswith(b"Stream underrun"):
                    # The queue ran dry (the writer was starved): the stream paused, so
                    # readings from before it place samples too early. Start over.
                    self.underruns += 1
                    self._anchors.clear()
                    # The next reading may still be one the server took before it ran dry
                    # (seen under load): it only serves as the baseline for the next ones.
                    last_pos = math.inf
                elif m:
                    pos = float(m.group(1))
                    if pos <= last_pos:
                        # Not advancing: not started yet (prebuffering) or stalled after
                        # an underrun. Such readings say nothing about when samples play.
                        self._anchors.clear()
                    else:
                        self._anchors.append(now - pos)
                    last_pos = pos
                elif line and len(self._err) < 4096:
                    self._err += line + b"\n"

    def _error(self) -> str:
        lines = [
            x
            for x in self._err.decode("utf-8", "replace").splitlines()
            if not x.startswith(_PACAT_CHATTER)
        ]
        return " ".join(lines).strip()[:200]

    def heard_anchor(self) -> float | None:
        """Wall time at which written position 0 is heard, from the last readings of the
        sink's clock, or None before the stream runs. The median: a reading is usually late
        by the fraction of a ms the line took to reach us, but now and then one is off by
        several ms either way (a late wake-up, or the server's interpolated clock running
        ahead just after a start; bench/node.py saw a 6 ms one), and one must not decide."""
        return statistics.median(self._anchors) if self._anchors else None

    def write(self, pcm: bytes) -> None:
        assert self.proc is not None and self.proc.stdin is not None
        try:
            self.proc.stdin.write(pcm)
            self.proc.stdin.flush()
        except (BrokenPipeError, ValueError, OSError):
            if self._reader is not None:
                self._reader.join(1)
            raise AudioError(
                f"đầu ra âm thanh {self.what} bị ngắt {self._error()}".strip()
            ) from None

    def close(self, *, abort: bool) -> None:
        proc = self.proc
        if proc is None:
            return
        self.proc = None
        if abort:
            proc.kill()  # its buffer goes with it: the sound stops now
        else:
            try:
                if proc.stdin:
                    proc.stdin.close()
            except OSError:
                pass
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if self._reader is not None:
            self._reader.join(2)
        if proc.stderr:
            proc.stderr.close()


# ``pacat -v``: "Time: 1.234 sec; Latency: 70000 usec." (LC_ALL=C); the other -v lines
# are start-up chatter, not errors.
_CLOCK_LINE = re.compile(rb"Time: (\d+(?:\.\d+)?) sec")
_PACAT_CHATTER = (
    "Opening a ",
    "Connection established",
    "Stream successfully created",
    "Buffer metrics",
    "Using sample spec",
    "Connected to device",
    "Stream started",
    "Stream underrun",
    "Stream overrun",
    "Stream buffer attributes changed",
    "Stream moved",
    "Stream device",
    "Got event",
    "Got signal",
    "Exiting",
    "Got EOF",
    "Playback stream drained",
    "Draining connection",
)
# A player that has reported no running clock this long after it was opened is assumed to
# play from the moment it was opened (the timing is then best effort, as for ALSA). Until
# then nothing is started on a guess: an idle PulseAudio null sink starts a new stream only
# at its next 2 s render tick, and real servers also take their time (docs/node.md).
CLOCK_WAIT_S = 5.0
ANCHOR_READINGS = 6  # 300 ms of clock readings: recent enough to follow an underrun


def pulse_sink(target: str, latency_ms: int) -> ProcessSink:
    cmd = [
        "pacat",
        "-v",  # the stream clock, see ProcessSink.heard_anchor
        "--playback",
        "--raw",
        "--format=s16le",
        f"--rate={RATE}",
        "--channels=1",
        f"--latency-msec={latency_ms}",
        "--client-name=loa-node",
        "--stream-name=loa-node",
    ]
    if target and target != "@DEFAULT_SINK@":
        cmd.append(f"--device={target}")
    return ProcessSink(cmd, f"pulse:{target}", clock=True)


def alsa_sink(device: str, latency_ms: int) -> ProcessSink:
    return ProcessSink(
        [
            "aplay",
            "-q",
            "-D",
            device,
            "-t",
            "raw",
            "-f",
            "S16_LE",
            "-r",
            str(RATE),
            "-c",
            "1",
            f"--buffer-time={latency_ms * 1000}",
        ],
        f"alsa:{device}",
    )


class FileSink(Sink):
    """A WAV whose sample position is wall-clock time since its epoch (the Unix time in
    ``PATH.epoch``, written when the file is created): silence between plays is a sparse
    hole, so the file can be analysed like a recording of the speaker. Header sizes are
    rewritten after each play."""

    def __init__(self, path: str, epoch: float) -> None:
        self.path = Path(path)
        self.epoch = epoch
        self.fh = None
        self.pos = 0

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        new = not self.path.exists() or self.path.stat().st_size < 44
        sidecar = Path(f"{self.path}.epoch")
        if new:
            sidecar.write_text(f"{self.epoch:.6f}\n")
        else:
            try:
                self.epoch = float(sidecar.read_text())
            except (OSError, ValueError):
                raise AudioError(f"thiếu {sidecar}: xóa {self.path} để tạo lại") from None
        try:
            self.fh = self.path.open("r+b" if not new else "w+b")
        except OSError as exc:
            raise AudioError(f"không ghi được {self.path}: {exc.strerror}") from None
        if new:
            with wave.open(str(self.path) + ".hdr", "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
            header = Path(str(self.path) + ".hdr").read_bytes()[:44]
            os.unlink(str(self.path) + ".hdr")
            self.fh.write(header)
        self.pos = -1

    def write(self, pcm: bytes) -> None:
        assert self.fh is not None
        if self.pos < 0:  # first write: place it at now - epoch
            frame = int((time.time() - self.epoch) * RATE)
            self.pos = 44 + frame * FRAME
        self.fh.seek(self.pos)
        self.fh.write(pcm)
        self.pos += len(pcm)

    def place(self, at: float) -> None:
        """Next write lands at wall time ``at``."""
        self.pos = 44 + int((at - self.epoch) * RATE) * FRAME

    def close(self, *, abort: bool) -> None:
        if self.fh is None:
            return
        end = self.fh.seek(0, os.SEEK_END)
        self.fh.seek(4)
        self.fh.write(struct.pack("<I", end - 8))
        self.fh.seek(40)
        self.fh.write(struct.pack("<I", end - 44))
        self.fh.close()
        self.fh = None


def make_sink(output: str, latency_ms: int, epoch: float) -> Sink:
    kind, _, target = output.partition(":")
    if kind == "pulse":
        return pulse_sink(target, latency_ms)
    if kind == "alsa":
        return alsa_sink(target, latency_ms)
    if kind == "file":
        return FileSink(target, epoch)
    raise AudioError(f"đầu ra không hỗ trợ: {output}")


# --------------------------------------------------------------------------- playing


class Playout:
    """One bulletin on the sink, in its own thread (a busy event loop must not make the
    sound late). ``source`` yields PCM: a bytes object for files (repeats and gaps already
    laid out) or a callable returning the next chunk for streams (b"" = ended).

    Timeline: the sink is opened and fed silence; the sample written when the wall clock
    reads ``t`` is heard at ``t + lead`` (the sink keeps exactly ``lead`` queued), so
    content is written from ``start_at - lead`` on and heard from ``start_at``.

    Made with ``source=None`` it is *held*: the sink is opened and kept running on silence
    until ``release`` gives it the source. The agent opens it seconds before the slot,
    before the bulletin has its turn: a sound server can take a second or two to start a
    new stream (an idle PulseAudio sink wakes on its own timer; a loaded board spawns
    ``pacat`` slowly), and that delay must be spent before the slot, not in it."""

    def __init__(
        self,
        sink: Sink,
        source: bytes | Callable[[], bytes] | None,
        start_at: float,
        lead_s: float,
        volume: Callable[[], int],
        on_started: Callable[[float], None],
        on_done: Callable[[str], None],
    ) -> None:
        self.sink, self.source, self.start_at = sink, source, start_at
        self.lead = lead_s
        self.volume = volume
        self.on_started, self.on_done = on_started, on_done
        self._stop = threading.Event()
        self._released = threading.Event()
        if source is not None:
            self._released.set()
        self.thread = threading.Thread(target=self._run, name="loa-playout", daemon=True)
        self.started_at: float | None = None
        self.gaps = 0  # sink underruns between the bulletin's first and last sample written

    def start(self) -> None:
        self.thread.start()

    def cut(self) -> None:
        """Stop the sound now (stop / pre-emption)."""
        self._stop.set()

    def release(self, source: bytes | Callable[[], bytes], start_at: float) -> None:
        """Let a held playout play ``source`` from ``start_at`` (or as soon as the sink can,
        if that is already past)."""
        self.source, self.start_at = source, start_at
        self._released.set()

    def _run(self) -> None:
        outcome = "end"
        try:
            outcome = self._play()
        except AudioError as exc:
            outcome = f"error:{exc}"
        except Exception as exc:  # pragma: no cover - reported, never silent
            outcome = f"error:{type(exc).__name__}: {exc}"
        finally:
            self.sink.close(abort=self._stop.is_set() or outcome.startswith("error"))
            if self.gaps:
                # The queue ran dry mid-bulletin: a gap was heard (the board is overloaded
                # or output_latency_ms is too small for it). Logged for the technician.
                log.warning(
                    "đầu ra âm thanh bị cạn dữ liệu %d lần (underrun): máy quá tải hoặc "
                    "output_latency_ms quá nhỏ",
                    self.gaps,
                )
            self.on_done("cut" if self._stop.is_set() else outcome)

    def _play(self) -> str:
        sink = self.sink
        sink.open()
        chunk = CHUNK_FRAMES * FRAME
        silence = bytes(chunk)
        is_file = isinstance(sink, FileSink)
        now = time.time()
        if is_file:
            # A file has no queue: write at the wall position of start_at, in real time.
            while not self._released.is_set():
                if self._stop.wait(0.01):
                    return "cut"
            now = time.time()
            start = max(self.start_at, now)
            sink.place(start)
            while (left := start - time.time()) > 0:
                if self._stop.wait(min(left, 0.05)):
                    return "cut"
            t0, written = start, 0.0
        else:
            # Prime with silence up to lead, then keep exactly lead queued.
            t0, written = now, 0.0
        clock = sink.heard_anchor if isinstance(sink, ProcessSink) and sink.clock else None
        anchor = t0
        started = False
        offset = 0
        underruns = 0
        while not self._stop.is_set():
            now = time.time()
            target = (now - t0) + (0 if is_file else self.lead)
            if written >= target:
                self._stop.wait(min(0.005, written - target))
                continue
            # When the next sample written will be heard: by the sink's own clock where it
            # reports one (pulse), else assuming it plays from the moment it was opened.
            unclocked = False
            if clock is not None and not started:
                reading = clock()
                anchor = reading or t0
                # Not playing yet (spawning, connecting, waiting for the server to start
                # the stream, or just after an underrun): nothing starts on a guess until
                # the clock runs, unless it never does (see CLOCK_WAIT_S).
                unclocked = reading is None and now - t0 < CLOCK_WAIT_S
            heard_at = anchor + written
            if unclocked or not self._released.is_set():
                sink.write(silence)  # held, or not yet playing: keep the stream running
                written += CHUNK_FRAMES / RATE
                continue
            if heard_at + 1e-4 < self.start_at:
                frames = min(CHUNK_FRAMES, max(1, round((self.start_at - heard_at) * RATE)))
                sink.write(silence[: frames * FRAME])
                written += frames / RATE
                continue
            if not started:
                started = True
                # Underruns while the stream was starting were in silence, not gaps.
                underruns = getattr(sink, "underruns", 0)
                self.started_at = heard_at
                self.on_started(heard_at)
            if isinstance(self.source, bytes):
                data = self.source[offset : offset + chunk]
                offset += len(data)
            else:
                assert self.source is not None  # released
                data = self.source()
            if not data:
                # Counted before the tail drains: the stream running dry at the very end is
                # the normal end of a bulletin, not a gap.
                self.gaps = getattr(sink, "underruns", 0) - underruns
                if not is_file:  # let the queued tail be heard before closing
                    rest = anchor + written - time.time()
                    if rest > 0 and self._stop.wait(rest):
                        return "cut"
                return "end"
            sink.write(scale(data, gain(self.volume())))
            written += len(data) / FRAME / RATE
        return "cut"
