"""``Idempotency-Key`` on the creating endpoints that lacked it (issue 15, item 6): a
province abbreviation, an account, a bulletin taken from a commune's inbox and an inspection
record. For each, over HTTP on a real database (SQLite, or PostgreSQL in that pass):

- the audit writer failing for real answers 500 and leaves nothing (one transaction);
- a retry with the same key answers the first result and creates nothing twice (one row,
  one audit row), where without a key the retry would have been refused or duplicated;
- the same key with a different body is refused with 409 in Vietnamese and changes nothing.
"""

from __future__ import annotations

from datetime import datetime, timedelta

import pytest
from fastapi.testclient import TestClient
from sqlalchemy import func, select

import dashboard.routes.auth as auth_routes
import dashboard.routes.broadcasts as broadcast_routes
import dashboard.routes.indicators as indicator_routes
import dashboard.routes.tts as tts_routes
from broadcasts.models import TtsAbbreviation
from dashboard.app import create_app
from dashboard.models import AuditLog, User
from dashboard.security import create_user, issue_token
from indicator.models import ManualAttestation
from loa.timeutil import ICT
from scheduler.config import SchedulerSettings
from scheduler.models import Broadcast, InboxItem
from scheduler.workflow import BroadcastService
from system.root import api_context
from tests.factories import make_registry

REUSED = "yêu cầu khác"


@pytest.fixture
def api(settings, db):
    ids = make_registry(db, communes={"Đội Cấn": {"Thôn Nà Pàn": ["dc-001"]}})
    with db.session() as s:
        tinh, _ = issue_token(s, create_user(s, "so.vhtt", "mat-khau-dai-123", "province"), "api")
        xa_user = create_user(s, "canbo.doican", "mat-khau-dai-456", "commune", [ids["Đội Cấn"]])
        xa, _ = issue_token(s, xa_user, "api")
    ctx = api_context(settings, db)
    ctx.broadcasts = BroadcastService(db, SchedulerSettings(), content=ctx.broadcasts.content)
    with TestClient(create_app(ctx), raise_server_exceptions=False) as client:
        client.tokens = {"tinh": tinh, "xa": xa}  # type: ignore[attr-defined]
        client.ids = ids  # type: ignore[attr-defined]
        yield client


