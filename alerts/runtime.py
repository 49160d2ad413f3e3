"""The alert timer and the feed poller, run by the leading controller.

The poller fetches each configured feed with ``If-None-Match`` / ``If-Modified-Since`` (the
validators are kept in ``alert_feed``, so a restart does not re-read everything). A feed is
either a CAP document itself, or an Atom/RSS feed whose entries link to CAP documents (or
carry one inline, as some national feeds do). Every document goes through
``AlertService.receive``; duplicates are recognised there. Nothing here ever raises into the
loop: a feed that fails is logged and recorded with its reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import Any

import httpx
from lxml import etree

from alerts.cap import CAP_NS, parse_xml
from alerts.errors import CapRefused
from alerts.models import AlertFeed
from alerts.workflow import AlertService

log = logging.getLogger("loa.alerts")

ATOM_NS = "http://www.w3.org/2005/Atom"
CAP_TYPES = ("application/cap+xml", "application/common-alerting-protocol+xml")
MAX_ENTRIES = 200


def _entries(root: etree._Element) -> tuple[list[bytes], list[str]]:
    """(inline CAP documents, links to CAP documents) of an Atom or RSS feed."""
    inline: list[bytes] = []
    links: list[str] = []
    for el in root.iter(f"{{{CAP_NS}}}alert"):
        inline.append(etree.tostring(el))
    if etree.QName(root).namespace == ATOM_NS:
        for entry in root.findall(f"{{{ATOM_NS}}}entry")[:MAX_ENTRIES]:
            chosen = None
            for link in entry.findall(f"{{{ATOM_NS}}}link"):
                href = link.get("href")
                if not href:
                    continue
                if link.get("type") in CAP_TYPES or (
                    chosen is None and link.get("rel", "alternate") in ("alternate", "related")
                ):
                    chosen = href
                    if link.get("type") in CAP_TYPES:
                        break
            if chosen and entry.find(f".//{{{CAP_NS}}}alert") is None:
                links.append(chosen)
    else:  # RSS 2.0
        for item in root.iter("item"):
            if len(links) >= MAX_ENTRIES:
                break
            enclosure = item.find("enclosure")
            link = item.findtext("link")
            if enclosure is not None and enclosure.get("url"):
                links.append(enclosure.get("url"))
            elif link and item.find(f".//{{{CAP_NS}}}alert") is None:
                links.append(link.strip())
    return inline, links


class FeedPoller:
    def __init__(self, service: AlertService, *, timeout_s: float = 15.0) -> None:
        self.service = service
        self.timeout_s = timeout_s

    def _state(self, url: str) -> AlertFeed:
        with self.service.db.session() as s:
            row = s.get(AlertFeed, url)
            if row is None:
                row = AlertFeed(url=url)
                s.add(row)
            return row

    def _save(self, url: str, **fields: Any) -> None:
        with self.service.db.session() as s:
            row = s.get(AlertFeed, url) or AlertFeed(url=url)
            for k, v in fields.items():
                setattr(row, k, v)
            row.last_polled_ms = self.service.clock()
            s.add(row)

    async def _fetch(
        self, client: httpx.AsyncClient, url: str, headers: dict[str, str]
    ) -> httpx.Response:
        limit = self.service.settings.max_bytes * 8
        async with client.stream("GET", url, headers=headers) as resp:
            body = bytearray()
            async for chunk in resp.aiter_bytes():
                body += chunk
                if len(body) > limit:
                    break
            resp._content = bytes(body)  # read what we allow, no more
            return resp

    async def poll(self, url: str) -> dict[str, int]:
        """Fetch one feed; returns counts of documents accepted / refused / duplicate."""
        counts = {"accepted": 0, "refused": 0, "duplicate": 0, "not_modified": 0}
        state = await asyncio.to_thread(self._state, url)  # off the ingest's loop
        headers = {"Accept": "application/cap+xml, application/atom+xml, application/xml"}
        if state.etag:
            headers["If-None-Match"] = state.etag
        if state.last_modified:
            headers["If-Modified-Since"] = state.last_modified
        trusted = self.service.settings.feed_trusted
        try:
            async with httpx.AsyncClient(timeout=self.timeout_s, follow_redirects=True) as client:
                resp = await self._fetch(client, url, headers)
                if resp.status_code == 304:
                    counts["not_modified"] = 1
                    await asyncio.to_thread(self._save, url, last_status="304 không đổi")
                    return counts
                if resp.status_code != 200:
                    await asyncio.to_thread(self._save, url, last_status=f"HTTP {resp.status_code}")
                    return counts
                docs = await self._documents(client, url, resp.content)
        except (httpx.HTTPError, OSError) as exc:
            await asyncio.to_thread(self._save, url, last_status=f"lỗi: {exc}"[:300])
            log.warning("Không đọc được nguồn cảnh báo %s: %s", url, exc)
            return counts
        for doc_url, raw in docs:
            try:
                out = await asyncio.to_thread(
                    self.service.receive,
                    raw,
                    source="feed",
                    source_ref=doc_url,
                    trusted_source=trusted,
                )
                counts["duplicate" if out.get("result") == "duplicate" else "accepted"] += 1
            except CapRefused:
                counts["refused"] += 1
        await asyncio.to_thread(
            self._save,
            url,
            etag=resp.headers.get("etag"),
            last_modified=resp.headers.get("last-modified"),
            last_status=f"200: {counts['accepted']} mới, {counts['duplicate']} trùng, "
            f"{counts['refused']} bị từ chối",
        )
        return counts

    async def _documents(
        self, client: httpx.AsyncClient, url: str, body: bytes
    ) -> list[tuple[str, bytes]]:
        try:
            root = parse_xml(body, max_bytes=self.service.settings.max_bytes * 8)
        except CapRefused:
            return [(url, body)]  # stored and refused with its reason by receive()
        if etree.QName(root).namespace == CAP_NS:
            return [(url, body)]
        inline, links = _entries(root)
        docs = [(url, raw) for raw in inline]
        for link in links:
            try:
                resp = await self._fetch(client, link, {"Accept": "application/cap+xml"})
            except httpx.HTTPError as exc:
                log.warning("Không tải được cảnh báo %s: %s", link, exc)
                continue
            if resp.status_code == 200:
                docs.append((link, resp.content))
        return docs


class AlertRuntime:
    """``tick`` every ``tick_s`` and each feed every ``feed_interval_s``."""

    def __init__(self, service: AlertService) -> None:
        self.service = service
        self.poller = FeedPoller(service)
        self._tasks: list[asyncio.Task] = []

    async def start(self) -> None:
        if self._tasks:
            return
        self._tasks = [asyncio.create_task(self._ticker(), name="loa-alerts-tick")]
        if self.service.settings.feed_urls:
            self._tasks.append(asyncio.create_task(self._feeds(), name="loa-alerts-feeds"))

    async def stop(self) -> None:
        tasks, self._tasks = self._tasks, []
        for t in tasks:
            t.cancel()
        for t in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await t

    async def _ticker(self) -> None:
        while True:
            await asyncio.sleep(self.service.settings.tick_s)
            try:
                await asyncio.to_thread(self.service.tick)
            except Exception:
                log.exception("alert timer failed")

    async def _feeds(self) -> None:
        while True:
            for url in self.service.settings.feed_urls:
                try:
                    await self.poller.poll(url)
                except Exception:
                    log.exception("alert feed %s failed", url)
            await asyncio.sleep(self.service.settings.feed_interval_s)
