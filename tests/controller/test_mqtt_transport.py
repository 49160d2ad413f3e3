"""The controller's reconnect loop on a real broker: a stop always ends it."""

from __future__ import annotations

import asyncio
import contextlib

import aiomqtt

from controller.mqtt_transport import stay_connected


async def test_a_stop_ends_the_loop_even_when_a_cancellation_was_swallowed(mosquitto_broker):
    """Python 3.11's ``asyncio.wait_for`` (inside aiomqtt's ``subscribe``) swallows a
    cancellation that arrives as its future completes; the loop must still end on ``stopping``
    instead of waiting for messages for ever (``bench/ingest.py`` hung in a stop so)."""
    stopping = asyncio.Event()
    subscribing = asyncio.Event()

    async def on_up(_client: aiomqtt.Client) -> None:
        subscribing.set()
        # As wait_for does when the SUBACK and the cancellation meet: the task goes on.
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.sleep(30)

    task = asyncio.create_task(
        stay_connected(
            lambda: aiomqtt.Client(
                mosquitto_broker.host, mosquitto_broker.port, identifier="loa-stop-test"
            ),
            on_up,
            lambda: None,
            stopping,
        )
    )
    await asyncio.wait_for(subscribing.wait(), 10)
    stopping.set()
    task.cancel()
    done, _ = await asyncio.wait({task}, timeout=10)
    assert task in done, "the connection loop did not end after the stop"
