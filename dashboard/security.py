"""Who is calling, what they may touch, and the record of what they did.

Two ways in, one user model:
- the web UI: a login session in a signed, HttpOnly, SameSite=Lax cookie (Secure over https),
  with a per-session CSRF token that every unsafe request must echo (form field
  ``csrf_token`` or header ``X-CSRF-Token``);
- the API: ``Authorization: Bearer`` tokens from ``POST /api/v1/auth/token``.
Both are random secrets of which only the SHA-256 is stored, with an expiry; sessions are rows,
not self-contained cookies, so disabling a user or logging out ends access at once.

Routes here commit before they return: FastAPI ends ``yield`` dependencies (``get_session``'s
commit) only after the response has been sent, so a client acting on the answer could
otherwise read the database before the write has landed.

Dependencies for other routers: ``current_user`` (401 "Chưa đăng nhập"),
``require_role(...)`` (403 "Không có quyền"), ``scope_commune_ids(user)`` (None = the whole
province) and ``User.can_access_commune``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
from collections.abc import Callable, Iterable
from typing import Any

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from fastapi import Depends, HTTPException, Request, status
from fastapi.concurrency import run_in_threadpool
from itsdangerous import BadSignature, Signer
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from dashboard.deps import DbSession, get_ctx
from dashboard.models import ROLES, AuditLog, AuthToken, LoginAttempt, User, UserCommune
from loa.db import Database
from loa.text import fold
from loa.timeutil import now_ms
from registry.models import Commune, Node, Village

SESSION_COOKIE = "loa_session"
LOGIN_CSRF_COOKIE = "loa_login_csrf"
CSRF_HEADER = "X-CSRF-Token"
CSRF_FIELD = "csrf_token"
SESSION_TTL_MS = 12 * 3600 * 1000
API_TOKEN_TTL_MS = 24 * 3600 * 1000
MAX_API_TOKEN_TTL_MS = 30 * 24 * 3600 * 1000
LOGIN_MAX_FAILURES = 5
LOGIN_MAX_FAILURES_ACCOUNT = 20
LOGIN_MAX_FAILURES_ADDRESS = 20
LOGIN_WINDOW_MS = 5 * 60 * 1000
MIN_PASSWORD_LEN = 8
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})

MSG_NOT_LOGGED_IN = "Chưa đăng nhập"
MSG_FORBIDDEN = "Không có quyền"
MSG_BAD_LOGIN = "Sai tên đăng nhập hoặc mật khẩu"
MSG_CSRF = "Phiên làm việc không hợp lệ (thiếu mã CSRF). Hãy tải lại trang rồi thử lại."

_hasher = PasswordHasher()
# Verifying against a real hash when the user does not exist keeps the answer time the same,
# so timing does not tell which login names exist.
_DUMMY_HASH = _hasher.hash("loa-dummy-password")


class AccountError(ValueError):
    """Bad account input; the message is Vietnamese and shown to the user as is."""


class LoginError(Exception):
    """``message`` is the Vietnamese text; ``msgid`` and ``values`` let a page translate it."""

    def __init__(self, msgid: str, status_code: int = 401, **values: object) -> None:
        self.msgid = msgid
        self.values = values
        self.message = msgid.format(**values) if values else msgid
        self.status_code = status_code
        super().__init__(self.message)


# --------------------------------------------------------------------------- passwords


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(password_hash: str, password: str) -> bool:
    try:
        return _hasher.verify(password_hash, password)
    except (VerificationError, InvalidHashError):
        return False


def check_new_password(password: str) -> None:
    if len(password) < MIN_PASSWORD_LEN:
        raise AccountError(f"Mật khẩu phải có ít nhất {MIN_PASSWORD_LEN} ký tự")
    if len(password) > 200:
        raise AccountError("Mật khẩu quá dài (tối đa 200 ký tự)")


def username_key(username: str) -> str:
    return username.strip().lower()


# --------------------------------------------------------------------------- tokens


def _digest(raw: str) -> str:
    return hashlib.sha256(raw.encode()).hexdigest()


def _signer(db_secret: str) -> Signer:
    return Signer(db_secret, salt="loa-session-cookie")


def sign_session(secret_key: str, raw: str) -> str:
    return _signer(secret_key).sign(raw.encode()).decode()


def unsign_session(secret_key: str, cookie: str) -> str | None:
    try:
        return _signer(secret_key).unsign(cookie.encode()).decode()
    except (BadSignature, UnicodeDecodeError):
        return None


def issue_token(
    s: Session, user: User, kind: str, ip: str = "", ttl_ms: int | None = None
) -> tuple[str, AuthToken]:
    """A new random secret for ``user``; returns (secret shown once, stored row)."""
    raw = secrets.token_urlsafe(32)
    now = now_ms()
    ttl = (
        ttl_ms
        if ttl_ms is not None
        else (SESSION_TTL_MS if kind == "session" else API_TOKEN_TTL_MS)
    )
    token = AuthToken(
        token_hash=_digest(raw),
        user_id=user.id,
        kind=kind,
        csrf_token=secrets.token_urlsafe(24) if kind == "session" else "",
        created_ms=now,
        expires_ms=now + ttl,
        last_used_ms=now,
        ip=ip[:64],
    )
    s.add(token)
    s.flush()
    return raw, token


def resolve_token(s: Session, raw: str, kind: str) -> tuple[User, AuthToken] | None:
    """The active user behind a secret, or None when unknown, expired, revoked or disabled."""
    token = s.scalar(
        select(AuthToken).where(AuthToken.token_hash == _digest(raw), AuthToken.kind == kind)
    )
    now = now_ms()
    if token is None or token.revoked or token.expires_ms <= now:
        return None
    user = s.get(User, token.user_id)
    if user is None or not user.active:
        return None
    if now - token.last_used_ms > 60_000:  # at most one write a minute per token
        token.last_used_ms = now
    return user, token


def revoke_user_tokens(s: Session, user_id: int) -> None:
    for token in s.scalars(
        select(AuthToken).where(AuthToken.user_id == user_id, AuthToken.revoked.is_(False))
    ):
        token.revoked = True


# --------------------------------------------------------------------------- login


def _failures_since(s: Session, since_ms: int, *conditions: Any) -> tuple[int, int | None]:
    count, first = s.execute(
        select(func.count(), func.min(LoginAttempt.at_ms)).where(
            LoginAttempt.ok.is_(False), LoginAttempt.at_ms >= since_ms, *conditions
        )
    ).one()
    return count, first


def authenticate(s: Session, username: str, password: str, ip: str) -> User:
    """Check a password, with three limits on failures in ``LOGIN_WINDOW_MS``:
    - per account and address (``LOGIN_MAX_FAILURES``), reset by a success from there;
    - per account from all addresses (``LOGIN_MAX_FAILURES_ACCOUNT``): guessing one password
      from many addresses;
    - per address over all accounts (``LOGIN_MAX_FAILURES_ADDRESS``): one password sprayed
      across many accounts. Not reset by a success: an attacker with an account of their own
      must not clear their address by logging in.

    Raises ``LoginError`` (401 wrong password or disabled account, 429 too many failures).
    A disabled account answers exactly as a wrong password does, after the same hash check,
    so neither the answer nor its time tells an attacker that the password was right.
    Every check is recorded in ``LoginAttempt``; the caller commits."""
    key = username_key(username)[:64]
    ip = ip[:64]
    now = now_ms()
    window = now - LOGIN_WINDOW_MS
    last_ok = s.scalar(
        select(func.max(LoginAttempt.at_ms)).where(
            LoginAttempt.username_key == key, LoginAttempt.ip == ip, LoginAttempt.ok.is_(True)
        )
    )
    last_ok_any = s.scalar(
        select(func.max(LoginAttempt.at_ms)).where(
            LoginAttempt.username_key == key, LoginAttempt.ok.is_(True)
        )
    )
    for count, first, limit in (
        (
            *_failures_since(
                s,
                max(window, (last_ok or 0) + 1),
                LoginAttempt.username_key == key,
                LoginAttempt.ip == ip,
            ),
            LOGIN_MAX_FAILURES,
        ),
        (
            *_failures_since(
                s, max(window, (last_ok_any or 0) + 1), LoginAttempt.username_key == key
            ),
            LOGIN_MAX_FAILURES_ACCOUNT,
        ),
        (*_failures_since(s, window, LoginAttempt.ip == ip), LOGIN_MAX_FAILURES_ADDRESS),
    ):
        if count >= limit:
            wait_s = max(1, ((first or now) + LOGIN_WINDOW_MS - now) // 1000)
            minutes = max(1, -(-wait_s // 60))
            raise LoginError(
                "Đăng nhập sai quá nhiều lần. Vui lòng thử lại sau {minutes} phút.",
                status.HTTP_429_TOO_MANY_REQUESTS,
                minutes=minutes,
            )
    user = s.scalar(select(User).where(User.username_key == key)) if key else None
    ok = verify_password(user.password_hash if user else _DUMMY_HASH, password)
    ok = bool(ok and user is not None and user.active)
    s.add(LoginAttempt(at_ms=now, username_key=key, ip=ip, ok=ok))
    if not ok or user is None:
        raise LoginError(MSG_BAD_LOGIN)
    if _hasher.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


# --------------------------------------------------------------------------- audit


def client_ip(request: Request) -> str:
    return request.client.host if request.client else ""


def audit(
    s: Session,
    action: str,
    *,
    user: User | None = None,
    username: str | None = None,
    target: str = "",
    request: Request | None = None,
    ip: str = "",
    status_code: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLog:
    """Append one audit row in the caller's transaction (so the record and the change it
    describes commit together). Marks the request as audited so the catch-all audit
    middleware does not write a second, vaguer row."""
    entry = AuditLog(
        at_ms=now_ms(),
        user_id=user.id if user else None,
        username=(user.username if user else (username or ""))[:64],
        action=action[:80],
        target=str(target)[:200],
        method=request.method if request else "",
        path=request.url.path[:300] if request else "",
        ip=(client_ip(request) if request else ip)[:64],
        status_code=status_code,
        detail=detail,
    )
    s.add(entry)
    if request is not None:
        request.state.audited = True
    return entry


def audit_hook(
    *, user: User, request: Request, status_code: int
) -> Callable[[Session, str, str, dict[str, Any]], None]:
    """A domain function's audit hook (``registry.changes.AuditHook``) bound to who asked,
    from where, and the answer's status: the domain names the action and what changed, the
    row goes to the one audit log in the caller's transaction. Routes stay thin and the
    API and the web form of one change write the same record."""

    def write(s: Session, action: str, target: str, detail: dict[str, Any]) -> None:
        audit(
            s,
            action,
            user=user,
            target=target,
            request=request,
            status_code=status_code,
            detail=detail,
        )

    return write


def alerts_audit(s: Session, action: str, username: str, target: str, detail: dict) -> None:
    """The alert service's audit hook (``alerts.workflow.AuditHook``): its steps go to the
    one audit log, in the transaction of the step."""
    audit(s, action, username=username or "cap", target=target, ip="alerts", detail=detail)


class AuditMiddleware:
    """Records every unsafe request (POST/PUT/PATCH/DELETE) that a route did not audit itself:
    who (the user ``current_user`` found), what (method, route, status), when, from where.
    A plain ASGI middleware, so streaming responses (SSE) pass through untouched."""

    def __init__(self, app: Any, db_getter: Callable[[], Database]) -> None:
        self.app = app
        self.db_getter = db_getter

    async def __call__(self, scope: dict, receive: Callable, send: Callable) -> None:
        if scope["type"] != "http" or scope["method"] not in UNSAFE_METHODS:
            await self.app(scope, receive, send)
            return
        scope.setdefault("state", {})
        written = False

        async def send_wrapper(message: dict) -> None:
            nonlocal written
            if message["type"] == "http.response.start" and not written:
                # Recorded before the client learns the outcome, so nothing it does next can
                # outrun its own audit entry.
                written = True
                await self._maybe_write(scope, message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        finally:
            if not written:
                await self._maybe_write(scope, 500)

    async def _maybe_write(self, scope: dict, status_code: int) -> None:
        state = scope.get("state") or {}
        if not state.get("audited"):
            await run_in_threadpool(self._write, scope, state, status_code)

    def _write(self, scope: dict, state: dict, status_code: int) -> None:
        route = scope.get("route")
        user_id, username = state.get("loa_actor") or (None, "")
        client = scope.get("client")
        entry = AuditLog(
            at_ms=now_ms(),
            user_id=user_id,
            username=username,
            action=f"{scope['method']} {getattr(route, 'path', scope['path'])}"[:80],
            target=",".join(f"{k}={v}" for k, v in (scope.get("path_params") or {}).items())[:200],
            method=scope["method"],
            path=scope["path"][:300],
            ip=(client[0] if client else "")[:64],
            status_code=status_code,
        )
        with self.db_getter().session() as s:
            s.add(entry)


# --------------------------------------------------------------------------- dependencies


def _unauthorized() -> HTTPException:
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, MSG_NOT_LOGGED_IN, headers={"WWW-Authenticate": "Bearer"}
    )


def _authenticate_request(request: Request, s: Session) -> tuple[User, AuthToken] | None:
    header = request.headers.get("authorization", "")
    scheme, _, raw = header.partition(" ")
    if scheme.lower() == "bearer" and raw.strip():
        return resolve_token(s, raw.strip(), "api")
    cookie = request.cookies.get(SESSION_COOKIE)
    if cookie:
        raw = unsign_session(get_ctx(request).settings.resolved_secret_key(), cookie)
        if raw:
            return resolve_token(s, raw, "session")
    return None


async def _csrf_ok(request: Request, token: AuthToken) -> bool:
    sent = request.headers.get(CSRF_HEADER, "")
    if not sent:
        ctype = request.headers.get("content-type", "")
        if ctype.startswith(("application/x-www-form-urlencoded", "multipart/form-data")):
            # FastAPI has parsed (and cached) the form already for routes taking Form fields.
            form = await request.form()
            value = form.get(CSRF_FIELD)
            sent = value if isinstance(value, str) else ""
    return bool(sent) and hmac.compare_digest(sent, token.csrf_token)


async def optional_user(request: Request, s: DbSession) -> User | None:
    """The logged-in user, or None. Cookie-authenticated unsafe requests must carry the
    session's CSRF token (403 otherwise); bearer requests cannot be forged by a page."""
    found = await run_in_threadpool(_authenticate_request, request, s)
    # For the rate limiter: this request's credential was looked at (and found or not).
    request.state.loa_credential_checked = True
    if found is None:
        return None
    user, token = found
    if (
        token.kind == "session"
        and request.method in UNSAFE_METHODS
        and not await _csrf_ok(request, token)
    ):
        raise HTTPException(status.HTTP_403_FORBIDDEN, MSG_CSRF)
    request.state.loa_user = user
    request.state.loa_token = token
    # Plain values for the audit middleware and error pages: ORM objects expire when a
    # failing request rolls the session back.
    request.state.loa_actor = (user.id, user.username)
    request.state.loa_profile = {
        "id": user.id,
        "username": user.username,
        "display_name": user.display_name,
        "role": user.role,
    }
    request.state.loa_csrf = token.csrf_token
    return user


