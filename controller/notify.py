"""Alarm notifications: e-mail (SMTP) and a generic webhook (JSON POST, for Zalo or SMS
gateways), per-user subscriptions, retries with backoff, deliveries that are never lost.

Why a table of deliveries (an outbox) and not a send at raise time: the alarm engine must not
wait on a mail server, and a dead server must not lose the alarm. Each pass (1) fans every
alarm raised since a subscription was made out to one ``NotifyDelivery`` row per matching
subscription (unique per alarm and subscription, so a restart or two passes never send
twice), then (2) sends the rows that are due. A failure is kept on the row (attempts, the
error, the next try: 30 s, 1 min, 2 min… up to ``notify_max_attempts``, then "failed"); the
user sees it on their settings page. The service runs each pass in its own worker thread, so
neither the ingest's event loop nor the default thread pool ever waits on SMTP or HTTP.

The scope of a subscription is checked at fan-out time with ``scope_of(username)``, given by
the composition root (users live in the dashboard, a layer above): someone whose communes
were taken away stops receiving their alarms."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import re
import smtplib
import ssl
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import format_datetime as rfc2822_date
from email.utils import make_msgid
from urllib.parse import urlsplit

import httpx
from sqlalchemy import JSON, ForeignKey, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from controller.alarms import ALARM_LABELS_VI, ALARM_SEVERITY, SEVERITY_LABELS_VI, Alarm
from loa.addresses import internal_reason, parse_networks
from loa.db import Base, Database
from loa.errors import DomainError
from loa.timeutil import format_datetime, ms_to_dt, now_ms
from registry.models import Commune, Node, Village

log = logging.getLogger(__name__)

CHANNELS = ("email", "webhook")
DELIVERY_STATES = ("pending", "sent", "failed")
STATE_LABELS_VI = {"pending": "Đang thử lại", "sent": "Đã gửi", "failed": "Không gửi được"}
# Alarms older than this when first seen by the fan-out are not sent (a subscription made
# today does not page anyone about last week).
FANOUT_WINDOW_MS = 24 * 3600 * 1000


class NotifySubscription(Base):
    """One user's channel: where to send and which alarms (severities, communes)."""

    __tablename__ = "notify_subscription"
    __table_args__ = (UniqueConstraint("username", "channel", name="uq_notify_user_channel"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64), index=True)
    channel: Mapped[str] = mapped_column(String(12))
    address: Mapped[str] = mapped_column(String(500))  # e-mail address or webhook URL
    secret: Mapped[str | None] = mapped_column(String(200))  # webhook HMAC key
    severities: Mapped[list[int]] = mapped_column(JSON, default=list)  # [3, 2, 1]
    communes: Mapped[list[int]] = mapped_column(JSON, default=list)  # [] = all in scope
    active: Mapped[bool] = mapped_column(default=True)
    created_ms: Mapped[int] = mapped_column(default=0)
    updated_ms: Mapped[int] = mapped_column(default=0)


