"""Node-made warning tone (docs/protocol.md) on the real agent, heard through PulseAudio: the
tone is heard at start_at without waiting for the download, the speech after it; a speech
that fails its checksum fails the airing once the tone has sounded; a stop cuts the tone."""

from __future__ import annotations

import time

import pytest

from node_agent.audio import goertzel_level
from tests.node_agent.conftest import make_audio

pytestmark = pytest.mark.sqlite_pass_only

TONE = {"hz": 1000, "on_ms": 400, "off_ms": 300, "count": 2}
LEAD_S = (2 * 400 + 300 + 1000) / 1000  # blasts, gap, the pause before the speech


def _level(rec, t1: float, t2: float, hz: float) -> float:
    s = rec.samples()
    return goertzel_level(s[rec.index_of(t1) : rec.index_of(t2)].tobytes(), hz)


def test_the_tone_is_heard_at_start_at_and_the_speech_after_it(rig):
    make_audio(rig.media.root / "speech.mp3", seconds=1.0, freq=440)
    rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    cmd = rig.play("dc-01", "speech.mp3", start_in=2.0, priority="emergency", tone=TONE)
    started = rig.wait_event("dc-01", phase="started", broadcast_id=cmd["broadcast_id"])
    assert started["tone"] is True and abs(started["at"] - cmd["start_at"]) < 50, started
    rig.wait_event("dc-01", phase="fetched", broadcast_id=cmd["broadcast_id"])
    rig.wait_event("dc-01", phase="finished", broadcast_id=cmd["broadcast_id"])
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1.5, quiet_s=0.2)
    assert len(onsets) == 3, onsets  # two blasts, then the speech
    start = cmd["start_at"] / 1000
    assert abs(onsets[0] - start) < 0.25, onsets[0] - start
    assert abs(onsets[1] - (start + 0.7)) < 0.25
    assert abs(onsets[2] - (start + LEAD_S)) < 0.25
    # The blasts are the 1 kHz tone, the speech is the file's 440 Hz.
    blast = (onsets[0] + 0.05, onsets[0] + 0.35)
    assert _level(rec, *blast, 1000) > 10 * max(1.0, _level(rec, *blast, 440))
    voice = (onsets[2] + 0.1, onsets[2] + 0.8)
    assert _level(rec, *voice, 440) > 10 * max(1.0, _level(rec, *voice, 1000))

    # A speech that fails its checksum: the warning still sounds, then the airing fails.
    bad = rig.play("dc-01", "speech.mp3", start_in=0, tone=TONE, sha256="0" * 64)
    started = rig.wait_event("dc-01", phase="started", broadcast_id=bad["broadcast_id"])
    failed = rig.wait_event("dc-01", phase="failed", broadcast_id=bad["broadcast_id"])
    assert failed["error"] == "checksum"
    assert failed["at"] - started["at"] >= LEAD_S * 1000 - 100
    assert not rig.events("dc-01", phase="finished", broadcast_id=bad["broadcast_id"])

    # A stop during the tone ends tone and speech alike: silence from then on.
    long_tone = {"hz": 1000, "on_ms": 5000, "count": 1}
    cut = rig.play("dc-01", "speech.mp3", start_in=0, tone=long_tone)
    sounding = rig.wait_event("dc-01", phase="started", broadcast_id=cut["broadcast_id"])
    time.sleep(max(0.0, sounding["at"] / 1000 + 0.8 - time.time()))  # heard for a while
    rig.simple("dc-01", "stop", broadcast_id=cut["broadcast_id"])
    done = rig.wait_event("dc-01", phase="finished", broadcast_id=cut["broadcast_id"])
    assert done["reason"] == "stopped"
    time.sleep(1.5)
    assert rec.level(sounding["at"] / 1000 + 0.2, sounding["at"] / 1000 + 0.6) > 3000
    quiet_from = rec.silent_from(sounding["at"] / 1000)
    assert quiet_from is not None and quiet_from < done["at"] / 1000 + 0.5, (
        quiet_from,
        done["at"],
    )
