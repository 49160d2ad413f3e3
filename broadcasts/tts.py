"""Text-to-speech engines behind one interface, with a disk cache and an offline fallback.

- ``espeak``: espeak-ng's Vietnamese voices (vi, vi-vn-x-central, vi-vn-x-south). The
  default: it needs no network and no model file. Run as the Debian ``espeak-ng`` program,
  not through ``espeakng-loader``'s bundled library: the loader only hands over a .so path,
  so using it would mean hand-written ctypes bindings to a C library that keeps global
  state (not safe to call from the API's worker threads) and can crash the server process;
  a subprocess per sentence is isolated, can be timed out, and costs ~20 ms to start.
- ``gtts``: Google's online voice, used when configured and reachable; on any failure
  the bulletin is spoken by espeak-ng instead and the reason is logged and returned.
- ``piper``: a neural voice the operator supplies as an ``.onnx`` file (setting
  ``LOA_CONTENT_PIPER_MODEL``); nothing is ever downloaded.

Text is normalised (``broadcasts.normalize``) and split into sentences; each sentence is
cached on disk under a key of (engine, voice, rate, normalised sentence), so a bulletin
repeated every morning with one changed line costs one sentence of synthesis."""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

from pydub import AudioSegment

from broadcasts.errors import ContentError, ToolMissing, TtsError
from broadcasts.normalize import Normalizer, normalizer_for
from broadcasts.settings import ContentSettings

log = logging.getLogger(__name__)

ENGINES = ("espeak", "gtts", "piper")
_CACHE_VERSION = "1"
_SAFE_VOICE = re.compile(r"^[A-Za-z0-9_.+\-]{1,60}$")
_MAX_SENTENCE_CHARS = 280


class EngineUnavailable(Exception):
    """An online engine could not be reached: a reason to fall back, not to fail."""


def split_sentences(spoken: str, max_chars: int = _MAX_SENTENCE_CHARS) -> list[str]:
    """Sentences of the normalised text; over-long ones are cut at commas, then spaces, so
    no engine call gets a paragraph (gTTS rejects >100 chars per request anyway, and a
    sentence is the unit the cache reuses)."""
    pieces: list[str] = []
    for chunk in re.split(r"(?<=[.!?;:])\s+|\n+", spoken):
        chunk = chunk.strip()
        if not re.search(r"\w", chunk):
            continue
        while len(chunk) > max_chars:
            cut = chunk.rfind(", ", 0, max_chars)
            if cut < max_chars // 3:
                cut = chunk.rfind(" ", 0, max_chars)
            if cut <= 0:
                cut = max_chars
            pieces.append(chunk[:cut].strip(" ,"))
            chunk = chunk[cut:].strip(" ,")
        if chunk:
            pieces.append(chunk)
    return pieces


class Engine(ABC):
    name: str
    suffix: str = ".wav"

    def __init__(self, cfg: ContentSettings) -> None:
        self.cfg = cfg

    @abstractmethod
    def check(self) -> None:
        """Raise a clear error if this engine cannot run here."""

    @abstractmethod
    def synthesize(self, sentence: str, voice: str, out: Path) -> None:
        """Write the spoken ``sentence`` to ``out``."""

    def default_voice(self) -> str:
        return self.cfg.tts_voice


