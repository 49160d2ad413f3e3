"""The indicator drill-down and the inspection form (issue 16, item 5) in headless Chromium,
at a 390 px phone and a 1366 px desktop, over one real server for the module holding the
demo province and 20 days of its history (real SQLite, or PostgreSQL in that pass).

- Province → commune → village → cluster by following the links a person would press;
  each level shows its verdict, observed time and the criteria set, in Vietnamese, dates
  dd/mm/yyyy; the cluster page draws its timeline and lists transitions and airings.
- The FM station's inspection form stores the record with its scan, which the page then
  offers to view; a file that is not a scan is refused with the reason and what was typed
  is kept. No page scrolls sideways on the phone.
"""

from __future__ import annotations

import asyncio
import re
import struct
import threading
import zlib

import pytest
import uvicorn
from sqlalchemy import select

from dashboard.app import create_app
from dashboard.security import ensure_demo_accounts
from indicator.demo_history import seed_history
from indicator.models import AttestationScan, ManualAttestation
from loa.broker import free_port
from loa.settings import Settings
from loa.timeutil import now_ms
from registry.demo import load_demo_province
from system.root import api_context
from tests.dashboard.conftest import DESKTOP, PHONE, login, new_page, no_sideways_scroll, screenshot

# Runs in the SQLite pass only: the subject is the page in Chromium; every route it calls is
# tested on PostgreSQL.
pytestmark = pytest.mark.sqlite_pass_only

DATE = re.compile(r"\b\d{2}/\d{2}/\d{4}\b")


def new_page_en(chromium, viewport):
    return new_page(chromium, viewport, locale="en-US")  # dates stay dd/mm


def png_bytes() -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data))
            + kind
            + data
            + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)
        )

    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", struct.pack(">IIBBBBB", 1, 1, 8, 2, 0, 0, 0))
        + chunk(b"IDAT", zlib.compress(b"\x00\xff\x00\x00"))
        + chunk(b"IEND", b"")
    )


class Server:
    """uvicorn on a free loopback port, on its own loop in a thread."""

    def __init__(self, tmp, db) -> None:
        self.db = db
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        settings = Settings(
            data_dir=tmp / "data",
            database_url=db.url,
            secret_key="indicator-ui-test",
            http_port=self.port,
        )
        self.server = uvicorn.Server(
            uvicorn.Config(
                create_app(api_context(settings, db)),
                host="127.0.0.1",
                port=self.port,
                log_level="warning",
                timeout_graceful_shutdown=1,
            )
        )
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(
            target=self.loop.run_until_complete, args=(self.server.serve(),), daemon=True
        )

    def start(self) -> Server:
        self.thread.start()
        for _ in range(600):
            if self.server.started:
                return self
            self.thread.join(0.05)
        raise RuntimeError("server did not start")

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(15)


@pytest.fixture(scope="module")
def server(tmp_path_factory, databases):
    tmp = tmp_path_factory.mktemp("indicator-ui")
    db = databases.create(tmp / "loa.db")
    load_demo_province(db)
    seed_history(db, days=20, now_ms=now_ms(), cover_previous_quarter=False)
    ensure_demo_accounts(db)
    s = Server(tmp, db).start()
    yield s
    s.stop()
    databases.drop(db)


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
def test_drill_down_from_province_to_cluster(server, chromium, viewport):
    context, page = new_page_en(chromium, viewport)
    name = f"indicator-{viewport['width']}"
    try:
        login(page, server.base_url, "province")
        page.wait_for_url("**/province")
        page.click("nav a[href='/indicator']")
        page.wait_for_selector("#communes li")
        assert page.inner_text("h1") == "Chỉ tiêu truyền thanh theo xã"
        assert "xã đạt" in page.inner_text("#summary")
        assert "Bộ tiêu chí áp dụng" in page.inner_text("#criteria-in-force")
        assert page.locator("#communes li").count() == 13
        assert no_sideways_scroll(page), "province level scrolls sideways"
        screenshot(page, f"{name}-province")

        page.locator("#communes").get_by_role("link", name="Đội Cấn", exact=True).click()
        page.wait_for_selector("#villages")
        assert "Đội Cấn" in page.inner_text("h1")
        assert re.search(r"đã giám sát [\d,]+% thời gian kỳ báo cáo", page.inner_text("#coverage"))
        assert DATE.search(page.inner_text("#basis"))
        assert page.locator(".crumbs a").first.inner_text()  # back to the province
        assert no_sideways_scroll(page), "commune level scrolls sideways"
        screenshot(page, f"{name}-commune")

        page.click("#villages li a >> nth=0")
        page.wait_for_selector("#clusters")
        figures = page.inner_text("#figures")
        assert "Đã giám sát" in figures and "Không giám sát được" in figures
        assert no_sideways_scroll(page), "village level scrolls sideways"
        screenshot(page, f"{name}-village")

        page.click("#clusters tbody a >> nth=0")
        page.wait_for_selector("#cluster-timeline")
        assert page.locator("#cluster-timeline rect").count() >= 1
        assert "Chuyển trạng thái trong kỳ" in page.inner_text("#transitions")
        assert page.locator("#transitions tbody tr").count() >= 1
        airings = page.inner_text("#airings")
        assert "Tính là đã phát" in airings
        assert DATE.search(airings), "airing times are dd/mm/yyyy"
        assert page.locator(".crumbs a").count() == 3  # province › commune › village
        assert no_sideways_scroll(page), "cluster level scrolls sideways"
        screenshot(page, f"{name}-cluster")
    finally:
        context.close()


