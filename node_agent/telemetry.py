"""What the board can say about itself, read from the kernel and the few tools a Debian
board has. A value the board cannot know is ``None`` (sent as null or left out), never a
plausible-looking invention. The protocol's required enums (``power``, ``net``, ``amp``) get
the documented default of a board that has no sensor for them; docs/node.md lists each."""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

SYS = Path("/sys")


def uptime_s() -> int:
    try:
        return int(float(Path("/proc/uptime").read_text().split()[0]))
    except (OSError, ValueError, IndexError):
        return 0


def cpu_temp_c(sys_root: Path = SYS) -> float | None:
    """The CPU zone when one is named so (cpu-thermal, x86_pkg_temp, soc), else the first."""
    zones = sorted((sys_root / "class" / "thermal").glob("thermal_zone*"))
    best: float | None = None
    for zone in zones:
        try:
            kind = (zone / "type").read_text().strip().lower()
            milli = int((zone / "temp").read_text().strip())
        except (OSError, ValueError):
            continue
        value = round(milli / 1000, 1)
        if any(k in kind for k in ("cpu", "x86_pkg", "soc")):
            return value
        best = value if best is None else best
    return best


@dataclass(frozen=True)
class Power:
    source: str  # mains | battery | solar
    battery_v: float | None


def power(sys_root: Path = SYS) -> Power:
    """From /sys/class/power_supply: on battery when a battery is discharging and no mains
    supply is online; battery voltage when the driver exposes voltage_now. A board with no
    power_supply entries runs from its wall adapter: mains."""
    base = sys_root / "class" / "power_supply"
    mains_online, discharging, volts = False, False, None
    for dev in sorted(base.glob("*")):

        def read(name: str, dev: Path = dev) -> str | None:
            try:
                return (dev / name).read_text().strip()
            except OSError:
                return None

        kind = (read("type") or "").lower()
        if kind == "battery":
            if (read("status") or "").lower() == "discharging":
                discharging = True
            raw = read("voltage_now")
            if raw and raw.lstrip("-").isdecimal():
                volts = round(int(raw) / 1_000_000, 2)
        elif kind in ("mains", "usb", "usb_pd", "usb_c") and read("online") == "1":
            mains_online = True
    return Power("battery" if discharging and not mains_online else "mains", volts)


@dataclass(frozen=True)
class Network:
    kind: str  # 4g | 3g | eth | wifi
    rssi_dbm: int | None
    interface: str | None


def default_interface() -> str | None:
    try:
        lines = Path("/proc/net/route").read_text().splitlines()[1:]
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) > 2 and parts[1] == "00000000":
            return parts[0]
    return None


_MM_TECH = re.compile(r"access tech[^:]*:\s*([a-z0-9, ]+)", re.I)
_MM_SIGNAL = re.compile(r"rssi:\s*(-?[0-9.]+)\s*dBm", re.I)


def _mmcli() -> tuple[str | None, int | None]:
    if not shutil.which("mmcli"):
        return None, None
    try:
        text = subprocess.run(
            ["mmcli", "-m", "any", "--signal-get"], capture_output=True, text=True, timeout=3
        ).stdout
        text += subprocess.run(
            ["mmcli", "-m", "any"], capture_output=True, text=True, timeout=3
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None, None
    tech = _MM_TECH.search(text)
    kind = None
    if tech:
        t = tech.group(1).lower()
        kind = "4g" if ("lte" in t or "5gnr" in t) else "3g" if t.strip() else None
    sig = _MM_SIGNAL.search(text)
    return kind, round(float(sig.group(1))) if sig else None


def _wifi_rssi(iface: str) -> int | None:
    try:
        for line in Path("/proc/net/wireless").read_text().splitlines()[2:]:
            name, _, rest = line.partition(":")
            if name.strip() == iface:
                level = rest.split()[2].rstrip(".")
                return int(float(level))
    except (OSError, ValueError, IndexError):
        return None
    return None


def network(sys_root: Path = SYS) -> Network:
    """The interface of the default route decides: a wwan/ModemManager modem (signal from
    mmcli), Wi-Fi (signal from /proc/net/wireless), else wired."""
    iface = default_interface()
    if iface:
        dev = sys_root / "class" / "net" / iface
        if (dev / "wireless").exists() or (dev / "phy80211").exists():
            return Network("wifi", _wifi_rssi(iface), iface)
        devtype = ""
        with contextlib.suppress(OSError):
            devtype = (dev / "uevent").read_text()
        if "DEVTYPE=wwan" in devtype or iface.startswith(("wwan", "usb", "ppp")):
            kind, rssi = _mmcli()
            return Network(kind or "4g", rssi, iface)
    return Network("eth", None, iface)


def disk_free_mb(path: str) -> float | None:
    try:
        st = os.statvfs(path)
    except OSError:
        return None
    return round(st.f_bavail * st.f_frsize / 1_048_576, 1)


class AmpRelay:
    """The amplifier's power relay on a GPIO line: ``gpiochip0:17`` (libgpiod's gpioset /
    gpioget, Debian package gpiod) or ``sysfs:17`` (/sys/class/gpio, older kernels)."""

    def __init__(self, spec: str, sys_root: Path = SYS) -> None:
        self.spec = spec
        kind, _, line = spec.partition(":")
        self.kind, self.line = kind, line
        self.sys_root = sys_root
        self._last: bool | None = None

    def set(self, on: bool) -> bool:
        """Switch; False when the line could not be driven."""
        try:
            if self.kind == "sysfs":
                gpio = self.sys_root / "class" / "gpio" / f"gpio{self.line}"
                if not gpio.exists():
                    (self.sys_root / "class" / "gpio" / "export").write_text(self.line)
                (gpio / "direction").write_text("out")
                (gpio / "value").write_text("1" if on else "0")
            else:
                if not shutil.which("gpioset"):
                    return False
                subprocess.run(
                    ["gpioset", self.kind, f"{self.line}={int(on)}"],
                    check=True,
                    capture_output=True,
                    timeout=3,
                )
        except (OSError, subprocess.SubprocessError):
            return False
        self._last = on
        return True

    def state(self) -> bool | None:
        try:
            if self.kind == "sysfs":
                raw = (
                    (self.sys_root / "class" / "gpio" / f"gpio{self.line}" / "value")
                    .read_text()
                    .strip()
                )
                return raw == "1"
        except OSError:
            return None
        return self._last  # gpioget would reconfigure the line as input: trust what we set
