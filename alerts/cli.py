"""``loa alerts``: check a CAP document before relying on it, feed one in from a terminal
(acting as the province), and read what was received.

    loa alerts check canh-bao.xml        # parse, validate, show clusters and text; stores nothing
    loa alerts receive canh-bao.xml      # as POST /api/v1/alerts/cap (source "cli")
    loa alerts list
    loa alerts show 12 [--json]

``receive`` writes the alert and its emergency broadcast; the running scheduler (``loa serve``)
picks the broadcast up on its next housekeeping pass and dispatches it.
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

from loa.errors import UserError
from scheduler.targets import Actor

if TYPE_CHECKING:  # built by the composition root, imported only for its type
    from alerts.workflow import AlertService


def register(
    subparsers: argparse._SubParsersAction, *, alert_service: Callable[[], AlertService]
) -> None:
    """``alert_service`` opens the database and builds the service (``system.root``)."""
    p = subparsers.add_parser(
        "alerts",
        help="cảnh báo khẩn cấp CAP 1.2",
        description="Cảnh báo khẩn cấp theo chuẩn OASIS CAP 1.2.",
    )
    p.set_defaults(alert_service=alert_service)
    sub = p.add_subparsers(dest="alerts_command", metavar="LỆNH", required=True)
    ck = sub.add_parser("check", help="kiểm tra một tệp CAP: cụm loa nào, lời đọc gì")
    ck.add_argument("file", type=Path)
    ck.set_defaults(func=cmd_check)
    rc = sub.add_parser("receive", help="nhận một tệp CAP như từ hệ thống của tỉnh")
    rc.add_argument("file", type=Path)
    rc.set_defaults(func=cmd_receive)
    ls = sub.add_parser("list", help="các cảnh báo đã nhận")
    ls.add_argument("--limit", type=int, default=50)
    ls.set_defaults(func=cmd_list)
    sh = sub.add_parser("show", help="một cảnh báo với bằng chứng phát")
    sh.add_argument("id", type=int)
    sh.add_argument("--json", action="store_true", help="in JSON")
    sh.set_defaults(func=cmd_show)


def _service(args: argparse.Namespace) -> tuple[AlertService, Actor]:
    """The process's alert service, as the composition root builds it (audited like the
    web's), acting with the province's rights."""
    return args.alert_service(), Actor("province", None, "cli")


def _read(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise UserError(f"Không đọc được tệp {path}: {exc.strerror}") from None


def cmd_check(args: argparse.Namespace) -> int:
    from alerts.errors import AlertError

    svc, _ = _service(args)
    try:
        out = svc.preview(_read(args.file))
    except AlertError as err:
        raise UserError(f"{err.message} ({err.code})") from None
    print(
        f"{out['msg_type']} · {out['status']} · {out['severity']} · {out['event']} — "
        f"{'tự động phát' if out['decision'] == 'auto' else 'cần duyệt'}; "
        f"{out['clusters']} cụm loa"
    )
    for v in out["by_village"]:
        print(
            f"  {v['commune']} / {v['village']}: " + ", ".join(c["node_id"] for c in v["clusters"])
        )
    for area in out["empty_areas"]:
        print(f"  Vùng không có cụm loa: {area}")
    print(f"Lời đọc: {out['text']}")
    return 0


def cmd_receive(args: argparse.Namespace) -> int:
    from alerts.errors import AlertError

    svc, _ = _service(args)
    try:
        out = svc.receive(_read(args.file), source="cli", source_ref="cli", trusted_source=True)
    except AlertError as err:
        raise UserError(f"Tài liệu bị từ chối: {err.message} ({err.code})") from None
    if out["result"] == "duplicate":
        print(f"Đã nhận trước đó: cảnh báo #{out['alert_id']}; bỏ qua.")
        return 0
    print(
        f"Cảnh báo #{out['id']}: {out['state_label']}"
        + (f" — {out['state_reason']}" if out["state_reason"] else "")
        + f"; {out['clusters']} cụm loa."
    )
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    svc, actor = _service(args)
    page = svc.list(actor, limit=args.limit)
    for a in page["items"]:
        print(
            f"{a['id']:>5}  {a['received_at']}  {a['state_label']:<18} {a['severity']:<8} "
            f"{a['headline'] or a['event'] or a['msg_type']}"
        )
    print(f"Tổng: {page['total']} cảnh báo")
    return 0


def cmd_show(args: argparse.Namespace) -> int:
    from alerts.errors import AlertError

    svc, actor = _service(args)
    try:
        a = svc.report(actor, args.id)
    except AlertError as err:
        raise UserError(err.message) from None
    if args.json:
        print(json.dumps(a, ensure_ascii=False, indent=2))
        return 0
    print(f"#{a['id']} {a['headline'] or a['event']} — {a['state_label']}")
    for st in a["steps"]:
        print(f"  {st['at']}  {st['label']}  {st['actor']}")
    for p in a["airings"]:
        print(
            f"  Bản tin #{p['broadcast_id']}: {p['started']}/{p['targeted']} cụm đã phát; "
            f"99 % sau {p['p99_s'] if p['p99_s'] is not None else '–'} s"
        )
        for m in p["not_started"]:
            print(f"    {m['node_id']} ({m['village']}, {m['commune']}): {m['reason']}")
    return 0