@pytest.mark.parametrize("viewport", [PHONE, DESKTOP], ids=["390x844", "1366x900"])
def test_inspection_form_with_scan(server, chromium, viewport, tmp_path):
    context, page = new_page_en(chromium, viewport)
    inspector = f"Hoàng Thị Kiểm {viewport['width']}"
    try:
        login(page, server.base_url, "province")
        page.wait_for_url("**/province")
        page.goto(f"{server.base_url}/indicator")
        page.locator("#communes").get_by_role("link", name="Vũ Lễ", exact=True).click()
        page.wait_for_selector("#attest-form")
        assert no_sideways_scroll(page), "the form scrolls sideways"

        # A file that is not a scan: refused with the reason, what was typed is kept.
        fake = tmp_path / "bien-ban.pdf"
        fake.write_bytes(b"MZ\x90\x00 this is a program, not a scan")
        page.fill("#attest-form input[name=inspector]", inspector)
        page.fill("#attest-form input[name=valid_until]", "31/12/2030")
        page.fill("#attest-form textarea[name=note]", "Đài FM phủ sóng 6/6 thôn")
        page.set_input_files("#attest-form input[name=scan]", str(fake))
        page.click("#attest-form button[type=submit]")
        page.wait_for_selector("#form-error")
        assert "PDF, JPEG hoặc PNG" in page.inner_text("#form-error")
        assert page.input_value("#attest-form input[name=inspector]") == inspector
        assert page.input_value("#attest-form textarea[name=note]") == "Đài FM phủ sóng 6/6 thôn"
        with server.db.session() as s:
            assert (
                s.scalars(
                    select(ManualAttestation).where(ManualAttestation.inspector == inspector)
                ).first()
                is None
            )

        scan = tmp_path / "biên-bản-kiểm-tra.png"
        scan.write_bytes(png_bytes())
        page.set_input_files("#attest-form input[name=scan]", str(scan))
        page.click("#attest-form button[type=submit]")
        page.wait_for_selector("p.flash.ok")
        row = page.locator("#attestations li", has_text=inspector)
        assert DATE.search(row.inner_text())
        link = row.locator("a", has_text="Xem bản quét")
        href = link.get_attribute("href")
        shown = page.request.get(server.base_url + href)
        assert shown.status == 200 and shown.body() == png_bytes()
        assert shown.headers["content-type"] == "image/png"
        assert no_sideways_scroll(page)
        screenshot(page, f"indicator-{viewport['width']}-attestation")
        with server.db.session() as s:
            att = s.scalars(
                select(ManualAttestation).where(ManualAttestation.inspector == inspector)
            ).one()
            assert (
                s.scalars(select(AttestationScan).where(AttestationScan.attestation_id == att.id))
                .one()
                .media_type
                == "image/png"
            )
    finally:
        context.close()
