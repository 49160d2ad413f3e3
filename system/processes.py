"""Process-level commands: ``loa broker``, ``loa controller``, ``loa serve``, ``loa demo``.

``loa demo`` is the embedded default in one command: broker, controller, API and web UI,
and a simulated commune fleet, on loopback, with no internet and no Docker.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import subprocess
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import uvicorn

from loa.broker import EmbeddedBroker
from loa.db import Database, open_database
from loa.loopwatch import settle_for_latency, watch_loop_from_settings
from loa.settings import Settings
from system.root import System

log = logging.getLogger("loa")


def _settings(args: argparse.Namespace) -> Settings:
    overrides: dict[str, Any] = {}
    for name in ("data_dir", "database_url", "mqtt_host", "mqtt_port", "http_port", "http_host"):
        value = getattr(args, name, None)
        if value not in (None, ""):
            overrides[name] = Path(value) if name == "data_dir" else value
    return Settings(**overrides)


def _add_common(p: argparse.ArgumentParser, *, http: bool = False, mqtt: bool = True) -> None:
    p.add_argument("--data-dir", help="thư mục dữ liệu (mặc định ./var)")
    p.add_argument("--database-url", help="sqlite:///… hoặc postgresql+psycopg://…")
    if mqtt:
        p.add_argument("--mqtt-host")
        p.add_argument("--mqtt-port", type=int)
    if http:
        p.add_argument("--http-host")
        p.add_argument("--http-port", type=int)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("broker", help="chạy broker MQTT nhúng (mosquitto hoặc amqtt)")
    p.add_argument("--port", type=int, default=1883)
    p.add_argument("--kind", choices=["auto", "mosquitto", "amqtt"], default="auto")
    p.add_argument("--data-dir", default="var/broker")
    p.set_defaults(func=cmd_broker)

    p = sub.add_parser("controller", help="chạy bộ điều khiển (ingest, sức khỏe, điều phối)")
    _add_common(p)
    p.set_defaults(func=cmd_controller)

    p = sub.add_parser("serve", help="chạy bộ điều khiển và giao diện web/API")
    _add_common(p, http=True)
    p.add_argument("--no-controller", action="store_true", help="chỉ chạy API")
    p.set_defaults(func=cmd_serve)

    p = sub.add_parser("demo", help="chạy toàn bộ hệ thống mẫu trên một máy")
    _add_common(p, http=True, mqtt=False)
    p.add_argument("--mqtt-port", type=int, default=0, help="cổng MQTT (mặc định: tự chọn)")
    p.add_argument("--broker", choices=["auto", "mosquitto", "amqtt"], default="auto")
    p.add_argument("--no-sim", action="store_true", help="không chạy đội cụm loa mô phỏng")
    p.add_argument("--history-days", type=int, default=90)
    p.set_defaults(func=cmd_demo)


def _logging() -> None:
    logging.basicConfig(
        level=os.environ.get("LOA_LOG_LEVEL", "INFO"),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def cmd_broker(args: argparse.Namespace) -> int:
    _logging()
    broker = EmbeddedBroker(port=args.port, kind=args.kind, data_dir=Path(args.data_dir))
    broker.start()
    print(f"Broker {broker.kind} đang chạy tại mqtt://{broker.host}:{broker.port} (Ctrl-C để dừng)")
    try:
        signal.sigwait({signal.SIGINT, signal.SIGTERM})
    finally:
        broker.stop()
    return 0


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def _run(
    settings: Settings,
    *,
    http: bool,
    controller: bool,
    on_ready: Callable[[System], Awaitable[None]] | None = None,
    on_stop: Callable[[], None] | None = None,
) -> None:
    """Build the process (``System``), start it, serve HTTP, run until a signal, stop."""
    watch = await watch_loop_from_settings(settings.loop_stall_warn_ms)
    system = System(settings, controller=controller, http=http)
    await system.start()
    settle_for_latency()  # once started: GIL switch interval, GC freeze and thresholds
    server: uvicorn.Server | None = None
    serving: asyncio.Task[None] | None = None
    try:
        if system.app is not None:
            config = uvicorn.Config(
                system.app,
                host=settings.http_host,
                port=settings.http_port,
                log_level="warning",
                lifespan="on",
                **settings.proxy_options(),  # type: ignore[arg-type]
                # An open live-stream tab must not hold up Ctrl-C.
                timeout_graceful_shutdown=3,
            )
            server = uvicorn.Server(config)
            server.install_signal_handlers = lambda: None  # type: ignore[method-assign]
            serving = asyncio.create_task(server.serve())
            while not server.started:
                if serving.done():
                    serving.result()
                await asyncio.sleep(0.05)
        if on_ready is not None:
            await on_ready(system)
        await _until_signal()
    finally:
        print("\nĐang dừng…", flush=True)
        if on_stop is not None:
            await asyncio.to_thread(on_stop)
        if server is not None and serving is not None:
            server.should_exit = True
            with contextlib.suppress(Exception):
                await asyncio.wait_for(serving, 10)
        await system.stop()
        if watch is not None:
            await watch.stop()


def _secret_is_safe(settings: Settings) -> bool:
    """False (and the reason on stderr) when the secret is a published example; the demo,
    which never leaves loopback, does not ask."""
    from loa.settings import InsecureSettingError

    try:
        settings.check_secret_key()
    except InsecureSettingError as exc:
        print(f"Lỗi: {exc}", file=sys.stderr)
        return False
    return True


def cmd_controller(args: argparse.Namespace) -> int:
    _logging()
    settings = _settings(args)
    if not _secret_is_safe(settings):
        return 1
    asyncio.run(_run(settings, http=False, controller=True))
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    _logging()
    settings = _settings(args)
    if not _secret_is_safe(settings):
        return 1
    print(f"Loa: http://{settings.http_host}:{settings.http_port}/")
    asyncio.run(_run(settings, http=True, controller=not args.no_controller))
    return 0


def _seed_demo(db: Database, settings: Settings, history_days: int) -> list[str]:
    """Load the demo province, its history and accounts; return lines to print."""
    lines = []
    from dashboard.security import ensure_demo_accounts
    from indicator.demo_history import seed_history
    from registry.demo import load_demo_province

    summary = load_demo_province(db)
    lines.append(f"Tỉnh mẫu: {summary.text()}")
    if history_days > 0:
        from loa.timeutil import now_ms

        seeded = seed_history(db, days=history_days, now_ms=now_ms())
        lines.append(seeded.text())
    ensure_demo_accounts(db)
    lines.append(
        "Tài khoản mẫu (mật khẩu: demo): province (tỉnh), technician (kỹ thuật "
        "viên), commune (cán bộ văn hóa xã)"
    )
    return lines


def cmd_demo(args: argparse.Namespace) -> int:
    _logging()
    logging.getLogger("loa.ingest").setLevel(logging.WARNING)
    settings = _settings(args)
    if not args.data_dir:
        settings.data_dir = Path("var/demo")
    settings.data_dir.mkdir(parents=True, exist_ok=True)
    broker = EmbeddedBroker(
        port=args.mqtt_port or 0, kind=args.broker, data_dir=settings.data_dir / "broker"
    )
    broker.start()
    settings.mqtt_port = broker.port
    settings.public_base_url = settings.public_base_url or (
        f"http://{settings.http_host}:{settings.http_port}"
    )
    db = open_database(settings)
    for line in _seed_demo(db, settings, args.history_days):
        print(line, flush=True)
    db.dispose()
    sim: subprocess.Popen | None = None

    async def ready(_system: System) -> None:
        nonlocal sim
        if not args.no_sim:
            sim = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "system",
                    "sim",
                    "--from-registry",
                    "--db",
                    settings.resolved_database_url(),
                    "--mqtt-host",
                    settings.mqtt_host,
                    "--mqtt-port",
                    str(broker.port),
                ],
                stdout=sys.stdout,
                stderr=sys.stderr,
                start_new_session=True,
            )
        base = f"http://{settings.http_host}:{settings.http_port}"
        print(
            f"\nLoa đang chạy.\n  Bảng điều khiển: {base}/\n  API: {base}/docs\n"
            f"  MQTT: mqtt://{broker.host}:{broker.port} (broker {broker.kind})\n"
            "  Đăng nhập: province / technician / commune, mật khẩu: demo\n"
            "Nhấn Ctrl-C để dừng.",
            flush=True,
        )

    def stop_sim() -> None:
        """Nodes shut down cleanly (status "shutdown") while broker and controller still run."""
        if sim is not None and sim.poll() is None:
            sim.send_signal(signal.SIGTERM)
            try:
                sim.wait(15)
            except subprocess.TimeoutExpired:
                sim.kill()

    try:
        asyncio.run(_run(settings, http=True, controller=True, on_ready=ready, on_stop=stop_sim))
    finally:
        stop_sim()
        broker.cleanup()
        print("Đã dừng.", flush=True)
    return 0
