"""A running Loa stack for dashboard tests: uvicorn on a random loopback port over the run's
real database (the ``db`` fixture: SQLite, or PostgreSQL in that pass), optionally with a real
broker, the controller service and a simulated fleet, all on one event loop in a background
thread (as ``loa demo`` runs them). Browser tests drive it with Playwright and Debian's
Chromium; Playwright's own browser download is never used."""

from __future__ import annotations

import asyncio
import re
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn

from dashboard.app import create_app
from dashboard.security import ensure_demo_accounts
from loa.broker import free_port
from loa.db import Database
from loa.settings import Settings
from system.root import System, api_context
from tests.factories import make_registry

REPO = Path(__file__).resolve().parents[2]
SCREENSHOTS = REPO / "tests" / "artifacts" / "screenshots"
CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]

# Villages and nodes of the test province. One commune name is markup, to prove escaping.
XSS_NAME = "<script>alert('xss')</script>"
REGISTRY = {
    "Đội Cấn": {"Thôn Đồng Bầu": ["dc-001", "dc-002"], "Thôn Nà Pàn": ["dc-003"]},
    "Hoàng Văn Thụ": {"Thôn Pác Mòng": ["hvt-001", "hvt-002"]},
    XSS_NAME: {"Thôn <b>Lạ</b>": ["xss-001"]},
}


class LiveStack:
    """The API (and, when asked, broker + controller + fleet) on one loop in a thread."""

    def __init__(
        self,
        tmp_path: Path,
        db: Database,
        *,
        heartbeat_s: int = 30,
        broker: Any = None,
        fleet_nodes: list[str] | None = None,
        alarm_raise_s: float = 1.0,
        alarm_clear_s: float = 5.0,
    ) -> None:
        self.tmp = tmp_path
        self.db = db
        self.ids = make_registry(self.db, communes=REGISTRY, heartbeat_s=heartbeat_s)
        self.accounts = ensure_demo_accounts(self.db)
        self.port = free_port()
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.settings = Settings(
            data_dir=tmp_path / "data",
            database_url=self.db.url,
            heartbeat_s=heartbeat_s,
            flush_interval_s=0.2,
            secret_key="ui-test-secret",
            http_port=self.port,
            alarm_interval_s=0.5,
            alarm_raise_after_s=alarm_raise_s,
            alarm_clear_after_s=alarm_clear_s,
            **({"mqtt_host": broker.host, "mqtt_port": broker.port} if broker else {}),
        )
        self.broker = broker
        self.fleet_nodes = fleet_nodes or []
        self.heartbeat_s = heartbeat_s
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.controller = self.fleet = self.server = None
        self.system: System | None = None
        self._server_task: asyncio.Task | None = None

    def run(self, coro: Any, timeout: float = 60.0) -> Any:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> LiveStack:
        self.thread.start()
        # Generous: on a shared 2-core machine booting a fleet and the scheduling services
        # can take a while; the test's own deadlines start only once everything is up.
        self.run(self._start(), timeout=180)
        return self

    async def _start(self) -> None:
        if self.broker is not None:
            # As ``loa serve`` runs: controller, scheduling, alarms and the API in one process.
            self.system = System(
                self.settings, db=self.db, api_db=self.db, client_id=f"ui-test-{self.port}"
            )
            self.controller = self.system.controller
            await self.system.start()
            await self.controller.wait_connected(60)
            self.app = self.system.app
        else:
            self.app = create_app(api_context(self.settings, self.db))
        config = uvicorn.Config(
            self.app,
            host="127.0.0.1",
            port=self.port,
            log_level="warning",
            lifespan="on",
            timeout_graceful_shutdown=1,
        )
        self.server = uvicorn.Server(config)
        self._server_task = asyncio.get_running_loop().create_task(self.server.serve())
        while not self.server.started:
            if self._server_task.done():
                self._server_task.result()
            await asyncio.sleep(0.02)
        if self.fleet_nodes:
            from firmware_sim.fleet import Fleet

            self.fleet = Fleet(
                self.broker.host, self.broker.port, heartbeat_s=self.heartbeat_s, seed=7
            )
            connected = await self.fleet.start(self.fleet_nodes, timeout=90)
            assert connected == len(self.fleet_nodes)

    async def _stop(self) -> None:
        if self.fleet is not None:
            await self.fleet.stop()
        if self.server is not None:
            self.server.should_exit = True
            await asyncio.wait_for(self._server_task, 15)
        if self.system is not None:
            await self.system.stop()

    def stop(self) -> None:
        try:
            self.run(self._stop())
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self.thread.join(10)
            self.db.dispose()

    # ------------------------------------------------------------------ HTTP helpers

    def client(self) -> httpx.Client:
        return httpx.Client(base_url=self.base_url, follow_redirects=False, timeout=10)

    def token(self, username: str, password: str = "demo") -> str:
        with self.client() as c:
            r = c.post("/api/v1/auth/token", data={"username": username, "password": password})
            r.raise_for_status()
            return r.json()["access_token"]

    def login_client(self, username: str, password: str = "demo") -> tuple[httpx.Client, str]:
        """A cookie session as the browser has it; returns (client, csrf token)."""
        c = self.client()
        page = c.get("/login")
        form_csrf = re.search(r'name="csrf_token" value="([^"]+)"', page.text).group(1)
        r = c.post(
            "/login",
            data={"username": username, "password": password, "csrf_token": form_csrf, "next": "/"},
        )
        assert r.status_code == 303, r.text
        me = c.get("/api/v1/auth/me").json()
        return c, me["csrf_token"]


