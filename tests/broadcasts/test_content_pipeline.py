"""The audio pipeline on real files: every output is decoded again and measured; every kind
of bad upload is refused with its own code and Vietnamese message."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from broadcasts.audio import AudioPipeline, check_filename
from broadcasts.errors import AudioRejected
from broadcasts.settings import ContentSettings

from .conftest import Decoded, decode, ffmpeg, make_silence, make_tone

TARGET = -16.0


@pytest.fixture
def pipeline(tmp_path) -> AudioPipeline:
    return AudioPipeline(ContentSettings(chime=False), tmp_path / "assets")


def _assert_broadcast_ready(
    path: Path, *, expect_s: float | None, tolerance_s: float = 0.6, target: float = TARGET
) -> Decoded:
    d = decode(path)
    assert d.codec == "mp3"
    assert d.channels == 1
    assert d.sample_rate == 44100
    if expect_s is not None:
        assert abs(d.duration_s - expect_s) <= tolerance_s, d
    assert abs(d.integrated_lufs - target) <= 1.0, d
    assert d.true_peak_dbtp <= -1.0 + 0.1, d
    return d


@pytest.mark.parametrize(
    ("suffix", "codec_args"),
    [
        (".mp3", ()),
        (".wav", ()),
        (".ogg", ("-c:a", "libopus")),
        (".m4a", ()),
        (".flac", ()),
    ],
)
def test_each_accepted_format_becomes_mono_levelled_mp3(tmp_path, pipeline, suffix, codec_args):
    src = make_tone(
        tmp_path / f"in{suffix}",
        2.0,
        volume_db=-30,
        channels=2,
        rate=48000 if suffix == ".ogg" else 44100,
        codec_args=codec_args,
    )
    out = pipeline.process(src, src.name, tmp_path / "out")
    d = _assert_broadcast_ready(out.path, expect_s=2.0)
    # What the pipeline reports is what the decoder sees.
    assert abs(out.duration_ms / 1000 - d.duration_s) < 0.05
    assert abs(out.loudness_lufs - d.integrated_lufs) < 0.2
    assert out.channels == 1 and out.sample_rate == 44100 and out.mime == "audio/mpeg"
    assert out.bytes == out.path.stat().st_size and len(out.sha256) == 64


def test_real_speech_is_levelled_and_trimmed(tmp_path, pipeline, speech_wav):
    # Speech with two seconds of silence before and three after, recorded far too quietly.
    padded = tmp_path / "quiet.wav"
    ffmpeg(
        "-i", str(speech_wav), "-af", "volume=-20dB,adelay=2000:all=1,apad=pad_dur=3", str(padded)
    )
    speech_s = decode(speech_wav).duration_s
    out = pipeline.process(padded, "ghi-am.wav", tmp_path / "out")
    d = _assert_broadcast_ready(out.path, expect_s=None)
    # espeak's own leading/trailing quiet is trimmed too, so allow a little less.
    assert speech_s - 1.0 <= d.duration_s <= speech_s + 0.5, (speech_s, d)


def test_loud_clipping_input_is_brought_down_under_the_peak_ceiling(tmp_path, pipeline):
    src = make_tone(tmp_path / "hot.wav", 2.0, volume_db=0, channels=1)
    out = pipeline.process(src, src.name, tmp_path / "out")
    _assert_broadcast_ready(out.path, expect_s=2.0)


def test_chime_frames_the_item_and_keeps_the_target(tmp_path, speech_wav):
    with_chime = AudioPipeline(ContentSettings(chime=True), tmp_path / "assets")
    out = with_chime.process(speech_wav, "speech.wav", tmp_path / "out")
    d = _assert_broadcast_ready(out.path, expect_s=None)
    # Two chimes (~1.4 s each) plus their gaps around the (trimmed) speech.
    assert d.duration_s - out.source_duration_ms / 1000 > 2.0
    # The chime was generated locally, once, and is reused.
    assert len(list((tmp_path / "assets").glob("chime-pre-*.wav"))) == 1


def test_province_target_and_opus_delivery(tmp_path, speech_wav):
    cfg = ContentSettings(chime=False, target_lufs=-20.0, delivery_format="opus", bitrate="32k")
    out = AudioPipeline(cfg, tmp_path / "assets").process(speech_wav, "s.wav", tmp_path / "out")
    d = decode(out.path)
    assert d.codec == "opus" and d.channels == 1 and out.mime == "audio/ogg"
    assert abs(d.integrated_lufs - -20.0) <= 1.0, d


# --------------------------------------------------------------------------- refusals


def _refusal(pipeline: AudioPipeline, path: Path, filename: str | None = None) -> AudioRejected:
    with pytest.raises(AudioRejected) as info:
        pipeline.process(path, filename or path.name, path.parent / "out")
    err = info.value
    assert err.message and err.message != err.message_en  # a Vietnamese message of its own
    assert 400 <= err.http_status < 500
    assert not list((path.parent / "out").glob("*")) if (path.parent / "out").exists() else True
    return err


def test_corrupt_mp3_is_refused(tmp_path, pipeline):
    good = make_tone(tmp_path / "good.mp3", 6.0)
    data = bytearray(good.read_bytes())
    mid = len(data) // 3
    data[mid : mid + 3000] = bytes((i * 37 + 11) % 256 for i in range(3000))
    bad = tmp_path / "hong.mp3"
    bad.write_bytes(bytes(data))
    err = _refusal(pipeline, bad)
    assert err.code == "corrupt" and "hỏng" in err.message


def test_truncated_files_are_refused(tmp_path, pipeline):
    for suffix in (".wav", ".flac", ".mp3"):
        whole = make_tone(tmp_path / f"whole{suffix}", 6.0)
        cut = tmp_path / f"cut{suffix}"
        data = whole.read_bytes()
        cut.write_bytes(data[: len(data) // 2])
        err = _refusal(pipeline, cut)
        assert err.code in {"truncated", "corrupt"}, (suffix, err.code)
        assert "cắt cụt" in err.message or "hỏng" in err.message
    # A WAV cut on a sample boundary decodes cleanly: only the header tells it is short.
    err = _refusal(pipeline, tmp_path / "cut.wav")
    assert err.code == "truncated" and "cắt cụt" in err.message


def test_m4a_without_its_index_is_refused(tmp_path, pipeline):
    whole = make_tone(tmp_path / "whole.m4a", 4.0)
    cut = tmp_path / "cut.m4a"
    cut.write_bytes(whole.read_bytes()[:-4000])  # the moov atom is at the end
    err = _refusal(pipeline, cut)
    assert err.code == "corrupt"


def test_silent_file_is_refused(tmp_path, pipeline):
    err = _refusal(pipeline, make_silence(tmp_path / "im-lang.mp3", 4.0))
    assert err.code == "silent" and "im lặng" in err.message


def test_too_short_after_trimming_is_refused(tmp_path, pipeline):
    src = make_tone(tmp_path / "click.wav", 0.2, lead_silence=2.0, tail_silence=2.0)
    err = _refusal(pipeline, src)
    assert err.code == "too_short"


def test_hour_long_file_is_refused_from_its_header(tmp_path, pipeline):
    # 61 minutes of 8 kHz PCM: the header says so, nothing is decoded.
    src = tmp_path / "dai.wav"
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=8000:cl=mono:d=3660", "-c:a", "pcm_u8", str(src))
    err = _refusal(pipeline, src)
    assert err.code == "too_long"
    assert "1 giờ 1 phút" in err.message and "vượt giới hạn 1 giờ" in err.message
    assert err.http_status == 413


def test_file_whose_header_understates_its_length_is_stopped_at_the_limit(tmp_path):
    # Two MP3 streams glued together: the first one's Xing header speaks for 2 s, ffprobe
    # falls back to a bitrate estimate (not trusted), so only the capped decode can tell.
    cfg = ContentSettings(chime=False, max_duration_s=10)
    pipeline = AudioPipeline(cfg, tmp_path / "assets")
    short = make_tone(tmp_path / "short.mp3", 2.0, channels=1)
    long = make_tone(
        tmp_path / "long.mp3",
        30.0,
        channels=1,
        codec_args=("-write_xing", "0", "-id3v2_version", "0"),
    )
    liar = tmp_path / "liar.mp3"
    liar.write_bytes(short.read_bytes() + long.read_bytes())
    err = _refusal(pipeline, liar)
    assert err.code == "too_long"


@pytest.mark.parametrize(
    ("name", "content"),
    [
        ("ghi-chu.mp3", "Đây là văn bản, không phải âm thanh.\n" * 50),
        ("anh.wav", None),  # a PNG picture renamed
    ],
)
def test_not_audio_is_refused(tmp_path, pipeline, name, content):
    path = tmp_path / name
    if content is None:
        png = tmp_path / "a.png"
        ffmpeg("-f", "lavfi", "-i", "color=c=red:s=32x32:d=1", "-frames:v", "1", str(png))
        path.write_bytes(png.read_bytes())
    else:
        path.write_text(content, encoding="utf-8")
    err = _refusal(pipeline, path)
    assert err.code == "not_audio" and "không phải" in err.message


def test_empty_file_is_refused(tmp_path, pipeline):
    path = tmp_path / "rong.mp3"
    path.write_bytes(b"")
    err = _refusal(pipeline, path)
    assert err.code == "empty" and err.http_status == 400


def test_too_large_file_is_refused_before_decoding(tmp_path):
    pipeline = AudioPipeline(ContentSettings(max_upload_bytes=50_000), tmp_path / "assets")
    src = make_tone(tmp_path / "lon.wav", 3.0)
    err = _refusal(pipeline, src)
    assert err.code == "too_large" and err.http_status == 413


@pytest.mark.parametrize(
    "name",
    [
        "../../etc/passwd.mp3",
        "/etc/passwd.mp3",
        "thu\\muc.mp3",
        "..mp3",
        ".an.mp3",
        "a\x00b.mp3",
        "dong\nmoi.mp3",
        "C:ghi.mp3",
        "",
        "x" * 300 + ".mp3",
    ],
)
def test_path_tricks_in_file_names_are_refused(name):
    with pytest.raises(AudioRejected) as info:
        check_filename(name)
    assert info.value.code == "bad_filename" and info.value.http_status == 400


def test_unsupported_extension_and_plain_names():
    with pytest.raises(AudioRejected) as info:
        check_filename("bai-hat.exe")
    assert info.value.code == "unsupported_format"
    assert check_filename("Thông báo tiêm phòng.M4A") == "Thông báo tiêm phòng.M4A"


def test_wav_header_check_handles_streamed_wav(tmp_path, pipeline):
    # A WAV written to a pipe has no length in its header; that is not "truncated".
    src = make_tone(tmp_path / "stream.wav", 2.0, channels=1)
    data = bytearray(src.read_bytes())
    at = data.index(b"data") + 4
    data[at : at + 4] = struct.pack("<I", 0xFFFFFFFF)
    src.write_bytes(bytes(data))
    out = pipeline.process(src, src.name, tmp_path / "out")
    assert abs(decode(out.path).duration_s - 2.0) < 0.5
