"""The periodic report, rendered for real: PDF pages rasterised by poppler's pdftoppm, the
spreadsheet reopened with openpyxl, the CSV re-read, the HTML parsed for its structure."""

from __future__ import annotations

import csv
import io
import shutil
import subprocess
from html.parser import HTMLParser

import pytest
from openpyxl import load_workbook
from PIL import Image

from indicator.periods import parse_period
from indicator.reports import build_report, render
from tests.indicator.world import ict, small_province

Q3_START, Q3_END = ict(2026, 7, 1), ict(2026, 10, 1)
REPORT_DAY = ict(2026, 10, 5, 9)  # 05/10/2026: day below 10 gets its leading zero


@pytest.fixture
def report(world, db):
    codes = small_province(world, Q3_START, Q3_END)
    with db.session() as s:
        rep = build_report(s, parse_period("2026-Q3", now_ms=REPORT_DAY), now=REPORT_DAY)
    rep.codes = codes
    return rep


def test_report_figures(report):
    e = report.evaluation
    assert e.summary.text == "2/3 xã đạt chỉ tiêu truyền thanh cơ sở"
    assert report.title == "Kết quả thực hiện chỉ tiêu truyền thanh cơ sở quý 3 năm 2026"
    assert report.heading == "UBND TỈNH LẠNG SƠN"
    assert report.date_line == "Lạng Sơn, ngày 05 tháng 10 năm 2026"
    rows = {r["code"]: r for r in report.commune_rows}
    assert rows["ls-quockhanh"]["result"] == "Không đạt"
    assert rows["ls-quockhanh"]["evidence"] == "Thôn Bản Cắm: khả dụng 83,6% < 90%"
    assert rows["ls-vule"]["result"] == "Đạt (xác nhận thủ công)"
    assert rows["ls-doican"]["evidence"].startswith("Cả 2 thôn đạt; khả dụng thấp nhất 100%")
    # 92 days x 1 bulletin (Đội Cấn) + 92 x 2 (Quốc Khánh), 10 minutes each; Sundays in Tày
    assert e.airings == 92 * 3
    assert e.aired_ms == 92 * 3 * 10 * 60_000
    sundays = 13
    assert e.aired_ms_by_language["tay"] == sundays * 3 * 10 * 60_000
    assert dict(report.language_rows and [(n, h) for n, h, _ in report.language_rows]) == {
        "Tiếng Việt": "39,5",
        "Tiếng Tày": "6,5",
        "Tiếng Nùng": "0",
        "Tiếng Dao": "0",
        "Khác": "0",
    }
    assert dict(report.station_rows)["Đài FM"] == 1
    assert dict(report.station_rows)["Đài IP (cụm loa CNTT-VT)"] == 2
    assert dict(report.state_rows) == {
        "Hoạt động": 4,
        "Suy giảm": 0,
        "Mất kết nối": 0,
        "Chưa rõ": 0,
    }


