"""``loa registry ...``: import/export the register, search it, merge, rename, approve.

Each command opens the database named by ``--db`` or the settings (``LOA_DATABASE_URL`` /
``LOA_DATA_DIR``), runs one registry operation in one transaction and prints the outcome in
Vietnamese. Import errors are printed one per line with their line numbers."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from datetime import datetime

from loa.db import Database
from loa.errors import UserError
from loa.settings import get_settings
from loa.timeutil import ICT, dt_to_ms, format_datetime
from registry import changes, queries
from registry.errors import ImportFailed, RegistryError


def _user_error(message: str) -> Exception:

    return UserError(message)


def parse_date(text: str) -> int:
    """dd/mm/yyyy (00:00) or dd/mm/yyyy HH:MM, Vietnam time -> epoch ms."""
    for pattern in ("%d/%m/%Y %H:%M", "%d/%m/%Y"):
        try:
            return dt_to_ms(datetime.strptime(text.strip(), pattern).replace(tzinfo=ICT))
        except ValueError:
            continue
    raise _user_error(f"Ngày '{text}' không hợp lệ; dùng dạng dd/mm/yyyy (ví dụ 01/07/2025).")


def _open_db(args: argparse.Namespace) -> Database:
    db = Database(args.db or get_settings().resolved_database_url())
    db.create_all()
    return db


def _run(action: Callable[[argparse.Namespace, Database], int]) -> Callable[..., int]:
    """Open the database, run, map domain errors to the CLI's user errors, close."""

    def wrapped(args: argparse.Namespace) -> int:
        db = _open_db(args)
        try:
            return action(args, db)
        except ImportFailed as exc:
            for issue in exc.issues:
                print(issue.message, file=sys.stderr)
            raise _user_error(exc.message) from exc
        except RegistryError as exc:
            raise _user_error(exc.message) from exc
        finally:
            db.dispose()

    return wrapped


# --------------------------------------------------------------------------- commands


def _import(args: argparse.Namespace, db: Database) -> int:
    from registry.importer import import_file

    at_ms = parse_date(args.effective) if args.effective else None
    summary = import_file(db, args.file, at_ms)
    print(f"Đã nhập {args.file}. {summary.text()}")
    return 0


def _export(args: argparse.Namespace, db: Database) -> int:
    from registry.importer import export_file

    doc = export_file(db, args.file)
    communes = sum(len(p.communes) for p in doc.provinces)
    nodes = sum(len(vil.nodes) for p in doc.provinces for c in p.communes for vil in c.villages)
    print(f"Đã xuất {len(doc.provinces)} tỉnh, {communes} xã, {nodes} cụm loa vào {args.file}.")
    return 0


def _search(args: argparse.Namespace, db: Database) -> int:
    with db.session() as s:
        result = queries.search(s, args.text, limit=args.limit)
    groups = (("Xã", result.communes), ("Thôn", result.villages), ("Cụm loa", result.nodes))
    if not any(hits for _, hits in groups):
        print(f"Không tìm thấy gì cho '{args.text}'.")
        return 0
    for title, hits in groups:
        if not hits:
            continue
        print(f"{title}:")
        for hit in hits:
            where = ", ".join(ref.name for ref in (hit.village, hit.commune) if ref)
            extra = f" — {where}" if where else ""
            if hit.retired:
                extra += (
                    " (đã ngừng"
                    + (f", nay thuộc {hit.merged_into.name}" if hit.merged_into else "")
                    + ")"
                )
            print(f"  {hit.code}\t{hit.name}{extra}")
    return 0


def _merge_communes(args: argparse.Namespace, db: Database) -> int:
    at_ms = parse_date(args.at) if args.at else None
    with db.session() as s:
        result = changes.merge_communes(s, args.source, args.target, at_ms)
    print(
        f"Đã sáp nhập xã {result.source_code} vào {result.target_code} từ "
        f"{format_datetime(result.at_ms)}; {len(result.moved)} thôn chuyển sang: "
        f"{', '.join(result.moved) or '(không có)'}."
    )
    return 0


