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
from collections.abc import Collection
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, PackageLoader, select_autoescape
from sqlalchemy.orm import Session

from controller.indicator.errors import IndicatorError
from controller.indicator.evaluate import (
    VERDICT_TEXT,
    CommuneVerdict,
    Evaluation,
    evaluate,
    split_text,
)
from controller.indicator.periods import Period
from controller.indicator.vn import (
    LANGUAGE_NAMES,
    STATE_NAMES,
    STATION_NAMES,
    admin_date_line,
    hours,
    number,
    percent,
    province_heading,
    province_place,
    village_title,
)
from loa.timeutil import format_date, format_datetime, now_ms

FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"), Path("/usr/share/fonts/dejavu"))
MEDIA_TYPES = {
    "html": "text/html; charset=utf-8",
    "pdf": "application/pdf",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    "csv": "text/csv; charset=utf-8",
}
KIND_TITLES = {"quarter": "Báo cáo quý", "half": "Báo cáo 6 tháng", "year": "Báo cáo năm",
               "month": "Báo cáo tháng"}

COMMUNE_COLUMNS = [  # (key, heading) shared by every format
    ("stt", "STT"), ("code", "Mã xã"), ("name", "Tên xã"), ("district", "Huyện (cũ)"),
    ("station", "Loại đài"), ("villages", "Số thôn"), ("villages_passed", "Số thôn đạt"),
    ("clusters", "Số cụm loa"), ("min_availability", "Khả dụng thấp nhất"),
    ("min_aired", "Tỉ lệ phát thấp nhất"), ("airings", "Số buổi phát"),
    ("hours", "Số giờ phát"), ("result", "Kết quả"), ("evidence", "Lý do / căn cứ"),
]
VILLAGE_COLUMNS = [
    ("commune", "Xã"), ("village", "Thôn"), ("clusters", "Số cụm loa"),
    ("availability", "Khả dụng"), ("aired", "Đã phát / số buổi phát tới thôn"),
    ("aired_ratio", "Tỉ lệ phát"), ("result", "Kết quả"), ("reasons", "Lý do"),
]


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

    @property
    def period(self) -> Period:
        return self.evaluation.period

    @property
    def criteria(self):
        return self.evaluation.criteria

    @property
    def indicator_text(self) -> str:
        c = self.criteria
        return c.indicator_text if c is not None else "Xã có đài truyền thanh và hệ thống " \
            "loa đến các thôn"

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
        return "; ".join(r.text for r in c.reasons if r.level != "info" or c.manual
                         or c.verdict == "not_in_service")
    worst_av = min((v.availability for v in c.villages if v.availability is not None),
                   default=None)
    worst_aired = min((v.aired_ratio for v in c.villages if v.aired_ratio is not None),
                      default=None)
    return (f"Cả {len(c.villages)} thôn đạt; khả dụng thấp nhất {percent(worst_av)}; "
            f"tỉ lệ phát thấp nhất {percent(worst_aired)}; có buổi phát mọi tuần "
            f"({c.airings} buổi); đã giám sát {percent(c.coverage)} thời gian")


def _commune_row(i: int, c: CommuneVerdict) -> dict:
    measured = [v for v in c.villages if v.passed is not None]
    return {
        "stt": i, "code": c.code, "name": c.name + (
            " (hợp nhất từ " + ", ".join(f"{p['name']} ngày {p['merged_on']}"
                                         for p in c.predecessors) + ")"
            if c.predecessors else ""),
        "district": c.district_name or "",
        "station": STATION_NAMES.get(c.station, c.station),
        "villages": len(c.villages),
        "villages_passed": sum(1 for v in measured if v.passed) if not c.manual else None,
        "clusters": c.clusters,
        "min_availability": min((v.availability for v in measured
                                 if v.availability is not None), default=None),
        "coverage": c.coverage,
        "min_aired": min((v.aired_ratio for v in measured if v.aired_ratio is not None),
                         default=None),
        "airings": c.airings, "hours": c.aired_ms / 3_600_000,
        "result": _result_text(c), "passed": c.passed, "manual": c.manual,
        "evidence": _evidence(c),
    }


def _village_rows(c: CommuneVerdict) -> list[dict]:
    rows = []
    for v in c.villages:
        if c.manual or c.station_kind in ("fm", "wired"):
            result = "Không đo (đài FM/hữu tuyến)"
        else:
            result = VERDICT_TEXT.get(v.verdict, "Không đạt")
        rows.append({"commune": c.name, "commune_code": c.code,
                     "village": village_title(v.name),
                     "clusters": len(v.clusters), "availability": v.availability,
                     "coverage": v.coverage,
                     "aired": f"{v.played}/{v.aimed}" if v.passed is not None else "",
                     "aimed": v.aimed, "played": v.played, "aired_ratio": v.aired_ratio,
                     "result": result, "passed": v.passed,
                     "reasons": "; ".join(r.text.split(": ", 1)[-1] for r in v.reasons)})
    return rows


