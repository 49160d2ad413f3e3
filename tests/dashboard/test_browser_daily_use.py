"""Daily use an officer and a technician can trust (issue 18), in headless Chromium at a
390 px phone and a 1366 px desktop, over one real server for the module (real SQLite or
PostgreSQL, real espeak-ng speech for the length shown before sending).

- Sending is safe: "Toàn xã" and villages exclude each other, nothing is pre-ticked, an empty
  time is refused, one summary is confirmed, a double click sends once, the success message
  names the village, the form clears, and the broadcast resolves to that village's clusters.
- Full control from the results cards: edit (new version, history kept), skip one day,
  pause, cancel.
- Alarms: acknowledge with a note (the form once answered HTTP 500).
- The phone pages never scroll sideways.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta

import pytest
from sqlalchemy import func, select

from controller.alarms import Alarm
from loa.timeutil import ICT, now_ms
from scheduler.models import Broadcast
from scheduler.targets import resolve_nodes
from tests.dashboard.conftest import (
    DESKTOP,
    PHONE,
    LiveStack,
    login,
    new_page,
    no_sideways_scroll,
    screenshot,
)

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture(scope="module")
def stack(tmp_path_factory, databases):
    tmp = tmp_path_factory.mktemp("daily-use")
    db = databases.create(tmp / "loa-test.db")
    s = LiveStack(tmp, db).start()
    yield s
    s.stop()
    databases.drop(db)


def new_page_with_dialogs(chromium, viewport):
    """A foreign locale (dates stay dd/mm); confirm() dialogs are dismissed and kept."""
    context, page = new_page(chromium, viewport, locale="en-US")
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    return context, page, dialogs


def broadcasts(stack) -> list[Broadcast]:
    with stack.db.session() as s:
        return list(s.scalars(select(Broadcast).order_by(Broadcast.id)))


def test_phone_officer_sends_to_one_village_only(stack, chromium):
    context, page, dialogs = new_page_with_dialogs(chromium, PHONE)
    try:
        login(page, stack.base_url, "commune")
        page.wait_for_url("**/commune")
        page.wait_for_selector("#calendar .day")
        # Nothing is pre-ticked that would widen the target.
        assert page.locator("#compose input[name=commune]:checked").count() == 0
        assert page.locator("#compose input[name=village]:checked").count() == 0
        assert no_sideways_scroll(page), "the officer's page scrolls sideways at 390 px"

        page.fill("#compose input[name=title]", "Họp thôn Đồng Bầu")
        page.fill("#compose textarea[name=text]", "Mời bà con thôn Đồng Bầu họp lúc 19h30 tối nay.")
        # "Toàn xã" and a village exclude each other.
        page.check("#compose input[name=commune]")
        page.check(f"#compose input[name=village][value='{stack.ids['Thôn Đồng Bầu']}']")
        assert not page.is_checked("#compose input[name=commune]")
        # An empty time is refused on the page (and by the server, see test_control.py).
        page.click("#compose-review")
        page.wait_for_selector("#compose-status.error")
        assert "Phát ngay" in page.inner_text("#compose-status")
        assert broadcasts(stack) == []

        day = datetime.now(ICT) + timedelta(days=1)
        page.fill("#compose input[name=start_date]", day.strftime("%d/%m/%Y"))
        page.fill("#compose input[name=start_time]", "06:30")
        page.click("#compose-review")
        page.wait_for_selector("#compose-summary:not([hidden])", timeout=30_000)
        where = page.inner_text("[data-summary=where]")
        assert "Thôn Đồng Bầu" in where and "2 cụm loa" in where and "Đội Cấn" not in where
        assert page.inner_text("[data-summary=when]").startswith(f"06:30 {day:%d/%m/%Y}")
        assert "giây" in page.inner_text("[data-summary=duration]")
        assert broadcasts(stack) == []  # nothing is scheduled before the officer confirms
        screenshot(page, "phone-send-summary")

        page.dblclick("#compose-confirm")  # a double click sends once
        page.wait_for_selector("#compose-status.ok", timeout=30_000)
        status = page.inner_text("#compose-status")
        assert "Thôn Đồng Bầu" in status and "Đã lên lịch" in status
        assert re.search(rf"{day:%d/%m/%Y} 06:30", status), status
        # The form is cleared after success.
        assert page.input_value("#compose input[name=title]") == ""
        assert page.locator("#compose input[name=village]:checked").count() == 0
        sent = broadcasts(stack)
        assert len(sent) == 1 and sent[0].targets["villages"] == [stack.ids["Thôn Đồng Bầu"]]
        assert not sent[0].targets["communes"]
        with stack.db.session() as s:
            assert [t.node_id for t in resolve_nodes(s, sent[0].targets)] == ["dc-001", "dc-002"]
        # Results name the village, not node ids.
        card = page.locator(f"#results-list [data-broadcast='{sent[0].id}']")
        card.wait_for()
        assert "Thôn Đồng Bầu" in card.inner_text()
        assert no_sideways_scroll(page)
        screenshot(page, "phone-send-done")
        assert dialogs == []
    finally:
        context.close()


def test_desktop_officer_sends_now_then_edits_skips_pauses_and_cancels(stack, chromium):
    context, page, dialogs = new_page_with_dialogs(chromium, DESKTOP)
    client, csrf = stack.login_client("commune")
    try:
        login(page, stack.base_url, "commune")
        page.wait_for_url("**/commune")
        # "Phát ngay" said explicitly, to the whole commune.
        page.fill("#compose input[name=title]", "Thông báo khẩn của xã")
        page.fill("#compose textarea[name=text]", "Xã thông báo lịch cắt điện sáng mai.")
        page.check("#compose input[name=commune]")
        page.check("#compose input[name=when][value=now]")
        page.click("#compose-review")
        page.wait_for_selector("#compose-summary:not([hidden])", timeout=30_000)
        assert page.inner_text("[data-summary=when]").startswith("Phát ngay")
        assert "Toàn xã Đội Cấn" in page.inner_text("[data-summary=where]")
        before = now_ms()
        page.click("#compose-confirm")
        page.wait_for_selector("#compose-status.ok", timeout=30_000)
        now_b = next(b for b in broadcasts(stack) if b.title == "Thông báo khẩn của xã")
        assert before <= now_b.start_at_ms <= now_ms() + 60_000  # soon, as chosen
        assert now_b.targets["communes"] == [stack.ids["Đội Cấn"]]

        # A daily bulletin made through the API with an idempotency key: a retry sends once.
        day = datetime.now(ICT) + timedelta(days=2)
        payload = {
            "title": "Bản tin sáng",
            "tts_text": "Chào buổi sáng bà con.",
            "targets": {"villages": [stack.ids["Thôn Nà Pàn"]]},
            "start_at": day.strftime("%Y-%m-%dT05:45:00"),
            "recurrence": {"rrule": "FREQ=DAILY"},
        }
        headers = {"X-CSRF-Token": csrf, "Idempotency-Key": "retry-5b1e0c77"}
        first = client.post("/api/v1/broadcasts", json=payload, headers=headers)
        again = client.post("/api/v1/broadcasts", json=payload, headers=headers)
        assert first.status_code == 201 and again.status_code == 200
        assert again.json()["id"] == first.json()["id"]
        daily_id = first.json()["id"]

        page.reload()
        card = page.locator(f"#results-list [data-broadcast='{daily_id}']")
        card.wait_for()
        # Skip the first day.
        card.locator("button.skip-day").click()
        assert card.locator("input[name=skip_date]").input_value() == f"{day:%d/%m/%Y}"
        card.locator("button.skip-go").click()
        page.wait_for_selector("#results-status.ok")
        with stack.db.session() as s:
            assert s.get(Broadcast, daily_id).recurrence_exdates == [day.date().isoformat()]

        # Edit: a new version, the old one kept (cancelled).
        card = page.locator(f"#results-list [data-broadcast='{daily_id}']")
        card.locator("button.edit").click()
        assert page.input_value("#compose input[name=title]") == "Bản tin sáng"
        assert page.is_checked(f"#compose input[name=village][value='{stack.ids['Thôn Nà Pàn']}']")
        page.fill("#compose input[name=title]", "Bản tin sáng (sửa)")
        page.click("#compose-review")
        page.wait_for_selector("#compose-summary:not([hidden])", timeout=30_000)
        page.click("#compose-confirm")
        page.wait_for_selector("#compose-status.ok", timeout=30_000)
        with stack.db.session() as s:
            new = s.scalar(select(Broadcast).where(Broadcast.title == "Bản tin sáng (sửa)"))
            assert new.previous_version_id == daily_id and new.status == "scheduled"
            assert new.recurrence_exdates == [day.date().isoformat()]  # the skip is kept
            assert s.get(Broadcast, daily_id).status == "cancelled"
            new_id = new.id
        history = client.get(f"/api/v1/broadcasts/{new_id}/history").json()["items"]
        assert [h["id"] for h in history] == [new_id, daily_id]

        # Pause, then cancel with its inline confirmation (no browser dialog).
        card = page.locator(f"#results-list [data-broadcast='{new_id}']")
        card.wait_for()
        card.locator("button.pause").click()
        page.wait_for_selector(f"#results-list [data-broadcast='{new_id}'].st-paused")
        card = page.locator(f"#results-list [data-broadcast='{new_id}']")
        card.locator("button.cancel").click()
        card.locator("button.cancel-go").click()
        page.wait_for_selector(f"#results-list [data-broadcast='{new_id}'].st-cancelled")
        screenshot(page, "desktop-control")
        assert dialogs == []
    finally:
        client.close()
        context.close()


def test_phone_technician_acknowledges_an_alarm_with_a_note(stack, chromium):
    with stack.db.session() as s:
        commune = stack.ids["Đội Cấn"]
        for kind, node in (
            ("weak_signal", "dc-002"),
            ("offline", "dc-001"),
            ("amp_fault", "dc-003"),
        ):
            s.add(
                Alarm(
                    node_id=node,
                    kind=kind,
                    commune_id=commune,
                    first_seen_ms=now_ms(),
                    raised_ms=now_ms(),
                    detail="",
                )
            )
    context, page, dialogs = new_page_with_dialogs(chromium, PHONE)
    try:
        login(page, stack.base_url, "technician")
        page.wait_for_url("**/tech")
        page.wait_for_selector("#alarm-list li")
        # On the phone the open alarms come before the fleet list.
        alarms_y = page.locator("#alarm-list").bounding_box()["y"]
        assert alarms_y < page.locator("#nodes").bounding_box()["y"]
        assert no_sideways_scroll(page), "/tech scrolls sideways at 390 px"
        page.goto(f"{stack.base_url}/tech/nodes/dc-001")
        assert no_sideways_scroll(page), "the node page scrolls sideways at 390 px"

        page.goto(f"{stack.base_url}/tech/alarms")
        cards = page.locator("#alarms-list li.alarm-card")
        # Worst first: offline, then the amplifier fault, then weak signal; with colours.
        assert [c.get_attribute("class").split()[-1] for c in cards.all()] == [
            "sev-3",
            "sev-2",
            "sev-1",
        ]
        assert "Thôn Đồng Bầu" in cards.nth(0).inner_text()
        assert no_sideways_scroll(page), "/tech/alarms scrolls sideways at 390 px"
        first = cards.nth(0)
        first.locator("input[name=note]").fill("Đã báo điện lực, chờ có điện")
        first.locator("button[type=submit]").click()
        page.wait_for_url("**/tech/alarms?ok=acked")
        done = page.locator("#alarms-list li.alarm-card").nth(0)
        assert "Đã báo điện lực, chờ có điện" in done.locator(".ack-note").inner_text()
        with stack.db.session() as s:
            a = s.scalar(select(Alarm).where(Alarm.kind == "offline"))
            assert a.acked_by == "technician" and a.ack_note == "Đã báo điện lực, chờ có điện"
            assert (
                s.scalar(select(func.count()).select_from(Alarm).where(Alarm.acked_ms.is_not(None)))
                == 1
            )
        screenshot(page, "phone-alarms")
        # A missing page answers in Vietnamese.
        page.goto(f"{stack.base_url}/khong-co-trang-nay")
        assert "Không tìm thấy trang này." in page.inner_text("main")
        assert dialogs == []
    finally:
        context.close()
