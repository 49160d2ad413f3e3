"""Errors of the indicator package, worded for the person who asked (Vietnamese).

``status`` is the HTTP code a route answers with; the CLI prints the message as is."""

from __future__ import annotations

from loa.errors import DomainError


class IndicatorError(DomainError):
    pass


class PeriodError(IndicatorError):
    """A period string that cannot be read, or a period that has not started yet."""

    status = 422


class NotFoundError(IndicatorError):
    status = 404


class InvalidInputError(IndicatorError):
    status = 422
