"""The commune officer's and the province's pages in headless Chromium, over the real
content, TTS, scheduling and indicator APIs (espeak-ng speech, ffmpeg audio, SQLite)."""

from __future__ import annotations

import subprocess
from datetime import timedelta

import pytest
from sqlalchemy import select, update

from loa.timeutil import ms_to_dt, now_ms
from registry.models import Commune
from scheduler.models import Broadcast
from tests.dashboard.conftest import XSS_NAME, login, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture
def page(browser_context):
    p = browser_context.new_page()
    dialogs: list[str] = []
    p.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    yield p
    assert dialogs == [], f"a page opened a dialog: {dialogs}"


@pytest.fixture
def speech_wav(tmp_path):
    path = tmp_path / "thong-bao.wav"
    subprocess.run(
        [
            "espeak-ng",
            "-v",
            "vi",
            "-w",
            str(path),
            "Thông báo của ủy ban nhân dân xã về lịch tiêm chủng tuần này.",
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def test_officer_composes_previews_uploads_and_schedules(stack, page, speech_wav):
    login(page, stack.base_url, "commune")
    page.wait_for_url("**/commune")
    page.wait_for_selector("#calendar .day")
    assert page.locator("#calendar .day").count() == 7
    # Only the officer's own commune and its villages are offered.
    labels = page.locator("#compose fieldset details summary").all_inner_texts()
    assert len(labels) == 1 and "Đội Cấn" in labels[0]

    # Listen to the spoken form before sending.
    page.fill("#compose input[name=title]", "Lịch tiêm chủng")
    page.fill("#compose textarea[name=text]", "Ngày 5/12 tiêm chủng lúc 7h30 tại trạm y tế xã.")
    page.click("#preview-btn")
    page.wait_for_function(
        "document.getElementById('spoken').textContent.includes('tháng')", timeout=30_000
    )
    spoken = page.inner_text("#spoken")
    assert "5/12" not in spoken  # numbers and dates are read out in words
    assert page.get_attribute("#preview-audio", "src").startswith("/api/v1/tts/preview/")

    # Upload a recording; the progress bar reaches 100 %.
    page.set_input_files("#upload input[name=file]", str(speech_wav))
    page.click("#upload button[type=submit]")
    page.wait_for_selector("#upload-status.ok", timeout=30_000)
    assert page.evaluate("document.getElementById('upload-progress').value") == 100
    assert page.is_checked("#source-upload")

    # Schedule it for tomorrow 17:00 to one village, every day.
    tomorrow = ms_to_dt(now_ms()) + timedelta(days=1)
    page.check("input[name=village] >> nth=0")
    page.fill("#compose input[name=start_date]", tomorrow.strftime("%d/%m/%Y"))
    page.fill("#compose input[name=start_time]", "17:00")
    page.select_option("#compose select[name=recurrence]", "FREQ=DAILY")
    page.click("#compose button[type=submit]")
    page.wait_for_selector("#compose-summary:not([hidden])", timeout=30_000)
    page.click("#compose-confirm")
    page.wait_for_selector("#compose-status.ok", timeout=30_000)
    assert "Đã lên lịch" in page.inner_text("#compose-status")
    page.wait_for_selector(f"#calendar .day[data-day='{tomorrow:%d/%m/%Y}'] .slot")
    assert "17:00" in page.inner_text(f"#calendar .day[data-day='{tomorrow:%d/%m/%Y}']")
    with stack.db.session() as s:
        b = s.scalar(select(Broadcast).where(Broadcast.title == "Lịch tiêm chủng"))
        assert (
            b.content_id and b.recurrence and b.targets["villages"] == [stack.ids["Thôn Đồng Bầu"]]
        )
    page.wait_for_selector("#results-list [data-broadcast]")
    page.click("#results-list [data-broadcast] button.view")
    page.wait_for_selector("#results-list .outcomes")
    screenshot(page, "commune-officer")

    # A bad request is answered with the API's Vietnamese reason, on the page.
    page.check("input[name=village] >> nth=0")
    page.fill("#compose input[name=start_date]", tomorrow.strftime("%d/%m/%Y"))
    page.fill("#compose input[name=start_time]", "18:00")
    page.fill("#compose textarea[name=text]", "Thông báo.")
    page.fill("#compose input[name=title]", "")
    page.click("#compose button[type=submit]")
    page.wait_for_selector("#compose-status.error")
    assert "tiêu đề" in page.inner_text("#compose-status").lower()


def test_province_indicator_map_reports_and_emergency(stack, page):
    with stack.db.session() as s:
        s.execute(
            update(Commune).where(Commune.id == stack.ids["Đội Cấn"]).values(lat=21.85, lon=106.76)
        )
        s.execute(
            update(Commune)
            .where(Commune.id == stack.ids["Hoàng Văn Thụ"])
            .values(lat=21.60, lon=106.45)
        )
    login(page, stack.base_url, "province")
    page.wait_for_url("**/province")
    page.wait_for_selector("#indicator tbody tr[data-commune]", timeout=30_000)
    rows = page.locator("#indicator tbody tr[data-commune]")
    assert rows.count() == 3
    assert "xã đạt" in page.inner_text("#summary")
    assert XSS_NAME in page.inner_text("#indicator")  # markup stays text
    assert page.locator("#map svg g.commune-dot").count() == 2
    assert XSS_NAME in page.inner_text("#no-coords")
    href = page.get_attribute("#reports a[data-format=csv]", "href")
    assert "period=last30" in href
    csv = page.request.get(stack.base_url + href)
    assert csv.status == 200 and "Đội Cấn" in csv.text()
    screenshot(page, "province-indicator")

    # Emergency needs a second, deliberate press.
    page.fill("#emergency input[name=title]", "Cảnh báo lũ quét")
    page.fill("#emergency textarea[name=text]", "Bà con khẩn trương di chuyển lên vùng cao.")
    page.check(f"#emergency input[name=commune][value='{stack.ids['Đội Cấn']}']")
    page.click("#emergency button[type=submit]")
    assert page.is_visible("#emergency-confirm")
    with stack.db.session() as s:
        assert s.scalar(select(Broadcast).where(Broadcast.priority == "emergency")) is None
    page.click("#emergency-go")
    page.wait_for_selector("#emergency-status.ok, #emergency-status.error", timeout=30_000)
    screenshot(page, "province-emergency")
    assert "Đã gửi." in page.inner_text("#emergency-status"), page.inner_text("#emergency-status")
    with stack.db.session() as s:
        b = s.scalar(select(Broadcast).where(Broadcast.priority == "emergency"))
        assert b.title == "Cảnh báo lũ quét" and b.targets["communes"] == [stack.ids["Đội Cấn"]]
        assert b.created_by == "province"