async def current_user(user: User | None = Depends(optional_user)) -> User:
    if user is None:
        raise _unauthorized()
    return user


def require_role(*roles: str) -> Callable[..., Any]:
    """Dependency factory: ``Depends(require_role("technician", "province"))``."""
    unknown = set(roles) - set(ROLES)
    if unknown:
        raise ValueError(f"unknown roles {unknown}")

    async def dependency(user: User = Depends(current_user)) -> User:
        if user.role not in roles:
            raise HTTPException(status.HTTP_403_FORBIDDEN, MSG_FORBIDDEN)
        return user

    return dependency


def scope_commune_ids(user: User) -> frozenset[int] | None:
    """Communes ``user`` may see; None means the whole province (no filter)."""
    return user.scope_commune_ids()


def require_commune_access(user: User, commune_id: int | None) -> None:
    if not user.can_access_commune(commune_id):
        raise HTTPException(status.HTTP_403_FORBIDDEN, MSG_FORBIDDEN)


def node_commune_id(s: Session, node_id: str) -> int | None:
    return s.scalar(
        select(Village.commune_id)
        .join(Node, Node.village_id == Village.id)
        .where(Node.id == node_id)
    )


def can_access_node(s: Session, user: User, node_id: str) -> bool:
    if scope_commune_ids(user) is None:
        return True
    return user.can_access_commune(node_commune_id(s, node_id))


