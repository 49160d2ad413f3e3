"""Handing work to an event loop from whichever thread holds it.

API routes for database work are plain ``def`` routes: they run in a thread pool, and the
services they call (the scheduler's hooks, the API's scheduler wake) must act on the event
loop that owns their MQTT client and tasks. Called on that loop, the work runs at once; from
another thread it is queued with ``call_soon_threadsafe``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any


def call_in_loop(loop: asyncio.AbstractEventLoop, fn: Callable[..., Any], *args: Any) -> None:
    """``fn(*args)`` on ``loop``: now when the caller is on it, else as soon as it can."""
    try:
        running = asyncio.get_running_loop()
    except RuntimeError:
        running = None
    if running is loop:
        fn(*args)
    else:
        loop.call_soon_threadsafe(fn, *args)
