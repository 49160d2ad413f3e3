"""A private PulseAudio for tests and bench/node.py: our own daemon (never another
helper's) with null sinks, and recordings of their monitors with wall-clock timestamps, so
"heard at" can be read from the samples.

Timing of a recording: the wall time at which sample 0 was *heard* (its position on the
sink's playback clock). ``parec -v`` prints the record stream's clock every 50 ms ("Time: T
sec": the sample at position T is being heard now; PulseAudio counts the monitor source's
latency as minus the sink's, because a sink hands its samples to the monitor when it
renders them, up to one sink latency *before* they are played). ``anchor`` = min over
those readings of (arrival - T). The median, not the min: a reading is usually late by the
fraction of a ms a line takes to reach us, but one in a run can be several ms early (seen:
6.4 ms, which shifted every onset of that recording), and one reading must not decide.

The older estimate, min over chunks of (arrival - samples so far / rate), is kept as
``arrival_anchor`` for comparison: it dates samples by when the monitor delivered them,
i.e. up to one sink latency early (the null sink's latency follows the smallest stream
latency asked of it: parec's 10 ms), which made every onset look ~10 ms early."""

from __future__ import annotations

import array
import contextlib
import math
import os
import re
import shutil
import statistics
import subprocess
import threading
import time
from pathlib import Path

RATE = 48_000


class PulseServer:
    def __init__(self, root: Path, sinks: list[str]) -> None:
        self.root = Path(root)
        self.sinks = sinks
        self.proc: subprocess.Popen[bytes] | None = None
        self.socket = self.root / "run" / "native"

    @property
    def env(self) -> dict[str, str]:
        return {
            "PULSE_SERVER": f"unix:{self.socket}",
            "PULSE_RUNTIME_PATH": str(self.root / "run"),
            "XDG_RUNTIME_DIR": str(self.root / "xdg"),
            "HOME": str(self.root / "home"),
            "PULSE_STATE_PATH": str(self.root / "state"),
        }

    def start(self) -> None:
        if not shutil.which("pulseaudio"):
            raise RuntimeError("pulseaudio is required (scripts/setup.sh installs it)")
        for d in ("run", "xdg", "home", "state"):
            (self.root / d).mkdir(parents=True, exist_ok=True, mode=0o700)
        args = [
            "pulseaudio",
            "--daemonize=no",
            "--exit-idle-time=-1",
            "--disallow-exit",
            "-n",
            "--use-pid-file=no",
            "--system=no",
            "--disable-shm=yes",
            "--log-target=stderr",
            "--log-level=error",
        ]
        for name in self.sinks:
            args.append(f"--load=module-null-sink sink_name={name} rate={RATE} channels=1")
        args.append(f"--load=module-native-protocol-unix socket={self.socket} auth-anonymous=1")
        env = {**os.environ, **self.env}
        self.log = (self.root / "pulseaudio.log").open("wb")
        self.proc = subprocess.Popen(args, env=env, stdout=self.log, stderr=self.log)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError((self.root / "pulseaudio.log").read_text()[-2000:])
            if self.socket.exists() and self.pactl("info", check=False).returncode == 0:
                return
            time.sleep(0.05)
        raise RuntimeError("pulseaudio did not start")

    def pactl(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            ["pactl", *args],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            check=check,
            timeout=10,
        )

    def mute(self, sink: str, on: bool) -> None:
        self.pactl("set-sink-mute", sink, "1" if on else "0")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.proc = None
        with contextlib.suppress(Exception):
            self.log.close()


class Recording:
    """``parec`` of ``sink``'s monitor into memory with the wall time of every sample."""

    def __init__(self, server: PulseServer, sink: str) -> None:
        self.server, self.sink = server, sink
        self.data = bytearray()
        self.arrival_anchor = math.inf
        self.clock_anchor = math.inf
        self._clock_readings: list[float] = []
        self._lock = threading.Lock()
        self.proc = subprocess.Popen(
            [
                "parec",
                "-v",
                "--raw",
                "--format=s16le",
                f"--rate={RATE}",
                "--channels=1",
                "--latency-msec=10",
                f"--device={sink}.monitor",
            ],
            env={**os.environ, **server.env, "LC_ALL": "C"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()
        self.clock_thread = threading.Thread(target=self._read_clock, daemon=True)
        self.clock_thread.start()

    @property
    def anchor(self) -> float:
        """Wall time at which sample 0 was heard (see the module docstring)."""
        return self.clock_anchor if self.clock_anchor < math.inf else self.arrival_anchor

    def _read_clock(self) -> None:
        assert self.proc.stderr is not None
        fd = self.proc.stderr.fileno()
        buf = b""
        while True:
            chunk = os.read(fd, 4096)
            now = time.time()
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.replace(b"\r", b"\n").split(b"\n")
            for line in lines:
                m = re.search(rb"Time: (\d+(?:\.\d+)?) sec", line)
                if m and float(m.group(1)) > 0:
                    self._clock_readings.append(now - float(m.group(1)))
                    self.clock_anchor = statistics.median(self._clock_readings)

    def _read(self) -> None:
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            chunk = os.read(fd, 4800)
            now = time.time()
            if not chunk:
                return
            with self._lock:
                self.data += chunk
                frames = len(self.data) // 2
                self.arrival_anchor = min(self.arrival_anchor, now - frames / RATE)

    def wait_ready(self, timeout: float = 5) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and (
            len(self.data) < RATE // 10 or self.clock_anchor == math.inf
        ):
            time.sleep(0.02)
        if len(self.data) < RATE // 10:
            raise RuntimeError("parec records nothing")

    def stop(self) -> None:
        self.proc.terminate()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        self.thread.join(5)

    # ------------------------------------------------------------------ analysis

    def samples(self) -> array.array:
        with self._lock:
            a = array.array("h")
            a.frombytes(bytes(self.data[: len(self.data) // 2 * 2]))
        return a

    def time_of(self, index: int) -> float:
        return self.anchor + index / RATE

    def index_of(self, t: float) -> int:
        return max(0, int((t - self.anchor) * RATE))

    def level(self, t1: float, t2: float) -> float:
        """RMS between two wall times."""
        s = self.samples()
        part = s[self.index_of(t1) : self.index_of(t2)]
        if not part:
            return 0.0
        return math.sqrt(sum(x * x for x in part) / len(part))

    def onsets(
        self, threshold: int = 1000, quiet_s: float = 0.3, after: float = 0.0
    ) -> list[float]:
        """Wall times where sound starts after at least ``quiet_s`` of silence."""
        s = self.samples()
        quiet = int(quiet_s * RATE)
        out, last_loud = [], -quiet - 1
        start = self.index_of(after) if after else 0
        for i in range(start, len(s)):
            if abs(s[i]) >= threshold:
                if i - last_loud > quiet:
                    out.append(self.time_of(i))
                last_loud = i
        return out

    def silent_from(self, t: float, threshold: int = 200) -> float | None:
        """Wall time after ``t`` from which the recording stays silent (to its end)."""
        s = self.samples()
        last = None
        for i in range(len(s) - 1, self.index_of(t) - 1, -1):
            if abs(s[i]) >= threshold:
                last = i
                break
        return None if last is None else self.time_of(last + 1)
