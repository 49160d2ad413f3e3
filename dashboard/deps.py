"""FastAPI dependencies shared by every router.

Database sessions and load (issue 17, finding 2). Sixty parallel requests used to freeze the
app: a request took a pool connection in a worker thread, gave the thread back, and then
waited for another thread for its route, while all 40 AnyIO worker threads waited for a
pool connection (``QueuePool limit ... reached`` after 30 s). Now a request must hold one of
``api_db_concurrency`` slots before it gets a session. It waits for the slot on the event loop,
holding neither a thread nor a connection; the pool is larger than the number of slots, so
every request that holds a connection can get a thread and every thread can get a connection.
The session's commit, rollback and close run in a thread of their own (as FastAPI does for a
dependency's exit), so they never wait behind the route threads either."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Annotated
from weakref import WeakKeyDictionary

import anyio
from anyio import CancelScope, CapacityLimiter
from fastapi import Depends, FastAPI, Request
from sqlalchemy.orm import Session

from dashboard.context import AppContext
from loa.db import Database
from loa.settings import Settings


def get_ctx(request: Request) -> AppContext:
    return request.app.state.ctx


def get_settings(request: Request) -> Settings:
    return get_ctx(request).settings


def db_slot_count(db: Database, wanted: int) -> int:
    """Slots for ``db``: at most half its pool, so a request may open a second session (a
    domain service's own) while every slot is taken, and the audit writer still finds one."""
    pool = db.engine.pool
    size = getattr(pool, "size", None)
    if not callable(size):
        return wanted  # in-memory SQLite: one shared connection, no pool to exhaust
    capacity = size() + max(0, getattr(pool, "_max_overflow", 0))
    return max(1, min(wanted, capacity // 2))


def install_db_slots(app: FastAPI, db: Database, wanted: int) -> None:
    app.state.db_slots_total = db_slot_count(db, wanted)


def _slots(app: FastAPI) -> anyio.Semaphore:
    # Made on first use, one per event loop: an anyio primitive belongs to the loop that
    # serves the app (tests may serve one app from several loops in turn).
    per_loop: WeakKeyDictionary = getattr(app.state, "db_slots", None) or WeakKeyDictionary()
    app.state.db_slots = per_loop
    loop = asyncio.get_running_loop()
    sem = per_loop.get(loop)
    if sem is None:
        total = getattr(app.state, "db_slots_total", None) or db_slot_count(
            app.state.ctx.db, app.state.ctx.settings.api_db_concurrency
        )
        sem = per_loop[loop] = anyio.Semaphore(total)
    return sem


async def _in_thread(fn, *args) -> None:  # type: ignore[no-untyped-def]
    # A limiter per call, not the shared 40-thread one: ending a session must not wait behind
    # routes that wait for this session's slot.
    with CancelScope(shield=True):
        await anyio.to_thread.run_sync(fn, *args, limiter=CapacityLimiter(1))


async def get_session(request: Request) -> AsyncIterator[Session]:
    """One database session per request, committed when the route returns normally.

    Use as ``Depends(get_session, scope="function")``: FastAPI otherwise ends a ``yield``
    dependency after the response is sent, so a failed commit would follow a 200 and a slow
    client would hold the connection. Here the session ends once the route's answer is built
    (FastAPI serialises a response model inside this scope, where lazy loads still work), and
    before a byte of it is sent."""
    async with _slots(request.app):
        s = get_ctx(request).db.sessionmaker()
        try:
            yield s
        except BaseException:
            await _end_session(s, False)
            raise
        await _end_session(s, True)


async def _end_session(s: Session, commit: bool) -> None:
    if s.in_transaction():
        await _in_thread(_end, s, commit)
    else:  # never touched the database (an anonymous page): nothing to send, no thread
        s.close()


def _end(s: Session, commit: bool) -> None:
    """Commit (or roll back) and close in one trip to a thread; the connection goes back to
    the pool before the response is sent."""
    try:
        if commit:
            s.commit()
        else:
            s.rollback()
    finally:
        s.close()


# The one way routes take a database session (committed before the response is sent).
DbSession = Annotated[Session, Depends(get_session, scope="function")]
