"""Accounts, roles, scopes, CSRF, rate limit and the audit log, over real HTTP on a running
server with a real SQLite database."""

from __future__ import annotations

import io
import re
from contextlib import closing

import pytest
from sqlalchemy import select, text
from sqlalchemy.exc import DatabaseError

from dashboard.models import AuditLog, AuthToken, LoginAttempt, User
from dashboard.security import (
    LOGIN_MAX_FAILURES,
    ensure_demo_accounts,
    hash_password,
    verify_password,
)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


def test_passwords_are_argon2_and_tokens_stored_hashed(stack):
    with stack.db.session() as s:
        user = s.scalar(select(User).where(User.username_key == "technician"))
        assert user.password_hash.startswith("$argon2id$")
        assert "demo" not in user.password_hash
    token = stack.token("technician")
    with stack.db.session() as s:
        stored = s.scalars(select(AuthToken.token_hash)).all()
    assert token not in stored and len(stored) == 1 and len(stored[0]) == 64
    assert verify_password(hash_password("mật khẩu có dấu"), "mật khẩu có dấu")
    assert not verify_password(hash_password("a"), "b")


def test_token_flow_and_unauthenticated_api_is_401(stack):
    with stack.client() as c:
        r = c.get("/api/v1/alarms")
        assert r.status_code == 401
        assert r.json()["detail"] == "Chưa đăng nhập"
        assert r.headers["www-authenticate"] == "Bearer"
        assert c.get("/api/v1/alarms", headers=bearer("not-a-token")).status_code == 401
        r = c.post("/api/v1/auth/token", data={"username": "technician", "password": "demo"})
        body = r.json()
        assert r.status_code == 200 and body["token_type"] == "bearer"
        assert body["role"] == "technician" and body["expires_in"] == 86400
        assert (
            c.get("/api/v1/auth/me", headers=bearer(body["access_token"])).json()["username"]
            == "technician"
        )
        assert (
            c.delete("/api/v1/auth/token", headers=bearer(body["access_token"])).status_code == 204
        )
        assert c.get("/api/v1/auth/me", headers=bearer(body["access_token"])).status_code == 401


def test_wrong_password_gives_vietnamese_401_and_rate_limit_429(stack):
    with stack.client() as c:
        for _ in range(LOGIN_MAX_FAILURES):
            r = c.post("/api/v1/auth/token", data={"username": "commune", "password": "sai"})
            assert r.status_code == 401
            assert r.json()["detail"] == "Sai tên đăng nhập hoặc mật khẩu"
        r = c.post("/api/v1/auth/token", data={"username": "commune", "password": "demo"})
        assert r.status_code == 429
        assert "Đăng nhập sai quá nhiều lần" in r.json()["detail"]
        # The limit is per user (and address): another account still logs in.
        assert (
            c.post(
                "/api/v1/auth/token", data={"username": "technician", "password": "demo"}
            ).status_code
            == 200
        )
    with stack.db.session() as s:
        attempts = s.scalars(select(LoginAttempt).where(LoginAttempt.username_key == "commune"))
        assert [a.ok for a in attempts] == [False] * LOGIN_MAX_FAILURES


def test_role_and_scope_enforced(stack):
    officer = stack.token("commune")
    tech = stack.token("technician")
    other_commune_node = "hvt-001"
    own_node = "dc-001"
    with stack.client() as c:
        # Province-only API.
        r = c.get("/api/v1/users", headers=bearer(tech))
        assert r.status_code == 403 and r.json()["detail"] == "Không có quyền"
        assert c.get("/api/v1/users", headers=bearer(stack.token("province"))).status_code == 200
        # A commune officer cannot acknowledge alarms (technician role).
        assert c.post("/api/v1/alarms/1/ack", headers=bearer(officer)).status_code == 403
        # Out-of-scope node page: 404 like a node that does not exist (ids are not
        # enumerable); own commune's node: 200.
        oc, _ = stack.login_client("commune")
        with closing(oc):
            outside = oc.get(f"/tech/nodes/{other_commune_node}")
            missing = oc.get("/tech/nodes/khong-ton-tai")
            assert outside.status_code == missing.status_code == 404
            assert oc.get(f"/tech/nodes/{own_node}").status_code == 200
            assert oc.get("/admin/users").status_code == 403
        # Another router that uses the same dependency: commune detail out of scope.
        hvt = stack.ids["Hoàng Văn Thụ"]
        r = c.get(f"/api/v1/communes/{hvt}", headers=bearer(officer))
        assert r.status_code == 403 and r.json()["detail"] == "Không có quyền"


