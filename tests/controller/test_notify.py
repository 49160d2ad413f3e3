"""Alarm notifications (issue 18, item 7) against a real local SMTP server (aiosmtpd) and a
real local HTTP receiver: Vietnamese UTF-8 e-mail naming the place and the time in
dd/mm/yyyy (Asia/Ho_Chi_Minh), a signed JSON webhook, per-user severities and communes
within the user's scope, no duplicates, retries with backoff after a dead server, a failure
kept visible, and a hung server that never stalls the event loop."""

from __future__ import annotations

import asyncio
import email
import email.policy
import hashlib
import hmac
import json
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from aiosmtpd.controller import Controller
from fastapi.testclient import TestClient
from sqlalchemy import select

from controller.alarms import Alarm
from controller.notify import (
    NotificationService,
    Notifier,
    NotifyConfig,
    NotifyDelivery,
    NotifyError,
    recent_deliveries,
    save_subscription,
)
from dashboard.app import create_app
from dashboard.models import User
from dashboard.security import create_user, issue_token
from loa.broker import free_port
from loa.timeutil import format_date, now_ms
from registry.models import Node
from system.root import api_context, user_scope
from tests.factories import make_registry


class Inbox:
    def __init__(self) -> None:
        self.messages: list[email.message.EmailMessage] = []
        self.raw: list[bytes] = []

    async def handle_DATA(self, server, session, envelope):  # noqa: N802 (aiosmtpd's name)
        self.raw.append(envelope.content)
        self.messages.append(
            email.message_from_bytes(envelope.content, policy=email.policy.default)
        )
        return "250 OK"


@pytest.fixture
def smtp():
    inbox = Inbox()
    ctrl = Controller(inbox, hostname="127.0.0.1", port=free_port())
    ctrl.start()
    inbox.port = ctrl.port  # type: ignore[attr-defined]
    yield inbox
    ctrl.stop()


class Receiver:
    """A real HTTP server that records each POST; answers ``status`` (200 by default)."""

    def __init__(self) -> None:
        self.requests: list[tuple[dict, bytes]] = []
        self.status = 200
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802
                body = self.rfile.read(int(self.headers["Content-Length"]))
                outer.requests.append((dict(self.headers), body))
                self.send_response(outer.status)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/loa"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


@pytest.fixture
def receiver():
    r = Receiver()
    yield r
    r.server.shutdown()
    r.server.server_close()


@pytest.fixture
def place(db):
    ids = make_registry(
        db,
        communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-01"]}, "Tân Trào": {"Thôn Tân Lập": ["tt-01"]}},
    )
    with db.session() as s:
        s.get(Node, "dc-01").label = "Nhà văn hóa"
        for name, role, communes in (
            ("kythuat", "technician", [ids["Đội Cấn"]]),
            ("xa.tt", "commune", [ids["Tân Trào"]]),
        ):
            create_user(s, name, "mat-khau-dai-123", role, communes)
    return ids


def raise_alarm(db, ids, kind="offline", node="dc-01", commune="Đội Cấn") -> int:
    with db.session() as s:
        a = Alarm(
            node_id=node,
            kind=kind,
            commune_id=ids[commune],
            first_seen_ms=now_ms(),
            raised_ms=now_ms(),
            detail="3 lần mất kết nối trong 1 giờ qua",
        )
        s.add(a)
        s.flush()
        return a.id


LOOPBACK = "127.0.0.0/8"  # where the test's SMTP server and webhook receiver listen


def subscribe(db, username, channel, address, **kw) -> None:
    scope = user_scope(db)(username)
    with db.session() as s:
        save_subscription(
            s,
            username,
            channel,
            address=address,
            severities=kw.get("severities", [3, 2, 1]),
            communes=kw.get("communes", []),
            active=True,
            secret=kw.get("secret"),
            scope=scope,
            webhook_networks=LOOPBACK,
        )


def notifier(db, port: int, **kw) -> Notifier:
    cfg = NotifyConfig(
        smtp_host="127.0.0.1",
        smtp_port=port,
        smtp_from="loa@tinh.gov.vn",
        webhook_networks=LOOPBACK,
        timeout_s=kw.pop("timeout_s", 5.0),
        retry_s=kw.pop("retry_s", 30.0),
        **kw,
    )
    return Notifier(db, cfg, user_scope(db))