class NotifyDelivery(Base):
    """One alarm to one subscription; the outbox row that is retried until sent or failed."""

    __tablename__ = "notify_delivery"
    __table_args__ = (UniqueConstraint("alarm_id", "subscription_id", name="uq_notify_delivery"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    alarm_id: Mapped[int] = mapped_column(ForeignKey("alarm.id"), index=True)
    subscription_id: Mapped[int] = mapped_column(
        ForeignKey("notify_subscription.id", ondelete="CASCADE"), index=True
    )
    status: Mapped[str] = mapped_column(String(10), default="pending", index=True)
    attempts: Mapped[int] = mapped_column(default=0)
    next_ms: Mapped[int] = mapped_column(default=0)
    last_error: Mapped[str | None] = mapped_column(String(300))
    created_ms: Mapped[int] = mapped_column(default=0)
    sent_ms: Mapped[int | None]


@dataclass(frozen=True)
class NotifyConfig:
    smtp_host: str = ""
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_from: str = "loa@localhost"
    smtp_starttls: bool = False
    timeout_s: float = 10.0
    interval_s: float = 5.0
    retry_s: float = 30.0
    max_attempts: int = 6
    public_base_url: str = ""
    webhook_networks: str = ""  # CIDRs a webhook may point into (see check_address)

    @classmethod
    def from_settings(cls, settings: object) -> NotifyConfig:
        g = getattr
        return cls(
            smtp_host=g(settings, "smtp_host", ""),
            smtp_port=g(settings, "smtp_port", 25),
            smtp_username=g(settings, "smtp_username", ""),
            smtp_password=g(settings, "smtp_password", ""),
            smtp_from=g(settings, "smtp_from", "loa@localhost"),
            smtp_starttls=g(settings, "smtp_starttls", False),
            timeout_s=g(settings, "notify_timeout_s", 10.0),
            interval_s=g(settings, "notify_interval_s", 5.0),
            retry_s=g(settings, "notify_retry_s", 30.0),
            max_attempts=g(settings, "notify_max_attempts", 6),
            public_base_url=g(settings, "public_base_url", ""),
            webhook_networks=g(settings, "notify_webhook_allowed_networks", ""),
        )


@dataclass(frozen=True)
class AlarmNotice:
    """What a message says about one alarm: words and places, not codes."""

    alarm_id: int
    kind: str
    label: str
    severity: int
    severity_label: str
    place: str
    commune: str
    commune_id: int | None
    raised_ms: int
    detail: str
    node_id: str

    @property
    def when(self) -> str:
        """ "14:05 04/12/2026" in Asia/Ho_Chi_Minh."""
        stamp = format_datetime(self.raised_ms)  # dd/mm/yyyy HH:MM:SS
        return f"{stamp[11:16]} {stamp[:10]}"

    def subject(self) -> str:
        where = f"{self.place}, {self.commune}" if self.commune else self.place
        return f"[Loa] {self.label}: {where} ({self.severity_label})"

    def text(self, base_url: str = "") -> str:
        lines = [
            f"Cảnh báo: {self.label}",
            f"Mức độ: {self.severity_label}",
            f"Nơi: {self.place}" + (f", {self.commune}" if self.commune else ""),
            f"Lúc: {self.when} (giờ Việt Nam)",
        ]
        if self.detail:
            lines.append(f"Chi tiết: {self.detail}")
        if base_url:
            lines.append(f"Xem và xác nhận: {base_url.rstrip('/')}/tech/alarms")
        lines += [
            "",
            "Thư này do hệ thống Loa gửi tự động. Đổi việc nhận thông báo ở trang "
            "«Nhận thông báo» của bạn.",
        ]
        return "\n".join(lines) + "\n"

    def payload(self) -> dict[str, object]:
        return {
            "event": "alarm.raised",
            "alarm_id": self.alarm_id,
            "kind": self.kind,
            "label": self.label,
            "severity": self.severity,
            "severity_label": self.severity_label,
            "place": self.place,
            "commune": self.commune,
            "commune_id": self.commune_id,
            "raised_ms": self.raised_ms,
            "raised": self.when,
            "detail": self.detail,
            "node_id": self.node_id,
            "text": self.text(),
        }


def notice_for(s: Session, alarm: Alarm) -> AlarmNotice:
    row = s.execute(
        select(Node.label, Village.name)
        .join(Village, Village.id == Node.village_id, isouter=True)
        .where(Node.id == alarm.node_id)
    ).first()
    label, village = (row[0], row[1]) if row else (None, None)
    if village and label:
        place = f"{village} – {label}"
    else:
        place = village or label or f"cụm loa {alarm.node_id}"
    commune = s.get(Commune, alarm.commune_id) if alarm.commune_id else None
    sev = ALARM_SEVERITY.get(alarm.kind, 1)
    return AlarmNotice(
        alarm_id=alarm.id,
        kind=alarm.kind,
        label=ALARM_LABELS_VI.get(alarm.kind, alarm.kind),
        severity=sev,
        severity_label=SEVERITY_LABELS_VI.get(sev, str(sev)),
        place=place,
        commune=f"xã {commune.name}" if commune else "",
        commune_id=alarm.commune_id,
        raised_ms=alarm.raised_ms,
        detail=alarm.detail or "",
        node_id=alarm.node_id,
    )


def sign(secret: str, body: bytes) -> str:
    """The webhook signature header value: ``sha256=<hex HMAC of the exact body>``."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


class DeliveryError(Exception):
    """A send that failed; the message (Vietnamese) is kept on the delivery row."""


ScopeOf = Callable[[str], "frozenset[int] | None | bool"]


class Notifier:
    """Fan-out and delivery passes (blocking; run them in a worker thread)."""

    def __init__(self, db: Database, config: NotifyConfig, scope_of: ScopeOf) -> None:
        self.db = db
        self.config = config
        self.scope_of = scope_of  # frozenset of communes, None = the province, False = none

    # -- fan-out --------------------------------------------------------------------------

    def fanout(self, now: int | None = None) -> int:
        now = now_ms() if now is None else now
        made = 0
        with self.db.session() as s:
            subs = list(
                s.scalars(select(NotifySubscription).where(NotifySubscription.active.is_(True)))
            )
            if not subs:
                return 0
            since = min(max(sub.created_ms, now - FANOUT_WINDOW_MS) for sub in subs)
            alarms = list(
                s.scalars(select(Alarm).where(Alarm.raised_ms >= since).order_by(Alarm.id))
            )
            if not alarms:
                return 0
            done = set(
                s.execute(
                    select(NotifyDelivery.alarm_id, NotifyDelivery.subscription_id).where(
                        NotifyDelivery.alarm_id.in_([a.id for a in alarms])
                    )
                ).tuples()
            )
            scopes: dict[str, frozenset[int] | None | bool] = {}
            for sub in subs:
                if sub.username not in scopes:
                    scopes[sub.username] = self.scope_of(sub.username)
                scope = scopes[sub.username]
                if scope is False:
                    continue
                for a in alarms:
                    if (a.id, sub.id) in done or a.raised_ms < sub.created_ms:
                        continue
                    if not matches(sub, a, scope):  # type: ignore[arg-type]
                        continue
                    s.add(
                        NotifyDelivery(
                            alarm_id=a.id,
                            subscription_id=sub.id,
                            status="pending",
                            next_ms=now,
                            created_ms=now,
                        )
                    )
                    made += 1
        return made

    # -- delivery -------------------------------------------------------------------------

    def deliver_due(self, now: int | None = None, limit: int = 50) -> dict[str, int]:
        now = now_ms() if now is None else now
        counts = {"sent": 0, "retry": 0, "failed": 0}
        with self.db.session() as s:
            due = list(
                s.execute(
                    select(NotifyDelivery.id)
                    .where(NotifyDelivery.status == "pending", NotifyDelivery.next_ms <= now)
                    .order_by(NotifyDelivery.next_ms)
                    .limit(limit)
                ).scalars()
            )
        for delivery_id in due:
            counts[self._deliver_one(delivery_id)] += 1
        return counts

    def _deliver_one(self, delivery_id: int) -> str:
        with self.db.session() as s:
            d = s.get(NotifyDelivery, delivery_id)
            sub = s.get(NotifySubscription, d.subscription_id) if d else None
            alarm = s.get(Alarm, d.alarm_id) if d else None
            if d is None or sub is None or alarm is None or d.status != "pending":
                return "failed"
            notice = notice_for(s, alarm)
            channel, address, secret = sub.channel, sub.address, sub.secret
        error: str | None = None
        try:
            if channel == "email":
                self.send_email(address, notice)
            else:
                self.send_webhook(address, secret, notice)
        except DeliveryError as exc:
            error = str(exc)
        except Exception as exc:  # a bug in a sender must not end notifications
            log.exception("notification %s failed", delivery_id)
            error = f"Lỗi không lường trước: {type(exc).__name__}"
        now = now_ms()
        with self.db.session() as s:
            d = s.get(NotifyDelivery, delivery_id)
            if d is None:  # its subscription was stopped meanwhile
                return "failed"
            d.attempts += 1
            if error is None:
                d.status, d.sent_ms, d.last_error = "sent", now, None
                return "sent"
            d.last_error = error[:300]
            if d.attempts >= self.config.max_attempts:
                d.status = "failed"
                log.warning(
                    "notification %s gave up after %d tries: %s", delivery_id, d.attempts, error
                )
                return "failed"
            d.next_ms = now + int(self.config.retry_s * 1000 * 2 ** (d.attempts - 1))
            return "retry"

    def send_email(self, to: str, notice: AlarmNotice) -> None:
        cfg = self.config
        if not cfg.smtp_host:
            raise DeliveryError("Máy chủ chưa cấu hình gửi e-mail (LOA_SMTP_HOST).")
        msg = EmailMessage()
        msg["Subject"] = notice.subject()
        msg["From"] = cfg.smtp_from
        msg["To"] = to
        msg["Date"] = rfc2822_date(ms_to_dt(now_ms()))
        msg["Message-ID"] = make_msgid(domain="loa.local")
        msg.set_content(notice.text(cfg.public_base_url), charset="utf-8")
        try:
            with smtplib.SMTP(cfg.smtp_host, cfg.smtp_port, timeout=cfg.timeout_s) as smtp:
                if cfg.smtp_starttls:
                    smtp.starttls(context=ssl.create_default_context())
                if cfg.smtp_username:
                    smtp.login(cfg.smtp_username, cfg.smtp_password)
                smtp.send_message(msg)
        except (OSError, smtplib.SMTPException) as exc:
            raise DeliveryError(
                f"Không gửi được e-mail qua {cfg.smtp_host}:{cfg.smtp_port}: {exc}"
            ) from None

    def send_webhook(self, url: str, secret: str | None, notice: AlarmNotice) -> None:
        # Checked again when sending: a name may resolve elsewhere now than when it was saved.
        why = internal_reason(url, parse_networks(self.config.webhook_networks))
        if why is not None:
            raise DeliveryError(f"Địa chỉ nhận trỏ vào {why}; không gửi.")
        body = json.dumps(notice.payload(), ensure_ascii=False).encode("utf-8")
        headers = {"Content-Type": "application/json; charset=utf-8", "User-Agent": "Loa-notify/1"}
        if secret:
            headers["X-Loa-Signature"] = sign(secret, body)
        try:
            r = httpx.post(
                url,
                content=body,
                headers=headers,
                timeout=self.config.timeout_s,
                follow_redirects=False,
            )
        except httpx.HTTPError as exc:
            raise DeliveryError(f"Không gọi được địa chỉ nhận: {type(exc).__name__}") from None
        if not 200 <= r.status_code < 300:
            raise DeliveryError(f"Địa chỉ nhận trả lời HTTP {r.status_code}.")

    def run_once(self) -> dict[str, int]:
        made = self.fanout()
        return {"queued": made, **self.deliver_due()}


def matches(sub: NotifySubscription, alarm: Alarm, scope: frozenset[int] | None) -> bool:
    """Whether ``alarm`` is for ``sub``: its severity is chosen, its commune is in the user's
    scope and, when the subscription names communes, one of them."""
    if ALARM_SEVERITY.get(alarm.kind, 1) not in (sub.severities or []):
        return False
    if scope is not None and alarm.commune_id not in scope:
        return False
    return not sub.communes or alarm.commune_id in sub.communes


class NotificationService:
    """Runs ``Notifier.run_once`` every ``interval_s`` on a thread of its own."""

    def __init__(self, notifier: Notifier) -> None:
        self.notifier = notifier
        self._executor: ThreadPoolExecutor | None = None
        self._task: asyncio.Task[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                await loop.run_in_executor(self._executor, self.notifier.run_once)
            except Exception:
                log.exception("notification pass failed")
            await asyncio.sleep(self.notifier.config.interval_s)

    async def start(self) -> None:
        if self._task is None or self._task.done():
            if self._executor is None:
                self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="loa-notify")
            self._task = asyncio.get_running_loop().create_task(self.run(), name="notify")

    async def stop(self) -> None:
        """Stops the passes; a send in progress finishes on its thread (bounded by the
        timeout) and its row is written, so a stepping-down leader loses nothing."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        if self._executor is not None:
            self._executor.shutdown(wait=False)
            self._executor = None


# -- subscriptions, as the settings page edits them --------------------------------------


class NotifyError(DomainError):
    """A subscription the user must correct (Vietnamese message, HTTP 422)."""

    status = 422


_EMAIL = re.compile(r"^[^@\s]{1,64}@[^@\s]+\.[^@\s]{2,}$")


def check_address(channel: str, address: str, webhook_networks: str = "") -> str:
    """The address, cleaned, or ``NotifyError``. A webhook is posted to by the server, so it
    may not point into an internal network (SSRF) other than ``webhook_networks``."""
    value = (address or "").strip()
    if channel == "email":
        if not _EMAIL.match(value) or len(value) > 254:
            raise NotifyError(f"Địa chỉ e-mail «{value}» không hợp lệ (ví dụ: ten@xa.gov.vn).")
        return value
    if channel == "webhook":
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or len(value) > 500:
            raise NotifyError(
                f"Địa chỉ webhook «{value[:100]}» không hợp lệ: cần dạng https://máy-chủ/đường-dẫn."
            )
        if parts.username is not None or parts.password is not None:
            raise NotifyError(
                "Địa chỉ webhook không được chứa tên đăng nhập hay mật khẩu; "
                "dùng khóa ký (secret) để bên nhận xác thực."
            )
        why = internal_reason(value, parse_networks(webhook_networks))
        if why is not None:
            raise NotifyError(
                f"Không dùng được địa chỉ webhook «{parts.hostname}»: {why}. "
                "Quản trị có thể cho phép mạng riêng của tỉnh bằng "
                "LOA_NOTIFY_WEBHOOK_ALLOWED_NETWORKS."
            )
        return value
    raise NotifyError(f"Kênh «{channel}» không có; chọn email hoặc webhook.")


def save_subscription(
    s: Session,
    username: str,
    channel: str,
    *,
    address: str,
    severities: list[int],
    communes: list[int],
    active: bool,
    secret: str | None,
    scope: frozenset[int] | None,
    webhook_networks: str = "",
) -> NotifySubscription:
    """Create or replace the user's subscription on one channel. ``secret``: None keeps the
    one stored, "" removes it. Communes must be in the user's ``scope``."""
    clean = check_address(channel, address, webhook_networks)
    sev = sorted({int(x) for x in severities})
    if not sev or any(x not in SEVERITY_LABELS_VI for x in sev):
        raise NotifyError(
            "Hãy chọn ít nhất một mức cảnh báo (Nghiêm trọng, Lỗi thiết bị, Cần chú ý)."
        )
    chosen = sorted(set(communes))
    outside = [c for c in chosen if scope is not None and c not in scope]
    if outside:
        raise NotifyError(f"Xã {', '.join(map(str, outside))} không thuộc phạm vi của bạn.")
    sub = s.scalar(
        select(NotifySubscription).where(
            NotifySubscription.username == username, NotifySubscription.channel == channel
        )
    )
    now = now_ms()
    if sub is None:
        sub = NotifySubscription(username=username, channel=channel, created_ms=now)
        s.add(sub)
    sub.address, sub.severities, sub.communes, sub.active = clean, sev, chosen, active
    if secret is not None:
        sub.secret = secret.strip()[:200] or None
    sub.updated_ms = now
    s.flush()
    return sub


def recent_deliveries(s: Session, username: str, limit: int = 20) -> list[dict[str, object]]:
    """The user's latest deliveries, for the settings page: what, where, how it went."""
    rows = s.execute(
        select(NotifyDelivery, NotifySubscription.channel, Alarm)
        .join(NotifySubscription, NotifySubscription.id == NotifyDelivery.subscription_id)
        .join(Alarm, Alarm.id == NotifyDelivery.alarm_id)
        .where(NotifySubscription.username == username)
        .order_by(NotifyDelivery.id.desc())
        .limit(limit)
    ).all()
    out: list[dict[str, object]] = []
    for d, channel, alarm in rows:
        notice = notice_for(s, alarm)
        out.append(
            {
                "id": d.id,
                "channel": channel,
                "status": d.status,
                "status_label": STATE_LABELS_VI[d.status],
                "attempts": d.attempts,
                "error": d.last_error,
                "alarm": notice.subject().removeprefix("[Loa] "),
                "raised": notice.when,
                "next_try": format_datetime(d.next_ms)[:16] if d.status == "pending" else None,
                "sent": format_datetime(d.sent_ms)[:16] if d.sent_ms else None,
            }
        )
    return out
