"""Streaming multipart upload to a temporary file, with the size cap enforced while reading.

Starlette's own form parser spools every file part without a size limit before the route
runs, so a 5 GB "recording" would be written to disk before anyone could refuse it. Here
the request body is fed chunk by chunk to ``python-multipart`` (the parser Starlette itself
uses) and reading stops at the first byte over the limit."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

from python_multipart.exceptions import FormParserError
from python_multipart.multipart import MultipartParser, parse_options_header

from broadcasts.audio import check_filename
from broadcasts.errors import AudioRejected, ContentError

MAX_FIELD_BYTES = 64 * 1024
MAX_FIELDS = 20


@dataclass
class Upload:
    path: Path
    filename: str
    size: int
    fields: dict[str, str] = field(default_factory=dict)


class _Abort(Exception):
    def __init__(self, error: ContentError) -> None:
        super().__init__(error.message)
        self.error = error


def _bad_request(code: str, vi: str, en: str, status: int = 400) -> ContentError:
    return ContentError(code, vi, en, http_status=status)


def too_large(limit: int) -> AudioRejected:
    mb = limit / 1048576
    return AudioRejected(
        "too_large",
        f"Tệp quá lớn; giới hạn là {mb:.0f} MB.",
        f"File too large; the limit is {mb:.0f} MB.",
        http_status=413,
    )


class _Collector:
    """python-multipart callbacks: file part -> temp file (counted), other parts -> fields."""

    def __init__(self, dest_dir: Path, max_file_bytes: int, file_field: str) -> None:
        self.dest_dir = dest_dir
        self.max_file_bytes = max_file_bytes
        self.file_field = file_field
        self.fields: dict[str, str] = {}
        self.upload: Upload | None = None
        self._fh: BinaryIO | None = None
        self._header_name = b""
        self._header_value = b""
        self._disposition = b""
        self._name = ""
        self._is_file = False
        self._buf = bytearray()

    # header callbacks
    def on_part_begin(self) -> None:
        self._disposition, self._name, self._is_file = b"", "", False
        self._buf = bytearray()

    def on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def on_header_end(self) -> None:
        if self._header_name.lower() == b"content-disposition":
            self._disposition = self._header_value
        self._header_name, self._header_value = b"", b""

    def on_headers_finished(self) -> None:
        _, options = parse_options_header(self._disposition)
        self._name = options.get(b"name", b"").decode("utf-8", "replace")
        if b"filename" not in options:
            if len(self.fields) >= MAX_FIELDS:
                raise _Abort(
                    _bad_request(
                        "too_many_fields", "Biểu mẫu có quá nhiều trường.", "Too many form fields."
                    )
                )
            return
        if self._name != self.file_field or self.upload is not None:
            raise _Abort(
                _bad_request(
                    "unexpected_file",
                    f"Chỉ gửi một tệp, trong trường '{self.file_field}'.",
                    f"Send exactly one file, in field '{self.file_field}'.",
                )
            )
        filename = check_filename(options[b"filename"].decode("utf-8", "replace"))
        self._is_file = True
        self.dest_dir.mkdir(parents=True, exist_ok=True)
        path = self.dest_dir / f".upload-{os.getpid()}-{os.urandom(8).hex()}"
        self._fh = path.open("wb")
        self.upload = Upload(path=path, filename=filename, size=0)

    # data callbacks
    def on_part_data(self, data: bytes, start: int, end: int) -> None:
        chunk = data[start:end]
        if self._is_file:
            assert self._fh is not None and self.upload is not None
            self.upload.size += len(chunk)
            if self.upload.size > self.max_file_bytes:
                raise _Abort(too_large(self.max_file_bytes))
            # Small synchronous writes (<= one network chunk) to the page cache: cheaper
            # than a thread hop per chunk.
            self._fh.write(chunk)
        else:
            self._buf += chunk
            if len(self._buf) > MAX_FIELD_BYTES:
                raise _Abort(
                    _bad_request(
                        "field_too_large",
                        f"Trường '{self._name}' quá dài.",
                        f"Field '{self._name}' is too long.",
                        413,
                    )
                )

    def on_part_end(self) -> None:
        if self._is_file:
            if self._fh is not None:
                self._fh.close()
                self._fh = None
        elif self._name:
            self.fields[self._name] = self._buf.decode("utf-8", "replace")

    def close(self) -> None:
        if self._fh is not None:
            self._fh.close()
            self._fh = None

    def callbacks(self) -> dict:
        return {
            name: getattr(self, name)
            for name in (
                "on_part_begin",
                "on_part_data",
                "on_part_end",
                "on_header_field",
                "on_header_value",
                "on_header_end",
                "on_headers_finished",
            )
        }


def _feed(parser: MultipartParser, chunk: bytes | None) -> None:
    try:
        if chunk is None:
            parser.finalize()
        else:
            parser.write(chunk)
    except _Abort as exc:
        raise exc.error from None
    except FormParserError as exc:
        raise _bad_request(
            "bad_multipart", "Dữ liệu tải lên bị lỗi hoặc không đầy đủ.", f"Malformed upload: {exc}"
        ) from exc


async def receive_upload(
    stream: AsyncIterator[bytes],
    content_type: str,
    dest_dir: Path,
    *,
    max_file_bytes: int,
    file_field: str = "file",
) -> Upload:
    """Read a multipart body from ``stream``; the file lands in ``dest_dir`` (the caller
    deletes it). Any refusal removes what was written."""
    ctype, params = parse_options_header(content_type or "")
    if ctype != b"multipart/form-data" or not params.get(b"boundary"):
        raise _bad_request(
            "not_multipart",
            "Hãy gửi tệp bằng biểu mẫu multipart/form-data (trường 'file').",
            "Send the file as multipart/form-data (field 'file').",
            415,
        )
    collector = _Collector(dest_dir, max_file_bytes, file_field)
    parser = MultipartParser(params[b"boundary"], collector.callbacks())
    try:
        # Errors reading the body itself (client gone, body already consumed) propagate
        # as they are; only what the parser or our checks raise is translated.
        async for chunk in stream:
            _feed(parser, chunk)
        _feed(parser, None)
    except BaseException:
        collector.close()
        if collector.upload:
            collector.upload.path.unlink(missing_ok=True)
        raise
    collector.close()
    if collector.upload is None:
        raise _bad_request(
            "missing_file", "Chưa chọn tệp âm thanh (trường 'file').", "No file in field 'file'."
        )
    collector.upload.fields = collector.fields
    return collector.upload
