"""Periodic reports on indicator 8.3 (quarterly, 6-month, yearly or any period), in the form
a provincial báo cáo takes: the national motto, the issuing authority, the administrative
date line, then the figures and the evidence.

One ``Report`` is built from an evaluation and rendered four ways from the same rows, so the
PDF, the HTML page, the spreadsheet and the CSV never disagree:

* HTML: a Jinja2 template in this package, printable (A4, Times-like serif);
* PDF: fpdf2 with the DejaVu Serif TrueType fonts from Debian's ``fonts-dejavu-core``
  (fpdf2's built-in fonts are Latin-1 and cannot draw "ạ", "ề", "ữ"...); pure Python, no
  browser or LaTeX at run time;
* XLSX: openpyxl, with real numbers and percentage formats so officers can re-total;
* CSV: UTF-8 with BOM (Excel opens it with the diacritics intact), one row per commune,
  numbers in machine form (dot decimal) for exchange with other systems.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from indicator import letterhead as letterheads
from indicator.errors import IndicatorError
from indicator.evaluate import (
    VERDICT_TEXT,
    CommuneVerdict,
    Evaluation,
    evaluate,
    split_text,
)
from indicator.letterhead import Letterhead
from indicator.periods import Period
from indicator.vn import (
    LANGUAGE_NAMES,
    STATE_NAMES,
    STATION_NAMES,
    admin_date_line,
    hours,
    number,
    percent,
    village_title,
)
from loa.text import spreadsheet_safe
from loa.timeutil import format_date, format_datetime, now_ms

MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
    "docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
}
KIND_TITLES = {
    "quarter": "Báo cáo quý",
    "half": "Báo cáo 6 tháng",
    "year": "Báo cáo năm",
    "month": "Báo cáo tháng",
}

COMMUNE_COLUMNS = [  # (key, heading) shared by every format
    ("stt", "STT"),
    ("code", "Mã xã"),
    ("name", "Tên xã"),
    ("district", "Huyện (cũ)"),
    ("station", "Loại đài"),
    ("villages", "Số thôn"),
    ("villages_passed", "Số thôn đạt"),
    ("clusters", "Số cụm loa"),
    ("min_availability", "Khả dụng thấp nhất"),
    ("min_aired", "Tỉ lệ phát thấp nhất"),
    ("airings", "Số buổi phát"),
    ("hours", "Số giờ phát"),
    ("result", "Kết quả"),
    ("evidence", "Lý do / căn cứ"),
]
VILLAGE_COLUMNS = [
    ("commune", "Xã"),
    ("village", "Thôn"),
    ("clusters", "Số cụm loa"),
    ("availability", "Khả dụng"),
    ("aired", "Đã phát / số buổi phát tới thôn"),
    ("aired_ratio", "Tỉ lệ phát"),
    ("result", "Kết quả"),
    ("reasons", "Lý do"),
]


# Section V, the emergency alerts of the period (issue 19): another package's rows, handed
# in by the composition (``period_alerts``), the indicator does not import it. Each row is a
# dict with these keys; one definition for the PDF and the DOCX.
ALERT_COLUMNS = [
    ("received_ms", "Nhận lúc"),
    ("title", "Cảnh báo"),
    ("severity", "Mức độ"),
    ("state", "Trạng thái"),
    ("targeted", "Cụm loa nhắm tới"),
    ("started", "Đã phát (lượt đầu)"),
    ("first_started_s", "Cụm đầu tiên phát (giây)"),
    ("p99_s", "99 % cụm đã phát (giây)"),
]
# (session, start_ms, end_ms, commune ids or None for the whole province) -> rows
PeriodAlerts = Callable[[Session, int, int, Collection[int] | None], list[dict]]


class ReportUnavailable(IndicatorError):
    status = 503


@dataclass
class Report:
    evaluation: Evaluation
    generated_ms: int
    heading: str  # "UBND TỈNH LẠNG SƠN"
    date_line: str  # "Lạng Sơn, ngày 05 tháng 10 năm 2026"
    kind_title: str  # "Báo cáo quý"
    title: str  # "Kết quả thực hiện chỉ tiêu 8.3 quý 3 năm 2026"
    summary_lines: list[str]
    commune_rows: list[dict] = field(default_factory=list)
    village_rows: list[dict] = field(default_factory=list)
    language_rows: list[tuple[str, str, str]] = field(default_factory=list)
    state_rows: list[tuple[str, int]] = field(default_factory=list)
    station_rows: list[tuple[str, int]] = field(default_factory=list)
    letterhead: Letterhead = field(default_factory=Letterhead)
    # The period's emergency alerts (section V); None when no source was given.
    alert_rows: list[dict] | None = None

    @property
    def first_day(self) -> str:
        e = self.evaluation
        return format_date(e.parts[0].start_ms if e.parts else e.start_ms)

    @property
    def period(self) -> Period:
        return self.evaluation.period

    @property
    def criteria(self):
        return self.evaluation.criteria

    @property
    def indicator_text(self) -> str:
        c = self.criteria
        return (
            c.indicator_text
            if c is not None
            else "Xã có đài truyền thanh và hệ thống loa đến các thôn"
        )

    @property
    def basis_line(self) -> str:
        c = self.criteria
        return f"Căn cứ: {c.name} ({c.legal_basis})." if c is not None else ""

    @property
    def label(self) -> str:
        return self.criteria.label if self.criteria is not None else "chỉ tiêu 8.3"

    def filename(self, fmt: str) -> str:
        key = (self.evaluation.whole or self.period).key.replace("..", "_")
        code = self.criteria.indicator_code if self.criteria is not None else "8.3"
        stem = f"chi-tieu-{code}" if code else "truyen-thanh-co-so"
        return f"bao-cao-{stem}-{key}.{fmt}"


# --------------------------------------------------------------------------- rows


def _result_text(c: CommuneVerdict) -> str:
    if c.passed:
        return "Đạt (xác nhận thủ công)" if c.manual else "Đạt"
    return VERDICT_TEXT.get(c.verdict, "Không đạt")


def _evidence(c: CommuneVerdict) -> str:
    """For a failing commune, its reasons; for a passing one, the figures that carried it."""
    if not c.passed or c.manual:
        return "; ".join(
            r.text
            for r in c.reasons
            if r.level != "info" or c.manual or c.verdict == "not_in_service"
        )
    worst_av = min((v.availability for v in c.villages if v.availability is not None), default=None)
    worst_aired = min(
        (v.aired_ratio for v in c.villages if v.aired_ratio is not None), default=None
    )
    return (
        f"Cả {len(c.villages)} thôn đạt; khả dụng thấp nhất {percent(worst_av)}; "
        f"tỉ lệ phát thấp nhất {percent(worst_aired)}; có buổi phát mọi tuần "
        f"({c.airings} buổi); đã giám sát {percent(c.coverage)} thời gian"
    )


def _commune_row(i: int, c: CommuneVerdict) -> dict:
    measured = [v for v in c.villages if v.passed is not None]
    return {
        "stt": i,
        "code": c.code,
        "name": c.name
        + (
            " (hợp nhất từ "
            + ", ".join(f"{p['name']} ngày {p['merged_on']}" for p in c.predecessors)
            + ")"
            if c.predecessors
            else ""
        ),
        "district": c.district_name or "",
        "station": STATION_NAMES.get(c.station, c.station),
        "villages": len(c.villages),
        "villages_passed": sum(1 for v in measured if v.passed) if not c.manual else None,
        "clusters": c.clusters,
        "min_availability": min(
            (v.availability for v in measured if v.availability is not None), default=None
        ),
        "coverage": c.coverage,
        "min_aired": min(
            (v.aired_ratio for v in measured if v.aired_ratio is not None), default=None
        ),
        "airings": c.airings,
        "hours": c.aired_ms / 3_600_000,
        "result": _result_text(c),
        "passed": c.passed,
        "manual": c.manual,
        "evidence": _evidence(c),
    }


def _village_rows(c: CommuneVerdict) -> list[dict]:
    rows = []
    for v in c.villages:
        if c.manual or c.station_kind in ("fm", "wired"):
            result = "Không đo (đài FM/hữu tuyến)"
        else:
            result = VERDICT_TEXT.get(v.verdict, "Không đạt")
        rows.append(
            {
                "commune": c.name,
                "commune_code": c.code,
                "village": village_title(v.name),
                "clusters": len(v.clusters),
                "availability": v.availability,
                "coverage": v.coverage,
                "aired": f"{v.played}/{v.aimed}" if v.passed is not None else "",
                "aimed": v.aimed,
                "played": v.played,
                "aired_ratio": v.aired_ratio,
                "result": result,
                "passed": v.passed,
                "reasons": "; ".join(r.text.split(": ", 1)[-1] for r in v.reasons),
            }
        )
    return rows


def build_report(
    session: Session,
    period: Period,
    *,
    now: int | None = None,
    scope: str | None = None,
    allowed_commune_ids: Collection[int] | None = None,
    letterhead: dict | None = None,
    period_alerts: PeriodAlerts | None = None,
) -> Report:
    """``letterhead``: this report's overrides of the province's letterhead settings;
    ``period_alerts``: where the period's emergency alerts come from (section V)."""
    generated = now_ms() if now is None else now
    e = evaluate(
        session,
        period,
        now=generated,
        scope=scope,
        allowed_commune_ids=allowed_commune_ids,
        rollups=True,  # closed months from the roll-ups: same verdicts (tested)
    )
    province = e.province_name or "…"
    s = e.summary
    lines = [f"{s.text} ({s.manual} xã đạt theo xác nhận thủ công)." if s.manual else f"{s.text}."]
    if e.parts:
        lines.append(split_text(e))
    if s.observed is not None:
        gaps = len(e.unobserved)
        lines.append(
            f"Hệ thống đã giám sát {percent(s.observed)} thời gian kỳ báo cáo"
            + (f" ({gaps} khoảng mất giám sát, không tính vào khả dụng)." if gaps else ".")
        )
    if e.end_ms < period.end_ms:
        lines.append(f"Kỳ báo cáo chưa kết thúc: số liệu tính đến {format_datetime(e.end_ms)}.")
    th = e.thresholds
    lines.append(
        f"Tiêu chí áp dụng: mỗi thôn có cụm loa khả dụng từ {percent(th.availability)} thời "
        f"gian và phát từ {percent(th.aired)} số buổi phát tới thôn; đài phát ít nhất "
        f"{th.broadcasts_per_week_min} buổi mỗi tuần; chỉ tính thời gian hệ thống giám sát, "
        f"cần giám sát từ {percent(th.coverage)} thời gian sử dụng để kết luận."
    )
    lines.append(
        f"Tổng số buổi phát: {number(e.airings, 0)}; tổng thời lượng: {hours(e.aired_ms)} giờ."
    )
    total_ms = e.aired_ms or 1
    lh = letterheads.for_report(session, letterhead).for_province(province)
    report = Report(
        evaluation=e,
        generated_ms=generated,
        heading=lh.superior,
        date_line=admin_date_line(lh.place, generated),
        kind_title=KIND_TITLES.get(period.kind, "Báo cáo"),
        title=f"Kết quả thực hiện {e.criteria.label if e.criteria else 'chỉ tiêu 8.3'} "
        f"{(e.whole or period).title}",
        summary_lines=lines,
        commune_rows=[_commune_row(i, c) for i, c in enumerate(e.communes, 1)],
        village_rows=[r for c in e.communes for r in _village_rows(c)],
        language_rows=[
            (LANGUAGE_NAMES[k], hours(ms), percent(ms / total_ms))
            for k, ms in e.aired_ms_by_language.items()
        ],
        state_rows=[(STATE_NAMES[k], n) for k, n in e.clusters_by_state.items()],
        letterhead=lh,
        station_rows=[
            ("Đài IP (cụm loa CNTT-VT)", s.stations.get("ip", 0)),
            ("Đài FM", s.stations.get("fm", 0)),
            ("Đài hữu tuyến", s.stations.get("wired", 0)),
            ("Chưa có đài", s.stations.get("none", 0)),
        ],
    )
    if period_alerts is not None:
        parts = e.parts or [e]
        narrowed = scope not in (None, "", "province") or allowed_commune_ids is not None
        communes = (
            sorted(
                {
                    m
                    for part in parts
                    for c in part.communes
                    for m in (part.facts.members.get(c.id, [c.id]) if part.facts else [c.id])
                }
            )
            if narrowed
            else None
        )
        report.alert_rows = period_alerts(session, parts[0].start_ms, parts[-1].end_ms, communes)
    return report


