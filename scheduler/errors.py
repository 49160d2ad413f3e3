"""Domain errors of scheduling, each with a Vietnamese message a commune officer can act on.

The ``kind`` names the refusal; ``status`` is the answer the one ``DomainError`` handler of
the API gives it."""

from __future__ import annotations

from typing import Any, Literal

from loa.errors import DomainError

ErrorKind = Literal["invalid", "forbidden", "not_found", "conflict", "unavailable"]
STATUS_FOR_KIND: dict[str, int] = {
    "invalid": 422,
    "forbidden": 403,
    "not_found": 404,
    "conflict": 409,
    "unavailable": 503,
}


class ScheduleError(DomainError):
    kind: ErrorKind = "invalid"

    def __init__(self, message: str, *, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.details = details or []

    # DomainError.status is a plain class attribute; here it follows ``kind``, read-only.
    @property
    def status(self) -> int:  # type: ignore[override]
        return STATUS_FOR_KIND.get(self.kind, 400)

    def extra(self) -> dict[str, object]:
        """Overlapping broadcasts as ``conflicts``; other per-item reasons as ``details``."""
        if not self.details:
            return {}
        return {"conflicts" if self.kind == "conflict" else "details": self.details}


class InvalidBroadcast(ScheduleError):
    kind = "invalid"


class Forbidden(ScheduleError):
    kind = "forbidden"


class NotFound(ScheduleError):
    kind = "not_found"


class Conflict(ScheduleError):
    kind = "conflict"


class Unavailable(ScheduleError):
    kind = "unavailable"
