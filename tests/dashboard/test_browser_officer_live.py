"""The officer's whole task against the running system: compose a TTS bulletin in the
browser, preview it, send it for now to the commune, and later see which clusters played it
(real mosquitto, controller, dispatcher, simulated nodes downloading from /media)."""

from __future__ import annotations

import pytest

from tests.dashboard.conftest import LiveStack, login, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture
def officer_stack(tmp_path, db, mosquitto_broker, monkeypatch):
    monkeypatch.setenv("LOA_DISPATCH_LEAD_S", "5")  # prefetch window; the default is 2 min
    s = LiveStack(
        tmp_path,
        db,
        heartbeat_s=2,
        broker=mosquitto_broker,
        fleet_nodes=["dc-001", "dc-002", "dc-003"],
    ).start()
    yield s
    s.stop()


@pytest.fixture
def page(browser_context):
    p = browser_context.new_page()
    yield p


def test_officer_sends_a_tts_bulletin_and_sees_who_played_it(officer_stack, page):
    stack = officer_stack
    stack.run(stack.fleet.kill("dc-003", "reset"))  # one cluster is down: it cannot play
    login(page, stack.base_url, "commune")
    page.wait_for_url("**/commune")
    page.fill("#compose input[name=title]", "Thông báo họp thôn")
    page.fill("#compose textarea[name=text]", "Thôn Đồng Bầu họp lúc 19h30 tại nhà văn hóa.")
    page.click("#preview-btn")
    page.wait_for_function(
        "document.getElementById('spoken').textContent.includes('giờ')", timeout=30_000
    )
    assert "19h30" not in page.inner_text("#spoken")
    # The whole commune, now: both chosen explicitly, then confirmed on the summary.
    page.check("#compose input[name=commune]")
    page.check("#compose input[name=when][value=now]")
    page.click("#compose button[type=submit]")
    page.wait_for_selector("#compose-summary:not([hidden])", timeout=60_000)
    page.click("#compose-confirm")
    page.wait_for_selector("#compose-status.ok", timeout=60_000)

    # Later: the result lists the two clusters that played it and the one that did not,
    # named by village (the clusters have no place label here).
    row = "#results-list [data-broadcast]"
    page.wait_for_selector(row, timeout=30_000)
    for _ in range(60):
        page.click(f"{row} >> nth=0 >> button.view")
        page.wait_for_selector("#results-list .outcomes")
        played = page.locator("#results-list .outcomes li:has-text('Đã phát')").count()
        if played == 2:
            break
        page.wait_for_timeout(2_000)
        page.reload()
        page.wait_for_selector(row, timeout=30_000)
    text = page.inner_text("#results-list .outcomes")
    assert "Cụm loa đã phát: 2" in text, text
    missed = page.locator("#results-list .outcomes li[data-node='dc-003']")
    assert "Không phát" in missed.inner_text() and "Thôn Nà Pàn" in missed.inner_text()
    assert "dc-003" not in text  # places, not codes
    screenshot(page, "commune-officer-results")
