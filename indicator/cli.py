"""``loa report 8.3``, ``loa attest`` and ``loa indicator ...``: the indicator from a shell.

loa report 8.3 --period 2026-Q3 --format xlsx -o bao-cao-q3.xlsx
loa report 8.3 --period last30                  # summary on the terminal
loa attest ls-vule --inspector "Nguyễn Văn A" --until 31/12/2027 --note "Đài FM tốt"
loa indicator settings --availability 0.9 --aired 0.8
loa indicator seed-history --days 90            # demo telemetry for the registered nodes
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

from indicator.errors import IndicatorError
from loa.db import Database
from loa.errors import UserError
from loa.settings import get_settings
from loa.timeutil import now_ms

FORMATS = ("html", "pdf", "docx", "xlsx", "csv", "text")
BINARY = ("pdf", "docx", "xlsx")
LETTERHEAD_FLAGS = (
    "issuer",
    "superior",
    "number_symbol",
    "place",
    "signer_authority",
    "signer_title",
    "signer_name",
    "recipients",
)


def _user_error(message: str) -> Exception:

    return UserError(message)


def _run(action: Callable[[argparse.Namespace, Database], int]) -> Callable[..., int]:
    def wrapped(args: argparse.Namespace) -> int:
        db = Database(args.db or get_settings().resolved_database_url())
        try:
            db.create_all()
            return action(args, db)
        except IndicatorError as exc:
            raise _user_error(exc.message) from exc
        finally:
            db.dispose()

    return wrapped


def _format(args: argparse.Namespace) -> str:
    if args.format:
        return args.format
    if args.output:
        suffix = Path(args.output).suffix.lower().lstrip(".")
        if suffix in FORMATS:
            return suffix
        raise _user_error(
            f"Không đoán được định dạng từ '{args.output}': thêm --format html|pdf|xlsx|csv."
        )
    return "text"


def _report(args: argparse.Namespace, db: Database) -> int:
    from indicator.evaluate import evaluate, split_text
    from indicator.manual_inputs import current_thresholds
    from indicator.periods import parse_period
    from indicator.reports import build_report, render

    if args.folder:
        raise _user_error(
            f"Thừa tham số '{args.folder}' (thư mục chỉ dùng với 'loa report verify THƯ_MỤC')."
        )
    fmt = _format(args)
    if fmt in BINARY and not args.output:
        raise _user_error(f"Báo cáo {fmt.upper()} cần tệp đích: thêm -o TỆP.")
    at = now_ms()
    with db.session() as s:
        period = parse_period(args.period, now_ms=at, default=current_thresholds(s).default_period)
        if args.evidence:
            from indicator.evidence import write_evidence

            e = evaluate(s, period, now=at, scope=args.scope)
            folder = Path(args.evidence)
            try:
                files = write_evidence(
                    s, e, folder, period_tables=getattr(args, "period_tables", None)
                )
            except OSError as exc:
                raise _user_error(
                    f"Không ghi được bằng chứng vào '{folder}': {exc.strerror}."
                ) from None
            print(
                f"Đã ghi {len(files)} tệp bằng chứng ({e.summary.text}) và MANIFEST.sha256 "
                f"vào {folder}; kiểm tra lại bằng: loa report verify {folder}"
            )
            if fmt == "text":
                return 0
        if fmt == "text":
            e = evaluate(s, period, now=at, scope=args.scope)
            label = e.criteria.label if e.criteria else "chỉ tiêu 8.3"
            print(f"{label[0].upper()}{label[1:]} — {period.label}: {e.summary.text}")
            if e.criteria is not None:
                print(f"  Căn cứ: {e.criteria.name} ({e.criteria.legal_basis})")
            if e.parts:
                print(f"  {split_text(e)}")
            for d in e.districts:
                print(f"  {d.text}")
            for c in e.communes:
                mark = "ĐẠT" + (" (thủ công)" if c.manual else "") if c.passed else "KHÔNG ĐẠT"
                print(f"- {c.code}\t{c.name}\t{mark}")
                for r in c.reasons:
                    print(f"    {r.text}")
            return 0
        overrides = {k: getattr(args, k) for k in LETTERHEAD_FLAGS if getattr(args, k) is not None}
        if args.recipients is not None:
            overrides["recipients"] = args.recipients.replace(";", "\n")
        report = build_report(
            s,
            period,
            now=at,
            scope=args.scope,
            letterhead=overrides,
            period_alerts=getattr(args, "period_alerts", None),
        )
    data = render(report, fmt)
    if not args.output or args.output == "-":
        sys.stdout.write(data.decode("utf-8"))
        return 0
    path = Path(args.output)
    try:
        path.write_bytes(data)
    except OSError as exc:
        raise _user_error(f"Không ghi được tệp '{path}': {exc.strerror}.") from None
    print(f"Đã ghi báo cáo {period.label} ({report.evaluation.summary.text}) vào {path}")
    return 0


def _report_or_verify(args: argparse.Namespace) -> int:
    """``loa report verify DIR`` reads the folder alone: no database is opened."""
    if args.indicator != "verify":
        return _run(_report)(args)
    try:
        return _verify(args)
    except IndicatorError as exc:
        raise _user_error(exc.message) from exc


def _verify(args: argparse.Namespace) -> int:
    from indicator.evidence import verify_evidence

    if not args.folder:
        raise _user_error("Thiếu thư mục bằng chứng: loa report verify THƯ_MỤC.")
    result = verify_evidence(Path(args.folder), period_checks=getattr(args, "period_checks", None))
    print(result.text())
    return 0 if result.ok else 3


def _attest(args: argparse.Namespace, db: Database) -> int:
    from indicator.manual_inputs import add_attestation
    from indicator.periods import parse_day

    with db.session() as s:
        row = add_attestation(
            s,
            args.commune,
            inspector=args.inspector,
            valid_until=parse_day(args.until),
            attested_on=parse_day(args.on) if args.on else None,
            note=args.note or "",
            station_kind=args.kind,
            by="cli",
        )
        print(
            f"Đã ghi xác nhận số {row.id}: xã {args.commune}, đài {row.station_kind}, kiểm "
            f"tra ngày {row.attested_on:%d/%m/%Y}, hiệu lực đến {row.valid_until:%d/%m/%Y}."
        )
    return 0


def _settings(args: argparse.Namespace, db: Database) -> int:
    from indicator.manual_inputs import current_thresholds, update_thresholds

    with db.session() as s:
        changes = {
            k: v
            for k, v in (
                ("availability", args.availability),
                ("aired", args.aired),
                ("broadcasts_per_week_min", args.per_week),
                ("default_period", args.default_period),
                ("coverage", args.coverage),
            )
            if v is not None
        }
        th = update_thresholds(s, by="cli", **changes) if changes else current_thresholds(s)
        print(
            f"Ngưỡng khả dụng: {th.availability}\nNgưỡng tỉ lệ phát: {th.aired}\n"
            f"Số buổi phát tối thiểu/tuần: {th.broadcasts_per_week_min}\n"
            f"Kỳ mặc định: {th.default_period}\n"
            f"Ngưỡng thời gian giám sát: {th.coverage}"
        )
    return 0


def _criteria(args: argparse.Namespace, db: Database) -> int:
    from indicator.criteria import all_sets, update_set

    changes = {
        k: v
        for k, v in (
            ("indicator_code", args.code),
            ("indicator_text", args.text),
            ("legal_basis", args.legal_basis),
            ("availability_threshold", args.availability),
            ("aired_threshold", args.aired),
            ("broadcasts_per_week_min", args.per_week),
        )
        if v is not None
    }
    with db.session() as s:
        if changes:
            if not args.set:
                raise _user_error("Cần --set KHÓA (ví dụ 2026-2030) để sửa một bộ tiêu chí.")
            update_set(s, args.set, changes, by="cli")
        for c in all_sets(s):
            until = c.valid_to.strftime("%d/%m/%Y") if c.valid_to else "nay"
            code = c.indicator_code or "(chưa nhập mã)"
            print(
                f"{c.key}: {c.name}\n  Căn cứ: {c.legal_basis}\n  Hiệu lực: "
                f"{c.valid_from:%d/%m/%Y} – {until}\n  Chỉ tiêu: {code} — {c.indicator_text}"
            )
    return 0


def _seed(args: argparse.Namespace, db: Database) -> int:
    from indicator.demo_history import seed_history

    summary = seed_history(db, days=args.days, now_ms=now_ms(), seed=args.seed)
    print(summary.text())
    return 0


def register(
    subparsers: argparse._SubParsersAction,
    *,
    period_tables: Callable | None = None,
    period_alerts: Callable | None = None,
    period_checks: Callable | None = None,
) -> None:
    """``period_tables``/``period_alerts``: what other packages add to a period's evidence
    folder and report (``indicator.evidence.PeriodTables``, ``indicator.reports.PeriodAlerts``;
    the emergency alerts), passed in by the composition; ``period_checks``: how ``verify``
    recomputes those tables' figures (``indicator.evidence.PeriodChecks``)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--db", metavar="URL", help="CSDL (mặc định theo cấu hình LOA_)")

    p = subparsers.add_parser("report", parents=[common], help="báo cáo chỉ tiêu 8.3")
    p.add_argument(
        "indicator",
        choices=("8.3", "radio", "verify"),
        help="chỉ tiêu (8.3 hoặc radio: như nhau, theo bộ tiêu chí có hiệu lực), "
        "hoặc verify THƯ_MỤC để kiểm tra một thư mục bằng chứng",
    )
    p.add_argument("folder", nargs="?", metavar="THƯ_MỤC", help="với verify")
    p.add_argument(
        "--evidence",
        metavar="THƯ_MỤC",
        help="ghi dữ liệu gốc (CSV) và MANIFEST.sha256 để người khác tính lại",
    )
    p.add_argument(
        "--period",
        metavar="KỲ",
        help="2026-Q3, 2026-H1, 2026, 2026-07, last30 hoặc 01/07/2026-30/09/2026",
    )
    p.add_argument("--format", choices=FORMATS, help="mặc định theo đuôi tệp, hoặc text")
    p.add_argument("--scope", metavar="PHẠM_VI", help="province, district:MÃ, commune:MÃ")
    p.add_argument("-o", "--output", metavar="TỆP", help="tệp đích (- = màn hình)")
    for flag in LETTERHEAD_FLAGS:  # this report only; the province's defaults are settings
        p.add_argument(
            f"--{flag.replace('_', '-')}",
            metavar="…",
            help="nơi nhận, phân cách bằng ';'" if flag == "recipients" else None,
        )
    p.set_defaults(
        func=_report_or_verify,
        period_tables=period_tables,
        period_alerts=period_alerts,
        period_checks=period_checks,
    )

    p = subparsers.add_parser(
        "attest", parents=[common], help="xác nhận thủ công đài FM/hữu tuyến của một xã"
    )
    p.add_argument("commune", metavar="MÃ_XÃ")
    p.add_argument("--inspector", required=True, metavar="NGƯỜI_KIỂM_TRA")
    p.add_argument("--until", required=True, metavar="dd/mm/yyyy", help="hiệu lực đến ngày")
    p.add_argument("--on", metavar="dd/mm/yyyy", help="ngày kiểm tra (mặc định: hôm nay)")
    p.add_argument("--note", default="", metavar="GHI_CHÚ")
    p.add_argument("--kind", choices=("fm", "wired"), help="loại đài (mặc định: theo xã)")
    p.set_defaults(func=_run(_attest))

    p = subparsers.add_parser("indicator", help="cấu hình và dữ liệu mẫu của chỉ tiêu 8.3")
    p.set_defaults(func=lambda _args: (p.print_help(), 2)[1])
    sub = p.add_subparsers(dest="indicator_command", metavar="LỆNH")
    s = sub.add_parser("settings", parents=[common], help="xem hoặc đổi ngưỡng của tỉnh")
    s.add_argument("--availability", type=float, metavar="0-1")
    s.add_argument("--aired", type=float, metavar="0-1")
    s.add_argument("--per-week", type=int, metavar="N")
    s.add_argument("--default-period", metavar="KỲ")
    s.add_argument(
        "--coverage",
        type=float,
        metavar="0-1",
        help="thời gian giám sát tối thiểu để kết luận (mặc định 0.9)",
    )
    s.set_defaults(func=_run(_settings))
    s = sub.add_parser(
        "criteria",
        parents=[common],
        help="xem hoặc sửa bộ tiêu chí (mã, nội dung, ngưỡng của chỉ tiêu)",
    )
    s.add_argument("--set", metavar="KHÓA", help="bộ cần sửa: 2021-2025 hoặc 2026-2030")
    s.add_argument("--code", metavar="MÃ", help="mã chỉ tiêu, ví dụ 6.2")
    s.add_argument("--text", metavar="NỘI_DUNG", help="nội dung chỉ tiêu")
    s.add_argument("--legal-basis", metavar="CĂN_CỨ")
    s.add_argument("--availability", type=float, metavar="0-1")
    s.add_argument("--aired", type=float, metavar="0-1")
    s.add_argument("--per-week", type=int, metavar="N")
    s.set_defaults(func=_run(_criteria))
    s = sub.add_parser(
        "seed-history",
        parents=[common],
        help="ghi lịch sử mẫu (trạng thái, buổi phát) cho các cụm đã đăng ký",
    )
    s.add_argument("--days", type=int, default=90)
    s.add_argument("--seed", type=int, default=83)
    s.set_defaults(func=_run(_seed))
