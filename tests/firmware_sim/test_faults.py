"""Injected faults show up where a technician and the controller look for them: the matching
``fault`` event and the heartbeat fields the controller derives ``degraded`` from."""

from __future__ import annotations

import random

import pytest

from firmware_sim.faults import Fault, parse_fault
from firmware_sim.fleet import Fleet
from firmware_sim.hardware import BATTERY_CUTOFF_V, Hardware
from loa.protocol import HealthThresholds, PlayCmd, decode_heartbeat, degradation_reasons
from loa.timeutil import now_ms

TH = HealthThresholds()


def radio_node_id(prefix: str) -> str:
    """A node id whose simulated link is radio (4G/3G/Wi-Fi), so it has an RSSI."""
    return next(f"{prefix}-{i}" for i in range(100) if Hardware(f"{prefix}-{i}").net != "eth")


async def test_amp_and_speaker_faults_publish_events_and_degrade(fleet, controller):
    await fleet.start(["flt-node-1"])
    await controller.wait_heartbeat("flt-node-1")
    healthy = controller.heartbeats("flt-node-1")[0]
    assert degradation_reasons(healthy, TH) == []

    fleet.inject("flt-node-1", Fault.AMP)
    ev = await controller.wait_event("flt-node-1", type="fault", code="amp_fault")
    assert ev.detail
    hb = await controller.wait_heartbeat("flt-node-1", pred=lambda h: h.amp == "fault")
    assert "amp_fault" in degradation_reasons(hb, TH)

    fleet.inject("flt-node-1", "speaker_line", 1)
    ev = await controller.wait_event("flt-node-1", type="fault", code="speaker_line")
    assert "1/2" in ev.detail
    hb = await controller.wait_heartbeat("flt-node-1", pred=lambda h: h.speakers_ok == 1)
    assert hb.speakers_total == 2 and "speaker_line" in degradation_reasons(hb, TH)

    fleet.clear("flt-node-1", Fault.AMP)
    fleet.clear("flt-node-1", Fault.SPEAKER_LINE)
    mark = len(controller.received)
    hb = await controller.wait_heartbeat("flt-node-1", after=mark)
    assert degradation_reasons(hb, TH) == []


async def test_power_cut_runs_on_a_draining_battery_then_restores(mosquitto_broker, controller):
    # 3,600 V/h = 1 V/s, so a test second shows what an hour does in the field.
    f = Fleet(
        mosquitto_broker.host,
        mosquitto_broker.port,
        heartbeat_s=1,
        keepalive_s=3,
        battery_drain_v_per_h=3600,
    )
    try:
        await f.start(["flt-node-2"])
        before = await controller.wait_heartbeat("flt-node-2")
        assert before.power in ("mains", "solar")
        f.inject("flt-node-2", Fault.POWER_CUT)
        await controller.wait_event("flt-node-2", type="fault", code="power_lost")
        on_battery = await controller.wait_heartbeat(
            "flt-node-2", pred=lambda h: h.power == "battery", timeout=3
        )
        later = await controller.wait_heartbeat(
            "flt-node-2", after=len(controller.received), timeout=3
        )
        assert later.power == "battery" and later.battery_v < on_battery.battery_v
        low = await controller.wait_heartbeat(
            "flt-node-2", pred=lambda h: h.battery_v < TH.battery_low_v, timeout=6
        )
        assert "battery_low" in degradation_reasons(low, TH)
        f.clear("flt-node-2", Fault.POWER_CUT)
        await controller.wait_event("flt-node-2", type="fault", code="power_restored")
        back = await controller.wait_heartbeat("flt-node-2", after=len(controller.received))
        assert back.power == before.power
    finally:
        await f.stop()


