"""Simulated loudspeaker clusters that speak the Loa node protocol (docs/protocol.md).

A ``SimNode`` is one cluster (receiver + amplifier + loudspeakers) with its own MQTT
connection; a ``Fleet`` runs thousands of them in one event loop so the controller, the
dashboard and the demo can be exercised against realistic traffic and faults without
hardware. Every payload is built and parsed with ``loa.protocol``: the simulator can only
say what the protocol lets a real node say.
"""

from firmware_sim.faults import Fault
from firmware_sim.fleet import Fleet, NodeSpec
from firmware_sim.node import SimNode

__all__ = ["Fault", "Fleet", "NodeSpec", "SimNode"]
