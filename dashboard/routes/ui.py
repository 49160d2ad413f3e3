"""The web UI: server-rendered Jinja2 pages with a little vanilla JS, for phones on weak links.

Pages read the database directly for what they render first (so a page is useful before any
script runs) and call the JSON API from the browser for what changes. Every page escapes
what it prints (Jinja2 autoescape), sends a strict Content-Security-Policy (no inline
scripts, nothing from other hosts) and needs a login; forms carry the session's CSRF token.
"""

from __future__ import annotations

import logging
import secrets
from pathlib import Path
from types import SimpleNamespace
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

from fastapi import APIRouter, Depends, FastAPI, Form, HTTPException, Request
from fastapi.concurrency import run_in_threadpool
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
from sqlalchemy import func, select
from sqlalchemy.orm import Session
from starlette.exceptions import HTTPException as StarletteHTTPException

from controller.alarms import ALARM_LABELS_VI
from controller.models import HeartbeatSample, NodeEventLog, NodeLive, NodeTransition
from controller.node_commands import KINDS as NODE_COMMAND_KINDS
from dashboard.deps import DbSession, get_ctx
from dashboard.i18n import (
    LANG_COOKIE,
    LANGUAGES,
    get_lang,
    js_catalogue,
    template_globals,
    translate,
    wire_broadcast_ids,
    wire_titles,
)
from dashboard.models import ROLES, AuditLog, User
from dashboard.routes.alarms import list_alarms
from dashboard.security import (
    CSRF_FIELD,
    LOGIN_CSRF_COOKIE,
    MSG_FORBIDDEN,
    SESSION_COOKIE,
    SESSION_TTL_MS,
    AccountError,
    LoginError,
    audit,
    audit_hook,
    authenticate,
    can_access_node,
    client_ip,
    create_user,
    issue_token,
    optional_user,
    resolve_communes,
    set_password,
    sign_session,
    update_user,
)
from loa.timeutil import ms_to_dt, now_ms
from registry import changes
from registry.errors import RegistryError
from registry.models import Commune, Node, PendingNode, Village
from scheduler.models import Broadcast

HERE = Path(__file__).resolve().parent.parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
router = APIRouter(include_in_schema=False)

CSP = (
    "default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; "
    "connect-src 'self'; media-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "form-action 'self'; frame-ancestors 'none'"
)
HOME_BY_ROLE = {"technician": "/tech", "commune": "/commune", "province": "/province"}
RANGES = {"24h": 24 * 3600_000, "7d": 7 * 24 * 3600_000, "30d": 30 * 24 * 3600_000}
# Messages a redirect may ask a page to show: a key, never free text from the URL; the only
# values taken from it are the speaker counts of a self-test, as small integers. The second
# item is the style ("ok" or "error").
FLASH = {
    "saved": ("Đã lưu.", "ok"),
    "acked": ("Đã xác nhận", "ok"),
    "cmd_done": ("Cụm loa đã nhận và thực hiện lệnh.", "ok"),
    "cmd_pending": (
        "Đã gửi lệnh nhưng cụm loa chưa phản hồi. Broker giữ lệnh và giao khi cụm loa kết nối lại.",
        "error",
    ),
    "cmd_refused": ("Cụm loa từ chối lệnh; xem lý do trong mục Sự kiện gần đây.", "error"),
    "selftest_pass": ("Tự kiểm tra đạt: {ok}/{total} loa hoạt động.", "ok"),
    "selftest_fail": ("Tự kiểm tra không đạt: {ok}/{total} loa hoạt động.", "error"),
}
FLASH_COUNTS = {"ok": "sp", "total": "st"}  # placeholder -> query parameter


def flash_message(request: Request, lang: str) -> tuple[str, str] | None:
    """The translated message and style a redirect asked for, or None."""
    entry = FLASH.get(request.query_params.get("ok", ""))
    if entry is None:
        return None
    message, kind = entry
    values = {}
    for name, param in FLASH_COUNTS.items():
        if "{" + name + "}" in message:
            raw = request.query_params.get(param, "")
            if not (raw.isdecimal() and len(raw) <= 3):
                return None
            values[name] = int(raw)
    return translate(lang, message, **values), kind


class LoginRequired(Exception):
    pass


