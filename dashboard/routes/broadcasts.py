"""Broadcasts API: compose, approve, schedule, cancel; commune inbox; calendar; proof of play;
node commands (volume, self-test, stop); saved target groups.

Routes are thin: they turn the logged-in user into a scheduling ``Actor``, call
``scheduler.workflow.BroadcastService`` and map its Vietnamese domain errors to 4xx. When the
API runs beside the controller (demo, one-machine install), ``setup`` starts the dispatcher,
the APScheduler runtime and the Icecast live server with the app.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from datetime import datetime, timedelta
from typing import Any

from fastapi import (
    APIRouter,
    Depends,
    Header,
    HTTPException,
    Path,
    Query,
    Request,
)
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy.orm import Session

from dashboard.context import AppContext
from dashboard.deps import DbSession, get_ctx
from dashboard.models import User
from dashboard.security import audit, current_user, require_role
from dashboard.validation import typed_post
from loa import idempotency
from loa.timeutil import ICT, now_ms
from scheduler.recurrence import parse_instant, parse_local_date
from scheduler.schemas import (
    BroadcastEditIn,
    BroadcastHistory,
    BroadcastIn,
    BroadcastOut,
    BroadcastPage,
    CalendarOut,
    CheckOut,
    GroupIn,
    GroupList,
    GroupOut,
    InboxDismissed,
    InboxPage,
    InboxScheduleIn,
    LiveServerOut,
    NodeCommandOut,
    RecurrenceEndIn,
    SkipIn,
    StopIn,
    VolumeIn,
)
from scheduler.targets import Actor, check_node_access
from scheduler.workflow import BroadcastService, InTransaction

log = logging.getLogger("loa.api.broadcasts")

router = APIRouter(prefix="/api/v1", tags=["broadcasts"])

MAX_ID = 2**63 - 1


def id_param() -> Any:
    """A positive database id in the path (a fresh object each time: FastAPI binds a
    parameter object to the first name it is used for)."""
    return Path(..., ge=1, le=MAX_ID)


def actor_of(user: User) -> Actor:
    return Actor(role=user.role, commune_ids=user.scope_commune_ids(), username=user.username)


def get_service(ctx: AppContext = Depends(get_ctx)) -> BroadcastService:
    """The in-process service (with the running scheduler) or, when the API runs on its own,
    one that only writes rows for the scheduler process to pick up (``system.root``)."""
    return ctx.broadcasts


async def _call(fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """Run a blocking domain call in the thread pool; its domain errors reach the one
    ``DomainError`` handler (``dashboard.app``) as 4xx."""
    return await run_in_threadpool(fn, *args, **kwargs)


def _audited(
    request: Request,
    user: User,
    action: str,
    status: int,
    what: Callable[[dict[str, Any]], tuple[Any, dict | None]],
) -> InTransaction:
    """The audit row of a use case, written by the service inside the use case's own
    transaction (``scheduler.workflow.InTransaction``): the change and its record commit
    together, so a failed audit stores nothing and a retry creates exactly one. ``what``
    gives the row's target and detail from the answer."""

    def write(s: Session, out: dict[str, Any]) -> None:
        target, detail = what(out)
        audit(
            s,
            action,
            user=user,
            target=str(target),
            request=request,
            status_code=status,
            detail=detail,
        )

    return write


# --------------------------------------------------------------------------- broadcasts


@typed_post(router, "/broadcasts", status_code=201, response_model=BroadcastOut)
async def create_broadcast(
    request: Request,
    body: BroadcastIn,
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
    idempotency_key: str | None = Header(None, max_length=80),
):
    """Create a bulletin. An ``Idempotency-Key`` header makes a repeat of the same request
    (double click, retry after a dropped answer) return the first bulletin with 200."""
    payload = body.model_dump(exclude_unset=True)
    out = await _call(
        svc.create,
        actor_of(user),
        payload,
        client_key=idempotency_key,
        audit=_audited(
            request,
            user,
            "broadcast.create",
            201,
            lambda o: (
                o["id"],
                {"priority": o["priority"], "status": o["status"], "places": o["places"]},
            ),
        ),
    )
    if out.get("replayed"):
        return JSONResponse(out, status_code=200)
    return out


