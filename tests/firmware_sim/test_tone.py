"""Node-made warning tones (docs/protocol.md): a simulated node sounds the tone at start_at
without waiting for the speech, fetches the speech alongside, plays it after the tone; a
failed fetch fails the airing after the tone; a stop during the tone ends both."""

from __future__ import annotations

import asyncio
import json

from firmware_sim.fetch import SharedHttp
from firmware_sim.player import Job, Player
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


async def test_an_emergency_during_a_priority_tone_preempts_it(fleet, controller, http_server):
    """Behaviour 2 during the tone: the priority job ends ``preempted``, nothing after it."""
    await started_node(fleet, controller, "tone-5")
    long_tone = Tone(hz=880, on_ms=5000, count=1)
    notice = play(http_server, "/a5.mp3", "b-notice", priority="priority", tone=long_tone)
    await controller.send("tone-5", notice)
    await controller.wait_event("tone-5", type="playback", phase="started")
    alarm = play(http_server, "/a6.mp3", "b-alarm", priority="emergency", tone=TONE)
    await controller.send("tone-5", alarm)
    pre = await controller.wait_event("tone-5", type="playback", phase="preempted")
    assert pre.broadcast_id == "b-notice"
    await controller.wait_event(
        "tone-5", timeout=6, type="playback", phase="finished", broadcast_id="b-alarm"
    )
    phases = controller.phases("tone-5", "b-notice")
    assert phases[0] == "started" and phases[-1] == "preempted", phases
    assert set(phases) <= {"started", "fetched", "preempted"}
    assert controller.phases("tone-5", "b-alarm")[-1] == "finished"


async def test_a_second_emergency_tone_waits_for_the_first(fleet, controller, http_server):
    """Same level: the one arriving during the first one's tone plays after it ends."""
    await started_node(fleet, controller, "tone-6")
    first = play(http_server, "/a7.mp3", "b-first", priority="emergency", tone=TONE)
    await controller.send("tone-6", first)
    s1 = await controller.wait_event("tone-6", type="playback", phase="started")
    second = play(http_server, "/a8.mp3", "b-second", priority="emergency", tone=TONE)
    await controller.send("tone-6", second)
    f1 = await controller.wait_event(
        "tone-6", timeout=6, type="playback", phase="finished", broadcast_id="b-first"
    )
    assert f1.at - s1.at >= TONE.lead_ms
    s2 = await controller.wait_event(
        "tone-6", timeout=6, type="playback", phase="started", broadcast_id="b-second"
    )
    assert s2.at >= f1.at
    assert "preempted" not in controller.phases("tone-6", "b-first")


async def test_a_stop_abandons_the_speech_download_in_the_same_call(http_server):
    """The player directly (real HTTP): the speech fetch of a stopped toned job is cancelled
    by the stop itself, and a fetch completing for an ended job sends no ``fetched``."""

    class Host:
        def __init__(self) -> None:
            self.events: list = []

        def now_ms(self) -> int:
            return now_ms()

        def emit(self, event) -> None:
            self.events.append(event)

    host, http = Host(), SharedHttp.create()
    player = Player(host, http)
    try:
        cmd = play(http_server, "/a9.mp3", "b-stop-fetch", start_at=now_ms() + 60_000, tone=TONE)
        job = player.submit(cmd)
        await asyncio.sleep(0.05)
        assert job.speech is not None and not job.speech.done()
        assert player.stop("b-stop-fetch") == 1
        assert job.speech.cancelling(), "abandoned in the stop itself"
        # A fetch that completes for a job already ended says nothing.
        late = Job(cmd.model_copy(update={"broadcast_id": "b-late"}), 1)
        late.ended = True
        await player._fetch(late)
        await asyncio.sleep(0.1)
        assert [(e.broadcast_id, e.phase) for e in host.events] == [("b-stop-fetch", "failed")]
    finally:
        await http.aclose()
