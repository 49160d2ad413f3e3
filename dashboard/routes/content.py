"""Content API: upload recordings, make TTS bulletins, list and read them; and the
node-facing download route.

    POST /api/v1/content            multipart: file, title, language[, chime=0]   -> 201
    POST /api/v1/content/tts        JSON {text, title, language, engine, voice}   -> 201
    GET  /api/v1/content            ?offset&limit&language&source&q -> {items, total, ...}
    GET  /api/v1/content/{id}       metadata
    GET  /api/v1/content/{id}/audio the processed audio, for a logged-in user's player
    GET  /media/{id}[.mp3]?node=&token=   what a node downloads (Range, ETag)

Refusals from the content package (``ContentError``) are answered by one handler: its HTTP
status, ``detail`` in Vietnamese, ``code`` for programs, ``detail_en``."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from starlette.datastructures import FormData

from broadcasts.audio import check_filename
from broadcasts.bulletins import synthesize_bulletin
from broadcasts.errors import ContentError, ContentNotFound
from broadcasts.models import CONTENT_LANGUAGES, CONTENT_SOURCES
from broadcasts.schemas import ContentOut, ContentPage, TtsContentIn
from broadcasts.store import ContentStore
from broadcasts.tokens import CONTENT_ID_LENGTH
from broadcasts.upload import Upload, receive_upload, too_large
from dashboard.context import AppContext
from dashboard.deps import DbSession, get_ctx
from dashboard.models import User
from dashboard.security import current_user
from registry.models import Node

router = APIRouter(tags=["content"])

_MULTIPART_OVERHEAD = 256 * 1024  # headers and small fields around the file


def get_store(ctx: AppContext = Depends(get_ctx)) -> ContentStore:
    """One store per process (it caches the TTS service and its normaliser)."""
    return ctx.content


def reject_oversized(request: Request, store: ContentStore = Depends(get_store)) -> None:
    """Refuse by Content-Length before reading a byte (and before authentication parses
    anything), when the client says how big the body is."""
    declared = request.headers.get("content-length")
    if declared and declared.isdecimal() and \
            int(declared) > store.cfg.max_upload_bytes + _MULTIPART_OVERHEAD:
        raise too_large(store.cfg.max_upload_bytes)


def owner_for(user: User, requested: str | int | None) -> int | None:
    """The commune a new item belongs to: the one asked for (it must be the user's), else the
    user's first commune; None (the province's, shared down) for staff of the whole
    province."""
    scope = user.scope_commune_ids()
    if requested not in (None, ""):
        text = str(requested).strip()
        if not text.isdecimal() or int(text) > 2**31 - 1:
            raise ContentError("bad_commune", "Mã xã không hợp lệ.", "Invalid commune id.")
        if not user.can_access_commune(int(text)):
            raise HTTPException(403, "Không có quyền")
        return int(text)
    if scope is None:
        return None
    if not scope:
        raise HTTPException(403, "Không có quyền")
    return min(scope)


def _visible(store: ContentStore, content_id: str, user: User) -> None:
    """Another commune's item is answered as not found, like one that does not exist."""
    if not store.get(content_id).visible_to(user.scope_commune_ids()):
        raise ContentNotFound(content_id)


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() not in {"0", "false", "no", "off", "không"}


async def _read_upload(request: Request, store: ContentStore) -> Upload:
    try:
        return await receive_upload(request.stream(), request.headers.get("content-type", ""),
                                    store.tmp_dir, max_file_bytes=store.cfg.max_upload_bytes)
    except RuntimeError:
        # The body was already parsed as a form (a browser session without the CSRF
        # header makes the auth layer read the form). Use that copy, with the same checks.
        form = await request.form()
        return await _upload_from_form(form, store)


async def _upload_from_form(form: FormData, store: ContentStore) -> Upload:
    item = form.get("file")
    if item is None or isinstance(item, str):
        raise ContentError("missing_file", "Chưa chọn tệp âm thanh (trường 'file').",
                           "No file in field 'file'.")
    filename = check_filename(item.filename or "")
    store.tmp_dir.mkdir(parents=True, exist_ok=True)
    path = store.tmp_dir / f".upload-{os.getpid()}-{os.urandom(8).hex()}"
    size = 0
    with path.open("wb") as fh:
        while block := await item.read(1 << 20):
            size += len(block)
            if size > store.cfg.max_upload_bytes:
                fh.close()
                path.unlink(missing_ok=True)
                raise too_large(store.cfg.max_upload_bytes)
            await run_in_threadpool(fh.write, block)  # a disk write: not on the loop
    fields = {k: v for k, v in form.items() if isinstance(v, str)}
    return Upload(path=path, filename=filename, size=size, fields=fields)