# --------------------------------------------------------------------------- accounts


def resolve_communes(s: Session, refs: Iterable[str | int]) -> list[int]:
    """Commune ids from ids, codes or names (diacritics ignored); unknown ones are an error."""
    ids: list[int] = []
    for ref in refs:
        text = str(ref).strip()
        if not text:
            continue
        commune = None
        if text.isdecimal():
            commune = s.get(Commune, int(text))
        if commune is None:
            commune = s.scalar(select(Commune).where(Commune.code == text))
        if commune is None:
            matches = s.scalars(select(Commune).where(Commune.name_folded == fold(text))).all()
            commune = matches[0] if len(matches) == 1 else None
        if commune is None:
            raise AccountError(f"Không tìm thấy xã “{text}”")
        if commune.id not in ids:
            ids.append(commune.id)
    return ids


def _check_role_scope(role: str, commune_ids: list[int]) -> None:
    if role not in ROLES:
        raise AccountError("Vai trò không hợp lệ (chọn: commune, technician, province)")
    if role == "commune" and not commune_ids:
        raise AccountError("Cán bộ xã phải được gán ít nhất một xã")


def create_user(
    s: Session,
    username: str,
    password: str,
    role: str,
    commune_ids: Iterable[int] = (),
    display_name: str = "",
    check_password: bool = True,
) -> User:
    name = username.strip()
    if not name or len(name) > 64 or any(c.isspace() for c in name):
        raise AccountError("Tên đăng nhập phải có 1-64 ký tự, không có khoảng trắng")
    ids = list(dict.fromkeys(commune_ids))
    _check_role_scope(role, ids)
    if check_password:
        check_new_password(password)
    if s.scalar(select(User.id).where(User.username_key == username_key(name))) is not None:
        raise AccountError(f"Tên đăng nhập “{name}” đã tồn tại")
    now = now_ms()
    user = User(
        username=name,
        username_key=username_key(name),
        display_name=display_name.strip()[:200] or name,
        role=role,
        password_hash=hash_password(password),
        created_ms=now,
        password_changed_ms=now,
        communes=[UserCommune(commune_id=c) for c in ids],
    )
    s.add(user)
    s.flush()
    return user


