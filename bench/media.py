"""Where a fleet-wide emergency's time goes: what one node's audio download costs.

Every node fetches the audio from the content server before it starts (issue 19's 5,000-node
alert never reached 99 %, and the bare publish took 91 s). This measures, in the same run
and on the same file:

1. ``/media``: the authenticated node download route (node row, HMAC token, Range/ETag,
   ``FileResponse``) in its own uvicorn process, as ``bench/alert.py`` serves it;
2. *baseline*: the same file served by a bare Starlette ``StaticFiles`` app in another
   uvicorn process (no token, no database): what any Python web process costs per request;

each for a short spoken alert (~3 s of speech) and a long one (~30 s), N downloads with 64 in
flight from one asyncio client that reads and hashes each body as ``firmware_sim`` does.
Figures: wall time per download, server CPU per download (psutil on the worker), client CPU
per download.

    .venv/bin/python bench/media.py --downloads 100     # smoke, seconds
    .venv/bin/python bench/media.py --downloads 2000
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench._common import machine, write_result  # noqa: E402
from loa.broker import free_port  # noqa: E402
from loa.db import Database  # noqa: E402
from loa.settings import Settings  # noqa: E402
from system.schema import create_schema  # noqa: E402

_spec = importlib.util.spec_from_file_location(
    "bench_dispatch", Path(__file__).with_name("dispatch.py")
)
dispatch = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(dispatch)  # type: ignore[union-attr]


def static_worker(directory: str, port: int) -> None:
    """The baseline: the same files from a bare Starlette static app."""
    import uvicorn
    from starlette.applications import Starlette
    from starlette.routing import Mount
    from starlette.staticfiles import StaticFiles

    dispatch._exit_with_parent()
    app = Starlette(routes=[Mount("/static", StaticFiles(directory=directory))])
    uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)


def spawn_static(directory: Path, port: int) -> subprocess.Popen:
    proc = subprocess.Popen(
        [sys.executable, __file__, "--static-worker", str(directory), str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    return proc


async def fetch_all(urls: list[str], pid: int) -> dict:
    import httpx
    import psutil

    server, me = psutil.Process(pid), psutil.Process()
    sem = asyncio.Semaphore(64)

    def cpu(p) -> float:
        t = p.cpu_times()
        return t.user + t.system

    async with httpx.AsyncClient(
        limits=httpx.Limits(max_connections=None, max_keepalive_connections=64), timeout=60
    ) as client:
        errors: dict[str, int] = {}

        async def one(url: str) -> None:
            # A node retries a failed download (firmware_sim.fetch); so does this client,
            # and counts what failed, so a server that drops connections shows in the figures.
            for _attempt in range(3):
                async with sem:
                    try:
                        r = await client.get(url)
                        r.raise_for_status()
                    except httpx.HTTPError as exc:
                        errors[type(exc).__name__] = errors.get(type(exc).__name__, 0) + 1
                        continue
                    hashlib.sha256(r.content).hexdigest()
                    return
            errors["gave_up"] = errors.get("gave_up", 0) + 1

        await one(urls[0])  # warm
        errors.clear()
        s0, c0, t0 = cpu(server), cpu(me), time.monotonic()
        await asyncio.gather(*(one(u) for u in urls))
        t1, s1, c1 = time.monotonic(), cpu(server), cpu(me)
    n = len(urls)
    return {
        "downloads": n,
        "wall_s": round(t1 - t0, 2),
        "wall_per_download_ms": round(1000 * (t1 - t0) / n, 2),
        "server_cpu_per_download_ms": round(1000 * (s1 - s0) / n, 2),
        "client_cpu_per_download_ms": round(1000 * (c1 - c0) / n, 2),
        "errors": errors,
    }


async def run(downloads: int) -> dict:
    from broadcasts.store import ContentStore
    from firmware_sim.fleet import generate_node_ids
    from scheduler.content import ContentGateway

    tmp = Path(tempfile.mkdtemp(prefix="loa-bench-media-"))
    db = Database(f"sqlite:///{tmp / 'loa.db'}")
    create_schema(db)
    ids = generate_node_ids(downloads, dispatch.PREFIX)
    dispatch.build_registry(db, ids)
    port, static_port = free_port(), free_port()
    settings = Settings(
        data_dir=tmp / "data",
        database_url=db.url,
        http_port=port,
        public_base_url=f"http://127.0.0.1:{port}",
        secret_key="bench-secret",
    )
    store = ContentStore(settings, db)
    gateway = ContentGateway(store)
    static_dir = tmp / "static"
    static_dir.mkdir()
    items = {}
    for label, seconds in (("short_3s", 3), ("long_30s", 30)):
        wav = tmp / f"{label}.wav"
        subprocess.run(
            ["ffmpeg", "-v", "error", "-f", "lavfi", "-i"]
            + [f"sine=frequency=660:duration={seconds}", "-ar", "22050", str(wav)],
            check=True,
        )
        meta = store.add_file(
            wav, filename=wav.name, title=label, language="vi", source="upload", chime=False
        )
        (static_dir / f"{label}.mp3").write_bytes(store.path(meta.id).read_bytes())
        items[label] = meta
    media = dispatch.spawn(
        "--content-worker", db.url, str(settings.data_dir), str(port), "bench-secret"
    )
    static = spawn_static(static_dir, static_port)
    out: dict = {"downloads": downloads}
    try:
        dispatch.wait_port(port)
        dispatch.wait_port(static_port)
        for label, meta in items.items():
            urls = gateway.node_urls(meta.id, ids, settings.public_base_url)
            out[label] = {
                "bytes": meta.bytes,
                "media": await fetch_all([urls[n] for n in ids], media.pid),
                "baseline_static": await fetch_all(
                    [f"http://127.0.0.1:{static_port}/static/{label}.mp3"] * downloads,
                    static.pid,
                ),
            }
            dispatch.log(f"{label}: {json.dumps(out[label])}")
    finally:
        dispatch.stop_proc(media)
        dispatch.stop_proc(static)
        db.dispose()
    return out


def main() -> int:
    if len(sys.argv) > 1 and sys.argv[1] == "--static-worker":
        static_worker(sys.argv[2], int(sys.argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--downloads", type=int, default=100)
    parser.add_argument("--name", default="media", help="bench/results/NAME.json")
    args = parser.parse_args()
    result = {
        "benchmark": "media",
        **machine(),
        "command": f"python bench/media.py --downloads {args.downloads}",
        **asyncio.run(run(args.downloads)),
    }
    path = write_result(args.name, result)
    print(json.dumps(result, indent=2, ensure_ascii=False))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
