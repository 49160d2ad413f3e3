"""Unknown node ids on an open broker (issue 17, finding 12): before, every invented id made a
``pending_node`` row, without bound, and ``/api/v1/pending-nodes`` returned them all at once.
Now the table is capped (``max_pending_nodes``), what the cap turns away is counted and shown
in the health summary, and the list is paged."""

from __future__ import annotations

import asyncio
import json
import time

import aiomqtt
from fastapi.testclient import TestClient
from sqlalchemy import func, select

from controller.process import ControllerService
from dashboard.app import create_app
from dashboard.security import create_user, issue_token
from registry.models import PendingNode
from system.root import api_context
from tests.conftest import settings_for
from tests.factories import make_registry

CAP = 100
INVENTED = 1_500


async def test_invented_node_ids_fill_a_capped_pending_list_that_is_paged(
    mosquitto_broker, settings, db
):
    make_registry(db, communes={"Xã Bình Gia": {"Thôn Nà Mò": ["real-01"]}})
    svc = ControllerService(
        settings_for(settings, mosquitto_broker, max_pending_nodes=CAP), db, client_id="ctl-pending"
    )
    await svc.start()
    await svc.wait_connected()
    try:
        async with aiomqtt.Client(
            "127.0.0.1", mosquitto_broker.port, identifier="attacker", max_inflight_messages=100
        ) as c:
            for first in range(0, INVENTED, 100):
                await asyncio.gather(
                    *(
                        c.publish(
                            f"loa/v1/nodes/fake-{i:05d}/heartbeat",
                            json.dumps({"seq": i}).encode(),
                            qos=1,
                        )
                        for i in range(first, first + 100)
                    )
                )
        deadline = time.monotonic() + 30
        while svc.ingest.rejected["unknown_node"] < INVENTED and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert svc.ingest.rejected["unknown_node"] == INVENTED
        await svc.ingest.flush()
        with db.session() as s:
            stored = s.scalar(select(func.count()).select_from(PendingNode))
            user = create_user(s, "kythuat", "mat-khau-dai-123", "technician")
            token, _ = issue_token(s, user, "api")
        assert stored == CAP
        with TestClient(create_app(api_context(svc.settings, db, controller=svc))) as api:
            auth = {"Authorization": f"Bearer {token}"}
            summary = api.get("/api/v1/health/summary", headers=auth).json()
            assert summary["controller"]["dropped_pending_nodes"] == INVENTED - CAP
            assert summary["pending_nodes"] == CAP
            first = api.get("/api/v1/pending-nodes", params={"limit": 40}, headers=auth)
            rest = api.get(
                "/api/v1/pending-nodes", params={"limit": 500, "offset": 40}, headers=auth
            )
            assert first.headers["x-total-count"] == str(CAP)
            assert len(first.json()) == 40 and len(rest.json()) == CAP - 40
            assert not {p["id"] for p in first.json()} & {p["id"] for p in rest.json()}
            r = api.get("/api/v1/pending-nodes", params={"limit": 100_000}, headers=auth)
            assert r.status_code == 422
    finally:
        await svc.stop()
