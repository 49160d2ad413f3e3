"""Accounts, tokens, login attempts and the audit log.

Roles follow who uses Loa (docs/daily-use.md): a commune officer sees only its communes, a
technician a set of communes or the whole province, a province admin everything. The audit log
is append-only: the code has no update or delete path for it, and on SQLite and PostgreSQL a
trigger makes the database refuse UPDATE and DELETE as well, so a compromised account cannot
quietly rewrite what it did.
"""

from __future__ import annotations

from sqlalchemy import DDL, JSON, ForeignKey, Index, String, event
from sqlalchemy.orm import Mapped, mapped_column, relationship

# The Alarm table lives with the alarm engine (controller/alarms.py); importing it here puts
# it in Base.metadata whenever ``import_all_models`` runs.
from controller.alarms import Alarm  # noqa: F401
from loa.db import Base

ROLES = ("commune", "technician", "province")
ROLE_LABELS_VI = {
    "commune": "Cán bộ xã",
    "technician": "Kỹ thuật viên",
    "province": "Quản trị tỉnh",
}


class User(Base):
    __tablename__ = "app_user"
    id: Mapped[int] = mapped_column(primary_key=True)
    # Login names are compared lower-cased; ``username`` keeps the spelling given.
    username: Mapped[str] = mapped_column(String(64))
    username_key: Mapped[str] = mapped_column(String(64), unique=True)
    display_name: Mapped[str] = mapped_column(String(200), default="")
    role: Mapped[str] = mapped_column(String(16))
    password_hash: Mapped[str] = mapped_column(String(200))
    active: Mapped[bool] = mapped_column(default=True)
    language: Mapped[str] = mapped_column(String(8), default="vi")
    created_ms: Mapped[int] = mapped_column(default=0)
    password_changed_ms: Mapped[int] = mapped_column(default=0)
    communes: Mapped[list[UserCommune]] = relationship(
        cascade="all, delete-orphan", lazy="selectin"
    )

    @property
    def commune_ids(self) -> frozenset[int]:
        return frozenset(c.commune_id for c in self.communes)

    def scope_commune_ids(self) -> frozenset[int] | None:
        """Communes this user may see; None = the whole province.

        A province admin, and a technician given no communes, cover the province. A commune
        officer with no commune (a misconfigured account) sees nothing rather than everything.
        """
        if self.role == "province":
            return None
        ids = self.commune_ids
        if self.role == "technician" and not ids:
            return None
        return ids

    def can_access_commune(self, commune_id: int | None) -> bool:
        scope = self.scope_commune_ids()
        if scope is None:
            return True
        return commune_id is not None and commune_id in scope


class UserCommune(Base):
    __tablename__ = "app_user_commune"
    user_id: Mapped[int] = mapped_column(
        ForeignKey("app_user.id", ondelete="CASCADE"), primary_key=True
    )
    commune_id: Mapped[int] = mapped_column(ForeignKey("commune.id"), primary_key=True)


class AuthToken(Base):
    """A login session (cookie) or an API bearer token. Only the SHA-256 of the secret is
    stored, so a leaked database does not hand out working tokens."""

    __tablename__ = "auth_token"
    id: Mapped[int] = mapped_column(primary_key=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    user_id: Mapped[int] = mapped_column(ForeignKey("app_user.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))  # "session" | "api"
    csrf_token: Mapped[str] = mapped_column(String(64), default="")
    created_ms: Mapped[int]
    expires_ms: Mapped[int] = mapped_column(index=True)
    last_used_ms: Mapped[int] = mapped_column(default=0)
    ip: Mapped[str] = mapped_column(String(64), default="")
    revoked: Mapped[bool] = mapped_column(default=False)


class LoginAttempt(Base):
    """Every password check, for the rate limits (per user and address, per user, per
    address)."""

    __tablename__ = "login_attempt"
    __table_args__ = (
        Index("ix_login_attempt_key_at", "username_key", "ip", "at_ms"),
        Index("ix_login_attempt_ip_at", "ip", "at_ms"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    at_ms: Mapped[int]
    username_key: Mapped[str] = mapped_column(String(64))
    ip: Mapped[str] = mapped_column(String(64))
    ok: Mapped[bool]


class AuditLog(Base):
    """Who did what, when, from where. Append-only (see module docstring)."""

    __tablename__ = "audit_log"
    __table_args__ = (Index("ix_audit_at", "at_ms"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    at_ms: Mapped[int]
    user_id: Mapped[int | None]
    username: Mapped[str] = mapped_column(String(64), default="")
    action: Mapped[str] = mapped_column(String(80))
    target: Mapped[str] = mapped_column(String(200), default="")
    method: Mapped[str] = mapped_column(String(8), default="")
    path: Mapped[str] = mapped_column(String(300), default="")
    status_code: Mapped[int | None]
    ip: Mapped[str] = mapped_column(String(64), default="")
    detail: Mapped[dict | None] = mapped_column(JSON)


_APPEND_ONLY_MSG = "audit_log is append-only"

for _op in ("UPDATE", "DELETE"):
    event.listen(
        AuditLog.__table__,
        "after_create",
        DDL(
            f"CREATE TRIGGER audit_log_no_{_op.lower()} BEFORE {_op} ON audit_log "
            f"BEGIN SELECT RAISE(ABORT, '{_APPEND_ONLY_MSG}'); END;"
        ).execute_if(dialect="sqlite"),
    )

event.listen(
    AuditLog.__table__,
    "after_create",
    DDL(
        "CREATE OR REPLACE FUNCTION audit_log_forbid() RETURNS trigger AS $$ "
        f"BEGIN RAISE EXCEPTION '{_APPEND_ONLY_MSG}'; END; $$ LANGUAGE plpgsql; "
        "CREATE TRIGGER audit_log_no_change BEFORE UPDATE OR DELETE ON audit_log "
        "FOR EACH ROW EXECUTE FUNCTION audit_log_forbid();"
    ).execute_if(dialect="postgresql"),
)