def build_report(session: Session, period: Period, *, now: int | None = None,
                 scope: str | None = None,
                 allowed_commune_ids: Collection[int] | None = None) -> Report:
    generated = now_ms() if now is None else now
    e = evaluate(session, period, now=generated, scope=scope,
                 allowed_commune_ids=allowed_commune_ids)
    province = e.province_name or "…"
    s = e.summary
    lines = [f"{s.text} ({s.manual} xã đạt theo xác nhận thủ công)." if s.manual
             else f"{s.text}."]
    if e.parts:
        lines.append(split_text(e))
    if s.observed is not None:
        gaps = len(e.unobserved)
        lines.append(f"Hệ thống đã giám sát {percent(s.observed)} thời gian kỳ báo cáo"
                     + (f" ({gaps} khoảng mất giám sát, không tính vào khả dụng)." if gaps
                        else "."))
    if e.end_ms < period.end_ms:
        lines.append(f"Kỳ báo cáo chưa kết thúc: số liệu tính đến {format_datetime(e.end_ms)}.")
    th = e.thresholds
    lines.append(
        f"Tiêu chí áp dụng: mỗi thôn có cụm loa khả dụng từ {percent(th.availability)} thời "
        f"gian và phát từ {percent(th.aired)} số buổi phát tới thôn; đài phát ít nhất "
        f"{th.broadcasts_per_week_min} buổi mỗi tuần; chỉ tính thời gian hệ thống giám sát, "
        f"cần giám sát từ {percent(th.coverage)} thời gian sử dụng để kết luận.")
    lines.append(
        f"Tổng số buổi phát: {number(e.airings, 0)}; tổng thời lượng: {hours(e.aired_ms)} giờ.")
    total_ms = e.aired_ms or 1
    report = Report(
        evaluation=e, generated_ms=generated, heading=province_heading(province),
        date_line=admin_date_line(province_place(province), generated),
        kind_title=KIND_TITLES.get(period.kind, "Báo cáo"),
        title=f"Kết quả thực hiện {e.criteria.label if e.criteria else 'chỉ tiêu 8.3'} "
              f"{(e.whole or period).title}", summary_lines=lines,
        commune_rows=[_commune_row(i, c) for i, c in enumerate(e.communes, 1)],
        village_rows=[r for c in e.communes for r in _village_rows(c)],
        language_rows=[(LANGUAGE_NAMES[k], hours(ms), percent(ms / total_ms))
                       for k, ms in e.aired_ms_by_language.items()],
        state_rows=[(STATE_NAMES[k], n) for k, n in e.clusters_by_state.items()],
        station_rows=[("Đài IP (cụm loa CNTT-VT)", s.stations.get("ip", 0)),
                      ("Đài FM", s.stations.get("fm", 0)),
                      ("Đài hữu tuyến", s.stations.get("wired", 0)),
                      ("Chưa có đài", s.stations.get("none", 0))],
    )
    return report


def _cell(key: str, value) -> str:
    """A value as printed in HTML and PDF."""
    if value is None:
        return "—"
    if key in ("min_availability", "min_aired", "availability", "aired_ratio"):
        return percent(value)
    if key == "hours":
        return number(value, 1)
    return str(value)


# --------------------------------------------------------------------------- HTML

_env = Environment(loader=PackageLoader("controller.indicator", "templates"),
                   autoescape=select_autoescape(["html"]), trim_blocks=True,
                   lstrip_blocks=True)


def render_html(report: Report) -> str:
    e = report.evaluation
    return _env.get_template("report_8_3.html").render(
        r=report, e=e, cell=_cell, commune_columns=COMMUNE_COLUMNS,
        village_columns=VILLAGE_COLUMNS, generated=format_datetime(report.generated_ms),
        first_day=format_date(e.start_ms), last_day=format_date(e.end_ms - 1))


# --------------------------------------------------------------------------- PDF


def _font_dir() -> Path:
    for d in FONT_DIRS:
        if (d / "DejaVuSerif.ttf").exists():
            return d
    raise ReportUnavailable("Thiếu phông chữ DejaVu để xuất PDF tiếng Việt "
                            "(cài gói Debian fonts-dejavu-core).")


