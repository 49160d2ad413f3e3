"""Thin, safe wrappers around the ffmpeg and ffprobe programs.

Why subprocesses and not a Python binding: ffmpeg is the reference decoder for every format
we accept, a crash or hang in a decoder fed a hostile upload stays in a child process we can
time out, and the Debian package is the same one the set-up script installs everywhere.

Uploads are untrusted input to ffmpeg, so every call reads local files only
(``-protocol_whitelist file``): a "song.mp3" that is really an HLS playlist or a concat
script cannot make ffmpeg fetch URLs or read other files."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass, field
from pathlib import Path

from broadcasts.errors import ToolMissing

INPUT_GUARD = ("-protocol_whitelist", "file")


def tool(name: str) -> str:
    """Absolute path of ``name`` (ffmpeg, ffprobe) or a clear error naming the apt package."""
    found = shutil.which(name)
    if not found:
        raise ToolMissing(
            "tool_missing",
            f"Máy chủ chưa cài {name}. Hãy cài gói Debian 'ffmpeg' "
            "(chạy lệnh cài đặt trong README).",
            f"{name} is not installed; install the Debian package 'ffmpeg'.",
        )
    return found


@dataclass(frozen=True)
class AudioStream:
    codec: str
    channels: int
    sample_rate: int
    duration_s: float | None


@dataclass(frozen=True)
class Probe:
    format_name: str  # ffprobe's demuxer list, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
    duration_s: float | None  # what the container declares (None = unknown)
    duration_estimated: bool  # ffprobe guessed it from the bitrate; do not trust it
    size_mismatch: bool  # ffprobe noticed the file is shorter than its header says
    audio: AudioStream | None  # first audio stream
    has_video: bool  # a real picture stream (cover art does not count)

    @property
    def demuxer(self) -> str:
        return self.format_name.split(",")[0]


class ProbeFailed(Exception):
    def __init__(self, stderr: str) -> None:
        super().__init__(stderr)
        self.stderr = stderr


def _float(value: object) -> float | None:
    try:
        f = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return f if f == f and f >= 0 else None  # drop NaN / negatives


def probe(path: Path, timeout_s: float = 30.0) -> Probe:
    """Read the container header only: cheap even for a file that decodes to hours."""
    cmd = [
        tool("ffprobe"),
        "-hide_banner",
        "-v",
        "warning",
        *INPUT_GUARD,
        "-print_format",
        "json",
        "-show_format",
        "-show_streams",
        str(path),
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired as exc:
        raise ProbeFailed("ffprobe timed out") from exc
    stderr = proc.stderr.decode("utf-8", "replace")
    if proc.returncode != 0:
        raise ProbeFailed(stderr)
    try:
        data = json.loads(proc.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise ProbeFailed(f"unreadable ffprobe output: {exc}") from exc
    fmt = data.get("format") or {}
    audio = None
    has_video = False
    for s in data.get("streams") or []:
        kind = s.get("codec_type")
        if kind == "audio" and audio is None:
            audio = AudioStream(
                codec=str(s.get("codec_name", "")),
                channels=int(s.get("channels") or 0),
                sample_rate=int(_float(s.get("sample_rate")) or 0),
                duration_s=_float(s.get("duration")),
            )
        elif kind == "video" and not (s.get("disposition") or {}).get("attached_pic"):
            has_video = True
    return Probe(
        format_name=str(fmt.get("format_name", "")),
        duration_s=_float(fmt.get("duration")) or (audio.duration_s if audio else None),
        duration_estimated="Estimating duration from bitrate" in stderr,
        size_mismatch="filesize and duration do not match" in stderr,
        audio=audio,
        has_video=has_video,
    )


@dataclass
class RunResult:
    returncode: int
    stderr: str
    progress: dict[str, str] = field(default_factory=dict)

    @property
    def error_lines(self) -> list[str]:
        """Lines ffmpeg logged at error level or worse (needs ``-loglevel level+...``)."""
        return [ln for ln in self.stderr.splitlines() if "[error]" in ln or "[fatal]" in ln]

    @property
    def out_time_s(self) -> float:
        """How much audio went through the graph (from ``-progress``)."""
        us = self.progress.get("out_time_us") or self.progress.get("out_time_ms") or "0"
        try:
            return max(0, int(us)) / 1_000_000
        except ValueError:
            return 0.0


def run(args: list[str], timeout_s: float) -> RunResult:
    """Run ffmpeg with levelled logging and machine-readable progress on stdout."""
    cmd = [
        tool("ffmpeg"),
        "-nostdin",
        "-hide_banner",
        "-nostats",
        "-loglevel",
        "level+info",
        "-progress",
        "pipe:1",
        *args,
    ]
    try:
        proc = subprocess.run(cmd, capture_output=True, timeout=timeout_s, check=False)
    except subprocess.TimeoutExpired:
        return RunResult(returncode=-9, stderr="[fatal] ffmpeg timed out")
    progress: dict[str, str] = {}
    for line in proc.stdout.decode("utf-8", "replace").splitlines():
        key, sep, value = line.partition("=")
        if sep:
            progress[key.strip()] = value.strip()
    return RunResult(proc.returncode, proc.stderr.decode("utf-8", "replace"), progress)


@dataclass(frozen=True)
class Loudness:
    integrated_lufs: float
    lra_lu: float | None
    true_peak_dbtp: float | None


@dataclass(frozen=True)
class Decoded:
    """What decoding a whole file showed: its loudness and its real stream."""

    loudness: Loudness
    duration_s: float
    codec: str
    sample_rate: int
    channels: int


_SUMMARY_I = re.compile(r"^\s*I:\s+(-?[\d.]+|-inf)\s+LUFS", re.M)
_SUMMARY_LRA = re.compile(r"^\s*LRA:\s+(-?[\d.]+)\s+LU\s*$", re.M)
_SUMMARY_PEAK = re.compile(r"^\s*Peak:\s+(-?[\d.]+|-inf)\s+dBFS", re.M)


def parse_ebur128(stderr: str) -> Loudness | None:
    """The Summary block the ``ebur128`` filter prints when the stream ends."""
    at = stderr.rfind("Summary:")
    if at < 0:
        return None
    summary = stderr[at:]
    m_i = _SUMMARY_I.search(summary)
    if not m_i:
        return None
    m_lra = _SUMMARY_LRA.search(summary)
    m_tp = _SUMMARY_PEAK.search(summary)

    def num(text: str) -> float:
        return -120.0 if text == "-inf" else float(text)

    return Loudness(
        integrated_lufs=num(m_i.group(1)),
        lra_lu=float(m_lra.group(1)) if m_lra else None,
        true_peak_dbtp=num(m_tp.group(1)) if m_tp else None,
    )


_SIL_START = re.compile(r"silence_start:\s*(-?[\d.]+)")
_SIL_END = re.compile(r"silence_end:\s*(-?[\d.]+)")


def parse_silences(stderr: str) -> list[tuple[float, float | None]]:
    """``silencedetect`` intervals in order; the last one may be open (silence to the end)."""
    spans: list[tuple[float, float | None]] = []
    for line in stderr.splitlines():
        if m := _SIL_START.search(line):
            spans.append((max(0.0, float(m.group(1))), None))
        elif (m := _SIL_END.search(line)) and spans and spans[-1][1] is None:
            spans[-1] = (spans[-1][0], float(m.group(1)))
    return spans


_INPUT_STREAM = re.compile(r"Stream #0:\d+.*?: Audio: (\w+).*?, (\d+) Hz, ([^,]+),")
_LAYOUT_CHANNELS = {"mono": 1, "stereo": 2, "2.1": 3, "quad": 4, "5.0": 5, "5.1": 6, "7.1": 8}


def _channels(layout: str) -> int:
    layout = layout.strip()
    if m := re.match(r"(\d+) channels", layout):
        return int(m.group(1))
    return _LAYOUT_CHANNELS.get(layout.split("(")[0], 0)


def decode_and_measure(path: Path, *, timeout_s: float = 300.0) -> Decoded:
    """Decode all of ``path`` once: EBU R128 loudness with true peak, the decoded duration,
    and the stream as the decoder saw it (one process instead of ffprobe + ffmpeg)."""
    res = run(
        [
            *INPUT_GUARD,
            "-i",
            str(path),
            "-map",
            "0:a:0",
            "-af",
            "ebur128=framelog=verbose:peak=true",
            "-f",
            "null",
            "-",
        ],
        timeout_s,
    )
    loud = parse_ebur128(res.stderr)
    stream = _INPUT_STREAM.search(res.stderr)
    if res.returncode != 0 or loud is None or stream is None:
        raise ProbeFailed(res.stderr[-2000:])
    return Decoded(
        loudness=loud,
        duration_s=res.out_time_s,
        codec=stream.group(1),
        sample_rate=int(stream.group(2)),
        channels=_channels(stream.group(3)),
    )


def measure(path: Path, *, true_peak: bool = True, timeout_s: float = 300.0) -> Loudness:
    """Decode ``path`` with ffmpeg and measure EBU R128 loudness (and true peak)."""
    af = "ebur128=framelog=verbose" + (":peak=true" if true_peak else "")
    res = run(
        [*INPUT_GUARD, "-i", str(path), "-map", "0:a:0", "-af", af, "-f", "null", "-"], timeout_s
    )
    loud = parse_ebur128(res.stderr)
    if res.returncode != 0 or loud is None:
        raise ProbeFailed(res.stderr[-2000:])
    return loud
