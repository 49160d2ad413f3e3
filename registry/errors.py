"""Domain errors of the registry, with messages a commune officer can act on (Vietnamese).

Routes map the class to an HTTP status and the CLI prints the message, so the message itself
must already say what is wrong and with which code or name."""

from __future__ import annotations

from dataclasses import dataclass

from loa.errors import DomainError


class RegistryError(DomainError):
    """Base class: a request the registry refuses. ``status`` is the HTTP code routes use."""


class NotFoundError(RegistryError):
    status = 404


class ConflictError(RegistryError):
    """The request contradicts the register as it is (duplicate code, retired unit, ...)."""

    status = 409


class InvalidInputError(RegistryError):
    status = 422


@dataclass(frozen=True)
class ImportIssue:
    """One problem in an import file: the line a person must open, the field, and why."""

    line: int
    field: str
    message: str

    def as_dict(self) -> dict[str, object]:
        return {"line": self.line, "field": self.field, "message": self.message}


class ImportFailed(InvalidInputError):
    """The file had errors; nothing was written. ``issues`` lists every one found."""

    def __init__(self, issues: list[ImportIssue]) -> None:
        self.issues = sorted(issues, key=lambda i: (i.line, i.field))
        super().__init__(f"Tệp nhập có {len(self.issues)} lỗi; chưa ghi gì vào sổ đăng ký.")

    def extra(self) -> dict[str, object]:
        return {"errors": [issue.as_dict() for issue in self.issues]}
