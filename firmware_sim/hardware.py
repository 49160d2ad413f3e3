"""The simulated hardware of one cluster: amplifier, speaker lines, power, radio, temperature.

Values are plausible rather than random noise, so dashboards and thresholds can be judged
on them: signal strength is a mean-reverting random walk around a level that depends on the
network type, temperature follows the day in Asia/Ho_Chi_Minh, and the 12 V battery charges
on mains and drains on a power cut (faster while the amplifier plays). Per-node traits are
derived from the node id, so a node keeps its character across runs.
"""

from __future__ import annotations

import math
import random
import zlib
from typing import Literal

Net = Literal["4g", "3g", "eth", "wifi"]
PowerSource = Literal["mains", "solar"]

# Typical received signal levels (dBm) per access technology: (worst, best) base level.
NET_RSSI_RANGE: dict[str, tuple[int, int]] = {
    "4g": (-100, -72),
    "3g": (-104, -80),
    "wifi": (-75, -50),
}
RSSI_FLOOR, RSSI_CEIL = -125, -45
WEAK_SIGNAL_DEFAULT_DBM = -112

BATTERY_FULL_V = 13.6  # float charge of a 12 V lead-acid battery on mains
BATTERY_CUTOFF_V = 10.8  # low-voltage disconnect: the amplifier switches off
BATTERY_RESUME_V = 11.6  # amplifier back on once recharged past this
CHARGE_V_PER_H = 0.8
DRAIN_V_PER_H = 0.6  # idle; doubled while playing (amplifier load)

ICT_OFFSET_H = 7


def _pick_net(h: int) -> Net:
    # Most commune clusters hang off 4G; some 3G, a few on a wired or Wi-Fi link.
    slot = h % 10
    if slot <= 5:
        return "4g"
    if slot <= 7:
        return "3g"
    return "eth" if slot == 8 else "wifi"


class Hardware:
    """Mutable hardware state plus the physics that moves it between heartbeats."""

    __slots__ = (
        "amp",
        "battery_v",
        "drain_v_per_h",
        "mains_cut",
        "net",
        "power_source",
        "rssi",
        "rssi_base",
        "speakers_ok",
        "speakers_total",
        "temp_bias",
        "weak_rssi",
        "_amp_fault",
    )

    def __init__(
        self,
        node_id: str,
        *,
        speakers_total: int = 2,
        net: Net | None = None,
        power_source: PowerSource | None = None,
        drain_v_per_h: float = DRAIN_V_PER_H,
    ) -> None:
        h = zlib.crc32(node_id.encode())
        self.net: Net = net or _pick_net(h)
        self.power_source: PowerSource = power_source or ("solar" if h % 7 == 0 else "mains")
        lo, hi = NET_RSSI_RANGE.get(self.net, (-80, -60))
        self.rssi_base = lo + (h >> 8) % (hi - lo + 1)
        self.rssi = float(self.rssi_base)
        self.temp_bias = ((h >> 16) % 41) / 10 - 2.0
        self.speakers_total = max(0, min(16, speakers_total))
        self.speakers_ok = self.speakers_total
        self.amp: Literal["ok", "fault", "off"] = "ok"
        self._amp_fault = False
        self.mains_cut = False
        self.battery_v = BATTERY_FULL_V - ((h >> 4) % 5) / 10
        self.drain_v_per_h = drain_v_per_h
        self.weak_rssi: int | None = None

    # ------------------------------------------------------------------ derived readings

    @property
    def power(self) -> Literal["mains", "battery", "solar"]:
        return "battery" if self.mains_cut else self.power_source

    def rssi_dbm(self) -> int | None:
        return None if self.net == "eth" else round(self.rssi)

    def temp_c(self, now_ms: int, playing: bool) -> float:
        """Enclosure temperature: ~27 °C mean, warmest mid-afternoon ICT, +4 °C while playing."""
        hour = ((now_ms / 3_600_000) + ICT_OFFSET_H) % 24
        daily = 5.0 * math.sin(2 * math.pi * (hour - 9) / 24)
        return round(27.0 + self.temp_bias + daily + (4.0 if playing else 0.0), 1)

    # ------------------------------------------------------------------ physics

    def advance(self, dt_s: float, playing: bool, rng: random.Random) -> None:
        """Move battery and signal on by ``dt_s`` seconds of simulated time."""
        hours = max(0.0, dt_s) / 3600
        if self.mains_cut:
            self.battery_v -= self.drain_v_per_h * hours * (2.0 if playing else 1.0)
        else:
            self.battery_v += CHARGE_V_PER_H * hours
        self.battery_v = min(BATTERY_FULL_V, max(9.5, self.battery_v))
        self._update_amp()
        if self.net != "eth":
            target = self.weak_rssi if self.weak_rssi is not None else self.rssi_base
            # Mean-reverting walk: pulled 20 % towards the target per beat, ~1.5 dB noise.
            self.rssi += 0.2 * (target - self.rssi) + rng.gauss(0.0, 1.5)
            self.rssi = min(RSSI_CEIL, max(RSSI_FLOOR, self.rssi))

    def _update_amp(self) -> None:
        if self._amp_fault:
            self.amp = "fault"
        elif self.mains_cut and (
            self.battery_v <= BATTERY_CUTOFF_V
            or (self.amp == "off" and self.battery_v < BATTERY_RESUME_V)
        ):
            self.amp = "off"  # low-voltage disconnect, with hysteresis until recharged
        else:
            self.amp = "ok"

    # ------------------------------------------------------------------ faults

    def set_amp_fault(self, on: bool) -> None:
        self._amp_fault = on
        self._update_amp()

    def set_speaker_lines_lost(self, lost: int) -> None:
        self.speakers_ok = max(0, self.speakers_total - max(0, lost))

    def set_mains_cut(self, cut: bool) -> None:
        self.mains_cut = cut
        self._update_amp()

    def set_weak_signal(self, rssi_dbm: int | None) -> None:
        self.weak_rssi = rssi_dbm
        if rssi_dbm is not None and self.net != "eth":
            self.rssi = float(rssi_dbm)  # the fault is felt at once, then walks around it
