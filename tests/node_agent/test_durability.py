"""What survives: ``kill -9`` mid-download (no corrupt cache, resumed with Range, played
once), ``kill -9`` mid-play (not played again), and events across a broker restart."""

from __future__ import annotations

import time

import pytest

from tests.node_agent.conftest import make_audio, now_ms, wait_until

# Runs in the SQLite pass only: the subject is the node agent's sound; its database paths run in
# tests/scheduler.
pytestmark = pytest.mark.sqlite_pass_only


def test_kill9_mid_download_resumes_without_corruption_and_plays_once(rig):
    make_audio(rig.media.root / "slow.mp3", seconds=2.0, bitrate="320k")
    size = (rig.media.root / "slow.mp3").stat().st_size
    rig.media.rate_bps = 150_000  # about 3 s for the whole file
    node = rig.node("dc-01").start()
    rig.listen()
    rec = rig.record("dc-01")
    rig.wait_online("dc-01")
    cmd = rig.play("dc-01", "slow.mp3", start_in=9.0, bid="b-once", duration_ms=2000)
    rig.wait_event("dc-01", type="cmd_ack", cmd_id=cmd["cmd_id"])
    part = node.dir / "cache" / "partial" / f"{cmd['sha256']}.part"
    wait_until(lambda: part.exists() and part.stat().st_size > size // 4, 10, "half a download")
    node.kill9()
    have = part.stat().st_size
    assert 0 < have < size
    assert list((node.dir / "cache").glob("*.audio")) == []  # nothing playable half-written

    node.start()
    rig.wait_event("dc-01", phase="fetched", broadcast_id="b-once", timeout=15)
    ranged = [r for p, r in rig.media.requests if r]
    assert ranged and int(ranged[-1][6:].split("-")[0]) >= have // 2, rig.media.requests
    rig.wait_event("dc-01", phase="finished", broadcast_id="b-once", timeout=20)
    audio = list((node.dir / "cache").glob("*.audio"))
    assert [p.name for p in audio] == [f"{cmd['sha256']}.audio"]
    assert audio[0].stat().st_size == size

    # The controller resends the same slot with a new cmd_id: acknowledged, not replayed.
    again = rig.play("dc-01", "slow.mp3", start_in=1.0, bid="b-once", duration_ms=2000)
    assert rig.wait_event("dc-01", cmd_id=again["cmd_id"])["ok"] is True
    time.sleep(2.5)
    assert len(rig.events("dc-01", phase="started", broadcast_id="b-once")) == 1
    assert len(rec.onsets(after=cmd["start_at"] / 1000 - 2)) == 1
    requests_before = len(rig.media.requests)

    # A recurring bulletin already cached is not downloaded again.
    rig.play("dc-01", "slow.mp3", start_in=1.0, bid="b-next", duration_ms=2000)
    rig.wait_event("dc-01", phase="fetched", broadcast_id="b-next")
    assert len(rig.media.requests) == requests_before


def test_kill9_mid_play_does_not_play_the_slot_again(rig):
    make_audio(rig.media.root / "long.mp3", seconds=6.0)
    node = rig.node("dc-02").start()
    rig.listen()
    rec = rig.record("dc-02")
    rig.wait_online("dc-02")
    cmd = rig.play("dc-02", "long.mp3", start_in=1.5, bid="b-mid", duration_ms=6000)
    started = rig.wait_event("dc-02", phase="started", broadcast_id="b-mid")
    wait_until(lambda: now_ms() > started["at"] + 1000, 5, "a second on air")
    node.kill9()
    killed = time.time()
    node.start()
    failed = rig.wait_event("dc-02", phase="failed", broadcast_id="b-mid", timeout=15)
    assert failed["error"] == "shutdown"
    time.sleep(1.0)
    # Heard once: not again after the restart.
    onsets = rec.onsets(after=cmd["start_at"] / 1000 - 1)
    assert len(onsets) == 1, onsets
    assert rec.silent_from(killed) < killed + 0.5
    assert len(rig.events("dc-02", phase="started", broadcast_id="b-mid")) == 1


def test_events_made_while_the_broker_is_down_arrive_after_it_returns(rig):
    make_audio(rig.media.root / "tone.mp3", seconds=1.0)
    rig.node("dc-03").start()
    rig.listen()
    rec = rig.record("dc-03")
    rig.wait_online("dc-03")
    cmd = rig.play("dc-03", "tone.mp3", start_in=2.5, bid="b-away")
    rig.wait_event("dc-03", phase="fetched", broadcast_id="b-away")
    rig.broker.stop()
    # It plays with the broker gone (the sound does not depend on the network)...
    wait_until(lambda: rec.onsets(after=cmd["start_at"] / 1000 - 1), 10, "the sound")
    time.sleep(1.5)
    beats_before = len(rig.heartbeats("dc-03"))
    rig.broker.start()
    # ...and what it had to say is delivered once the broker is back.
    rig.wait_event("dc-03", phase="finished", broadcast_id="b-away", timeout=30)
    phases = [e["phase"] for e in rig.events("dc-03", broadcast_id="b-away")]
    assert phases == ["fetched", "started", "finished"], phases
    # Heartbeats of the outage are not replayed: only new ones, numbered on.
    wait_until(lambda: len(rig.heartbeats("dc-03")) > beats_before, 15, "a new heartbeat")
    seqs = [h["seq"] for h in rig.heartbeats("dc-03")]
    assert seqs == sorted(set(seqs))