@typed_post(router, "/broadcasts/check", response_model=CheckOut)
async def check_broadcast(
    body: BroadcastIn,
    user: User = Depends(current_user),
    replaces: int | None = Query(None, ge=1, le=MAX_ID),
    svc: BroadcastService = Depends(get_service),
):
    """The summary an officer confirms before sending: where (villages by name, clusters,
    how many offline now), when, how long, priority, language. Writes nothing."""
    return await _call(
        svc.check, actor_of(user), body.model_dump(exclude_unset=True), replaces=replaces
    )


@typed_post(router, "/broadcasts/{broadcast_id}/edit", status_code=201, response_model=BroadcastOut)
async def edit_broadcast(
    request: Request,
    body: BroadcastEditIn,
    broadcast_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
    idempotency_key: str | None = Header(None, max_length=80),
):
    """A new version with the changes; the old one is cancelled and kept as history."""
    out = await _call(
        svc.edit,
        actor_of(user),
        broadcast_id,
        body.model_dump(exclude_unset=True),
        client_key=idempotency_key,
        audit=_audited(
            request, user, "broadcast.edit", 201, lambda o: (broadcast_id, {"new_id": o["id"]})
        ),
    )
    if out.get("replayed"):  # as for create: the first answer again, nothing new made
        return JSONResponse(out, status_code=200)
    return out


