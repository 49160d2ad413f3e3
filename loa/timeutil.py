"""Time in Loa: epoch milliseconds (UTC) on the wire and in storage; Asia/Ho_Chi_Minh and
dd/mm/yyyy for people."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from zoneinfo import ZoneInfo

ICT = ZoneInfo("Asia/Ho_Chi_Minh")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def ms_to_dt(ms: int, tz: ZoneInfo = ICT) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(tz)


def dt_to_ms(dt: datetime) -> int:
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=ICT)
    return int(dt.timestamp() * 1000)


def format_date(ms: int) -> str:
    return ms_to_dt(ms).strftime("%d/%m/%Y")


def format_datetime(ms: int) -> str:
    return ms_to_dt(ms).strftime("%d/%m/%Y %H:%M:%S")
