"""Idempotency keys: one mechanism for every endpoint that creates something.

A form or API client sends ``Idempotency-Key`` with a creating request (a bulletin, a saved
group, an alert, a node command). The key is remembered, per person, with a fingerprint of
the request and the answer, *in the same transaction as what the request created*: either
both are stored or neither. So a double click or a retry after a dropped answer gets the
first answer back instead of a copy, and a key reused for a different request is refused
(409) rather than silently answered with something else.

Kept in the floor layer because every domain uses it and it needs only the database.
"""

from __future__ import annotations

import hashlib
import json
import re
from typing import Any

from sqlalchemy import JSON, String, UniqueConstraint, select
from sqlalchemy.orm import Mapped, Session, mapped_column

from loa.db import Base
from loa.errors import DomainError

KEY_PATTERN = re.compile(r"[A-Za-z0-9_.:-]{8,80}")
MSG_BAD_KEY = "Khóa chống gửi trùng («Idempotency-Key») phải có 8–80 ký tự chữ, số hoặc _ . : -."
MSG_REUSED = (
    "Khóa chống gửi trùng («Idempotency-Key») này đã dùng cho một yêu cầu khác; "
    "hãy gửi lại đúng yêu cầu cũ hoặc dùng khóa mới."
)

MSG_IN_FLIGHT = (
    "Một yêu cầu khác với cùng khóa chống gửi trùng («Idempotency-Key») vừa được xử lý cùng "
    "lúc; không có gì được tạo thêm. Hãy gửi lại đúng yêu cầu đó để nhận kết quả của nó."
)
MSG_IN_FLIGHT_EN = (
    "Another request with the same Idempotency-Key was processed at the same moment; nothing "
    "more was created. Send the same request again to get its answer."
)


def lost_a_key_race(exc: Exception) -> bool:
    """True when a database refusal is the unique key of :class:`IdempotencyKey`: two requests
    with one key ran at once and this one lost. SQLite names the columns, PostgreSQL the
    constraint."""
    text = str(getattr(exc, "orig", exc))
    return "uq_idempotency_key_user_key" in text or "idempotency_key.username" in text


class IdempotencyKeyInvalid(DomainError):
    status = 422


class IdempotencyKeyReused(DomainError):
    status = 409


class IdempotencyKey(Base):
    """One key a person used: what it was for (``action`` + request ``fingerprint``), what it
    created (``resource_id``) and the answer given (``response``)."""

    __tablename__ = "idempotency_key"
    __table_args__ = (UniqueConstraint("username", "key", name="uq_idempotency_key_user_key"),)

    id: Mapped[int] = mapped_column(primary_key=True)
    username: Mapped[str] = mapped_column(String(64))
    key: Mapped[str] = mapped_column(String(80))
    action: Mapped[str] = mapped_column(String(80))
    fingerprint: Mapped[str] = mapped_column(String(64))
    resource_id: Mapped[str | None] = mapped_column(String(80))
    response: Mapped[Any] = mapped_column(JSON, nullable=True)
    created_ms: Mapped[int]


def check_key(key: str | None, error: type[DomainError] = IdempotencyKeyInvalid) -> str | None:
    """The key as sent, or None when none was sent; a malformed one is refused (``error``
    lets a domain keep its own error class for the same Vietnamese message)."""
    if key is None or key == "":
        return None
    if not isinstance(key, str) or not KEY_PATTERN.fullmatch(key):
        raise error(MSG_BAD_KEY)
    return key


def fingerprint(action: str, body: Any) -> str:
    """A stable digest of what was asked (key order and spacing do not matter)."""
    text = json.dumps(
        [action, body], sort_keys=True, ensure_ascii=False, default=str, separators=(",", ":")
    )
    return hashlib.sha256(text.encode()).hexdigest()


def earlier(s: Session, username: str, key: str, action: str, body: Any) -> IdempotencyKey | None:
    """The earlier use of ``key`` by ``username`` for this very request, or None when the key
    is new; the key used for another request is refused (409)."""
    row = s.scalar(
        select(IdempotencyKey).where(IdempotencyKey.username == username, IdempotencyKey.key == key)
    )
    if row is None:
        return None
    if row.action != action or row.fingerprint != fingerprint(action, body):
        raise IdempotencyKeyReused(MSG_REUSED)
    return row


def remember(
    s: Session,
    username: str,
    key: str,
    action: str,
    body: Any,
    *,
    resource_id: Any = None,
    response: Any = None,
    now_ms: int,
) -> None:
    """Store the key in the caller's transaction, flushed at once so that a concurrent request
    with the same key fails here (IntegrityError) before anything commits; the caller then
    rolls back and answers with :func:`earlier`."""
    s.add(
        IdempotencyKey(
            username=username[:64],
            key=key,
            action=action[:80],
            fingerprint=fingerprint(action, body),
            resource_id=None if resource_id is None else str(resource_id),
            response=response,
            created_ms=now_ms,
        )
    )
    s.flush()
