"""The emergency alert pages (issue 19) in headless Chromium: the province uploads a CAP
file, sees why a bad one is refused, and approves an alert that waits for a person; the
commune officer sees it.
Real content store and offline TTS behind the approval (the broadcast is synthesised)."""

from __future__ import annotations

import pytest
from sqlalchemy import select

from scheduler.models import Broadcast
from tests.alerts import capdocs as d
from tests.dashboard.conftest import login, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture
def page(browser_context):
    p = browser_context.new_page()
    yield p


def test_province_uploads_refused_and_good_alerts_and_approves(stack, page, tmp_path):
    bad = tmp_path / "xxe.xml"
    bad.write_bytes(
        b'<?xml version="1.0"?><!DOCTYPE a [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
        b'<alert xmlns="urn:oasis:names:tc:emergency:cap:1.2">&x;</alert>'
    )
    good = tmp_path / "lu-quet.xml"
    # Not from an automatic sender: it waits for the officer's decision.
    good.write_bytes(d.flood("WEB-1", communes=["c0"], sender="ubnd@langson.gov.vn"))

    from tests.alerts.conftest import place_clusters

    place_clusters(
        stack.db, {"dc-001": (22.28, 106.48), "dc-002": (22.29, 106.48), "dc-003": (22.32, 106.49)}
    )
    login(page, stack.base_url, "province")
    page.wait_for_url("**/province")
    page.click("nav >> text=Cảnh báo khẩn cấp")
    page.wait_for_url("**/alerts")
    page.set_input_files("#cap-upload input[name=file]", str(bad))
    page.click("#cap-upload button[type=submit]")
    page.wait_for_selector("#upload-error")
    assert "DOCTYPE" in page.inner_text("#upload-error")
    assert "refused" in page.inner_text("#cap-messages")

    # The province words the warning for flash floods; a wrong placeholder is refused.
    page.fill("#template-form input[name=event]", "Lũ quét")
    page.fill("#template-form textarea[name=template]", "Khẩn cấp: {tieu_de}\n{sai_ten}")
    page.click("#template-form button[type=submit]")
    page.wait_for_selector("#template-error")
    assert "sai_ten" in page.inner_text("#template-error")
    # Its own warning tone (issue 19, item 4): an unreadable pattern is refused by name.
    good_words = "Khẩn cấp: {tieu_de}\nHướng dẫn: {huong_dan}"
    page.fill("#template-form input[name=event]", "Lũ quét")
    page.fill("#template-form textarea[name=template]", good_words)
    page.check("#template-form input[name=tone][value=custom]")
    page.fill("#template-form input[name=tone_pattern]", "ba hồi")
    page.click("#template-form button[type=submit]")
    page.wait_for_selector("#template-error")
    assert "«tone_pattern»" in page.inner_text("#template-error")
    assert "lu quet" not in page.inner_text("#template-form >> xpath=..")  # nothing saved
    page.fill("#template-form input[name=event]", "Lũ quét")
    page.fill("#template-form textarea[name=template]", good_words)
    page.check("#template-form input[name=tone][value=custom]")
    page.fill("#template-form input[name=tone_pattern]", "2x20/10")
    page.click("#template-form button[type=submit]")
    page.wait_for_url("**/alerts?ok=saved")
    assert "lu quet" in page.inner_text("#template-form >> xpath=..")
    tone = page.locator("details[data-event='lu quet'] .template-tone")
    assert tone.get_attribute("data-pattern") == "2x20/10"
    assert tone.inner_text().startswith("2 hồi 20 giây, nghỉ 10 giây")
    # "Sửa" fills the form with the event's words and tone: saving the words again keeps it.
    page.click("details[data-event='lu quet'] summary")
    page.click("details[data-event='lu quet'] a.template-edit")
    page.wait_for_url("**/alerts?edit=*")
    assert page.is_checked("#template-form input[name=tone][value=custom]")
    assert page.input_value("#template-form input[name=tone_pattern]") == "2x20/10"
    assert page.input_value("#template-form textarea[name=template]") == good_words
    page.click("#template-form button[type=submit]")
    page.wait_for_url("**/alerts?ok=saved")
    assert tone.get_attribute("data-pattern") == "2x20/10"

    page.set_input_files("#cap-upload input[name=file]", str(good))
    page.click("#cap-upload button[type=submit]")
    page.wait_for_url("**/alerts/*")
    assert page.get_attribute("#alert-state", "data-state") == "pending_approval"
    assert page.inner_text("#alert-facts + p").startswith(
        "Lời đọc: Khẩn cấp: Cảnh báo lũ quét, sạt lở đất cấp 3. Hướng dẫn: Bà con"
    )
    assert page.get_attribute("#alert-tone", "data-pattern") == "2x20/10"
    assert "2 hồi 20 giây, nghỉ 10 giây" in page.inner_text("#alert-tone")
    page.click("#approve")
    page.wait_for_selector("#alert-state[data-state=airing]", timeout=60_000)
    assert "province" in page.inner_text("#alert-facts")
    steps = [
        page.get_attribute(f"#alert-steps li:nth-child({i}) span", "data-action")
        for i in range(1, 6)
    ]
    assert steps == ["received", "area_matched", "awaiting_approval", "approved", "aired"]
    assert "Nhận tài liệu" in page.inner_text("#alert-steps")
    assert "Bằng chứng phát" in page.content()
    # The targeted clusters on the map; none has started (no fleet here): all red.
    states = page.eval_on_selector_all("#alert-map circle", "cs => cs.map(c => c.dataset.state)")
    assert states == ["missing"] * 3
    screenshot(page, "alert-approved")
    with stack.db.session() as s:
        b = s.scalar(select(Broadcast).where(Broadcast.priority == "emergency"))
        assert b is not None and b.status == "scheduled" and b.content_id
        assert b.targets["villages"] or b.targets["nodes"]

    # The commune officer of the commune sees the alert in the list.
    page.context.clear_cookies()
    login(page, stack.base_url, "commune")
    page.wait_for_url("**/commune")
    page.goto(f"{stack.base_url}/alerts")
    assert page.locator("#alerts tr[data-alert-id]").count() == 1
    assert page.locator("#cap-upload").count() == 0  # upload is the province's