def find_user(s: Session, username: str) -> User:
    user = s.scalar(select(User).where(User.username_key == username_key(username)))
    if user is None:
        raise AccountError(f"Không có tài khoản “{username}”")
    return user


def set_password(s: Session, user: User, password: str) -> None:
    """New password; every open session and token of the user ends."""
    check_new_password(password)
    user.password_hash = hash_password(password)
    user.password_changed_ms = now_ms()
    revoke_user_tokens(s, user.id)


def update_user(
    s: Session,
    user: User,
    *,
    role: str | None = None,
    commune_ids: Iterable[int] | None = None,
    active: bool | None = None,
    display_name: str | None = None,
) -> None:
    new_role = role if role is not None else user.role
    ids = list(dict.fromkeys(commune_ids)) if commune_ids is not None else list(user.commune_ids)
    _check_role_scope(new_role, ids)
    user.role = new_role
    if commune_ids is not None:
        user.communes = [UserCommune(commune_id=c) for c in ids]
    if display_name is not None:
        user.display_name = display_name.strip()[:200] or user.username
    if active is not None and active != user.active:
        user.active = active
        if not active:
            revoke_user_tokens(s, user.id)


DEMO_PASSWORD = "demo"
DEMO_COMMUNE_NAME = "Đội Cấn"