# --------------------------------------------------------------------------- helpers


async def page_user(request: Request, user: User | None = Depends(optional_user)) -> User:
    if user is None:
        raise LoginRequired()
    return user


def page_role(*roles: str):
    async def dependency(user: User = Depends(page_user)) -> User:
        if user.role not in roles:
            raise HTTPException(403, MSG_FORBIDDEN)
        return user

    return dependency


def safe_next(target: str | None) -> str:
    """Only same-site paths: a login link must not bounce the user to another host."""
    if not target:
        return "/"
    parts = urlsplit(target)
    if parts.scheme or parts.netloc or not target.startswith("/") or target.startswith("//"):
        return "/"
    return target


def security_headers(response: Response) -> Response:
    response.headers["Content-Security-Policy"] = CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "same-origin"
    response.headers["X-Frame-Options"] = "DENY"
    return response


def render(
    request: Request, name: str, user: User | None, status_code: int = 200, **context: Any
) -> HTMLResponse:
    lang = get_lang(request)
    flash = flash_message(request, lang)
    page = {
        "lang": lang,
        "csrf": getattr(request.state, "loa_csrf", ""),
        "strings": js_catalogue(lang),
    }
    page.update(context.pop("page", {}))
    response = templates.TemplateResponse(
        request,
        name,
        {
            **template_globals(lang),
            "user": user,
            "flash": flash[0] if flash else None,
            "flash_kind": flash[1] if flash else None,
            "csrf_token": page["csrf"],
            "csrf_field": CSRF_FIELD,
            "page": page,
            "path": request.url.path,
            "path_qs": request.url.path + (f"?{request.url.query}" if request.url.query else ""),
            **context,
        },
        status_code=status_code,
    )
    response.headers["Cache-Control"] = "no-store"
    return security_headers(response)


def scoped_communes(s: Session, user: User) -> list[Commune]:
    q = select(Commune).where(Commune.retired_ms.is_(None)).order_by(Commune.name_folded)
    scope = user.scope_commune_ids()
    if scope is not None:
        q = q.where(Commune.id.in_(scope))
    return list(s.scalars(q))


def _cookie_secure(request: Request) -> bool:
    return request.url.scheme == "https"


# --------------------------------------------------------------------------- charts
# Inline SVG drawn on the server: no chart library to ship, nothing for a phone to run.

CHART_W, CHART_H = 600, 160
PAD_L, PAD_R, PAD_T, PAD_B = 46, 10, 10, 24
STATE_COLORS = {
    "online": "#2e7d32",
    "degraded": "#f9a825",
    "offline": "#c62828",
    "unknown": "#9e9e9e",
}


TIMELINE_W = 1000  # drawn full width: a wider viewBox keeps its text the size of the charts'


def _x(t: int, t0: int, t1: int, width: int = CHART_W) -> float:
    return PAD_L + (t - t0) / max(1, t1 - t0) * (width - PAD_L - PAD_R)


