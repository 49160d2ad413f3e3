"""The FastAPI application.

Each package contributes its routers from a module listed in ``ROUTER_MODULES``; a module
that does not exist yet is skipped, so the app grows as packages land without this file
becoming a merge point."""

from __future__ import annotations

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

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
)


def create_app(ctx: AppContext) -> FastAPI:
    app = FastAPI(title="Loa", version="0.1.0",
                  description="Điều khiển và giám sát hệ thống đài truyền thanh IP cấp xã")
    app.state.ctx = ctx
    app.add_exception_handler(OverflowError, _number_too_large)
    app.add_exception_handler(DomainError, _domain_error)
    for name in ROUTER_MODULES:
        module = import_optional(name)
        if module is None:
            continue
        app.include_router(module.router)
        setup = getattr(module, "setup", None)
        if setup is not None:
            setup(app)
    return app


async def _number_too_large(_request: Request, _exc: Exception) -> JSONResponse:
    """An id or number beyond 64 bits can name nothing stored: say so instead of a 500."""
    return JSONResponse({"detail": "Giá trị số quá lớn (vượt quá 64 bit)"}, status_code=422)


async def _domain_error(_request: Request, exc: Exception) -> JSONResponse:
    """A refusal of the registry or the indicator: its status and Vietnamese message."""
    assert isinstance(exc, DomainError)
    return JSONResponse({"detail": exc.message, **exc.extra()}, status_code=exc.status)
