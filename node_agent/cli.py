"""``loa node run`` and ``loa node check``.

``system.cli`` hands ``loa node …`` straight to ``main`` here before it builds its own parser,
so on a board only this package, ``loa/`` and the node's four libraries are imported: no
controller, no database, no web server."""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys

from node_agent import config as node_config


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="loa node", description="Phần mềm cụm loa: nhận lệnh từ đài xã và phát ra loa"
    )
    sub = p.add_subparsers(dest="node_command", metavar="LỆNH")
    run = sub.add_parser(
        "run",
        help="chạy cụm loa (dịch vụ loa-node)",
        description="Kết nối broker MQTT, nhận lệnh phát và phát ra loa.",
    )
    node_config.add_arguments(run)
    run.add_argument("--log-level", default="INFO", help="mức ghi nhật ký (mặc định INFO)")
    run.set_defaults(func=cmd_run)
    check = sub.add_parser(
        "check",
        help="kiểm tra cấu hình, broker, âm thanh, đồng hồ",
        description="Kiểm tra từng phần và nói bằng tiếng Việt cái gì chạy, "
        "cái gì không; mã thoát khác 0 khi có lỗi.",
    )
    node_config.add_arguments(check)
    check.add_argument(
        "--no-sound", action="store_true", help="không phát âm thử (chỉ mở thiết bị âm thanh)"
    )
    check.set_defaults(func=cmd_check)
    return p


def register(subparsers: argparse._SubParsersAction) -> None:
    """So ``loa --help`` lists ``node``; the actual dispatch is ``main`` (see system/cli.py)."""
    p = subparsers.add_parser(
        "node", help="phần mềm cụm loa thật (loa node run/check)", add_help=False
    )
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=lambda args: main(args.rest))


def load_config(args: argparse.Namespace) -> node_config.NodeConfig:
    return node_config.load(args.config, flags=node_config.flags_from_args(args)).validate()


def cmd_run(args: argparse.Namespace) -> int:
    from node_agent.agent import Agent

    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    cfg = load_config(args)
    return asyncio.run(Agent(cfg).run())


def cmd_check(args: argparse.Namespace) -> int:
    from node_agent.check import run_checks

    cfg = load_config(args)
    return asyncio.run(run_checks(cfg, sound=not args.no_sound))


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except node_config.ConfigError as exc:
        print(f"Lỗi cấu hình: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
