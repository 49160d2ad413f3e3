"""Content API: upload recordings, make TTS bulletins, list and read them; and the
node-facing download route.

    POST /api/v1/content            multipart: file, title, language[, chime=0]   -> 201
    POST /api/v1/content/tts        JSON {text, title, language, engine, voice}   -> 201
    GET  /api/v1/content            ?offset&limit&language&source&q&shared -> the library
    GET  /api/v1/content/{id}       metadata
    PATCH  /api/v1/content/{id}     JSON {title}: rename (the library)
    DELETE /api/v1/content/{id}     delete when no bulletin still in play uses it (else 409)
    GET  /api/v1/content/{id}/audio the processed audio, for a logged-in user's player
    GET  /media/{id}[.mp3]?node=&token=   what a node downloads (Range, ETag)

Refusals from the content package (``ContentError``) are answered by one handler: its HTTP
status, ``detail`` in Vietnamese, ``code`` for programs, ``detail_en``.

The library (issue 18): a commune officer sees their communes' items and the province's
(shared down), and renames or deletes only their communes'; the province's are managed by
province staff. Technicians read and play, never change. Every answer carries ``owner`` (the
commune's name or "Thư viện của tỉnh"), ``in_use`` (bulletins still in play that use it) and
``can_manage`` so the page shows only the buttons that will work."""

from __future__ import annotations

import os

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse, Response
from pydantic import BaseModel, Field
from sqlalchemy import select
from sqlalchemy.orm import Session
from starlette.datastructures import FormData

from broadcasts.audio import check_filename
from broadcasts.bulletins import synthesize_bulletin
from broadcasts.errors import ContentError, ContentNotFound
from broadcasts.models import CONTENT_LANGUAGES, CONTENT_SOURCES
from broadcasts.schemas import ContentOut, TtsContentIn
from broadcasts.store import ContentDetails, ContentMeta, ContentStore
from broadcasts.tokens import CONTENT_ID_LENGTH
from broadcasts.upload import Upload, receive_upload, too_large
from dashboard.context import AppContext
from dashboard.deps import DbSession, get_ctx
from dashboard.models import User
from dashboard.security import audit, current_user
from registry.models import Commune, Node
from scheduler.workflow import content_use_counts, content_users

router = APIRouter(tags=["content"])

_MULTIPART_OVERHEAD = 256 * 1024  # headers and small fields around the file
PROVINCE_LIBRARY_VI = "Thư viện của tỉnh"
_AUDIO_RESPONSES: dict[int | str, dict] = {
    200: {"content": {"audio/mpeg": {}, "audio/ogg": {}}, "description": "the audio"},
    206: {"description": "a Range of the audio"},
    304: {"description": "not modified"},
}


class LibraryItemOut(ContentOut):
    """One library item as the viewer sees it."""

    owner: str = Field(description="the owning commune's name, or «Thư viện của tỉnh»")
    in_use: int = Field(0, description="bulletins still in play that use it (not deletable)")
    can_manage: bool = Field(False, description="whether the viewer may rename or delete it")


class LibraryPage(BaseModel):
    items: list[LibraryItemOut]
    total: int
    limit: int
    offset: int


class RenameIn(BaseModel):
    title: str = Field(min_length=1, max_length=300)


class DeletedOut(BaseModel):
    id: str
    title: str
    deleted: bool = True


def get_store(ctx: AppContext = Depends(get_ctx)) -> ContentStore:
    """One store per process (it caches the TTS service and its normaliser)."""
    return ctx.content


def reject_oversized(request: Request, store: ContentStore = Depends(get_store)) -> None:
    """Refuse by Content-Length before reading a byte (and before authentication parses
    anything), when the client says how big the body is."""
    declared = request.headers.get("content-length")
    if (
        declared
        and declared.isdecimal()
        and int(declared) > store.cfg.max_upload_bytes + _MULTIPART_OVERHEAD
    ):
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


def may_manage(user: User, meta: ContentMeta) -> bool:
    """Who may rename or delete an item: province staff for the province's library, an
    officer of the owning commune (or province staff) for a commune's; technicians never."""
    if user.role == "technician":
        return False
    if meta.owner_commune_id is None:
        return user.role == "province"
    return user.can_access_commune(meta.owner_commune_id)


