"""Import/export of the register: round trips, idempotence, line-numbered errors, no partial
writes, and history kept when an import renames or moves something."""

from __future__ import annotations

import unicodedata

import pytest
from sqlalchemy import func, select

from loa.db import Database
from registry import changes as svc
from registry import importer
from registry.demo import demo_yaml
from registry.errors import ImportFailed
from registry.formats import parse_yaml, render_yaml
from registry.models import (
    Commune,
    District,
    NameHistory,
    Node,
    NodePlacement,
    PendingNode,
    Province,
    Village,
    VillageMembership,
)
from tests.registry.conftest import ms

MODELS = (Province, District, Commune, Village, VillageMembership, Node, NodePlacement, NameHistory)
HEADER = (
    "province,district,commune_code,commune,village_code,village,node_id,label,speakers,"
    "simulated,lat,lon,station_kind"
)


def _counts(db: Database) -> dict[str, int]:
    with db.session() as s:
        return {m.__name__: s.scalar(select(func.count()).select_from(m)) for m in MODELS}


@pytest.fixture
def fresh_db(tmp_path, databases):
    """Makes more databases (schema, no rows) for a test; each is dropped after it."""
    made: list[Database] = []

    def make(name: str) -> Database:
        made.append(databases.create(tmp_path / name))
        return made[-1]

    yield make
    for database in made:
        databases.drop(database)


def _import(db: Database, text: str, fmt: str, at_ms: int | None = None):
    with db.session() as s:
        return importer.import_text(s, text, fmt, at_ms)


def _export(db: Database, fmt: str) -> str:
    with db.session() as s:
        return importer.export_text(s, fmt)


def test_yaml_and_csv_round_trip(db, fresh_db):
    _import(db, demo_yaml(), "yaml")
    yaml_text = _export(db, "yaml")
    csv_text = _export(db, "csv")
    assert "name: Đội Cấn" in yaml_text and "ls-doican-t01-a" in csv_text

    # YAML: everything (districts, coordinates, station kinds, flags) survives a round trip.
    other = fresh_db("yaml-copy.db")
    _import(other, yaml_text, "yaml")
    assert _export(other, "yaml") == yaml_text
    assert _counts(other) == _counts(db)

    # CSV: one row per cluster; villages without clusters (FM/wired communes) survive too.
    third = fresh_db("csv-copy.db")
    _import(third, csv_text, "csv")
    assert _export(third, "csv") == csv_text
    with third.session() as s:
        assert s.scalar(select(func.count(Node.id))) == 92
        assert s.scalar(select(func.count(Village.id))) == 54
        vule = s.scalar(select(Commune).where(Commune.code == "ls-vule"))
        assert vule.station_kind == "fm" and vule.district_id is None
        doican = s.scalar(select(Commune).where(Commune.code == "ls-doican"))
        assert s.get(District, doican.district_id).name == "Tràng Định"
        assert s.get(Node, "ls-doican-t01-c").simulated is False


def test_reimport_is_idempotent(db):
    first = _import(db, demo_yaml(), "yaml")
    assert first.created["node"] == 92
    before = _counts(db)
    second = _import(db, demo_yaml(), "yaml")
    assert not second.changed, second.as_dict()
    assert _counts(db) == before
    third = _import(db, _export(db, "csv"), "csv")
    assert not third.changed, third.as_dict()
    assert _counts(db) == before


BAD_CSV = "\n".join(
    [
        HEADER,  # line 1
        "Lạng Sơn,,ls-doican,Đội Cấn,ls-doican-t01,Thôn Nà Pàn,ls-doican-t01-a,A,2,true,22.3,106.4,ip",  # noqa: E501
        "Lạng Sơn,,ls-doican,Đội Cấn,ls-doican-t01,Thôn Nà Pàn,ab,B,2,true,22.3,106.4,ip",  # 3
        "Lạng Sơn,,ls-doican,Đội Cấn,ls-doican-t01,Thôn Nà Pàn,ls-doican-t01-c,C,nine,true,,,ip",
        "Lạng Sơn,,ls-doican,Đội Cấn,ls-doican-t02,Thôn Khau Bang,ls-doican-t02-a,D,2,true,200,1,ip",  # noqa: E501
        "Lạng Sơn,,ls-doican,Đội Cấn,ls-doican-t02,Thôn Khau Bang,ls-doican-t01-a,E,2,true,,,ip",
        "Lạng Sơn,,ls-hoalac,Hòa Lạc,ls-hoalac-t01,Thôn Đồng Tâm,ls-hoalac-t01-a,F,2,maybe,,,am",
        "Lạng Sơn,,ls-tanlien,,ls-tanlien-t01,Thôn Nà Mò,,,,,,,ip",  # line 8
        "Lạng Sơn,,ls-caolau,Cao Lâu,x,Thôn Nà Thâm,,,,,,,ip",  # line 9
    ]
)


