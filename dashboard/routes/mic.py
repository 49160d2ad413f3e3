"""Live from the phone: the "Phát trực tiếp" page and the microphone feed it posts to.

Thin: the page is a template; the feed calls ``scheduler.mic.MicFeeds`` (one ffmpeg per live
broadcast, fed the browser's chunks, sending to the mount as its source) and the broadcast
service (who may feed which mount; marking a broken stream failed). Chunked POSTs rather
than a WebSocket: each chunk goes through the same session, CSRF, body-limit and rate-limit
checks as every other request, and a weak mobile link retries one small request, not a
socket. The officer never sees a source address or password.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Depends, FastAPI, Query, Request
from fastapi.concurrency import run_in_threadpool
from pydantic import BaseModel

from dashboard.deps import DbSession
from dashboard.models import User
from dashboard.routes.broadcasts import _audited, actor_of, get_service, id_param
from dashboard.routes.ui import _villages_by_commune, page_role, render, scoped_communes
from dashboard.security import audit, current_user
from scheduler.errors import Conflict, Unavailable
from scheduler.mic import MAX_CHUNK_BYTES, MicFeeds
from scheduler.workflow import BroadcastService

router = APIRouter(tags=["live-mic"])


def get_feeds(request: Request) -> MicFeeds:
    """One set of feeds per app, made on first use (it needs the running Icecast)."""
    app = request.app
    feeds = getattr(app.state, "mic_feeds", None)
    if feeds is None:
        ctx = app.state.ctx
        if ctx.live is None or ctx.broadcasts is None:
            raise Unavailable("Máy chủ phát trực tiếp (Icecast) chưa được bật trên hệ thống.")
        feeds = app.state.mic_feeds = MicFeeds(ctx.live, ctx.broadcasts.fail_live)
    return feeds


@router.get("/live")
def live_page(
    *, request: Request, user: User = Depends(page_role("commune", "province")), s: DbSession
):
    """Choose villages, confirm, speak into the phone; see the level and who hears it."""
    communes = scoped_communes(s, user)
    return render(
        request,
        "live.html",
        user,
        communes=communes,
        villages=_villages_by_commune(s, communes),
        page={"view": "live", "role": user.role, "max_chunk": MAX_CHUNK_BYTES},
    )


class ChunkOut(BaseModel):
    received: int  # chunks taken so far


class PlayingOut(BaseModel):
    place: str | None = None
    node_id: str | None = None


class ClusterProgressOut(BaseModel):
    place: str | None = None
    phase: str | None = None
    phase_label: str | None = None
    error: str | None = None


class MicStatusOut(BaseModel):
    broadcast_id: int
    status: str
    status_label: str | None = None
    places: str | None = None
    feed: dict[str, Any]
    listeners: int
    playing: list[PlayingOut]
    outcomes: list[ClusterProgressOut]


class MicStopOut(BaseModel):
    broadcast_id: int
    status: str
    status_label: str | None = None


@router.post("/api/v1/broadcasts/{broadcast_id}/mic", response_model=ChunkOut)
async def mic_chunk(
    request: Request,
    broadcast_id: int = id_param(),
    seq: int = Query(..., ge=0, le=10_000_000),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    """One chunk of the officer's recording (raw bytes, in order from ``seq`` 0)."""
    # Whose broadcast, and is it open, before whether a live server runs: an unknown id is
    # a 404 whatever this process runs.
    try:
        mount = await run_in_threadpool(svc.mic_mount, actor_of(user), broadcast_id)
    except Conflict:  # over on the server (judged, cancelled, failed): end its feed too
        await run_in_threadpool(get_feeds(request).stop, broadcast_id)
        raise
    feeds = get_feeds(request)
    chunk = await request.body()
    received = await run_in_threadpool(feeds.push, broadcast_id, mount, seq, chunk)
    if seq == 0:  # one audit row when the microphone goes on air, not one per chunk
        ctx = request.app.state.ctx

        def write() -> None:
            with ctx.db.session() as s:
                audit(
                    s,
                    "broadcast.live_start",
                    user=user,
                    target=str(broadcast_id),
                    request=request,
                    status_code=200,
                )

        await run_in_threadpool(write)
    else:
        request.state.audited = True
    return {"received": received}


@router.get("/api/v1/broadcasts/{broadcast_id}/mic", response_model=MicStatusOut)
async def mic_status(
    request: Request,
    broadcast_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    """Is the microphone on air, how many clusters listen (Icecast), and each cluster's
    progress by village and place."""
    actor = actor_of(user)
    b = await run_in_threadpool(svc.get, actor, broadcast_id)
    feeds = get_feeds(request)
    live = request.app.state.ctx.live
    listeners = await run_in_threadpool(live.listeners)
    mount = (b.get("stream_url") or "").removeprefix(live.base_url)
    playing = [o for o in b.get("outcomes", []) if o.get("phase") == "started"]
    return {
        "broadcast_id": broadcast_id,
        "status": b["status"],
        "status_label": b.get("status_label"),
        "places": b.get("places"),
        "feed": feeds.status(broadcast_id),
        "listeners": listeners.get(mount, 0),
        "playing": [{"place": o.get("place"), "node_id": o.get("node_id")} for o in playing],
        "outcomes": [
            {
                "place": o.get("place"),
                "phase": o.get("phase"),
                "phase_label": o.get("phase_label"),
                "error": o.get("error"),
            }
            for o in b.get("outcomes", [])
        ],
    }


@router.post("/api/v1/broadcasts/{broadcast_id}/mic/stop", response_model=MicStopOut)
async def mic_stop(
    request: Request,
    broadcast_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    """The big stop button: close the source cleanly, then end the broadcast."""
    actor = actor_of(user)
    await run_in_threadpool(svc.mic_mount, actor, broadcast_id)  # the owner, still open
    await run_in_threadpool(get_feeds(request).stop, broadcast_id)
    # A stop before anything aired cancels the broadcast: the audit row is written in that
    # transaction (``_audited``), not after it in a session of its own.
    out = await run_in_threadpool(
        svc.end_live,
        actor,
        broadcast_id,
        audit=_audited(request, user, "broadcast.live_stop", 200, lambda _o: (broadcast_id, None)),
    )
    return {
        "broadcast_id": broadcast_id,
        "status": out["status"],
        "status_label": out.get("status_label"),
    }


async def stop_feeds(app: FastAPI) -> None:
    """At the app's shutdown: end every microphone feed."""
    feeds = getattr(app.state, "mic_feeds", None)
    if feeds is not None:
        await run_in_threadpool(feeds.close_all)
