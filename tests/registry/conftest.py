"""Registry fixtures: the shared ``db`` fixture (a fresh SQLite file) plus small registers
and an API client with real accounts and bearer tokens."""

from __future__ import annotations

from datetime import datetime

import pytest

from loa.db import Database
from loa.timeutil import ICT, dt_to_ms
from registry import changes as svc


def ms(day: int, month: int, year: int) -> int:
    """00:00 Vietnam time on a date, in epoch ms (dates in tests read like the users')."""
    return dt_to_ms(datetime(year, month, day, tzinfo=ICT))


@pytest.fixture
def small_registry(db: Database) -> Database:
    """Province LS; communes Đội Cấn (2 villages, 3 nodes) and Hòa Lạc (1 village, 1 node),
    all registered on 01/01/2025."""
    t0 = ms(1, 1, 2025)
    with db.session() as s:
        svc.add_province(s, "LS", "Lạng Sơn")
        svc.add_district(s, "LS", "ls-trangdinh", "Tràng Định")
        svc.add_commune(s, "ls-doican", "Đội Cấn", "LS", district="ls-trangdinh", at_ms=t0)
        svc.add_commune(s, "ls-hoalac", "Hòa Lạc", "LS", at_ms=t0)
        svc.add_village(s, "ls-doican", "ls-doican-t01", "Thôn Nà Pàn", t0)
        svc.add_village(s, "ls-doican", "ls-doican-t02", "Thôn Khau Bang", t0)
        svc.add_village(s, "ls-hoalac", "ls-hoalac-t01", "Thôn Đồng Tâm", t0)
        svc.add_node(
            s, "ls-doican-t01-a", "ls-doican-t01", label="Nhà văn hóa thôn Nà Pàn", at_ms=t0
        )
        svc.add_node(s, "ls-doican-t01-b", "ls-doican-t01", label="Đầu thôn Nà Pàn", at_ms=t0)
        svc.add_node(s, "ls-doican-t02-a", "ls-doican-t02", label="Chợ Khau Bang", at_ms=t0)
        svc.add_node(s, "ls-hoalac-t01-a", "ls-hoalac-t01", label="Ngã ba Đồng Tâm", at_ms=t0)
    return db