@router.get("/broadcasts/{broadcast_id}/history", response_model=BroadcastHistory)
async def broadcast_history(
    broadcast_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    items = await _call(svc.history, actor_of(user), broadcast_id)
    return {"items": items, "total": len(items)}


def _with_body(name: str, model: type[SkipIn] | type[RecurrenceEndIn]):
    async def route(
        request: Request,
        body: BaseModel,
        broadcast_id: int = id_param(),
        user: User = Depends(current_user),
        svc: BroadcastService = Depends(get_service),
    ):
        payload = detail = body.model_dump(exclude_unset=True)
        return await _call(
            getattr(svc, name),
            actor_of(user),
            broadcast_id,
            payload,
            audit=_audited(
                request, user, f"broadcast.{name}", 200, lambda _o: (broadcast_id, detail)
            ),
        )

    route.__name__ = f"{name}_broadcast"
    route.__annotations__["body"] = model  # the real body model (FastAPI reads this)
    return route


typed_post(router, "/broadcasts/{broadcast_id}/skip", response_model=BroadcastOut)(
    _with_body("skip", SkipIn)
)
typed_post(router, "/broadcasts/{broadcast_id}/recurrence", response_model=BroadcastOut)(
    _with_body("set_recurrence", RecurrenceEndIn)
)


@router.get("/broadcasts", response_model=BroadcastPage)
async def list_broadcasts(
    status: str | None = Query(None, max_length=16),
    limit: int = Query(50, ge=1, le=500),
    offset: int = Query(0, ge=0, le=10**9),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    return await _call(svc.list, actor_of(user), status=status, limit=limit, offset=offset)


@router.get("/broadcasts/{broadcast_id}", response_model=BroadcastOut)
async def get_broadcast(
    broadcast_id: int = id_param(),
    airing_id: int | None = Query(None, ge=1, le=MAX_ID),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    return await _call(svc.get, actor_of(user), broadcast_id, airing_id)


def _transition(name: str):
    async def route(
        request: Request,
        broadcast_id: int = id_param(),
        user: User = Depends(current_user),
        svc: BroadcastService = Depends(get_service),
    ):
        return await _call(
            getattr(svc, name),
            actor_of(user),
            broadcast_id,
            audit=_audited(
                request,
                user,
                f"broadcast.{name}",
                200,
                lambda o: (broadcast_id, {"status": o["status"]}),
            ),
        )

    route.__name__ = f"{name}_broadcast"
    return route


router.post("/broadcasts/{broadcast_id}/submit", response_model=BroadcastOut)(_transition("submit"))
router.post("/broadcasts/{broadcast_id}/approve", response_model=BroadcastOut)(
    _transition("approve")
)
router.post("/broadcasts/{broadcast_id}/cancel", response_model=BroadcastOut)(_transition("cancel"))
router.post("/broadcasts/{broadcast_id}/pause", response_model=BroadcastOut)(_transition("pause"))
router.post("/broadcasts/{broadcast_id}/resume", response_model=BroadcastOut)(_transition("resume"))


# --------------------------------------------------------------------------- inbox


@router.get("/inbox", response_model=InboxPage)
async def inbox(
    state: str | None = Query("new", max_length=12),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    items = await _call(svc.inbox, actor_of(user), state or None)
    return {"items": items, "total": len(items)}


@typed_post(router, "/inbox/{item_id}/schedule", status_code=201, response_model=BroadcastOut)
async def schedule_inbox_item(
    request: Request,
    item_id: int = id_param(),
    body: InboxScheduleIn | None = None,
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
    idempotency_key: str | None = Header(None, max_length=80),
):
    """The commune takes a province bulletin; ``Idempotency-Key`` as for ``POST
    /broadcasts`` (a retry answers the first broadcast with 200)."""
    payload = body.model_dump(exclude_unset=True) if body is not None else None
    out = await _call(
        svc.schedule_from_inbox,
        actor_of(user),
        item_id,
        payload,
        client_key=idempotency_key,
        audit=_audited(
            request, user, "inbox.schedule", 201, lambda o: (item_id, {"broadcast_id": o["id"]})
        ),
    )
    if out.get("replayed"):
        return JSONResponse(out, status_code=200)
    return out


@router.post("/inbox/{item_id}/dismiss", response_model=InboxDismissed)
async def dismiss_inbox_item(
    item_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    return await _call(svc.dismiss_inbox, actor_of(user), item_id)


# --------------------------------------------------------------------------- calendar


def _bound(value: str | None, default_ms: int, *, end: bool) -> int:
    if not value:
        return default_ms
    text = value.strip()
    if len(text) == 10:  # a date: the whole local day
        d = parse_local_date(text)
        if end:
            d += timedelta(days=1)
        return int(datetime(d.year, d.month, d.day, tzinfo=ICT).timestamp() * 1000)
    return parse_instant(text)


@router.get("/schedule", response_model=CalendarOut)
async def schedule(
    from_: str | None = Query(None, alias="from", description="ISO date/time or dd/mm/yyyy"),
    to: str | None = Query(None, description="ISO date/time or dd/mm/yyyy"),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    today = datetime.now(ICT).replace(hour=0, minute=0, second=0, microsecond=0)
    start = _bound(from_, int(today.timestamp() * 1000), end=False)
    stop = _bound(to, int((today + timedelta(days=7)).timestamp() * 1000), end=True)
    items = await _call(svc.occurrences, actor_of(user), start, stop)
    return {
        "from": datetime.fromtimestamp(start / 1000, ICT).isoformat(),
        "to": datetime.fromtimestamp(stop / 1000, ICT).isoformat(),
        "items": items,
        "total": len(items),
    }


# --------------------------------------------------------------------------- groups


@router.get("/groups", response_model=GroupList)
async def list_groups(
    user: User = Depends(current_user), svc: BroadcastService = Depends(get_service)
):
    items = await _call(svc.list_groups, actor_of(user))
    return {"items": items, "total": len(items)}


@typed_post(router, "/groups", status_code=201, response_model=GroupOut)
async def create_group(
    request: Request,
    body: GroupIn,
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
    idempotency_key: str | None = Header(None, max_length=80),
):
    """A saved set of places; ``Idempotency-Key`` as for ``POST /broadcasts``."""
    return await _call(
        svc.create_group,
        actor_of(user),
        body.name,
        body.targets,
        client_key=idempotency_key,
        audit=_audited(
            request, user, "group.create", 201, lambda o: (o["id"], {"name": o["name"]})
        ),
    )


@router.delete("/groups/{group_id}", status_code=204)
async def delete_group(
    group_id: int = id_param(),
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    await _call(svc.delete_group, actor_of(user), group_id)


# --------------------------------------------------------------------------- node commands


def _node_commands(ctx: AppContext):
    """The in-process controller's, or the command link of an API-only ``loa serve``."""
    node_commands = ctx.node_commands
    if node_commands is None:
        raise HTTPException(503, "Máy chủ web chưa có đường gửi lệnh tới cụm loa.")
    return node_commands


async def send_node_command(
    node_id: str,
    kind: str,
    request: Request,
    user: User,
    s: Session,
    *,
    client_key: str | None = None,
    **kw: Any,
) -> dict[str, Any]:
    """``volume`` / ``selftest`` / ``stop`` for the API and the node page alike: scope check,
    ``NodeCommands.send`` (publish, then wait for the answer), an audit row. What the node
    answered is in the result (``acked``: true, false, or None when it did not answer in
    time; ``selftest``). ``client_key``: the ``Idempotency-Key`` (``loa.idempotency``): a
    retry with the same key answers what the first send got, without sending again."""
    ctx: AppContext = request.app.state.ctx
    await run_in_threadpool(check_node_access, s, actor_of(user), node_id)
    key = idempotency.check_key(client_key)
    action, asked = f"node.{kind}", {"node_id": node_id, **kw}
    if key is not None:
        earlier = await run_in_threadpool(idempotency.earlier, s, user.username, key, action, asked)
        if earlier is not None:
            return earlier.response
    node_commands = _node_commands(ctx)
    try:
        result = await node_commands.send(node_id, kind, **kw)
    except Exception as exc:  # broker down: a clear 503, not a stack trace
        log.warning("node command %s to %s failed: %s", kind, node_id, exc)
        raise HTTPException(503, "Không gửi được lệnh: mất kết nối tới broker MQTT.") from None
    audit(
        s,
        f"node.{kind}",
        user=user,
        target=node_id,
        request=request,
        status_code=200,
        detail={k: v for k, v in kw.items() if v is not None},
    )
    out = {"node_id": node_id, "command": kind, **result}
    if key is not None:  # committed with the audit row when the request ends
        await run_in_threadpool(
            idempotency.remember,
            s,
            user.username,
            key,
            action,
            asked,
            response=out,
            now_ms=now_ms(),
        )
    return out


@typed_post(router, "/nodes/{node_id}/volume", response_model=NodeCommandOut)
async def node_volume(
    *,
    node_id: str,
    request: Request,
    body: VolumeIn,
    user: User = Depends(require_role("technician", "province", "commune")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
):
    return await send_node_command(
        node_id, "volume", request, user, s, level=body.level, client_key=idempotency_key
    )


@router.post("/nodes/{node_id}/selftest", response_model=NodeCommandOut)
async def node_selftest(
    *,
    node_id: str,
    request: Request,
    user: User = Depends(require_role("technician", "province", "commune")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
):
    return await send_node_command(
        node_id, "selftest", request, user, s, client_key=idempotency_key
    )


@typed_post(router, "/nodes/{node_id}/stop", response_model=NodeCommandOut)
async def node_stop(
    *,
    node_id: str,
    request: Request,
    body: StopIn | None = None,
    user: User = Depends(require_role("technician", "province", "commune")),
    s: DbSession,
    idempotency_key: str | None = Header(None, max_length=80),
):
    broadcast_id = body.broadcast_id if body is not None else None
    return await send_node_command(
        node_id, "stop", request, user, s, broadcast_id=broadcast_id, client_key=idempotency_key
    )


# --------------------------------------------------------------------------- live


@router.get("/live/server", response_model=LiveServerOut)
async def live_server(
    request: Request,
    user: User = Depends(current_user),
    svc: BroadcastService = Depends(get_service),
):
    """Whether live broadcasting is available, and which mounts are on air."""
    live = request.app.state.ctx.live
    if live is None or not live.running:
        reason = "Máy chủ phát trực tiếp (Icecast) chưa chạy."
        if live is not None and live.executable() is None:
            from scheduler.live import MSG_MISSING

            reason = MSG_MISSING
        return {"available": False, "reason": reason}
    # Scoped (finding 1): only live broadcasts this user may see, never every mount.
    listeners = await run_in_threadpool(live.listeners)
    on_air = await run_in_threadpool(svc.live_on_air, actor_of(user), listeners)
    return {
        "available": True,
        "url": live.base_url,
        "on_air": [b["mount"] for b in on_air],
        "broadcasts": on_air,
    }


# --------------------------------------------------------------------------- app wiring


__all__ = ["router", "actor_of", "now_ms"]
