"""FastAPI dependencies shared by every router."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Annotated

from fastapi import Depends, Request
from sqlalchemy.orm import Session

from dashboard.context import AppContext
from loa.settings import Settings


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_settings(request: Request) -> Settings:
    return get_ctx(request).settings


def get_session(request: Request) -> Iterator[Session]:
    """One database session per request, committed when the route returns normally.

    Use as ``Depends(get_session, scope="function")``: FastAPI otherwise ends a ``yield``
    dependency after the response is sent, so a failed commit would follow a 200."""
    with get_ctx(request).db.session() as s:
        yield s


# The one way routes take a database session (committed before the response is sent).
DbSession = Annotated[Session, Depends(get_session, scope="function")]
