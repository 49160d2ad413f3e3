"""The ``loa`` command.

Each package adds its subcommands from a module listed in ``COMMAND_MODULES`` that defines
``register(subparsers)``; each registered parser sets ``func(args) -> int``. Bad arguments
exit 2 with argparse's message; domain errors exit 1 with a Vietnamese message on stderr."""

from __future__ import annotations

import argparse
import sys

from loa.modules import import_optional

COMMAND_MODULES = (
    "loa.commands",
    "controller.registry.cli",
    "firmware_sim.cli",
    "broadcasts.cli",
    "scheduler.cli",
    "controller.indicator.cli",
    "dashboard.cli",
    "controller.provision",
    "node_agent.cli",
    "alerts.cli",  # CAP emergency alerts (issue 19)
)


class UserError(Exception):
    """An error the user can fix; printed without a traceback."""


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="loa", description="Loa — điều khiển và giám sát đài truyền thanh IP cấp xã")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module = import_optional(name)
        if module is not None:
            module.register(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        # A loudspeaker board has only the node agent's libraries: do not import the
        # controller's modules (and their server dependencies) to parse its command line.
        node_cli = import_optional("node_agent.cli")
        if node_cli is not None:
            return int(node_cli.main(argv[1:]) or 0)
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except UserError as exc:
        print(f"Lỗi: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