def _rename(args: argparse.Namespace, db: Database) -> int:
    at_ms = parse_date(args.at) if args.at else None
    rename = changes.rename_commune if args.kind == "commune" else changes.rename_village
    noun = "xã" if args.kind == "commune" else "thôn"
    with db.session() as s:
        old = (changes.get_commune if args.kind == "commune" else changes.get_village)(
            s, args.code
        ).name
        row = rename(s, args.code, args.name, at_ms)
        print(f"Đã đổi tên {noun} {row.code}: {old} → {row.name} (tên cũ vẫn lưu trong lịch sử).")
    return 0


def _pending(args: argparse.Namespace, db: Database) -> int:
    with db.session() as s:
        rows = queries.list_pending(s)
    if not rows:
        print("Không có cụm loa nào chờ duyệt.")
        return 0
    print("Mã cụm\tThấy lần đầu\tThấy lần cuối\tSố tin\tKênh")
    for p in rows:
        print(f"{p.id}\t{p.first_seen}\t{p.last_seen}\t{p.messages}\t{p.last_channel}")
    return 0


def _approve(args: argparse.Namespace, db: Database) -> int:
    with db.session() as s:
        node = changes.approve_pending(s, args.node_id, args.village, label=args.label or "")
        village = changes.get_village(s, node.village_id)
        print(f"Đã duyệt cụm loa {node.id} vào {village.name} ({village.code}).")
    return 0


def _load_demo(args: argparse.Namespace, db: Database) -> int:
    from registry.demo import load_demo_province

    print(f"Đã nạp tỉnh mẫu {load_demo_province(db).text()}")
    return 0


# --------------------------------------------------------------------------- parser


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "registry",
        help="sổ đăng ký tỉnh/xã/thôn/cụm loa",
        description="Sổ đăng ký: tỉnh > huyện (không bắt buộc) > xã > thôn > cụm loa.",
    )
    parser.set_defaults(func=lambda _args: (parser.print_help(), 2)[1])
    sub = parser.add_subparsers(dest="registry_command", metavar="LỆNH")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", help="CSDL (mặc định theo cấu hình LOA_)")

    p = sub.add_parser("import", parents=[common], help="nhập tệp YAML hoặc CSV")
    p.add_argument("file", metavar="TỆP")
    p.add_argument(
        "--from",
        dest="effective",
        metavar="dd/mm/yyyy",
        help="ngày hiệu lực của các thay đổi (mặc định: bây giờ)",
    )
    p.set_defaults(func=_run(_import))

    p = sub.add_parser("export", parents=[common], help="xuất ra tệp .yaml hoặc .csv")
    p.add_argument("file", metavar="TỆP")
    p.set_defaults(func=_run(_export))

    p = sub.add_parser("search", parents=[common], help="tìm xã, thôn, cụm (không cần dấu)")
    p.add_argument("text", metavar="CHỮ")
    p.add_argument("--limit", type=int, default=20)
    p.set_defaults(func=_run(_search))

    p = sub.add_parser("merge-communes", parents=[common], help="sáp nhập xã SRC vào xã DST")
    p.add_argument("source", metavar="SRC")
    p.add_argument("target", metavar="DST")
    p.add_argument("--at", metavar="dd/mm/yyyy", help="ngày hiệu lực (mặc định: bây giờ)")
    p.set_defaults(func=_run(_merge_communes))

    p = sub.add_parser("rename", parents=[common], help="đổi tên xã hoặc thôn")
    p.add_argument("kind", choices=("commune", "village"))
    p.add_argument("code", metavar="MÃ")
    p.add_argument("name", metavar="TÊN_MỚI")
    p.add_argument("--at", metavar="dd/mm/yyyy", help="ngày hiệu lực (mặc định: bây giờ)")
    p.set_defaults(func=_run(_rename))

    p = sub.add_parser("pending", parents=[common], help="cụm loa lạ đang chờ duyệt")
    p.set_defaults(func=_run(_pending))

    p = sub.add_parser("approve", parents=[common], help="duyệt cụm loa chờ vào một thôn")
    p.add_argument("node_id", metavar="MÃ_CỤM")
    p.add_argument("--village", required=True, metavar="MÃ_THÔN")
    p.add_argument("--label", default="", help="nhãn (ví dụ: Nhà văn hóa thôn)")
    p.set_defaults(func=_run(_approve))

    p = sub.add_parser("load-demo", parents=[common], help="nạp tỉnh mẫu Lạng Sơn")
    p.set_defaults(func=_run(_load_demo))
