"""The alarm notification settings page in headless Chromium (issue 18, item 7), at a 390 px
phone and a 1366 px desktop: a commune officer subscribes by e-mail to the severe alarms of
their commune, an alarm is raised, a real local SMTP server (aiosmtpd) receives the
Vietnamese message, and the page lists the delivery as sent. A bad address is refused in
Vietnamese. The phone page never scrolls sideways."""

from __future__ import annotations

import email
import email.policy

import pytest
from aiosmtpd.controller import Controller
from sqlalchemy import select

from controller.alarms import Alarm
from controller.notify import Notifier, NotifyConfig, NotifySubscription
from loa.broker import free_port
from loa.timeutil import now_ms
from system.root import user_scope
from tests.dashboard.conftest import DESKTOP, PHONE, LiveStack, login, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only


@pytest.fixture(scope="module")
def stack(tmp_path_factory, databases):
    tmp = tmp_path_factory.mktemp("notify")
    db = databases.create(tmp / "loa-test.db")
    s = LiveStack(tmp, db).start()
    yield s
    s.stop()
    databases.drop(db)


class Inbox:
    def __init__(self) -> None:
        self.messages: list = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["phone", "desktop"])
def test_officer_subscribes_and_the_alarm_email_arrives(stack, chromium, viewport):
    tag = "phone" if viewport is PHONE else "desktop"
    address = f"canbo.{tag}@doican.gov.vn"
    context = chromium.new_context(
        viewport=viewport,
        locale="en-US",
        timezone_id="Asia/Ho_Chi_Minh",
        is_mobile=viewport is PHONE,
        has_touch=viewport is PHONE,
    )
    page = context.new_page()
    inbox = Inbox()
    smtp = Controller(inbox, hostname="127.0.0.1", port=free_port())
    smtp.start()
    try:
        login(page, stack.base_url, "commune")
        page.wait_for_url("**/commune")
        page.click("nav a[href='/settings/notifications']")
        page.wait_for_selector("#notify-email .sev-choices input")
        form = page.locator("#notify-email")
        form.locator("input[name=address]").fill("khong-phai-email")
        form.locator("button[type=submit]").click()
        form.locator(".status.error").wait_for()
        assert "không hợp lệ" in form.locator(".status").inner_text()

        form.locator("input[name=address]").fill(address)
        form.locator("input[name=severity][value='1']").uncheck()  # not battery/weak signal
        assert form.locator("input[name=commune]").count() == 1  # only their own commune
        form.locator("button[type=submit]").click()
        form.locator(".status.ok").wait_for()
        with stack.db.session() as s:
            sub = s.scalar(select(NotifySubscription).where(NotifySubscription.address == address))
            assert sub is not None and sub.severities == [2, 3]
            node = "dc-001" if viewport is PHONE else "dc-002"
            s.add(
                Alarm(
                    node_id=node,
                    kind="offline",
                    commune_id=stack.ids["Đội Cấn"],
                    first_seen_ms=now_ms(),
                    raised_ms=now_ms(),
                    detail="",
                )
            )
        notifier = Notifier(
            stack.db, NotifyConfig(smtp_host="127.0.0.1", smtp_port=smtp.port), user_scope(stack.db)
        )
        notifier.run_once()
        mine = [m for m in inbox.messages if m["To"] == address]
        assert len(mine) == 1
        assert mine[0]["Subject"].startswith("[Loa] Mất kết nối: Thôn Đồng Bầu")
        assert "xã Đội Cấn" in mine[0]["Subject"]

        page.reload()
        page.wait_for_selector("#deliveries li.delivery[data-status=sent]")
        assert "Đã gửi lúc" in page.inner_text("#deliveries")
        assert page.input_value("#notify-email input[name=address]") == address
        if viewport is PHONE:
            assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1"), (
                "the notifications page scrolls sideways at 390 px"
            )
        screenshot(page, f"{tag}-notifications")
    finally:
        smtp.stop()
        context.close()