def _alert_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Headings and rows of section V (the period's emergency alerts)."""

    def cell(key: str, value) -> str:
        if value is None or value == "":
            return "—"
        if key == "received_ms":
            return format_datetime(value)
        if key.endswith("_s"):
            return number(value, 1)
        return str(value)

    return (
        [h for _, h in ALERT_COLUMNS],
        [[cell(k, row.get(k)) for k, _ in ALERT_COLUMNS] for row in report.alert_rows or []],
    )


ALERTS_NONE = "Không có cảnh báo khẩn cấp nào trong kỳ."
ALERTS_NOTE = (
    "Thời gian tính từ lúc hệ thống nhận cảnh báo; chi tiết từng cụm loa trong thư mục "
    "bằng chứng của kỳ báo cáo (alerts.csv, alert_airings.csv, alert_clusters.csv)."
)


def _cell(key: str, value) -> str:
    """A value as printed in HTML and PDF."""
    if value is None:
        return "—"
    if key in ("min_availability", "min_aired", "availability", "aired_ratio", "coverage"):
        return percent(value)
    if key == "hours":
        return number(value, 1)
    return str(value)


# Section IV, the same columns in the PDF and the DOCX.
_COMMUNE_TABLE_KEYS = (
    "stt",
    "name",
    "station",
    "villages",
    "clusters",
    "coverage",
    "min_availability",
    "min_aired",
    "airings",
    "result",
    "evidence",
)


def _commune_table(report: Report) -> tuple[list[str], list[list[str]]]:
    """Headings and rows of the per-commune results table (section IV)."""
    heads = dict(COMMUNE_COLUMNS) | {"coverage": "Đã giám sát"}
    return (
        [heads[k] for k in _COMMUNE_TABLE_KEYS],
        [[_cell(k, row.get(k)) for k in _COMMUNE_TABLE_KEYS] for row in report.commune_rows],
    )


# --------------------------------------------------------------------------- HTML

_env = Environment(
    loader=PackageLoader("indicator", "templates"),
    autoescape=select_autoescape(["html"]),
    trim_blocks=True,
    lstrip_blocks=True,
)


def render_html(report: Report) -> str:
    e = report.evaluation
    return _env.get_template("report_8_3.html").render(
        r=report,
        e=e,
        cell=_cell,
        commune_columns=COMMUNE_COLUMNS,
        village_columns=VILLAGE_COLUMNS,
        generated=format_datetime(report.generated_ms),
        first_day=format_date(e.start_ms),
        last_day=format_date(e.end_ms - 1),
    )


# --------------------------------------------------------------------------- PDF


# Nghị định 30/2020/NĐ-CP, Phụ lục I: Times New Roman (Liberation Serif 2.x from Debian's
# fonts-liberation2 has the same metrics and, unlike 1.x, every Vietnamese letter), A4,
# margins top/bottom 20-25 mm, left 30-35 mm, right 15-20 mm; sizes below in points.
FONT_SETS = (  # (directory, regular, bold, italic, bold italic), first found wins
    (
        Path("/usr/share/fonts/truetype/liberation2"),
        "LiberationSerif-Regular",
        "LiberationSerif-Bold",
        "LiberationSerif-Italic",
        "LiberationSerif-BoldItalic",
    ),
    (
        Path("/usr/share/fonts/truetype/dejavu"),
        "DejaVuSerif",
        "DejaVuSerif-Bold",
        "DejaVuSerif-Italic",
        "DejaVuSerif-BoldItalic",
    ),
)
MARGINS_MM = {"top": 20, "bottom": 20, "left": 30, "right": 15}


def _fonts() -> tuple[Path, tuple[str, str, str, str]]:
    for directory, *names in FONT_SETS:
        if all((directory / f"{n}.ttf").exists() for n in names):
            return directory, tuple(names)  # type: ignore[return-value]
    raise ReportUnavailable(
        "Thiếu phông chữ để xuất PDF tiếng Việt (cài gói Debian "
        "fonts-liberation2, phông tương đương Times New Roman)."
    )


def _annex_rows(report: Report) -> list[list[str]]:
    keys = [
        "commune",
        "village",
        "clusters",
        "coverage",
        "availability",
        "aired",
        "aired_ratio",
        "result",
        "reasons",
    ]
    return [
        [_cell(k, row.get(k)) if row.get(k) not in ("", None) else "—" for k in keys]
        for row in report.village_rows
    ]


ANNEX_HEADINGS = [
    "Xã",
    "Thôn",
    "Số cụm loa",
    "Đã giám sát",
    "Khả dụng",
    "Đã phát / số buổi",
    "Tỉ lệ phát",
    "Kết quả",
    "Lý do",
]


def render_pdf(report: Report) -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    directory, names = _fonts()
    lh = report.letterhead
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=MARGINS_MM["bottom"])
    pdf.set_margins(MARGINS_MM["left"], MARGINS_MM["top"], MARGINS_MM["right"])
    for style, name in zip(("", "B", "I", "BI"), names, strict=True):
        pdf.add_font("Serif", style, str(directory / f"{name}.ttf"))
    pdf.set_title(f"Báo cáo {report.title}")
    pdf.set_author(lh.issuer)
    pdf.set_creator("Loa")
    pdf.add_page()
    e = report.evaluation

    def text(
        width: float,
        height: float,
        value: str,
        style: str = "",
        size: float = 13,
        align: str = "L",
        stay_in_column: bool = False,
    ) -> None:
        pdf.set_font("Serif", style, size)
        pdf.multi_cell(
            width,
            height,
            value,
            align=align,
            new_x="LEFT" if stay_in_column else "LMARGIN",
            new_y="NEXT",
        )

    def rule_under(
        x: float, width: float, label: str, style: str, size: float, share: float
    ) -> None:
        """A solid line under a centred text, ``share`` of the text's length (Phụ lục I)."""
        pdf.set_font("Serif", style, size)
        length = min(pdf.get_string_width(label), width) * share
        mid, y = x + width / 2, pdf.get_y() + 0.6
        pdf.line(mid - length / 2, y, mid + length / 2, y)

    # Letterhead: superior and issuer on the left, national motto on the right.
    top, left_w = pdf.get_y(), 68
    right_w = pdf.w - pdf.l_margin - pdf.r_margin - left_w
    pdf.set_xy(pdf.l_margin, top)
    text(left_w, 5.5, lh.superior.upper(), "", 12.5, "C", True)
    text(left_w, 5.5, lh.issuer.upper(), "B", 12.5, "C", True)
    rule_under(pdf.l_margin, left_w, lh.issuer.upper().splitlines()[-1], "B", 12.5, 0.4)
    pdf.set_y(pdf.get_y() + 2.5)
    text(left_w, 6, lh.number_line, "", 13, "C", True)
    left_bottom = pdf.get_y()
    pdf.set_xy(pdf.l_margin + left_w, top)
    text(right_w, 5.5, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "B", 12, "C", True)
    text(right_w, 6, "Độc lập - Tự do - Hạnh phúc", "B", 13.5, "C", True)
    rule_under(pdf.l_margin + left_w, right_w, "Độc lập - Tự do - Hạnh phúc", "B", 13.5, 1.0)
    pdf.set_y(pdf.get_y() + 2.5)
    pdf.set_x(pdf.l_margin + left_w)
    text(right_w, 6, report.date_line, "I", 13.5, "C", True)
    pdf.set_xy(pdf.l_margin, max(left_bottom, pdf.get_y()) + 6)
    text(0, 7, "BÁO CÁO", "B", 14, "C")
    text(0, 6.5, report.title, "B", 14, "C")
    rule_under(pdf.l_margin, pdf.w - pdf.l_margin - pdf.r_margin, report.title, "B", 14, 0.33)
    pdf.ln(3)
    text(0, 6, f"({report.indicator_text})", "I", 13, "C")
    if report.basis_line:
        text(0, 6, report.basis_line, "I", 12, "C")
    text(
        0,
        6.5,
        f"Kỳ báo cáo: {(e.whole or e.period).label}, từ ngày "
        f"{report.first_day} đến ngày {format_date(e.end_ms - 1)}.",
        "",
        13,
        "C",
    )
    pdf.ln(3)

    def section(title: str) -> None:
        pdf.ln(2)
        text(0, 7, title, "B", 13)

    def table(
        headings: list[str],
        rows: list[list[str]],
        widths: list[float],
        size: float = 11,
        line_height: float = 5.5,
    ) -> None:
        pdf.set_font("Serif", "", size)
        with pdf.table(
            col_widths=widths,
            width=sum(widths),
            align="LEFT",
            text_align="LEFT",
            line_height=line_height,
            headings_style=FontFace(emphasis="BOLD"),
        ) as t:
            t.row(headings)
            for row in rows:
                t.row([str(x) for x in row])

    section("I. KẾT QUẢ CHUNG")
    for line in report.summary_lines + [d.text for d in e.districts]:
        text(0, 6.5, f"- {line}", "", 13, "J")
    pdf.ln(1)
    table(["Loại đài", "Số xã"], [list(r) for r in report.station_rows], [80, 30])
    section("II. TÌNH TRẠNG CỤM LOA (cuối kỳ)")
    table(["Trạng thái", "Số cụm"], [list(r) for r in report.state_rows], [80, 30])
    section("III. THỜI LƯỢNG PHÁT THANH THEO NGÔN NGỮ")
    table(["Ngôn ngữ", "Số giờ", "Tỉ lệ"], [list(r) for r in report.language_rows], [60, 30, 30])

    pdf.add_page(orientation="L")
    section(f"IV. KẾT QUẢ {report.label.upper()} THEO XÃ")
    table(
        *_commune_table(report),
        [10, 34, 14, 13, 13, 18, 18, 18, 15, 22, 77],
        10,
        4.8,
    )
    pdf.ln(3)
    text(
        0,
        5.5,
        "Chi tiết từng thôn tại Phụ lục kèm theo báo cáo này. Khả dụng: tỉ lệ thời "
        "gian hệ thống giám sát mà thôn có ít nhất một cụm loa hoạt động (trực "
        "tuyến, ampli tốt, ít nhất một loa tốt); thời gian hệ thống không giám sát "
        "và thời gian trước khi cụm loa đưa vào sử dụng không tính. Báo cáo lập từ "
        f"số liệu giám sát của hệ thống Loa lúc {format_datetime(report.generated_ms)}.",
        "I",
        11,
        "J",
    )
    if report.alert_rows is not None:
        section("V. CẢNH BÁO KHẨN CẤP TRONG KỲ")
        if report.alert_rows:
            table(*_alert_table(report), [34, 70, 18, 32, 24, 24, 25, 25], 10, 4.8)
            pdf.ln(1)
            text(0, 5.5, ALERTS_NOTE, "I", 11, "J")
        else:
            text(0, 6, ALERTS_NONE, "", 12)

    # Recipients on the left, the signer on the right (Phụ lục I, mục 8-9).
    pdf.ln(5)
    if pdf.get_y() > pdf.h - 60:
        pdf.add_page(orientation="L")
    y, half = pdf.get_y(), (pdf.w - pdf.l_margin - pdf.r_margin) / 2
    pdf.set_xy(pdf.l_margin, y)
    text(half, 5.5, "Nơi nhận:", "BI", 12, "L", True)
    text(half, 5, "\n".join(lh.recipient_lines), "", 11, "L", True)
    pdf.set_xy(pdf.l_margin + half, y)
    text(half, 6, f"{lh.signer_authority}\n{lh.signer_title}".strip().upper(), "B", 13, "C", True)
    pdf.set_x(pdf.l_margin + half)
    text(half, 6, "(Ký, ghi rõ họ tên, đóng dấu)", "I", 11, "C", True)
    pdf.set_xy(pdf.l_margin + half, pdf.get_y() + 22)
    text(half, 6, lh.signer_name, "B", 13, "C", True)

    # The annex: every village, so the body is complete without the other formats.
    pdf.add_page(orientation="L")
    text(0, 6.5, "PHỤ LỤC", "B", 13, "C")
    text(
        0,
        6.5,
        f"KẾT QUẢ THEO THÔN — {report.label.upper()} {(e.whole or e.period).label}",
        "B",
        13,
        "C",
    )
    text(
        0,
        6,
        f"(Kèm theo Báo cáo {lh.number_line.replace('Số:', 'số').strip()} "
        f"{report.date_line.split(', ', 1)[-1]})",
        "I",
        12,
        "C",
    )
    pdf.ln(2)
    table(ANNEX_HEADINGS, _annex_rows(report), [30, 34, 12, 18, 17, 22, 16, 26, 77], 10, 4.8)
    return bytes(pdf.output())


