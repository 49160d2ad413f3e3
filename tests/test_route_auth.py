"""Every route but health, login and the token-checked node download refuses an anonymous
caller; and no password or token ever reaches the logs."""

from __future__ import annotations

import logging
import re

import pytest
from fastapi.routing import APIRoute
from fastapi.testclient import TestClient

from dashboard.app import ROUTERS, create_app
from dashboard.security import ensure_demo_accounts
from system.root import api_context
from tests.factories import make_registry

PUBLIC = {
    ("GET", "/api/v1/health/summary"),
    ("GET", "/api/v1/health/live"),
    ("POST", "/api/v1/auth/token"),
    ("GET", "/login"),
    ("POST", "/login"),
    ("GET", "/lang/{code}"),
    ("GET", "/openapi.json"),
}
# Nodes fetch audio with a per-node HMAC token instead of a login (401/403 without it).
NODE_TOKEN = {("GET", "/media/{name}"), ("HEAD", "/media/{name}")}


@pytest.fixture
def app(settings, db):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-01"]}})
    ensure_demo_accounts(db)
    return create_app(api_context(settings, db))


def concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "1", path)


def all_routes() -> list[APIRoute]:
    """Every route of every router the app includes (read from the routers themselves)."""
    routes = []
    for router in ROUTERS:
        routes += [r for r in router.routes if isinstance(r, APIRoute)]
    return routes


def test_every_route_refuses_an_anonymous_caller(app):
    client = TestClient(app, follow_redirects=False, raise_server_exceptions=False)
    checked = 0
    for route in all_routes():
        for method in route.methods:
            if (method, route.path) in PUBLIC or method == "HEAD" and ("GET", route.path) in PUBLIC:
                continue
            r = client.request(method, concrete(route.path))
            checked += 1
            if (method, route.path) in NODE_TOKEN:
                assert r.status_code in (401, 403), (method, route.path, r.status_code)
            elif route.path.startswith("/api/"):
                assert r.status_code == 401, (method, route.path, r.status_code, r.text[:200])
                assert r.json()["detail"] == "Chưa đăng nhập"
            else:  # pages: to the login page (or 401/403 for their form posts)
                assert r.status_code in (303, 307, 401, 403), (method, route.path, r.status_code)
                if r.status_code in (303, 307):
                    assert r.headers["location"].startswith("/login")
    assert checked > 40


def test_passwords_and_tokens_never_reach_the_logs(app, caplog):
    client = TestClient(app)
    with caplog.at_level(logging.DEBUG):
        client.post("/api/v1/auth/token", data={"username": "province", "password": "wrong-1"})
        r = client.post("/api/v1/auth/token", data={"username": "province", "password": "demo"})
        token = r.json()["access_token"]
        client.get("/api/v1/nodes", headers={"Authorization": f"Bearer {token}"})
    logged = "\n".join(rec.getMessage() for rec in caplog.records)
    assert token not in logged
    assert "wrong-1" not in logged
    assert "password=demo" not in logged