def test_scope_helpers(stack):
    with stack.db.session() as s:
        users = {u.username: u for u in s.scalars(select(User))}
    doi_can = stack.ids["Đội Cấn"]
    assert users["province"].scope_commune_ids() is None
    assert users["technician"].scope_commune_ids() is None  # no communes = whole province
    assert users["commune"].scope_commune_ids() == {doi_can}
    assert users["commune"].can_access_commune(doi_can)
    assert not users["commune"].can_access_commune(stack.ids["Hoàng Văn Thụ"])
    assert not users["commune"].can_access_commune(None)


def test_cookie_session_needs_csrf_for_unsafe_requests(stack):
    c, csrf = stack.login_client("technician")
    with closing(c):
        assert c.cookies.get("loa_session")
        r = c.post("/api/v1/alarms/999/ack")
        assert r.status_code == 403 and "CSRF" in r.json()["detail"]
        r = c.post("/api/v1/alarms/999/ack", headers={"X-CSRF-Token": csrf})
        assert r.status_code == 404  # past CSRF and role checks: the alarm does not exist
        # Logging out ends the session on the server, not only in the browser.
        cookie = c.cookies.get("loa_session")
        assert c.post("/logout", data={"csrf_token": csrf}).status_code == 303
    with stack.client() as c2:
        c2.cookies.set("loa_session", cookie)
        assert c2.get("/api/v1/auth/me").status_code == 401


def test_session_cookie_flags(stack):
    with stack.client() as c:
        page = c.get("/login")
        form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post(
            "/login",
            data={"username": "province", "password": "demo", "csrf_token": form_csrf, "next": "/"},
        )
        cookie = next(h for h in r.headers.get_list("set-cookie") if h.startswith("loa_session"))
        assert "HttpOnly" in cookie and "SameSite=lax" in cookie and "Path=/" in cookie
        assert "Secure" not in cookie  # plain http on loopback; https sets Secure
        assert r.headers["location"] == "/province"
        # A tampered cookie is refused.
        c.cookies.set("loa_session", c.cookies.get("loa_session")[:-2] + "xx")
        assert c.get("/api/v1/auth/me").status_code == 401


def test_login_form_rejects_missing_csrf_and_open_redirect(stack):
    with stack.client() as c:
        r = c.post(
            "/login",
            data={"username": "province", "password": "demo", "csrf_token": "forged", "next": "/"},
        )
        assert r.status_code == 400 and "Phiên đăng nhập đã hết hạn" in r.text
        page = c.get("/login?next=https://evil.example/")
        form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post(
            "/login",
            data={
                "username": "province",
                "password": "demo",
                "csrf_token": form_csrf,
                "next": "//evil.example/x",
            },
        )
        assert r.status_code == 303 and r.headers["location"] == "/"


def test_admin_manages_users_and_every_action_is_audited(stack):
    admin = bearer(stack.token("province"))
    with stack.client() as c:
        r = c.post(
            "/api/v1/users",
            headers=admin,
            json={
                "username": "canbo.hvt",
                "password": "ngắn",
                "role": "commune",
                "communes": ["Hoang Van Thu"],
            },
        )
        assert r.status_code == 422 and "ít nhất 8 ký tự" in r.json()["detail"]
        r = c.post(
            "/api/v1/users",
            headers=admin,
            json={
                "username": "canbo.hvt",
                "password": "matkhau-dai",
                "role": "commune",
                "communes": [],
            },
        )
        assert r.status_code == 422 and "ít nhất một xã" in r.json()["detail"]
        r = c.post(
            "/api/v1/users",
            headers=admin,
            json={
                "username": "canbo.hvt",
                "password": "matkhau-dai",
                "role": "commune",
                "communes": ["Hoang Van Thu"],
            },
        )  # a name without diacritics finds the commune
        assert r.status_code == 201, r.text
        uid = r.json()["id"]
        assert r.json()["communes"] == [stack.ids["Hoàng Văn Thụ"]]
        r = c.post(
            "/api/v1/users",
            headers=admin,
            json={"username": "CANBO.HVT", "password": "matkhau-dai", "role": "technician"},
        )
        assert r.status_code == 409
        officer = stack.token("canbo.hvt", "matkhau-dai")
        # Disable: the user's token stops working at once.
        assert (
            c.patch(f"/api/v1/users/{uid}", headers=admin, json={"active": False}).status_code
            == 200
        )
        assert c.get("/api/v1/auth/me", headers=bearer(officer)).status_code == 401
        r = c.post("/api/v1/auth/token", data={"username": "canbo.hvt", "password": "matkhau-dai"})
        # The same answer as a wrong password (issue 17, finding 10): no oracle.
        assert r.status_code == 401 and r.json()["detail"] == "Sai tên đăng nhập hoặc mật khẩu"
        assert (
            c.patch(
                f"/api/v1/users/{uid}",
                headers=admin,
                json={"active": True, "role": "technician", "communes": []},
            ).status_code
            == 200
        )
        assert (
            c.post(
                f"/api/v1/users/{uid}/password", headers=admin, json={"password": "mat-khau-moi"}
            ).status_code
            == 204
        )
        assert stack.token("canbo.hvt", "mat-khau-moi")
        audit = c.get("/api/v1/audit", headers=admin).json()
    actions = [a["action"] for a in audit]
    for expected in (
        "user.create",
        "user.update",
        "user.password_reset",
        "auth.token",
        "auth.token_failed",
    ):
        assert expected in actions
    create = next(a for a in audit if a["action"] == "user.create")
    assert create["username"] == "province" and create["target"] == "canbo.hvt"
    assert create["ip"] == "127.0.0.1" and create["at"].count("/") == 2


