"""``stream_url`` is fetched by every targeted node (issue 17, finding 12): before, a URL to a
link-local, loopback or internal address was accepted and passed to the nodes. Through the
API: each such address is refused with a Vietnamese reason and nothing is written; public
addresses, the system's own Icecast and networks the province allows are accepted."""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient

from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from loa.timeutil import ICT
from scheduler.config import SchedulerSettings
from scheduler.workflow import BroadcastService
from system.root import api_context
from tests.factories import make_registry

OWN_ICECAST_PORT = 18000


@pytest.fixture
def api(settings, db):
    make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-001"]}})
    with db.session() as s:
        token, _ = issue_token(s, create_user(s, "so.vhtt", "mat-khau-dai-123", "province"), "api")
    ctx = api_context(settings, db)
    ctx.broadcasts = BroadcastService(
        db, SchedulerSettings(icecast_port=OWN_ICECAST_PORT, stream_allowed_networks="10.8.0.0/16")
    )
    with TestClient(create_app(ctx)) as client:
        client.headers["Authorization"] = f"Bearer {token}"
        yield client


def _create(api, url: str):
    start = (datetime.now(ICT) + timedelta(hours=1)).isoformat(timespec="seconds")
    return api.post(
        "/api/v1/broadcasts",
        json={
            "title": "Tiếp sóng",
            "stream_url": url,
            "duration_s": 600,
            "draft": True,
            "targets": {"nodes": ["dc-001"]},
            "start_at": start,
        },
    )


REFUSED = [
    ("http://169.254.169.254/latest/meta-data/", "link-local"),
    ("http://[fe80::1]:8000/live", "link-local"),
    ("http://127.0.0.1:22/", "loopback"),
    ("http://[::1]:8000/live", "loopback"),
    ("http://[::ffff:127.0.0.1]:8000/live", "loopback"),
    ("http://localhost:8000/live", "nội bộ"),
    ("http://router/live", "nội bộ"),
    ("http://nas.local:8000/live", "nội bộ"),
    ("http://192.168.1.1/admin", "nội bộ"),
    ("http://10.0.0.5:8000/live", "nội bộ"),
    ("http://0.0.0.0:8000/live", "không dùng để phát"),
    ("http://user:secret@14.160.0.10:8000/live", "mật khẩu"),
]
ACCEPTED = [
    "http://14.160.0.10:8000/live",  # a public address
    f"http://127.0.0.1:{OWN_ICECAST_PORT}/loa-abc",  # our own Icecast
    "https://10.8.3.4/live",  # the province's VPN, allowed by setting
]


def test_internal_stream_addresses_are_refused_and_the_rest_accepted(api):
    for url, why in REFUSED:
        r = _create(api, url)
        assert r.status_code == 422, (url, r.text)
        detail = r.json()["detail"]
        assert why in detail and "Không dùng được địa chỉ luồng" in detail, (url, detail)
    assert api.get("/api/v1/broadcasts").json()["total"] == 0
    for url in ACCEPTED:
        r = _create(api, url)
        assert r.status_code == 201, (url, r.text)
        assert r.json()["stream_url"] == url