def test_an_alarm_reaches_the_smtp_server_and_the_webhook_in_vietnamese(db, place, smtp, receiver):
    subscribe(db, "kythuat", "email", "kythuat@doican.gov.vn")
    subscribe(db, "kythuat", "webhook", receiver.url, secret="bi-mat-zalo")
    subscribe(db, "xa.tt", "email", "xa@tantrao.gov.vn")  # another commune: nothing for them
    alarm_id = raise_alarm(db, place)
    n = notifier(db, smtp.port)
    assert n.run_once() == {"queued": 2, "sent": 2, "retry": 0, "failed": 0}

    assert len(smtp.messages) == 1
    msg = smtp.messages[0]
    assert msg["To"] == "kythuat@doican.gov.vn"
    assert msg["Subject"] == (
        "[Loa] Mất kết nối: Thôn Nà Pàn – Nhà văn hóa, xã Đội Cấn (Nghiêm trọng)"
    )
    assert b"=?utf-8?" in smtp.raw[0]  # the subject is MIME-encoded, not raw bytes
    assert msg.get_content_type() == "text/plain" and msg.get_content_charset() == "utf-8"
    body = msg.get_content()
    with db.session() as s:
        raised = s.get(Alarm, alarm_id).raised_ms
    assert f"Lúc: {format_date(raised)}" not in body  # time first, then the date
    assert format_date(raised) in body and "(giờ Việt Nam)" in body
    assert "Nơi: Thôn Nà Pàn – Nhà văn hóa, xã Đội Cấn" in body
    assert "Mức độ: Nghiêm trọng" in body and "3 lần mất kết nối" in body
    assert "dc-01" not in body  # the place, not the code

    assert len(receiver.requests) == 1
    headers, raw = receiver.requests[0]
    expected = "sha256=" + hmac.new(b"bi-mat-zalo", raw, hashlib.sha256).hexdigest()
    assert headers["X-Loa-Signature"] == expected
    payload = json.loads(raw.decode("utf-8"))
    assert payload["event"] == "alarm.raised" and payload["alarm_id"] == alarm_id
    assert payload["place"] == "Thôn Nà Pàn – Nhà văn hóa" and payload["severity"] == 3
    assert payload["raised"].endswith(format_date(raised))

    # A second pass sends nothing again.
    assert n.run_once() == {"queued": 0, "sent": 0, "retry": 0, "failed": 0}
    assert len(smtp.messages) == 1 and len(receiver.requests) == 1


def test_severities_and_communes_choose_what_is_sent(db, place, smtp):
    subscribe(db, "kythuat", "email", "kythuat@doican.gov.vn", severities=[3])
    raise_alarm(db, place, kind="weak_signal")
    # A commune officer cannot ask for another commune's alarms.
    with db.session() as s, pytest.raises(NotifyError, match="không thuộc phạm vi"):
        save_subscription(
            s,
            "xa.tt",
            "email",
            address="a@b.vn",
            severities=[3],
            communes=[place["Đội Cấn"]],
            active=True,
            secret=None,
            scope=user_scope(db)("xa.tt"),
        )
    assert notifier(db, smtp.port).run_once()["queued"] == 0
    raise_alarm(db, place, kind="offline")
    assert notifier(db, smtp.port).run_once()["sent"] == 1


def test_a_dead_smtp_server_loses_nothing_and_a_failure_is_visible(db, place, receiver):
    dead = free_port()  # nothing listens here
    subscribe(db, "kythuat", "email", "kythuat@doican.gov.vn")
    subscribe(db, "kythuat", "webhook", receiver.url)
    receiver.status = 500
    raise_alarm(db, place)
    n = notifier(db, dead, max_attempts=2, retry_s=30)
    assert n.run_once() == {"queued": 2, "sent": 0, "retry": 2, "failed": 0}
    with db.session() as s:
        rows = list(s.scalars(select(NotifyDelivery).order_by(NotifyDelivery.id)))
        assert [r.status for r in rows] == ["pending", "pending"]
        assert "Không gửi được e-mail qua 127.0.0.1" in rows[0].last_error
        assert rows[1].last_error == "Địa chỉ nhận trả lời HTTP 500."
        assert all(r.next_ms >= now_ms() + 25_000 for r in rows)  # backoff, not a tight loop
        shown = recent_deliveries(s, "kythuat")
    assert {d["status_label"] for d in shown} == {"Đang thử lại"}

    # The SMTP server comes back on that port; the webhook keeps failing and gives up.
    inbox = Inbox()
    ctrl = Controller(inbox, hostname="127.0.0.1", port=dead)
    ctrl.start()
    try:
        assert n.deliver_due(now=now_ms() + 3_600_000) == {"sent": 1, "retry": 0, "failed": 1}
    finally:
        ctrl.stop()
    assert len(inbox.messages) == 1 and "Mất kết nối" in inbox.messages[0]["Subject"]
    with db.session() as s:
        shown = {d["channel"]: d for d in recent_deliveries(s, "kythuat")}
    assert shown["email"]["status"] == "sent" and shown["email"]["attempts"] == 2
    assert shown["webhook"]["status_label"] == "Không gửi được"
    assert "HTTP 500" in shown["webhook"]["error"]


