"""Node-made warning tones (docs/protocol.md): a simulated node sounds the tone at start_at
without waiting for the speech, fetches the speech alongside, plays it after the tone; a
failed fetch fails the airing after the tone; a stop during the tone ends both."""

from __future__ import annotations

import json

from loa.protocol import StopCmd, Tone
from loa.timeutil import now_ms
from tests.firmware_sim.test_commands import cmd_id, play, started_node

TONE = Tone(hz=880, on_ms=400, off_ms=200, count=2)  # lead: 400+200+400 + 1000 = 2000 ms


async def test_tone_starts_at_start_at_before_the_fetch_then_speech_follows(
    fleet, controller, http_server
):
    await started_node(fleet, controller, "tone-1")
    cmd = play(http_server, "/alert.mp3", "b-tone", duration_ms=500, size=50_000, tone=TONE)
    cmd = cmd.model_copy(update={"start_at": 0, "priority": "emergency"})
    sent = now_ms()
    await controller.send("tone-1", cmd)
    started = await controller.wait_event("tone-1", type="playback", phase="started")
    assert started.model_extra.get("tone") is True
    assert started.at - sent < 1000, "the tone does not wait for anything"
    finished = await controller.wait_event("tone-1", timeout=6, type="playback", phase="finished")
    assert finished.at - started.at >= TONE.lead_ms + 500
    phases = controller.phases("tone-1", "b-tone")
    assert phases == ["started", "fetched", "finished"], phases


async def test_a_failed_speech_fetch_fails_the_airing_after_the_tone(
    fleet, controller, http_server
):
    await started_node(fleet, controller, "tone-2")
    cmd = play(http_server, "/a2.mp3", "b-tone-bad", sha256="0" * 64, tone=TONE)
    await controller.send("tone-2", cmd)
    started = await controller.wait_event("tone-2", type="playback", phase="started")
    failed = await controller.wait_event("tone-2", timeout=6, type="playback", phase="failed")
    assert failed.error == "checksum"
    assert failed.at - started.at >= TONE.lead_ms - 50, "the warning tone is sounded in full"
    assert controller.phases("tone-2", "b-tone-bad") == ["started", "failed"]


async def test_stop_during_the_tone_ends_tone_and_speech(fleet, controller, http_server):
    await started_node(fleet, controller, "tone-3")
    long_tone = Tone(hz=880, on_ms=5000, count=1)
    cmd = play(http_server, "/a3.mp3", "b-tone-stop", duration_ms=5000, tone=long_tone)
    await controller.send("tone-3", cmd)
    await controller.wait_event("tone-3", type="playback", phase="started")
    await controller.send(
        "tone-3", StopCmd(cmd_id=cmd_id(), issued_at=now_ms(), broadcast_id="b-tone-stop")
    )
    done = await controller.wait_event("tone-3", type="playback", phase="finished")
    assert done.model_extra.get("reason") == "stopped"
    hb = await controller.wait_heartbeat(
        "tone-3", after=len(controller.received), pred=lambda h: h.playing is None
    )
    assert hb.playing is None


async def test_a_malformed_tone_is_refused_with_the_field_named(fleet, controller, http_server):
    await started_node(fleet, controller, "tone-4")
    cmd = play(http_server, "/a4.mp3", "b-tone-bad-field", tone=TONE)
    raw = cmd.model_dump() | {"tone": {"hz": 880, "on_ms": 400, "count": 99}}
    await controller.send("tone-4", json.dumps(raw).encode())
    ack = await controller.wait_event("tone-4", type="cmd_ack", cmd_id=cmd.cmd_id)
    assert ack.ok is False and "tone.count" in (ack.error or "")
    assert controller.phases("tone-4", "b-tone-bad-field") == []
