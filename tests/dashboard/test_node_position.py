"""A cluster's coordinates set by hand (issue 19, item 3): inside Vietnam, both or neither,
refused with a Vietnamese reason that names the mistake, nothing written on refusal, and
every change audited with the old and the new value. Over HTTP on the real stack."""

from __future__ import annotations

from sqlalchemy import select

from dashboard.models import AuditLog
from registry.models import Node


def _node(stack, node_id: str) -> tuple[float | None, float | None]:
    with stack.db.session() as s:
        n = s.get(Node, node_id)
        return n.lat, n.lon


def test_position_api_checks_vietnam_and_audits(stack):
    tech = {"Authorization": f"Bearer {stack.token('technician')}"}
    with stack.client() as c:
        url = "/api/v1/nodes/dc-001/position"
        r = c.put(url, json={"lat": "21,853712", "lon": 106.7610004}, headers=tech)
        assert r.status_code == 200, r.text
        assert r.json() == {"id": "dc-001", "lat": 21.853712, "lon": 106.761}
        assert _node(stack, "dc-001") == (21.853712, 106.761)
        refused = {
            "swapped": ({"lat": 106.76, "lon": 21.85}, "nhập đảo"),
            "north": ({"lat": 35.1, "lon": 106.7}, "Vĩ độ 35,1 nằm ngoài lãnh thổ Việt Nam"),
            "west": ({"lat": 21.8, "lon": 100.5}, "Kinh độ 100,5 nằm ngoài lãnh thổ Việt Nam"),
            "one": ({"lat": 21.8, "lon": None}, "Cần nhập cả vĩ độ và kinh độ"),
            "text": ({"lat": "21°51'", "lon": 106.7}, "Vĩ độ '21°51'' không phải là số"),
            "nan": ({"lat": "NaN", "lon": 106.7}, "không phải là số"),
        }
        for case, (body, words) in refused.items():
            r = c.put(url, json=body, headers=tech)
            assert r.status_code == 422, (case, r.text)
            assert words in r.json()["detail"], (case, r.json())
        assert _node(stack, "dc-001") == (21.853712, 106.761)  # nothing written
        # Clearing: both empty.
        assert c.put(url, json={"lat": None, "lon": ""}, headers=tech).status_code == 200
        assert _node(stack, "dc-001") == (None, None)
        # A commune officer may not move clusters; an unknown id is 404.
        commune = {"Authorization": f"Bearer {stack.token('commune')}"}
        assert c.put(url, json={"lat": 21.8, "lon": 106.7}, headers=commune).status_code == 403
        r = c.put("/api/v1/nodes/khong-co/position", json={"lat": 21.8, "lon": 106.7}, headers=tech)
        assert r.status_code == 404
    rows = _position_audits(stack)
    assert [(a.username, a.target) for a in rows] == [("technician", "dc-001")] * 2
    assert rows[0].detail == {"before": [None, None], "after": [21.853712, 106.761]}
    assert rows[1].detail == {"before": [21.853712, 106.761], "after": [None, None]}


def _position_audits(stack) -> list[AuditLog]:
    with stack.db.session() as s:
        return list(
            s.scalars(
                select(AuditLog)
                .where(AuditLog.action == "registry.node_position")
                .order_by(AuditLog.id)
            )
        )


def test_the_api_and_the_web_form_write_the_same_audit_record(stack):
    """One domain function (``registry.changes.set_node_position``) changes and audits for
    both: the same change by the API and by the node page's form leaves the same record,
    only the request's own method, path and status differ; a refused form writes none."""
    tech = {"Authorization": f"Bearer {stack.token('technician')}"}
    with stack.client() as c:
        r = c.put(
            "/api/v1/nodes/dc-001/position", json={"lat": 21.853712, "lon": 106.761}, headers=tech
        )
        assert r.status_code == 200, r.text
    web, csrf = stack.login_client("technician")
    try:
        url = "/tech/nodes/dc-002/position"
        bad = web.post(url, data={"csrf_token": csrf, "lat": "106,761", "lon": "21,853712"})
        assert bad.status_code == 422 and "nhập đảo" in bad.text
        r = web.post(url, data={"csrf_token": csrf, "lat": "21,853712", "lon": "106,7610"})
        assert r.status_code == 303, r.text
    finally:
        web.close()
    assert _node(stack, "dc-001") == _node(stack, "dc-002") == (21.853712, 106.761)
    rows = _position_audits(stack)
    assert [a.target for a in rows] == ["dc-001", "dc-002"]
    same = ("user_id", "username", "action", "ip", "detail")
    api, form = ({k: getattr(a, k) for k in same} for a in rows)
    assert api == form, (api, form)
    assert api["detail"] == {"before": [None, None], "after": [21.853712, 106.761]}
    assert [(a.method, a.path, a.status_code) for a in rows] == [
        ("PUT", "/api/v1/nodes/dc-001/position", 200),
        ("POST", "/tech/nodes/dc-002/position", 303),
    ]
