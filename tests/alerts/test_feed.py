"""The feed poller against a real local HTTP server (http.server): Atom with links to CAP
documents, RSS with enclosures, a bare CAP document; ETag and Last-Modified honoured so an
unchanged feed costs one 304; duplicates and refusals recorded, not aired twice."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from sqlalchemy import select

from alerts.models import AlertFeed, CapMessage
from alerts.runtime import FeedPoller
from tests.alerts import capdocs as d
from tests.alerts.conftest import make_env


class FeedServer:
    def __init__(self) -> None:
        self.files: dict[str, tuple[bytes, str]] = {}
        self.requests: list[tuple[str, dict[str, str]]] = []
        self.version = 1
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *_args) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                outer.requests.append((self.path, dict(self.headers)))
                if self.path not in outer.files:
                    self.send_error(404)
                    return
                body, ctype = outer.files[self.path]
                etag = f'"v{outer.version}-{len(body)}"'
                modified = "Sat, 05 Dec 2026 00:00:00 GMT"
                if self.headers.get("If-None-Match") == etag:
                    self.send_response(304)
                    self.end_headers()
                    return
                self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("ETag", etag)
                self.send_header("Last-Modified", modified)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}"

    def atom(self, links: list[str]) -> bytes:
        entries = "".join(
            f"<entry><id>{u}</id><title>Cảnh báo</title><updated>2026-12-05T00:00:00Z</updated>"
            f'<link rel="alternate" type="application/cap+xml" href="{self.base}{u}"/></entry>'
            for u in links
        )
        return (
            f'<?xml version="1.0" encoding="UTF-8"?><feed xmlns="http://www.w3.org/2005/'
            f'Atom"><id>kttv</id><title>KTTV</title><updated>2026-12-05T00:00:00Z</updated>'
            f"{entries}</feed>"
        ).encode()


@pytest.fixture
def server():
    srv = FeedServer()
    srv.thread.start()
    yield srv
    srv.httpd.shutdown()
    srv.httpd.server_close()


async def test_atom_feed_with_etag(db, settings, server):
    env = make_env(db, settings, feed_trusted=True)
    server.files["/cap/1.xml"] = (d.flood("FEED-1", communes=["c0"]), "application/cap+xml")
    server.files["/feed.atom"] = (server.atom(["/cap/1.xml"]), "application/atom+xml")
    poller = FeedPoller(env.alerts)
    url = server.base + "/feed.atom"

    assert (await poller.poll(url))["accepted"] == 1
    assert (await poller.poll(url))["not_modified"] == 1
    feed_requests = [h for p, h in server.requests if p == "/feed.atom"]
    assert feed_requests[-1].get("If-None-Match", "").startswith('"v1')
    assert feed_requests[-1].get("If-Modified-Since") == "Sat, 05 Dec 2026 00:00:00 GMT"

    # A new entry: the feed changes, the old entry comes back as a duplicate.
    server.version = 2
    server.files["/cap/2.xml"] = (d.flood("FEED-2", communes=["c1"]), "application/cap+xml")
    server.files["/feed.atom"] = (server.atom(["/cap/2.xml", "/cap/1.xml"]), "application/atom+xml")
    counts = await poller.poll(url)
    assert counts["accepted"] == 1 and counts["duplicate"] == 1
    assert len(env.broadcasts_all()) == 2
    with db.session() as s:
        feed = s.get(AlertFeed, url)
        assert feed.etag and feed.etag.startswith('"v2') and "1 mới" in feed.last_status


async def test_rss_and_bare_cap_and_untrusted_feed(db, settings, server):
    env = make_env(db, settings, feed_trusted=False)
    server.files["/a.xml"] = (d.flood("RSS-1", communes=["c0"]), "application/xml")
    server.files["/rss.xml"] = (
        (
            '<?xml version="1.0"?><rss version="2.0"><channel><title>t</title>'
            f'<item><title>x</title><enclosure url="{server.base}/a.xml" '
            'type="application/cap+xml" length="1"/></item></channel></rss>'
        ).encode(),
        "application/rss+xml",
    )
    poller = FeedPoller(env.alerts)
    # An untrusted feed's unsigned alert is refused, and kept with the reason.
    assert (await poller.poll(server.base + "/rss.xml"))["refused"] == 1
    env.alerts.settings.feed_trusted = True
    server.files["/b.xml"] = (d.flood("BARE-1", communes=["c1"]), "application/cap+xml")
    assert (await poller.poll(server.base + "/b.xml"))["accepted"] == 1
    # A feed that is down or missing is recorded, never raised.
    counts = await poller.poll(server.base + "/missing.xml")
    assert counts == {"accepted": 0, "refused": 0, "duplicate": 0, "not_modified": 0}
    with db.session() as s:
        assert s.get(AlertFeed, server.base + "/missing.xml").last_status == "HTTP 404"
        outcomes = [
            (m.outcome, m.reason_code, m.source_ref)
            for m in s.scalars(select(CapMessage).order_by(CapMessage.id))
        ]
    assert outcomes == [
        ("refused", "unsigned", server.base + "/a.xml"),
        ("accepted", None, server.base + "/b.xml"),
    ]


async def test_runtime_ticks_and_polls_while_running(db, settings, server):
    """The leader's loop: escalation happens on its own, the configured feed is polled."""
    import asyncio

    from alerts.runtime import AlertRuntime
    from system.root import System

    env = make_env(
        db,
        settings,
        tick_s=0.05,
        approval_timeout_s=0.2,
        feed_trusted=True,
        feed_interval_s=5,
        feed_urls=[server.base + "/cap.xml"],
    )
    server.files["/cap.xml"] = (
        d.flood("RT-1", communes=["c0"], sender="x@y.vn"),
        "application/cap+xml",
    )
    runtime = AlertRuntime(env.alerts)
    await runtime.start()
    try:
        for _ in range(100):
            page = env.alerts.list(env.province)
            if page["items"] and page["items"][0]["state"] == "escalated":
                break
            await asyncio.sleep(0.05)
        assert page["items"][0]["state"] == "escalated"
    finally:
        await runtime.stop()
    # ``loa serve`` composes it beside the scheduler, as a role of the leading controller.
    system = System(settings, db=db, http=False)
    assert system.scheduling is not None and system.controller is not None
    assert system.alerts.broadcasts is system.scheduling.broadcasts
    assert any(r.name == "cảnh báo CAP" for r in system.controller.leader_roles)