@router.post("/api/v1/content", status_code=201, response_model=ContentOut,
             dependencies=[Depends(reject_oversized)])
async def upload_content(request: Request, user: User = Depends(current_user),
                         store: ContentStore = Depends(get_store)):
    upload = await _read_upload(request, store)
    try:
        fields = upload.fields
        title = fields.get("title") or upload.filename.rsplit(".", 1)[0]
        owner = owner_for(user, fields.get("commune_id"))
        source = "province" if user.role == "province" else "upload"
        meta = await run_in_threadpool(
            store.add_file, upload.path, filename=upload.filename, title=title,
            language=fields.get("language") or "vi", source=source, creator=user.username,
            chime=_flag(fields.get("chime")), owner_commune_id=owner)
    finally:
        upload.path.unlink(missing_ok=True)
    return ContentOut.of(await run_in_threadpool(store.details, meta.id),
                         user.scope_commune_ids())


@router.post("/api/v1/content/tts", status_code=201, response_model=ContentOut)
async def create_tts_content(body: TtsContentIn, user: User = Depends(current_user),
                             store: ContentStore = Depends(get_store)):
    owner = owner_for(user, body.commune_id)
    meta = await run_in_threadpool(synthesize_bulletin, store, body.text, title=body.title,
                                   language=body.language, engine=body.engine,
                                   voice=body.voice, creator=user.username,
                                   owner_commune_id=owner)
    return ContentOut.of(await run_in_threadpool(store.details, meta.id),
                         user.scope_commune_ids())


@router.get("/api/v1/content", response_model=ContentPage)
def list_content(
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    language: str | None = Query(None, pattern="^(" + "|".join(CONTENT_LANGUAGES) + ")$"),
    source: str | None = Query(None, pattern="^(" + "|".join(CONTENT_SOURCES) + ")$"),
    q: str | None = Query(None, max_length=100, description="tìm theo tiêu đề, không dấu"),
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
):
    scope = user.scope_commune_ids()
    items, total = store.list(offset=offset, limit=limit, language=language, source=source, q=q,
                              scope=scope)
    return {"items": [ContentOut.of(d, scope) for d in items], "total": total, "limit": limit,
            "offset": offset}


@router.get("/api/v1/content/{content_id}", response_model=ContentOut)
def get_content(content_id: str, user: User = Depends(current_user),
                store: ContentStore = Depends(get_store)):
    _visible(store, content_id, user)
    return ContentOut.of(store.details(content_id), user.scope_commune_ids())


def _audio_response(request: Request, store: ContentStore, content_id: str,
                    cache: str) -> Response:
    meta = store.get(content_id)
    path = store.path(content_id)
    etag = f'"{meta.sha256}"'
    headers = {"etag": etag, "cache-control": cache, "x-content-sha256": meta.sha256}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    # Starlette's FileResponse answers Range (206, multipart ranges, 416) and HEAD itself.
    return FileResponse(path, media_type=meta.mime, headers=headers)


@router.get("/api/v1/content/{content_id}/audio")
def content_audio(content_id: str, request: Request, user: User = Depends(current_user),
                  store: ContentStore = Depends(get_store)):
    _visible(store, content_id, user)
    return _audio_response(request, store, content_id, "private, max-age=3600")


@router.api_route("/media/{name}", methods=["GET", "HEAD"], include_in_schema=True,
                  summary="Node download (Range, ETag); needs ?node=&token=")
def node_media(*, name: str, request: Request, node: str | None = Query(None, max_length=64),
               token: str | None = Query(None, max_length=128),
               s: DbSession, store: ContentStore = Depends(get_store)):
    content_id = name[:CONTENT_ID_LENGTH] if "." in name else name
    if not node or not token:
        raise HTTPException(401, "Thiếu mã truy cập của cụm loa (tham số node và token).",
                            headers={"WWW-Authenticate": 'Token realm="loa-media"'})
    row = s.get(Node, node)
    verdict = store.token_status(content_id, node, token)
    # One answer for an unknown node and a wrong token: node ids are not enumerable.
    if row is None or row.retired_ms is not None or verdict == "bad":
        raise HTTPException(403, "Mã truy cập không hợp lệ cho cụm loa và nội dung này.")
    if verdict == "expired":
        raise HTTPException(403, "Mã truy cập đã hết hạn; cụm loa sẽ nhận địa chỉ mới ở lệnh "
                                 "phát sau.")
    try:
        # Content is immutable under its id: nodes may cache it for good.
        return _audio_response(request, store, content_id, "private, max-age=31536000, "
                               "immutable")
    except ContentNotFound:
        raise HTTPException(404, f"Không tìm thấy nội dung '{content_id}'.") from None