# --------------------------------------------------------------------------- DOCX


def render_docx(report: Report) -> bytes:
    """The same report as an editable Word document (offices edit before signing):
    python-docx, Times New Roman 13-14 pt, the Phụ lục I margins, the village annex."""
    from docx import Document
    from docx.enum.section import WD_ORIENT
    from docx.enum.text import WD_ALIGN_PARAGRAPH
    from docx.oxml.ns import qn
    from docx.shared import Mm, Pt

    lh = report.letterhead
    e = report.evaluation
    doc = Document()
    style = doc.styles["Normal"]
    style.font.name = "Times New Roman"
    style.element.rPr.rFonts.set(qn("w:eastAsia"), "Times New Roman")
    style.font.size = Pt(13)
    sec = doc.sections[0]
    sec.page_width, sec.page_height = Mm(210), Mm(297)
    sec.top_margin, sec.bottom_margin = Mm(MARGINS_MM["top"]), Mm(MARGINS_MM["bottom"])
    sec.left_margin, sec.right_margin = Mm(MARGINS_MM["left"]), Mm(MARGINS_MM["right"])

    def para(
        value: str,
        *,
        bold: bool = False,
        italic: bool = False,
        size: float = 13,
        align=WD_ALIGN_PARAGRAPH.LEFT,
        cell=None,
    ):
        p = cell.add_paragraph() if cell is not None else doc.add_paragraph()
        p.alignment = align
        run = p.add_run(value)
        run.bold, run.italic, run.font.size = bold, italic, Pt(size)
        return p

    head = doc.add_table(rows=1, cols=2)
    left, right = head.rows[0].cells
    left.paragraphs[0].text = ""
    center = WD_ALIGN_PARAGRAPH.CENTER
    para(lh.superior.upper(), size=12.5, align=center, cell=left)
    para(lh.issuer.upper(), bold=True, size=12.5, align=center, cell=left)
    para("―――――", align=center, cell=left, size=9)
    para(lh.number_line, align=center, cell=left)
    para("CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", bold=True, size=12.5, align=center, cell=right)
    para("Độc lập - Tự do - Hạnh phúc", bold=True, size=13.5, align=center, cell=right)
    para("――――――――――――", align=center, cell=right, size=9)
    para(report.date_line, italic=True, size=13.5, align=center, cell=right)
    para("BÁO CÁO", bold=True, size=14, align=center)
    para(report.title, bold=True, size=14, align=center)
    para(f"({report.indicator_text})", italic=True, align=center)
    if report.basis_line:
        para(report.basis_line, italic=True, size=12, align=center)
    para(
        f"Kỳ báo cáo: {(e.whole or e.period).label}, từ ngày {report.first_day} đến ngày "
        f"{format_date(e.end_ms - 1)}.",
        align=center,
    )

    def table(headings: list[str], rows: list[list[str]], size: float = 11) -> None:
        t = doc.add_table(rows=1, cols=len(headings))
        t.style = "Table Grid"
        for cell, h in zip(t.rows[0].cells, headings, strict=True):
            cell.text = ""
            run = cell.paragraphs[0].add_run(h)
            run.bold, run.font.size = True, Pt(size)
        for row in rows:
            cells = t.add_row().cells
            for cell, value in zip(cells, row, strict=True):
                cell.text = ""
                cell.paragraphs[0].add_run(str(value)).font.size = Pt(size)

    para("I. KẾT QUẢ CHUNG", bold=True)
    for line in report.summary_lines + [d.text for d in e.districts]:
        para(f"- {line}", align=WD_ALIGN_PARAGRAPH.JUSTIFY)
    table(["Loại đài", "Số xã"], [list(r) for r in report.station_rows])
    para("II. TÌNH TRẠNG CỤM LOA (cuối kỳ)", bold=True)
    table(["Trạng thái", "Số cụm"], [list(r) for r in report.state_rows])
    para("III. THỜI LƯỢNG PHÁT THANH THEO NGÔN NGỮ", bold=True)
    table(["Ngôn ngữ", "Số giờ", "Tỉ lệ"], [list(r) for r in report.language_rows])
    para(f"IV. KẾT QUẢ {report.label.upper()} THEO XÃ", bold=True)
    table(
        *_commune_table(report),
        9,
    )
    para("Chi tiết từng thôn tại Phụ lục kèm theo báo cáo này.", italic=True, size=12)
    if report.alert_rows is not None:
        para("V. CẢNH BÁO KHẨN CẤP TRONG KỲ", bold=True)
        if report.alert_rows:
            table(*_alert_table(report), 9)
            para(ALERTS_NOTE, italic=True, size=12)
        else:
            para(ALERTS_NONE)
    sign = doc.add_table(rows=1, cols=2)
    rl, rr = sign.rows[0].cells
    rl.paragraphs[0].text = ""
    para("Nơi nhận:", bold=True, italic=True, size=12, cell=rl)
    for line in lh.recipient_lines:
        para(line, size=11, cell=rl)
    para(
        f"{lh.signer_authority}\n{lh.signer_title}".strip().upper(),
        bold=True,
        align=center,
        cell=rr,
    )
    para("(Ký, ghi rõ họ tên, đóng dấu)", italic=True, size=11, align=center, cell=rr)
    para("\n\n\n" + lh.signer_name, bold=True, align=center, cell=rr)

    annex = doc.add_section()
    annex.orientation = WD_ORIENT.LANDSCAPE
    annex.page_width, annex.page_height = Mm(297), Mm(210)
    para("PHỤ LỤC", bold=True, align=center)
    para(
        f"KẾT QUẢ THEO THÔN — {report.label.upper()} {(e.whole or e.period).label}",
        bold=True,
        align=center,
    )
    table(ANNEX_HEADINGS, _annex_rows(report), 9)
    out = io.BytesIO()
    doc.save(out)
    return out.getvalue()


