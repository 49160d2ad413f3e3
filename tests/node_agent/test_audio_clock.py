"""The pulse output reads PulseAudio's own playback clock (``pacat -v``) so the first sample
of a bulletin is placed by where the sink really is, not by when pacat was started."""

from __future__ import annotations

import time

from node_agent import audio


def test_the_pulse_sink_reports_when_its_first_sample_is_heard(pulse, monkeypatch):
    for k, v in pulse.env.items():
        monkeypatch.setenv(k, v)
    sink = audio.pulse_sink("n1", 100)
    assert "-v" in sink.cmd and sink.clock
    opened = time.time()
    sink.open()
    try:
        assert sink.heard_anchor() is None  # nothing heard before the stream runs
        written = 0.0
        # Keep ~100 ms queued, like Playout, until the stream runs (a null sink nobody has
        # played to yet has rendered up to 2 s of silence ahead: the first stream waits).
        while (anchor := sink.heard_anchor()) is None and time.time() - opened < 5:
            if written < time.time() - opened + 0.1:
                sink.write(bytes(audio.CHUNK_FRAMES * audio.FRAME))
                written += audio.CHUNK_FRAMES / audio.RATE
            time.sleep(0.005)
        assert anchor is not None
        # Position 0 is heard after it was written, and before what is heard now.
        assert opened < anchor < time.time(), anchor - opened
        # The stream clock lines are not mistaken for errors.
        assert sink._error() == ""
    finally:
        sink.close(abort=True)


def test_an_underrun_discards_the_clock_readings_taken_before_it(pulse, monkeypatch):
    for k, v in pulse.env.items():
        monkeypatch.setenv(k, v)
    sink = audio.pulse_sink("n1", 50)
    sink.open()
    try:
        sink.write(bytes(audio.RATE // 5 * audio.FRAME))  # 200 ms, then nothing
        deadline = time.time() + 5
        while time.time() < deadline and not sink.underruns:
            time.sleep(0.02)
        assert sink.underruns >= 1
        assert sink.heard_anchor() is None
    finally:
        sink.close(abort=True)
