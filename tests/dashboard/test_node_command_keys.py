"""``Idempotency-Key`` on node commands (issue 15), against the running system: Debian
mosquitto, the controller and one simulated node. A retry with the same key answers what the
first send got (the same ``cmd_id``: nothing was published again, one audit row); the same key
for another command is refused with 409 in Vietnamese and nothing is sent."""

from __future__ import annotations

import pytest
from sqlalchemy import func, select

from dashboard.models import AuditLog
from tests.dashboard.conftest import LiveStack


@pytest.fixture
def live_stack(tmp_path, db, mosquitto_broker):
    s = LiveStack(
        tmp_path, db, heartbeat_s=2, broker=mosquitto_broker, fleet_nodes=["dc-001"]
    ).start()
    yield s
    s.stop()


def test_the_same_key_sends_a_node_command_once(live_stack, db):
    stack = live_stack
    auth = {"Authorization": f"Bearer {stack.token('technician')}"}
    key = {**auth, "Idempotency-Key": "vol-7a1c90e2"}
    with stack.client() as c:
        first = c.post("/api/v1/nodes/dc-001/volume", json={"level": 40}, headers=key)
        assert first.status_code == 200, first.text
        assert first.json()["acked"] is True
        again = c.post("/api/v1/nodes/dc-001/volume", json={"level": 40}, headers=key)
        assert again.status_code == 200 and again.json() == first.json()
        other = c.post("/api/v1/nodes/dc-001/volume", json={"level": 90}, headers=key)
        assert other.status_code == 409
        assert "Idempotency-Key" in other.json()["detail"]
        bad = c.post(
            "/api/v1/nodes/dc-001/volume",
            json={"level": 40},
            headers={**auth, "Idempotency-Key": "x"},
        )
        assert bad.status_code == 422 and "8–80 ký tự" in bad.json()["detail"]
    with db.session() as s:
        sent = s.scalar(
            select(func.count()).select_from(AuditLog).where(AuditLog.action == "node.volume")
        )
    assert sent == 1
