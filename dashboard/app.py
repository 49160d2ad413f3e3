"""The FastAPI application.

Each package contributes its routers from a module listed in ``ROUTER_MODULES``; a module
that does not exist yet is skipped, so the app grows as packages land without this file
becoming a merge point."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from sqlalchemy.exc import DataError

from dashboard.body_limit import BodyLimitMiddleware
from dashboard.context import AppContext
from loa.errors import DomainError
from loa.modules import import_optional

ROUTER_MODULES = (
    "dashboard.routes.health",
    "dashboard.routes.nodes",
    "dashboard.routes.communes",
    "dashboard.routes.registry",
    "dashboard.routes.auth",
    "dashboard.routes.content",
    "dashboard.routes.tts",
    "dashboard.routes.broadcasts",
    "dashboard.routes.indicators",
    "dashboard.routes.alarms",
    "dashboard.routes.live",
    "dashboard.routes.ui",
    "dashboard.routes.alerts",  # CAP emergency alerts (issue 19)
    "dashboard.routes.indicator_pages",  # indicator drill-down, inspection form (issue 16)
)


_TOO_LARGE = "Giá trị số quá lớn (vượt quá 64 bit)"


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="Loa", version="0.1.0",
                  description="Điều khiển và giám sát hệ thống đài truyền thanh IP cấp xã")
    app.state.ctx = ctx
    app.add_exception_handler(OverflowError, _number_too_large)
    app.add_exception_handler(DataError, _value_the_database_refuses)
    app.add_exception_handler(DomainError, _domain_error)
    # Added before the routers' own middlewares, so just inside them: bodies are capped
    # before authentication and parsing, and the audit middleware still records refusals.
    app.add_middleware(BodyLimitMiddleware)
    for name in ROUTER_MODULES:
        module = import_optional(name)
        if module is None:
            continue
        app.include_router(module.router)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
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


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """A refusal of the domain (registry, indicator, scheduling, content): its status and
    Vietnamese message."""
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": exc.message, **exc.extra()}, status_code=exc.status)