def test_bad_csv_reports_every_bad_row_with_its_line_and_writes_nothing(db):
    _import(db, demo_yaml(), "yaml")
    before = _counts(db)
    with pytest.raises(ImportFailed) as err:
        _import(db, BAD_CSV, "csv")
    messages = [issue.message for issue in err.value.issues]
    assert "Dòng 3: mã cụm 'ab' không hợp lệ (3-64 ký tự A-Z a-z 0-9 _ -)" in messages
    assert "Dòng 4: số loa 'nine' không phải là số nguyên" in messages
    assert "Dòng 5: vĩ độ 200 nằm ngoài khoảng -90..90" in messages
    assert "Dòng 6: cụm 'ls-doican-t01-a' lặp lại (đã có ở dòng 2)" in messages
    assert any(m.startswith("Dòng 7: mô phỏng 'maybe' không hợp lệ") for m in messages)
    assert any(m.startswith("Dòng 7: loại đài 'am' không hợp lệ") for m in messages)
    assert "Dòng 8: thiếu tên xã" in messages
    assert "Dòng 9: mã thôn 'x' không hợp lệ (2-48 ký tự A-Z a-z 0-9 _ -)" in messages
    assert [i.line for i in err.value.issues] == sorted(i.line for i in err.value.issues)
    assert {i.field for i in err.value.issues if i.line == 3} == {"node_id"}
    assert len(messages) == 8
    assert err.value.message == "Tệp nhập có 8 lỗi; chưa ghi gì vào sổ đăng ký."
    # Line 2 alone was valid (a label change): it was not applied either.
    assert _counts(db) == before
    with db.session() as s:
        assert s.get(Node, "ls-doican-t01-a").label == "Nhà văn hóa thôn Nà Pàn"


BAD_YAML = """\
format: loa-registry/1
provinces:
  - code: LS
    name: Lạng Sơn
    communes:
      - code: ls-doican
        name: Đội Cấn
        stationkind: ip
        villages:
          - code: ls-doican-t01
            name: Thôn Nà Pàn
            nodes:
              - id: ls-doican-t01-a
                speakers: 7
              - id: x
              - id: ls-doican-t01-b
                lat: bắc
      - code: ls-doican
        name: Đội Cấn lặp
"""


def test_bad_yaml_reports_lines_from_the_yaml_marks(db):
    with pytest.raises(ImportFailed) as err:
        _import(db, BAD_YAML, "yaml")
    messages = [issue.message for issue in err.value.issues]
    assert any(m.startswith("Dòng 8: khóa 'stationkind' không dùng được ở xã") for m in messages)
    assert "Dòng 14: số loa '7' không hợp lệ (số nguyên 1-4)" in messages
    assert "Dòng 15: mã cụm 'x' không hợp lệ (3-64 ký tự A-Z a-z 0-9 _ -)" in messages
    assert "Dòng 17: vĩ độ 'bắc' không phải là số" in messages
    assert len(messages) == 4  # the duplicate is found only once parsing succeeds
    assert _counts(db)["Province"] == 0

    fixed = BAD_YAML.replace("stationkind", "station_kind").replace("speakers: 7", "speakers: 3")
    fixed = fixed.replace("- id: x\n", "- id: ls-doican-t01-x\n").replace("lat: bắc", "lat: 22.3")
    with pytest.raises(ImportFailed) as err:
        _import(db, fixed, "yaml")
    assert [i.message for i in err.value.issues] == [
        "Dòng 18: mã xã 'ls-doican' lặp lại (đã có ở dòng 6)"
    ]
    assert _counts(db)["Province"] == 0


def test_yaml_syntax_error_names_its_line(db):
    with pytest.raises(ImportFailed) as err:
        _import(db, "format: loa-registry/1\nprovinces:\n  - code: LS\n   name: [\n", "yaml")
    assert err.value.issues[0].line == 4
    assert err.value.issues[0].message.startswith("Dòng 4: YAML không hợp lệ")


def test_codes_stay_text_and_bad_encoding_is_reported(db):
    text = (
        "provinces:\n  - code: '01'\n    name: Tỉnh Số Một\n    communes:\n"
        "      - code: 00123\n        name: Xã Số\n"
    )
    _import(db, text, "yaml")
    with db.session() as s:
        assert s.scalar(select(Commune.code)) == "00123"  # not the integer 123
    with db.session() as s, pytest.raises(importer.RegistryError) as err:
        legacy = unicodedata.normalize("NFD", "province\nHòa Lạc\n").encode("cp1258")
        importer.import_bytes(s, legacy, "x.csv")
    assert err.value.message.startswith("Dòng 2: tệp không phải mã UTF-8")
    with db.session() as s, pytest.raises(importer.RegistryError) as err:
        importer.import_bytes(s, b"x", "so-dang-ky.xlsx")
    assert ".yaml, .yml hoặc .csv" in err.value.message


