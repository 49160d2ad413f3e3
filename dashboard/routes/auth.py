"""API authentication (bearer tokens), the current user, account administration and the
audit log. The web UI logs in through ``dashboard.routes.ui`` with the same functions."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, HTTPException, Query, Request, status
from fastapi.security import OAuth2PasswordRequestForm
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session

from dashboard.deps import DbSession
from dashboard.models import ROLES, AuditLog, User
from dashboard.security import (
    MAX_API_TOKEN_TTL_MS,
    AccountError,
    AuditMiddleware,
    LoginError,
    audit,
    authenticate,
    client_ip,
    create_user,
    current_user,
    issue_token,
    require_role,
    resolve_communes,
    set_password,
    update_user,
    verify_password,
)
from loa import idempotency
from loa.timeutil import format_datetime, now_ms

router = APIRouter(prefix="/api/v1", tags=["auth"])


class TokenOut(BaseModel):
    access_token: str
    token_type: str = "bearer"
    expires_in: int
    expires_at: str
    username: str
    role: str


class UserOut(BaseModel):
    id: int
    username: str
    display_name: str
    role: str
    active: bool
    communes: list[int] | None = Field(description="None = whole province")
    created: str


class UserCreate(BaseModel):
    username: str = Field(min_length=1, max_length=64)
    password: str = Field(min_length=1, max_length=200)
    role: str
    communes: list[str] = Field(default_factory=list, description="ids, codes or names")
    display_name: str = ""


class UserUpdate(BaseModel):
    role: str | None = None
    communes: list[str] | None = None
    active: bool | None = None
    display_name: str | None = None


class AuditEntryOut(BaseModel):
    """One row of the audit log (``at``: dd/mm/yyyy HH:MM:SS, Asia/Ho_Chi_Minh)."""

    id: int
    at: str
    at_ms: int
    username: str
    action: str
    target: str
    ip: str
    status: int | None
    detail: Any = Field(description="what the action changed (JSON), or null")


class PasswordIn(BaseModel):
    password: str = Field(min_length=1, max_length=200)


def user_out(user: User) -> UserOut:
    scope = user.scope_commune_ids()
    return UserOut(
        id=user.id,
        username=user.username,
        display_name=user.display_name,
        role=user.role,
        active=user.active,
        communes=sorted(scope) if scope is not None else None,
        created=format_datetime(user.created_ms) if user.created_ms else "",
    )


@router.post("/auth/token", response_model=TokenOut)
def login_for_token(
    *,
    request: Request,
    form: Annotated[OAuth2PasswordRequestForm, Depends()],
    ttl_s: int | None = Query(None, ge=60, le=MAX_API_TOKEN_TTL_MS // 1000),
    s: DbSession,
):
    """OAuth2 password flow: form fields ``username`` and ``password``."""
    ip = client_ip(request)
    try:
        user = authenticate(s, form.username, form.password, ip)
    except LoginError as exc:
        audit(
            s,
            "auth.token_failed",
            username=form.username,
            request=request,
            status_code=exc.status_code,
        )
        s.commit()  # the failed attempt must count even though the request fails
        headers = {"WWW-Authenticate": "Bearer"} if exc.status_code == 401 else None
        raise HTTPException(exc.status_code, exc.message, headers=headers) from None
    raw, token = issue_token(s, user, "api", ip, ttl_ms=ttl_s * 1000 if ttl_s else None)
    audit(s, "auth.token", user=user, request=request, status_code=200)
    s.commit()  # durable before the client holds the token (see commit note in security.py)
    return TokenOut(
        access_token=raw,
        expires_in=(token.expires_ms - token.created_ms) // 1000,
        expires_at=format_datetime(token.expires_ms),
        username=user.username,
        role=user.role,
    )


@router.delete("/auth/token", status_code=204)
def revoke_token(*, request: Request, user: User = Depends(current_user), s: DbSession) -> None:
    token = s.merge(request.state.loa_token)
    token.revoked = True
    audit(s, "auth.logout", user=user, request=request, status_code=204)
    s.commit()


@router.get("/auth/me")
def me(request: Request, user: User = Depends(current_user)) -> dict:
    token = request.state.loa_token
    return {
        **user_out(user).model_dump(),
        "csrf_token": token.csrf_token if token.kind == "session" else None,
    }


def _communes(s: Session, refs: list[str] | None) -> list[int] | None:
    if refs is None:
        return None
    try:
        return resolve_communes(s, refs)
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None


@router.get("/users", response_model=list[UserOut])
def list_users(*, _: User = Depends(require_role("province")), s: DbSession):
    return [user_out(u) for u in s.scalars(select(User).order_by(User.username_key))]


@router.post("/users", response_model=UserOut, status_code=201)
def add_user(
    *,
    body: UserCreate,
    request: Request,
    admin: User = Depends(require_role("province")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
):
    """A new account. ``Idempotency-Key`` (``loa.idempotency``): a retry answers the account
    the first request made instead of "already exists"; the account, its audit row and the
    key are one transaction. The key's fingerprint leaves the password out (it would be an
    unsalted digest of it); a retry's password is checked against the account's hash
    instead, so a different password with the same key is refused as a different request."""
    key = idempotency.check_key(idempotency_key)
    asked = body.model_dump(exclude={"password"})
    if key is not None:
        row = idempotency.earlier(s, admin.username, key, "user.create", asked)
        if row is not None:
            made = s.get(User, int(row.resource_id or 0))
            if made is None or not verify_password(made.password_hash, body.password):
                raise idempotency.IdempotencyKeyReused(idempotency.MSG_REUSED)
            return row.response
    try:
        user = create_user(
            s,
            body.username,
            body.password,
            body.role,
            _communes(s, body.communes) or [],
            body.display_name,
        )
    except AccountError as exc:
        code = 409 if "đã tồn tại" in str(exc) else 422
        raise HTTPException(code, str(exc)) from None
    audit(
        s,
        "user.create",
        user=admin,
        target=user.username,
        request=request,
        status_code=201,
        detail={"role": user.role, "communes": sorted(user.commune_ids)},
    )
    out = user_out(user)
    if key is not None:
        idempotency.remember(
            s,
            admin.username,
            key,
            "user.create",
            asked,
            resource_id=user.id,
            response=out.model_dump(),
            now_ms=now_ms(),
        )
    s.commit()
    return out


def _user_or_404(s: Session, user_id: int) -> User:
    user = s.get(User, user_id)
    if user is None:
        raise HTTPException(404, "Không tìm thấy tài khoản")
    return user


@router.patch("/users/{user_id}", response_model=UserOut)
def change_user(
    *,
    user_id: int,
    body: UserUpdate,
    request: Request,
    admin: User = Depends(require_role("province")),
    s: DbSession,
):
    user = _user_or_404(s, user_id)
    if user.id == admin.id and (body.active is False or (body.role and body.role != "province")):
        raise HTTPException(422, "Không thể tự khóa hoặc tự hạ quyền tài khoản đang dùng")
    if body.role is not None and body.role not in ROLES:
        raise HTTPException(422, "Vai trò không hợp lệ (chọn: commune, technician, province)")
    try:
        update_user(
            s,
            user,
            role=body.role,
            commune_ids=_communes(s, body.communes),
            active=body.active,
            display_name=body.display_name,
        )
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None
    audit(
        s,
        "user.update",
        user=admin,
        target=user.username,
        request=request,
        status_code=200,
        detail=body.model_dump(exclude_none=True),
    )
    s.commit()
    return user_out(user)


@router.post("/users/{user_id}/password", status_code=204)
def reset_password(
    *,
    user_id: int,
    body: PasswordIn,
    request: Request,
    admin: User = Depends(require_role("province")),
    s: DbSession,
) -> None:
    user = _user_or_404(s, user_id)
    try:
        set_password(s, user, body.password)
    except AccountError as exc:
        raise HTTPException(422, str(exc)) from None
    audit(
        s, "user.password_reset", user=admin, target=user.username, request=request, status_code=204
    )
    s.commit()


@router.get("/audit", response_model=list[AuditEntryOut])
def audit_log(
    *,
    limit: int = Query(100, ge=1, le=1000),
    before_id: int | None = None,
    _: User = Depends(require_role("province")),
    s: DbSession,
):
    q = select(AuditLog).order_by(AuditLog.id.desc()).limit(limit)
    if before_id is not None:
        q = q.where(AuditLog.id < before_id)
    return [
        {
            "id": a.id,
            "at": format_datetime(a.at_ms),
            "at_ms": a.at_ms,
            "username": a.username,
            "action": a.action,
            "target": a.target,
            "ip": a.ip,
            "status": a.status_code,
            "detail": a.detail,
        }
        for a in s.scalars(q)
    ]


def setup(app: FastAPI) -> None:
    app.add_middleware(AuditMiddleware, db_getter=lambda: app.state.ctx.db)


__all__ = ["router", "setup", "status"]
