"""The audio pipeline every broadcast item goes through.

Upload or synthesised speech in; one file a node can play out: mono, trimmed of leading and
trailing silence, levelled to EBU R128 (default -16 LUFS integrated, true peak <= -1 dBTP),
framed by the station chime, encoded once for 3G (MP3 or Opus).

Order of work, cheapest refusal first:
1. size and file name (no decoding at all);
2. ``ffprobe`` of the header: not audio, unsupported, too long by the header's own account;
3. one analysis decode, capped at the duration limit so a file whose header lies still
   cannot make us decode for hours: decoder errors, truncation, loudness, silences;
4. render (trim, gain, gentle compression, limiter, chime, encode) with the loudness
   measured inside the same graph, corrected and re-rendered from the source if needed;
5. the encoded file is decoded once more and measured: what we store is what nodes play.

The heavy lifting is ffmpeg's streaming filters, not pydub: pydub holds a whole decoded
file in memory (a 60-minute stereo upload is ~600 MB of PCM), ffmpeg streams it."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
import unicodedata
from dataclasses import dataclass
from pathlib import Path

from broadcasts import chime as chime_mod
from broadcasts import ffmpeg
from broadcasts.errors import AudioRejected
from broadcasts.settings import ContentSettings

log = logging.getLogger(__name__)

ACCEPTED_EXTENSIONS = frozenset(
    {".mp3", ".wav", ".wave", ".ogg", ".oga", ".opus", ".m4a", ".aac", ".mp4", ".flac", ".webm"}
)
# ffprobe demuxer (first name of format_name) -> accepted. No playlists, no concat scripts.
ACCEPTED_DEMUXERS = frozenset({"mp3", "wav", "ogg", "mov", "aac", "flac", "matroska"})
ACCEPTED_CODECS = frozenset({"mp3", "mp2", "vorbis", "opus", "aac", "flac", "alac"})
# First bytes of the containers we accept: a file that starts like one of these but does not
# probe is "corrupt"; anything else is "not audio".
_AUDIO_MAGIC = (b"ID3", b"RIFF", b"fLaC", b"OggS", b"\x1aE\xdf\xa3")

MIME = {"mp3": "audio/mpeg", "opus": "audio/ogg"}
SUFFIX = {"mp3": ".mp3", "opus": ".ogg"}

_MAX_RENDERS = 3
# ffmpeg jobs at once in this process: each one keeps a core busy, and the machine also
# runs the broker, the controller and the API.
_JOBS = threading.BoundedSemaphore(max(1, min(2, os.cpu_count() or 1)))
_LOUDNESS_TOLERANCE_LU = 0.5
# An emergency is levelled like a live programme: EBU R 128 accepts +-1 LU where exact
# normalisation is not possible, and each render the exact target would cost (0.2-0.4 s for a
# minute of speech) is time before the warning is heard.
_URGENT_TOLERANCE_LU = 1.0
# MP3 comes back ~0.4 LU quieter than what went into the encoder (measured with ffmpeg 5.1
# and LAME); the figure is refined after every file so most files need a single encode.
_codec_offset: dict[str, float] = {"mp3": 0.4, "opus": 0.1}
# The gain the compressor and the limiter take from an emergency's speech, learned from the
# last one this process levelled. The TTS voice differs little from one alert to the next, so
# with it the first calibration render lands within 2 LU and the second is not needed.
_urgent_chain_gain: dict[str, float] = {"mp3": 0.0, "opus": 0.0}


def vi_duration(seconds: float) -> str:
    """Human duration in Vietnamese: "1 giờ 5 phút", "12,5 giây"."""
    if seconds < 60:
        return f"{seconds:.1f}".replace(".", ",").removesuffix(",0") + " giây"
    total = int(round(seconds))
    h, rem = divmod(total, 3600)
    m, s = divmod(rem, 60)
    parts = [f"{h} giờ" if h else "", f"{m} phút" if m else "", f"{s} giây" if s else ""]
    return " ".join(p for p in parts if p)


def reject(code: str, vi: str, en: str, status: int = 422) -> AudioRejected:
    return AudioRejected(code, vi, en, http_status=status)


def check_filename(filename: str) -> str:
    """The uploaded name as it will be shown, or a refusal when it tries path tricks.

    The name never becomes a path on disk (files are stored by content hash); it is still
    refused when it carries directories, '..', control characters or an odd extension,
    because such a name means a broken or hostile client."""
    name = unicodedata.normalize("NFC", filename or "")
    bad = (
        not name
        or len(name) > 255
        or "/" in name
        or "\\" in name
        or name in {".", ".."}
        or name.startswith(".")
        or ".." in name
        or ":" in name
        or any(unicodedata.category(c) in {"Cc", "Cf", "Zl", "Zp"} for c in name)
    )
    if bad:
        raise reject(
            "bad_filename",
            "Tên tệp không hợp lệ: không được chứa thư mục, '..', ':' hay ký tự điều khiển.",
            "Invalid file name: no directories, '..', ':' or control characters.",
            400,
        )
    ext = Path(name).suffix.lower()
    if ext not in ACCEPTED_EXTENSIONS:
        raise reject(
            "unsupported_format",
            f"Định dạng tệp '{ext or name}' không được hỗ trợ. Hãy dùng MP3, WAV, "
            "OGG/Opus, M4A/AAC hoặc FLAC.",
            f"Unsupported file type '{ext or name}'. Use MP3, WAV, OGG/Opus, M4A/AAC or FLAC.",
            415,
        )
    return name


def _looks_like_audio(path: Path) -> bool:
    with path.open("rb") as f:
        head = f.read(12)
    if head.startswith(_AUDIO_MAGIC) or head[4:8] == b"ftyp":
        return True
    # MPEG audio / ADTS frame sync: 11 set bits.
    return len(head) >= 2 and head[0] == 0xFF and (head[1] & 0xE0) == 0xE0


def _wav_missing_bytes(path: Path) -> int:
    """For a RIFF/WAVE file: bytes the 'data' chunk declares but the file does not have.

    ffprobe quietly trusts the file size, so a WAV cut in half looks like a valid shorter
    recording; the header still says how long it should have been."""
    size = path.stat().st_size
    with path.open("rb") as f:
        if f.read(4) != b"RIFF":
            return 0
        f.seek(12)
        while True:
            header = f.read(8)
            if len(header) < 8:
                return 0
            chunk_id, chunk_len = header[:4], int.from_bytes(header[4:], "little")
            if chunk_id == b"data":
                if chunk_len in (0, 0xFFFFFFFF):  # streamed WAV: length unknown by design
                    return 0
                return max(0, f.tell() + chunk_len - size)
            f.seek(chunk_len + (chunk_len & 1), os.SEEK_CUR)


@dataclass(frozen=True)
class SourceAudio:
    """What the header check learned about an upload."""

    filename: str
    size: int
    probe: ffmpeg.Probe


@dataclass(frozen=True)
class Analysis:
    decoded_s: float
    loudness_lufs: float
    start_s: float
    end_s: float


@dataclass(frozen=True)
class ProcessedAudio:
    path: Path
    sha256: str
    bytes: int
    duration_ms: int
    mime: str
    channels: int
    sample_rate: int
    loudness_lufs: float
    true_peak_dbtp: float
    source_duration_ms: int
    source_format: str
    renders: int


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _db_to_lin(db: float) -> float:
    return 10 ** (db / 20)


class AudioPipeline:
    def __init__(self, cfg: ContentSettings, assets_dir: Path) -> None:
        self.cfg = cfg
        self.assets_dir = assets_dir

    @property
    def rate(self) -> int:
        # Opus only runs at 48 kHz (or telephone rates); MP3 uses the configured rate.
        return 48000 if self.cfg.delivery_format == "opus" else self.cfg.sample_rate

    # -- step 1-2: cheap checks ----------------------------------------------------------

    def inspect(self, path: Path, filename: str) -> SourceAudio:
        name = check_filename(filename)
        size = path.stat().st_size
        if size == 0:
            raise reject("empty", "Tệp tải lên rỗng (0 byte).", "The file is empty (0 bytes).", 400)
        if size > self.cfg.max_upload_bytes:
            limit_mb = self.cfg.max_upload_bytes / 1048576
            raise reject(
                "too_large",
                f"Tệp quá lớn ({size / 1048576:.1f} MB); giới hạn là {limit_mb:.0f} MB.",
                f"File too large ({size / 1048576:.1f} MB); the limit is {limit_mb:.0f} MB.",
                413,
            )
        try:
            pr = ffmpeg.probe(path)
        except ffmpeg.ProbeFailed as exc:
            log.info("ffprobe refused %s: %s", name, exc.stderr.strip()[-300:])
            if _looks_like_audio(path):
                raise reject(
                    "corrupt",
                    "Tệp âm thanh bị hỏng hoặc không đầy đủ, không đọc được phần đầu "
                    "tệp. Hãy xuất lại tệp rồi tải lên.",
                    "The audio file is corrupt or incomplete (unreadable header).",
                ) from None
            raise self._not_audio() from None
        if (
            pr.demuxer not in ACCEPTED_DEMUXERS
            or pr.audio is None
            or not (pr.audio.codec in ACCEPTED_CODECS or pr.audio.codec.startswith("pcm_"))
        ):
            if pr.audio is None or pr.demuxer not in ACCEPTED_DEMUXERS:
                raise self._not_audio()
            raise reject(
                "unsupported_codec",
                f"Mã hóa âm thanh '{pr.audio.codec}' không được hỗ trợ.",
                f"Audio codec '{pr.audio.codec}' is not supported.",
                415,
            )
        if pr.duration_s is not None and not pr.duration_estimated:
            self._check_length(pr.duration_s)
        missing = _wav_missing_bytes(path)
        if missing:
            raise self._truncated(
                f"thiếu {missing} byte so với phần đầu tệp", f"{missing} bytes missing"
            )
        if pr.size_mismatch:
            raise self._truncated(
                "kích thước tệp không khớp với độ dài khai báo",
                "file size does not match the declared length",
            )
        return SourceAudio(filename=name, size=size, probe=pr)

    def _not_audio(self) -> AudioRejected:
        return reject(
            "not_audio",
            "Tệp không phải là tệp âm thanh (hoặc không có kênh âm thanh). Hãy chọn "
            "tệp MP3, WAV, OGG/Opus, M4A/AAC hoặc FLAC.",
            "Not an audio file (or it has no audio track).",
            415,
        )

    def _truncated(self, vi_detail: str, en_detail: str) -> AudioRejected:
        return reject(
            "truncated",
            f"Tệp âm thanh bị cắt cụt ({vi_detail}). Hãy tải lên lại tệp đầy đủ.",
            f"The audio file is truncated ({en_detail}). Upload the complete file.",
        )

    def _check_length(self, seconds: float) -> None:
        if seconds > self.cfg.max_duration_s:
            raise reject(
                "too_long",
                f"Tệp dài {vi_duration(seconds)}, vượt giới hạn "
                f"{vi_duration(self.cfg.max_duration_s)}.",
                f"The file lasts {seconds:.0f} s, over the {self.cfg.max_duration_s:.0f} s limit.",
                413,
            )

    def _timeout(self, seconds: float | None) -> float:
        # At least twice real time on a busy 2-core machine, never unbounded.
        return 120.0 + 0.5 * min(seconds or self.cfg.max_duration_s, self.cfg.max_duration_s)

    # -- step 3: analysis decode ---------------------------------------------------------

    def _mono(self) -> str:
        return f"aformat=sample_fmts=fltp:sample_rates={self.rate}:channel_layouts=mono"

    def analyse(self, path: Path, src: SourceAudio) -> Analysis:
        cfg = self.cfg
        af = (
            f"{self._mono()},silencedetect=n={cfg.trim_threshold_db}dB:d=0.2,"
            "ebur128=framelog=verbose"
        )
        res = ffmpeg.run(
            [
                *ffmpeg.INPUT_GUARD,
                "-f",
                src.probe.demuxer,
                "-i",
                str(path),
                "-map",
                "0:a:0",
                "-t",
                f"{cfg.max_duration_s + 1:.3f}",
                "-af",
                af,
                "-f",
                "null",
                "-",
            ],
            self._timeout(src.probe.duration_s),
        )
        errors = res.error_lines
        decoded = res.out_time_s
        if res.returncode != 0 or decoded <= 0.01 or len(errors) > cfg.max_decode_errors:
            log.info(
                "decode of %s failed (rc=%s, %d errors): %s",
                src.filename,
                res.returncode,
                len(errors),
                "; ".join(errors[:3]),
            )
            raise reject(
                "corrupt",
                "Tệp âm thanh bị hỏng: bộ giải mã gặp "
                f"{max(1, len(errors))} lỗi khi đọc dữ liệu. Hãy xuất lại tệp rồi tải "
                "lên.",
                f"The audio file is corrupt: the decoder reported {max(1, len(errors))} error(s).",
            )
        if decoded >= cfg.max_duration_s:
            # The header understated the length (or did not say): caught by the decode cap.
            raise reject(
                "too_long",
                f"Tệp dài hơn giới hạn {vi_duration(cfg.max_duration_s)}.",
                f"The file is longer than the {cfg.max_duration_s:.0f} s limit.",
                413,
            )
        declared = src.probe.duration_s
        if declared and not src.probe.duration_estimated:
            shortfall = declared - decoded
            if shortfall > max(0.5, 0.03 * declared):
                raise self._truncated(
                    f"khai báo {vi_duration(declared)} nhưng chỉ đọc được {vi_duration(decoded)}",
                    f"declares {declared:.1f} s, only {decoded:.1f} s decodable",
                )
        loud = ffmpeg.parse_ebur128(res.stderr)
        if loud is None:
            raise reject(
                "corrupt",
                "Tệp âm thanh bị hỏng: không đo được âm lượng.",
                "The audio file is corrupt: loudness could not be measured.",
            )
        if loud.integrated_lufs < cfg.silence_floor_lufs:
            raise reject(
                "silent",
                f"Tệp âm thanh im lặng hoặc quá nhỏ (độ to {loud.integrated_lufs:.0f} "
                f"LUFS, dưới ngưỡng {cfg.silence_floor_lufs:.0f} LUFS). Hãy kiểm tra "
                "micrô và ghi âm lại.",
                f"The audio is silent or nearly so ({loud.integrated_lufs:.0f} LUFS, "
                f"below the {cfg.silence_floor_lufs:.0f} LUFS floor).",
            )
        start, end = self._speech_window(ffmpeg.parse_silences(res.stderr), decoded)
        if end - start < cfg.min_duration_s:
            raise reject(
                "too_short",
                f"Phần có tiếng chỉ dài {vi_duration(max(0.0, end - start))} sau khi "
                f"cắt khoảng lặng, ngắn hơn mức tối thiểu "
                f"{vi_duration(cfg.min_duration_s)}.",
                f"Only {max(0.0, end - start):.1f} s of sound after trimming silence.",
            )
        return Analysis(
            decoded_s=decoded, loudness_lufs=loud.integrated_lufs, start_s=start, end_s=end
        )

    def _speech_window(
        self, silences: list[tuple[float, float | None]], decoded: float
    ) -> tuple[float, float]:
        start, end = 0.0, decoded
        keep = self.cfg.trim_keep_ms / 1000
        if silences and silences[0][0] <= 0.05:
            first_end = silences[0][1]
            start = decoded if first_end is None else max(0.0, first_end - keep)
        if silences:
            last_start, last_end = silences[-1]
            if (last_end is None or last_end >= decoded - 0.05) and last_start > 0.05:
                end = min(decoded, last_start + keep)
        return start, max(start, end)

    # -- step 4-5: render, measure, correct ------------------------------------------------

    def _encoder_args(self, out: Path) -> list[str]:
        cfg = self.cfg
        common = [
            "-ac",
            "1",
            "-ar",
            str(self.rate),
            "-map_metadata",
            "-1",
            "-fflags",
            "+bitexact",
            "-flags:a",
            "+bitexact",
            "-b:a",
            cfg.bitrate,
        ]
        if cfg.delivery_format == "opus":
            return [*common, "-c:a", "libopus", "-application", "audio", "-f", "ogg", str(out)]
        return [
            *common,
            "-c:a",
            "libmp3lame",
            "-write_xing",
            "1",
            "-id3v2_version",
            "0",
            "-f",
            "mp3",
            str(out),
        ]

    def _render(
        self,
        path: Path,
        src: SourceAudio,
        an: Analysis,
        out: Path | None,
        *,
        pre_gain_db: float,
        post_gain_db: float,
        limit_db: float,
        with_chime: bool,
    ) -> float:
        """Run the filter graph from the source and return the integrated loudness at its
        end (measured on a branch of the same graph). With ``out`` the result is also
        encoded there; without, it is a calibration run that encodes nothing."""
        cfg = self.cfg
        length = an.end_s - an.start_s
        fade_out_at = max(0.0, length - 0.03)
        chain = [
            self._mono(),
            f"atrim=start={an.start_s:.4f}:end={an.end_s:.4f}",
            "asetpts=PTS-STARTPTS",
            "afade=t=in:d=0.02",
            f"afade=t=out:st={fade_out_at:.4f}:d=0.03",
        ]
        if cfg.highpass_hz:
            chain.append(f"highpass=f={cfg.highpass_hz}")
        if cfg.lowpass_hz:
            chain.append(f"lowpass=f={cfg.lowpass_hz}")
        chain.append(f"volume={pre_gain_db:.3f}dB")
        if cfg.compress:
            # Threshold a few dB over the programme level: speech peaks get squeezed, the
            # body of the voice is left alone.
            thr = _db_to_lin(cfg.target_lufs + 4)
            chain.append(f"acompressor=threshold={thr:.5f}:ratio=3:attack=5:release=150:knee=4")
        chain.append(f"volume={post_gain_db:.3f}dB")
        chain.append(
            f"alimiter=limit={_db_to_lin(limit_db):.5f}:level=disabled:attack=3:release=60:asc=1"
        )
        graph = [f"[0:a:0]{','.join(chain)}[prog]"]
        inputs = [*ffmpeg.INPUT_GUARD, "-f", src.probe.demuxer, "-i", str(path)]
        if with_chime:
            ceiling = cfg.true_peak_dbtp - 1.5
            pre = chime_mod.chime_file(
                self.assets_dir,
                "pre",
                rate=self.rate,
                target_lufs=cfg.target_lufs,
                gap_ms=cfg.chime_gap_ms,
                ceiling_dbfs=ceiling,
            )
            post = chime_mod.chime_file(
                self.assets_dir,
                "post",
                rate=self.rate,
                target_lufs=cfg.target_lufs,
                gap_ms=cfg.chime_gap_ms,
                ceiling_dbfs=ceiling,
            )
            inputs += [*ffmpeg.INPUT_GUARD, "-i", str(pre), *ffmpeg.INPUT_GUARD, "-i", str(post)]
            graph.append(f"[1:a]{self._mono()}[c1]")
            graph.append(f"[2:a]{self._mono()}[c2]")
            graph.append("[c1][prog][c2]concat=n=3:v=0:a=1[all]")
        else:
            graph.append("[prog]anull[all]")
        if out is None:
            graph.append("[all]ebur128=framelog=verbose[enc]")
            output = ["-f", "null", "-"]
        else:
            graph.append("[all]asplit=2[enc][meter]")
            graph.append("[meter]ebur128=framelog=verbose,anullsink")
            output = ["-y", *self._encoder_args(out)]
        res = ffmpeg.run(
            [*inputs, "-filter_complex", ";".join(graph), "-map", "[enc]", *output],
            self._timeout(an.decoded_s),
        )
        loud = ffmpeg.parse_ebur128(res.stderr)
        if res.returncode != 0 or loud is None or (out is not None and not out.exists()):
            log.error("render failed for %s: %s", src.filename, res.stderr[-1500:])
            raise reject(
                "encode_failed",
                "Không xử lý được tệp âm thanh (lỗi khi mã hóa). Hãy thử lại hoặc báo "
                "kỹ thuật viên.",
                "Encoding failed.",
                500,
            )
        return loud.integrated_lufs

    def process(
        self,
        path: Path,
        filename: str,
        out_dir: Path,
        *,
        chime: bool | None = None,
        urgent: bool = False,
    ) -> ProcessedAudio:
        """Run the whole pipeline; the result is a new file in ``out_dir`` (the caller moves
        it into the store). Nothing is left behind when a refusal is raised.

        ``urgent`` (an emergency's speech): calibration starts from the gain the last
        emergency needed, the tolerance is +-1 LU instead of +-0.5 LU, and it does not wait
        behind uploads for an ffmpeg slot: usually one calibration and one encode in all."""
        src = self.inspect(path, filename)
        with contextlib.nullcontext() if urgent else _JOBS:
            return self._process(path, src, out_dir, chime, urgent)

    def _process(
        self, path: Path, src: SourceAudio, out_dir: Path, chime: bool | None, urgent: bool
    ) -> ProcessedAudio:
        an = self.analyse(path, src)
        cfg = self.cfg
        with_chime = cfg.chime if chime is None else chime
        out_dir.mkdir(parents=True, exist_ok=True)
        out = out_dir / f".render-{os.getpid()}-{os.urandom(6).hex()}{SUFFIX[cfg.delivery_format]}"
        pre_gain = cfg.target_lufs - an.loudness_lufs
        post_gain = _urgent_chain_gain[cfg.delivery_format] if urgent else 0.0
        # The codec adds a little overshoot; keep the limiter under the true-peak target.
        limit = cfg.true_peak_dbtp - 1.5
        try:
            # Calibrate the programme alone (no encoding, no chime): the compressor and the
            # limiter take a share of the gain that depends on the material. A large first
            # correction changes how hard the limiter works, so it is checked once more.
            for _ in range(2):
                level = self._render(
                    path,
                    src,
                    an,
                    None,
                    pre_gain_db=pre_gain,
                    post_gain_db=post_gain,
                    limit_db=limit,
                    with_chime=False,
                )
                post_gain += cfg.target_lufs - level
                if abs(cfg.target_lufs - level) <= 2.0:
                    break
            if urgent:
                _urgent_chain_gain[cfg.delivery_format] = post_gain
            # The codec's own loudness change, learned from earlier files of this process.
            post_gain += _codec_offset.get(cfg.delivery_format, 0.0)
            # Encode, then judge what a node's decoder will actually get.
            tolerance = _URGENT_TOLERANCE_LU if urgent else _LOUDNESS_TOLERANCE_LU
            renders = 0
            while True:
                renders += 1
                graph_level = self._render(
                    path,
                    src,
                    an,
                    out,
                    pre_gain_db=pre_gain,
                    post_gain_db=post_gain,
                    limit_db=limit,
                    with_chime=with_chime,
                )
                decoded = ffmpeg.decode_and_measure(out, timeout_s=self._timeout(an.decoded_s))
                final = decoded.loudness
                _codec_offset[cfg.delivery_format] = graph_level - final.integrated_lufs
                off = cfg.target_lufs - final.integrated_lufs
                tp_over = (final.true_peak_dbtp or -120.0) - cfg.true_peak_dbtp
                if (abs(off) <= tolerance and tp_over <= 0.05) or renders >= _MAX_RENDERS:
                    break
                post_gain += off
                if tp_over > 0.05:
                    limit -= tp_over + 0.2  # codec overshoot: lower the limiter's ceiling
            if abs(final.integrated_lufs - cfg.target_lufs) > 1.0:
                log.warning(
                    "%s: loudness %.1f LUFS after %d renders (target %.1f)",
                    src.filename,
                    final.integrated_lufs,
                    renders,
                    cfg.target_lufs,
                )
            if decoded.channels < 1 or decoded.duration_s <= 0:
                raise reject(
                    "encode_failed",
                    "Tệp sau khi mã hóa không đọc lại được.",
                    "The encoded file could not be read back.",
                    500,
                )
            return ProcessedAudio(
                path=out,
                sha256=sha256_file(out),
                bytes=out.stat().st_size,
                duration_ms=int(round(decoded.duration_s * 1000)),
                mime=MIME[cfg.delivery_format],
                channels=decoded.channels,
                sample_rate=decoded.sample_rate,
                loudness_lufs=final.integrated_lufs,
                # -120 for digital silence: a number JSON and every database can hold.
                true_peak_dbtp=final.true_peak_dbtp if final.true_peak_dbtp is not None else -120.0,
                source_duration_ms=int(round(an.decoded_s * 1000)),
                source_format=f"{src.probe.demuxer}/{src.probe.audio.codec}"
                if src.probe.audio
                else src.probe.demuxer,
                renders=renders,
            )
        except BaseException:
            out.unlink(missing_ok=True)
            raise
