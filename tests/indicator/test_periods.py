"""Reporting periods: the forms a province types, their Vietnamese names, ICT boundaries."""

from __future__ import annotations

import pytest

from indicator.errors import PeriodError
from indicator.periods import WEEK_MS, parse_period, weeks
from indicator.vn import admin_date_line, percent, village_title
from tests.indicator.world import DAY, ict

NOW = ict(2026, 11, 21, 23, 30)


@pytest.mark.parametrize(
    "text, start, end, label, title",
    [
        ("2026-Q3", ict(2026, 7, 1), ict(2026, 10, 1), "Quý 3/2026", "quý 3 năm 2026"),
        ("q4/2025", ict(2025, 10, 1), ict(2026, 1, 1), "Quý 4/2025", "quý 4 năm 2025"),
        (
            "2026-H1",
            ict(2026, 1, 1),
            ict(2026, 7, 1),
            "6 tháng đầu năm 2026",
            "6 tháng đầu năm 2026",
        ),
        (
            "2026-h2",
            ict(2026, 7, 1),
            ict(2027, 1, 1),
            "6 tháng cuối năm 2026",
            "6 tháng cuối năm 2026",
        ),
        ("2026", ict(2026, 1, 1), ict(2027, 1, 1), "Năm 2026", "năm 2026"),
        ("2026-07", ict(2026, 7, 1), ict(2026, 8, 1), "Tháng 7/2026", "tháng 7 năm 2026"),
        ("02/2026", ict(2026, 2, 1), ict(2026, 3, 1), "Tháng 2/2026", "tháng 2 năm 2026"),
        (
            "01/07/2026-30/09/2026",
            ict(2026, 7, 1),
            ict(2026, 10, 1),
            "Từ 01/07/2026 đến 30/09/2026",
            "từ 01/07/2026 đến 30/09/2026",
        ),
        (
            "2026-07-01..2026-07-01",
            ict(2026, 7, 1),
            ict(2026, 7, 2),
            "Từ 01/07/2026 đến 01/07/2026",
            "từ 01/07/2026 đến 01/07/2026",
        ),
    ],
)
def test_named_periods_are_ict_midnights(text, start, end, label, title):
    p = parse_period(text, now_ms=NOW)
    assert (p.start_ms, p.end_ms, p.label, p.title) == (start, end, label, title)


def test_quarter_boundaries_are_not_utc_midnights():
    q3 = parse_period("2026-Q3", now_ms=NOW)
    assert q3.start_ms == 1_782_838_800_000  # 30/06/2026 17:00 UTC = 01/07 00:00 ICT
    assert q3.first_day == "01/07/2026" and q3.last_day == "30/09/2026"
    assert q3.start_ms <= ict(2026, 9, 30, 23, 59, 59) < q3.end_ms


def test_last_days_ends_now_and_is_the_default():
    p = parse_period(None, now_ms=NOW)
    assert (p.key, p.start_ms, p.end_ms) == ("last30", NOW - 30 * DAY, NOW)
    assert p.label == "30 ngày gần nhất (22/10/2026 – 21/11/2026)"
    assert parse_period("last7", now_ms=NOW).start_ms == NOW - 7 * DAY


@pytest.mark.parametrize(
    "text, message",
    [
        ("2026-Q5", "Không hiểu kỳ báo cáo '2026-Q5'"),
        ("quý ba", "Dạng hợp lệ: 2026-Q3"),
        ("1999", "nằm ngoài khoảng"),
        ("2026-13", "Tháng 13 không tồn tại"),
        ("31/02/2026-01/03/2026", "Ngày '31/02/2026' không tồn tại"),
        ("30/09/2026-01/07/2026", "trước ngày bắt đầu"),
        ("last0", "Số ngày phải từ 1"),
    ],
)
def test_bad_periods_say_what_is_wrong(text, message):
    with pytest.raises(PeriodError, match=message.replace("(", r"\(")):
        parse_period(text, now_ms=NOW)


def test_ongoing_and_future_periods():
    q4 = parse_period("2026-Q4", now_ms=NOW)
    assert q4.evaluation_window(NOW) == (ict(2026, 10, 1), NOW)
    with pytest.raises(PeriodError, match="Kỳ Quý 1/2027 chưa bắt đầu"):
        parse_period("2027-Q1", now_ms=NOW).evaluation_window(NOW)


def test_weeks_cover_the_window_and_merge_a_short_tail():
    q3 = parse_period("2026-Q3", now_ms=NOW)
    w = weeks(q3.start_ms, q3.end_ms)  # 92 days = 13 weeks + 1 day
    assert len(w) == 13 and w[0] == (q3.start_ms, q3.start_ms + WEEK_MS)
    assert w[-1][1] == q3.end_ms and w[-1][1] - w[-1][0] == 8 * DAY
    assert all(a[1] == b[0] for a, b in zip(w, w[1:], strict=False))
    assert weeks(0, 3 * DAY) == [(0, 3 * DAY)]


def test_vietnamese_figures():
    assert percent(0.899) == "89,9%" and percent(0.9) == "90%" and percent(1.0) == "100%"
    assert percent(0.89999) == "89,9%"  # truncated: never shows 90% for a failing 89,99%
    assert percent(None) == "—"
    assert village_title("Bản Cắm") == "Thôn Bản Cắm"
    assert village_title("Thôn Nà Pàn") == "Thôn Nà Pàn"
    assert village_title("Khối 3") == "Khối 3"
    assert admin_date_line("Lạng Sơn", ict(2026, 10, 5)) == "Lạng Sơn, ngày 05 tháng 10 năm 2026"
    assert admin_date_line("Lạng Sơn", ict(2027, 2, 14)) == "Lạng Sơn, ngày 14 tháng 02 năm 2027"
    assert admin_date_line("Lạng Sơn", ict(2027, 3, 1)) == "Lạng Sơn, ngày 01 tháng 3 năm 2027"
