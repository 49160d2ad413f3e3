"""The base of domain errors: a request the domain refuses, worded for the person who asked
(Vietnamese). Routes answer ``status`` with ``{"detail": message, **extra()}`` through one
handler in ``dashboard.app``; the CLI prints the message as is."""

from __future__ import annotations


class DomainError(Exception):
    status = 400

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def extra(self) -> dict[str, object]:
        """More fields for the API answer (e.g. one entry per bad import line)."""
        return {}


class UserError(Exception):
    """A command-line mistake the user can fix; ``loa`` prints it without a traceback and
    exits 1. Every package's CLI raises it, so it lives at the bottom."""
