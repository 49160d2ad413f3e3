"""The content library in headless Chromium (issue 18, item 3), at a 390 px phone and a
1366 px desktop, over one real server (real SQLite or PostgreSQL, the real audio pipeline):
upload with a progress bar that moves (the upload is throttled so progress events are real),
diacritic-free search, play in the page, rename, reuse in a new bulletin to one village, and
a delete refused while that bulletin is scheduled. The phone page never scrolls sideways."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from sqlalchemy import select

from broadcasts.models import Content
from loa.timeutil import ICT
from scheduler.models import Broadcast
from tests.broadcasts.conftest import make_tone
from tests.dashboard.conftest import (
    DESKTOP,
    PHONE,
    LiveStack,
    login,
    no_sideways_scroll,
    screenshot,
)

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture(scope="module")
def stack(tmp_path_factory, databases):
    tmp = tmp_path_factory.mktemp("library")
    db = databases.create(tmp / "loa-test.db")
    s = LiveStack(tmp, db).start()
    yield s
    s.stop()
    databases.drop(db)


@pytest.fixture(scope="module")
def recording(tmp_path_factory):
    """About 1.7 MB of WAV: long enough for several progress events at the throttled rate."""
    return make_tone(tmp_path_factory.mktemp("rec") / "tiem-phong.wav", 10.0)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_library_upload_search_rename_reuse_and_refused_delete(
    stack, chromium, recording, viewport
):
    tag = "phone" if viewport is PHONE else "desktop"
    title = f"Lịch tiêm phòng {tag}"
    context = chromium.new_context(
        viewport=viewport,
        locale="en-US",
        timezone_id="Asia/Ho_Chi_Minh",
        is_mobile=viewport is PHONE,
        has_touch=viewport is PHONE,
    )
    page = context.new_page()
    dialogs: list[str] = []
    page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    try:
        login(page, stack.base_url, "commune")
        page.wait_for_url("**/commune")
        page.wait_for_selector("#library li")

        # Upload at ~400 kB/s: the bar and the percentage move through real progress events.
        cdp = context.new_cdp_session(page)
        cdp.send("Network.enable")
        cdp.send(
            "Network.emulateNetworkConditions",
            {
                "offline": False,
                "latency": 20,
                "downloadThroughput": -1,
                "uploadThroughput": 400 * 1024,
            },
        )
        page.evaluate("""() => { window.__pct = [];
            new MutationObserver(() => window.__pct.push(
                document.getElementById('upload-percent').textContent))
              .observe(document.getElementById('upload-percent'),
                       {childList: true, characterData: true, subtree: true}); }""")
        page.set_input_files("#upload input[name=file]", str(recording))
        page.fill("#upload input[name=title]", title)
        page.click("#upload button[type=submit]")
        page.wait_for_selector("#upload-status.ok", timeout=60_000)
        cdp.send(
            "Network.emulateNetworkConditions",
            {"offline": False, "latency": 0, "downloadThroughput": -1, "uploadThroughput": -1},
        )
        seen = [int(p.rstrip("%")) for p in page.evaluate("window.__pct")]
        assert seen[-1] == 100 and any(0 < p < 100 for p in seen), seen
        assert seen == sorted(seen), f"progress went backwards: {seen}"
        assert page.evaluate("document.getElementById('upload-progress').value") == 100
        assert title in page.inner_text("#upload-status")

        # Search without accents finds it; another word does not.
        page.fill("#library-search input[name=q]", f"tiem phong {tag}")
        page.wait_for_selector(f"#library[data-q='tiem phong {tag}']")
        item = page.locator("#library li.lib-item", has_text=title)
        item.wait_for()
        assert page.locator("#library li.lib-item").count() == 1
        assert "Hoàng" not in item.inner_text() and "Đội Cấn" in item.inner_text()

        # Play in the page: an audio element that the browser can decode.
        item.locator(".lib-play").click()
        page.wait_for_function(
            """() => { const a = document.querySelector(
            '#library li.lib-item audio'); return a && a.readyState >= 1 && a.duration > 9; }""",
            timeout=30_000,
        )

        # Rename.
        renamed = f"Tiêm phòng sởi {tag}"
        item.locator(".lib-rename").click()
        item.locator(".lib-rename-form input").fill(renamed)
        item.locator(".lib-rename-form button[type=submit]").click()
        page.wait_for_selector(f"#library li.lib-item .lib-title:text-is('{renamed}')")
        with stack.db.session() as s:
            row = s.scalar(select(Content).where(Content.title == renamed))
            assert row is not None
            content_id = row.id

        # Reuse: a new bulletin to one village, from the library item.
        page.fill("#library-search input[name=q]", "soi " + tag)
        page.wait_for_selector(f"#library[data-q='soi {tag}']")
        page.locator("#library li.lib-item", has_text=renamed).locator(".lib-reuse").click()
        assert page.is_checked("#source-upload")
        assert page.input_value("#compose input[name=title]") == renamed
        village = stack.ids["Thôn Nà Pàn"]
        page.check(f"#compose input[name=village][value='{village}']")
        day = datetime.now(ICT) + timedelta(days=2)
        page.fill("#compose input[name=start_date]", day.strftime("%d/%m/%Y"))
        page.fill("#compose input[name=start_time]", "07:15" if tag == "phone" else "07:45")
        page.click("#compose-review")
        page.wait_for_selector("#compose-summary:not([hidden])", timeout=30_000)
        assert "Thôn Nà Pàn" in page.inner_text("[data-summary=where]")
        page.click("#compose-confirm")
        page.wait_for_selector("#compose-status.ok", timeout=30_000)
        with stack.db.session() as s:
            b = s.scalar(select(Broadcast).where(Broadcast.content_id == content_id))
            assert b is not None and b.status == "scheduled"
            assert b.targets.get("villages") == [village] and not b.targets.get("communes")

        # Delete is refused while that bulletin is scheduled, and says which one.
        page.fill("#library-search input[name=q]", "")
        page.wait_for_selector("#library[data-q='']")
        page.fill("#library-search input[name=q]", "soi " + tag)
        page.wait_for_selector(f"#library[data-q='soi {tag}']")
        item = page.locator("#library li.lib-item", has_text=renamed)
        item.wait_for()
        assert "1 bản tin đang dùng" in item.inner_text()
        item.locator(".lib-delete").click()
        item.locator(".lib-confirm button.danger").click()
        note = item.locator("p.flash.error")
        note.wait_for()
        assert f"«{renamed}» (Đã lên lịch)" in note.inner_text()
        assert "Không xóa được" in note.inner_text()
        with stack.db.session() as s:
            assert s.get(Content, content_id) is not None
        if viewport is PHONE:
            assert no_sideways_scroll(page), "the library scrolls sideways at 390 px"
        screenshot(page, f"{tag}-library")
        assert dialogs == []
    finally:
        context.close()