@pytest.fixture
def stack(tmp_path, db) -> Iterator[LiveStack]:
    s = LiveStack(tmp_path, db).start()
    yield s
    s.stop()


# --------------------------------------------------------------------------- browser


@pytest.fixture(scope="module")
def chromium():
    """One Chromium per test module. Playwright's sync API keeps an event loop running in the
    main thread while it is open, so a browser kept for the whole package made every later
    ``async`` test in it fail ("Runner.run() cannot be called from a running event loop")."""
    if not CHROMIUM.exists():
        pytest.fail("Debian chromium is required for browser tests: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield browser
        browser.close()


@pytest.fixture
def browser_context(chromium):
    # bypass_csp only lets the test's own wait_for_function() polls run (they use eval); the
    # pages' escaping is then proven without the CSP's help. The CSP itself is checked apart.
    context = chromium.new_context(
        viewport={"width": 1280, "height": 900},
        locale="vi-VN",
        timezone_id="Asia/Ho_Chi_Minh",
        bypass_csp=True,
    )
    yield context
    context.close()


# The two screens every page is checked on: a phone and an office desktop.
PHONE = {"width": 390, "height": 844}
DESKTOP = {"width": 1366, "height": 900}


def new_page(chromium, viewport: dict, locale: str = "vi-VN"):
    """A fresh context and page at ``viewport``, touch and mobile on the phone size, in
    Vietnam's time zone (``locale`` "en-US" checks that dates stay dd/mm/yyyy anyway)."""
    context = chromium.new_context(
        viewport=viewport,
        locale=locale,
        timezone_id="Asia/Ho_Chi_Minh",
        bypass_csp=True,
        is_mobile=viewport is PHONE,
        has_touch=viewport is PHONE,
    )
    return context, context.new_page()


def no_sideways_scroll(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def login(page, base_url: str, username: str, password: str = "demo") -> None:
    page.goto(f"{base_url}/login")
    page.fill("input[name=username]", username)
    page.fill("input[name=password]", password)
    page.click("button[type=submit]")


def screenshot(page, name: str) -> Path:
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    path = SCREENSHOTS / f"{name}.png"
    page.screenshot(path=str(path), full_page=True)
    return path