@pytest.mark.skipif(not shutil.which("pdftoppm"), reason="needs poppler-utils")
def test_pdf_renders_vietnamese_pages(report, tmp_path):
    pdf = render(report, "pdf")
    assert pdf.startswith(b"%PDF-")
    path = tmp_path / "bao-cao.pdf"
    path.write_bytes(pdf)
    subprocess.run(
        ["pdftoppm", "-r", "40", "-png", str(path), str(tmp_path / "page")], check=True, timeout=60
    )
    pages = sorted(tmp_path.glob("page-*.png"))
    assert len(pages) >= 2  # portrait summary + landscape tables
    for page in pages:
        dark = sum(Image.open(page).convert("L").histogram()[:128])
        assert dark > 500, f"{page.name} is (almost) blank"
    first = Image.open(pages[0])
    assert first.width < first.height  # A4 portrait
    assert Image.open(pages[1]).width > Image.open(pages[1]).height  # landscape table
    text = subprocess.run(
        ["pdftotext", "-layout", str(path), "-"],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    for expected in (
        "UBND TỈNH LẠNG SƠN",
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Lạng Sơn, ngày 05 tháng 10 năm 2026",
        "Kết quả thực hiện chỉ tiêu truyền thanh cơ sở quý 3 năm 2026",
        "2/3 xã đạt chỉ tiêu truyền thanh cơ sở",
        "Quốc Khánh",
        "Tiếng Tày",
        "Không đạt",
        "khả dụng 83,6% < 90%",
    ):
        assert expected in text, expected


def test_xlsx_has_one_row_per_commune(report):
    wb = load_workbook(io.BytesIO(render(report, "xlsx")))
    assert wb.sheetnames == ["Theo xã", "Theo thôn", "Tổng hợp"]
    ws = wb["Theo xã"]
    rows = list(ws.iter_rows(values_only=True))
    header_at = next(i for i, r in enumerate(rows) if r and r[0] == "STT")
    header, body = rows[header_at], [r for r in rows[header_at + 1 :] if any(r)]
    assert len(body) == len(report.evaluation.communes) == 3
    col = {name: i for i, name in enumerate(header)}
    by_code = {r[col["Mã xã"]]: r for r in body}
    assert set(by_code) == {"ls-doican", "ls-quockhanh", "ls-vule"}
    assert by_code["ls-quockhanh"][col["Kết quả"]] == "Không đạt"
    assert by_code["ls-quockhanh"][col["Khả dụng thấp nhất"]] == pytest.approx(0.8369, abs=1e-3)
    assert by_code["ls-vule"][col["Kết quả"]] == "Đạt (xác nhận thủ công)"
    assert ws.cell(header_at + 2, col["Khả dụng thấp nhất"] + 1).number_format == "0.0%"
    villages = list(wb["Theo thôn"].iter_rows(values_only=True))
    assert len(villages) == 1 + 5


def test_csv_has_one_row_per_commune(report):
    data = render(report, "csv")
    assert data.startswith(b"\xef\xbb\xbf")
    rows = list(csv.DictReader(io.StringIO(data.decode("utf-8-sig"))))
    assert [r["ma_xa"] for r in rows] == ["ls-doican", "ls-quockhanh", "ls-vule"]
    assert rows[1]["ket_qua"] == "Không đạt"
    assert float(rows[1]["kha_dung_thap_nhat_pct"]) == pytest.approx(83.696, abs=0.01)
    assert rows[2]["kha_dung_thap_nhat_pct"] == ""


class _Cells(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.rows: list[dict] = []
        self.scripts = 0

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "tr" and "data-code" in attrs:
            self.rows.append(attrs)
        if tag in ("script", "b"):
            self.scripts += 1


def test_html_is_a_provincial_report_and_escapes_names(report):
    html = render(report, "html").decode("utf-8")
    for expected in (
        "UBND TỈNH LẠNG SƠN",
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Lạng Sơn, ngày 05 tháng 10 năm 2026",
        "<h1>BÁO CÁO</h1>",
        "Kết quả thực hiện chỉ tiêu truyền thanh cơ sở quý 3 năm 2026",
        "Thôn Bản Cắm: khả dụng 83,6% &lt; 90%",
        "Căn cứ: Bộ tiêu chí quốc gia về xã nông thôn mới giai đoạn 2026-2030",
        "Thôn Nà &lt;b&gt;Pàn&lt;/b&gt;",
    ):
        assert expected in html, expected
    # Q3/2026 is after 01/07/2025: no district subtotals, no "8.3" (issue 16).
    assert "Tràng Định: 1/2" not in html and "8.3" not in html
    cells = _Cells()
    cells.feed(html)
    assert [(r["data-code"], r["class"]) for r in cells.rows] == [
        ("ls-doican", "pass"),
        ("ls-quockhanh", "fail"),
        ("ls-vule", "pass"),
    ]
    assert cells.scripts == 0  # the markup in a village name stayed text


def test_unknown_format_is_refused(report):
    from indicator.errors import IndicatorError

    with pytest.raises(IndicatorError, match="không hỗ trợ"):
        render(report, "odt")
