"""Broadcast content: uploaded recordings and Vietnamese text-to-speech bulletins.

Everything a node plays passes through one audio pipeline (mono, EBU R128 loudness, trimmed,
optional chime, one 3G-friendly encoding) and lands in a content-addressed store."""
