"""The API's route table is built at start, in a worker thread, not by the first requests
on the loop that runs the ingest (``dashboard.app.warm_routes``, docs/architecture.md)."""

from __future__ import annotations

import asyncio

import fastapi.routing
import httpx

from dashboard.app import warm_routes
from system.root import System


def _count_builds(monkeypatch) -> list[str]:
    """Every route FastAPI builds its request-time context for (a private name of FastAPI
    0.165: if a FastAPI upgrade renames it, this test fails at the patch, not silently)."""
    built: list[str] = []
    ctx = fastapi.routing._EffectiveRouteContext
    original = ctx.from_api_route.__func__

    def counting(cls, *args, **kwargs):
        built.append(kwargs["original_route"].path)
        return original(cls, *args, **kwargs)

    monkeypatch.setattr(ctx, "from_api_route", classmethod(counting))
    return built


async def test_no_request_builds_routes_after_the_warm_up(settings, monkeypatch):
    built = _count_builds(monkeypatch)
    system = System(settings, controller=False, http=True, command_link=False)
    assert system.app is not None
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=system.app), base_url="http://loa"
    ) as client:
        # Without the warm-up, the first request builds the table (what the test measures).
        assert (await client.get("/api/v1/alarms")).status_code == 401
    assert len(built) > 50

    built.clear()
    cold = System(settings, controller=False, http=True, command_link=False)
    assert cold.app is not None
    assert await asyncio.to_thread(warm_routes, cold.app) == 404
    assert len(built) > 50
    built.clear()
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=cold.app), base_url="http://loa"
    ) as client:
        for path in ("/api/v1/alarms", "/api/v1/nodes", "/api/v1/indicators/8.3", "/healthz"):
            await client.get(path)
    assert built == []


async def test_the_composition_root_warms_the_routes_at_start(settings, monkeypatch):
    built = _count_builds(monkeypatch)
    system = System(settings, controller=False, http=True, command_link=False)
    await system.start()
    try:
        assert len(built) > 50
        built.clear()
        assert system.app is not None
        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=system.app), base_url="http://loa"
        ) as client:
            await client.get("/api/v1/broadcasts")
        assert built == []
    finally:
        await system.stop()
