"""Domain errors of the content package.

Every refusal carries a stable ``code`` (for programs and tests), a Vietnamese ``message``
(for the officer) and an English one; the CLI prints the message, the API maps the error
to its ``http_status`` with the message as ``detail``, through the one ``DomainError``
handler."""

from __future__ import annotations

from loa.errors import DomainError


class ContentError(DomainError):
    code = "content_error"
    http_status = 400

    def __init__(
        self, code: str, message: str, message_en: str = "", *, http_status: int | None = None
    ) -> None:
        super().__init__(message)
        self.code = code
        self.message_en = message_en or message
        if http_status is not None:
            self.http_status = http_status

    @property
    def status(self) -> int:  # type: ignore[override]
        return self.http_status

    def extra(self) -> dict[str, object]:
        return {"code": self.code, "detail_en": self.message_en}

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message, "message_en": self.message_en}


class AudioRejected(ContentError):
    """An uploaded or synthesised file that cannot be broadcast as it is."""

    http_status = 422


class ContentNotFound(ContentError):
    http_status = 404

    def __init__(self, content_id: str) -> None:
        super().__init__(
            "content_not_found",
            f"Không tìm thấy nội dung '{content_id}'.",
            f"Content '{content_id}' not found.",
        )
        self.content_id = content_id


class TtsError(ContentError):
    """Text that cannot be spoken, or an engine that cannot speak it."""

    http_status = 422


class ToolMissing(ContentError):
    """A required program (ffmpeg, espeak-ng, piper) is not installed on this machine."""

    http_status = 503