def _managed(store: ContentStore, content_id: str, user: User) -> ContentMeta:
    """The item, when the user may change it: another commune's is not found (404), the
    province's read-only for a commune officer (403, with why)."""
    meta = store.get(content_id)
    if not meta.visible_to(user.scope_commune_ids()):
        raise ContentNotFound(content_id)
    if not may_manage(user, meta):
        if meta.owner_commune_id is None:
            raise ContentError(
                "province_library",
                "Âm thanh này thuộc thư viện của tỉnh: chỉ cán bộ tỉnh được đổi "
                "tên hoặc xóa. Xã vẫn dùng được để phát.",
                "This item belongs to the province library: only province "
                "staff may rename or delete it.",
                http_status=403,
            )
        raise ContentError(
            "not_allowed",
            "Bạn không có quyền sửa hoặc xóa âm thanh này.",
            "You may not change this item.",
            http_status=403,
        )
    return meta


def library_items(s: Session, user: User, details: list[ContentDetails]) -> list[LibraryItemOut]:
    """``ContentOut`` plus who owns each item, whether bulletins still use it and whether
    this user may change it."""
    scope = user.scope_commune_ids()
    ids = [d.meta.id for d in details]
    uses = content_use_counts(s, ids)
    owners = {d.meta.owner_commune_id for d in details} - {None}
    names = (
        dict(
            s.execute(select(Commune.id, Commune.name).where(Commune.id.in_(sorted(owners)))).all()
        )
        if owners
        else {}
    )
    out = []
    for d in details:
        base = ContentOut.of(d, scope).model_dump()
        owner_id = d.meta.owner_commune_id
        out.append(
            LibraryItemOut(
                **base,
                owner=PROVINCE_LIBRARY_VI
                if owner_id is None
                else names.get(owner_id, f"Xã {owner_id}"),
                in_use=uses.get(d.meta.id, 0),
                can_manage=may_manage(user, d.meta),
            )
        )
    return out


def _flag(value: str | None) -> bool | None:
    if value is None or value == "":
        return None
    return value.strip().lower() not in {"0", "false", "no", "off", "không"}


async def _read_upload(request: Request, store: ContentStore) -> Upload:
    try:
        return await receive_upload(
            request.stream(),
            request.headers.get("content-type", ""),
            store.tmp_dir,
            max_file_bytes=store.cfg.max_upload_bytes,
        )
    except RuntimeError:
        # The body was already parsed as a form (a browser session without the CSRF
        # header makes the auth layer read the form). Use that copy, with the same checks.
        form = await request.form()
        return await _upload_from_form(form, store)


async def _upload_from_form(form: FormData, store: ContentStore) -> Upload:
    item = form.get("file")
    if item is None or isinstance(item, str):
        raise ContentError(
            "missing_file", "Chưa chọn tệp âm thanh (trường 'file').", "No file in field 'file'."
        )
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


@router.post(
    "/api/v1/content",
    status_code=201,
    response_model=ContentOut,
    dependencies=[Depends(reject_oversized)],
)
async def upload_content(
    request: Request, user: User = Depends(current_user), store: ContentStore = Depends(get_store)
) -> ContentOut:
    upload = await _read_upload(request, store)
    try:
        fields = upload.fields
        title = fields.get("title") or upload.filename.rsplit(".", 1)[0]
        owner = owner_for(user, fields.get("commune_id"))
        source = "province" if user.role == "province" else "upload"
        meta = await run_in_threadpool(
            store.add_file,
            upload.path,
            filename=upload.filename,
            title=title,
            language=fields.get("language") or "vi",
            source=source,
            creator=user.username,
            chime=_flag(fields.get("chime")),
            owner_commune_id=owner,
        )
    finally:
        upload.path.unlink(missing_ok=True)
    return ContentOut.of(await run_in_threadpool(store.details, meta.id), user.scope_commune_ids())


@router.post("/api/v1/content/tts", status_code=201, response_model=ContentOut)
async def create_tts_content(
    body: TtsContentIn, user: User = Depends(current_user), store: ContentStore = Depends(get_store)
) -> ContentOut:
    owner = owner_for(user, body.commune_id)
    meta = await run_in_threadpool(
        synthesize_bulletin,
        store,
        body.text,
        title=body.title,
        language=body.language,
        engine=body.engine,
        voice=body.voice,
        creator=user.username,
        owner_commune_id=owner,
    )
    return ContentOut.of(await run_in_threadpool(store.details, meta.id), user.scope_commune_ids())


