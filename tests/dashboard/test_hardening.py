"""Issue 17, findings 2 (per-client rate limits), 8 (login limits and proxies), 9 (example
secrets) and 10 (disabled accounts), each against a real ``loa serve`` process over a real
database (SQLite, or PostgreSQL in that pass) and real loopback connections. Distinct clients
are distinct source addresses (127.0.0.x), as different machines would be."""

from __future__ import annotations

import asyncio
import os
import secrets
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from sqlalchemy import select

import dashboard.security as security
from dashboard.models import AuditLog, LoginAttempt
from dashboard.security import (
    LOGIN_MAX_FAILURES,
    LOGIN_MAX_FAILURES_ACCOUNT,
    LOGIN_MAX_FAILURES_ADDRESS,
    MSG_BAD_LOGIN,
    LoginError,
    authenticate,
    create_user,
    ensure_demo_accounts,
    update_user,
)
from loa.broker import free_port
from loa.settings import InsecureSettingError, Settings
from tests.factories import make_registry

TOO_MANY_LOGINS = "Đăng nhập sai quá nhiều lần"


def _env(tmp_path, db_url: str, port: int, **extra: str) -> dict[str, str]:
    env = {
        **os.environ,
        "LOA_DATABASE_URL": db_url,
        "LOA_DATA_DIR": str(tmp_path / "data"),
        "LOA_HTTP_PORT": str(port),
        "LOA_SECRET_KEY": "hardening-test-secret",
        "LOA_LOG_LEVEL": "WARNING",
        "LOA_ICECAST_BINARY": "/nonexistent/icecast2",
    }
    for key in [k for k in env if k in ("LOA_TRUSTED_PROXIES",) or k.startswith("LOA_RATE_")]:
        del env[key]
    env.update(extra)
    return env


