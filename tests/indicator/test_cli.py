"""``loa report 8.3``, ``loa attest`` and ``loa indicator settings`` through ``system.cli.main``
on a real SQLite file."""

from __future__ import annotations

import csv
import io

from openpyxl import load_workbook

from system.cli import main
from tests.indicator.world import ict, small_province


def _loa(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_report_in_every_format(world, db, tmp_path, capsys):
    small_province(world, ict(2026, 7, 1), ict(2026, 10, 1))
    code, out, _ = _loa(capsys, "report", "8.3", "--period", "2026-Q3", "--db", db.url)
    assert code == 0
    assert out.splitlines()[0] == (
        "Chỉ tiêu truyền thanh cơ sở — Quý 3/2026: 2/3 xã đạt chỉ tiêu truyền thanh cơ sở"
    )
    assert "- ls-quockhanh\tQuốc Khánh\tKHÔNG ĐẠT" in out
    assert "    Thôn Bản Cắm: khả dụng 83,6% < 90%" in out
    assert "- ls-vule\tVũ Lễ\tĐẠT (thủ công)" in out

    target = tmp_path / "q3.xlsx"
    code, out, _ = _loa(
        capsys,
        "report",
        "8.3",
        "--period",
        "2026-Q3",
        "--format",
        "xlsx",
        "-o",
        str(target),
        "--db",
        db.url,
    )
    assert code == 0 and "vào" in out and "2/3 xã đạt" in out
    rows = [
        r
        for r in load_workbook(target)["Theo xã"].iter_rows(values_only=True)
        if r and isinstance(r[0], int)
    ]
    assert [r[1] for r in rows] == ["ls-doican", "ls-quockhanh", "ls-vule"]

    code, out, _ = _loa(
        capsys, "report", "8.3", "--period", "2026-Q3", "--format", "csv", "--db", db.url
    )
    assert code == 0
    assert [r["ma_xa"] for r in csv.DictReader(io.StringIO(out.lstrip("\ufeff")))] == [
        "ls-doican",
        "ls-quockhanh",
        "ls-vule",
    ]

    pdf = tmp_path / "q3.pdf"
    assert (
        _loa(capsys, "report", "8.3", "--period", "2026-Q3", "-o", str(pdf), "--db", db.url)[0] == 0
    )
    assert pdf.read_bytes().startswith(b"%PDF-")


def test_report_errors(db, tmp_path, capsys):
    code, _, err = _loa(capsys, "report", "8.3", "--period", "2026-Q7", "--db", db.url)
    assert code == 1 and err.startswith("Lỗi: Không hiểu kỳ báo cáo '2026-Q7'")
    code, _, err = _loa(capsys, "report", "8.3", "--format", "pdf", "--db", db.url)
    assert code == 1 and "cần tệp đích" in err
    code, _, err = _loa(capsys, "report", "8.3", "-o", str(tmp_path / "x.odt"), "--db", db.url)
    assert code == 1 and "Không đoán được định dạng" in err
    code, _, err = _loa(
        capsys, "report", "8.3", "-o", str(tmp_path / "no" / "dir.csv"), "--db", db.url
    )
    assert code == 1 and "Không ghi được tệp" in err


def test_attest_and_settings(world, db, capsys):
    world.commune("ls-tumich", "Tú Mịch", station_kind="wired")
    world.commune("ls-doican", "Đội Cấn")
    code, out, _ = _loa(
        capsys,
        "attest",
        "ls-tumich",
        "--inspector",
        "Nguyễn Văn A",
        "--on",
        "02/09/2026",
        "--until",
        "31/12/2027",
        "--note",
        "Tốt",
        "--db",
        db.url,
    )
    assert code == 0
    assert out.strip() == (
        "Đã ghi xác nhận số 1: xã ls-tumich, đài wired, kiểm tra ngày "
        "02/09/2026, hiệu lực đến 31/12/2027."
    )
    code, _, err = _loa(
        capsys, "attest", "ls-doican", "--inspector", "A", "--until", "31/12/2027", "--db", db.url
    )
    assert code == 1 and "dùng đài IP" in err
    code, _, err = _loa(
        capsys, "attest", "ls-tumich", "--inspector", "A", "--until", "31-12-2027", "--db", db.url
    )
    assert code == 1 and "không đúng dạng dd/mm/yyyy" in err
    code, out, _ = _loa(capsys, "indicator", "settings", "--availability", "0.95", "--db", db.url)
    assert code == 0 and "Ngưỡng khả dụng: 0.95" in out
    code, _, err = _loa(capsys, "indicator", "settings", "--aired", "80", "--db", db.url)
    assert code == 1 and "không quá 1" in err


def test_criteria_from_the_shell(capsys, db):
    code, out, _ = _loa(
        capsys, "indicator", "criteria", "--db", db.url, "--set", "2026-2030", "--code", "6.2"
    )
    assert code == 0
    assert "  Chỉ tiêu: 6.2 — Xã có đài truyền thanh và hệ thống loa đến các thôn" in out
    assert "  Hiệu lực: 15/02/2026 – 31/12/2030" in out
    code, _, err = _loa(
        capsys, "indicator", "criteria", "--db", db.url, "--set", "2026-2030", "--availability", "2"
    )
    assert code != 0
    assert "Ngưỡng khả dụng phải lớn hơn 0 và không quá 1" in err
