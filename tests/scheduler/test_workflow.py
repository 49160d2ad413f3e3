"""Broadcast workflow on a real SQLite database: permissions, levels, conflicts, inbox,
missed slots. Content here is an external live stream URL, so no audio store is involved;
audio and TTS bulletins are covered end to end in test_dispatch_e2e.py."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from loa.timeutil import ICT, now_ms
from scheduler.config import SchedulerSettings
from scheduler.errors import Conflict, Forbidden, InvalidBroadcast, NotFound
from scheduler.lifecycle import record_missed
from scheduler.models import Airing, AiringTarget, Broadcast, InboxItem
from scheduler.targets import Actor, resolve_nodes
from scheduler.workflow import BroadcastService
from tests.factories import make_registry

# A public address (stream URLs to internal addresses are refused; see test_stream_urls).
STREAM = "http://14.160.0.10:8000/live"


@pytest.fixture
def world(db):
    ids = make_registry(
        db,
        communes={
            "Đội Cấn": {"Thôn Đồng Tâm": ["dc-1", "dc-2"], "Thôn Tân Lập": ["dc-3"]},
            "Tân Trào": {"Thôn Mới": ["tt-1"]},
            "Xã Trống": {"Thôn Vắng": []},
        },
    )
    svc = BroadcastService(db, SchedulerSettings(start_now_delay_s=15))
    province = Actor("province", None, "so-vhtt")
    officer = Actor("commune", frozenset({ids["Đội Cấn"]}), "canbo-doican")
    return svc, ids, province, officer


def at(minutes: float) -> str:
    return (datetime.now(ICT) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def body(ids, **kw):
    base = {
        "title": "Thông báo lịch tiêm chủng",
        "stream_url": STREAM,
        "duration_s": 600,
        "targets": {"communes": [ids["Đội Cấn"]]},
        "start_at": at(30),
    }
    base.update(kw)
    return base


def test_commune_officer_schedules_own_commune_and_it_resolves_to_its_nodes(world, db):
    svc, ids, _, officer = world
    out = svc.create(officer, body(ids))
    assert out["status"] == "scheduled"  # default: a commune approves its own
    assert out["owner_commune_id"] == ids["Đội Cấn"]
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        assert [t.node_id for t in resolve_nodes(s, b.targets)] == ["dc-1", "dc-2", "dc-3"]
        assert b.scheduled_ms is not None


def test_bad_input_is_refused_with_clear_messages_and_nothing_written(world, db):
    svc, ids, province, officer = world
    cases = [
        (officer, body(ids, start_at=at(-10)), InvalidBroadcast, "đã qua"),
        (officer, body(ids, targets={}), InvalidBroadcast, "Chưa chọn nơi phát"),
        (officer, body(ids, targets={"communes": []}), InvalidBroadcast, "Chưa chọn nơi phát"),
        (
            officer,
            body(ids, targets={"communes": [ids["Tân Trào"]]}),
            Forbidden,
            "không thuộc phạm vi",
        ),
        # Another commune's cluster answers as a missing one: node ids are not enumerable.
        (
            officer,
            body(ids, targets={"nodes": ["tt-1"]}),
            InvalidBroadcast,
            "Không tìm thấy cụm loa",
        ),
        (officer, body(ids, targets={"villages": [ids["Thôn Mới"]]}), Forbidden, "không thuộc xã"),
        (officer, body(ids, targets={"province": True}), Forbidden, "toàn tỉnh"),
        (province, body(ids, targets={"communes": [99999]}), InvalidBroadcast, "Không tìm thấy xã"),
        (
            province,
            body(ids, targets={"communes": [ids["Xã Trống"]]}, priority="priority"),
            InvalidBroadcast,
            "chưa có cụm loa",
        ),
        (
            officer,
            body(
                ids,
                targets={"villages": [ids["Thôn Đồng Tâm"]]},
                start_at=at(30),
                recurrence={"rrule": "FREQ=DAILY", "until": "2001-01-01"},
            ),
            InvalidBroadcast,
            "kết thúc lặp",
        ),
        (province, body(ids, priority="emergency", start_at=None), InvalidBroadcast, "xác nhận"),
        (
            officer,
            body(ids, priority="emergency", start_at=None, confirm=True),
            Forbidden,
            "cấp tỉnh",
        ),
        (officer, body(ids, title=" "), InvalidBroadcast, "tiêu đề"),
        (officer, body(ids, volume=130), InvalidBroadcast, "0–100"),
        (officer, body(ids, repeat=0), InvalidBroadcast, "1–20"),
        (officer, body(ids, priority="urgent"), InvalidBroadcast, "Mức ưu tiên"),
        (officer, body(ids, tts_text="xin chào"), InvalidBroadcast, "đúng một nguồn"),
        (officer, body(ids, recurrence={"rrule": "FREQ=MINUTELY"}), InvalidBroadcast, "ngày, tuần"),
        (officer, body(ids, colour="red"), InvalidBroadcast, "Trường không rõ"),
        (Actor("technician", None, "kt"), body(ids), Forbidden, "tạo bản tin"),
    ]
    for actor, payload, exc_type, words in cases:
        with pytest.raises(exc_type) as err:
            svc.create(actor, payload)
        assert words in err.value.message, (payload, err.value.message)
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(Broadcast)) == 0


def test_same_node_same_time_same_level_is_a_conflict_other_levels_are_not(world, db):
    svc, ids, province, officer = world
    first = svc.create(officer, body(ids, start_at=at(60)))
    # The same village, overlapping time, same level: refused, and says with what.
    with pytest.raises(Conflict) as err:
        svc.create(
            officer,
            body(
                ids, title="Họp thôn", start_at=at(65), targets={"villages": [ids["Thôn Tân Lập"]]}
            ),
        )
    assert "Trùng lịch" in err.value.message and "Thôn Tân Lập" in err.value.message
    assert "bấm «Hủy»" in err.value.message  # points at a button that exists
    assert "Thông báo lịch tiêm chủng" in err.value.message
    assert err.value.details[0]["broadcast_id"] == first["id"]
    # Another commune at the same time, or after the first ends: fine.
    svc.create(
        province,
        body(
            ids,
            title="Tân Trào",
            start_at=at(60),
            targets={"communes": [ids["Tân Trào"]]},
            priority="priority",
        ),
    )
    svc.create(officer, body(ids, title="Sau đó", start_at=at(71)))
    # Province priority over the commune's normal item at the same time: not a conflict.
    out = svc.create(
        province,
        body(
            ids,
            title="Ưu tiên",
            start_at=at(60),
            priority="priority",
            targets={"communes": [ids["Đội Cấn"]]},
        ),
    )
    assert out["status"] == "scheduled"
    # A recurring item that meets the one-off on its third day is caught too.
    day3 = datetime.now(ICT).replace(second=0, microsecond=0) + timedelta(days=3, hours=2)
    svc.create(officer, body(ids, title="Một lần", start_at=day3.isoformat()))
    with pytest.raises(Conflict):
        svc.create(
            officer,
            body(
                ids,
                title="Hằng ngày",
                start_at=(day3 - timedelta(days=2, minutes=5)).isoformat(),
                recurrence={"rrule": "FREQ=DAILY"},
            ),
        )


def test_approval_by_province_when_configured(world, db):
    svc, ids, province, officer = world
    strict = BroadcastService(db, SchedulerSettings(broadcast_approver="province"))
    out = strict.create(officer, body(ids))
    assert out["status"] == "submitted"
    with pytest.raises(Forbidden) as err:
        strict.approve(officer, out["id"])
    assert "cấp tỉnh duyệt" in err.value.message
    assert strict.approve(province, out["id"])["status"] == "scheduled"
    with pytest.raises(Conflict):
        strict.approve(province, out["id"])
    draft = strict.create(officer, body(ids, draft=True, start_at=at(200)))
    assert draft["status"] == "draft"
    assert strict.submit(officer, draft["id"])["status"] == "submitted"
    assert strict.cancel(officer, draft["id"])["status"] == "cancelled"


def test_province_normal_bulletin_goes_to_commune_inboxes(world, db):
    svc, ids, province, officer = world
    out = svc.create(
        province,
        body(
            ids,
            targets={"communes": [ids["Đội Cấn"], ids["Tân Trào"]]},
            title="Tuyên truyền phòng chống bão",
        ),
    )
    assert out["status"] == "approved"  # not on the nodes: the communes decide
    mine = svc.inbox(officer)
    assert [i["title"] for i in mine] == ["Tuyên truyền phòng chống bão"]
    assert all(i["commune_id"] == ids["Đội Cấn"] for i in mine)
    taken = svc.schedule_from_inbox(officer, mine[0]["id"], {"start_at": at(90)})
    assert taken["status"] == "scheduled" and taken["source_broadcast_id"] == out["id"]
    assert taken["owner_commune_id"] == ids["Đội Cấn"]
    assert svc.inbox(officer) == []
    with pytest.raises(Conflict):
        svc.schedule_from_inbox(officer, mine[0]["id"], {"start_at": at(120)})
    # The other commune's officer sees only theirs; ours cannot take theirs.
    other = Actor("commune", frozenset({ids["Tân Trào"]}), "canbo-tantrao")
    theirs = svc.inbox(other)
    assert len(theirs) == 1
    with pytest.raises(NotFound):
        svc.schedule_from_inbox(officer, theirs[0]["id"], {})
    with db.session() as s:
        assert s.scalar(select(func.count()).select_from(InboxItem)) == 2
    status = {i["commune_id"]: i["state"] for i in svc.get(province, out["id"])["inbox"]}
    assert status == {ids["Đội Cấn"]: "scheduled", ids["Tân Trào"]: "new"}


def test_visibility_and_calendar(world, db):
    svc, ids, province, officer = world
    other = Actor("commune", frozenset({ids["Tân Trào"]}), "canbo-tantrao")
    mine = svc.create(
        officer, body(ids, start_at=at(60), recurrence={"rrule": "FREQ=DAILY", "exceptions": []})
    )
    with pytest.raises(NotFound):
        svc.get(other, mine["id"])
    assert svc.list(other)["total"] == 0
    assert svc.list(officer)["total"] == 1
    now = now_ms()
    slots = svc.occurrences(officer, now, now + 7 * 86_400_000)
    assert len(slots) == 7 and all(x["broadcast_id"] == mine["id"] for x in slots)
    assert svc.occurrences(other, now, now + 7 * 86_400_000) == []
    with pytest.raises(InvalidBroadcast):
        svc.occurrences(officer, now, now + 200 * 86_400_000)


def test_slots_passed_beyond_grace_are_recorded_missed_not_played(world, db):
    svc, ids, _, officer = world
    out = svc.create(officer, body(ids, start_at=at(1), recurrence={"rrule": "FREQ=DAILY"}))
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        # Pretend the controller was down for three days since scheduling.
        b.scheduled_ms -= 3 * 86_400_000
        b.start_at_ms -= 3 * 86_400_000
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        missed = record_missed(s, b, now_ms() - 300_000, now_ms())
    assert len(missed) == 3
    with db.session() as s:
        rows = s.scalars(select(Airing).where(Airing.broadcast_id == out["id"])).all()
        assert [a.status for a in rows] == ["missed"] * 3
        targets = s.scalars(select(AiringTarget).where(AiringTarget.airing_id == rows[0].id)).all()
        assert sorted(t.node_id for t in targets) == ["dc-1", "dc-2", "dc-3"]
        assert all(t.phase == "pending" and "lỡ" in t.error for t in targets)
    # Recording again adds nothing: never twice.
    with db.session() as s:
        assert record_missed(s, s.get(Broadcast, out["id"]), now_ms() - 300_000, now_ms()) == []
    detail = svc.get(officer, out["id"])
    assert detail["aired_ratio"] == 0.0


def test_saved_groups_resolve_at_dispatch_time_and_respect_scope(world, db):
    svc, ids, province, officer = world
    group = svc.create_group(
        officer, "Loa đầu làng", {"villages": [ids["Thôn Tân Lập"]], "nodes": ["dc-1"]}
    )
    assert group["nodes"] == 2 and group["owner_commune_id"] == ids["Đội Cấn"]
    out = svc.create(officer, body(ids, targets={"groups": [group["id"]]}))
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        assert [t.node_id for t in resolve_nodes(s, b.targets)] == ["dc-1", "dc-3"]
        # A cluster installed later in the village is included when the slot is dispatched.
        from registry.models import Node

        s.add(Node(id="dc-9", village_id=ids["Thôn Tân Lập"]))
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        assert [t.node_id for t in resolve_nodes(s, b.targets)] == ["dc-1", "dc-3", "dc-9"]
    other = Actor("commune", frozenset({ids["Tân Trào"]}), "canbo-tantrao")
    with pytest.raises(Forbidden):
        svc.create(other, body(ids, targets={"groups": [group["id"]]}))
    with pytest.raises(Forbidden):
        svc.create_group(other, "Lấn sân", {"communes": [ids["Đội Cấn"]]})
    assert [g["name"] for g in svc.list_groups(officer)] == ["Loa đầu làng"]
    assert svc.list_groups(other) == []


def test_an_officers_list_pages_in_the_database_whatever_was_sent(world, db):
    """The province's broadcasts show where they touch the officer's communes, and the list
    costs a few queries however many broadcasts were ever made (it used to load them all and
    resolve each one's targets on every request)."""
    from sqlalchemy import event

    svc, ids, province, officer = world
    with db.session() as s:  # history: many broadcasts, as rows (creating them is not tested)
        for i in range(120):
            s.add(
                Broadcast(
                    title=f"Tỉnh {i}",
                    targets={"communes": [ids["Tân Trào"]]},
                    status="aired",
                    created_ms=1_000 + i,
                )
            )
            s.add(
                Broadcast(
                    title=f"Xã {i}",
                    targets={"communes": [ids["Đội Cấn"]]},
                    status="aired",
                    owner_commune_id=ids["Đội Cấn"],
                    created_ms=1_000 + i,
                )
            )
        s.add(
            Broadcast(title="Cả tỉnh", targets={"province": True}, status="aired", created_ms=5_000)
        )
        s.add(
            Broadcast(
                title="Thôn Tân Lập",
                targets={"villages": [ids["Thôn Tân Lập"]]},
                status="aired",
                created_ms=5_001,
            )
        )

    def queries_of(call) -> tuple[object, int]:
        count = 0

        def counted(*_args):
            nonlocal count
            count += 1

        event.listen(db.engine, "before_cursor_execute", counted)
        try:
            return call(), count
        finally:
            event.remove(db.engine, "before_cursor_execute", counted)

    first, _ = queries_of(lambda: svc.list(officer, limit=10))
    assert first["total"] == 122  # 120 of the commune's own, 2 of the province's that reach it
    assert [b["title"] for b in first["items"][:3]] == ["Thôn Tân Lập", "Cả tỉnh", "Xã 119"]
    page, queries = queries_of(lambda: svc.list(officer, limit=10, offset=110))
    assert [b["title"] for b in page["items"]] == [f"Xã {i}" for i in range(11, 1, -1)]
    # A page of 10 summaries, not a pass over all 242 broadcasts.
    assert queries < 60, queries  # the whole list was over 120 before
    other = Actor("commune", frozenset({ids["Tân Trào"]}), "canbo-tantrao")
    assert svc.list(other)["total"] == 121  # the province's 120 to it and the province-wide one
    assert svc.list(province)["total"] == 242
