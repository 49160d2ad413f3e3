"""``loa node run`` as a real process on a provisioned mosquitto, heard through PulseAudio:
timing, stop, volume, pre-emption, self-test that listens, bad input, clock faults."""

from __future__ import annotations

import json
import os
import shutil
import time

import pytest

from node_agent import telemetry
from tests.node_agent.conftest import make_audio, now_ms, wait_until

# Runs in the SQLite pass only: the subject is the node agent's sound; its database paths run in
# tests/scheduler.
pytestmark = pytest.mark.sqlite_pass_only


def test_a_play_is_heard_at_start_at_with_every_event(rig):
    make_audio(rig.media.root / "tone.mp3", seconds=1.0)
    node = rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    status = [e for t, e in rig.collect() if t == "dc-01/status"]
    assert status and status[-1]["online"] is True and status[-1]["fw"].startswith("loa-node")
    cmd = rig.play("dc-01", "tone.mp3", start_in=2.5)
    ack = rig.wait_event("dc-01", type="cmd_ack", cmd_id=cmd["cmd_id"])
    assert ack["ok"] is True
    rig.wait_event("dc-01", phase="fetched", broadcast_id=cmd["broadcast_id"])
    started = rig.wait_event("dc-01", phase="started", broadcast_id=cmd["broadcast_id"])
    rig.wait_event("dc-01", phase="finished", broadcast_id=cmd["broadcast_id"])
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1.5)
    assert len(onsets) == 1, onsets
    error_ms = onsets[0] * 1000 - cmd["start_at"]
    # Functional bound: heard at start_at, not seconds off. The accuracy itself (ms) is
    # measured by bench/node.py; a CI machine under load can stall the sound server.
    assert abs(error_ms) < 250, error_ms
    # The controller is told the time the sound was really heard.
    assert abs(started["at"] - onsets[0] * 1000) < 50, (started["at"], onsets[0] * 1000)
    # Heard for the bulletin's length.
    assert rec.level(onsets[0] + 0.1, onsets[0] + 0.9) > 3000
    hb = rig.heartbeats("dc-01")[-1]
    assert hb["fw"].startswith("loa-node") and hb["uptime_s"] > 0 and hb["ntp_offset_ms"] == 0
    # Read from this machine; what it cannot know is left out, never invented.
    assert ("temp_c" in hb) == (telemetry.cpu_temp_c() is not None)
    assert ("battery_v" in hb) == (telemetry.power().battery_v is not None)
    assert hb["net"] == telemetry.network().kind and hb["cache_free_mb"] > 0
    # config outlives a restart; a clean stop says goodbye on the retained status.
    rig.simple("dc-01", "config", default_volume=35, heartbeat_s=7)
    rig.wait_event("dc-01", type="cmd_ack", ok=True, timeout=5)
    wait_until(lambda: len(rig.events("dc-01", type="cmd_ack")) == 2, 5, "config ack")
    assert node.stop() == 0
    bye = [e for t, e in rig.collect() if t == "dc-01/status"][-1]
    assert bye == {**bye, "online": False, "reason": "shutdown"}
    node.start()
    wait_until(
        lambda: any(h["seq"] == 0 and h["volume"] == 35 for h in rig.heartbeats("dc-01")),
        15,
        "a heartbeat after the restart at the configured default volume",
    )


