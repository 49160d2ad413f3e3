"""``loa node``: the agent that runs on a real loudspeaker cluster (docs/node.md).

It speaks docs/protocol.md through ``loa.protocol`` (the same module the controller and
``firmware_sim`` use) and imports nothing else of Loa: a board gets this package, ``loa/``
and four libraries (aiomqtt, paho-mqtt, pydantic, httpx), never the controller's server
dependencies."""

FW_VERSION = "loa-node 0.1.0"
