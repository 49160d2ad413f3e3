"""Live from the phone (issue 18, item 4), against the whole running system: a commune
officer on a 390 px phone page picks one village, confirms, and speaks into Chromium's fake
microphone; the audio goes through the server (ffmpeg) to Debian's Icecast and on to the
simulated node of that village, which plays the live mount; the stop button ends it on the
node. A second broadcast whose browser goes away is marked failed and frees its slot."""

from __future__ import annotations

import time

import pytest

from dashboard.models import AuditLog
from scheduler.models import Airing, Broadcast
from tests.dashboard.conftest import CHROMIUM, CHROMIUM_ARGS, LiveStack, login, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only

FAKE_MIC = [
    "--use-fake-device-for-media-stream",
    "--use-fake-ui-for-media-stream",
    "--autoplay-policy=no-user-gesture-required",
]


@pytest.fixture(scope="module")
def mic_chromium():
    """Chromium with a fake microphone (its test beep) that is granted without asking."""
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is required for browser tests: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS + FAKE_MIC)
        yield browser
        browser.close()


@pytest.fixture
def mic_stack(tmp_path, db, mosquitto_broker, monkeypatch):
    # "Phát ngay": the nodes join 6 s after the officer presses start (15 s by default), by
    # when the microphone is on air.
    monkeypatch.setenv("LOA_START_NOW_DELAY_S", "6")
    monkeypatch.setenv("LOA_DISPATCH_LEAD_S", "1")
    s = LiveStack(
        tmp_path,
        db,
        heartbeat_s=2,
        broker=mosquitto_broker,
        fleet_nodes=["dc-001", "dc-002", "dc-003"],
    ).start()
    if s.system.scheduling.live is None or not s.system.scheduling.live.running:
        s.stop()
        pytest.fail("Icecast did not start: apt-get install -y icecast2")
    yield s
    s.stop()


def _phone(chromium):
    ctx = chromium.new_context(
        viewport={"width": 390, "height": 844},
        locale="vi-VN",
        timezone_id="Asia/Ho_Chi_Minh",
        bypass_csp=True,
        permissions=["microphone"],
    )
    return ctx, ctx.new_page()


def _wait(cond, timeout: float, what: str, step: float = 0.25):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(step)
    raise AssertionError(f"timed out waiting for {what}")


def _status(stack: LiveStack, broadcast_id: int) -> str:
    with stack.db.session() as s:
        return s.get(Broadcast, broadcast_id).status


def _actions(stack: LiveStack, broadcast_id: int) -> list[str]:
    with stack.db.session() as s:
        return [a.action for a in s.query(AuditLog).filter_by(target=str(broadcast_id))]


def _go_live(stack: LiveStack, page, village: str) -> int:
    page.goto(f"{stack.base_url}/live")
    # "Toàn xã" and a village exclude each other: ticking the village unticks the commune.
    page.check("#live-form input[name=commune]")
    page.check(f"#live-form label:has-text('{village}') input[name=village]")
    assert not page.is_checked("#live-form input[name=commune]")
    page.click("#live-review")
    page.wait_for_selector("#live-summary:not([hidden])", timeout=30_000)
    where = page.inner_text("[data-summary=where]")
    assert village in where and "1 cụm loa" in where, where
    page.click("#live-start")
    page.wait_for_selector("#live-on:not([hidden])", timeout=30_000)
    return int(page.get_attribute("#live-on", "data-broadcast"))