@contextmanager
def api_server(tmp_path, db_url: str, **extra: str) -> Iterator[str]:
    """``loa serve --no-controller`` (the API process of the compose file) on a free port."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "system", "serve", "--no-controller"],
        env=_env(tmp_path, db_url, port, **extra),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        for _ in range(600):
            if proc.poll() is not None:
                raise AssertionError(proc.stderr.read().decode(errors="replace"))
            try:
                if httpx.get(f"{base}/api/v1/health/live", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        else:
            raise AssertionError("loa serve did not come up")
        yield base
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def client_from(base: str, address: str) -> httpx.Client:
    """A client whose connections leave from ``address`` (any 127.0.0.x is loopback)."""
    return httpx.Client(
        base_url=base, timeout=30, transport=httpx.HTTPTransport(local_address=address)
    )


def login(c: httpx.Client, username: str, password: str, **headers: str) -> httpx.Response:
    return c.post(
        "/api/v1/auth/token", data={"username": username, "password": password}, headers=headers
    )


@pytest.fixture
def seeded(db):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["hd-01"]}})
    ensure_demo_accounts(db)
    return db


# --------------------------------------------------------------------------- finding 10


def test_a_disabled_account_answers_like_a_wrong_password_after_the_same_hash_check(
    tmp_path, seeded, monkeypatch
):
    db = seeded
    with db.session() as s:
        user = create_user(s, "bi.khoa", "mat-khau-dung", "technician")
        update_user(s, user, active=False)
    with api_server(tmp_path, db.url) as base, client_from(base, "127.0.0.21") as c:
        right, wrong = login(c, "bi.khoa", "mat-khau-dung"), login(c, "bi.khoa", "sai-roi")
    assert right.status_code == wrong.status_code == 401
    assert right.json() == wrong.json() == {"detail": MSG_BAD_LOGIN}
    assert {k: v for k, v in right.headers.items() if k not in ("date", "content-length")} == {
        k: v for k, v in wrong.headers.items() if k not in ("date", "content-length")
    }
    with db.session() as s:  # the right password of a disabled account is not a success
        assert [
            a.ok
            for a in s.scalars(select(LoginAttempt).where(LoginAttempt.username_key == "bi.khoa"))
        ] == [False, False]

    # Same time: the stored hash is verified in both cases (argon2 dominates the answer).
    checked: list[str] = []
    real = security.verify_password
    monkeypatch.setattr(security, "verify_password", lambda h, p: checked.append(p) or real(h, p))
    for password in ("mat-khau-dung", "sai-roi"):
        with db.session() as s, pytest.raises(LoginError) as exc:
            authenticate(s, "bi.khoa", password, "127.0.0.22")
        assert exc.value.status_code == 401 and exc.value.message == MSG_BAD_LOGIN
    assert checked == ["mat-khau-dung", "sai-roi"]


# --------------------------------------------------------------------------- finding 9


@pytest.mark.parametrize(
    ("command", "secret"),
    [("serve", "change-me"), ("controller", "CHANGE-ME"), ("serve", "  "), ("controller", "")],
)
def test_an_example_or_empty_secret_is_refused_at_start(tmp_path, secret, command):
    port = free_port()
    env = _env(
        tmp_path,
        f"sqlite:///{tmp_path / 'x.db'}",
        port,
        LOA_SECRET_KEY=secret,
        LOA_MQTT_PORT=str(free_port()),
    )
    run = subprocess.run(
        [sys.executable, "-m", "system", command],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert run.returncode == 1
    assert "LOA_SECRET_KEY đang là giá trị mẫu hoặc rỗng" in run.stderr
    assert "secrets.token_urlsafe" in run.stderr
    assert not (tmp_path / "x.db").exists(), "refused before anything was opened"


def test_own_secrets_and_an_unset_one_are_accepted():
    Settings(secret_key="hardening-test-secret").check_secret_key()
    Settings().check_secret_key()  # unset: a random key is generated into data_dir
    with pytest.raises(InsecureSettingError):
        Settings(secret_key="change-me").check_secret_key()


# --------------------------------------------------------------------------- finding 8


def test_x_forwarded_for_is_ignored_unless_the_proxy_is_trusted(tmp_path, seeded):
    db = seeded
    with api_server(tmp_path, db.url) as base, client_from(base, "127.0.0.1") as c:
        # The attack of the issue, from loopback (uvicorn's default trusted proxy): each try
        # claims a new address. All count for the real peer.
        codes = [
            login(c, "commune", "sai", **{"X-Forwarded-For": f"10.9.0.{i}"}).status_code
            for i in range(LOGIN_MAX_FAILURES + 1)
        ]
        assert codes == [401] * LOGIN_MAX_FAILURES + [429]
        r = login(c, "commune", "demo", **{"X-Forwarded-For": "10.9.0.200"})
        assert r.status_code == 429 and TOO_MANY_LOGINS in r.json()["detail"]
    with db.session() as s:
        assert set(s.scalars(select(LoginAttempt.ip))) == {"127.0.0.1"}

    # Behind a configured proxy the forwarded address is the client (and is audited).
    with (
        api_server(tmp_path, db.url, LOA_TRUSTED_PROXIES="127.0.0.32") as base,
        client_from(base, "127.0.0.32") as proxy,
    ):
        r = login(proxy, "technician", "demo", **{"X-Forwarded-For": "10.9.1.7"})
        assert r.status_code == 200, r.text
        # The same header from a host that is not the proxy is not believed.
        with client_from(base, "127.0.0.33") as other:
            assert (
                login(other, "technician", "sai", **{"X-Forwarded-For": "10.9.1.8"}).status_code
                == 401
            )
    with db.session() as s:
        audited = {
            (a.action, a.ip)
            for a in s.scalars(select(AuditLog).where(AuditLog.username == "technician"))
        }
        attempts = set(
            s.scalars(select(LoginAttempt.ip).where(LoginAttempt.username_key == "technician"))
        )
    assert attempts == {"10.9.1.7", "127.0.0.33"}
    assert audited == {("auth.token", "10.9.1.7"), ("auth.token_failed", "127.0.0.33")}


def test_password_spraying_is_limited_per_address_and_per_account(tmp_path, seeded):
    db = seeded
    with api_server(tmp_path, db.url) as base:
        # One password against many accounts from one address.
        with client_from(base, "127.0.0.41") as sprayer:
            codes = [
                login(sprayer, f"nguoi-dung-{i}", "Matkhau@2024").status_code
                for i in range(LOGIN_MAX_FAILURES_ADDRESS)
            ]
            assert codes == [401] * LOGIN_MAX_FAILURES_ADDRESS
            r = login(sprayer, "province", "demo")
            assert r.status_code == 429 and TOO_MANY_LOGINS in r.json()["detail"]
        with client_from(base, "127.0.0.42") as elsewhere:  # others are not affected
            assert login(elsewhere, "province", "demo").status_code == 200

        # One account guessed from many addresses, under the per-address limit each.
        per_address = LOGIN_MAX_FAILURES - 1
        addresses = -(-LOGIN_MAX_FAILURES_ACCOUNT // per_address)
        codes = Counter()
        for i in range(addresses):
            with client_from(base, f"127.0.1.{i + 1}") as c:
                for _ in range(per_address):
                    codes[login(c, "commune", "doan-mo").status_code] += 1
        assert codes[401] == LOGIN_MAX_FAILURES_ACCOUNT
        assert codes[429] == addresses * per_address - LOGIN_MAX_FAILURES_ACCOUNT
        with client_from(base, "127.0.2.1") as fresh:
            r = login(fresh, "commune", "demo")
            assert r.status_code == 429 and TOO_MANY_LOGINS in r.json()["detail"]
            # Another account from the same fresh address still logs in.
            assert login(fresh, "technician", "demo").status_code == 200


# --------------------------------------------------------------------------- finding 2


async def test_per_client_rate_limits_answer_429_with_retry_after(tmp_path, seeded):
    db = seeded
    burst = 10
    with api_server(
        tmp_path,
        db.url,
        LOA_RATE_ANON_BURST=str(burst),
        LOA_RATE_ANON_PER_S="0.2",
        LOA_RATE_USER_BURST="60",
        LOA_RATE_USER_PER_S="0.2",
    ) as base:

        def transport(address: str) -> httpx.AsyncHTTPTransport:
            return httpx.AsyncHTTPTransport(local_address=address)

        async def many(
            address: str, n: int, headers: dict | None = None, path: str = "/api/v1/health/summary"
        ) -> list[httpx.Response]:
            async with httpx.AsyncClient(
                base_url=base, timeout=30, transport=transport(address)
            ) as c:
                return await asyncio.gather(*(c.get(path, headers=headers) for _ in range(n)))

        flood, other = await asyncio.gather(
            many("127.0.0.51", 3 * burst), many("127.0.0.52", burst)
        )
        codes = Counter(r.status_code for r in flood)
        assert codes == {200: burst, 429: 2 * burst}, codes
        refused = next(r for r in flood if r.status_code == 429)
        assert int(refused.headers["retry-after"]) >= 1
        assert refused.json()["detail"].startswith("Quá nhiều yêu cầu từ máy này")
        assert refused.json()["retry_after"] == int(refused.headers["retry-after"])
        assert all(r.status_code == 200 for r in other), "another client is not affected"
        # Node downloads are not counted (nodes behind one carrier NAT share an address):
        # the spent address still gets the download route's own answer.
        media = await many("127.0.0.51", 3, path="/media/abc.mp3")
        assert [r.status_code for r in media] == [401] * 3

        # A logged-in officer has a budget of their own, larger than an address's.
        async with httpx.AsyncClient(
            base_url=base, timeout=30, transport=transport("127.0.0.53")
        ) as c:
            token = (
                await c.post("/api/v1/auth/token", data={"username": "commune", "password": "demo"})
            ).json()["access_token"]
            auth = {"Authorization": f"Bearer {token}"}
            assert (await c.get("/api/v1/auth/me", headers=auth)).status_code == 200
        officer = await many("127.0.0.53", 3 * burst, auth, "/api/v1/nodes")
        assert all(r.status_code == 200 for r in officer), Counter(r.status_code for r in officer)
        # A route that never looks at the credential (the health summary) does not make the
        # limiter forget it: from the flooded address the officer still has their budget.
        async with httpx.AsyncClient(
            base_url=base, timeout=30, transport=transport("127.0.0.51")
        ) as c:
            steps = [
                (await c.get(path, headers=auth)).status_code
                for path in ("/api/v1/nodes", "/api/v1/health/summary", "/api/v1/nodes")
            ]
        assert steps == [200, 200, 200], steps

        # Made-up tokens do not buy fresh budgets: they count against their address.
        async with httpx.AsyncClient(
            base_url=base, timeout=30, transport=transport("127.0.0.54")
        ) as c:
            codes = Counter()
            for _ in range(2 * burst):
                r = await c.get(
                    "/api/v1/nodes",
                    headers={"Authorization": f"Bearer {secrets.token_urlsafe(32)}"},
                )
                codes[r.status_code] += 1
        assert codes == {401: burst, 429: burst}, codes


def test_the_rate_limiter_refills_and_forgets_idle_clients(monkeypatch):
    """The buckets' arithmetic, and a bounded table: a scan from many addresses cannot grow
    it without limit (idle clients, back at their burst, are forgotten first)."""
    from dashboard import ratelimit

    now = [0.0]
    limiter = ratelimit.RateLimiter(
        ratelimit.Rate(3, 1.0), ratelimit.Rate(10, 5.0), clock=lambda: now[0]
    )
    assert [limiter.check("10.0.0.1", None) for _ in range(3)] == [0, 0, 0]
    assert limiter.check("10.0.0.1", None) == pytest.approx(1.0)
    now[0] += 0.5
    assert limiter.check("10.0.0.1", None) == pytest.approx(0.5)
    now[0] += 0.5
    assert limiter.check("10.0.0.1", None) == 0
    # A credential earns its own, larger budget only once the API accepted it.
    assert limiter.check("10.0.0.1", "tok") > 0
    limiter.outcome("tok", accepted=True)
    assert all(limiter.check("10.0.0.1", "tok") == 0 for _ in range(10))
    limiter.outcome("tok", accepted=False)  # revoked: back to its address's budget
    assert limiter.check("10.0.0.1", "tok") > 0

    monkeypatch.setattr(ratelimit, "MAX_CLIENTS", 100)
    for i in range(1000):
        now[0] += 10  # each scanner address is idle (full again) when the next one comes
        limiter.check(f"10.1.{i // 256}.{i % 256}", None)
    assert len(limiter.buckets) <= 100
    for i in range(1000):  # busy clients: the oldest are dropped
        limiter.check(f"10.2.{i // 256}.{i % 256}", None)
    assert len(limiter.buckets) <= 100
