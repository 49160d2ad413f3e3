"""The station chime (nhạc hiệu) played before and after an item.

Generated from sine tones on first use instead of shipped or downloaded: no binary audio in
the repository, nothing fetched at run time, and the chime always matches the delivery
sample rate and loudness target. A province that has its own jingle can drop a file in the
assets directory under the same name.

pydub is used here because it is good at exactly this: building short sounds in memory,
overlaying them and fading them."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydub import AudioSegment
from pydub.generators import Sine

from broadcasts import ffmpeg

# A four-note "ding-dong" in C major, the classic public-address pre-announcement signal.
_NOTES_HZ = (523.25, 659.25, 783.99, 1046.50)
_NOTE_STEP_MS = 230
_NOTE_LENGTH_MS = 750
_VERSION = 2  # part of the cached file's name: bump when the sound or its level changes


def _bell(freq: float, rate: int) -> AudioSegment:
    """One struck note: fundamental plus a quieter octave, decaying like a bell."""
    tone = Sine(freq, sample_rate=rate).to_audio_segment(duration=_NOTE_LENGTH_MS, volume=-9)
    octave = Sine(freq * 2, sample_rate=rate).to_audio_segment(duration=_NOTE_LENGTH_MS, volume=-21)
    return tone.overlay(octave).fade_in(8).fade_out(_NOTE_LENGTH_MS - 10)


def render_chime(kind: Literal["pre", "post"], rate: int) -> AudioSegment:
    notes = _NOTES_HZ if kind == "pre" else tuple(reversed(_NOTES_HZ))
    total = _NOTE_STEP_MS * (len(notes) - 1) + _NOTE_LENGTH_MS
    out = AudioSegment.silent(duration=total, frame_rate=rate).set_channels(1)
    out = out.set_sample_width(2)
    for i, freq in enumerate(notes):
        out = out.overlay(_bell(freq, rate).set_channels(1), position=i * _NOTE_STEP_MS)
    return out


def chime_file(
    assets_dir: Path,
    kind: Literal["pre", "post"],
    *,
    rate: int,
    target_lufs: float,
    gap_ms: int,
    ceiling_dbfs: float = -2.0,
) -> Path:
    """Path of the chime WAV (mono, ``rate``), with ``gap_ms`` of silence on the side that
    faces the programme, levelled to the programme target (so the whole item still
    measures on target), with its peaks under ``ceiling_dbfs``. Created once and reused."""
    assets_dir.mkdir(parents=True, exist_ok=True)
    path = (
        assets_dir
        / f"chime-{kind}-v{_VERSION}-{rate}-{target_lufs:g}-{gap_ms}-{ceiling_dbfs:g}.wav"
    )
    if path.exists():
        return path
    seg = render_chime(kind, rate)
    tmp = path.with_suffix(f".tmp{os.getpid()}.wav")
    seg.export(tmp, format="wav")
    loud = ffmpeg.measure(tmp, true_peak=False)
    gain = min(target_lufs - loud.integrated_lufs, ceiling_dbfs - seg.max_dBFS)
    seg = seg.apply_gain(gain)
    gap = AudioSegment.silent(duration=gap_ms, frame_rate=rate).set_channels(1)
    seg = seg + gap if kind == "pre" else gap + seg
    seg.export(tmp, format="wav")
    os.replace(tmp, path)
    return path
