"""Is the board's clock right? Read from whichever time daemon the board has.

Order: ``chronyc tracking`` (Raspberry Pi OS and many Armbian images use chrony), then
``timedatectl timesync-status`` + ``timedatectl show`` (systemd-timesyncd). ``clock_source =
"file:PATH"`` reads the same text from a file instead: that is how tests (and a technician
reproducing a report) push a clock off without root on the real clock."""

from __future__ import annotations

import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class ClockState:
    synchronized: bool | None  # None: no time daemon could be read
    offset_ms: int | None
    source: str
    detail: str

    def fault(self, max_offset_ms: int) -> str | None:
        """Vietnamese reason the clock cannot be trusted for start_at, or None."""
        if self.synchronized is False:
            return f"Đồng hồ chưa đồng bộ NTP ({self.source})"
        if self.offset_ms is not None and abs(self.offset_ms) > max_offset_ms:
            return (
                f"Đồng hồ lệch {self.offset_ms} ms so với NTP (cho phép "
                f"{max_offset_ms} ms; {self.source})"
            )
        if self.synchronized is None:
            return "Không đọc được trạng thái đồng bộ đồng hồ (không có chrony/timesyncd)"
        return None


_CHRONY_OFFSET = re.compile(r"System time\s*:\s*([0-9.]+) seconds (fast|slow)")
_CHRONY_LEAP = re.compile(r"Leap status\s*:\s*(.+)")
_TIMESYNC_OFFSET = re.compile(r"^\s*Offset:\s*([+-]?[0-9.]+)(us|ms|s)\b", re.M)
_UNITS_MS = {"us": 0.001, "ms": 1.0, "s": 1000.0}


def parse_chronyc(text: str) -> ClockState | None:
    offset = _CHRONY_OFFSET.search(text)
    leap = _CHRONY_LEAP.search(text)
    if not offset and not leap:
        return None
    synced = None if leap is None else leap.group(1).strip().lower() != "not synchronised"
    ms = None
    if offset:
        ms = round(float(offset.group(1)) * 1000) * (1 if offset.group(2) == "fast" else -1)
    return ClockState(synced, ms, "chrony", text.strip()[:200])


def parse_timedatectl(text: str) -> ClockState | None:
    """``timedatectl show`` (key=value) and/or ``timedatectl timesync-status`` output."""
    synced = None
    for line in text.splitlines():
        key, sep, value = line.strip().partition("=")
        if sep and key == "NTPSynchronized":
            synced = value.strip() == "yes"
    offset = _TIMESYNC_OFFSET.search(text)
    ms = None
    if offset:
        ms = round(float(offset.group(1)) * _UNITS_MS[offset.group(2)])
    if synced is None and ms is None:
        return None
    return ClockState(synced, ms, "systemd-timesyncd", text.strip()[:200])


def _run(cmd: list[str]) -> str | None:
    if not shutil.which(cmd[0]):
        return None
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=3)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return out.stdout if out.returncode == 0 else None


def read_clock(source: str = "auto") -> ClockState:
    if source.startswith("file:"):
        path = Path(source[5:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            return ClockState(None, None, f"file:{path}", f"không đọc được: {exc.strerror}")
        return (
            parse_chronyc(text)
            or parse_timedatectl(text)
            or ClockState(None, None, f"file:{path}", "nội dung không nhận ra")
        )
    text = _run(["chronyc", "tracking"])
    if text and (state := parse_chronyc(text)):
        return state
    shown = _run(["timedatectl", "show"]) or ""
    status = _run(["timedatectl", "timesync-status"]) or ""
    state = parse_timedatectl(shown + "\n" + status)
    if state is not None:
        return state
    return ClockState(None, None, "none", "không có chronyc hay timedatectl")
