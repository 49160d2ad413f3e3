"""The ``loa`` command.

Each package's command module defines ``register(subparsers, …)``; this file imports each one
by name and hands it what it borrows from other packages (the simulator's registry source,
the content retention's "still in use"), so every dependency between commands is visible
here. Each registered parser sets ``func(args) -> int``. Bad arguments exit 2 with
argparse's message; domain errors exit 1 with a Vietnamese message on stderr."""

from __future__ import annotations

import argparse
import sys

from loa.errors import UserError


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: ``loa node`` on a loudspeaker board has only the node
    # agent's libraries and must not import the server's.
    import alerts.cli
    import broadcasts.cli
    import controller.provision
    import dashboard.cli
    import firmware_sim.cli
    import indicator.cli
    import node_agent.cli
    import registry.cli
    import scheduler.cli
    from scheduler.lifecycle import content_in_use
    from system import processes
    from system.root import command_services
    from system.schema import import_all_models
    from system.simulation import simulated_nodes

    # Every command that creates tables creates all of them.
    import_all_models()
    parser = argparse.ArgumentParser(
        prog="loa", description="Loa — điều khiển và giám sát đài truyền thanh IP cấp xã"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    processes.register(sub)
    registry.cli.register(sub)
    firmware_sim.cli.register(sub, registry_nodes=simulated_nodes)
    broadcasts.cli.register(sub, content_in_use=content_in_use)
    scheduler.cli.register(sub, broadcast_service=lambda: command_services().broadcasts)
    # The period's emergency alerts in its evidence folder and report (issue 19, item 6).
    from alerts.evidence import period_checks, period_lines, period_tables

    indicator.cli.register(
        sub, period_tables=period_tables, period_alerts=period_lines, period_checks=period_checks
    )
    dashboard.cli.register(sub)
    controller.provision.register(sub)
    node_agent.cli.register(sub)
    alerts.cli.register(sub, alert_service=lambda: command_services().alerts)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["node"]:
        # A loudspeaker board: the node agent alone, without the controller's modules.
        import node_agent.cli

        return int(node_agent.cli.main(argv[1:]) or 0)
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
