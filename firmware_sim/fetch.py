"""HTTP side of a node: verified, resumable content download and live stream reading.

One ``SharedHttp`` serves the whole fleet (one connection pool, one TLS context), because a
client per node would cost thousands of pools; a semaphore caps simultaneous downloads so a
fleet-wide bulletin does not open thousands of connections to the content server at once.
Streams are not capped: a live stream holds its connection for as long as it plays.
"""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import httpx

DEFAULT_TIMEOUT = httpx.Timeout(10.0, read=30.0, pool=None)


class FetchError(Exception):
    """Why a node could not get the audio: ``error`` is the protocol's short code."""

    def __init__(self, error: str, detail: str) -> None:
        super().__init__(f"{error}: {detail}")
        self.error = error
        self.detail = detail


@dataclass
class SharedHttp:
    client: httpx.AsyncClient
    max_downloads: int = 64
    download_slots: asyncio.Semaphore = field(init=False)

    def __post_init__(self) -> None:
        self.download_slots = asyncio.Semaphore(self.max_downloads)

    @classmethod
    def create(cls, max_downloads: int = 64) -> SharedHttp:
        client = httpx.AsyncClient(
            timeout=DEFAULT_TIMEOUT,
            follow_redirects=True,
            trust_env=False,
            limits=httpx.Limits(max_connections=None, max_keepalive_connections=64),
        )
        return cls(client, max_downloads)

    async def aclose(self) -> None:
        await self.client.aclose()


async def download_verified(
    http: SharedHttp,
    url: str,
    expected_bytes: int,
    sha256: str,
    *,
    attempts: int = 4,
    retry_delay_s: float = 0.3,
) -> int:
    """Download ``url`` without keeping it, checking size and SHA-256 on the fly.

    A transfer cut short is resumed with ``Range: bytes=N-`` (the protocol promises Range
    support); a server that answers 200 instead of 206 is read again from the start. Raises
    FetchError("download") when the content cannot be had, FetchError("checksum") when what
    arrived is not what the command announced."""
    digest = hashlib.sha256()
    got = 0
    last_problem = "no attempt"
    async with http.download_slots:
        for attempt in range(attempts):
            if attempt:
                await asyncio.sleep(retry_delay_s * attempt)
            headers = {"Range": f"bytes={got}-"} if got else {}
            try:
                async with http.client.stream("GET", url, headers=headers) as resp:
                    if resp.status_code == 200 and got:
                        digest, got = hashlib.sha256(), 0  # Range ignored: start over
                    elif resp.status_code not in (200, 206):
                        last_problem = f"HTTP {resp.status_code}"
                        if 400 <= resp.status_code < 500 and resp.status_code != 408:
                            break  # the URL is wrong or forbidden; retrying will not help
                        continue
                    async for chunk in resp.aiter_bytes():
                        got += len(chunk)
                        if got > expected_bytes:
                            raise FetchError(
                                "checksum", f"nhận hơn {expected_bytes} byte đã báo trước"
                            )
                        digest.update(chunk)
            except httpx.InvalidURL as exc:
                raise FetchError("download", f"URL không hợp lệ: {exc}") from None
            except httpx.UnsupportedProtocol as exc:
                raise FetchError("download", f"giao thức không hỗ trợ: {exc}") from None
            except httpx.HTTPError as exc:
                last_problem = f"{type(exc).__name__}: {exc}"[:200]
                continue
            if got == expected_bytes:
                break
            last_problem = f"nhận {got}/{expected_bytes} byte"
        else:
            raise FetchError("download", last_problem)
    if got != expected_bytes:
        raise FetchError("download", last_problem)
    if digest.hexdigest() != sha256:
        raise FetchError("checksum", "SHA-256 không khớp")
    return got


async def read_stream(
    http: SharedHttp, url: str, *, on_open: Callable[[], None], on_bytes: Callable[[int], None]
) -> str:
    """Read a live stream (Icecast in production) until it ends; the bytes are discarded.

    ``on_open`` runs once the server has answered 200, which is when the node would start
    its amplifier. Returns why it ended: "end" (the server closed the stream) or
    "stream_lost" (the connection broke after it had opened). Raises FetchError("stream")
    when the stream cannot be opened at all."""
    opened = False
    try:
        async with http.client.stream("GET", url) as resp:
            if resp.status_code != 200:
                raise FetchError("stream", f"HTTP {resp.status_code}")
            opened = True
            on_open()
            async for chunk in resp.aiter_raw():
                on_bytes(len(chunk))
    except (httpx.InvalidURL, httpx.UnsupportedProtocol) as exc:
        raise FetchError("stream", f"URL không hợp lệ: {exc}") from None
    except httpx.HTTPError as exc:
        if not opened:
            raise FetchError("stream", f"{type(exc).__name__}: {exc}"[:200]) from None
        return "stream_lost"
    return "end"
