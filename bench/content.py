"""Content benchmarks: how fast speech is made, and what levelling an upload costs.

    .venv/bin/python bench/content.py [--minutes 10]

1. Speech: seconds of Vietnamese speech produced per CPU second (this process and its
   children: espeak-ng, ffmpeg), for the real TTS path (normalise, split, synthesise per
   sentence, join) with an empty cache and again with a warm one. Baseline in the same run:
   one bare ``espeak-ng`` call on the same already-normalised text.
2. Upload: wall and CPU time to take a 10-minute stereo MP3 through the whole pipeline
   (probe, analysis decode, calibration, encode with chime, decode-and-measure). Baseline in
   the same run: a plain ``ffmpeg -i upload.mp3 -f null -`` decode of the same file.

Prints the figures and writes ``bench/results/content.json``."""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench._common import RESULTS  # noqa: E402
from broadcasts.audio import AudioPipeline  # noqa: E402
from broadcasts.settings import ContentSettings  # noqa: E402
from broadcasts.tts import TtsService  # noqa: E402

SENTENCES = ROOT.parent / "shared" / "data" / "admin_sentences_vi.txt"
FALLBACK_TEXT = (
    "Ủy ban nhân dân xã thông báo: ngày 30/6/2025 tổ chức tiêm phòng cho trẻ em "
    "dưới 5 tuổi tại trạm y tế xã, từ 7h30 đến 11h00. Đề nghị bà con đưa con em "
    "đến đúng giờ và mang theo sổ tiêm chủng."
)


