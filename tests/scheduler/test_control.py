"""Safe sends and full control (issue 18) on a real database: a village choice never widens
to the commune, an empty time is refused, a repeated key sends once, long bulletins need a
second yes, and cancel / edit (new version, history kept) / pause / resume / skip / end date
follow the same scope rules as creating. Content is an external stream URL or a stored
upload stand-in, so no audio store is involved (the browser tests use real TTS)."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from loa.timeutil import ICT
from scheduler.config import SchedulerSettings
from scheduler.errors import Conflict, InvalidBroadcast, NotFound
from scheduler.models import Broadcast
from scheduler.request import MSG_NO_TIME
from scheduler.targets import Actor, resolve_nodes
from scheduler.workflow import BroadcastService
from tests.factories import make_registry

# A public address (stream URLs to internal addresses are refused; see test_stream_urls).
STREAM = "http://14.160.0.10:8000/live"


@dataclass
class FakeMeta:
    """A stored item as the content gateway returns it (real gateway: browser tests)."""

    id: str
    duration_ms: int
    title: str = "Bản ghi"
    sha256: str = "0" * 64
    bytes: int = 1000
    mime: str = "audio/mpeg"
    language: str = "vi"


class Items:
    """The content gateway's interface over a dict: this file tests scheduling, not audio."""

    def __init__(self, items: dict[str, int]) -> None:
        self.items = {k: FakeMeta(k, v) for k, v in items.items()}

    def require(self, content_id: str) -> FakeMeta:
        if content_id not in self.items:
            raise InvalidBroadcast(f"Không tìm thấy nội dung «{content_id}» trong kho âm thanh.")
        return self.items[content_id]

    def spoken_ms(self, text: str, **_: object) -> int:
        return 1000 * max(1, len(text.split()) // 3)


class Hook:
    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    def on_scheduled(self, bid: int) -> None:
        self.calls.append(("scheduled", bid))

    def on_cancelled(self, bid: int) -> None:
        self.calls.append(("cancelled", bid))

    def on_paused(self, bid: int) -> None:
        self.calls.append(("paused", bid))


@pytest.fixture
def world(db):
    ids = make_registry(
        db,
        communes={
            "Đội Cấn": {"Thôn Đồng Tâm": ["dc-1", "dc-2"], "Thôn Tân Lập": ["dc-3"]},
            "Tân Trào": {"Thôn Mới": ["tt-1"]},
        },
    )
    hook = Hook()
    svc = BroadcastService(
        db,
        SchedulerSettings(long_bulletin_s=600),
        content=Items({"short": 60_000, "long": 3_600_000}),
        runtime=hook,
    )
    officer = Actor("commune", frozenset({ids["Đội Cấn"]}), "canbo-doican")
    other = Actor("commune", frozenset({ids["Tân Trào"]}), "canbo-tantrao")
    return svc, ids, officer, other, hook


def at(minutes: float) -> str:
    return (datetime.now(ICT) + timedelta(minutes=minutes)).isoformat(timespec="seconds")


def tomorrow(hour: int = 6) -> str:
    d = datetime.now(ICT) + timedelta(days=1)
    return d.replace(hour=hour, minute=0, second=0, microsecond=0).isoformat()


def body(ids, **kw):
    base = {
        "title": "Họp thôn",
        "stream_url": STREAM,
        "duration_s": 600,
        "targets": {"villages": [ids["Thôn Tân Lập"]]},
        "start_at": at(30),
    }
    base.update(kw)
    return base


def count(db) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(Broadcast))


def test_a_village_choice_never_widens_to_the_whole_commune(world, db):
    svc, ids, officer, _, _ = world
    # Both the whole commune and one of its villages: ambiguous, refused, nothing written.
    with pytest.raises(InvalidBroadcast) as err:
        svc.create(
            officer,
            body(ids, targets={"communes": [ids["Đội Cấn"]], "villages": [ids["Thôn Tân Lập"]]}),
        )
    assert "Toàn xã Đội Cấn" in err.value.message and "Thôn Tân Lập" in err.value.message
    with pytest.raises(InvalidBroadcast, match="cụm loa «dc-1»"):
        svc.check(officer, body(ids, targets={"communes": [ids["Đội Cấn"]], "nodes": ["dc-1"]}))
    province = Actor("province", None, "so-vhtt")
    with pytest.raises(InvalidBroadcast, match="Toàn tỉnh"):
        svc.create(province, body(ids, targets={"province": True, "communes": [ids["Tân Trào"]]}))
    assert count(db) == 0
    # The village alone plays on that village's clusters only, and says so by name.
    out = svc.create(officer, body(ids))
    assert out["places"] == "Thôn Tân Lập"
    with db.session() as s:
        b = s.get(Broadcast, out["id"])
        assert [t.node_id for t in resolve_nodes(s, b.targets)] == ["dc-3"]


def test_an_empty_time_is_refused_and_now_must_be_said(world, db):
    svc, ids, officer, _, _ = world
    for blank in ("", "   "):
        with pytest.raises(InvalidBroadcast) as err:
            svc.create(officer, body(ids, start_at=blank))
        assert err.value.message == MSG_NO_TIME
    assert count(db) == 0
    out = svc.create(officer, body(ids, start_at="now"))
    assert out["status"] == "scheduled"