def _run(cmd: list[str], text: str, timeout: float, what: str) -> None:
    try:
        proc = subprocess.run(
            cmd, input=text.encode("utf-8"), capture_output=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired as exc:
        raise TtsError(
            "tts_timeout",
            f"{what} không trả lời sau {timeout:.0f} giây.",
            f"{what} timed out after {timeout:.0f} s.",
            http_status=504,
        ) from exc
    if proc.returncode != 0:
        err = proc.stderr.decode("utf-8", "replace").strip()[-300:]
        raise TtsError(
            "tts_failed",
            f"{what} không đọc được văn bản: {err}",
            f"{what} failed: {err}",
            http_status=500,
        )


class EspeakEngine(Engine):
    name = "espeak"

    def _binary(self) -> str:
        found = shutil.which("espeak-ng")
        if not found:
            raise ToolMissing(
                "espeak_missing",
                "Máy chủ chưa cài espeak-ng (giọng đọc ngoại tuyến). Hãy cài gói "
                "Debian 'espeak-ng' (chạy lệnh cài đặt trong README).",
                "espeak-ng is not installed (Debian package 'espeak-ng').",
            )
        return found

    def check(self) -> None:
        self._binary()

    def synthesize(self, sentence: str, voice: str, out: Path) -> None:
        cmd = [
            self._binary(),
            "-v",
            voice,
            "-s",
            str(self.cfg.tts_rate_wpm),
            "-b",
            "1",
            "-w",
            str(out),
            "--stdin",
        ]
        try:
            _run(cmd, sentence, self.cfg.tts_timeout_s, "espeak-ng")
        except TtsError as exc:
            # A voice the caller named that espeak-ng does not have is the caller's mistake,
            # not a server failure.
            if "voice does not exist" not in exc.message_en:
                raise
            raise TtsError(
                "unknown_voice",
                f"Không có giọng đọc '{voice}'. Giọng tiếng Việt: vi (miền Bắc), "
                "vi-vn-x-central (miền Trung), vi-vn-x-south (miền Nam).",
                f"No voice '{voice}'. Vietnamese voices: vi, vi-vn-x-central, vi-vn-x-south.",
                http_status=422,
            ) from exc


class GttsEngine(Engine):
    name = "gtts"
    suffix = ".mp3"

    def __init__(self, cfg: ContentSettings) -> None:
        super().__init__(cfg)
        self._down_until = 0.0
        self._down_reason = ""
        self._lock = threading.Lock()

    def default_voice(self) -> str:
        return "vi"

    def check(self) -> None:
        with self._lock:
            if time.monotonic() < self._down_until:
                raise EngineUnavailable(f"{self._down_reason} (lần thử gần đây; sẽ thử lại sau)")

    def synthesize(self, sentence: str, voice: str, out: Path) -> None:
        self.check()
        from gtts import gTTS  # imported lazily: the offline path never needs it

        try:
            gTTS(sentence, lang="vi", tld=self.cfg.gtts_tld, timeout=self.cfg.gtts_timeout_s).save(
                str(out)
            )
        except Exception as exc:  # gTTSError, requests errors, ValueError from bad replies
            reason = f"{type(exc).__name__}: {exc}"[:300]
            with self._lock:
                self._down_until = time.monotonic() + self.cfg.gtts_retry_after_s
                self._down_reason = reason
            raise EngineUnavailable(reason) from exc


class PiperEngine(Engine):
    name = "piper"

    def _model(self) -> Path:
        model = self.cfg.piper_model
        if model is None:
            raise TtsError(
                "piper_model_missing",
                "Chưa cấu hình tệp giọng đọc Piper (LOA_CONTENT_PIPER_MODEL). Hãy "
                "chép tệp .onnx của giọng đọc lên máy chủ và khai báo đường dẫn.",
                "No Piper voice model configured (LOA_CONTENT_PIPER_MODEL).",
                http_status=503,
            )
        if not model.is_file():
            raise TtsError(
                "piper_model_missing",
                f"Không tìm thấy tệp giọng đọc Piper: {model}. Loa không tự tải "
                "giọng đọc; hãy chép tệp .onnx (kèm tệp .onnx.json) vào đường dẫn "
                "này.",
                f"Piper voice model not found: {model} (models are never downloaded).",
                http_status=503,
            )
        config = Path(str(model) + ".json")
        if not config.is_file():
            raise TtsError(
                "piper_model_missing",
                f"Thiếu tệp cấu hình giọng đọc {config.name} bên cạnh {model.name}.",
                f"Missing voice config {config.name} next to {model.name}.",
                http_status=503,
            )
        return model

    def _command(self) -> list[str]:
        found = shutil.which(self.cfg.piper_command)
        if found:
            return [found]
        try:
            import piper  # noqa: F401  (the piper-tts package provides ``python -m piper``)
        except ImportError:
            raise ToolMissing(
                "piper_missing",
                "Máy chủ chưa cài Piper (gói PyPI 'piper-tts').",
                "Piper is not installed (PyPI package 'piper-tts').",
            ) from None
        return [sys.executable, "-m", "piper"]

    def check(self) -> None:
        self._model()
        self._command()

    def default_voice(self) -> str:
        model = self.cfg.piper_model
        return model.stem if model else "piper"

    def synthesize(self, sentence: str, voice: str, out: Path) -> None:
        length_scale = 150 / self.cfg.tts_rate_wpm  # >1 = slower
        cmd = [
            *self._command(),
            "--model",
            str(self._model()),
            "--output_file",
            str(out),
            "--length_scale",
            f"{length_scale:.3f}",
        ]
        _run(cmd, sentence, self.cfg.tts_timeout_s, "Piper")


@dataclass(frozen=True)
class Speech:
    path: Path  # WAV of the whole text, sentences joined with short pauses
    spoken: str  # the normalised text that was read
    engine: str  # engine actually used
    voice: str
    fallback_reason: str | None
    sentences: int
    cache_hits: int


class TtsService:
    def __init__(
        self, cfg: ContentSettings, cache_dir: Path, normalizer: Normalizer | None = None
    ) -> None:
        self.cfg = cfg
        self.cache_dir = cache_dir
        self.normalizer = normalizer or normalizer_for(cfg.abbreviations_file)
        self._engines: dict[str, Engine] = {
            "espeak": EspeakEngine(cfg),
            "gtts": GttsEngine(cfg),
            "piper": PiperEngine(cfg),
        }

    def engine(self, name: str | None) -> Engine:
        key = name or self.cfg.tts_engine
        if key not in self._engines:
            raise TtsError(
                "unknown_engine",
                f"Không có bộ đọc '{key}'. Chọn một trong: {', '.join(ENGINES)}.",
                f"Unknown TTS engine '{key}'. Choose one of {', '.join(ENGINES)}.",
                http_status=400,
            )
        return self._engines[key]

    def normalize(self, text: str) -> str:
        """The spoken form, after refusing empty or over-long text."""
        if len(text) > self.cfg.tts_max_chars:
            raise TtsError(
                "text_too_long",
                f"Bản tin dài {len(text)} ký tự, vượt giới hạn "
                f"{self.cfg.tts_max_chars} ký tự. Hãy chia thành nhiều bản tin.",
                f"Text of {len(text)} characters exceeds {self.cfg.tts_max_chars}.",
                http_status=413,
            )
        spoken = self.normalizer.normalize(text or "")
        if not re.search(r"[^\W\d_]", spoken):
            raise TtsError(
                "empty_text",
                "Nội dung bản tin trống: hãy nhập văn bản cần đọc.",
                "The bulletin text is empty.",
                http_status=400,
            )
        return spoken

    def _cache_path(self, engine: Engine, voice: str, sentence: str) -> Path:
        key = hashlib.sha256(
            "\x1f".join(
                (_CACHE_VERSION, engine.name, voice, str(self.cfg.tts_rate_wpm), sentence)
            ).encode("utf-8")
        ).hexdigest()
        return self.cache_dir / engine.name / key[:2] / f"{key}{engine.suffix}"

    def _sentence_audio(self, engine: Engine, voice: str, sentence: str) -> tuple[Path, bool]:
        path = self._cache_path(engine, voice, sentence)
        if path.exists() and path.stat().st_size > 0:
            return path, True
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{threading.get_ident()}{path.suffix}")
        try:
            engine.synthesize(sentence, voice, tmp)
            if not tmp.exists() or tmp.stat().st_size == 0:
                raise TtsError(
                    "tts_failed",
                    f"Bộ đọc {engine.name} không tạo ra âm thanh.",
                    f"{engine.name} produced no audio.",
                    http_status=500,
                )
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)
        return path, False

    def _speak_with(
        self, engine: Engine, voice: str, sentences: list[str]
    ) -> tuple[list[Path], int]:
        engine.check()
        paths, hits = [], 0
        for sentence in sentences:
            path, hit = self._sentence_audio(engine, voice, sentence)
            paths.append(path)
            hits += hit
        return paths, hits

    def speak(
        self, text: str, out: Path, *, engine: str | None = None, voice: str | None = None
    ) -> Speech:
        """Synthesise ``text`` into the WAV file ``out``."""
        spoken = self.normalize(text)
        chosen = self.engine(engine)
        use_voice = voice or chosen.default_voice()
        if not _SAFE_VOICE.match(use_voice):
            raise TtsError(
                "bad_voice",
                f"Tên giọng đọc không hợp lệ: '{use_voice}'.",
                f"Invalid voice name '{use_voice}'.",
                http_status=400,
            )
        sentences = split_sentences(spoken)
        fallback_reason = None
        try:
            paths, hits = self._speak_with(chosen, use_voice, sentences)
        except EngineUnavailable as exc:
            fallback_reason = f"{chosen.name} không dùng được: {exc}"
            log.warning("TTS: %s; đọc bằng espeak-ng ngoại tuyến thay thế", fallback_reason)
            chosen = self._engines["espeak"]
            use_voice = chosen.default_voice()
            paths, hits = self._speak_with(chosen, use_voice, sentences)
        join(paths, out, pause_ms=self.cfg.tts_sentence_pause_ms)
        return Speech(
            path=out,
            spoken=spoken,
            engine=chosen.name,
            voice=use_voice,
            fallback_reason=fallback_reason,
            sentences=len(sentences),
            cache_hits=hits,
        )


def join(paths: list[Path], out: Path, *, pause_ms: int) -> None:
    """Concatenate sentence files with a pause between them into one mono WAV.

    pydub is the right size of tool here: sentence clips are small, and it decodes WAV and
    gTTS's MP3 alike through ffmpeg."""
    if not paths:
        raise ContentError("empty_text", "Không có câu nào để đọc.", "Nothing to read.")
    segments = [AudioSegment.from_file(p).set_channels(1) for p in paths]
    rate = segments[0].frame_rate
    gap = AudioSegment.silent(duration=pause_ms, frame_rate=rate)
    combined = segments[0]
    for seg in segments[1:]:
        combined = combined + gap + seg.set_frame_rate(rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    combined.export(out, format="wav")
