"""The few things a simulated node needs from aiomqtt that aiomqtt does not expose publicly.

Kept in one place, checked against aiomqtt 2.5 and paho-mqtt 2.x, and covered by the
kill/hang tests (which fail if any of this stops working):

* ``paho(client)``: the paho client under ``aiomqtt.Client`` (``client._client``). A node
  publishes its fire-and-forget messages (heartbeats, events) through paho directly and
  receives commands through paho's public ``message_callback_add``: no task per message,
  which is what lets one process hold thousands of nodes.
* ``disconnected(client)``: the future aiomqtt resolves when the connection ends, so a
  node's single task can sleep until its next heartbeat *or* the connection drops.
* ``cut(client)``: an abrupt death. A clean ``__aexit__`` would send DISCONNECT and the
  broker would discard the will; a dead device never says goodbye. ``reset`` shuts the
  socket down under paho (the broker sees the TCP connection end without DISCONNECT and
  publishes the will at once); ``silent`` stops all traffic but leaves the socket open, as
  when a 4G link or the power to the router vanishes, so the broker only notices after 1.5 x
  keepalive and then publishes the will.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from typing import Literal

import aiomqtt
import paho.mqtt.client as mqtt

KillMode = Literal["reset", "silent"]


def paho(client: aiomqtt.Client) -> mqtt.Client:
    return client._client  # noqa: SLF001


def disconnected(client: aiomqtt.Client) -> asyncio.Future[None]:
    return client._disconnected  # noqa: SLF001


def quiet_disconnect_errors(client: aiomqtt.Client) -> None:
    """Retrieve the "connection lost" error even when it surfaced elsewhere first (a
    publish that failed), so asyncio does not log "Future exception was never retrieved"."""
    disconnected(client).add_done_callback(_consume)


def cut(client: aiomqtt.Client, mode: KillMode, *, hold_s: float) -> None:
    """End the connection without DISCONNECT. ``hold_s`` (silent mode): how long the dead
    socket stays open before it is closed; longer than 1.5 x keepalive lets the broker time
    the client out the way it would a vanished device."""
    quiet_disconnect_errors(client)  # nobody awaits this client any more
    inner = paho(client)
    sock = inner.socket()
    if sock is None:
        return
    if mode == "reset":
        # paho sees EOF on its next read, closes the socket and reports the connection lost;
        # nothing is written after SHUT_WR, so no DISCONNECT can slip out.
        with contextlib.suppress(OSError):
            sock.shutdown(socket.SHUT_RDWR)
        return
    loop = asyncio.get_running_loop()
    fd = sock.fileno()
    if fd >= 0:
        loop.remove_reader(fd)
        loop.remove_writer(fd)
    misc = getattr(client, "_misc_task", None)  # paho keepalive pings
    if misc is not None and not misc.done():
        misc.cancel()
    # From now on nothing reads or writes this socket. Keep a reference until hold_s passes
    # (closing it earlier would send FIN and make the broker fire the will immediately).
    loop.call_later(hold_s, _close_quietly, sock)


def _consume(fut: asyncio.Future[None]) -> None:
    if not fut.cancelled():
        fut.exception()


def _close_quietly(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.close()
