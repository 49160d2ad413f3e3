"""Typed API edges (issue 15): every ``/api/`` route that takes a JSON body shows its request
schema in ``/openapi.json`` and every JSON route its response schema.

File downloads answer bytes, not JSON, and are listed by name. ``NOT_YET_TYPED`` was the
debt left when this test was first written; it is empty now and must stay so: a new route
without schemas fails here."""

from __future__ import annotations

from fastapi.testclient import TestClient

from dashboard.app import create_app
from system.root import api_context

# Answers that are files, not JSON.
DOWNLOADS = {
    ("GET", "/api/v1/registry/export"),
    ("GET", "/api/v1/alerts/messages/{message_id}/raw"),
    ("GET", "/api/v1/tts/preview/{name}"),
    ("GET", "/api/v1/content/{content_id}/audio"),
    ("GET", "/api/v1/alerts/{alert_id}/proof.{fmt}"),  # CSV or JSON file of an alert's proof
    ("GET", "/api/v1/indicators/8.3/report"),
    ("GET", "/api/v1/indicators/radio/report"),
    ("GET", "/api/v1/attestations/{attestation_id}/scans/{scan_id}"),
}

NOT_YET_TYPED: set[tuple[str, str, str]] = set()


def _real(schema: dict) -> bool:
    """A schema that says something (a model, a type, a union), not ``Any``'s ``{}``."""
    return any(k in schema for k in ("$ref", "type", "anyOf", "oneOf", "allOf", "properties"))


def gaps(spec: dict) -> set[tuple[str, str, str]]:
    found = set()
    for path, ops in spec["paths"].items():
        if not path.startswith("/api/"):
            continue
        for method, op in ops.items():
            method = method.upper()
            body = op.get("requestBody", {}).get("content", {})
            if body and not any(_real(c.get("schema", {})) for c in body.values()):
                found.add((method, path, "request"))
            if (method, path) in DOWNLOADS:
                continue
            answers = {
                code: r for code, r in op.get("responses", {}).items() if code.startswith("2")
            }
            typed = any(
                code == "204"
                # JSON, or another typed stream (the fleet's Server-Sent Events)
                or any(_real(c.get("schema", {})) for c in r.get("content", {}).values())
                for code, r in answers.items()
            )
            if not typed:
                found.add((method, path, "response"))
    return found


def test_every_api_route_shows_its_request_and_response_schema(settings, db):
    with TestClient(create_app(api_context(settings, db))) as client:
        spec = client.get("/openapi.json").json()
    found = gaps(spec)
    assert found - NOT_YET_TYPED == set(), "routes without a request/response schema"
    assert NOT_YET_TYPED - found == set(), "typed now: remove from NOT_YET_TYPED"
    # The typed edges of this issue are really there.
    create = spec["paths"]["/api/v1/broadcasts"]["post"]["responses"]["201"]
    assert create["content"]["application/json"]["schema"]["$ref"].endswith("/BroadcastOut")
    assert "Idempotency-Key" in str(spec["paths"]["/api/v1/groups"]["post"]["parameters"])
    # Every creating endpoint takes an idempotency key.
    for path in (
        "/api/v1/broadcasts",
        "/api/v1/tts/abbreviations",
        "/api/v1/users",
        "/api/v1/inbox/{item_id}/schedule",
        "/api/v1/communes/{commune_ref}/attestations",
    ):
        assert "Idempotency-Key" in str(spec["paths"][path]["post"]["parameters"]), path
    fleet = spec["paths"]["/api/v1/live/fleet"]["get"]["responses"]["200"]["content"]
    assert fleet["text/event-stream"]["schema"]["$ref"].endswith("/FleetEvent")
