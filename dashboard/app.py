"""The FastAPI application.

Every router is imported by name here: a missing module is an error at start, not a
silently smaller API."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError, IntegrityError

from dashboard.body_limit import BodyLimitMiddleware
from dashboard.context import AppContext
from dashboard.routes import (
    alarms,
    alerts,
    auth,
    broadcasts,
    communes,
    content,
    health,
    indicator_pages,
    indicators,
    live,
    mic,
    nodes,
    notify,
    registry,
    tts,
    ui,
)
from loa import idempotency
from loa.errors import DomainError

# In the order their paths are matched (the pages last: their catch-alls come after the API).
ROUTERS = (
    health.router,
    nodes.router,
    communes.router,
    registry.router,
    auth.router,
    content.router,
    tts.router,
    broadcasts.router,
    indicators.router,
    alarms.router,
    live.router,
    mic.router,  # live from the phone (issue 18)
    ui.router,
    alerts.router,
    indicator_pages.router,  # indicator drill-down, inspection form (issue 16)
    notify.router,
)  # alarm notification settings (issue 18)


_TOO_LARGE = "Giá trị số quá lớn (vượt quá 64 bit)"


@contextlib.asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    """The app starts no service: the composition root (``system.root``) did. It only ends
    what it made itself, the live page's database poll."""
    yield
    await live.stop_watcher(app)
    await mic.stop_feeds(app)  # live from the phone: its ffmpeg feeds


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(
        title="Loa",
        version="0.1.0",
        lifespan=_lifespan,
        description="Điều khiển và giám sát hệ thống đài truyền thanh IP cấp xã",
    )
    app.state.ctx = ctx
    app.add_exception_handler(OverflowError, _number_too_large)
    app.add_exception_handler(DataError, _value_the_database_refuses)
    app.add_exception_handler(DomainError, _domain_error)
    app.add_exception_handler(IntegrityError, _same_key_at_once)
    # Added before the routers' own middlewares, so just inside them: bodies are capped
    # before authentication and parsing, and the audit middleware still records refusals.
    app.add_middleware(BodyLimitMiddleware)
    for router in ROUTERS:
        app.include_router(router)
    auth.setup(app)  # the audit middleware
    ui.setup(app)  # static files and the error pages
    # Load (issue 17): database slots below the pool, then per-client rate limits outermost.
    from dashboard import ratelimit
    from dashboard.deps import install_db_slots

    install_db_slots(app, ctx.db, ctx.settings.api_db_concurrency)
    ratelimit.install(app, ctx.settings)
    return app


async def _number_too_large(_request: Request, _exc: Exception) -> JSONResponse:
    """An id or number beyond 64 bits can name nothing stored: say so instead of a 500."""
    return JSONResponse({"detail": _TOO_LARGE}, status_code=422)


# What PostgreSQL refuses and SQLite raises differently (OverflowError) or stores, by SQLSTATE.
_REFUSED_VALUES = {
    "22003": _TOO_LARGE,  # numeric_value_out_of_range
    "22001": "Giá trị quá dài so với giới hạn lưu trữ",  # string_data_right_truncation
}
_NUL = "Văn bản không được chứa ký tự NUL (0x00)"


def _refusal(exc: Exception) -> str | None:
    orig = getattr(exc, "orig", None)
    if "NUL (0x00)" in str(orig):  # psycopg refuses it before sending: no SQLSTATE
        return _NUL
    return _REFUSED_VALUES.get(getattr(orig, "sqlstate", None) or "")


async def _value_the_database_refuses(_request: Request, exc: Exception) -> JSONResponse:
    """PostgreSQL's side of ``_number_too_large``: a value no column can hold is the caller's
    mistake (422), not a server failure. Any other data error stays a 500."""
    detail = _refusal(exc)
    if detail is None:
        raise exc
    return JSONResponse({"detail": detail}, status_code=422)


async def _same_key_at_once(_request: Request, exc: Exception) -> JSONResponse:
    """Two requests with one idempotency key at the same moment: the loser's transaction,
    audit included, was rolled back by its session, so it is told to ask again (and then gets
    the winner's answer), not given a 500. Any other integrity error stays a 500."""
    if not idempotency.lost_a_key_race(exc):
        raise exc
    return JSONResponse(
        {
            "detail": idempotency.MSG_IN_FLIGHT,
            "detail_en": idempotency.MSG_IN_FLIGHT_EN,
            "code": "idempotency_key_in_flight",
        },
        status_code=409,
    )


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """A refusal of the domain (registry, indicator, scheduling, content): its status and
    Vietnamese message."""
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": exc.message, **exc.extra()}, status_code=exc.status)


def warm_routes(app: FastAPI) -> int:
    """Build the app's route table now, in the calling thread, not on the first requests.

    FastAPI (0.165) builds each router's table of routes, with their pydantic response
    fields, the first time a request goes through it: 570-700 ms of CPU for Loa's routers,
    which in ``loa serve`` would run on the event loop that runs the ingest and hold it
    that long (seen by ``tests/system/test_loop_stall.py``: a 337 ms stall inside
    ``_build_effective_context``). A request for a path no route has walks every router,
    so it builds them all; it goes to the router alone (no middleware, no route runs) on a
    loop of this thread's own. The composition root calls this in a worker thread at start.
    Returns the probe's HTTP status (404)."""
    sent: list[dict[str, object]] = []

    async def receive() -> dict[str, object]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, object]) -> None:
        sent.append(message)

    path = "/.loa-warm-up/no-such-route"
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "root_path": "",
        "query_string": b"",
        "headers": [],
        "client": ("127.0.0.1", 0),
        "server": ("loa", 80),
    }
    asyncio.run(app.router(scope, receive, send))  # type: ignore[arg-type]
    return int(sent[0]["status"]) if sent else 0  # type: ignore[call-overload]