@router.get("/api/v1/content", response_model=LibraryPage)
def list_content(
    s: DbSession,
    offset: int = Query(0, ge=0),
    limit: int = Query(50, ge=1, le=500),
    language: str | None = Query(None, pattern="^(" + "|".join(CONTENT_LANGUAGES) + ")$"),
    source: str | None = Query(None, pattern="^(" + "|".join(CONTENT_SOURCES) + ")$"),
    q: str | None = Query(None, max_length=100, description="tìm theo tiêu đề, không dấu"),
    shared: bool | None = Query(
        None, description="true: only the province library; false: only the communes' own"
    ),
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
) -> LibraryPage:
    scope = user.scope_commune_ids()
    items, total = store.list(
        offset=offset,
        limit=limit,
        language=language,
        source=source,
        q=q,
        scope=scope,
        shared=shared,
    )
    return LibraryPage(items=library_items(s, user, items), total=total, limit=limit, offset=offset)


@router.get("/api/v1/content/{content_id}", response_model=LibraryItemOut)
def get_content(
    content_id: str,
    s: DbSession,
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
) -> LibraryItemOut:
    _visible(store, content_id, user)
    return library_items(s, user, [store.details(content_id)])[0]


@router.patch("/api/v1/content/{content_id}", response_model=LibraryItemOut)
def rename_content(
    content_id: str,
    body: RenameIn,
    request: Request,
    s: DbSession,
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
) -> LibraryItemOut:
    before = _managed(store, content_id, user)
    meta = store.rename(content_id, body.title)
    audit(
        s,
        "content.rename",
        user=user,
        target=content_id,
        request=request,
        detail={"from": before.title, "to": meta.title},
    )
    return library_items(s, user, [store.details(content_id)])[0]


@router.delete(
    "/api/v1/content/{content_id}",
    response_model=DeletedOut,
    responses={409: {"description": "bulletins still in play use it; detail names them"}},
)
def delete_content(
    content_id: str,
    request: Request,
    s: DbSession,
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
) -> DeletedOut:
    _managed(store, content_id, user)
    meta = store.delete(content_id, users_of=content_users)
    audit(
        s,
        "content.delete",
        user=user,
        target=content_id,
        request=request,
        detail={"title": meta.title},
    )
    return DeletedOut(id=meta.id, title=meta.title)


def _audio_response(request: Request, store: ContentStore, content_id: str, cache: str) -> Response:
    meta, path = store.file(content_id)
    etag = f'"{meta.sha256}"'
    headers = {"etag": etag, "cache-control": cache, "x-content-sha256": meta.sha256}
    if etag in [t.strip() for t in request.headers.get("if-none-match", "").split(",")]:
        return Response(status_code=304, headers=headers)
    # Starlette's FileResponse answers Range (206, multipart ranges, 416) and HEAD itself.
    return FileResponse(path, media_type=meta.mime, headers=headers)


@router.get(
    "/api/v1/content/{content_id}/audio", response_class=FileResponse, responses=_AUDIO_RESPONSES
)
def content_audio(
    content_id: str,
    request: Request,
    user: User = Depends(current_user),
    store: ContentStore = Depends(get_store),
) -> Response:
    _visible(store, content_id, user)
    return _audio_response(request, store, content_id, "private, max-age=3600")


@router.get(
    "/media/{name}",
    summary="Node download (Range, ETag); needs ?node=&token=",
    response_class=FileResponse,
    responses=_AUDIO_RESPONSES,
)
def node_media(
    *,
    name: str,
    request: Request,
    node: str | None = Query(None, max_length=64),
    token: str | None = Query(None, max_length=128),
    s: DbSession,
    store: ContentStore = Depends(get_store),
) -> Response:
    content_id = name[:CONTENT_ID_LENGTH] if "." in name else name
    if not node or not token:
        raise HTTPException(
            401,
            "Thiếu mã truy cập của cụm loa (tham số node và token).",
            headers={"WWW-Authenticate": 'Token realm="loa-media"'},
        )
    row = s.get(Node, node)
    verdict = store.token_status(content_id, node, token)
    # One answer for an unknown node and a wrong token: node ids are not enumerable.
    if row is None or row.retired_ms is not None or verdict == "bad":
        raise HTTPException(403, "Mã truy cập không hợp lệ cho cụm loa và nội dung này.")
    if verdict == "expired":
        raise HTTPException(
            403, "Mã truy cập đã hết hạn; cụm loa sẽ nhận địa chỉ mới ở lệnh phát sau."
        )
    try:
        # Content is immutable under its id: nodes may cache it for good.
        return _audio_response(request, store, content_id, "private, max-age=31536000, immutable")
    except ContentNotFound:
        raise HTTPException(404, f"Không tìm thấy nội dung '{content_id}'.") from None


# HEAD (a node checking size and ETag before a Range resume) is the same route; listed once in
# OpenAPI, under GET, so the two methods do not share one operation id.
router.add_api_route("/media/{name}", node_media, methods=["HEAD"], include_in_schema=False)