def as_(api, who: str, key: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {api.tokens[who]}", "Idempotency-Key": key}


def count(db, model, *where) -> int:
    with db.session() as s:
        return s.scalar(select(func.count()).select_from(model).where(*where))


def audited(db, action: str) -> int:
    return count(db, AuditLog, AuditLog.action == action)


def failing_audit(*_a, **_k):
    raise RuntimeError("audit log unavailable")


def once_with_a_failed_audit_first(api, monkeypatch, module, method, url, body, headers):
    """The first try fails where the audit row is written; the retry and its repeat answer
    the same thing."""
    with monkeypatch.context() as m:
        m.setattr(module, "audit", failing_audit)
        assert api.request(method, url, json=body, headers=headers).status_code == 500
    first = api.request(method, url, json=body, headers=headers)
    again = api.request(method, url, json=body, headers=headers)
    assert first.status_code in (200, 201), first.text
    assert again.status_code in (200, 201) and again.json()["id"] == first.json()["id"]
    return first.json(), again.json()


def test_an_abbreviation_with_the_same_key_is_added_once(api, db, monkeypatch):
    url, key = "/api/v1/tts/abbreviations", as_(api, "tinh", "abbr-0b7c4e21")
    body = {"abbr": "BQLDA", "spoken": "ban quản lý dự án"}
    first, again = once_with_a_failed_audit_first(
        api, monkeypatch, tts_routes, "POST", url, body, key
    )
    assert again == first and first["abbr"] == "BQLDA"
    assert count(db, TtsAbbreviation) == 1 and audited(db, "tts.abbreviation_add") == 1
    other = api.post(url, json={**body, "spoken": "ban quản lý các dự án"}, headers=key)
    assert other.status_code == 409 and REUSED in other.json()["detail"]
    with db.session() as s:
        assert s.scalar(select(TtsAbbreviation.spoken)) == "ban quản lý dự án"
    # A typed body, refused with the check's own sentence; nothing written.
    bad = api.post(url, json={"abbr": 5, "spoken": "năm"}, headers=as_(api, "tinh", "abbr-9"))
    assert bad.status_code == 422
    assert bad.json() == {"detail": "Từ viết tắt phải có 1–40 ký tự, không chứa dấu tab."}
    assert count(db, TtsAbbreviation) == 1


def test_an_account_with_the_same_key_is_created_once(api, db, monkeypatch):
    url, key = "/api/v1/users", as_(api, "tinh", "user-3c9a1f00")
    body = {"username": "canbo.tantrao", "password": "mat-khau-moi-789", "role": "technician"}
    first, again = once_with_a_failed_audit_first(
        api, monkeypatch, auth_routes, "POST", url, body, key
    )
    assert again == first and first["username"] == "canbo.tantrao"
    assert count(db, User, User.username == "canbo.tantrao") == 1
    assert audited(db, "user.create") == 1
    # Another request under the same key: another role, or only another password.
    for change in ({"role": "province"}, {"password": "mat-khau-khac-000"}):
        other = api.post(url, json={**body, **change}, headers=key)
        assert other.status_code == 409 and REUSED in other.json()["detail"], change
    with db.session() as s:
        assert s.scalar(select(User.role).where(User.username == "canbo.tantrao")) == "technician"
    # The fingerprint does not hold a digest of the password.
    from loa.idempotency import IdempotencyKey, fingerprint

    with db.session() as s:
        row = s.scalar(select(IdempotencyKey).where(IdempotencyKey.action == "user.create"))
        assert row.fingerprint != fingerprint("user.create", body)


def test_a_bulletin_from_the_inbox_with_the_same_key_is_scheduled_once(api, db, monkeypatch):
    start = (datetime.now(ICT) + timedelta(hours=2)).isoformat(timespec="seconds")
    r = api.post(
        "/api/v1/broadcasts",
        json={
            "title": "Tuyên truyền phòng chống bão",
            "stream_url": "http://14.160.0.10:8000/live",
            "duration_s": 600,
            "targets": {"communes": [api.ids["Đội Cấn"]]},
            "start_at": start,
        },
        headers=as_(api, "tinh", "province-bulletin-1"),
    )
    assert r.status_code == 201 and r.json()["status"] == "approved", r.text
    with db.session() as s:
        item_id = s.scalar(select(InboxItem.id))
    url, key = f"/api/v1/inbox/{item_id}/schedule", as_(api, "xa", "inbox-77d1e2aa")
    first, again = once_with_a_failed_audit_first(
        api, monkeypatch, broadcast_routes, "POST", url, {"volume": 70}, key
    )
    assert first["status"] == "scheduled" and again["replayed"] is True
    assert count(db, Broadcast) == 2 and audited(db, "inbox.schedule") == 1
    other = api.post(url, json={"volume": 40}, headers=key)
    assert other.status_code == 409 and REUSED in other.json()["detail"]
    # Without the key the item is handled already: refused, nothing new.
    plain = {"Authorization": f"Bearer {api.tokens['xa']}"}
    assert api.post(url, json={"volume": 70}, headers=plain).status_code == 409
    assert count(db, Broadcast) == 2


def test_an_inspection_with_the_same_key_is_recorded_once(api, db, monkeypatch):
    url = f"/api/v1/communes/{api.ids['Đội Cấn']}/attestations"
    key = as_(api, "tinh", "attest-5e0f3b12")
    body = {"inspector": "Lương Thị Hoa", "valid_until": "31/12/2027", "station_kind": "fm"}
    first, again = once_with_a_failed_audit_first(
        api, monkeypatch, indicator_routes, "POST", url, body, key
    )
    assert again == first and first["inspector"] == "Lương Thị Hoa"
    assert count(db, ManualAttestation) == 1
    assert audited(db, "indicator.attestation.create") == 1
    other = api.post(url, json={**body, "inspector": "Người khác"}, headers=key)
    assert other.status_code == 409 and REUSED in other.json()["detail"]
    bad = api.post(url, json=body, headers=as_(api, "tinh", "x y"))
    assert bad.status_code == 422 and "8–80 ký tự" in bad.json()["detail"]
    assert count(db, ManualAttestation) == 1


def slow_first_audit(monkeypatch) -> None:
    """The first abbreviation request holds its transaction open for 0.8 s in its audit
    write, so a second one sent meanwhile races it."""
    import time

    real_audit = tts_routes.audit
    calls: list[int] = []

    def audit(*a, **k):
        calls.append(1)
        if len(calls) == 1:
            time.sleep(0.8)
        return real_audit(*a, **k)

    monkeypatch.setattr(tts_routes, "audit", audit)


def test_two_requests_with_one_key_at_once_create_one_entry_and_the_other_is_told_to_retry(
    api, db, monkeypatch
):
    """The race the key exists for: the first request holds its transaction open (a slow
    audit write), the second passes the "key already used?" check meanwhile and can only
    fail when it stores the key. It is answered 409 in Vietnamese, not 500, and only the
    first entry exists."""
    import threading
    import time

    slow_first_audit(monkeypatch)
    url, key = "/api/v1/tts/abbreviations", as_(api, "tinh", "abbr-race-5d2e")
    answers: dict[str, object] = {}

    def post(name: str, abbr: str) -> None:
        answers[name] = api.post(url, json={"abbr": abbr, "spoken": "một cụm từ"}, headers=key)

    first = threading.Thread(target=post, args=("first", "UBMTTQ"))
    first.start()
    time.sleep(0.3)  # the first is inside its transaction, asleep in the audit write
    post("second", "HĐND")
    first.join(10)
    # Which one wins depends on the database (SQLite makes the second wait for the first's
    # write lock; PostgreSQL lets it store the key first): exactly one, and only its entry.
    by_status = {r.status_code: (name, r) for name, r in answers.items()}
    assert sorted(by_status) == [201, 409], {n: r.text for n, r in answers.items()}
    lost = by_status[409][1].json()
    assert lost["code"] == "idempotency_key_in_flight" and "gửi lại" in lost["detail"]
    won = by_status[201][1].json()["abbr"]
    with db.session() as s:
        assert list(s.scalars(select(TtsAbbreviation.abbr))) == [won]
    assert audited(db, "tts.abbreviation_add") == 1


def test_the_same_abbreviation_added_twice_at_once_without_a_key_is_one_entry_not_a_500(
    api, db, monkeypatch
):
    """Without a key, the same written form sent twice at once (two officers, or a browser
    retry) is "add or replace": the first holds its transaction open in a slow audit write,
    the second finds no row yet and inserts too. The second must replace the reading, not
    fail on the table's unique constraint with a 500."""
    import threading
    import time

    slow_first_audit(monkeypatch)
    url = "/api/v1/tts/abbreviations"
    auth = {"Authorization": f"Bearer {api.tokens['tinh']}"}
    answers: dict[str, object] = {}

    def post(name: str, spoken: str) -> None:
        answers[name] = api.post(url, json={"abbr": "BQLDA", "spoken": spoken}, headers=auth)

    first = threading.Thread(target=post, args=("first", "ban quản lý dự án"))
    first.start()
    time.sleep(0.3)  # the first is inside its transaction, asleep in the audit write
    post("second", "ban quản lý các dự án")
    first.join(10)
    assert {n: r.status_code for n, r in answers.items()} == {"first": 201, "second": 201}, {
        n: r.text for n, r in answers.items()
    }
    with db.session() as s:
        rows = list(s.scalars(select(TtsAbbreviation)))
    assert [r.abbr for r in rows] == ["BQLDA"]
    assert rows[0].spoken in ("ban quản lý dự án", "ban quản lý các dự án")
    assert audited(db, "tts.abbreviation_add") == 2
