"""Names a spreadsheet would run as formulas (issue 17, finding 11): one guard
(``loa.text.spreadsheet_safe``) for the registry export, the 8.3 CSV and XLSX and the
credentials file; the registry import refuses such names and reads its own export back.

Before: the guard knew only = + @ and guarded input alone, so a commune named
``-2+3+cmd|' /C calc'!A0`` came out raw in the 8.3 CSV and the registry export."""

from __future__ import annotations

import csv
import io

import pytest
from openpyxl import load_workbook

from indicator.periods import parse_period
from indicator.reports import build_report, render
from loa.text import FORMULA_STARTS, spreadsheet_safe, spreadsheet_text
from loa.timeutil import now_ms
from registry import importer
from registry.errors import InvalidInputError
from tests.factories import make_registry

ATTACK = "-2+3+cmd|' /C calc'!A0"
# Stored before the input guard knew these (make_registry writes rows without validation).
NAMES = {
    ATTACK: {"+Thôn cộng": ["fg-001"], "@Thôn a còng": ["fg-002"]},
    '=HYPERLINK("http://x")': {"\tThôn tab": ["fg-003"], "\rThôn cr": ["fg-004"]},
}


def test_every_formula_start_is_guarded_and_read_back():
    assert set(FORMULA_STARTS) == {"=", "+", "-", "@", "\t", "\r"}
    for start in FORMULA_STARTS:
        text = f"{start}1+1"
        assert spreadsheet_safe(text) == f"'{text}" and spreadsheet_text(f"'{text}") == text
    assert spreadsheet_safe("Đội Cấn") == "Đội Cấn" and spreadsheet_safe(-105) == -105
    assert spreadsheet_text("'Nà Pàn") == "'Nà Pàn"  # a real apostrophe is kept


def _formula_cells(rows: list[list[str]]) -> list[str]:
    return [c for row in rows for c in row if c[:1] in FORMULA_STARTS]


def test_registry_export_writes_no_formula_and_import_refuses_one(db):
    make_registry(db, communes=NAMES)
    with db.session() as s:
        text = importer.export_text(s, "csv")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert not _formula_cells(rows), _formula_cells(rows)
    assert f"'{ATTACK}" in [c for row in rows for c in row]
    header = rows[0]
    line = dict(zip(header, rows[1], strict=False))
    line.update(
        commune=ATTACK,
        commune_code="fg-new",
        village_code="fg-new-t1",
        node_id="fg-new-01",
        village="Thôn Mới",
    )
    bad = (
        ",".join(header)
        + "\r\n"
        + ",".join('"' + str(line.get(c, "")).replace('"', '""') + '"' for c in header)
        + "\r\n"
    )
    with db.session() as s, pytest.raises(InvalidInputError) as err:
        importer.import_text(s, bad, "csv")
    assert "không được bắt đầu bằng dấu =, +, -, @" in str(err.value.extra())


def test_indicator_csv_and_xlsx_write_no_formula(db):
    make_registry(db, communes=NAMES)
    with db.session() as s:
        report = build_report(s, parse_period("2026-Q3", now_ms=now_ms()), now=now_ms())
    rows = list(csv.reader(io.StringIO(render(report, "csv").decode("utf-8-sig"))))
    assert not _formula_cells(rows), _formula_cells(rows)
    assert f"'{ATTACK}" in [c for row in rows for c in row]
    wb = load_workbook(io.BytesIO(render(report, "xlsx")))
    cells = [c for ws in wb for row in ws.iter_rows() for c in row if c.value is not None]
    assert not [c.value for c in cells if c.data_type == "f"]
    assert not [
        c.value for c in cells if isinstance(c.value, str) and c.value[:1] in FORMULA_STARTS
    ]
