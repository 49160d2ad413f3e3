"""``Idempotency-Key`` on the registry's creating endpoints (issue 15): approving a pending
cluster and importing a register. The same key and request answers the first result (the
approval is not refused as "not found" on a retry after a dropped answer); the same key with
another request is refused with 409 in Vietnamese and changes nothing."""

from __future__ import annotations

from sqlalchemy import func, select

from dashboard.models import AuditLog
from registry.demo import demo_yaml
from registry.models import Node, PendingNode, Village
from tests.registry.test_api import api  # noqa: F401  (the fixture)


def test_a_retried_approval_answers_the_first_one(api, db):  # noqa: F811
    with db.session() as s:
        for n in ("vendor-x-0042", "vendor-x-0043"):
            s.add(
                PendingNode(
                    id=n,
                    first_seen_ms=1_751_302_800_000,
                    last_seen_ms=1_751_306_400_000,
                    messages=1,
                    last_channel="heartbeat",
                )
            )
        village_id = s.scalar(select(Village.id).where(Village.code == "ls-caolau-t02"))
    headers = {**api.tokens["kythuat"], "Idempotency-Key": "approve-0042-a1"}
    url = "/api/v1/pending-nodes/vendor-x-0042/approve"
    first = api.post(url, json={"village_id": village_id}, headers=headers)
    assert first.status_code == 200, first.text
    again = api.post(url, json={"village_id": village_id}, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    other = api.post(
        "/api/v1/pending-nodes/vendor-x-0043/approve",
        json={"village_id": village_id},
        headers=headers,
    )
    assert other.status_code == 409 and "yêu cầu khác" in other.json()["detail"]
    with db.session() as s:
        assert s.get(PendingNode, "vendor-x-0043") is not None  # untouched
        assert s.get(Node, "vendor-x-0042").village_id == village_id
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditLog)
                .where(AuditLog.action == "registry.approve_node")
            )
            == 1
        )


def test_a_retried_import_answers_the_first_summary(api, db):  # noqa: F811
    headers = {**api.tokens["tinh"], "Idempotency-Key": "import-2026-12-04"}
    good = demo_yaml().replace("name: Cao Lâu\n", "name: Cao Lâu Mới\n")
    files = {"file": ("tinh.yaml", good.encode("utf-8"), "application/yaml")}
    first = api.post("/api/v1/registry/import", files=files, headers=headers)
    assert first.status_code == 200, first.text
    assert first.json()["renamed"] == 1
    again = api.post("/api/v1/registry/import", files=files, headers=headers)
    assert again.status_code == 200 and again.json() == first.json()
    changed = {
        "file": ("tinh.yaml", good.replace("Cao Lâu Mới", "Cao Lâu 2").encode(), "application/yaml")
    }
    other = api.post("/api/v1/registry/import", files=changed, headers=headers)
    assert other.status_code == 409
    with db.session() as s:
        assert (
            s.scalar(
                select(func.count())
                .select_from(AuditLog)
                .where(AuditLog.action == "registry.import")
            )
            == 1
        )