def test_the_summary_before_sending_names_places_clusters_time_and_length(world, db):
    svc, ids, officer, _, _ = world
    summary = svc.check(
        officer,
        body(
            ids,
            stream_url=None,
            duration_s=None,
            content_id="short",
            targets={"villages": [ids["Thôn Đồng Tâm"]]},
            start_at=tomorrow(6),
        ),
    )
    assert summary["places"] == {
        "text": "Thôn Đồng Tâm",
        "villages": ["Thôn Đồng Tâm"],
        "communes": [],
        "clusters": 2,
        "offline": 2,
    }
    assert summary["when"].startswith("06:00 ") and not summary["now"]
    assert summary["duration"] == "1 phút" and summary["priority_label"] == "Thường"
    assert summary["language_label"] == "Tiếng Việt" and summary["long"] is False
    assert count(db) == 0  # a check writes nothing
    now = svc.check(
        officer, body(ids, stream_url=None, duration_s=None, content_id="short", start_at="now")
    )
    assert now["now"] and now["when"] == "Phát ngay"


def test_a_long_bulletin_needs_a_second_confirmation(world, db):
    svc, ids, officer, _, _ = world
    long_body = body(ids, stream_url=None, duration_s=None, content_id="long")
    assert svc.check(officer, long_body)["long"] is True
    with pytest.raises(InvalidBroadcast) as err:
        svc.create(officer, long_body)
    assert "1 giờ" in err.value.message and "confirm" in err.value.message
    assert count(db) == 0
    assert svc.create(officer, {**long_body, "confirm": True})["status"] == "scheduled"


def test_the_same_idempotency_key_sends_once(world, db):
    svc, ids, officer, other, _ = world
    # A retry resends the very request (a key reused for another request is refused: 409,
    # tests/scheduler/test_use_case_transactions.py); ``body`` stamps the time, so build it once.
    sent = body(ids)
    first = svc.create(officer, sent, client_key="form-6f1c2a9e")
    again = svc.create(officer, sent, client_key="form-6f1c2a9e")
    assert again["id"] == first["id"] and again["replayed"] is True
    assert count(db) == 1
    # Another person's key space is their own; a malformed key is refused.
    svc.create(
        other, body(ids, targets={"villages": [ids["Thôn Mới"]]}), client_key="form-6f1c2a9e"
    )
    assert count(db) == 2
    with pytest.raises(InvalidBroadcast, match="Idempotency-Key"):
        svc.create(officer, body(ids), client_key="x y")


def test_edit_makes_a_new_version_and_keeps_the_history(world, db):
    svc, ids, officer, other, hook = world
    old = svc.create(
        officer, body(ids, start_at=at(40), stream_url=None, duration_s=None, content_id="short")
    )
    # A new version at the same slot does not conflict with the version it replaces.
    new = svc.edit(officer, old["id"], {"title": "Họp thôn (sửa)"})
    assert new["title"] == "Họp thôn (sửa)" and new["previous_version_id"] == old["id"]
    assert new["start_at"] == old["start_at"] and new["status"] == "scheduled"
    assert ("cancelled", old["id"]) in hook.calls
    history = svc.history(officer, new["id"])
    assert [h["id"] for h in history] == [new["id"], old["id"]]
    assert history[1]["status"] == "cancelled"
    with pytest.raises(Conflict):
        svc.edit(officer, old["id"], {"title": "lần nữa"})
    with pytest.raises(InvalidBroadcast, match="Không sửa được"):
        svc.edit(officer, new["id"], {"owner_commune_id": 5})
    # Another commune's officer neither sees nor edits it.
    with pytest.raises(NotFound):
        svc.edit(other, new["id"], {"title": "x"})


def test_pause_resume_skip_and_end_date_of_a_recurring_bulletin(world, db):
    svc, ids, officer, other, hook = world
    daily = svc.create(
        officer, body(ids, start_at=tomorrow(17), recurrence={"rrule": "FREQ=DAILY"})
    )
    bid = daily["id"]
    for action in (svc.pause, svc.resume):
        with pytest.raises(NotFound):
            action(other, bid)
    assert svc.pause(officer, bid)["status"] == "paused"
    assert ("paused", bid) in hook.calls
    with pytest.raises(Conflict):
        svc.pause(officer, bid)
    assert svc.resume(officer, bid)["status"] == "scheduled"

    first = datetime.fromisoformat(daily["next_slot_at"])
    out = svc.skip(officer, bid, {"date": first.strftime("%d/%m/%Y")})
    assert out["recurrence"]["exceptions"] == [first.date().isoformat()]
    assert datetime.fromisoformat(out["next_slot_at"]).date() == first.date() + timedelta(1)
    with pytest.raises(InvalidBroadcast, match="không có lần phát"):
        svc.skip(officer, bid, {"date": "01/01/2020"})

    end = first + timedelta(days=3)
    out = svc.set_recurrence(officer, bid, {"until": end.strftime("%d/%m/%Y")})
    assert out["recurrence"]["until"].startswith(end.date().isoformat())
    with pytest.raises(InvalidBroadcast, match="phải sau ngày bắt đầu"):
        svc.set_recurrence(officer, bid, {"until": "01/01/2021"})

    once = svc.create(officer, body(ids, start_at=at(200)))
    with pytest.raises(InvalidBroadcast, match="Hủy"):
        svc.skip(officer, once["id"], {"date": "01/01/2030"})
    assert svc.cancel(officer, bid)["status"] == "cancelled"
    assert ("cancelled", bid) in hook.calls