def test_volume_stop_and_emergency_preemption_are_audible(rig):
    make_audio(rig.media.root / "long.mp3", seconds=8.0, freq=440)
    make_audio(rig.media.root / "alarm.mp3", seconds=1.0, freq=1200)
    rig.node("dc-01", default_volume=100).start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")

    normal = rig.play("dc-01", "long.mp3", start_in=1.5, duration_ms=8000)
    begun = rig.wait_event("dc-01", phase="started", broadcast_id=normal["broadcast_id"])["at"]
    t = begun / 1000
    wait_until(lambda: now_ms() > begun + 1200, 5, "a second of sound")
    loud = rec.level(t + 0.3, t + 1.0)
    vol = rig.simple("dc-01", "volume", level=50)
    changed = rig.wait_event("dc-01", type="cmd_ack", cmd_id=vol["cmd_id"])["ts"]
    wait_until(lambda: now_ms() > changed + 1000, 5, "a second at the new volume")
    quiet = rec.level(changed / 1000 + 0.3, changed / 1000 + 0.9)
    # gain(50) = 0.25: about -12 dB, heard in the samples.
    assert 0.18 < quiet / loud < 0.33, (loud, quiet)
    hb = wait_until(
        lambda: [h for h in rig.heartbeats("dc-01") if h["volume"] == 50],
        10,
        "a heartbeat with the new volume",
    )
    assert hb[-1]["playing"] == normal["broadcast_id"]

    emergency = rig.play("dc-01", "alarm.mp3", start_in=1.0, priority="emergency", volume=100)
    e_started = rig.wait_event("dc-01", phase="started", broadcast_id=emergency["broadcast_id"])
    pre = rig.wait_event("dc-01", phase="preempted", broadcast_id=normal["broadcast_id"])
    assert pre["at"] <= e_started["at"] + 100
    rig.wait_event("dc-01", phase="finished", broadcast_id=emergency["broadcast_id"])
    es = e_started["at"] / 1000
    # The alarm is heard at full volume, the normal bulletin not after it.
    assert rec.level(es + 0.2, es + 0.8) > 2.5 * quiet
    assert rec.silent_from(es) is not None
    assert rec.silent_from(es) < es + 1.3
    assert not rig.events("dc-01", phase="finished", broadcast_id=normal["broadcast_id"])

    # stop cuts a playing bulletin at once.
    third = rig.play("dc-01", "long.mp3", start_in=1.0, bid="b-stop", duration_ms=8000)
    s = rig.wait_event("dc-01", phase="started", broadcast_id="b-stop")["at"]
    wait_until(lambda: now_ms() > s + 800, 5, "sound")
    stop = rig.simple("dc-01", "stop", broadcast_id=third["broadcast_id"])
    sent = now_ms() / 1000
    fin = rig.wait_event("dc-01", phase="finished", broadcast_id="b-stop")
    assert fin["reason"] == "stopped"
    assert rig.wait_event("dc-01", type="cmd_ack", cmd_id=stop["cmd_id"])["ok"]
    wait_until(lambda: now_ms() / 1000 > sent + 1.0, 5, "a quiet second")
    silent = rec.silent_from(sent - 0.5)
    # Silent within a few output buffers of the moment the node took the stop.
    assert silent is not None and silent - fin["at"] / 1000 < 0.2, silent - fin["at"] / 1000


def test_listening_selftest_fails_when_muted_and_passes_when_heard(rig):
    rig.node("dc-02").start()
    rig.listen()
    rig.wait_online("dc-02")
    ok = rig.simple("dc-02", "selftest")
    rig.wait_event("dc-02", type="cmd_ack", cmd_id=ok["cmd_id"])
    passed = rig.wait_event("dc-02", type="selftest")
    assert passed["ok"] is True and passed["speakers_ok"] == passed["speakers_total"] == 1, passed
    assert "Nghe thấy" in passed["detail"]

    rig.pulse.mute("n2", True)
    rig.simple("dc-02", "selftest")
    failed = wait_until(
        lambda: [e for e in rig.events("dc-02", type="selftest") if not e["ok"]],
        15,
        "the muted self-test",
    )[-1]
    assert failed["speakers_ok"] == 0 and "Không nghe thấy" in failed["detail"]
    fault = rig.wait_event("dc-02", type="fault", code="speaker_line")
    assert "không nghe thấy" in fault["detail"]
    # The heartbeat now says the speaker is not working (the controller shows it degraded).
    wait_until(
        lambda: any(h["speakers_ok"] == 0 for h in rig.heartbeats("dc-02")),
        10,
        "a heartbeat with speakers_ok 0",
    )


def test_without_a_capture_device_the_selftest_says_what_it_could_not_check(rig):
    rig.node("dc-03", capture="").start()
    rig.listen()
    rig.wait_online("dc-03")
    rig.simple("dc-03", "selftest")
    ev = rig.wait_event("dc-03", type="selftest")
    assert ev["ok"] is True and "không kiểm" in ev["detail"]