def render_pdf(report: Report) -> bytes:
    from fpdf import FPDF
    from fpdf.fonts import FontFace

    fonts = _font_dir()
    pdf = FPDF(orientation="P", unit="mm", format="A4")
    pdf.set_auto_page_break(True, margin=15)
    pdf.set_margins(20, 15, 15)
    for style, name in (("", "DejaVuSerif"), ("B", "DejaVuSerif-Bold"),
                        ("I", "DejaVuSerif-Italic"), ("BI", "DejaVuSerif-BoldItalic")):
        pdf.add_font("Serif", style, str(fonts / f"{name}.ttf"))
    pdf.set_title(f"Báo cáo {report.title}")
    pdf.set_author(report.heading)
    pdf.set_creator("Loa")
    pdf.add_page()
    e = report.evaluation

    def text(width: float, height: float, value: str, style: str = "", size: float = 11,
             align: str = "L", stay_in_column: bool = False) -> None:
        pdf.set_font("Serif", style, size)
        pdf.multi_cell(width, height, value, align=align,
                       new_x="LEFT" if stay_in_column else "LMARGIN", new_y="NEXT")

    # Heading: authority on the left, national motto on the right (Nghị định 30/2020).
    top, left_w, right_w = pdf.get_y(), 70, 105
    pdf.set_xy(pdf.l_margin, top)
    text(left_w, 5, report.heading, "B", 11, "C", True)
    text(left_w, 6, "Số:      /BC-UBND", "", 11, "C", True)
    pdf.set_xy(pdf.l_margin + left_w, top)
    text(right_w, 5, "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM", "B", 10.5, "C", True)
    text(right_w, 5.5, "Độc lập - Tự do - Hạnh phúc", "B", 11.5, "C", True)
    mid = pdf.l_margin + left_w + right_w / 2
    pdf.line(mid - 27, pdf.get_y() + 0.3, mid + 27, pdf.get_y() + 0.3)
    text(right_w, 8, report.date_line, "I", 11, "C", True)
    pdf.set_x(pdf.l_margin)
    pdf.ln(6)
    text(0, 7, "BÁO CÁO", "B", 14, "C")
    text(0, 6.5, report.title, "B", 12.5, "C")
    text(0, 6, f"({report.indicator_text})", "I", 11, "C")
    if report.basis_line:
        text(0, 6, report.basis_line, "I", 10.5, "C")
    text(0, 6, f"Kỳ báo cáo: {e.period.label}, từ ngày {format_date(e.start_ms)} "
               f"đến ngày {format_date(e.end_ms - 1)}.", "", 11, "C")
    pdf.ln(3)

    def section(title: str) -> None:
        pdf.ln(2)
        text(0, 7, title, "B", 12)

    def table(headings: list[str], rows: list[list[str]], widths: list[float],
              size: float = 10, line_height: float = 5.5) -> None:
        pdf.set_font("Serif", "", size)
        with pdf.table(col_widths=widths, width=sum(widths), align="LEFT",
                       text_align="LEFT", line_height=line_height,
                       headings_style=FontFace(emphasis="BOLD")) as t:
            t.row(headings)
            for row in rows:
                t.row([str(x) for x in row])

    section("I. KẾT QUẢ CHUNG")
    for line in report.summary_lines + [d.text for d in e.districts]:
        text(0, 6, f"- {line}")
    pdf.ln(1)
    table(["Loại đài", "Số xã"], [list(r) for r in report.station_rows], [80, 30])
    section("II. TÌNH TRẠNG CỤM LOA (cuối kỳ)")
    table(["Trạng thái", "Số cụm"], [list(r) for r in report.state_rows], [80, 30])
    section("III. THỜI LƯỢNG PHÁT THANH THEO NGÔN NGỮ")
    table(["Ngôn ngữ", "Số giờ", "Tỉ lệ"], [list(r) for r in report.language_rows],
          [60, 30, 30])

    pdf.add_page(orientation="L")
    section(f"IV. KẾT QUẢ {report.label.upper()} THEO XÃ")
    keys = ["stt", "name", "station", "villages", "clusters", "min_availability", "min_aired",
            "airings", "hours", "result", "evidence"]
    heads = dict(COMMUNE_COLUMNS)
    table([heads[k] for k in keys],
          [[_cell(k, row[k]) for k in keys] for row in report.commune_rows],
          [10, 32, 20, 14, 14, 20, 20, 16, 16, 22, 78], 8.5, 4.5)
    # On paper the village detail is what a reader acts on: the villages of communes that
    # did not pass. Every village is in the HTML and XLSX versions.
    failing = {c.code for c in e.communes if not c.passed}
    rows = [r for r in report.village_rows if r["commune_code"] in failing]
    section("V. CHI TIẾT CÁC THÔN CỦA XÃ CHƯA ĐẠT")
    if rows:
        vkeys = ["commune", "village", "clusters", "availability", "aired", "aired_ratio",
                 "result", "reasons"]
        vheads = dict(VILLAGE_COLUMNS)
        table([vheads[k] for k in vkeys],
              [[_cell(k, row[k]) if row[k] != "" else "—" for k in vkeys] for row in rows],
              [34, 40, 16, 20, 28, 18, 30, 76], 8.5, 4.5)
    else:
        text(0, 6, "Không có xã nào chưa đạt.")
    text(0, 5, "Chi tiết của tất cả các thôn có trong bản HTML và XLSX của báo cáo này.",
         "I", 9)
    pdf.ln(6)
    text(0, 5, f"Báo cáo lập tự động từ số liệu giám sát của hệ thống Loa lúc "
               f"{format_datetime(report.generated_ms)}. Khả dụng: tỉ lệ thời gian thôn có ít "
               "nhất một cụm loa hoạt động (trực tuyến, ampli tốt, ít nhất một loa tốt).",
         "I", 9)

    # Recipients on the left, the signing authority on the right.
    pdf.ln(4)
    if pdf.get_y() > pdf.h - 50:
        pdf.add_page(orientation="L")
    y, half = pdf.get_y(), (pdf.w - pdf.l_margin - pdf.r_margin) / 2
    pdf.set_xy(pdf.l_margin, y)
    text(half, 5, "Nơi nhận:", "BI", 10, "L", True)
    text(half, 4.5, "- Sở Văn hóa, Thể thao và Du lịch;\n- Lưu: VT.", "", 9, "L", True)
    pdf.set_xy(pdf.l_margin + half, y)
    text(half, 5.5, "TM. ỦY BAN NHÂN DÂN\nCHỦ TỊCH", "B", 11, "C", True)
    return bytes(pdf.output())


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
    ws.append([f"Kỳ: {e.period.label} ({format_date(e.start_ms)} – {format_date(e.end_ms - 1)})"
               f" — {e.summary.text}"])
    ws.append([])
    header_row = ws.max_row + 1
    ws.append([h for _, h in COMMUNE_COLUMNS])
    for cell in ws[header_row]:
        cell.font = bold
        cell.alignment = Alignment(wrap_text=True, vertical="top")
    for row in report.commune_rows:
        ws.append([row[k] for k, _ in COMMUNE_COLUMNS])
        r = ws.max_row
        for key in ("min_availability", "min_aired"):
            ws.cell(r, [k for k, _ in COMMUNE_COLUMNS].index(key) + 1).number_format = "0.0%"
        ws.cell(r, [k for k, _ in COMMUNE_COLUMNS].index("hours") + 1).number_format = "0.0"
    ws.freeze_panes = ws.cell(header_row + 1, 1)
    ws.auto_filter.ref = (f"A{header_row}:{get_column_letter(len(COMMUNE_COLUMNS))}"
                          f"{ws.max_row}")
    for i, width in enumerate([5, 14, 22, 16, 14, 8, 8, 8, 10, 10, 10, 10, 18, 80], 1):
        ws.column_dimensions[get_column_letter(i)].width = width

    vs = wb.create_sheet("Theo thôn")
    vcols = [("commune", "Xã"), ("village", "Thôn"), ("clusters", "Số cụm loa"),
             ("availability", "Khả dụng"), ("aimed", "Buổi phát tới thôn"),
             ("played", "Buổi đã phát"), ("aired_ratio", "Tỉ lệ phát"), ("result", "Kết quả"),
             ("reasons", "Lý do")]
    vs.append([h for _, h in vcols])
    for cell in vs[1]:
        cell.font = bold
    for row in report.village_rows:
        vs.append([row[k] for k, _ in vcols])
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


CSV_COLUMNS = [("code", "ma_xa"), ("name", "ten_xa"), ("district", "huyen_cu"),
               ("station", "loai_dai"), ("villages", "so_thon"),
               ("villages_passed", "so_thon_dat"), ("clusters", "so_cum_loa"),
               ("min_availability", "kha_dung_thap_nhat_pct"),
               ("min_aired", "ti_le_phat_thap_nhat_pct"), ("airings", "so_buoi_phat"),
               ("hours", "so_gio_phat"), ("result", "ket_qua"), ("evidence", "ly_do")]


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
            values.append("" if v is None else v)
        writer.writerow(values)
    return ("\ufeff" + out.getvalue()).encode("utf-8")


RENDERERS = {"html": lambda r: render_html(r).encode("utf-8"), "pdf": render_pdf,
             "xlsx": render_xlsx, "csv": render_csv}


def render(report: Report, fmt: str) -> bytes:
    fmt = (fmt or "").lower()
    if fmt not in RENDERERS:
        raise IndicatorError(f"Định dạng '{fmt}' không hỗ trợ (html, pdf, xlsx, csv).")
    return RENDERERS[fmt](report)