def cpu_seconds() -> float:
    """User + system time of this process and of every child it has waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


class Meter:
    def __enter__(self) -> Meter:
        self.wall0, self.cpu0 = time.perf_counter(), cpu_seconds()
        return self

    def __exit__(self, *exc: object) -> None:
        self.wall = time.perf_counter() - self.wall0
        self.cpu = cpu_seconds() - self.cpu0


def duration_s(path: Path) -> float:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=duration",
            "-of",
            "default=nw=1:nk=1",
            str(path),
        ],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return float(out.strip())


def bench_speech(tmp: Path) -> dict:
    text = SENTENCES.read_text(encoding="utf-8") if SENTENCES.exists() else FALLBACK_TEXT * 6
    cfg = ContentSettings()
    tts = TtsService(cfg, tmp / "cache")
    with Meter() as cold:
        speech = tts.speak(text, tmp / "cold.wav")
    with Meter() as warm:
        tts.speak(text, tmp / "warm.wav")
    spoken_s = duration_s(speech.path)
    with Meter() as base:
        subprocess.run(
            [
                "espeak-ng",
                "-v",
                cfg.tts_voice,
                "-s",
                str(cfg.tts_rate_wpm),
                "-b",
                "1",
                "-w",
                str(tmp / "bare.wav"),
                "--stdin",
            ],
            input=speech.spoken.encode("utf-8"),
            check=True,
        )
    bare_s = duration_s(tmp / "bare.wav")
    return {
        "text_chars": len(text),
        "sentences": speech.sentences,
        "speech_seconds": round(spoken_s, 2),
        "cold_cache": {
            "wall_s": round(cold.wall, 3),
            "cpu_s": round(cold.cpu, 3),
            "speech_s_per_cpu_s": round(spoken_s / cold.cpu, 1),
        },
        "warm_cache": {
            "wall_s": round(warm.wall, 3),
            "cpu_s": round(warm.cpu, 3),
            "speech_s_per_cpu_s": round(spoken_s / warm.cpu, 1),
        },
        "baseline_bare_espeak": {
            "wall_s": round(base.wall, 3),
            "cpu_s": round(base.cpu, 3),
            "speech_seconds": round(bare_s, 2),
            "speech_s_per_cpu_s": round(bare_s / base.cpu, 1),
        },
    }


def make_upload(tmp: Path, minutes: float) -> Path:
    """A stereo 128 kb/s MP3 of real speech with pauses, ``minutes`` long."""
    one = tmp / "one.wav"
    subprocess.run(
        ["espeak-ng", "-v", "vi", "-s", "150", "-w", str(one), FALLBACK_TEXT], check=True
    )
    upload = tmp / "upload.mp3"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-stream_loop",
            "-1",
            "-i",
            str(one),
            "-af",
            "apad=pad_dur=1,volume=-9dB",
            "-t",
            str(minutes * 60),
            "-ac",
            "2",
            "-ar",
            "44100",
            "-c:a",
            "libmp3lame",
            "-b:a",
            "128k",
            str(upload),
        ],
        check=True,
    )
    return upload


def bench_upload(tmp: Path, minutes: float) -> dict:
    upload = make_upload(tmp, minutes)
    with Meter() as base:
        subprocess.run(
            ["ffmpeg", "-nostdin", "-v", "error", "-i", str(upload), "-f", "null", "-"], check=True
        )
    pipeline = AudioPipeline(ContentSettings(), tmp / "assets")
    pipeline.process(make_tone_for_chime(tmp), "warm.wav", tmp / "out")  # chime made once
    with Meter() as full:
        result = pipeline.process(upload, upload.name, tmp / "out")
    return {
        "upload_minutes": minutes,
        "upload_bytes": upload.stat().st_size,
        "output_bytes": result.bytes,
        "output_duration_s": round(result.duration_ms / 1000, 1),
        "output_lufs": result.loudness_lufs,
        "output_true_peak_dbtp": result.true_peak_dbtp,
        "encodes": result.renders,
        "pipeline": {
            "wall_s": round(full.wall, 2),
            "cpu_s": round(full.cpu, 2),
            "x_realtime": round(minutes * 60 / full.wall, 1),
        },
        "baseline_plain_decode": {
            "wall_s": round(base.wall, 2),
            "cpu_s": round(base.cpu, 2),
            "x_realtime": round(minutes * 60 / base.wall, 1),
        },
        "pipeline_vs_decode_wall": round(full.wall / base.wall, 1),
        "pipeline_vs_decode_cpu": round(full.cpu / base.cpu, 1),
    }


def make_tone_for_chime(tmp: Path) -> Path:
    path = tmp / "warm.wav"
    subprocess.run(
        [
            "ffmpeg",
            "-nostdin",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=f=440:d=2",
            str(path),
        ],
        check=True,
    )
    return path


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    args = parser.parse_args()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="loa-bench-content-") as tmp_name:
        tmp = Path(tmp_name)
        speech = bench_speech(tmp)
        upload = bench_upload(tmp, args.minutes)
    results = {
        "bench": "content",
        "when": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "load_avg_before": [round(x, 2) for x in load_before],
            "load_avg_after": [round(x, 2) for x in os.getloadavg()],
        },
        "speech": speech,
        "upload": upload,
    }
    out = RESULTS / "content.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    s, u = speech, upload
    print(f"TTS ({s['sentences']} sentences, {s['speech_seconds']} s of speech):")
    print(
        f"  cold cache  {s['cold_cache']['speech_s_per_cpu_s']:>7} s speech / CPU s "
        f"(wall {s['cold_cache']['wall_s']} s)"
    )
    print(f"  warm cache  {s['warm_cache']['speech_s_per_cpu_s']:>7} s speech / CPU s")
    print(
        f"  baseline: bare espeak-ng {s['baseline_bare_espeak']['speech_s_per_cpu_s']:>7} "
        "s speech / CPU s"
    )
    print(f"Upload of {u['upload_minutes']:g} min ({u['upload_bytes'] / 1e6:.1f} MB MP3 stereo):")
    print(
        f"  pipeline    wall {u['pipeline']['wall_s']} s, CPU {u['pipeline']['cpu_s']} s "
        f"({u['pipeline']['x_realtime']}x real time, {u['encodes']} encode(s), "
        f"{u['output_lufs']} LUFS, TP {u['output_true_peak_dbtp']} dBTP)"
    )
    print(
        f"  baseline: plain decode wall {u['baseline_plain_decode']['wall_s']} s, "
        f"CPU {u['baseline_plain_decode']['cpu_s']} s"
    )
    print(
        f"  pipeline / decode: {u['pipeline_vs_decode_wall']}x wall, "
        f"{u['pipeline_vs_decode_cpu']}x CPU"
    )
    print(
        f"load average before/after: {results['machine']['load_avg_before']} / "
        f"{results['machine']['load_avg_after']}"
    )
    print(f"-> {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