async def test_weak_signal_shows_in_rssi(fleet, controller):
    node_id = radio_node_id("flt-radio")
    await fleet.start([node_id])
    normal = await controller.wait_heartbeat(node_id)
    assert normal.rssi_dbm is not None and normal.rssi_dbm > TH.weak_signal_dbm
    fleet.inject(node_id, Fault.WEAK_SIGNAL)
    weak = await controller.wait_heartbeat(node_id, after=len(controller.received))
    assert weak.rssi_dbm < TH.weak_signal_dbm and "weak_signal" in degradation_reasons(weak, TH)


async def test_clock_offset_shifts_timestamps_and_start_time(fleet, controller, http_server):
    await fleet.start(["flt-clock"])
    await controller.wait_heartbeat("flt-clock")
    fleet.inject("flt-clock", Fault.CLOCK_OFFSET, 5000)
    mark = len(controller.received)
    await controller.wait_heartbeat("flt-clock", after=mark)
    rec = next(
        r
        for r in controller.received[mark:]
        if r.node_id == "flt-clock" and r.channel == "heartbeat"
    )
    hb = decode_heartbeat(rec.payload)
    assert 4700 < hb.ts - rec.wall_ms <= 5000

    node = fleet.node("flt-clock")
    start_at = node.now_ms() + 1000  # node clock: 5 s ahead of the real one
    served = http_server.add("/clock.mp3", b"\x00" * 5000)
    await controller.send(
        "flt-clock",
        PlayCmd(
            cmd_id="clock-1",
            issued_at=now_ms(),
            broadcast_id="b-clock",
            url=f"{http_server.base}/clock.mp3",
            sha256=served.sha256,
            bytes=5000,
            duration_ms=100,
            start_at=start_at,
        ),
    )
    started = await controller.wait_event("flt-clock", type="playback", phase="started")
    assert 0 <= started.at - start_at < 200  # on time by its own clock...
    arrived = next(
        r for r in controller.received if r.node_id == "flt-clock" and b'"started"' in r.payload
    )
    assert abs(arrived.wall_ms - (start_at - 5000)) < 300  # ...so 5 s early for the world


# ============================================================================ units


def test_hardware_values_are_plausible_and_move():
    rng = random.Random(3)
    hw = Hardware(radio_node_id("hw"), speakers_total=4)
    seen = set()
    for _ in range(200):
        hw.advance(30, False, rng)
        seen.add(hw.rssi_dbm())
    assert len(seen) > 5, "signal wanders"
    assert all(-125 <= r <= -45 for r in seen)
    # daily temperature cycle in ICT: mid-afternoon warmer than before dawn
    day = 1_750_000_000_000 - (1_750_000_000_000 % 86_400_000)  # 00:00 UTC = 07:00 ICT
    afternoon = hw.temp_c(day + 8 * 3_600_000, False)  # 15:00 ICT
    night = hw.temp_c(day + 20 * 3_600_000, False)  # 03:00 ICT
    assert afternoon > night + 5
    assert hw.temp_c(day, True) > hw.temp_c(day, False)


def test_battery_drains_faster_when_playing_and_cuts_the_amp():
    rng = random.Random(1)
    idle, busy = Hardware("bat-1"), Hardware("bat-1")
    for hw in (idle, busy):
        hw.set_mains_cut(True)
    idle.advance(3600, False, rng)
    busy.advance(3600, True, rng)
    assert busy.battery_v < idle.battery_v < 13.6
    for _ in range(10):
        busy.advance(3600, True, rng)
    assert busy.battery_v <= BATTERY_CUTOFF_V and busy.amp == "off"
    busy.set_mains_cut(False)
    assert busy.amp == "ok" and busy.power in ("mains", "solar")


def test_parse_fault_gives_vietnamese_errors():
    assert parse_fault("clock_offset=-5000").value == -5000
    assert parse_fault("amp_fault").fault is Fault.AMP
    with pytest.raises(ValueError, match="không rõ"):
        parse_fault("lightning")
    with pytest.raises(ValueError, match="số nguyên"):
        parse_fault("speaker_line=two")
