"""Recurrence in Asia/Ho_Chi_Minh: the calendar arithmetic an officer relies on."""

from __future__ import annotations

from datetime import datetime

import pytest

from loa.timeutil import ICT
from scheduler.errors import InvalidBroadcast
from scheduler.recurrence import build_recurrence, describe_slot, parse_instant
from scheduler.runtime import SlotTrigger


def ms(y, mo, d, h=6, mi=0) -> int:
    return int(datetime(y, mo, d, h, mi, tzinfo=ICT).timestamp() * 1000)


def local(ms_value: int) -> str:
    return describe_slot(ms_value)


def test_daily_next_seven_across_month_end():
    start = ms(2025, 1, 28, 6, 0)
    rec = build_recurrence("FREQ=DAILY", start)
    got = [local(x) for x in rec.first(7, start)]
    assert got == [
        "06:00 28/01/2025",
        "06:00 29/01/2025",
        "06:00 30/01/2025",
        "06:00 31/01/2025",
        "06:00 01/02/2025",
        "06:00 02/02/2025",
        "06:00 03/02/2025",
    ]


def test_daily_next_seven_across_year_end_from_a_later_moment():
    # Scheduled long ago at 17:30; asked on 28/12 at noon: the next seven from there.
    rec = build_recurrence("FREQ=DAILY", ms(2024, 11, 3, 17, 30))
    got = [local(x) for x in rec.first(7, ms(2024, 12, 28, 12, 0))]
    assert got == [
        "17:30 28/12/2024",
        "17:30 29/12/2024",
        "17:30 30/12/2024",
        "17:30 31/12/2024",
        "17:30 01/01/2025",
        "17:30 02/01/2025",
        "17:30 03/01/2025",
    ]


def test_leap_day_and_month_end_february():
    rec = build_recurrence("FREQ=DAILY", ms(2024, 2, 27, 6))
    assert [local(x) for x in rec.first(4, ms(2024, 2, 27, 6))] == [
        "06:00 27/02/2024",
        "06:00 28/02/2024",
        "06:00 29/02/2024",
        "06:00 01/03/2024",
    ]


def test_exceptions_until_and_chosen_weekdays():
    start = ms(2024, 12, 28, 6)  # a Saturday
    rec = build_recurrence("FREQ=DAILY", start, until="02/01/2025", exceptions=["2025-01-01"])
    assert [local(x) for x in rec.first(10, start)] == [
        "06:00 28/12/2024",
        "06:00 29/12/2024",
        "06:00 30/12/2024",
        "06:00 31/12/2024",
        "06:00 02/01/2025",
    ]
    weekdays = build_recurrence("RRULE:FREQ=WEEKLY;BYDAY=MO,TH", start)
    assert [local(x) for x in weekdays.first(4, start)] == [
        "06:00 30/12/2024",
        "06:00 02/01/2025",
        "06:00 06/01/2025",
        "06:00 09/01/2025",
    ]


def test_monthly_on_the_31st_skips_short_months_and_twice_a_day():
    rec = build_recurrence("FREQ=MONTHLY;BYMONTHDAY=31", ms(2025, 1, 31, 6))
    assert [local(x) for x in rec.first(3, ms(2025, 1, 1))] == [
        "06:00 31/01/2025",
        "06:00 31/03/2025",
        "06:00 31/05/2025",
    ]
    twice = build_recurrence("FREQ=DAILY;BYHOUR=6,17", ms(2025, 12, 31, 6))
    assert [local(x) for x in twice.first(4, ms(2025, 12, 31, 0))] == [
        "06:00 31/12/2025",
        "17:00 31/12/2025",
        "06:00 01/01/2026",
        "17:00 01/01/2026",
    ]


def test_until_inside_the_rule_is_a_whole_local_day():
    start = ms(2025, 3, 30, 17)
    rec = build_recurrence("FREQ=DAILY;UNTIL=20250401", start)
    assert [local(x) for x in rec.first(5, start)] == [
        "17:00 30/03/2025",
        "17:00 31/03/2025",
        "17:00 01/04/2025",
    ]


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("FREQ=HOURLY", "ngày, tuần, tháng"),
        ("FREQ=DAILY;COUNT=3;UNTIL=20250101", "COUNT"),
        ("FREQ=DAILY;BYDAY=XX", "không hợp lệ"),
        ("", "một dòng RRULE"),
        ("DTSTART=20250101;FREQ=DAILY", "DTSTART"),
    ],
)
def test_bad_rules_are_refused_in_vietnamese(rule, words):
    with pytest.raises(InvalidBroadcast) as err:
        build_recurrence(rule, ms(2025, 1, 1))
    assert words in err.value.message


def test_instants_without_offset_are_vietnam_time():
    assert parse_instant("2025-03-01T06:00:00") == ms(2025, 3, 1, 6)
    assert parse_instant("2025-02-28T23:00:00Z") == ms(2025, 3, 1, 6)
    assert parse_instant("01/03/2025 06:00") == ms(2025, 3, 1, 6)
    with pytest.raises(InvalidBroadcast):
        parse_instant("sáng mai")


def test_slot_trigger_fires_a_lead_time_before_each_slot():
    start = ms(2025, 1, 30, 6)
    lead = 120_000
    trig = SlotTrigger(start_ms=start, rule="FREQ=DAILY", lead_ms=lead, grace_ms=300_000)
    now = datetime.fromtimestamp((start - 3_600_000) / 1000, tz=ICT)
    first = trig.get_next_fire_time(None, now)
    assert int(first.timestamp() * 1000) == start - lead
    second = trig.get_next_fire_time(first, first)
    assert local(int(second.timestamp() * 1000) + lead) == "06:00 31/01/2025"
    # A one-off slot that passed beyond the grace window has no fire time left.
    once = SlotTrigger(start_ms=start, lead_ms=lead, grace_ms=300_000)
    late = datetime.fromtimestamp((start + 301_000) / 1000, tz=ICT)
    assert once.get_next_fire_time(None, late) is None
    within = datetime.fromtimestamp((start + 60_000) / 1000, tz=ICT)
    assert once.get_next_fire_time(None, within) is not None


@pytest.mark.parametrize(
    ("rule", "words"),
    [
        ("FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30", "không bao giờ trúng"),
        ("FREQ=MONTHLY;BYMONTH=4,6;BYMONTHDAY=31", "không bao giờ trúng"),
        ("FREQ=YEARLY;BYYEARDAY=100", "Không hỗ trợ BYYEARDAY"),
        ("FREQ=DAILY;INTERVAL=0", "INTERVAL"),
        ("FREQ=DAILY;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11;BYMINUTE=0,10,20,30,40", "Tối đa"),
        ("FREQ=DAILY;UNTIL=99991231", "năm 2000–2100"),
    ],
)
def test_rules_that_would_hang_or_flood_the_scheduler_are_refused(rule, words):
    # dateutil searches a rule that never matches up to the year 9999 (minutes of CPU).
    with pytest.raises(InvalidBroadcast) as err:
        build_recurrence(rule, ms(2025, 1, 1))
    assert words in err.value.message


def test_count_becomes_an_end_date():
    rec = build_recurrence("FREQ=WEEKLY;BYDAY=MO;COUNT=3", ms(2025, 1, 6))
    assert [local(x) for x in rec.first(10, ms(2025, 1, 1))] == [
        "06:00 06/01/2025",
        "06:00 13/01/2025",
        "06:00 20/01/2025",
    ]
    assert "COUNT" not in rec.rule and rec.until_ms == ms(2025, 1, 20)
