"""The Vietnamese normaliser against the province's own sample file and real sentences."""

from __future__ import annotations

import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from broadcasts.normalize import Normalizer, normalize, normalizer_for
from broadcasts.vi_numbers import SOUTH, read_decimal, read_int

from .conftest import SHARED_DATA

CASES_FILE = SHARED_DATA / "tts_normalization_vi.tsv"
SENTENCES_FILE = SHARED_DATA / "admin_sentences_vi.txt"


def _squash(text: str) -> str:
    return " ".join(text.lower().split())


def _shared_cases() -> list[tuple[str, list[str]]]:
    if not CASES_FILE.exists():
        return []
    cases = []
    for line in CASES_FILE.read_text(encoding="utf-8").splitlines():
        if not line.strip() or line.startswith("#"):
            continue
        source, accepted = line.split("\t")
        cases.append((source, [_squash(a) for a in accepted.split(" | ")]))
    return cases


@pytest.mark.skipif(not CASES_FILE.exists(), reason=f"shared data file absent: {CASES_FILE}")
def test_shared_file_has_cases():
    assert len(_shared_cases()) >= 10


@pytest.mark.skipif(not CASES_FILE.exists(), reason=f"shared data file absent: {CASES_FILE}")
@pytest.mark.parametrize(("source", "accepted"), _shared_cases(), ids=lambda v: str(v)[:30])
def test_every_shared_case(source, accepted):
    assert _squash(normalize(source)) in accepted


@pytest.mark.skipif(
    not SENTENCES_FILE.exists(), reason=f"shared data file absent: {SENTENCES_FILE}"
)
def test_real_sentences_leave_no_digits_or_abbreviations():
    sentences = [s for s in SENTENCES_FILE.read_text(encoding="utf-8").splitlines() if s.strip()]
    assert sentences
    for sentence in sentences:
        spoken = normalize(sentence)
        assert not re.search(r"\d", spoken), spoken
        # No word of two or more capitals is left for the engine to stumble on.
        assert not [w for w in re.findall(r"\w+", spoken) if len(w) > 1 and w.isupper()], spoken
        assert "/" not in spoken and "%" not in spoken, spoken
        # Nothing was lost: every sentence keeps its words.
        assert len(spoken.split()) >= len(sentence.split())


@pytest.mark.parametrize(
    ("n", "spoken"),
    [
        (0, "không"),
        (10, "mười"),
        (11, "mười một"),
        (14, "mười bốn"),
        (15, "mười lăm"),
        (21, "hai mươi mốt"),
        (24, "hai mươi tư"),
        (25, "hai mươi lăm"),
        (101, "một trăm linh một"),
        (105, "một trăm linh năm"),
        (110, "một trăm mười"),
        (1005, "một nghìn không trăm linh năm"),
        (2023, "hai nghìn không trăm hai mươi ba"),
        (1_000_005, "một triệu không trăm linh năm"),
        (1_050_000, "một triệu không trăm năm mươi nghìn"),
        (3_000_000_000, "ba tỷ"),
        (5_000_000_000_000, "năm nghìn tỷ"),
    ],
)
def test_number_reading_rules(n, spoken):
    assert read_int(n) == spoken


def test_southern_style_and_decimals():
    assert read_int(101, SOUTH) == "một trăm lẻ một"
    assert read_int(6616, SOUTH) == "sáu ngàn sáu trăm mười sáu"
    assert read_decimal("1961", "334") == (
        "một nghìn chín trăm sáu mươi mốt phẩy ba trăm ba mươi tư"
    )
    assert read_decimal("0", "05") == "không phẩy không năm"


@pytest.mark.parametrize(
    ("source", "expected"),
    [
        ("Tổng 1.961,334 tỷ", "tổng một nghìn chín trăm sáu mươi mốt phẩy ba trăm ba mươi tư tỷ"),
        ("tại 02 xã", "tại hai xã"),
        ("gọi 0912345678", "gọi không chín một hai ba bốn năm sáu bảy tám"),
        ("từ 7h00-11h00", "từ bảy giờ đến mười một giờ"),
        ("tăng 12,5%", "tăng mười hai phẩy năm phần trăm"),
        ("trước ngày 20/6", "trước ngày hai mươi tháng sáu"),
        ("ngày 5/7/2025", "ngày mồng năm tháng bảy năm hai nghìn không trăm hai mươi lăm"),
        ("tháng 4/2024", "tháng tư năm hai nghìn không trăm hai mươi tư"),
        ("Quý IV", "quý bốn"),
        ("thứ 4", "thứ tư"),
        (
            "Kế hoạch số 552/KH-STTTT",
            "kế hoạch số năm trăm năm mươi hai, kế hoạch sở thông tin và truyền thông",
        ),
        ("COVID-19", "cô vít mười chín"),
        ("sóng 4G", "sóng bốn gờ"),
        ("kênh VTV", "kênh vê tê vê"),
        ("THÔNG BÁO KHẨN", "thông báo khẩn"),
        ("nhiệt độ -5°C", "nhiệt độ âm năm độ xê"),
        ("50.000đ/người", "năm mươi nghìn đồng mỗi người"),
        ("thôn/bản", "thôn, bản"),
        ("Tày-Nùng", "tày nùng"),
        ("TP. Lạng Sơn", "thành phố lạng sơn"),
    ],
)
def test_administrative_forms(source, expected):
    assert _squash(normalize(source)) == expected


def test_province_extends_abbreviations_from_a_file(tmp_path):
    extra = tmp_path / "abbr.tsv"
    extra.write_text(
        "# Lạng Sơn\nBQLDA\tban quản lý dự án\nTTVH\ttrung tâm văn hóa\n", encoding="utf-8"
    )
    n = normalizer_for(extra)
    assert n.normalize("BQLDA và TTVH huyện") == "ban quản lý dự án và trung tâm văn hóa huyện"
    # Without the file the unknown acronym is spelled, not guessed.
    assert Normalizer().normalize("BQLDA") == "bê quy lờ dê a"


def test_bad_abbreviation_file_is_reported(tmp_path):
    bad = tmp_path / "abbr.tsv"
    bad.write_text("UBND ủy ban nhân dân\n", encoding="utf-8")  # no tab
    with pytest.raises(ValueError, match="abbr.tsv:1"):
        normalizer_for(bad)


_PIECES = list("0123456789/.,-–:%hgđĐ ()&+\n") + [
    "ngày ",
    "tháng ",
    "quý ",
    "thứ ",
    "UBND",
    "COVID",
    "Quý IV",
    "km",
    "°C",
    "xã ",
    "TT",
]


@settings(max_examples=300, deadline=None)
@given(st.lists(st.sampled_from(_PIECES), max_size=25).map("".join))
def test_any_mix_of_digits_and_signs_is_spoken_without_digits(text):
    # Officers paste anything; the normaliser must never crash or leave digits to the engine.
    assert not re.search(r"[0-9]", normalize(text))
