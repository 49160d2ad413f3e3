"""The content cache on a real HTTP server: size cap with least-recently-used eviction
(never the file in use), checksum and not-audio refusals leave nothing behind."""

from __future__ import annotations

import hashlib
import os
import time

import httpx
import pytest

from node_agent.cache import ContentCache, FetchError
from tests.node_agent.conftest import make_audio
from tests.node_agent.media import MediaServer


@pytest.fixture
def media(tmp_path):
    root = tmp_path / "media"
    root.mkdir()
    server = MediaServer(root).start()
    yield server
    server.stop()


def meta(media: MediaServer, name: str) -> tuple[str, str, int]:
    data = (media.root / name).read_bytes()
    return media.base + name, hashlib.sha256(data).hexdigest(), len(data)


async def test_lru_eviction_keeps_the_cap_and_spares_files_in_use(tmp_path, media):
    for i in range(4):
        make_audio(media.root / f"f{i}.mp3", seconds=2.0 + i * 0.1, freq=300 + 50 * i)
    sizes = [(media.root / f"f{i}.mp3").stat().st_size for i in range(4)]
    cache = ContentCache(tmp_path / "cache", max_bytes=sum(sizes[:3]) + sizes[0] // 2)
    async with httpx.AsyncClient() as client:
        shas = []
        for i in range(3):
            url, sha, size = meta(media, f"f{i}.mp3")
            path, fresh = await cache.fetch(client, url, sha, size)
            assert fresh and path.read_bytes() == (media.root / f"f{i}.mp3").read_bytes()
            shas.append(sha)
            os.utime(path, (time.time() - 100 + i, time.time() - 100 + i))
        cache.touch(shas[0])  # f0 was just played again: f1 is now the oldest
        cache.in_use.add(shas[1])  # ...but f1 is playing right now
        url, sha, size = meta(media, "f3.mp3")
        await cache.fetch(client, url, sha, size)
        assert cache.has(shas[0]) and cache.has(shas[1]) and cache.has(sha)
        assert not cache.has(shas[2])
        # A cached file is not downloaded again.
        before = len(media.requests)
        _, fresh = await cache.fetch(client, *meta(media, "f3.mp3"))
        assert not fresh and len(media.requests) == before


async def test_bad_content_leaves_nothing_in_the_cache(tmp_path, media):
    make_audio(media.root / "ok.mp3", seconds=0.5)
    (media.root / "text.mp3").write_bytes(b"<html>not audio</html>" * 50)
    cache = ContentCache(tmp_path / "cache", max_bytes=10_000_000)
    async with httpx.AsyncClient() as client:
        url, _, size = meta(media, "ok.mp3")
        with pytest.raises(FetchError) as err:
            await cache.fetch(client, url, "a" * 64, size)
        assert err.value.error == "checksum"
        with pytest.raises(FetchError) as err:
            await cache.fetch(client, *meta(media, "text.mp3"))
        assert err.value.error == "not_audio"
        with pytest.raises(FetchError) as err:
            await cache.fetch(client, media.base + "missing.mp3", "b" * 64, 10)
        assert err.value.error == "download" and "404" in err.value.detail
    assert list(cache.root.rglob("*.audio")) == [] and list(cache.partial.iterdir()) == []
