"""Speech text of issue 18: what officers write every day and was read wrongly (phone and
hotline numbers, "/" after a quantity, "Đ/c", bare dates after date words, document
symbols, everyday abbreviations), and abbreviations a province adds from the web."""

from __future__ import annotations

import pytest

from broadcasts import abbreviations
from broadcasts.errors import ContentError
from broadcasts.normalize import normalize
from broadcasts.store import ContentStore
from loa.settings import Settings


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("SĐT 0987.654.321", "số điện thoại không chín tám bảy, sáu năm bốn, ba hai một"),
        ("gọi 0912 345 678", "gọi không chín một hai, ba bốn năm, sáu bảy tám"),
        ("đường dây nóng 1900 1234", "đường dây nóng một chín không không, một hai ba bốn"),
        ("báo cháy gọi 114.", "báo cháy gọi một một bốn."),
        ("gọi 0912345678", "gọi không chín một hai ba bốn năm sáu bảy tám"),
        ("cách 3 km/điểm", "cách ba ki lô mét trên điểm"),
        ("giá 5.000 đồng/m2", "giá năm nghìn đồng trên mét vuông"),
        ("hỗ trợ 50.000 đồng/người", "hỗ trợ năm mươi nghìn đồng mỗi người"),
        ("chạy 40 km/h", "chạy bốn mươi ki lô mét trên giờ"),
        ("Đ/c Nguyễn Văn A", "đồng chí nguyễn văn a"),
        ("hạn chót 31/12", "hạn chót ngày ba mươi mốt tháng mười hai"),
        ("nộp trước 20/6.", "nộp trước ngày hai mươi tháng sáu."),
        ("đến 9/13 xã đạt", "đến chín trên mười ba xã đạt"),  # a ratio stays a ratio
        ("có 09/13 xã", "có chín trên mười ba xã"),
        (
            "Kế hoạch 552/KH-STTTT",
            "kế hoạch số năm trăm năm mươi hai, kế hoạch sở thông tin và truyền thông",
        ),
        (
            "Công văn số 1273/BTTTT-TTCS",
            "công văn số một nghìn hai trăm bảy mươi ba, bộ thông tin "
            "và truyền thông thông tin cơ sở",
        ),
        ("các CQNN và NVH thôn", "các cơ quan nhà nước và nhà văn hóa thôn"),
        ("mang CCCD", "mang căn cước công dân"),
        ("ngày 05.12.2026", "ngày mồng năm tháng mười hai năm hai nghìn không trăm hai mươi sáu"),
    ],
)
def test_everyday_forms(source, expected):
    assert _squash(normalize(source)) == expected


def test_a_province_extends_the_abbreviations_from_the_web(tmp_path, db):
    store = ContentStore(Settings(data_dir=tmp_path, database_url=db.url), db)
    assert store.tts.normalize("BQLDA huyện") == "bê quy lờ dê a huyện"
    with db.session() as s:
        entry = abbreviations.add(s, " BQLDA ", "Ban quản lý dự án", "province")
    # The same store reads it at once (no restart), and a replacement too.
    assert store.tts.normalize("BQLDA huyện") == "ban quản lý dự án huyện"
    with db.session() as s:
        abbreviations.add(s, "BQLDA", "ban quản lý các dự án", "province")
        assert [e["abbr"] for e in abbreviations.listing(s)] == ["BQLDA"]
    assert store.tts.normalize("BQLDA") == "ban quản lý các dự án"
    # Bad entries are refused with a reason, and nothing is written.
    with db.session() as s:
        for abbr, spoken in (
            ("", "x"),
            ("A B C D", "a b"),
            ("TTX", "12 ba"),
            ("TTX", ""),
            ("X" * 41, "x"),
        ):
            with pytest.raises(ContentError):
                abbreviations.add(s, abbr, spoken, "province")
        assert len(abbreviations.listing(s)) == 1
        assert abbreviations.remove(s, entry["id"])
    assert store.tts.normalize("BQLDA") == "bê quy lờ dê a"
