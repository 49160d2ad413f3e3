"""``loa sim``: run a simulated fleet against a broker until Ctrl-C / SIGTERM.

Examples::

    loa sim --nodes 1000 --mqtt-port 1883
    loa sim --from-registry --kill-after sim-0003:60 --clock-offset-ms 4000
    loa sim --nodes 20 --fault sim-0004:amp_fault sim-0007:speaker_line=1
    loa sim --virtual 100000 --connections 40 --heartbeat-s 30 --prefix v

``--virtual`` is the multiplexed ingest-load mode (``firmware_sim.multiplex``): many virtual
nodes share a few connections, so they have no per-node Last Will and take no commands.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import socket
import sys
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from firmware_sim.faults import FaultSpec, parse_fault
from firmware_sim.fleet import Fleet, NodeSpec, _n, generate_node_ids
from firmware_sim.multiplex import (
    DEFAULT_ANNOUNCE_RATE,
    DEFAULT_CONNECTIONS,
    VirtualFleet,
    VirtualFleetStats,
)
from loa.credentials import CredentialsFileError, load_node_passwords
from loa.db import Database
from loa.errors import UserError
from loa.files import write_json_atomically
from loa.protocol import NODE_ID_RE, Topics

DEFAULT_NODES = 10
DEFAULT_CONNECT_RATE = 200.0


def register(
    subparsers: argparse._SubParsersAction,
    *,
    registry_nodes: Callable[[Database], list[NodeSpec]] | None = None,
) -> None:
    """``registry_nodes`` reads the simulated clusters of a registry (``--from-registry``);
    the simulator stands on the protocol alone, so the composition root lends it."""
    p = subparsers.add_parser(
        "sim",
        help="chạy các cụm loa mô phỏng theo giao thức Loa",
        description="Chạy nhiều cụm loa mô phỏng (mỗi cụm một kết nối MQTT) cho tới khi "
        "nhấn Ctrl-C hoặc nhận SIGTERM, rồi dừng sạch.",
    )
    source = p.add_mutually_exclusive_group()
    source.add_argument(
        "--nodes",
        type=_positive_int,
        metavar="N",
        help=f"số cụm loa tự sinh mã (mặc định {DEFAULT_NODES})",
    )
    source.add_argument(
        "--from-registry",
        action="store_true",
        help="lấy các cụm có simulated=True trong sổ đăng ký",
    )
    source.add_argument(
        "--virtual",
        type=_positive_int,
        metavar="N",
        help="chế độ tải ingest: N cụm loa ảo dùng chung vài kết nối MQTT "
        "(--connections); không có di chúc riêng từng cụm, không nhận lệnh",
    )
    p.add_argument("--db", metavar="URL", help="CSDL của sổ đăng ký (mặc định LOA_DATABASE_URL)")
    p.add_argument("--mqtt-host", metavar="H", help="máy chủ MQTT (mặc định LOA_MQTT_HOST)")
    p.add_argument(
        "--mqtt-port", type=_port, metavar="P", help="cổng MQTT (mặc định LOA_MQTT_PORT)"
    )
    p.add_argument(
        "--heartbeat-s",
        type=_positive_float,
        metavar="S",
        help="chu kỳ nhịp tim, giây (mặc định LOA_HEARTBEAT_S hoặc theo sổ đăng ký)",
    )
    p.add_argument(
        "--keepalive-s",
        type=_positive_int,
        metavar="S",
        help="keepalive MQTT, giây (mặc định LOA_KEEPALIVE_S)",
    )
    p.add_argument(
        "--kill-after",
        action="extend",
        nargs="+",
        default=[],
        metavar="NODE:SECONDS",
        help="ngắt đột ngột cụm NODE sau SECONDS giây (broker phát di chúc 'lost')",
    )
    p.add_argument(
        "--fault",
        action="extend",
        nargs="+",
        default=[],
        metavar="NODE:FAULT[=VALUE]",
        help="gây lỗi cho cụm NODE khi đã kết nối: amp_fault, speaker_line[=số đường "
        "hỏng], power_cut, weak_signal[=dBm], clock_offset[=ms]",
    )
    p.add_argument(
        "--clock-offset-ms",
        type=int,
        default=0,
        metavar="N",
        help="lệch đồng hồ của mọi cụm, mili giây (mô phỏng lỗi NTP)",
    )
    p.add_argument(
        "--connect-rate",
        type=_positive_float,
        metavar="R",
        help=f"số cụm kết nối mỗi giây khi khởi động (mặc định "
        f"{DEFAULT_CONNECT_RATE:g}; với --virtual: số cụm ảo báo trực tuyến "
        f"mỗi giây, mặc định "
        f"{DEFAULT_ANNOUNCE_RATE:g})",
    )
    p.add_argument(
        "--connections",
        type=_positive_int,
        metavar="C",
        help=f"với --virtual: số kết nối MQTT chở các cụm ảo (mặc định {DEFAULT_CONNECTIONS})",
    )
    p.add_argument(
        "--stats-file",
        metavar="PATH",
        help="với --virtual: ghi số liệu (nhịp tim đã gửi, tốc độ, độ trễ so với lịch) "
        "ra tệp JSON này mỗi giây và khi dừng",
    )
    p.add_argument("--mqtt-version", choices=["3.1.1", "5"], default="3.1.1")
    p.add_argument("--prefix", default="sim", help="tiền tố mã cụm tự sinh (mặc định 'sim')")
    p.add_argument(
        "--shard",
        type=_shard,
        metavar="K/N",
        help="chỉ chạy phần thứ K (0..N-1) trong N phần của đội, để chia một đội "
        "lớn cho nhiều tiến trình (mỗi nhân CPU một tiến trình)",
    )
    p.add_argument(
        "--run-for",
        type=_positive_float,
        metavar="SECONDS",
        help="tự dừng sau SECONDS giây (mặc định: chạy đến khi Ctrl-C)",
    )
    p.add_argument(
        "--credentials",
        metavar="CSV",
        help="credentials.csv của 'loa nodes provision': mật khẩu MQTT từng cụm, "
        "cho broker bắt buộc mật khẩu và ACL",
    )
    p.set_defaults(func=run, registry_nodes=registry_nodes)


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cần một số nguyên dương, nhận '{text}'") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"cần một số nguyên dương, nhận '{text}'")
    return value


def _positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"cần một số dương, nhận '{text}'") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"cần một số dương, nhận '{text}'")
    return value


def _port(text: str) -> int:
    value = _positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"cổng phải trong khoảng 1-65535, nhận '{text}'")
    return value


def _shard(text: str) -> tuple[int, int]:
    k, sep, n = text.partition("/")
    try:
        shard = int(k), int(n)
    except ValueError:
        shard = (-1, 0)
    if not sep or not 0 <= shard[0] < shard[1]:
        raise argparse.ArgumentTypeError(f"cần dạng K/N với 0 <= K < N (ví dụ 0/2), nhận '{text}'")
    return shard


def take_shard(specs: list[NodeSpec], shard: tuple[int, int] | None) -> list[NodeSpec]:
    """Every N-th node starting at K: shards of one fleet are disjoint and cover it."""
    if shard is None:
        return specs
    k, n = shard
    return specs[k::n]


def parse_kill_after(items: list[str], known: set[str]) -> list[tuple[str, float]]:

    plan = []
    for item in items:
        node_id, sep, secs = item.rpartition(":")
        try:
            delay = float(secs) if sep else -1.0
        except ValueError:
            delay = -1.0
        if not sep or not node_id or delay < 0:
            raise UserError(f"--kill-after cần dạng MÃ_CỤM:GIÂY (ví dụ sim-0003:60), nhận '{item}'")
        if node_id not in known:
            raise UserError(f"--kill-after: không có cụm loa '{node_id}' trong đội mô phỏng")
        plan.append((node_id, delay))
    return plan


def parse_faults(items: list[str], known: set[str]) -> list[tuple[str, FaultSpec]]:

    plan = []
    for item in items:
        node_id, sep, fault = item.partition(":")
        if not sep or not node_id or not fault:
            raise UserError(
                f"--fault cần dạng MÃ_CỤM:LỖI[=GIÁ_TRỊ] (ví dụ sim-0004:amp_fault), nhận '{item}'"
            )
        if node_id not in known:
            raise UserError(f"--fault: không có cụm loa '{node_id}' trong đội mô phỏng")
        try:
            plan.append((node_id, parse_fault(fault)))
        except ValueError as exc:
            raise UserError(f"--fault: {exc}") from None
    return plan


def _load_specs(args: argparse.Namespace, settings) -> list[NodeSpec]:

    if args.from_registry:
        from sqlalchemy.exc import SQLAlchemyError

        if args.registry_nodes is None:
            raise UserError("--from-registry không dùng được ở bản cài này (thiếu sổ đăng ký)")
        url = args.db or settings.resolved_database_url()
        db = Database(url)
        try:
            specs = args.registry_nodes(db)
        except SQLAlchemyError as exc:
            raise UserError(
                f"Không đọc được sổ đăng ký tại {url}: {str(exc).splitlines()[0][:200]}"
            ) from None
        finally:
            db.dispose()
        if not specs:
            raise UserError(
                "Sổ đăng ký không có cụm loa mô phỏng nào (simulated=True). "
                "Hãy nhập sổ đăng ký trước hoặc dùng --nodes N."
            )
        bad = [s.node_id for s in specs if not NODE_ID_RE.match(s.node_id)]
        if bad:
            raise UserError(f"Mã cụm loa không hợp lệ trong sổ đăng ký: {', '.join(bad[:5])}")
        if args.heartbeat_s:
            specs = [replace(s, heartbeat_s=args.heartbeat_s) for s in specs]
        return specs
    return [NodeSpec(i) for i in generate_node_ids(args.nodes or DEFAULT_NODES, args.prefix)]


def _load_passwords(path: str, known: set[str]) -> dict[str, str]:

    try:
        passwords = load_node_passwords(Path(path))
    except CredentialsFileError as exc:
        raise UserError(str(exc)) from None
    missing = sorted(known - set(passwords))
    if missing:
        raise UserError(
            f"--credentials: thiếu mật khẩu của {len(missing)} cụm loa, ví dụ "
            f"{', '.join(missing[:5])} (chạy lại 'loa nodes provision')"
        )
    return passwords


def _check_broker(host: str, port: int) -> None:

    try:
        with socket.create_connection((host, port), timeout=3):
            pass
    except OSError as exc:
        raise UserError(
            f"Không kết nối được broker MQTT {host}:{port} ({exc.strerror or exc}). "
            f"Hãy chạy 'loa broker' hoặc chỉ đúng --mqtt-host/--mqtt-port."
        ) from None


def run(args: argparse.Namespace) -> int:
    from loa.settings import get_settings

    settings = get_settings()
    if args.virtual:
        return run_virtual(args, settings)
    if args.connections or args.stats_file:
        raise UserError("--connections và --stats-file chỉ dùng với --virtual N")
    specs = take_shard(_load_specs(args, settings), args.shard)
    if not specs:
        raise UserError(f"Phần {args.shard[0]}/{args.shard[1]} không có cụm loa nào")
    known = {s.node_id for s in specs}
    kills = parse_kill_after(args.kill_after, known)
    faults = parse_faults(args.fault, known)
    passwords = _load_passwords(args.credentials, known) if args.credentials else None
    host = args.mqtt_host or settings.mqtt_host
    port = args.mqtt_port or settings.mqtt_port
    _check_broker(host, port)
    fleet = Fleet(
        host,
        port,
        topics=Topics(settings.topic_root),
        heartbeat_s=args.heartbeat_s or settings.heartbeat_s,
        keepalive_s=args.keepalive_s or settings.keepalive_s,
        connect_rate=args.connect_rate or DEFAULT_CONNECT_RATE,
        clock_offset_ms=args.clock_offset_ms,
        mqtt_version=5 if args.mqtt_version == "5" else 4,
        passwords=passwords,
    )
    summary = asyncio.run(_serve(fleet, specs, kills, faults, args.run_for, f"{host}:{port}"))
    print(summary, flush=True)
    return 0


async def _serve(
    fleet: Fleet,
    specs: list[NodeSpec],
    kills: list[tuple[str, float]],
    faults: list[tuple[str, FaultSpec]],
    run_for: float | None,
    where: str,
) -> str:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    starting = asyncio.create_task(fleet.start(specs))
    background: set[asyncio.Task] = set()

    def _kill(node_id: str) -> None:
        task = asyncio.create_task(fleet.kill(node_id))
        background.add(task)
        task.add_done_callback(background.discard)

    for node_id, delay in kills:
        loop.call_later(delay, _kill, node_id)
    done, _ = await asyncio.wait(
        {starting, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    if starting in done:
        connected = starting.result()
        for node_id, spec in faults:
            fleet.inject(node_id, spec.fault, spec.value)
        print(
            f"Đang chạy {len(specs):,} cụm loa mô phỏng ({connected:,} đã kết nối) tới broker "
            f"{where}; nhấn Ctrl-C để dừng.".replace(",", "."),
            file=sys.stderr,
            flush=True,
        )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(run_for):
            await stop.wait()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await starting
    if background:
        await asyncio.gather(*background, return_exceptions=True)
    before_stop = fleet.summary()
    await fleet.stop()
    return before_stop.vietnamese(stopped=True)


# ---------------------------------------------------------------------- --virtual (multiplex)


def run_virtual(args: argparse.Namespace, settings) -> int:
    """``loa sim --virtual N``: the multiplexed ingest-load mode (see firmware_sim.multiplex)."""

    refused = [
        flag
        for flag, given in (
            ("--kill-after", args.kill_after),
            ("--fault", args.fault),
            ("--credentials", args.credentials),
        )
        if given
    ]
    if refused:
        raise UserError(
            f"{', '.join(refused)} không dùng được với --virtual: cụm loa ảo dùng "
            f"chung kết nối nên không có di chúc, lỗi phần cứng hay mật khẩu riêng. "
            f"Hãy dùng --nodes N."
        )
    ids = generate_node_ids(args.virtual, args.prefix)
    if args.shard is not None:
        k, n = args.shard
        ids = ids[k::n]
        if not ids:
            raise UserError(f"Phần {k}/{n} không có cụm loa ảo nào")
    bad = [i for i in ids[:1] if not NODE_ID_RE.match(i)]
    if bad:
        raise UserError(
            f"--prefix '{args.prefix}' cho mã cụm không hợp lệ ({bad[0]}): chỉ dùng A-Z a-z 0-9 _ -"
        )
    host = args.mqtt_host or settings.mqtt_host
    port = args.mqtt_port or settings.mqtt_port
    _check_broker(host, port)
    fleet = VirtualFleet(
        host,
        port,
        ids,
        connections=args.connections or DEFAULT_CONNECTIONS,
        heartbeat_s=args.heartbeat_s or settings.heartbeat_s,
        topics=Topics(settings.topic_root),
        keepalive_s=args.keepalive_s or settings.keepalive_s,
        announce_rate=args.connect_rate or DEFAULT_ANNOUNCE_RATE,
        mqtt_version=5 if args.mqtt_version == "5" else 4,
        clock_offset_ms=args.clock_offset_ms,
        client_prefix=args.prefix,
    )
    stats_file = Path(args.stats_file) if args.stats_file else None
    stats, failure = asyncio.run(_serve_virtual(fleet, args.run_for, stats_file, f"{host}:{port}"))
    print(stats.vietnamese(), flush=True)
    if failure is not None:
        raise UserError(f"Không khởi động được đội cụm loa ảo: {failure}")
    return 0


async def _serve_virtual(
    fleet: VirtualFleet, run_for: float | None, stats_file: Path | None, where: str
) -> tuple[VirtualFleetStats, BaseException | None]:
    """Run until a signal or ``run_for``; the final figures, and why start-up failed if it
    did (the nodes already announced are still shut down cleanly)."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)

    async def report() -> None:
        while True:
            write_json_atomically(stats_file, fleet.stats().as_dict())
            await asyncio.sleep(1.0)

    reporter = asyncio.create_task(report()) if stats_file else None
    starting = asyncio.create_task(fleet.start())
    done, _ = await asyncio.wait(
        {starting, asyncio.create_task(stop.wait())}, return_when=asyncio.FIRST_COMPLETED
    )
    failure = starting.exception() if starting in done else None
    if failure is not None:
        stop.set()
    elif starting in done:
        s = fleet.stats()
        print(
            f"Đang chạy {_n(s.nodes)} cụm loa ảo trên {s.connections} kết nối tới broker "
            f"{where} ({_n(s.announced)} đã báo trực tuyến); nhấn Ctrl-C để dừng.",
            file=sys.stderr,
            flush=True,
        )
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(run_for):
            await stop.wait()
    starting.cancel()
    with contextlib.suppress(asyncio.CancelledError, Exception):
        await starting
    await fleet.stop()
    if reporter is not None:
        reporter.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reporter
    final = fleet.stats()
    if stats_file is not None:
        write_json_atomically(stats_file, final.as_dict())
    return final, failure