def test_a_hung_smtp_server_does_not_stall_the_event_loop(db, place):
    """The server accepts the connection and never says a word: the send waits for its
    timeout on the notifier's own thread while the loop keeps running."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(5)
    accepted = threading.Event()
    held: list[socket.socket] = []

    def accept():
        conn, _ = listener.accept()
        held.append(conn)
        accepted.set()

    threading.Thread(target=accept, daemon=True).start()
    subscribe(db, "kythuat", "email", "kythuat@doican.gov.vn")
    raise_alarm(db, place)
    service = NotificationService(
        notifier(db, listener.getsockname()[1], timeout_s=3.0, interval_s=0.1)
    )

    async def scenario() -> tuple[int, str]:
        await service.start()
        while not accepted.is_set():
            await asyncio.sleep(0.01)
        ticks = 0
        for _ in range(20):  # the loop runs while the send hangs
            await asyncio.sleep(0.01)
            ticks += 1
        with db.session() as s:
            status = s.scalar(select(NotifyDelivery.status))
            attempts = s.scalar(select(NotifyDelivery.attempts))
        await service.stop()
        return ticks, f"{status}/{attempts}"

    try:
        ticks, state = asyncio.run(scenario())
    finally:
        for c in held:
            c.close()
        listener.close()
    assert ticks == 20 and state == "pending/0"  # still sending, and the loop was free


def test_settings_api_refuses_bad_input_in_vietnamese(settings, db, place, receiver):
    # The receiver listens on loopback, which only an allowed network lets a webhook reach.
    settings = settings.model_copy(update={"notify_webhook_allowed_networks": LOOPBACK})
    with db.session() as s:
        user = s.scalar(select(User).where(User.username == "kythuat"))
        raw, _ = issue_token(s, user, "api")
    with TestClient(create_app(api_context(settings, db))) as c:
        c.headers["Authorization"] = f"Bearer {raw}"
        r = c.put("/api/v1/notifications/me/email", json={"address": "khong-phai-email"})
        assert r.status_code == 422 and "không hợp lệ" in r.json()["detail"]
        r = c.put(
            "/api/v1/notifications/me/email",
            json={"address": "a@b.vn", "communes": [place["Tân Trào"]]},
        )
        assert r.status_code == 422 and "không thuộc phạm vi" in r.json()["detail"]
        r = c.put("/api/v1/notifications/me/webhook", json={"address": "ftp://x", "secret": "k"})
        assert r.status_code == 422 and "webhook" in r.json()["detail"]
        # Server-side request forgery: the server would post into its own networks.
        for inside in (
            "http://169.254.169.254/latest/meta-data",
            "http://10.0.0.5/sms",
            "http://localhost:8080/x",
            "http://gateway.local/x",
            "http://[::1]/x",
            "http://user:pw@sms.example.vn/x",
        ):
            r = c.put("/api/v1/notifications/me/webhook", json={"address": inside})
            assert r.status_code == 422, (inside, r.text)
            assert (
                "Không dùng được địa chỉ webhook" in r.json()["detail"]
                or "tên đăng nhập" in r.json()["detail"]
            ), r.json()
        r = c.put(
            "/api/v1/notifications/me/webhook",
            json={"address": receiver.url, "secret": "k", "severities": [3, 2]},
        )
        assert r.status_code == 200 and r.json()["signed"] is True
        got = c.get("/api/v1/notifications/me").json()
        assert got["webhook"]["severities"] == [2, 3] and got["email"] is None
        assert [ch["name"] for ch in got["communes"]] == ["Đội Cấn"]
        assert c.delete("/api/v1/notifications/me/webhook").json()["stopped"] is True
        assert c.get("/api/v1/notifications/me").json()["webhook"] is None


def test_a_webhook_is_checked_again_when_it_is_sent(db, receiver):
    """A name can resolve elsewhere when the alarm comes than when it was saved (DNS
    rebinding): the sender refuses an internal address whatever the subscription said."""
    from controller.notify import AlarmNotice, DeliveryError

    notice = AlarmNotice(
        alarm_id=1,
        kind="offline",
        label="Mất kết nối",
        severity=3,
        severity_label="Nghiêm trọng",
        place="Thôn Nà Pàn – Cụm 1",
        commune="Đội Cấn",
        commune_id=None,
        raised_ms=now_ms(),
        detail="",
        node_id="dc-001",
    )
    closed = Notifier(db, NotifyConfig(), lambda _u: None)
    with pytest.raises(DeliveryError, match="trỏ vào địa chỉ loopback"):
        closed.send_webhook(receiver.url, None, notice)
    assert not receiver.requests
    Notifier(db, NotifyConfig(webhook_networks=LOOPBACK), lambda _u: None).send_webhook(
        receiver.url, None, notice
    )
    assert len(receiver.requests) == 1
