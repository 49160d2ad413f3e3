"""The MQTT side of Loa: registry, ingest, health, dispatch and indicator 8.3."""
