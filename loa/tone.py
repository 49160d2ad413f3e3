"""Warning tones as PCM, made from a ``loa.protocol.Tone``: the one generator that nodes (the
real agent) use for node-made tones, so a tone sounds the same whoever plays it.

Why here: ``node_agent`` and ``firmware_sim`` may import only ``loa/``. No numpy: one second
of an integer-frequency sine repeats exactly every second, so it is computed once and tiled.
"""

from __future__ import annotations

import array
import math
import random

from loa.protocol import TONE_SPEECH_GAP_MS, Tone

FADE_MS = 30  # fade in/out of each blast, so it does not click
# A node waits a random moment, up to half the tone's lead and at most this long, before it
# fetches the speech (docs/protocol.md): thousands of nodes then spread their downloads over
# the tone instead of all asking the content server in the second the alert goes out, when
# the controller, broker and server are busiest sending it.
FETCH_SPREAD_MAX_MS = 30_000


def fetch_delay_s(tone: Tone, rng: random.Random | None = None) -> float:
    """How long a node waits before fetching the speech of a toned ``play``."""
    window = min(tone.lead_ms // 2, FETCH_SPREAD_MAX_MS)
    return (rng or random).uniform(0, window) / 1000


def _sine_second(hz: int, rate: int, amplitude: int) -> array.array[int]:
    return array.array(
        "h", (int(amplitude * math.sin(2 * math.pi * hz * i / rate)) for i in range(rate))
    )


def _blast(second: array.array[int], frames: int, rate: int) -> array.array[int]:
    reps, rest = divmod(frames, len(second))
    out = second * reps + second[:rest]
    fade = min(frames // 2, rate * FADE_MS // 1000)
    for i in range(fade):
        k = i / fade
        out[i] = int(out[i] * k)
        out[frames - 1 - i] = int(out[frames - 1 - i] * k)
    return out


def tone_pcm(tone: Tone, rate: int = 48_000, level: float = 0.5, *, gap: bool = True) -> bytes:
    """s16le mono PCM of the whole pattern; with ``gap`` it ends with the pause before the
    speech (``TONE_SPEECH_GAP_MS``), so the speech can follow it directly."""
    second = _sine_second(tone.hz, rate, int(32767 * max(0.0, min(1.0, level))))
    blast = _blast(second, rate * tone.on_ms // 1000, rate).tobytes()
    pause = bytes(2 * (rate * tone.off_ms // 1000))
    parts = []
    for i in range(tone.count):
        parts.append(blast)
        if i < tone.count - 1:
            parts.append(pause)
    if gap:
        parts.append(bytes(2 * (rate * TONE_SPEECH_GAP_MS // 1000)))
    return b"".join(parts)