# --------------------------------------------------------------------------- XLSX, CSV


def render_xlsx(report: Report) -> bytes:
    from openpyxl import Workbook
    from openpyxl.styles import Alignment, Font
    from openpyxl.utils import get_column_letter

    e = report.evaluation
    wb = Workbook()
    ws = wb.active
    ws.title = "Theo xã"
    bold = Font(bold=True)
    ws.append([report.heading])
    ws.append([f"BÁO CÁO {report.title}"])
    ws.append(
        [
            f"Kỳ: {e.period.label} ({format_date(e.start_ms)} – {format_date(e.end_ms - 1)})"
            f" — {e.summary.text}"
        ]
    )
    ws.append([])
    header_row = ws.max_row + 1
    ws.append([h for _, h in COMMUNE_COLUMNS])
    for cell in ws[header_row]:
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for row in report.commune_rows:
        ws.append([spreadsheet_safe(row[k]) for k, _ in COMMUNE_COLUMNS])
        r = ws.max_row
        for key in ("min_availability", "min_aired"):
            ws.cell(r, [k for k, _ in COMMUNE_COLUMNS].index(key) + 1).number_format = "0.0%"
        ws.cell(r, [k for k, _ in COMMUNE_COLUMNS].index("hours") + 1).number_format = "0.0"
    ws.freeze_panes = ws.cell(header_row + 1, 1)
    ws.auto_filter.ref = f"A{header_row}:{get_column_letter(len(COMMUNE_COLUMNS))}{ws.max_row}"
    for i, width in enumerate([5, 14, 22, 16, 14, 8, 8, 8, 10, 10, 10, 10, 18, 80], 1):
        ws.column_dimensions[get_column_letter(i)].width = width

    vs = wb.create_sheet("Theo thôn")
    vcols = [
        ("commune", "Xã"),
        ("village", "Thôn"),
        ("clusters", "Số cụm loa"),
        ("availability", "Khả dụng"),
        ("aimed", "Buổi phát tới thôn"),
        ("played", "Buổi đã phát"),
        ("aired_ratio", "Tỉ lệ phát"),
        ("result", "Kết quả"),
        ("reasons", "Lý do"),
    ]
    vs.append([h for _, h in vcols])
    for cell in vs[1]:
        cell.font = bold
    for row in report.village_rows:
        vs.append([spreadsheet_safe(row[k]) for k, _ in vcols])
        vs.cell(vs.max_row, 4).number_format = "0.0%"
        vs.cell(vs.max_row, 7).number_format = "0.0%"
    vs.freeze_panes = "A2"
    for i, width in enumerate([20, 24, 10, 10, 12, 12, 10, 24, 60], 1):
        vs.column_dimensions[get_column_letter(i)].width = width

    ss = wb.create_sheet("Tổng hợp")
    for line in report.summary_lines:
        ss.append([line])
    for d in e.districts:
        ss.append([d.text])
    ss.append([])
    ss.append(["Loại đài", "Số xã"])
    for name, n in report.station_rows:
        ss.append([name, n])
    ss.append([])
    ss.append(["Trạng thái cụm loa (cuối kỳ)", "Số cụm"])
    for name, n in report.state_rows:
        ss.append([name, n])
    ss.append([])
    ss.append(["Ngôn ngữ", "Số giờ phát"])
    for key, ms in e.aired_ms_by_language.items():
        ss.append([LANGUAGE_NAMES[key], round(ms / 3_600_000, 2)])
    ss.column_dimensions["A"].width = 60
    out = io.BytesIO()
    wb.save(out)
    return out.getvalue()


