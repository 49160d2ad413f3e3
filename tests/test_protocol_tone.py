"""``play.tone`` on the wire (docs/protocol.md, "Node-made warning tone"): decoded with the
field named when it is wrong, absent from commands without it, and the PCM Loa's nodes make
from it; the scheduler refuses a bad tone with a Vietnamese sentence."""

from __future__ import annotations

import array
import json
import random

import pytest

from loa.protocol import PlayCmd, Rejection, Tone, decode_command, encode
from loa.tone import FETCH_SPREAD_MAX_MS, fetch_delay_s, tone_pcm

PLAY = {
    "cmd_id": "c1",
    "type": "play",
    "issued_at": 1,
    "broadcast_id": "b1",
    "url": "http://x/a.mp3",
    "sha256": "0" * 64,
    "bytes": 10,
    "duration_ms": 1000,
    "priority": "emergency",
}


def _decode(**extra) -> PlayCmd:
    cmd = decode_command(json.dumps(PLAY | extra).encode())
    assert isinstance(cmd, PlayCmd)
    return cmd


def test_a_play_with_a_tone_decodes_and_keeps_unknown_fields():
    cmd = _decode(tone={"hz": 880, "on_ms": 20000, "off_ms": 10000, "count": 3, "shape": "x"})
    assert cmd.tone is not None and cmd.tone.lead_ms == 3 * 20000 + 2 * 10000 + 1000
    assert cmd.tone.model_extra == {"shape": "x"}
    assert json.loads(encode(cmd))["tone"]["count"] == 3
    # off_ms and count have defaults: one blast.
    assert _decode(tone={"hz": 1000, "on_ms": 500}).tone.lead_ms == 1500


def test_a_play_without_a_tone_is_encoded_as_before():
    cmd = _decode()
    assert cmd.tone is None and "tone" not in json.loads(encode(cmd))


@pytest.mark.parametrize(
    ("tone", "reason", "field"),
    [
        ({"hz": 20, "on_ms": 500}, "invalid_field", "tone.hz"),
        ({"hz": 9000, "on_ms": 500}, "invalid_field", "tone.hz"),
        ({"hz": "cao", "on_ms": 500}, "invalid_field", "tone.hz"),
        ({"hz": 880, "on_ms": 50}, "invalid_field", "tone.on_ms"),
        ({"hz": 880, "on_ms": 60_001}, "invalid_field", "tone.on_ms"),
        ({"hz": 880, "on_ms": 500, "off_ms": -1}, "invalid_field", "tone.off_ms"),
        ({"hz": 880, "on_ms": 500, "count": 0}, "invalid_field", "tone.count"),
        ({"hz": 880, "on_ms": 500, "count": 11}, "invalid_field", "tone.count"),
        ({"on_ms": 500}, "missing_field", "tone.hz"),
        ("3x20/10", "invalid_field", "tone"),
    ],
)
def test_a_bad_tone_makes_the_command_malformed_and_names_the_field(tone, reason, field):
    with pytest.raises(Rejection) as exc:
        _decode(tone=tone)
    assert exc.value.reason == reason
    assert exc.value.detail.startswith(f"play.{field}:"), exc.value.detail


def test_tone_pcm_is_the_pattern_blasts_and_silences():
    rate = 8000
    tone = Tone(hz=1000, on_ms=500, off_ms=250, count=2)
    pcm = array.array("h")
    pcm.frombytes(tone_pcm(tone, rate, level=0.5))
    assert len(pcm) == rate * tone.lead_ms // 1000
    blast1 = pcm[int(0.1 * rate) : int(0.4 * rate)]
    gap = pcm[int(0.55 * rate) : int(0.7 * rate)]
    blast2 = pcm[int(0.85 * rate) : int(1.15 * rate)]
    pause = pcm[int(1.3 * rate) :]
    assert max(blast1) > 15_000 and max(blast2) > 15_000
    assert max(map(abs, gap)) == 0 and max(map(abs, pause)) == 0
    assert abs(pcm[0]) < 100  # faded in: no click
    assert len(tone_pcm(tone, rate, gap=False)) == 2 * rate * tone.blasts_ms // 1000


def test_the_speech_fetch_is_spread_over_half_the_tone_at_most_30_s():
    rng = random.Random(3)
    short = Tone(hz=880, on_ms=1000)  # lead 2 s
    assert all(0 <= fetch_delay_s(short, rng) <= 1.0 for _ in range(200))
    long = Tone(hz=880, on_ms=60_000, off_ms=60_000, count=10)
    delays = [fetch_delay_s(long, rng) for _ in range(200)]
    assert max(delays) <= FETCH_SPREAD_MAX_MS / 1000 and max(delays) > 20


def test_the_scheduler_refuses_a_bad_tone_in_vietnamese():
    from scheduler.errors import InvalidBroadcast
    from scheduler.request import parse_request

    base = {"title": "Cảnh báo", "tts_text": "Lũ quét.", "targets": {"nodes": ["n1"]}}
    req = parse_request(base | {"tone": {"hz": 880, "on_ms": 1000, "count": 2}}, 0)
    assert req.tone is not None and req.tone.count == 2
    with pytest.raises(InvalidBroadcast) as exc:
        parse_request(base | {"tone": {"hz": 880, "on_ms": 1000, "count": 99}}, 0)
    assert "Tín hiệu cảnh báo («tone») không hợp lệ (count)" in str(exc.value)
    stream = {"title": "x", "stream_url": "http://x/live", "targets": {"nodes": ["n1"]}}
    with pytest.raises(InvalidBroadcast) as exc:
        parse_request(stream | {"tone": {"hz": 880, "on_ms": 1000}}, 0)
    assert "không với phát trực tiếp" in str(exc.value)
