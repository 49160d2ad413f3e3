"""Why a CAP document or an alert action was refused: a Vietnamese sentence first, an English
one for programs and foreign senders, and a short ``code`` a provincial system can switch on.
"""

from __future__ import annotations

from loa.errors import DomainError


class AlertError(DomainError):
    status = 422

    def __init__(self, code: str, message: str, message_en: str, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message_en = message_en
        if status is not None:
            self.status = status

    def extra(self) -> dict[str, object]:
        return {"code": self.code, "detail_en": self.message_en}


class CapRefused(AlertError):
    """The document itself is refused (malformed, hostile, not CAP 1.2, bad signature)."""


class AlertNotFound(AlertError):
    status = 404

    def __init__(self, alert_id: int) -> None:
        super().__init__(
            "not_found", f"Không tìm thấy cảnh báo số {alert_id}.", f"Alert {alert_id} not found."
        )


class AlertForbidden(AlertError):
    status = 403


class AlertConflict(AlertError):
    status = 409