CSV_COLUMNS = [
    ("code", "ma_xa"),
    ("name", "ten_xa"),
    ("district", "huyen_cu"),
    ("station", "loai_dai"),
    ("villages", "so_thon"),
    ("villages_passed", "so_thon_dat"),
    ("clusters", "so_cum_loa"),
    ("min_availability", "kha_dung_thap_nhat_pct"),
    ("min_aired", "ti_le_phat_thap_nhat_pct"),
    ("airings", "so_buoi_phat"),
    ("hours", "so_gio_phat"),
    ("result", "ket_qua"),
    ("evidence", "ly_do"),
]


def render_csv(report: Report) -> bytes:
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([h for _, h in CSV_COLUMNS])
    for row in report.commune_rows:
        values = []
        for key, _ in CSV_COLUMNS:
            v = row[key]
            if key in ("min_availability", "min_aired") and v is not None:
                v = round(v * 100, 2)
            elif key == "hours":
                v = round(v, 2)
            values.append("" if v is None else spreadsheet_safe(v))
        writer.writerow(values)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


RENDERERS = {
    "html": lambda r: render_html(r).encode("utf-8"),
    "pdf": render_pdf,
    "xlsx": render_xlsx,
    "csv": render_csv,
    "docx": render_docx,
}


def render(report: Report, fmt: str) -> bytes:
    fmt = (fmt or "").lower()
    if fmt not in RENDERERS:
        raise IndicatorError(f"Định dạng '{fmt}' không hỗ trợ (html, pdf, docx, xlsx, csv).")
    return RENDERERS[fmt](report)