def ensure_demo_accounts(db: Database) -> list[dict[str, str]]:
    """Demo logins ``province``, ``technician``, ``commune`` (password ``demo``), the commune
    officer scoped to "Đội Cấn" or else the first commune. Idempotent; returns what to print.
    The short password is allowed here only: these accounts exist for the demo."""
    out = []
    with db.session() as s:
        commune = s.scalar(
            select(Commune)
            .where(Commune.name_folded == fold(DEMO_COMMUNE_NAME))
            .order_by(Commune.id)
        ) or s.scalar(select(Commune).order_by(Commune.id))
        for name, role, display in (
            ("province", "province", "Quản trị tỉnh (demo)"),
            ("technician", "technician", "Kỹ thuật viên (demo)"),
            ("commune", "commune", "Cán bộ văn hóa xã (demo)"),
        ):
            ids = [commune.id] if (role == "commune" and commune is not None) else []
            user = s.scalar(select(User).where(User.username_key == name))
            if user is None:
                if role == "commune" and not ids:
                    continue  # no commune registered yet: nothing to scope the officer to
                create_user(s, name, DEMO_PASSWORD, role, ids, display, check_password=False)
            elif role == "commune" and ids and not user.commune_ids:
                user.communes = [UserCommune(commune_id=ids[0])]
            scope = commune.name if (role == "commune" and commune) else "toàn tỉnh"
            out.append({"username": name, "password": DEMO_PASSWORD, "role": role, "scope": scope})
    return out