def _time_ticks(t0: int, t1: int, width: int = CHART_W, n: int = 4) -> list[tuple[float, str, str]]:
    """(x, label, text-anchor): the end labels lean inwards so they are not cut off."""
    fmt = "%H:%M" if t1 - t0 <= 26 * 3600_000 else "%d/%m"
    anchors = ["start"] + ["middle"] * (n - 1) + ["end"]
    return [
        (_x(t, t0, t1, width), ms_to_dt(t).strftime(fmt), anchors[i])
        for i, t in enumerate(t0 + (t1 - t0) * i // n for i in range(n + 1))
    ]


def line_chart(
    points: list[tuple[int, float | None]], t0: int, t1: int, max_points: int = 300
) -> dict[str, Any] | None:
    """SVG geometry for one measured series; a gap in the samples (node silent) breaks the
    line instead of drawing a straight line across the outage."""
    pts = [(t, float(v)) for t, v in points if v is not None and t0 <= t <= t1]
    if not pts:
        return None
    if len(pts) > max_points:  # average into buckets: a phone needs ~300 points, not 8,640
        width = (t1 - t0) / max_points
        buckets: dict[int, list[tuple[int, float]]] = {}
        for t, v in pts:
            buckets.setdefault(int((t - t0) / width), []).append((t, v))
        pts = [
            (sum(t for t, _ in b) // len(b), sum(v for _, v in b) / len(b))
            for _, b in sorted(buckets.items())
        ]
    values = [v for _, v in pts]
    lo, hi = min(values), max(values)
    if hi - lo < 1e-9:
        lo, hi = lo - 1, hi + 1
    span_h = CHART_H - PAD_T - PAD_B

    def y(v: float) -> float:
        return PAD_T + (hi - v) / (hi - lo) * span_h

    steps = sorted(b[0] - a[0] for a, b in zip(pts, pts[1:], strict=False))
    gap = 3 * steps[len(steps) // 2] if steps else 0
    parts = []
    for i, (t, v) in enumerate(pts):
        cmd = "M" if i == 0 or (gap and t - pts[i - 1][0] > gap) else "L"
        parts.append(f"{cmd}{_x(t, t0, t1):.1f},{y(v):.1f}")
    fmt = (lambda v: f"{v:.0f}") if hi - lo >= 10 else (lambda v: f"{v:.1f}")
    return {
        "w": CHART_W,
        "h": CHART_H,
        "path": " ".join(parts),
        "dot": (_x(pts[-1][0], t0, t1), y(pts[-1][1])) if len(pts) == 1 else None,
        "yticks": [(y(v), fmt(v)) for v in (hi, (hi + lo) / 2, lo)],
        "xticks": _time_ticks(t0, t1),
        "last": fmt(values[-1]),
        "min": fmt(min(values)),
        "max": fmt(max(values)),
        "x0": PAD_L,
        "x1": CHART_W - PAD_R,
        "y1": PAD_T + span_h,
    }


def state_timeline(
    before: NodeTransition | None, transitions: list[NodeTransition], t0: int, t1: int
) -> dict[str, Any]:
    """Coloured state bands over [t0, t1] and the share of known time the node was available
    (the 8.3 notion: online/degraded with amplifier and a speaker working)."""
    segments = []
    state = before.to_state if before else "unknown"
    available = bool(before.available) if before else False
    start = t0
    known = avail = 0
    for tr in [*transitions, None]:
        end = tr.at_ms if tr is not None else t1
        end = min(max(end, t0), t1)
        if end > start:
            x0, x1 = _x(start, t0, t1, TIMELINE_W), _x(end, t0, t1, TIMELINE_W)
            segments.append(
                {
                    "x": round(x0, 1),
                    "w": round(max(x1 - x0, 0.5), 1),
                    "state": state,
                    "color": STATE_COLORS.get(state, "#9e9e9e"),
                    "from_ms": start,
                    "to_ms": end,
                }
            )
            if state != "unknown":
                known += end - start
                avail += (end - start) if available else 0
        if tr is not None:
            state, available, start = tr.to_state, bool(tr.available), max(start, end)
    pct = round(100 * avail / known, 1) if known else None
    return {
        "w": TIMELINE_W,
        "h": 40,
        "segments": segments,
        "pct": pct,
        "xticks": _time_ticks(t0, t1, TIMELINE_W),
        "x0": PAD_L,
        "x1": TIMELINE_W - PAD_R,
    }


# --------------------------------------------------------------------------- login


@router.get("/")
async def home(user: User = Depends(page_user)):
    return RedirectResponse(HOME_BY_ROLE.get(user.role, "/tech"), 303)


def _login_page(
    request: Request,
    error: str | None = None,
    status_code: int = 200,
    username: str = "",
    values: dict | None = None,
) -> HTMLResponse:
    csrf = secrets.token_urlsafe(24)
    response = render(
        request,
        "login.html",
        None,
        status_code,
        error=error,
        error_values=values or {},
        login_csrf=csrf,
        username=username,
        next=safe_next(request.query_params.get("next")),
    )
    response.set_cookie(
        LOGIN_CSRF_COOKIE,
        csrf,
        max_age=3600,
        httponly=True,
        samesite="lax",
        secure=_cookie_secure(request),
        path="/login",
    )
    return response


@router.get("/login")
async def login_form(request: Request, user: User | None = Depends(optional_user)):
    if user is not None:
        return RedirectResponse(safe_next(request.query_params.get("next")), 303)
    return _login_page(request)


@router.post("/login")
def login_submit(
    *,
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    csrf_token: str = Form(""),
    next: str = Form("/"),
    s: DbSession,
    ctx=Depends(get_ctx),
):
    expected = request.cookies.get(LOGIN_CSRF_COOKIE, "")
    if not expected or not secrets.compare_digest(expected, csrf_token):
        return _login_page(request, "Phiên đăng nhập đã hết hạn, hãy tải lại trang.", 400, username)
    if not username.strip() or not password:
        return _login_page(request, "Hãy nhập tên đăng nhập và mật khẩu", 400, username)
    ip = client_ip(request)
    try:
        user = authenticate(s, username, password, ip)
    except LoginError as exc:
        audit(
            s, "auth.login_failed", username=username, request=request, status_code=exc.status_code
        )
        s.commit()
        return _login_page(request, exc.msgid, exc.status_code, username, exc.values)
    raw, _ = issue_token(s, user, "session", ip)
    audit(s, "auth.login", user=user, request=request, status_code=303)
    s.commit()  # the session row must exist before the browser follows the redirect
    response = RedirectResponse(
        safe_next(next) if next != "/" else HOME_BY_ROLE.get(user.role, "/"), 303
    )
    response.set_cookie(
        SESSION_COOKIE,
        sign_session(ctx.settings.resolved_secret_key(), raw),
        max_age=SESSION_TTL_MS // 1000,
        httponly=True,
        samesite="lax",
        secure=_cookie_secure(request),
        path="/",
    )
    response.delete_cookie(LOGIN_CSRF_COOKIE, path="/login")
    return response


@router.post("/logout")
def logout(*, request: Request, user: User = Depends(page_user), s: DbSession):
    token = s.merge(request.state.loa_token)
    token.revoked = True
    audit(s, "auth.logout", user=user, request=request, status_code=303)
    s.commit()
    response = RedirectResponse("/login", 303)
    response.delete_cookie(SESSION_COOKIE, path="/")
    return response


@router.get("/lang/{code}")
async def switch_language(code: str, request: Request):
    response = RedirectResponse(safe_next(request.query_params.get("next")), 303)
    if code in LANGUAGES:
        response.set_cookie(
            LANG_COOKIE,
            code,
            max_age=365 * 86400,
            samesite="lax",
            secure=_cookie_secure(request),
            path="/",
        )
    return response


# --------------------------------------------------------------------------- technician


@router.get("/tech")
def tech_page(*, request: Request, user: User = Depends(page_user), s: DbSession):
    can_approve = user.role in ("technician", "province")
    communes = scoped_communes(s, user)
    villages: list[dict[str, Any]] = []
    if can_approve and s.scalar(select(func.count()).select_from(PendingNode)):
        # Only when something waits for approval: the village list can be long.
        names = {c.id: c.name for c in communes}
        villages = [
            {"id": v.id, "name": f"{v.name} — {names[v.commune_id]}"}
            for v in s.scalars(
                select(Village)
                .where(Village.retired_ms.is_(None), Village.commune_id.in_(list(names)))
                .order_by(Village.name_folded)
            )
        ]
    return render(
        request,
        "tech.html",
        user,
        communes=communes,
        alarm_labels=ALARM_LABELS_VI,
        page={
            "view": "tech",
            "can_ack": can_approve,
            "can_approve": can_approve,
            "villages": villages,
            "pending_url": "/api/v1/pending-nodes",
            "approve_url": "/api/v1/pending-nodes/{id}/approve",
        },
    )


def _node_or_error(
    s: Session, user: User, node_id: str
) -> tuple[Node, Village | None, Commune | None]:
    node = s.get(Node, node_id)
    if node is None or not can_access_node(s, user, node_id):
        # The same answer either way: node ids are not enumerable.
        raise HTTPException(404, "Không tìm thấy cụm loa")
    village = s.get(Village, node.village_id) if node.village_id else None
    commune = s.get(Commune, village.commune_id) if village else None
    return node, village, commune


@router.get("/tech/nodes/{node_id}")
def node_page(
    *,
    node_id: str,
    request: Request,
    range: str = "24h",
    user: User = Depends(page_user),
    s: DbSession,
):
    return _node_page(request, user, s, node_id, range)


def _node_page(
    request: Request,
    user: User,
    s: Session,
    node_id: str,
    range: str = "24h",
    status_code: int = 200,
    **extra: Any,
) -> HTMLResponse:
    node, village, commune = _node_or_error(s, user, node_id)
    span = RANGES.get(range, RANGES["24h"])
    t1 = now_ms()
    t0 = t1 - span
    live = s.get(NodeLive, node_id)
    samples = s.scalars(
        select(HeartbeatSample)
        .where(
            HeartbeatSample.node_id == node_id,
            HeartbeatSample.at_ms >= t0,
            HeartbeatSample.at_ms <= t1,
        )
        .order_by(HeartbeatSample.at_ms)
    ).all()
    before = s.scalar(
        select(NodeTransition)
        .where(NodeTransition.node_id == node_id, NodeTransition.at_ms < t0)
        .order_by(NodeTransition.at_ms.desc(), NodeTransition.id.desc())
        .limit(1)
    )
    transitions = s.scalars(
        select(NodeTransition)
        .where(NodeTransition.node_id == node_id, NodeTransition.at_ms >= t0)
        .order_by(NodeTransition.at_ms, NodeTransition.id)
    ).all()
    events = s.scalars(
        select(NodeEventLog)
        .where(NodeEventLog.node_id == node_id)
        .order_by(NodeEventLog.at_ms.desc())
        .limit(20)
    ).all()
    timeline = state_timeline(before, transitions, t0, t1)
    series = {
        "rssi": line_chart([(x.at_ms, x.rssi_dbm) for x in samples], t0, t1),
        "temp": line_chart([(x.at_ms, x.temp_c) for x in samples], t0, t1),
        "battery": line_chart([(x.at_ms, x.battery_v) for x in samples], t0, t1),
    }
    alarms = list_alarms(s, user, state="all", node=node_id, limit=20)
    payloads = [e.payload for e in events if isinstance(e.payload, dict)]
    wanted = wire_broadcast_ids(payloads)
    titles = wire_titles(
        dict(
            s.execute(
                select(Broadcast.id, Broadcast.title).where(Broadcast.id.in_(sorted(wanted)))
            ).all()
        )
        if wanted
        else {},
        payloads,
    )
    return render(
        request,
        "node.html",
        user,
        status_code,
        node=node,
        village=village,
        commune=commune,
        titles=titles,
        live=live,
        hb=(live.heartbeat if live else None) or {},
        timeline=timeline,
        series=series,
        range=range if range in RANGES else "24h",
        ranges=list(RANGES),
        transitions=list(reversed(transitions))[:30],
        events=events,
        alarms=alarms.items,
        can_act=user.role in ("technician", "province"),
        position=extra.pop(
            "position", {"lat": _coord(node.lat), "lon": _coord(node.lon), "error": None}
        ),
        page={"view": "node", "node_id": node_id},
        **extra,
    )


def _coord(value: float | None) -> str:
    return "" if value is None else f"{value:.6f}".rstrip("0").rstrip(".")


@router.post("/tech/nodes/{node_id}/position")
def node_position(
    *,
    node_id: str,
    request: Request,
    lat: str = Form("", max_length=40),
    lon: str = Form("", max_length=40),
    user: User = Depends(page_user),
    s: DbSession,
):
    """A cluster's coordinates set by hand (issue 19: the alert area reaches it by them).
    A refused value comes back with the reason and what was typed; nothing is written."""
    if user.role not in ("technician", "province"):
        raise HTTPException(403, MSG_FORBIDDEN)
    _node_or_error(s, user, node_id)
    hook = audit_hook(user=user, request=request, status_code=303)
    try:
        changes.set_node_position(s, node_id, lat, lon, audit=hook)
    except RegistryError as exc:
        s.rollback()
        return _node_page(
            request,
            user,
            s,
            node_id,
            status_code=422,
            position={"lat": lat, "lon": lon, "error": exc.message},
        )
    return RedirectResponse(f"/tech/nodes/{quote(node_id)}?ok=saved#position", 303)


@router.post("/tech/nodes/{node_id}/action")
async def node_action(
    *,
    node_id: str,
    request: Request,
    action: str = Form(...),
    level: int | None = Form(None),
    user: User = Depends(page_user),
    s: DbSession,
):
    """Volume, self-test and stop from the node page: the API's send-and-wait, so the page
    that follows says what the node answered, not only that something was sent."""
    if user.role not in ("technician", "province"):
        raise HTTPException(403, MSG_FORBIDDEN)
    await run_in_threadpool(_node_or_error, s, user, node_id)  # off the event loop
    if action not in NODE_COMMAND_KINDS:
        raise HTTPException(422, "Thao tác không hợp lệ")
    if action == "volume" and (level is None or not 0 <= level <= 100):
        raise HTTPException(422, "Âm lượng phải từ 0 đến 100")
    from dashboard.routes.broadcasts import send_node_command

    result = await send_node_command(
        node_id, action, request, user, s, **({"level": level} if action == "volume" else {})
    )
    return RedirectResponse(f"/tech/nodes/{quote(node_id)}?{command_outcome(result)}", 303)


def command_outcome(result: dict[str, Any]) -> str:
    """The flash key (and speaker counts) of a node's answer, for the redirect's query."""
    selftest = result.get("selftest")
    if result.get("acked") and selftest:
        key = "selftest_pass" if selftest["ok"] else "selftest_fail"
        return urlencode(
            {"ok": key, "sp": selftest["speakers_ok"], "st": selftest["speakers_total"]}
        )
    if result.get("acked"):
        return "ok=cmd_done"
    return "ok=cmd_refused" if result.get("acked") is False else "ok=cmd_pending"


@router.get("/tech/alarms")
def alarms_page(
    *,
    request: Request,
    state: str = "open",
    offset: int = 0,
    user: User = Depends(page_user),
    s: DbSession,
):
    state = state if state in ("open", "cleared", "all") else "open"
    page = list_alarms(s, user, state=state, limit=100, offset=max(0, offset))
    return render(
        request,
        "alarms.html",
        user,
        alarms=page,
        state=state,
        offset=max(0, offset),
        can_ack=user.role in ("technician", "province"),
        page={"view": "alarms"},
    )


@router.post("/tech/alarms/{alarm_id}/ack")
def alarm_ack_form(
    *,
    alarm_id: int,
    request: Request,
    next: str = Form("/tech/alarms"),
    note: str = Form(""),
    user: User = Depends(page_role("technician", "province")),
    s: DbSession,
):
    """The page's "Xác nhận" form (it once crashed: the API route was called with
    positional arguments); both go through ``acknowledge_alarm``."""
    from dashboard.routes.alarms import acknowledge_alarm

    acknowledge_alarm(s, user, alarm_id, note, request)
    target = safe_next(next)
    return RedirectResponse(target + ("&" if "?" in target else "?") + "ok=acked", 303)


# --------------------------------------------------------------------------- commune officer


def _villages_by_commune(s: Session, communes: list[Commune]) -> dict[int, list[Village]]:
    out: dict[int, list[Village]] = {c.id: [] for c in communes}
    if communes:
        for v in s.scalars(
            select(Village)
            .where(Village.retired_ms.is_(None), Village.commune_id.in_(list(out)))
            .order_by(Village.name_folded)
        ):
            out[v.commune_id].append(v)
    return out


@router.get("/commune")
def commune_page(
    *, request: Request, user: User = Depends(page_role("commune", "province")), s: DbSession
):
    """The officer's day: calendar, compose (text or upload), inbox, live, results."""
    communes = scoped_communes(s, user)
    return render(
        request,
        "commune.html",
        user,
        communes=communes,
        villages=_villages_by_commune(s, communes),
        page={"view": "commune", "role": user.role, "communes": {c.id: c.name for c in communes}},
    )


# --------------------------------------------------------------------------- province


@router.get("/province")
def province_page(*, request: Request, user: User = Depends(page_role("province")), s: DbSession):
    """Indicator 8.3 per commune (table and map), report downloads, emergency broadcast,
    the province's abbreviations for speech."""
    return _province_render(request, user, s)


def _province_render(
    request: Request, user: User, s: Session, abbr_error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    communes = scoped_communes(s, user)
    coords = {c.id: [c.lat, c.lon] for c in communes if c.lat is not None and c.lon is not None}
    today = ms_to_dt(now_ms())
    quarter, half = (today.month - 1) // 3 + 1, 1 if today.month <= 6 else 2
    prev_q = (today.year, quarter - 1) if quarter > 1 else (today.year - 1, 4)
    periods = [
        ("last30", "30 ngày qua", {}),
        (f"{today.year}-Q{quarter}", "Quý {q}/{y}", {"q": quarter, "y": today.year}),
        (f"{prev_q[0]}-Q{prev_q[1]}", "Quý {q}/{y}", {"q": prev_q[1], "y": prev_q[0]}),
        (
            f"{today.year}-H{half}",
            "6 tháng đầu năm {y}" if half == 1 else "6 tháng cuối năm {y}",
            {"y": today.year},
        ),
        (f"{today.year}", "Năm {y}", {"y": today.year}),
    ]
    from broadcasts import abbreviations

    return render(
        request,
        "province.html",
        user,
        status_code,
        communes=communes,
        periods=periods,
        abbreviations=abbreviations.listing(s),
        abbr_error=abbr_error,
        page={"view": "province", "coords": coords},
    )


@router.post("/province/abbreviations")
def province_add_abbreviation(
    *,
    request: Request,
    abbr: str = Form(""),
    spoken: str = Form(""),
    user: User = Depends(page_role("province")),
    s: DbSession,
):
    """The province teaches the speech text a new abbreviation from the web; a refusal is
    shown on the page with what was typed kept."""
    from broadcasts import abbreviations
    from broadcasts.errors import ContentError

    try:
        out = abbreviations.add(s, abbr, spoken, user.username)
    except ContentError as exc:
        s.rollback()
        return _province_render(request, user, s, abbr_error=str(exc), status_code=422)
    audit(
        s,
        "tts.abbreviation_add",
        user=user,
        target=out["abbr"],
        request=request,
        status_code=303,
        detail={"spoken": out["spoken"]},
    )
    s.commit()
    return RedirectResponse("/province?ok=saved#abbreviations", 303)


@router.post("/province/abbreviations/{entry_id}/delete")
def province_delete_abbreviation(
    *, entry_id: int, request: Request, user: User = Depends(page_role("province")), s: DbSession
):
    from broadcasts import abbreviations

    if abbreviations.remove(s, entry_id):
        audit(
            s,
            "tts.abbreviation_delete",
            user=user,
            target=str(entry_id),
            request=request,
            status_code=303,
        )
        s.commit()
    return RedirectResponse("/province?ok=saved#abbreviations", 303)


# --------------------------------------------------------------------------- admin


def _admin_render(
    request: Request, s: Session, admin: User, error: str | None = None, status_code: int = 200
) -> HTMLResponse:
    users = s.scalars(select(User).order_by(User.role, User.username_key)).all()
    communes = {c.id: c for c in s.scalars(select(Commune))}
    return render(
        request,
        "admin_users.html",
        admin,
        status_code,
        users=users,
        communes=communes,
        roles=ROLES,
        error=error,
        page={"view": "admin"},
    )


@router.get("/admin/users")
def admin_users(*, request: Request, admin: User = Depends(page_role("province")), s: DbSession):
    return _admin_render(request, s, admin)


def _split_refs(text: str) -> list[str]:
    return [p.strip() for p in text.replace(";", ",").split(",") if p.strip()]


@router.post("/admin/users")
def admin_create_user(
    *,
    request: Request,
    username: str = Form(""),
    password: str = Form(""),
    role: str = Form(""),
    communes: str = Form(""),
    display_name: str = Form(""),
    admin: User = Depends(page_role("province")),
    s: DbSession,
):
    try:
        user = create_user(
            s, username, password, role, resolve_communes(s, _split_refs(communes)), display_name
        )
    except AccountError as exc:
        return _admin_render(request, s, admin, str(exc), 422)
    audit(
        s,
        "user.create",
        user=admin,
        target=user.username,
        request=request,
        status_code=303,
        detail={"role": role, "communes": sorted(user.commune_ids)},
    )
    s.commit()
    return RedirectResponse("/admin/users?ok=saved", 303)


@router.post("/admin/users/{user_id}")
def admin_update_user(
    *,
    user_id: int,
    request: Request,
    role: str = Form(...),
    communes: str = Form(""),
    active: str = Form("1"),
    admin: User = Depends(page_role("province")),
    s: DbSession,
):
    user = s.get(User, user_id)
    if user is None:
        raise HTTPException(404, "Không tìm thấy tài khoản")
    want_active = active == "1"
    if user.id == admin.id and (not want_active or role != "province"):
        return _admin_render(
            request, s, admin, "Không thể tự khóa hoặc tự hạ quyền tài khoản đang dùng", 422
        )
    try:
        update_user(
            s,
            user,
            role=role,
            commune_ids=resolve_communes(s, _split_refs(communes)),
            active=want_active,
        )
    except AccountError as exc:
        s.rollback()
        return _admin_render(request, s, admin, str(exc), 422)
    audit(
        s,
        "user.update",
        user=admin,
        target=user.username,
        request=request,
        status_code=303,
        detail={"role": role, "communes": sorted(user.commune_ids), "active": want_active},
    )
    s.commit()
    return RedirectResponse("/admin/users?ok=saved", 303)


@router.post("/admin/users/{user_id}/password")
def admin_reset_password(
    *,
    user_id: int,
    request: Request,
    password: str = Form(""),
    admin: User = Depends(page_role("province")),
    s: DbSession,
):
    user = s.get(User, user_id)
    if user is None:
        raise HTTPException(404, "Không tìm thấy tài khoản")
    try:
        set_password(s, user, password)
    except AccountError as exc:
        return _admin_render(request, s, admin, str(exc), 422)
    audit(
        s, "user.password_reset", user=admin, target=user.username, request=request, status_code=303
    )
    s.commit()
    return RedirectResponse("/admin/users?ok=saved", 303)


@router.get("/admin/audit")
def audit_page(
    *,
    request: Request,
    before_id: int | None = None,
    admin: User = Depends(page_role("province")),
    s: DbSession,
):
    q = select(AuditLog).order_by(AuditLog.id.desc()).limit(100)
    if before_id is not None:
        q = q.where(AuditLog.id < before_id)
    return render(request, "audit.html", admin, entries=s.scalars(q).all(), page={"view": "audit"})


# --------------------------------------------------------------------------- wiring


def setup(app: FastAPI) -> None:
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.exception_handler(LoginRequired)
    async def _login_redirect(request: Request, exc: LoginRequired):
        target = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        return RedirectResponse(f"/login?next={quote(target, safe='')}", 303)

    @app.exception_handler(StarletteHTTPException)
    async def _html_errors(request: Request, exc: StarletteHTTPException):
        # The JSON API keeps FastAPI's {"detail": ...}; people get a page in their language.
        wants_html = "text/html" in request.headers.get("accept", "")
        if request.url.path.startswith(("/api/", "/static/")) or not wants_html:
            return await http_exception_handler(request, exc)
        profile = getattr(request.state, "loa_profile", None)
        user = SimpleNamespace(**profile) if profile else None
        detail = exc.detail
        if exc.status_code == 404 and detail in (None, "Not Found"):
            detail = "Không tìm thấy trang này."
        elif exc.status_code >= 500 and not _is_vietnamese(detail):
            detail = MSG_SERVER_ERROR
        return render(
            request, "error.html", user, exc.status_code, status=exc.status_code, detail=detail
        )

    @app.exception_handler(500)
    async def _server_error(request: Request, exc: Exception):
        # A crash answers with a page in the user's language, not "Internal Server Error";
        # the traceback goes to the log for the technicians.
        logging.getLogger("loa.dashboard").error(
            "%s %s failed", request.method, request.url.path, exc_info=exc
        )
        if request.url.path.startswith("/api/") or "text/html" not in request.headers.get(
            "accept", ""
        ):
            return JSONResponse({"detail": MSG_SERVER_ERROR}, status_code=500)
        return render(request, "error.html", None, 500, status=500, detail=MSG_SERVER_ERROR)


MSG_SERVER_ERROR = "Máy chủ gặp lỗi; đã ghi lại để kỹ thuật viên xem. Hãy thử lại sau."


def _is_vietnamese(text: object) -> bool:
    return isinstance(text, str) and any(ord(c) > 127 for c in text)
