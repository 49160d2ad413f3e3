"""A report that can be filed as is (issue 16): the letterhead comes from the province's
settings with per-report overrides, the layout follows Nghị định 30/2020/NĐ-CP (Times New
Roman metrics: Liberation Serif embedded; margins), every village is in the PDF's annex, and
the same report exists as an editable DOCX. The PDF is read back with pdftotext/pdffonts."""

from __future__ import annotations

import io
import subprocess

import pytest
from docx import Document
from sqlalchemy import select

from dashboard.models import AuditLog
from indicator import letterhead
from indicator.errors import InvalidInputError
from indicator.periods import parse_period
from indicator.reports import build_report, render
from tests.indicator.test_api import api, seeded  # noqa: F401 (fixtures)
from tests.indicator.world import ict, small_province

Q3_START, Q3_END = ict(2026, 7, 1), ict(2026, 10, 1)
REPORT_DAY = ict(2026, 10, 5, 9)
PROVINCE_LETTERHEAD = {
    "superior": "UBND tỉnh Lạng Sơn",
    "issuer": "Sở Văn hóa, Thể thao và Du lịch",
    "number_symbol": "/BC-SVHTTDL",
    "signer_authority": "KT. GIÁM ĐỐC",
    "signer_title": "PHÓ GIÁM ĐỐC",
    "signer_name": "Nguyễn Văn Bình",
    "recipients": "Cục Thông tin cơ sở và Thông tin đối ngoại;\nUBND tỉnh;\nLưu: VT, TTCS.",
}


@pytest.fixture
def report(world, db):
    small_province(world, Q3_START, Q3_END)
    with db.session() as s:
        letterhead.update(s, PROVINCE_LETTERHEAD, by="tinh")
        return build_report(
            s,
            parse_period("2026-Q3", now_ms=REPORT_DAY),
            now=REPORT_DAY,
            letterhead={"signer_name": "Hoàng Thị Lan", "number_symbol": "125/BC-SVHTTDL"},
        )


def _pdf_text(tmp_path, data: bytes) -> tuple[str, str]:
    path = tmp_path / "bao-cao.pdf"
    path.write_bytes(data)
    text = subprocess.run(
        ["pdftotext", str(path), "-"], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    fonts = subprocess.run(
        ["pdffonts", str(path)], check=True, capture_output=True, text=True, timeout=60
    ).stdout
    return text, fonts


def test_pdf_has_the_letterhead_layout_and_the_village_annex(report, tmp_path):
    text, fonts = _pdf_text(tmp_path, render(report, "pdf"))
    flat = " ".join(text.split())
    for expected in (
        "UBND TỈNH LẠNG SƠN",
        "SỞ VĂN HÓA, THỂ THAO",
        "DU LỊCH",
        "Số: 125/BC-SVHTTDL",
        "CỘNG HÒA XÃ HỘI CHỦ NGHĨA VIỆT NAM",
        "Độc lập - Tự do - Hạnh phúc",
        "Lạng Sơn, ngày 05 tháng 10 năm 2026",
        "BÁO CÁO",
        "Kết quả thực hiện chỉ tiêu truyền thanh cơ sở quý 3 năm 2026",
        "Nơi nhận:",
        "- Cục Thông tin cơ sở và Thông tin đối ngoại;",
        "- Lưu: VT, TTCS.",
        "KT. GIÁM ĐỐC",
        "PHÓ GIÁM ĐỐC",
        "Hoàng Thị Lan",
        "PHỤ LỤC",
        "KẾT QUẢ THEO THÔN",
    ):
        assert expected in flat, expected
    # Every village is in the annex, passing ones too: the PDF is complete in itself.
    for village in ("Thôn Khau Bang", "Thôn Pò Mã", "Thôn Nà Sao", "Thôn Bản Cắm"):
        assert village in flat, village
    assert "HTML" not in flat and "XLSX" not in flat
    assert "Nguyễn Văn Bình" not in flat  # this report's signer replaced the province's
    assert "LiberationSerif" in fonts and "DejaVu" not in fonts
    assert fonts.count(" yes ") >= 3  # embedded (subset) fonts only


def test_docx_is_the_same_report_editable(report):
    doc = Document(io.BytesIO(render(report, "docx")))
    paragraphs = [p.text for p in doc.paragraphs]
    cells = [c.text for t in doc.tables for r in t.rows for c in r.cells]
    everything = " ".join(paragraphs + cells)
    for expected in (
        "BÁO CÁO",
        "Kết quả thực hiện chỉ tiêu truyền thanh cơ sở quý 3 năm 2026",
        "SỞ VĂN HÓA, THỂ THAO VÀ DU LỊCH",
        "Số: 125/BC-SVHTTDL",
        "Lạng Sơn, ngày 05 tháng 10 năm 2026",
        "Hoàng Thị Lan",
        "PHỤ LỤC",
        "Thôn Bản Cắm",
        "khả dụng 83,6% < 90%",
    ):
        assert expected in everything, expected
    assert doc.styles["Normal"].font.name == "Times New Roman"
    first = doc.sections[0]
    assert round(first.left_margin.mm) == 30 and round(first.right_margin.mm) == 15
    annex = doc.tables[-1]
    assert len(annex.rows) == 1 + len(report.village_rows)


def test_letterhead_input_is_checked(db):
    with db.session() as s:
        with pytest.raises(InvalidInputError, match="Trường không được hỗ trợ: seal"):
            letterhead.update(s, {"seal": "x"})
        with pytest.raises(InvalidInputError, match="phải là chuỗi"):
            letterhead.update(s, {"signer_name": 5})
        with pytest.raises(InvalidInputError, match="dài quá 300"):
            letterhead.update(s, {"issuer": "x" * 301})
        assert letterhead.current(s) == letterhead.Letterhead()  # nothing half-written


def test_letterhead_over_the_api_is_audited_and_used_by_the_report(api):  # noqa: F811
    tinh, xa = api.tokens["tinh"], api.tokens["xa"]
    r = api.put("/api/v1/indicators/report-settings", headers=xa, json={"signer_name": "A"})
    assert r.status_code == 403
    r = api.put(
        "/api/v1/indicators/report-settings",
        headers=tinh,
        json={"signer_name": "Nguyễn Văn Bình", "place": "Lạng Sơn"},
    )
    assert r.status_code == 200 and r.json()["signer_name"] == "Nguyễn Văn Bình"
    r = api.get(
        "/api/v1/indicators/radio/report",
        headers=tinh,
        params={"format": "docx", "recipients": "UBND tỉnh\nLưu: VT."},
    )
    assert r.status_code == 200
    doc = Document(io.BytesIO(r.content))
    cells = " ".join(c.text for t in doc.tables for row in t.rows for c in row.cells)
    assert "Nguyễn Văn Bình" in cells and "- UBND tỉnh" in cells
    with api.db.session() as s:
        assert s.scalars(
            select(AuditLog).where(AuditLog.action == "indicator.report_settings.update")
        ).one()
