"""Domain errors of scheduling, each with a Vietnamese message a commune officer can act on.

The ``kind`` tells the API which 4xx to answer without the domain knowing about HTTP."""

from __future__ import annotations

from typing import Any, Literal

ErrorKind = Literal["invalid", "forbidden", "not_found", "conflict", "unavailable"]


class ScheduleError(Exception):
    kind: ErrorKind = "invalid"

    def __init__(self, message: str, *, details: list[Any] | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []


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
