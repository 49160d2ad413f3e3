"""Node-made warning tone (docs/protocol.md) on the real agent, heard through PulseAudio: the
tone is heard at start_at without waiting for the download, the speech after it; a speech
that fails its checksum fails the airing once the tone has sounded; a stop cuts the tone;
an emergency pre-empts a priority tone while it sounds (and its download); a second
emergency waits for the first one's tone and speech (same level, behaviour 2)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time

import httpx
import pytest

from loa.protocol import PlayCmd
from node_agent.agent import Agent, Job, TonedSource
from node_agent.audio import goertzel_level
from node_agent.config import NodeConfig
from tests.node_agent.conftest import SYNCED, make_audio, now_ms, wait_until
from tests.node_agent.media import MediaServer

pytestmark = pytest.mark.sqlite_pass_only

TONE = {"hz": 1000, "on_ms": 400, "off_ms": 300, "count": 2}
LEAD_S = (2 * 400 + 300 + 1000) / 1000  # blasts, gap, the pause before the speech


def _level(rec, t1: float, t2: float, hz: float) -> float:
    s = rec.samples()
    return goertzel_level(s[rec.index_of(t1) : rec.index_of(t2)].tobytes(), hz)


# 20 ms windows place the tones' edges; the speeches (440 and 660 Hz) are told apart in
# 100 ms windows, which hold whole periods of both (no leakage of one into the other).
WINDOW_S = 0.02
SPEECH_WINDOW_S = 0.1


def _heard(
    rec, t1: float, t2: float, hz: float, threshold: float = 2000, window: float = WINDOW_S
) -> list[float]:
    """Start times of the windows between t1 and t2 in which ``hz`` is heard (Goertzel
    amplitude over ``threshold``; a tone at volume 100 is ~16000, silence 0)."""
    s = rec.samples()
    out, t = [], t1
    while t + window <= t2:
        part = s[rec.index_of(t) : rec.index_of(t + window)].tobytes()
        if goertzel_level(part, hz) > threshold:
            out.append(t)
        t += window
    return out


def _phases(rig, node_id: str, bid: str) -> list[str]:
    return [e["phase"] for e in rig.events(node_id, type="playback", broadcast_id=bid)]


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


@pytest.mark.parametrize("alarm_tone", [True, False], ids=["toned", "speech_only"])
def test_an_emergency_preempts_a_priority_tone_while_it_sounds_and_its_download(rig, alarm_tone):
    """Behaviour 2 during a node-made tone: the tone is cut (not left to finish), the
    pre-empted job ends ``preempted`` and nothing else, its speech is never heard and its
    download is abandoned; the emergency is heard when its ``started`` says."""
    # The priority speech is large on a 2 Mbit/s link (~5 s): still downloading when the
    # emergency comes. The emergency's own speech is small.
    make_audio(rig.media.root / "notice.mp3", seconds=30.0, freq=440, bitrate="320k")
    make_audio(rig.media.root / "alarm.mp3", seconds=1.0, freq=660)
    rig.media.rate_bps = 2_000_000
    node = rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    # One 5 s blast: the speech fetch begins within half the lead (3 s), the emergency is
    # sent then, so the cut lands inside the blast. It costs no test time: the blast is cut.
    notice = rig.play(
        "dc-01",
        "notice.mp3",
        start_in=0,
        priority="priority",
        volume=100,
        duration_ms=30_000,
        tone={"hz": 1000, "on_ms": 5000, "count": 1},
    )
    nid = notice["broadcast_id"]
    begun = rig.wait_event("dc-01", phase="started", broadcast_id=nid)
    assert begun["tone"] is True
    part = node.dir / "cache" / "partial" / f"{notice['sha256']}.part"
    wait_until(lambda: part.exists() and part.stat().st_size > 0, 5, "the speech download")
    alarm_extra = {"tone": TONE | {"hz": 1500}} if alarm_tone else {}
    alarm = rig.play(
        "dc-01", "alarm.mp3", start_in=0, priority="emergency", volume=100, **alarm_extra
    )
    aid = alarm["broadcast_id"]
    pre = rig.wait_event("dc-01", phase="preempted", broadcast_id=nid)
    # The download stops with the job: the partial file grows no more (a running one would
    # add ~250 kB a second here), the file never completes, and it is not asked for again.
    wait_until(lambda: now_ms() > pre["at"] + 300, 5, "a moment after the pre-emption")
    size, asked = part.stat().st_size if part.exists() else 0, len(rig.media.requests)
    alarm_started = rig.wait_event("dc-01", phase="started", broadcast_id=aid)
    rig.wait_event("dc-01", phase="finished", broadcast_id=aid, timeout=20)
    assert (part.stat().st_size if part.exists() else 0) == size < notice["bytes"]
    assert not (node.dir / "cache" / f"{notice['sha256']}.audio").exists()
    assert [p for p, _ in rig.media.requests[asked:] if p == "/notice.mp3"] == []
    # The pre-empted job's events: started (the tone), then preempted, nothing after it.
    assert _phases(rig, "dc-01", nid) == ["started", "preempted"], _phases(rig, "dc-01", nid)
    assert alarm_started.get("tone") is (True if alarm_tone else None)
    assert sorted(_phases(rig, "dc-01", aid)) == ["fetched", "finished", "started"]

    # The recording: the 1 kHz tone ends where the node cut it, inside its 5 s blast ...
    t0, end = begun["at"] / 1000, time.time()
    tone = _heard(rec, t0 - 0.5, end, 1000)
    assert tone and tone[0] < t0 + 0.1, tone[:1]
    tone_end = tone[-1] + WINDOW_S
    assert tone_end < t0 + 4.9, tone_end - t0  # cut, not left to finish (5 s)
    # ... within 150 ms of the moment the node pre-empted it. What can still sound after
    # the cut is what the sink had queued (output_latency_ms = 40 here) plus one 10 ms
    # monitor block and this 20 ms window: ~70 ms; the rest is margin for a loaded CI
    # machine (a stop is held to 200 ms in test_agent). Measured 5-18 ms (6 runs here).
    assert tone_end - pre["at"] / 1000 < 0.15, tone_end - pre["at"] / 1000
    # ... then the emergency (its 1.5 kHz tone, or its 660 Hz speech) starts after the cut,
    # at its started time.
    onset = rec.onsets(after=tone_end + 0.01, quiet_s=0.1)[0]
    assert abs(alarm_started["at"] - onset * 1000) < 50, (alarm_started["at"], onset * 1000)
    first_hz = 1500 if alarm_tone else 660
    assert _heard(rec, onset, onset + 0.1, first_hz), "the emergency at its onset"
    assert not _heard(rec, t0 - 0.5, onset, first_hz)  # not mixed over the priority tone
    assert not _heard(rec, tone_end + 0.02, end, 1000)  # the priority tone never returns
    # The emergency's speech (660 Hz) is heard; the pre-empted speech (440 Hz) never is.
    voice = onset + (LEAD_S if alarm_tone else 0.0)
    assert len(_heard(rec, voice, voice + 1.0, 660, window=SPEECH_WINDOW_S)) >= 9
    assert _heard(rec, t0 - 0.5, end, 440, threshold=500, window=SPEECH_WINDOW_S) == []


def test_a_second_emergency_tone_waits_its_turn_and_is_heard_after_the_first(rig):
    """Same level: the newcomer that arrives during the first one's tone waits (behaviour 2),
    is heard once the first one's tone and speech are over, and both ``started`` times are
    the onsets heard in the recording."""
    make_audio(rig.media.root / "first.mp3", seconds=1.0, freq=440)
    make_audio(rig.media.root / "second.mp3", seconds=1.0, freq=660)
    rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    first = rig.play("dc-01", "first.mp3", start_in=0, priority="emergency", volume=100, tone=TONE)
    s1 = rig.wait_event("dc-01", phase="started", broadcast_id=first["broadcast_id"])
    wait_until(lambda: now_ms() > s1["at"] + 200, 5, "the first blast sounding")
    second = rig.play(
        "dc-01",
        "second.mp3",
        start_in=0,
        priority="emergency",
        volume=100,
        tone=TONE | {"hz": 1500},
    )
    sent = now_ms()
    assert rig.wait_event("dc-01", cmd_id=second["cmd_id"])["ok"] is True
    f1 = rig.wait_event("dc-01", phase="finished", broadcast_id=first["broadcast_id"])
    s2 = rig.wait_event("dc-01", phase="started", broadcast_id=second["broadcast_id"])
    rig.wait_event("dc-01", phase="finished", broadcast_id=second["broadcast_id"])
    time.sleep(0.3)
    # Neither was pre-empted; the second started only after the first had finished.
    for bid in (first["broadcast_id"], second["broadcast_id"]):
        phases = _phases(rig, "dc-01", bid)
        assert sorted(phases) == ["fetched", "finished", "started"] and phases[-1] == "finished"
    assert sent < s1["at"] + 1000  # it did arrive during the first one's tone
    assert s2["at"] >= f1["at"], (s2["at"], f1["at"])

    # Heard: first tone's two blasts, its speech, then the second's blasts and speech.
    onsets = rec.onsets(after=s1["at"] / 1000 - 1.0, quiet_s=0.15)
    assert len(onsets) == 6, [round(t - s1["at"] / 1000, 3) for t in onsets]
    for i, (hz, offset) in enumerate(
        [(1000, 0.0), (1000, 0.7), (440, LEAD_S), (1500, 0.0), (1500, 0.7), (660, LEAD_S)]
    ):
        base = onsets[0] if i < 3 else onsets[3]
        assert abs(onsets[i] - (base + offset)) < 0.05, (i, onsets[i] - base)
        assert _heard(rec, onsets[i] + 0.05, onsets[i] + 0.25, hz), (i, hz)
    # The first one's speech is heard whole before the second's tone; no overlap.
    assert len(_heard(rec, onsets[2], onsets[2] + 1.0, 440, window=SPEECH_WINDOW_S)) >= 9
    assert not _heard(rec, onsets[0] - 0.5, onsets[3], 1500)
    assert onsets[3] - onsets[0] > LEAD_S + 1.0 - 0.05  # the first one's tone and speech
    # The started times are the onsets found in the recording (as the timing tests check).
    assert abs(s1["at"] - onsets[0] * 1000) < 50, (s1["at"], onsets[0] * 1000)
    assert abs(s2["at"] - onsets[3] * 1000) < 50, (s2["at"], onsets[3] * 1000)


def test_a_toned_job_stopped_while_its_speech_downloads_says_nothing_more(tmp_path):
    """The agent in-process (real cache, store and HTTP): a stop or pre-emption cancels the
    speech download in the same call, and a fetch that completes for a job already ended
    neither sends ``fetched`` after the terminal event nor puts ``fetched`` back on disk
    (a restart would then play the stopped bulletin)."""
    media = MediaServer(tmp_path / "media", rate_bps=1_000_000).start()
    (tmp_path / "media").mkdir(exist_ok=True)
    make_audio(tmp_path / "media" / "speech.mp3", seconds=8.0, freq=440)
    data = (tmp_path / "media" / "speech.mp3").read_bytes()
    (tmp_path / "clock.txt").write_text(SYNCED)
    cfg = NodeConfig(
        id="dc-01",
        content_base=media.base,
        cache_dir=str(tmp_path / "cache"),
        state_dir=str(tmp_path / "state"),
        output=f"file:{tmp_path / 'out.wav'}",
        clock_source=f"file:{tmp_path / 'clock.txt'}",
    )
    agent = Agent(cfg)

    def cmd(bid: str) -> PlayCmd:
        return PlayCmd(
            cmd_id=bid,
            issued_at=now_ms(),
            broadcast_id=bid,
            url=media.base + "speech.mp3",
            sha256=hashlib.sha256(data).hexdigest(),
            bytes=len(data),
            duration_ms=8000,
            start_at=now_ms() + 60_000,  # the job waits for its slot; the fetch runs now
            priority="emergency",
            tone={"hz": 1000, "on_ms": 100, "count": 1},
        )

    def sent(bid: str) -> list[str]:
        events = [json.loads(p) for _, p in agent.store.pending(1000)]
        return [e["phase"] for e in events if e.get("broadcast_id") == bid]

    async def scenario() -> None:
        agent.http = httpx.AsyncClient(trust_env=False)
        try:
            stopped = cmd("b-stopped")
            agent.store.put_job(stopped.broadcast_id, stopped.model_dump(mode="json"), "accepted")
            job = agent.submit(stopped)
            part = agent.cache.partial / f"{stopped.sha256}.part"
            deadline = time.monotonic() + 5
            while not (part.exists() and part.stat().st_size) and time.monotonic() < deadline:
                await asyncio.sleep(0.02)
            assert job.speech is not None and part.exists(), "the speech download runs"
            assert agent.stop(stopped.broadcast_id) == 1
            assert job.speech.cancelling(), "abandoned in the stop itself"
            await asyncio.sleep(0.5)
            assert job.task is not None and job.task.done()
            size = part.stat().st_size
            await asyncio.sleep(0.5)
            assert part.stat().st_size == size < len(data)  # no download left running
            assert sent(stopped.broadcast_id) == ["failed"]
            assert agent.store.job_phase(stopped.broadcast_id) == "failed"

            # A fetch that completes for a job that has ended meanwhile says nothing.
            late = cmd("b-late")
            agent.store.put_job(late.broadcast_id, late.model_dump(mode="json"), "preempted")
            ended = Job(late, 1, rank=2, ended=True)
            media.rate_bps = None
            source = TonedSource(b"")
            await agent._toned_speech(ended, source)
            assert agent.cache.has(late.sha256)  # the file itself is kept, verified
            assert sent(late.broadcast_id) == []
            assert agent.store.job_phase(late.broadcast_id) == "preempted"
            assert source.speech is None
        finally:
            await agent.http.aclose()

    try:
        asyncio.run(scenario())
    finally:
        agent.store.close()
        media.stop()
