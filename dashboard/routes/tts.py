"""Text-to-speech API for the officer composing a bulletin.

    POST /api/v1/tts/normalize   {text}                 -> {spoken}
    POST /api/v1/tts/preview     {text, engine, voice}  -> {spoken, audio_url, ...}
    GET  /api/v1/tts/preview/{key}.mp3                  -> the preview audio

The preview answers JSON with an ``audio_url`` rather than audio bytes: on a phone over 3G
the officer sees at once how the machine will read the text (numbers, dates,
abbreviations) and downloads the few tens of KB of audio only when pressing play; audio
inside JSON would need base64 (+33%). The preview is levelled like the real bulletin but
has no chime; it is kept a week."""

from __future__ import annotations

from fastapi import APIRouter, Depends, Header, HTTPException, Path, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import FileResponse

from broadcasts import abbreviations
from broadcasts.bulletins import preview, preview_path
from broadcasts.schemas import (
    AbbreviationIn,
    AbbreviationList,
    AbbreviationOut,
    NormalizeOut,
    PreviewOut,
    TextIn,
)
from broadcasts.store import ContentStore
from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.routes.content import get_store
from dashboard.security import audit, current_user, require_role
from dashboard.validation import typed_post
from loa import idempotency
from loa.timeutil import now_ms

router = APIRouter(prefix="/api/v1/tts", tags=["tts"])


@router.post("/normalize", response_model=NormalizeOut)
def normalize_text(
    body: TextIn, _user: User = Depends(current_user), store: ContentStore = Depends(get_store)
):
    return {"spoken": store.tts.normalize(body.text)}


@router.post("/preview", response_model=PreviewOut)
async def preview_speech(
    body: TextIn, _user: User = Depends(current_user), store: ContentStore = Depends(get_store)
):
    result = await run_in_threadpool(
        preview, store, body.text, engine=body.engine, voice=body.voice
    )
    return {
        "spoken": result.spoken,
        "engine": result.engine,
        "voice": result.voice,
        "fallback_reason": result.fallback_reason,
        "duration_ms": result.duration_ms,
        "audio_url": f"/api/v1/tts/preview/{result.key}{result.path.suffix}",
        "mime": result.mime,
    }


@router.get("/preview/{name}")
def preview_audio(
    name: str, _user: User = Depends(current_user), store: ContentStore = Depends(get_store)
):
    path = preview_path(store, name.split(".", 1)[0])
    if path is None:
        raise HTTPException(404, "Bản nghe thử không còn; hãy bấm nghe thử lại.")
    return FileResponse(
        path,
        media_type="audio/mpeg" if path.suffix == ".mp3" else "audio/ogg",
        headers={"cache-control": "private, max-age=3600"},
    )


# --------------------------------------------------------------------------- abbreviations


@router.get("/abbreviations", response_model=AbbreviationList)
def list_abbreviations(*, _user: User = Depends(current_user), s: DbSession):
    """The province's own abbreviations (over the shipped list)."""
    items = abbreviations.listing(s)
    return {"items": items, "total": len(items)}


@typed_post(router, "/abbreviations", status_code=201, response_model=AbbreviationOut)
def add_abbreviation(
    *,
    request: Request,
    body: AbbreviationIn,
    user: User = Depends(require_role("province")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
):
    """``{"abbr": "BQLDA", "spoken": "ban quản lý dự án"}``; the same written form again
    replaces its reading. Read out from the next preview or bulletin on. ``Idempotency-Key``
    (``loa.idempotency``): a retry answers the first entry and writes nothing again; the
    entry, its audit row and the key are one transaction."""
    key = idempotency.check_key(idempotency_key)
    asked = body.model_dump()
    if key is not None:
        row = idempotency.earlier(s, user.username, key, "tts.abbreviation_add", asked)
        if row is not None:
            return row.response
    out = abbreviations.add(s, body.abbr, body.spoken, user.username)
    audit(
        s,
        "tts.abbreviation_add",
        user=user,
        target=out["abbr"],
        request=request,
        status_code=201,
        detail={"spoken": out["spoken"]},
    )
    if key is not None:
        idempotency.remember(
            s,
            user.username,
            key,
            "tts.abbreviation_add",
            asked,
            resource_id=out["id"],
            response=out,
            now_ms=now_ms(),
        )
    return out


@router.delete("/abbreviations/{entry_id}", status_code=204)
def delete_abbreviation(
    *,
    request: Request,
    entry_id: int = Path(..., ge=1, le=2**63 - 1),
    user: User = Depends(require_role("province")),
    s: DbSession,
):
    if not abbreviations.remove(s, entry_id):
        raise HTTPException(404, "Không tìm thấy từ viết tắt này.")
    audit(
        s,
        "tts.abbreviation_delete",
        user=user,
        target=str(entry_id),
        request=request,
        status_code=204,
    )
    s.commit()
