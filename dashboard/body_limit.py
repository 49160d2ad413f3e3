"""A request body-size limit for every route, enforced while the body streams in, before
authentication and before any parsing.

Why here and not in the routes: FastAPI reads and parses a JSON body (and Starlette spools a
multipart one to a temporary file) before the route's dependencies run, so a route cannot
refuse a 300 MB body until it has been read, and an anonymous caller's body is read before
``current_user`` says 401. This plain ASGI middleware sits outside everything else:

- a declared ``Content-Length`` over the route's limit is answered 413 without reading a byte;
- a chunked body is counted message by message and answered 413 the moment it passes the
  limit; nothing after that is read (the connection is closed);
- the routes that take large bodies (content upload, registry import) check the caller's
  credentials first: an anonymous or expired caller gets 401 before the body is read;
- any other unsafe API request (POST/PUT/PATCH/DELETE under ``/api/v1/``, except asking for
  a token) that carries no credential at all (no ``Authorization``, no session cookie) gets
  401 before the body is read; one that carries one is checked by the route as before.

Limits per route: ``Settings.max_body_bytes`` (1 MiB: JSON and forms) for everything, the
content store's upload limit for ``POST /api/v1/content`` and the registry's file limit for
``POST /api/v1/registry/import`` (each plus room for the multipart framing)."""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi.concurrency import run_in_threadpool
from starlette.requests import Request

from registry.formats import MAX_FILE_BYTES as REGISTRY_MAX_FILE_BYTES

MULTIPART_OVERHEAD = 256 * 1024  # part headers and small fields around the file
CONTENT_UPLOAD_PATH = "/api/v1/content"
REGISTRY_IMPORT_PATH = "/api/v1/registry/import"
# Inspection records with their scan (web form) and a scan added to an attestation (API).
SCAN_UPLOAD_PATHS = re.compile(
    r"^(/indicator/communes/[^/]+/attestations"
    r"|/api/v1/attestations/\d+/scans)$"
)
UNSAFE_METHODS = frozenset({"POST", "PUT", "PATCH", "DELETE"})
# Unsafe API requests an anonymous caller may make.
PUBLIC_UNSAFE = frozenset({("POST", "/api/v1/auth/token")})

Receive = Callable[[], Awaitable[dict]]
Send = Callable[[dict], Awaitable[None]]


class BodyTooLarge(Exception):
    """Raised into the application when its body passed the limit (the 413 is already
    sent); whatever the application answers afterwards is dropped."""


def _mb(limit: int) -> str:
    return f"{limit / 1048576:.1f}".rstrip("0").rstrip(".")


def too_large_body(limit: int) -> dict[str, Any]:
    return {
        "detail": f"Nội dung gửi lên quá lớn; giới hạn là {_mb(limit)} MB.",
        "detail_en": f"Request body too large; the limit is {_mb(limit)} MB.",
        "code": "too_large",
        "limit_bytes": limit,
    }


def _content_upload_limit(app: Any) -> int:
    """The content store's own cap (a province may change it), plus the multipart framing."""
    return app.state.ctx.content.cfg.max_upload_bytes + MULTIPART_OVERHEAD


def limit_for(app: Any, method: str, path: str) -> tuple[int, bool]:
    """(limit in bytes, whether the caller must be logged in before the body is read)."""
    if method == "POST" and SCAN_UPLOAD_PATHS.match(path.rstrip("/")):
        from indicator.scans import MAX_SCAN_BYTES  # issue 16: inspection scans

        return MAX_SCAN_BYTES + MULTIPART_OVERHEAD, True
    if method == "POST" and path.rstrip("/") == CONTENT_UPLOAD_PATH:
        return _content_upload_limit(app), True
    if method == "POST" and path.rstrip("/") == REGISTRY_IMPORT_PATH:
        return REGISTRY_MAX_FILE_BYTES + MULTIPART_OVERHEAD, True
    return app.state.ctx.settings.max_body_bytes, False


def _carries_credentials(scope: dict) -> bool:
    """An ``Authorization`` header or a session cookie, valid or not (no database)."""
    from dashboard.security import SESSION_COOKIE

    request = Request(scope)
    return bool(request.headers.get("authorization")) or SESSION_COOKIE in request.cookies


def _anonymous_api_write(scope: dict) -> bool:
    method, path = scope["method"], scope["path"].rstrip("/")
    return (
        method in UNSAFE_METHODS
        and path.startswith("/api/v1/")
        and (method, path) not in PUBLIC_UNSAFE
        and not _carries_credentials(scope)
    )


def _logged_in(app: Any, scope: dict) -> bool:
    """Whether the request carries a valid session or API token (no body is read)."""
    from dashboard.security import _authenticate_request

    request = Request(scope)
    with app.state.ctx.db.session() as s:
        return _authenticate_request(request, s) is not None


async def _answer(
    send: Send, status: int, body: dict[str, Any], headers: list[tuple[bytes, bytes]] = ()
) -> None:
    import json

    data = json.dumps(body, ensure_ascii=False).encode()
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(data)).encode()),
                (b"connection", b"close"),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": data})


class BodyLimitMiddleware:
    """See the module docstring. Inside the audit middleware (which records its refusals),
    outside everything that reads a body."""

    def __init__(self, app: Any) -> None:
        self.app = app

    async def __call__(self, scope: dict, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        limit, needs_login = limit_for(scope["app"], scope["method"], scope["path"])
        declared = _declared_length(scope)
        if declared is not None and declared > limit:
            await _answer(send, 413, too_large_body(limit))
            return
        if _anonymous_api_write(scope) or (
            needs_login and not await run_in_threadpool(_logged_in, scope["app"], scope)
        ):
            from dashboard.security import MSG_NOT_LOGGED_IN

            await _answer(
                send, 401, {"detail": MSG_NOT_LOGGED_IN}, [(b"www-authenticate", b"Bearer")]
            )
            return
        received = 0
        started = refused = False

        async def limited_receive() -> dict:
            nonlocal received, refused
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > limit:
                    if not started:
                        refused = True
                        await _answer(send, 413, too_large_body(limit))
                    raise BodyTooLarge(limit)
            return message

        async def guarded_send(message: dict) -> None:
            nonlocal started
            if refused:
                return  # the 413 has been sent; the application's own answer is dropped
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, limited_receive, guarded_send)
        except Exception:
            if not refused:
                raise


def _declared_length(scope: dict) -> int | None:
    for name, value in scope.get("headers") or ():
        if name == b"content-length":
            text = value.decode("latin-1").strip()
            return int(text) if text.isdecimal() else None
    return None