def test_csv_with_semicolons_bom_and_decimal_commas(db):
    text = (
        "\ufeff"
        + HEADER.replace(",", ";")
        + "\n"
        + (
            "Lạng Sơn;Cao Lộc;ls-caolau;Cao Lâu;ls-caolau-t01;Thôn Nà Thâm;ls-caolau-t01-a;"
            "Nhà văn hóa;3;có;21,95;106,93;ip\n"
        )
    )
    with db.session() as s:
        summary = importer.import_bytes(s, text.encode("utf-8"), "so.csv")
    assert summary.created == {"province": 1, "district": 1, "commune": 1, "village": 1, "node": 1}
    with db.session() as s:
        node = s.get(Node, "ls-caolau-t01-a")
        assert (node.lat, node.lon, node.speakers, node.simulated) == (21.95, 106.93, 3, True)
        district = s.scalar(select(District))
        assert district.name == "Cao Lộc" and district.code == "lang-son-cao-loc"
        assert s.scalar(select(Province.code)) == "lang-son"
    # Same province written without diacritics in another file still matches by name.
    _import(db, HEADER + "\nLạng Sơn,Cao Lộc,ls-caolau,Cao Lâu,,,,,,,,,\n", "csv")
    with db.session() as s:
        assert s.scalar(select(func.count(Province.id))) == 1


def test_import_changes_keep_history(db):
    _import(db, demo_yaml(), "yaml", ms(1, 7, 2025))
    doc, issues = parse_yaml(demo_yaml())
    assert issues == []
    doican = next(c for p in doc.provinces for c in p.communes if c.code == "ls-doican")
    t01, t02 = doican.villages[0], doican.villages[1]
    t01.name = "Thôn Nà Pàn Mới"
    moved = t02.nodes.pop(0)
    assert moved.id == "ls-doican-t02-a"
    moved.attrs["label"] = "Chuyển sang"
    t01.nodes.append(moved)
    text = render_yaml(doc)
    at = ms(1, 9, 2025)
    summary = _import(db, text, "yaml", at)
    assert (summary.renamed, summary.moved, summary.updated["node"]) == (1, 1, 1)
    with db.session() as s:
        village = s.scalar(select(Village).where(Village.code == "ls-doican-t01"))
        names = s.scalars(
            select(NameHistory.name)
            .where(NameHistory.entity == "village", NameHistory.entity_id == village.id)
            .order_by(NameHistory.valid_from_ms)
        ).all()
        assert names == ["Thôn Nà Pàn", "Thôn Nà Pàn Mới"]
        placements = s.scalars(
            select(NodePlacement)
            .where(NodePlacement.node_id == "ls-doican-t02-a")
            .order_by(NodePlacement.valid_from_ms)
        ).all()
        assert [(p.valid_from_ms, p.valid_to_ms) for p in placements] == [
            (ms(1, 7, 2025), at),
            (at, None),
        ]
        assert s.get(Node, "ls-doican-t02-a").village_id == village.id


def test_retired_units_in_a_file_are_errors_naming_the_heir(db):
    _import(db, demo_yaml(), "yaml", ms(1, 7, 2025))
    with db.session() as s:
        svc.merge_communes(s, "ls-lienhoi", "ls-tuxuyen", ms(1, 8, 2025))
    with pytest.raises(ImportFailed) as err:
        _import(db, demo_yaml(), "yaml")
    assert len(err.value.issues) == 1
    issue = err.value.issues[0]
    line = demo_yaml().splitlines().index("    - code: ls-lienhoi") + 1
    assert issue.line == line
    assert issue.message == (
        f"Dòng {line}: xã Liên Hội (ls-lienhoi) đã ngừng từ 01/08/2025, "
        "sáp nhập vào Tú Xuyên (ls-tuxuyen)."
    )


def test_importing_a_pending_node_registers_it(db):
    with db.session() as s:
        s.add(PendingNode(id="ls-doican-t01-a", first_seen_ms=1, last_seen_ms=2, messages=3))
    summary = _import(db, demo_yaml(), "yaml")
    assert summary.pending_approved == 1
    with db.session() as s:
        assert s.get(PendingNode, "ls-doican-t01-a") is None


def test_csv_keeps_provinces_and_districts_without_communes(db, fresh_db):
    with db.session() as s:
        svc.add_province(s, "CB", "Cao Bằng")
        svc.add_province(s, "LS", "Lạng Sơn")
        svc.add_district(s, "LS", "ls-binhgia", "Bình Gia")
    text = _export(db, "csv")
    other = fresh_db("empty-units.db")
    _import(other, text, "csv")
    assert _export(other, "csv") == text
    with other.session() as s:
        assert s.scalar(select(District.name).where(District.code == "ls-binhgia")) == "Bình Gia"
        assert s.scalar(select(func.count(Province.id))) == 2


def test_yaml_alias_bomb_is_refused_not_expanded(db):
    lines = ["a0: &a0 [x, x, x, x, x, x, x, x, x, x]"]
    lines += [f"a{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10) + "]" for i in range(1, 9)]
    with pytest.raises(ImportFailed) as err:
        _import(db, "\n".join(lines) + "\nprovinces: *a8\n", "yaml")
    assert err.value.issues[0].message == ("Dòng 1: tệp YAML quá lớn hoặc lồng bí danh quá sâu")
