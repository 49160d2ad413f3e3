"""``loa registry ...`` end to end through ``system.cli.main`` on a real database that starts
empty, as on an operator's first run (a SQLite file, or PostgreSQL in that pass)."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from loa.db import Database
from registry.demo import demo_yaml
from registry.models import Commune, Node, PendingNode, Village
from system.cli import main


@pytest.fixture
def url(tmp_path: Path, databases):
    """URL of an empty database: the CLI must create its tables itself."""
    database = databases.create(tmp_path / "cli.db", schema=False)
    yield database.url
    databases.drop(database)


def _loa(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out = capsys.readouterr()
    return code, out.out, out.err


def test_import_export_search_merge_rename(tmp_path: Path, capsys, url: str):
    source = tmp_path / "tinh.yaml"
    source.write_text(demo_yaml(), encoding="utf-8")

    code, out, _ = _loa(
        capsys, "registry", "import", str(source), "--db", url, "--from", "01/07/2025"
    )
    assert code == 0 and "13 xã, 54 thôn, 92 cụm loa" in out

    csv_path = tmp_path / "ra.csv"
    code, out, _ = _loa(capsys, "registry", "export", str(csv_path), "--db", url)
    assert code == 0 and "92 cụm loa" in out
    assert csv_path.read_bytes().startswith(b"\xef\xbb\xbf")  # BOM for spreadsheets
    assert "Đội Cấn" in csv_path.read_text(encoding="utf-8-sig")

    code, out, _ = _loa(capsys, "registry", "search", "kien moc", "--db", url)
    assert code == 0 and "ls-kienmoc\tKiên Mộc" in out

    code, out, _ = _loa(
        capsys,
        "registry",
        "merge-communes",
        "ls-hoacu",
        "ls-tanlien",
        "--at",
        "01/09/2025",
        "--db",
        url,
    )
    assert code == 0 and "từ 01/09/2025 00:00:00; 3 thôn chuyển sang" in out

    code, out, _ = _loa(
        capsys, "registry", "rename", "village", "ls-tanlien-t01", "Thôn Nà Mò Mới", "--db", url
    )
    assert code == 0 and "Thôn Nà Mò → Thôn Nà Mò Mới" in out

    db = Database(url)
    with db.session() as s:
        hoacu = s.scalar(select(Commune).where(Commune.code == "ls-hoacu"))
        tanlien = s.scalar(select(Commune).where(Commune.code == "ls-tanlien"))
        assert hoacu.merged_into_id == tanlien.id
        assert s.scalar(select(Village.name).where(Village.code == "ls-tanlien-t01")) == (
            "Thôn Nà Mò Mới"
        )
    db.dispose()


def test_user_errors_are_vietnamese_and_exit_1(tmp_path: Path, capsys, url: str):
    bad = tmp_path / "xau.csv"
    bad.write_text(
        "province,district,commune_code,commune,village_code,village,node_id,label,"
        "speakers,simulated,lat,lon,station_kind\n"
        "Lạng Sơn,,ls-a,Xã A,ls-a-t1,Thôn 1,ab,,,,,,\n"
        "Lạng Sơn,,ls-a,Xã A,ls-a-t1,Thôn 1,ls-a-t1-b,,5,,,,\n",
        encoding="utf-8",
    )
    code, _, err = _loa(capsys, "registry", "import", str(bad), "--db", url)
    assert code == 1
    assert "Dòng 2: mã cụm 'ab' không hợp lệ (3-64 ký tự A-Z a-z 0-9 _ -)" in err
    assert "Dòng 3: số loa '5' không hợp lệ (số nguyên 1-4)" in err
    assert "Lỗi: Tệp nhập có 2 lỗi; chưa ghi gì vào sổ đăng ký." in err

    code, _, err = _loa(
        capsys, "registry", "merge-communes", "a", "b", "--at", "31/02/2025", "--db", url
    )
    assert code == 1 and "Ngày '31/02/2025' không hợp lệ" in err
    code, _, err = _loa(capsys, "registry", "rename", "commune", "khong-co", "X", "--db", url)
    assert code == 1 and "Không tìm thấy xã 'khong-co'" in err
    code, _, err = _loa(capsys, "registry", "import", str(tmp_path / "khong.yaml"), "--db", url)
    assert code == 1 and "Không đọc được tệp" in err


def test_pending_and_approve(capsys, url: str):
    code, out, _ = _loa(capsys, "registry", "load-demo", "--db", url)
    assert code == 0 and "3 chờ thiết bị thật" in out
    code, out, _ = _loa(capsys, "registry", "pending", "--db", url)
    assert "Không có cụm loa nào chờ duyệt" in out

    db = Database(url)
    with db.session() as s:
        s.add(
            PendingNode(
                id="vendor-x-0042",
                first_seen_ms=1_751_302_800_000,
                last_seen_ms=1_751_306_400_000,
                messages=12,
                last_channel="heartbeat",
            )
        )
    code, out, _ = _loa(capsys, "registry", "pending", "--db", url)
    assert "vendor-x-0042\t01/07/2025 00:00:00\t01/07/2025 01:00:00\t12\theartbeat" in out

    code, out, _ = _loa(
        capsys,
        "registry",
        "approve",
        "vendor-x-0042",
        "--village",
        "ls-caolau-t02",
        "--label",
        "Cụm loa chợ",
        "--db",
        url,
    )
    assert code == 0 and "Đã duyệt cụm loa vendor-x-0042 vào Thôn Bản Mới" in out
    with db.session() as s:
        node = s.get(Node, "vendor-x-0042")
        assert node.simulated is False and node.label == "Cụm loa chợ"
        assert s.get(PendingNode, "vendor-x-0042") is None
    code, _, err = _loa(
        capsys, "registry", "approve", "vendor-x-0042", "--village", "ls-caolau-t02", "--db", url
    )
    assert code == 1 and "Không có cụm loa 'vendor-x-0042' trong danh sách chờ duyệt" in err
    db.dispose()
