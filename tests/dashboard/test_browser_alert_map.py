"""Coordinates on the web and the offline alert map (issue 19, item 3) in headless Chromium
at a 390 px phone and a 1366 px desktop: a technician corrects a cluster's coordinates (a
swapped pair is refused with the reason and what was typed), a province officer previews a
CAP file with a polygon and a circle (nothing stored) and then receives it; both pages draw
the area, the targeted clusters in colour, the others grey, and list the villages. Every
request the pages make goes to Loa itself (no tiles, no CDN)."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import func, select

from alerts.models import CapMessage
from tests.alerts import capdocs as d
from tests.alerts.conftest import place_clusters
from tests.dashboard.conftest import DESKTOP, PHONE, login, new_page, no_sideways_scroll, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; the routes it calls are
# tested on PostgreSQL (tests/alerts/test_alert_map.py, tests/dashboard/test_node_position.py).
pytestmark = pytest.mark.sqlite_pass_only

# Thôn Đồng Bầu (dc-001, dc-002) inside the polygon, Thôn Pác Mòng's hvt-001 in the circle;
# dc-003 and hvt-002 nearby, outside both.
COORDS = {
    "dc-002": (22.2860, 106.4810),
    "dc-003": (22.2950, 106.4950),
    "hvt-001": (22.2700, 106.4600),
    "hvt-002": (22.2620, 106.4700),
}
POLYGON = "22.280,106.475 22.280,106.490 22.290,106.490 22.290,106.475 22.280,106.475"
CIRCLE = "22.270,106.460 0.8"


def shaped(identifier: str) -> bytes:
    area = (
        f"<area><areaDesc>Đồng Bầu và Pác Mòng</areaDesc><polygon>{POLYGON}</polygon>"
        f"<circle>{CIRCLE}</circle></area>"
    ).encode()
    doc = re.sub(
        rb"<area><areaDesc>X\xc3\xa3 c0</areaDesc>.*?</area>",
        area,
        d.flood(identifier, communes=["c0"], sender="ubnd@langson.gov.vn"),
    )
    assert b"<polygon>" in doc
    return doc


def map_states(page) -> dict[str, str]:
    return page.eval_on_selector_all(
        "#alert-map circle.pt",
        "cs => Object.fromEntries(cs.map(c => [c.dataset.node, c.dataset.state]))",
    )


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
def test_coordinates_preview_and_alert_map(stack, chromium, viewport, tmp_path):
    tag = f"{viewport['width']}"
    place_clusters(stack.db, COORDS)
    cap = tmp_path / "lu-quet.xml"
    cap.write_bytes(shaped(f"MAP-{tag}"))
    context, page = new_page(chromium, viewport)
    requests: list[str] = []
    page.on("request", lambda r: requests.append(r.url))
    try:
        # The technician places dc-001; the first try has latitude and longitude swapped.
        login(page, stack.base_url, "technician")
        page.wait_for_url("**/tech")
        page.goto(f"{stack.base_url}/tech/nodes/dc-001")
        page.fill("#position input[name=lat]", "106,4800")
        page.fill("#position input[name=lon]", "22,2840")
        page.click("#position button[type=submit]")
        page.wait_for_selector("#position-error")
        assert "nhập đảo" in page.inner_text("#position-error")
        assert page.input_value("#position input[name=lat]") == "106,4800"  # nothing lost
        assert no_sideways_scroll(page), "the node page scrolls sideways"
        screenshot(page, f"node-position-refused-{tag}")
        page.fill("#position input[name=lat]", "22,2840")
        page.fill("#position input[name=lon]", "106,4800")
        page.click("#position button[type=submit]")
        page.wait_for_url("**/tech/nodes/dc-001?ok=saved*")
        assert page.inner_text("#node-position") == "22,284; 106,48"

        # The province officer previews the document: nothing is stored.
        page.context.clear_cookies()
        login(page, stack.base_url, "province")
        page.wait_for_url("**/province")
        page.goto(f"{stack.base_url}/alerts")
        page.set_input_files("#cap-preview input[name=file]", str(cap))
        page.click("#cap-preview button[type=submit]")
        page.wait_for_selector("#alert-map")
        assert "chưa lưu, chưa phát" in page.inner_text("#preview-note")
        assert page.inner_text("#preview-clusters") == "3"
        # Which warning tone would sound: none is set in this province (issue 19, item 4).
        assert page.inner_text("#preview-tone") == "không có tín hiệu (mặc định của tỉnh)"
        states = map_states(page)
        assert {n for n, s in states.items() if s == "targeted"} == {"dc-001", "dc-002", "hvt-001"}
        assert states["dc-003"] == states["hvt-002"] == "other"
        fills = page.eval_on_selector_all(
            "#alert-map circle.pt", "cs => [...new Set(cs.map(c => c.getAttribute('fill')))]"
        )
        assert sorted(fills) == ["#9e9e9e", "#d84315"]  # one colour for targeted, grey
        assert page.locator("#alert-map polygon.area").count() == 1
        assert page.locator("#alert-map circle.area").count() == 1
        villages = page.inner_text("#map-villages")
        assert "Thôn Đồng Bầu · Đội Cấn · 2 cụm loa" in villages
        assert "Thôn Pác Mòng · Hoàng Văn Thụ · 1 cụm loa" in villages
        assert villages.index("Đồng Bầu") < villages.index("Pác Mòng")  # Đ sorts as D
        assert page.text_content("#alert-map .scale text") == "2 km"
        box = page.locator("#alert-map").bounding_box()
        assert box["width"] <= viewport["width"] and box["height"] > 150
        assert no_sideways_scroll(page), "the preview scrolls sideways"
        screenshot(page, f"alert-preview-map-{tag}")
        with stack.db.session() as s:
            assert s.scalar(select(func.count()).select_from(CapMessage)) == 0

        # Received for real: the alert's page draws the stored document's area.
        page.goto(f"{stack.base_url}/alerts")
        page.set_input_files("#cap-upload input[name=file]", str(cap))
        page.click("#cap-upload button[type=submit]")
        page.wait_for_url(re.compile(r".*/alerts/\d+$"))
        assert page.get_attribute("#alert-state", "data-state") == "pending_approval"
        assert page.locator("#alert-map polygon.area").count() == 1
        assert page.locator("#alert-map circle.area").count() == 1
        states = map_states(page)
        assert {n for n, s in states.items() if s == "targeted"} == {"dc-001", "dc-002", "hvt-001"}
        assert no_sideways_scroll(page), "the alert page scrolls sideways"
        screenshot(page, f"alert-map-{tag}")
        assert requests and all(u.startswith(stack.base_url) for u in requests), [
            u for u in requests if not u.startswith(stack.base_url)
        ]
    finally:
        context.close()
