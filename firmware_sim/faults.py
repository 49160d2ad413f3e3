"""Faults a technician meets in the field, injectable into a simulated node at run time.

Each fault changes what the node reports (heartbeat fields) and, where the protocol has a
code for it, publishes the matching ``fault`` event, so alarms can be tested end to end.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class Fault(enum.StrEnum):
    # amplifier reports a fault: heartbeat amp="fault", event amp_fault
    AMP = "amp_fault"
    # one or more speaker lines open/short: speakers_ok drops, event speaker_line
    SPEAKER_LINE = "speaker_line"
    # mains lost: power="battery", battery_v falls, events power_lost / power_restored
    POWER_CUT = "power_cut"
    # antenna or coverage problem: rssi_dbm falls to about ``value`` (default -112 dBm)
    WEAK_SIGNAL = "weak_signal"
    # NTP broken: node clock = real clock + ``value`` ms (ts, at and start_at timing)
    CLOCK_OFFSET = "clock_offset"


# Which faults have a protocol ``fault`` code. Weak signal and a wrong clock have none in
# protocol v1: the controller sees them only through heartbeat fields (rssi_dbm, ts).
FAULT_EVENT_CODE: dict[Fault, str] = {
    Fault.AMP: "amp_fault",
    Fault.SPEAKER_LINE: "speaker_line",
    Fault.POWER_CUT: "power_lost",
}


@dataclass(frozen=True, slots=True)
class FaultSpec:
    fault: Fault
    value: int | None = None


def parse_fault(text: str) -> FaultSpec:
    """``"speaker_line"``, ``"speaker_line=2"``, ``"clock_offset=-5000"`` -> FaultSpec.

    Raises ValueError with a Vietnamese message, shown as is by the CLI."""
    name, _, raw = text.strip().partition("=")
    try:
        fault = Fault(name.strip())
    except ValueError:
        known = ", ".join(f.value for f in Fault)
        raise ValueError(f"Lỗi mô phỏng không rõ '{name}'. Các loại có: {known}") from None
    if not raw:
        return FaultSpec(fault)
    try:
        return FaultSpec(fault, int(raw))
    except ValueError:
        raise ValueError(f"Giá trị của lỗi '{name}' phải là số nguyên, nhận được '{raw}'") from None
