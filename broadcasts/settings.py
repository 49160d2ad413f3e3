"""Province-level defaults for content: loudness, limits, delivery format, speech engines.

Kept apart from ``loa.settings.Settings`` so a province can tune its audio (env prefix
``LOA_CONTENT_``) without touching the controller's settings; the store takes its data
directory and secret from the shared settings."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ContentSettings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="LOA_CONTENT_", env_file=None, extra="ignore")

    # --- loudness (EBU R128). -16 LUFS is loud enough for horns yet leaves room for the
    # true-peak ceiling; -1 dBTP keeps the MP3/Opus decoder from clipping inter-sample peaks.
    target_lufs: float = Field(-16.0, ge=-40, le=-5)
    true_peak_dbtp: float = Field(-1.0, ge=-9, le=0)
    # Gentle speech levelling before the limiter: outdoor horns are heard over wind and
    # traffic, and a lower crest factor lets the limiter reach the target without pumping.
    compress: bool = True
    highpass_hz: int = Field(80, ge=0, le=400)
    # Horn drivers stop around 7-8 kHz; cutting above 9 kHz also makes the level we measure
    # before encoding match what a low-bitrate MP3 decoder gives back.
    lowpass_hz: int = Field(9000, ge=0, le=20000)

    # --- refusals
    max_duration_s: float = Field(3600.0, gt=0)
    min_duration_s: float = Field(0.5, ge=0)
    max_upload_bytes: int = Field(200 * 1024 * 1024, gt=0)
    # Integrated loudness below this is "silent" (a muted recorder, a blank file).
    silence_floor_lufs: float = -60.0
    # Leading/trailing audio quieter than this is trimmed.
    trim_threshold_db: float = -50.0
    trim_keep_ms: int = Field(150, ge=0)
    # Decoder errors tolerated before a file is called corrupt (0 = none).
    max_decode_errors: int = Field(0, ge=0)

    # --- delivery: encoded once; nodes on 3G download it before the slot.
    delivery_format: Literal["mp3", "opus"] = "mp3"
    bitrate: str = Field("48k", pattern=r"^\d{1,3}k$")
    sample_rate: int = Field(44100)

    # --- chime (nhạc hiệu) before and after each item
    chime: bool = True
    chime_gap_ms: int = Field(400, ge=0, le=5000)

    # --- retention
    retention_days: int = Field(365, ge=1)
    # Lifetime of a node's /media download token from when the play command is built
    # (dispatch_lead_s before start_at): must cover the lead, the longest content and the
    # slot grace. broadcasts.tokens.
    media_token_ttl_s: int = Field(6 * 3600, ge=60)

    # --- text to speech
    tts_engine: Literal["espeak", "gtts", "piper"] = "espeak"
    tts_voice: str = "vi"
    # Words per minute for espeak-ng; Vietnamese at 175 (its default) is too fast on a horn
    # where each syllable echoes between houses.
    tts_rate_wpm: int = Field(140, ge=80, le=300)
    tts_sentence_pause_ms: int = Field(350, ge=0, le=3000)
    tts_max_chars: int = Field(20000, gt=0)
    tts_timeout_s: float = Field(60.0, gt=0)
    gtts_tld: str = "com.vn"
    gtts_timeout_s: float = Field(8.0, gt=0)
    # After a failed gTTS call, stay offline this long before trying the network again.
    gtts_retry_after_s: float = Field(120.0, ge=0)
    piper_model: Path | None = None
    piper_command: str = "piper"
    # Province additions to the abbreviation list: "ABBR<TAB>spoken form" per line.
    abbreviations_file: Path | None = None
