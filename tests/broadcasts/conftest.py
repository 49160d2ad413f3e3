"""Fixtures for the content tests: audio made on the spot with ffmpeg and espeak-ng (no
binary audio in the repository), an independent decoder-side check of what the pipeline
produced, and a content store on the test database."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from broadcasts.settings import ContentSettings
from broadcasts.store import ContentStore

REPO = Path(__file__).resolve().parents[2]


def _shared_data() -> Path:
    """``shared/data`` beside the checkout, or beside any folder above it: a git worktree
    (``…/wt/issue``) sits one level deeper than the main checkout, and its cases must not be
    skipped silently there."""
    for base in REPO.parents:
        if (base / "shared" / "data").is_dir():
            return base / "shared" / "data"
    return (REPO / ".." / "shared" / "data").resolve()


SHARED_DATA = _shared_data()

for tool in ("ffmpeg", "ffprobe", "espeak-ng"):
    if not shutil.which(tool):  # the README's test command installs them
        pytest.fail(
            f"Debian package providing '{tool}' is required for the content tests", pytrace=False
        )


def ffmpeg(*args: str) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args], check=True, timeout=120
    )


def make_tone(
    path: Path,
    seconds: float = 3.0,
    *,
    freq: int = 440,
    volume_db: float = -12.0,
    channels: int = 2,
    rate: int = 44100,
    lead_silence: float = 0.0,
    tail_silence: float = 0.0,
    codec_args: tuple[str, ...] = (),
) -> Path:
    """A tone (with optional silence around it) in the format named by the suffix.

    A warbling tone rather than a pure sine: closer to a voice for the loudness meter."""
    src = f"sine=f={freq}:d={seconds}:sample_rate={rate},volume={volume_db}dB,tremolo=f=4:d=0.5"
    graph = f"{src},adelay={int(lead_silence * 1000)}:all=1,apad=pad_dur={tail_silence}"
    ffmpeg(
        "-f", "lavfi", "-i", graph, "-ac", str(channels), "-ar", str(rate), *codec_args, str(path)
    )
    return path


def make_silence(path: Path, seconds: float = 3.0) -> Path:
    ffmpeg("-f", "lavfi", "-i", f"anullsrc=r=44100:cl=stereo:d={seconds}", str(path))
    return path


def make_speech(path: Path, text: str, voice: str = "vi") -> Path:
    """Real Vietnamese speech from espeak-ng, as a WAV."""
    subprocess.run(
        ["espeak-ng", "-v", voice, "-s", "150", "-w", str(path), text], check=True, timeout=60
    )
    return path


@dataclass(frozen=True)
class Decoded:
    codec: str
    channels: int
    sample_rate: int
    duration_s: float
    integrated_lufs: float
    true_peak_dbtp: float


def decode(path: Path) -> Decoded:
    """What a real decoder says about ``path``: ffprobe for the stream, ffmpeg's ebur128
    for loudness and true peak (written here independently of the product's parser)."""
    probe = json.loads(
        subprocess.run(
            ["ffprobe", "-v", "error", "-of", "json", "-show_streams", "-show_format", str(path)],
            check=True,
            capture_output=True,
            timeout=60,
        ).stdout
    )
    stream = next(s for s in probe["streams"] if s["codec_type"] == "audio")
    meter = subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-hide_banner",
            "-nostats",
            "-i",
            str(path),
            "-af",
            "ebur128=peak=true:framelog=verbose",
            "-f",
            "null",
            "-",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    ).stderr
    summary = meter[meter.rindex("Summary:") :]
    i = float(re.search(r"I:\s+(-?[\d.]+) LUFS", summary).group(1))
    tp = float(re.search(r"Peak:\s+(-?[\d.]+|-inf) dBFS", summary).group(1).replace("-inf", "-120"))
    return Decoded(
        codec=stream["codec_name"],
        channels=int(stream["channels"]),
        sample_rate=int(stream["sample_rate"]),
        duration_s=float(probe["format"]["duration"]),
        integrated_lufs=i,
        true_peak_dbtp=tp,
    )


@pytest.fixture
def content_settings() -> ContentSettings:
    """Province defaults, without the chime (tests that are about the chime turn it on)."""
    return ContentSettings(chime=False)


@pytest.fixture
def store(settings, db, content_settings) -> ContentStore:
    return ContentStore(settings, db, content_settings)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory) -> Path:
    """Eight seconds or so of real Vietnamese speech, made once per run."""
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    return make_speech(
        path,
        "Ủy ban nhân dân xã thông báo: sáng thứ hai tuần sau, trạm y tế "
        "xã tổ chức tiêm phòng cho trẻ em dưới năm tuổi. Đề nghị bà con "
        "đưa con em đến đúng giờ.",
    )
