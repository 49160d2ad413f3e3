"""``loa schedule``: look at and manage the broadcast schedule from a terminal (acting as the
province), and preview what a recurrence rule means before an officer relies on it.

    loa schedule preview "FREQ=WEEKLY;BYDAY=MO,TH" --start "01/03/2025 06:00" -n 7
    loa schedule list [--status scheduled]
    loa schedule show 12
    loa schedule cancel 12
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable

from loa.errors import UserError
from scheduler.errors import ScheduleError
from scheduler.targets import Actor
from scheduler.workflow import BroadcastService


def register(
    subparsers: argparse._SubParsersAction[argparse.ArgumentParser],
    *,
    broadcast_service: Callable[[], BroadcastService],
) -> None:
    """``broadcast_service`` opens the database and builds the service (``system.root``)."""
    p = subparsers.add_parser(
        "schedule",
        help="lịch phát thanh: xem, hủy, thử quy tắc lặp",
        description="Lịch phát thanh (thao tác với quyền cấp tỉnh).",
    )
    p.set_defaults(broadcast_service=broadcast_service)
    sub = p.add_subparsers(dest="schedule_command", metavar="LỆNH", required=True)

    pv = sub.add_parser("preview", help="các lần phát của một quy tắc lặp RRULE")
    pv.add_argument("rrule", help='ví dụ "FREQ=DAILY" hoặc "FREQ=WEEKLY;BYDAY=MO,TH"')
    pv.add_argument("--start", required=True, help='lần phát đầu: "dd/mm/yyyy HH:MM" hoặc ISO')
    pv.add_argument("--until", help="ngày kết thúc (dd/mm/yyyy)")
    pv.add_argument(
        "--except",
        dest="exceptions",
        action="append",
        default=[],
        metavar="NGÀY",
        help="ngày không phát (lặp lại được)",
    )
    pv.add_argument("-n", type=int, default=7, help="số lần hiển thị (mặc định 7)")
    pv.set_defaults(func=cmd_preview)

    ls = sub.add_parser("list", help="danh sách bản tin")
    ls.add_argument("--status", help="lọc theo trạng thái (scheduled, aired, …)")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)

    sh = sub.add_parser("show", help="một bản tin với kết quả phát từng cụm loa")
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true", help="in JSON")
    sh.set_defaults(func=cmd_show)

    cc = sub.add_parser("cancel", help="hủy một bản tin")
    cc.add_argument("id", type=int)
    cc.set_defaults(func=cmd_cancel)


def cmd_preview(args: argparse.Namespace) -> int:
    from scheduler.recurrence import build_recurrence, describe_slot, parse_instant

    try:
        start = parse_instant(args.start)
        rec = build_recurrence(args.rrule, start, until=args.until, exceptions=args.exceptions)
    except ScheduleError as err:
        raise UserError(err.message) from None
    slots = rec.first(max(1, args.n), start)
    if not slots:
        print("Quy tắc này không có lần phát nào.")
    for ms in slots:
        print(describe_slot(ms))
    return 0


def _service(args: argparse.Namespace) -> tuple[BroadcastService, Actor]:
    """The process's broadcast service, as the composition root builds it, acting with the
    province's rights."""
    return args.broadcast_service(), Actor("province", None, "cli")


def cmd_list(args: argparse.Namespace) -> int:
    svc, actor = _service(args)
    page = svc.list(actor, status=args.status, limit=args.limit)
    for b in page["items"]:
        when = b["next_slot_at"] or b["start_at"] or "-"
        print(
            f"{b['id']:>5}  {b['status_label']:<16} {b['priority_label']:<9} {when:<26} "
            f"{b['title']}"
        )
    print(f"Tổng: {page['total']} bản tin")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    svc, actor = _service(args)
    try:
        b = svc.get(actor, args.id)
    except ScheduleError as err:
        raise UserError(err.message) from None
    if args.json:
        print(json.dumps(b, ensure_ascii=False, indent=2))
        return 0
    ratio = "-" if b["aired_ratio"] is None else f"{b['aired_ratio']:.0%}"
    print(
        f"#{b['id']} {b['title']} — {b['status_label']}, mức {b['priority_label']}, "
        f"tỷ lệ phát {ratio}"
    )
    for o in b["outcomes"]:
        late = "" if o["lateness_ms"] is None else f" trễ {o['lateness_ms']} ms"
        why = f" ({o['error']})" if o["error"] else ""
        print(f"  {o['node_id']:<20} {o['phase_label']}{late}{why}")
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    svc, actor = _service(args)
    try:
        out = svc.cancel(actor, args.id)
    except ScheduleError as err:
        raise UserError(err.message) from None
    print(
        f"Đã hủy bản tin #{out['id']}. Bộ điều khiển sẽ dừng phát trên các cụm loa trong vài giây."
    )
    return 0