def test_officer_goes_live_from_the_phone_and_the_village_hears_it(mic_stack, mic_chromium):
    stack = mic_stack
    fleet = stack.fleet
    ctx, page = _phone(mic_chromium)
    try:
        login(page, stack.base_url, "commune")
        page.wait_for_url("**/commune")
        bid = _go_live(stack, page, "Thôn Nà Pàn")

        # The browser's microphone reaches the one node of Thôn Nà Pàn through Icecast.
        _wait(
            lambda: fleet.node("dc-003").player.stream_bytes_total > 16_000,
            45,
            "the live mount's MP3 bytes at dc-003",
        )
        wire_playing = fleet.node("dc-003").player.playing_id
        assert wire_playing is not None
        page.wait_for_function(
            "document.getElementById('live-listeners').textContent === '1'", timeout=15_000
        )
        page.wait_for_function(
            "document.getElementById('live-state').dataset.state === 'on_air'", timeout=15_000
        )
        _wait(
            lambda: float(page.get_attribute("#live-level", "data-level") or 0) > 0.01,
            10,
            "a non-zero level on the meter (the fake microphone beeps)",
        )
        assert page.locator("#live-nodes li:has-text('Thôn Nà Pàn')").count() == 1
        # Nothing else was targeted: the other village's nodes heard nothing.
        assert fleet.node("dc-001").player.stream_bytes_total == 0
        assert fleet.node("dc-002").player.stream_bytes_total == 0
        # No source address or password on the page.
        html = page.content()
        assert "icecast://" not in html and "source:" not in html
        # A 390 px phone: no horizontal scrolling.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        screenshot(page, "live-mic-phone-on-air")

        page.click("#live-stop")
        _wait(
            lambda: fleet.node("dc-003").player.playing_id is None,
            20,
            "dc-003 to stop playing after the stop button",
        )
        _wait(lambda: _status(stack, bid) == "aired", 30, "the live broadcast judged aired")
        with stack.db.session() as s:
            assert s.query(Airing).filter_by(broadcast_id=bid).one().status == "aired"
        # The audit log has who went live and who stopped, not a row per chunk (the stop's
        # row follows the clusters' reports: the stream ends before the mount is withdrawn).
        page.wait_for_selector("#live-stop:disabled")
        _wait(
            lambda: _actions(stack, bid).count("broadcast.live_stop") == 1,
            15,
            "the stop in the audit log",
        )
        assert _actions(stack, bid).count("broadcast.live_start") == 1
        with stack.db.session() as s:
            chunk_rows = (
                s.query(AuditLog).filter(AuditLog.path == f"/api/v1/broadcasts/{bid}/mic").count()
            )
            assert chunk_rows == 1, chunk_rows  # the first chunk's, as live_start
    finally:
        ctx.close()

    # A second live broadcast whose browser goes away without pressing stop.
    ctx2, page2 = _phone(mic_chromium)
    login(page2, stack.base_url, "commune")
    page2.wait_for_url("**/commune")
    before = fleet.node("dc-003").player.stream_bytes_total
    bid2 = _go_live(stack, page2, "Thôn Nà Pàn")
    _wait(
        lambda: fleet.node("dc-003").player.stream_bytes_total > before + 16_000,
        45,
        "the second live broadcast at dc-003",
    )
    client, csrf = stack.login_client("commune")
    try:
        same_slot = {
            "title": "Thử",
            "stream": True,
            "start_at": "now",
            "duration_s": 600,
            "targets": {"villages": [stack.ids["Thôn Nà Pàn"]]},
        }
        busy = client.post(
            "/api/v1/broadcasts/check", json=same_slot, headers={"X-CSRF-Token": csrf}
        )
        ctx2.close()  # the phone is gone: no more chunks, no stop request
        _wait(lambda: _status(stack, bid2) == "failed", 20, "the broadcast marked failed")
        _wait(
            lambda: fleet.node("dc-003").player.playing_id is None,
            20,
            "dc-003 to stop playing the failed broadcast",
        )
        detail = client.get(f"/api/v1/broadcasts/{bid2}/mic").json()
        assert detail["status"] == "failed" and detail["status_label"] == "Phát trực tiếp bị lỗi"
        assert detail["feed"]["state"] == "failed"
        assert "trình duyệt" in detail["feed"]["error"]
        # Its slot is free again; while it was on air the same slot was refused.
        free = client.post(
            "/api/v1/broadcasts/check", json=same_slot, headers={"X-CSRF-Token": csrf}
        )
        assert free.status_code == 200, free.text
        assert busy.status_code == 409, busy.text
        # Chunks for the failed broadcast are refused with a clear message.
        late = client.post(
            f"/api/v1/broadcasts/{bid2}/mic?seq=999", content=b"x", headers={"X-CSRF-Token": csrf}
        )
        assert late.status_code == 409 and "kết thúc" in late.json()["detail"], late.text
        # Only the officer who went live may feed it; nobody anonymous at all.
        other, other_csrf = stack.login_client("province")
        try:
            r = other.post(
                f"/api/v1/broadcasts/{bid2}/mic?seq=0",
                content=b"x",
                headers={"X-CSRF-Token": other_csrf},
            )
            assert r.status_code == 403 and "người tạo" in r.json()["detail"], r.text
        finally:
            other.close()
        with stack.client() as anon:
            assert (
                anon.post(f"/api/v1/broadcasts/{bid2}/mic?seq=0", content=b"x").status_code == 401
            )
    finally:
        client.close()

    # On a desktop (1366 × 900) the page lays out without horizontal scrolling too, and the
    # failed broadcast is not on air anywhere.
    desk = mic_chromium.new_context(
        viewport={"width": 1366, "height": 900}, locale="vi-VN", timezone_id="Asia/Ho_Chi_Minh"
    )
    try:
        dp = desk.new_page()
        login(dp, stack.base_url, "commune")
        dp.wait_for_url("**/commune")
        dp.wait_for_selector("#live-btn:not([hidden])", timeout=15_000)
        dp.click("#live-btn")
        dp.wait_for_url("**/live")
        assert dp.is_visible("#live-review") and not dp.is_visible("#live-on")
        assert dp.evaluate("document.documentElement.scrollWidth") <= 1366
    finally:
        desk.close()