def test_unsafe_requests_of_any_router_are_audited(stack):
    """A route that does not audit itself is still recorded by the middleware."""
    tech = bearer(stack.token("technician"))
    with stack.client() as c:
        c.post("/api/v1/alarms/12345/ack", headers=tech)  # 404, but an attempt
        c.post("/api/v1/alarms/1/ack")  # 401: nobody logged in
    with stack.db.session() as s:
        rows = s.scalars(select(AuditLog).where(AuditLog.path.like("/api/v1/alarms/%"))).all()
    assert {(r.username, r.status_code) for r in rows} == {("technician", 404), ("", 401)}
    assert all(r.ip == "127.0.0.1" and r.method == "POST" for r in rows)


def test_audit_log_is_append_only_in_the_database(stack):
    stack.token("technician")
    with stack.db.session() as s:
        assert s.scalar(select(AuditLog.id)) is not None
    for statement in ("UPDATE audit_log SET username = 'x'", "DELETE FROM audit_log"):
        with pytest.raises(DatabaseError, match="append-only"), stack.db.session() as s:
            s.execute(text(statement))
    with stack.db.session() as s:
        assert all(u != "x" for u in s.scalars(select(AuditLog.username)))


def test_demo_accounts_idempotent(stack):
    again = ensure_demo_accounts(stack.db)
    assert [a["username"] for a in again] == ["province", "technician", "commune"]
    assert again[2]["scope"] == "Đội Cấn"
    with stack.db.session() as s:
        assert len(s.scalars(select(User)).all()) == 3


def test_cli_user_add_and_passwd(stack, tmp_path, monkeypatch, capsys):
    from loa.settings import get_settings
    from system.cli import main

    monkeypatch.setenv("LOA_DATABASE_URL", stack.db.url)
    monkeypatch.setenv("LOA_DATA_DIR", str(tmp_path / "cli"))
    get_settings.cache_clear()

    def loa(*args: str, stdin: str = "") -> int:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
        return main(list(args))

    try:
        assert (
            loa(
                "user",
                "add",
                "kythuat2",
                "--role",
                "technician",
                "--communes",
                "c0,c1",
                "--password-stdin",
                stdin="mat-khau-cli\n",
            )
            == 0
        )
        assert "Đã tạo tài khoản kythuat2" in capsys.readouterr().out
        assert (
            loa(
                "user",
                "add",
                "kythuat2",
                "--role",
                "technician",
                "--password-stdin",
                stdin="mat-khau-cli\n",
            )
            == 1
        )
        assert "đã tồn tại" in capsys.readouterr().err
        assert (
            loa(
                "user",
                "add",
                "x",
                "--role",
                "commune",
                "--communes",
                "khong-co",
                "--password-stdin",
                stdin="mat-khau-cli\n",
            )
            == 1
        )
        assert "Không tìm thấy xã" in capsys.readouterr().err
        assert stack.token("kythuat2", "mat-khau-cli")
        assert loa("user", "passwd", "kythuat2", "--password-stdin", stdin="mat-khau-moi-2\n") == 0
        assert stack.token("kythuat2", "mat-khau-moi-2")
    finally:
        get_settings.cache_clear()
    with stack.db.session() as s:
        user = s.scalar(select(User).where(User.username_key == "kythuat2"))
        assert user.commune_ids == {stack.ids["Đội Cấn"], stack.ids["Hoàng Văn Thụ"]}
        assert (
            s.scalar(
                select(AuditLog).where(
                    AuditLog.action == "user.create", AuditLog.target == "kythuat2"
                )
            ).ip
            == "cli"
        )
