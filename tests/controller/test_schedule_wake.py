"""The scheduler wake's message (controller.schedule_wake): what an API process sends, and
what a controller does with anything else on that topic (nothing, and it says so)."""

from __future__ import annotations

import logging

import pytest

from controller.schedule_wake import Wake, decode_wake, encode_wake, wake_topic


def test_a_wake_round_trips_and_lives_under_the_topic_root():
    assert decode_wake(encode_wake(12, "scheduled")) == Wake(broadcast_id=12, change="scheduled")
    assert decode_wake(encode_wake(7, "cancelled")) == Wake(broadcast_id=7, change="cancelled")
    assert wake_topic("loa/v1/") == "loa/v1/scheduler/wake"


@pytest.mark.parametrize(
    "payload",
    [
        b"",
        b"not json",
        b"[]",
        b'{"broadcast_id": 0, "change": "scheduled"}',
        b'{"broadcast_id": -3, "change": "scheduled"}',
        b'{"broadcast_id": "12; drop", "change": "scheduled"}',
        b'{"broadcast_id": 12, "change": "deleted"}',
        b'{"broadcast_id": 12}',
        b'{"broadcast_id": 12, "change": "scheduled", "sql": "x"}',
        b"\xff\xfe" * 40,
    ],
)
def test_anything_else_on_the_wake_topic_is_dropped_with_a_log_line(payload, caplog):
    with caplog.at_level(logging.WARNING, logger="loa.scheduler"):
        assert decode_wake(payload) is None
    assert "tin đánh thức bộ lập lịch không hợp lệ" in caplog.text