def test_bad_commands_get_failed_acks_and_nothing_is_played(rig):
    make_audio(rig.media.root / "ok.mp3", seconds=0.5)
    (rig.media.root / "noise.mp3").write_bytes(b"this is not audio at all " * 400)
    rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    t0 = now_ms() / 1000

    rig.send("dc-01", b"{not json")
    assert "not_json" in rig.wait_event("dc-01", type="cmd_ack", cmd_id="")["error"]
    rig.send("dc-01", json.dumps({"cmd_id": "m1", "type": "play", "issued_at": now_ms()}).encode())
    assert rig.wait_event("dc-01", cmd_id="m1")["error"].startswith("missing_field")
    # Over 64 KiB, under the broker's 64 KiB + 1 KiB packet limit (docs/protocol.md).
    big = json.dumps(
        {"cmd_id": "big", "type": "volume", "issued_at": now_ms(), "level": 5, "pad": "x" * 65_700}
    ).encode()
    assert 64 * 1024 < len(big) < 65 * 1024
    rig.send("dc-01", big)
    wait_until(
        lambda: [
            e for e in rig.events("dc-01", type="cmd_ack") if "oversized" in (e.get("error") or "")
        ],
        10,
        "oversized ack",
    )
    expired = rig.simple("dc-01", "volume", level=10, expires_at=now_ms() - 1000)
    assert rig.wait_event("dc-01", cmd_id=expired["cmd_id"])["error"] == "expired"
    foreign = rig.play("dc-01", "ok.mp3", url="http://evil.example/ok.mp3")
    assert rig.wait_event("dc-01", cmd_id=foreign["cmd_id"])["error"].startswith("url_refused")
    wrong = rig.play("dc-01", "ok.mp3", sha256="0" * 64)
    assert rig.wait_event("dc-01", cmd_id=wrong["cmd_id"])["ok"] is True
    failed = rig.wait_event("dc-01", phase="failed", broadcast_id=wrong["broadcast_id"])
    assert failed["error"] == "checksum"
    noise = rig.play("dc-01", "noise.mp3")
    failed = rig.wait_event("dc-01", phase="failed", broadcast_id=noise["broadcast_id"])
    assert failed["error"] == "not_audio" and failed["detail"]
    # A repeated cmd_id is acknowledged once only.
    rig.send("dc-01", expired)
    vol = rig.simple("dc-01", "volume", level=30)
    rig.wait_event("dc-01", cmd_id=vol["cmd_id"])
    assert len(rig.events("dc-01", cmd_id=expired["cmd_id"])) == 1
    # Nothing reached the speaker, and nothing bad is left in the cache.
    assert rec.onsets(after=t0) == []
    cache = rig.nodes[0].dir / "cache"
    assert list(cache.glob("*.audio")) == [] and list((cache / "partial").glob("*")) == []


def test_a_clock_five_seconds_off_is_reported_as_a_fault(rig):
    node = rig.node("dc-03")
    node.clock_file.write_text(
        "System time     : 5.012000000 seconds slow of NTP time\nLeap status     : Normal\n"
    )
    node.start()
    rig.listen()
    fault = rig.wait_event("dc-03", type="fault", code="clock", timeout=20)
    assert "-5012 ms" in fault["detail"]
    hb = wait_until(lambda: rig.heartbeats("dc-03"), 15, "a heartbeat")[-1]
    assert hb["ntp_offset_ms"] == -5012
    node.clock_file.write_text("Leap status     : Not synchronised\n")
    unsynced = wait_until(
        lambda: [
            e
            for e in rig.events("dc-03", type="fault", code="clock")
            if "chưa đồng bộ" in e["detail"]
        ],
        15,
        "unsynchronised",
    )
    assert unsynced


def test_a_sound_server_slow_to_start_the_stream_does_not_make_the_bulletin_late(rig):
    """On a loaded board ``pacat`` can take a few hundred ms to spawn and connect. The
    silence written meanwhile waits in the pipe; were it all played before the bulletin,
    the start would be late by about twice the delay (CI saw +328 ms). ``pacat`` here is a
    wrapper that waits 800 ms before running the real one."""
    slow = rig.tmp / "slow-bin"
    slow.mkdir()
    real = shutil.which("pacat")
    assert real
    (slow / "pacat").write_text(f'#!/bin/sh\nsleep 0.8\nexec {real} "$@"\n')
    (slow / "pacat").chmod(0o755)
    make_audio(rig.media.root / "tone.mp3", seconds=1.0)
    rig.node("dc-01").start({"PATH": f"{slow}:{os.environ['PATH']}"})
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    cmd = rig.play("dc-01", "tone.mp3", start_in=2.0)
    started = rig.wait_event("dc-01", phase="started", broadcast_id=cmd["broadcast_id"])
    rig.wait_event("dc-01", phase="finished", broadcast_id=cmd["broadcast_id"])
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1.5)
    assert len(onsets) == 1, onsets
    # On time despite the slow start (functional bound, as above), and the controller is
    # told the time it was really heard.
    assert abs(onsets[0] * 1000 - cmd["start_at"]) < 250, onsets[0] * 1000 - cmd["start_at"]
    assert abs(started["at"] - onsets[0] * 1000) < 50, (started["at"], onsets[0] * 1000)


