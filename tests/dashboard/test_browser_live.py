"""The technician's live view against the whole running system: a real broker (Debian
mosquitto), the controller service, the alarm engine and a simulated fleet
(``firmware_sim.Fleet``), watched in headless Chromium."""

from __future__ import annotations

import re

import pytest

from tests.dashboard.conftest import LiveStack, login, screenshot

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
def live_stack(tmp_path, db, mosquitto_broker):
    nodes = ["dc-001", "dc-002", "dc-003", "hvt-001", "hvt-002", "xss-001"]
    s = LiveStack(
        tmp_path,
        db,
        heartbeat_s=2,
        broker=mosquitto_broker,
        fleet_nodes=nodes,
        alarm_raise_s=1.0,
        alarm_clear_s=10.0,
    ).start()
    yield s
    s.stop()


def test_technician_sees_a_killed_node_turn_red_without_reload(live_stack, page):
    stack = live_stack
    login(page, stack.base_url, "technician")
    page.wait_for_url("**/tech")
    page.wait_for_selector("#live-status.on")
    # The simulated fleet comes online on the page as its heartbeats arrive.
    page.wait_for_function(
        "document.getElementById('count-online').textContent === '6'", timeout=20_000
    )
    page.wait_for_selector("tr[data-node-id='dc-002'][data-state='online']")
    page.evaluate("window.__sameDocument = 'yes'")

    stack.run(stack.fleet.kill("dc-002", "silent"))  # no goodbye, no will: heartbeats stop
    offline_limit_ms = 3 * stack.heartbeat_s * 1000
    page.wait_for_selector(
        "tr[data-node-id='dc-002'][data-state='offline']", timeout=offline_limit_ms + 5_000
    )
    assert page.evaluate("window.__sameDocument") == "yes"  # updated live, not reloaded
    red = page.eval_on_selector(
        "tr[data-node-id='dc-002'] td", "td => getComputedStyle(td).backgroundColor"
    )
    assert red == "rgb(255, 205, 210)"
    assert page.inner_text("tr[data-node-id='dc-002'] .state") == "Mất kết nối"
    assert page.inner_text("#count-offline") == "1"
    assert page.get_attribute("tr[data-node-id='dc-001']", "data-state") == "online"
    # The debounced offline alarm shows up in the panel, and the technician acknowledges it.
    alarm = page.wait_for_selector("#alarm-list li[data-node='dc-002']", timeout=15_000)
    assert "Mất kết nối" in alarm.inner_text()
    screenshot(page, "technician-live-offline")
    alarm.query_selector("button.ack").click()
    page.wait_for_selector("#alarm-list li[data-node='dc-002']:has-text('Đã xác nhận')")

    # Node page: a self-test reaches the simulated node, and the page that follows says what
    # it answered (the button says it is sending meanwhile).
    page.goto(f"{stack.base_url}/tech/nodes/dc-001")
    page.click("form:has(input[value=selftest]) button")
    page.wait_for_url("**/tech/nodes/dc-001?ok=selftest_pass*", timeout=15_000)
    flash = page.inner_text(".flash.ok")
    assert re.fullmatch(r"Tự kiểm tra đạt: (\d)/\1 loa hoạt động\.", flash), flash
    page.fill("form:has(input[value=volume]) input[name=level]", "35")
    page.click("form:has(input[value=volume]) button")
    page.wait_for_url("**/tech/nodes/dc-001?ok=cmd_done", timeout=15_000)
    assert page.inner_text(".flash.ok") == "Cụm loa đã nhận và thực hiện lệnh."
    for _ in range(20):  # the node's answers reach the event list with the next flush
        if page.query_selector("#events tr[data-type=selftest]") and page.query_selector(
            "#events tr[data-type=cmd_ack]"
        ):
            break
        page.wait_for_timeout(500)
        page.reload()
    selftest = page.inner_text("#events tr[data-type=selftest]")
    assert "Tự kiểm tra" in selftest and re.search(r"Đạt: (\d)/\1 loa hoạt động", selftest)
    assert "Đã thực hiện lệnh" in page.inner_text("#events tr[data-type=cmd_ack]")
    screenshot(page, "technician-node-live")

    # The killed node cannot answer: the technician is told so, not that all went well.
    page.goto(f"{stack.base_url}/tech/nodes/dc-002")
    # While the server waits for the node, the button says so and takes no second tap. The
    # page may come back before that can be read, so hold this first submission in the page.
    page.evaluate("document.addEventListener('submit', e => e.preventDefault(), {once: true})")
    button = "form:has(input[value=selftest]) button"
    page.click(button)
    assert page.inner_text(button) == "Đang gửi…" and page.is_disabled(button)
    page.reload()
    page.click(button, no_wait_after=True)
    page.wait_for_url("**/tech/nodes/dc-002?ok=cmd_pending", timeout=20_000)
    assert "chưa phản hồi" in page.inner_text(".flash.error")
