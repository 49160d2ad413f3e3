"""Content cache: verified, resumable downloads into a size-capped, least-recently-used
directory of files named by their SHA-256.

Power loss cannot leave a corrupt file that is later played: a download grows in
``partial/<sha>.part``; only once its size and SHA-256 match the command, and ffprobe found
an audio stream in it, is it fsync'ed and renamed (atomic on one filesystem) to
``<sha>.audio``, and the directory fsync'ed. A ``.part`` left by a crash is resumed with
``Range: bytes=N-``; if the resumed whole does not match, it is thrown away and fetched
again from the start once."""

from __future__ import annotations

import asyncio
import hashlib
import os
import subprocess
from collections.abc import Callable
from pathlib import Path

import httpx

CHUNK = 64 * 1024


class FetchError(Exception):
    """``error`` is the protocol's short code (download, checksum, not_audio, url)."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def probe_audio(path: Path) -> float | None:
    """Duration in seconds when ffprobe finds an audio stream it can decode, else None."""
    try:
        out = subprocess.run(
            [
                "ffprobe",
                "-v",
                "error",
                "-select_streams",
                "a:0",
                "-show_entries",
                "stream=codec_name:format=duration",
                "-of",
                "default=nw=1",
                str(path),
            ],
            capture_output=True,
            text=True,
            timeout=30,
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    if out.returncode != 0 or "codec_name=" not in out.stdout:
        return None
    for line in out.stdout.splitlines():
        if line.startswith("duration="):
            try:
                return float(line.split("=", 1)[1])
            except ValueError:
                return None
    return None


class ContentCache:
    def __init__(self, root: str | Path, max_bytes: int) -> None:
        self.root = Path(root)
        self.partial = self.root / "partial"
        self.partial.mkdir(parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.in_use: set[str] = set()
        self._locks: dict[str, asyncio.Lock] = {}

    def path_for(self, sha256: str) -> Path:
        return self.root / f"{sha256}.audio"

    def has(self, sha256: str) -> bool:
        return self.path_for(sha256).is_file()

    def used_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.glob("*.audio")) + sum(
            p.stat().st_size for p in self.partial.glob("*.part")
        )

    def free_mb(self) -> float:
        return round(max(0, self.max_bytes - self.used_bytes()) / 1_048_576, 1)

    def writable(self) -> str | None:
        """None when a file can be written and removed here, else the reason."""
        probe = self.partial / ".probe"
        try:
            probe.write_bytes(b"ok")
            probe.unlink()
        except OSError as exc:
            return f"{self.root}: {exc.strerror}"
        return None

    def touch(self, sha256: str) -> None:
        """Mark as just used (LRU order is mtime)."""
        path = self.path_for(sha256)
        if path.exists():
            os.utime(path)

    def evict(self, keep: int = 0) -> list[str]:
        """Remove least recently used files until ``keep`` more bytes fit under the cap;
        files in use are never removed."""
        files = sorted(self.root.glob("*.audio"), key=lambda p: p.stat().st_mtime)
        total = self.used_bytes()
        removed = []
        for path in files:
            if total + keep <= self.max_bytes:
                break
            sha = path.stem
            if sha in self.in_use:
                continue
            total -= path.stat().st_size
            path.unlink(missing_ok=True)
            removed.append(sha)
        return removed

    async def fetch(
        self,
        client: httpx.AsyncClient,
        url: str,
        sha256: str,
        size: int,
        *,
        on_progress: Callable[[int], None] | None = None,
        attempts: int = 5,
    ) -> tuple[Path, bool]:
        """The cached file for ``sha256``, downloading it if needed. Returns (path,
        downloaded_now)."""
        lock = self._locks.setdefault(sha256, asyncio.Lock())
        async with lock:
            final = self.path_for(sha256)
            if final.is_file():
                self.touch(sha256)
                return final, False
            if size > self.max_bytes:
                raise FetchError(
                    "download", f"tệp {size} byte lớn hơn bộ nhớ đệm {self.max_bytes} byte"
                )
            self.evict(keep=size)
            part = self.partial / f"{sha256}.part"
            for fresh in (False, True):
                if fresh:
                    part.unlink(missing_ok=True)
                await self._download(client, url, part, size, attempts, on_progress)
                digest = await asyncio.to_thread(_sha256_of, part)
                if digest == sha256:
                    break
            else:
                part.unlink(missing_ok=True)
                raise FetchError("checksum", "SHA-256 không khớp với lệnh phát")
            if await asyncio.to_thread(probe_audio, part) is None:
                part.unlink(missing_ok=True)
                raise FetchError("not_audio", "tệp tải về không giải mã được thành âm thanh")
            await asyncio.to_thread(_commit, part, final)
            return final, True

    async def _download(
        self,
        client: httpx.AsyncClient,
        url: str,
        part: Path,
        size: int,
        attempts: int,
        on_progress: Callable[[int], None] | None,
    ) -> None:
        problem = "chưa thử"
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(min(5.0, 0.3 * 2**attempt))
            have = part.stat().st_size if part.exists() else 0
            if have > size:
                part.unlink()
                have = 0
            if have == size:
                return
            headers = {"Range": f"bytes={have}-"} if have else {}
            try:
                async with client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code == 200 and have:
                        have = 0  # Range ignored: start over
                    elif resp.status_code not in (200, 206):
                        problem = f"HTTP {resp.status_code}"
                        if 400 <= resp.status_code < 500 and resp.status_code not in (
                            408,
                            416,
                            429,
                        ):
                            break
                        continue
                    with part.open("r+b" if have else "wb") as fh:
                        fh.seek(have)
                        fh.truncate()
                        async for chunk in resp.aiter_bytes(CHUNK):
                            have += len(chunk)
                            if have > size:
                                raise FetchError("checksum", f"nhận hơn {size} byte đã báo trước")
                            fh.write(chunk)
                            if on_progress:
                                on_progress(have)
                        fh.flush()
                        os.fsync(fh.fileno())
            except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
                raise FetchError("download", f"URL không hợp lệ: {exc}") from None
            except httpx.HTTPError as exc:
                problem = f"{type(exc).__name__}: {exc}"[:200]
                continue
            if have == size:
                return
            problem = f"nhận {have}/{size} byte"
        raise FetchError("download", problem)


def _sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as fh:
        while block := fh.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def _commit(part: Path, final: Path) -> None:
    with part.open("rb") as fh:
        os.fsync(fh.fileno())
    os.replace(part, final)
    _fsync_dir(final.parent)