def test_file_output_is_a_wav_written_in_real_time(rig):
    import array
    import wave

    make_audio(rig.media.root / "tone.mp3", seconds=0.5)
    out = rig.tmp / "out" / "speaker.wav"
    rig.node("dc-03", output=f"file:{out}", capture="").start()
    rig.listen()
    rig.wait_online("dc-03")
    cmd = rig.play("dc-03", "tone.mp3", start_in=1.5, volume=100)
    rig.wait_event("dc-03", phase="finished", broadcast_id=cmd["broadcast_id"])
    epoch = float((out.parent / "speaker.wav.epoch").read_text())
    with wave.open(str(out)) as w:
        assert (w.getnchannels(), w.getframerate(), w.getsampwidth()) == (1, 48000, 2)
        frames = array.array("h", w.readframes(w.getnframes()))
    first = next(i for i, x in enumerate(frames) if abs(x) > 1000)
    onset_ms = (epoch + first / 48000) * 1000
    assert abs(onset_ms - cmd["start_at"]) < 5, onset_ms - cmd["start_at"]
    last = max(i for i, x in enumerate(frames) if abs(x) > 1000)
    assert abs((last - first) / 48000 - 0.5) < 0.03  # the half second, once


def test_the_amplifier_relay_is_on_only_around_a_bulletin_and_telemetry_is_read(rig):
    sys_root = rig.tmp / "sys"
    gpio = sys_root / "class" / "gpio" / "gpio17"
    gpio.mkdir(parents=True)
    (sys_root / "class" / "gpio" / "export").write_text("")
    (gpio / "value").write_text("0")
    zone = sys_root / "class" / "thermal" / "thermal_zone0"
    zone.mkdir(parents=True)
    (zone / "type").write_text("cpu-thermal\n")
    (zone / "temp").write_text("47800\n")
    make_audio(rig.media.root / "tone.mp3", seconds=1.0)
    rig.node("dc-01", gpio_amp="sysfs:17", amp_warmup_ms=400, sysfs_root=str(sys_root)).start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    hb = rig.heartbeats("dc-01")[-1]
    assert (hb["amp"], hb["temp_c"], hb["power"]) == ("off", 47.8, "mains")
    assert "battery_v" not in hb
    cmd = rig.play("dc-01", "tone.mp3", start_in=2.0)
    on_at = wait_until(
        lambda: (gpio / "value").read_text() == "1" and time.time(), 10, "the relay to switch on"
    )
    # Switched on ahead of the slot by at least the warm-up time.
    assert cmd["start_at"] / 1000 - on_at > 0.35
    started = rig.wait_event("dc-01", phase="started", broadcast_id=cmd["broadcast_id"])
    playing = wait_until(
        lambda: [h for h in rig.heartbeats("dc-01") if h["playing"]], 5, "a heartbeat while playing"
    )
    assert playing[-1]["amp"] == "ok"
    rig.wait_event("dc-01", phase="finished", broadcast_id=cmd["broadcast_id"])
    wait_until(lambda: (gpio / "value").read_text() == "0", 5, "the relay to switch off")
    # The relay's warm-up did not delay the sound (functional bound, as above), and the
    # start reported is the one heard.
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1.5)
    assert len(onsets) == 1, onsets
    assert abs(onsets[0] * 1000 - cmd["start_at"]) < 250, onsets[0] * 1000 - cmd["start_at"]
    assert abs(started["at"] - onsets[0] * 1000) < 50, (started["at"], onsets[0] * 1000)


def test_alsa_output_is_heard_through_the_alsa_pulse_plugin(rig):
    """``alsa:DEVICE`` (aplay) on a board with no sound card here: alsa-plugins' ``pulse``
    PCM carries ALSA playback into our PulseAudio null sink, where parec hears it. The
    sink input's client proves the sound went through ALSA, not pacat."""
    make_audio(rig.media.root / "tone.mp3", seconds=1.0)
    rig.node("dc-02", output="alsa:pulse:n2", capture="").start()
    rig.listen()
    rec = rig.record("dc-02")
    rig.wait_online("dc-02")
    cmd = rig.play("dc-02", "tone.mp3", start_in=2.0)
    rig.wait_event("dc-02", phase="started", broadcast_id=cmd["broadcast_id"])
    clients = rig.pulse.pactl("list", "sink-inputs").stdout
    assert "ALSA plug-in [aplay]" in clients, clients
    rig.wait_event("dc-02", phase="finished", broadcast_id=cmd["broadcast_id"])
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1.5)
    assert len(onsets) == 1, onsets
    # Functional bound (ALSA has no clock feedback here: see docs/node.md).
    assert abs(onsets[0] * 1000 - cmd["start_at"]) < 250
    assert rec.level(onsets[0] + 0.1, onsets[0] + 0.9) > 3000
