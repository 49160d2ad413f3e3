"""Broadcast workflow: compose, submit, approve, schedule, cancel; inbox; calendar; outcomes.

draft -> submitted -> approved -> scheduled -> aired / partly_aired / missed / cancelled.
Who approves is a setting (a commune officer may approve their own commune's items, or only
the province may). Levels follow Thông tư 39/2020/TT-BTTTT:
- *normal* from the province lands in each targeted commune's inbox; the officer schedules it;
- *priority* is scheduled straight onto the nodes and pre-empts the communes' normal items;
- *emergency* (province only, explicit confirmation) plays at once at a forced volume.

Every method that changes something runs in one database transaction and checks everything
before writing, so a refused request leaves nothing behind. The caller's ``audit`` hook
(``InTransaction``) writes its audit row in that same transaction: a failed audit stores
nothing, and a retry creates exactly one. ``create`` first reads in a short session (scope,
targets) and prepares the audio outside any transaction (speech synthesis takes seconds and
must not hold SQLite's write lock); everything it writes is one transaction. Idempotency keys
are ``loa.idempotency``'s, remembered in that transaction too. The running scheduler (if in
this process) is told after commit; otherwise it picks the change up on its next
housekeeping pass.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from sqlalchemy import func, or_, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from loa import idempotency
from loa.db import Database
from loa.timeutil import ICT, now_ms
from scheduler.config import SchedulerSettings
from scheduler.conflicts import conflict_message, find_conflicts
from scheduler.content import ContentGateway
from scheduler.control import ControlMixin, check_client_key, format_duration
from scheduler.errors import Conflict, Forbidden, InvalidBroadcast, NotFound, Unavailable
from scheduler.models import Airing, AiringTarget, Broadcast, InboxItem, SavedGroup
from scheduler.outcomes import PHASE_LABELS_VI, aired_ratio
from scheduler.recurrence import Recurrence
from scheduler.request import (
    PRIORITY_LABELS,
    BroadcastRequest,
    int_field,
    parse_request,
    parse_when,
)
from scheduler.slots import airtime_ms, next_slot_at_or_after, recurrence_of, slots_between
from scheduler.stream_urls import check_stream_url, parse_networks
from scheduler.targets import (
    Actor,
    ReachCache,
    check_targets,
    describe_places,
    normalize_targets,
    place_names,
    resolve_nodes,
    target_communes,
)

if TYPE_CHECKING:
    from broadcasts.store import ContentMeta

log = logging.getLogger("loa.scheduler")

STATUS_LABELS_VI = {
    "draft": "Bản nháp",
    "submitted": "Chờ duyệt",
    "approved": "Đã duyệt",
    "scheduled": "Đã lên lịch",
    "aired": "Đã phát",
    "partly_aired": "Phát một phần",
    "missed": "Không phát được",
    "cancelled": "Đã hủy",
    "paused": "Tạm dừng",
    "failed": "Phát trực tiếp bị lỗi",
}
OPEN_STATUSES = ("draft", "submitted", "approved", "scheduled", "paused")
# Called inside a use case's transaction, with the session and the answer, before commit: the
# route writes its audit row there (``dashboard.security.audit``), so the change and its
# record commit together or not at all.
InTransaction = Callable[[Session, dict[str, Any]], None]
MAX_CALENDAR_DAYS = 93


def content_users(s: Session, content_id: str) -> list[str]:
    """The bulletins still in play (not yet aired, missed or cancelled) that use a content
    item, as people name them: "«Title» (Đã lên lịch)". A library item is deleted only
    when this is empty (``ContentStore.delete``)."""
    rows = s.execute(
        select(Broadcast.title, Broadcast.status)
        .where(Broadcast.content_id == content_id, Broadcast.status.in_(OPEN_STATUSES))
        .order_by(Broadcast.id)
    ).all()
    return [f"«{title}» ({STATUS_LABELS_VI.get(status, status)})" for title, status in rows]


def content_use_counts(s: Session, content_ids: list[str]) -> dict[str, int]:
    """How many bulletins still in play use each item (the library shows it beside
    «Xóa»)."""
    if not content_ids:
        return {}
    rows = s.execute(
        select(Broadcast.content_id, func.count())
        .where(Broadcast.content_id.in_(content_ids), Broadcast.status.in_(OPEN_STATUSES))
        .group_by(Broadcast.content_id)
    ).all()
    return {str(cid): int(n) for cid, n in rows if cid is not None}


class RuntimeHook(Protocol):
    """What the running scheduler offers the workflow (thread-safe, returns at once)."""

    def on_scheduled(self, broadcast_id: int) -> None: ...

    def on_cancelled(self, broadcast_id: int) -> None: ...


class LiveLike(Protocol):
    def require_running(self) -> None: ...

    def new_mount(self) -> str: ...

    def listen_url(self, mount: str) -> str: ...

    def source_url(self, mount: str) -> str: ...


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=ICT).isoformat(timespec="seconds")


class BroadcastService(ControlMixin):
    def __init__(
        self,
        db: Database,
        settings: SchedulerSettings | None = None,
        *,
        content: ContentGateway | None = None,
        live: LiveLike | None = None,
        runtime: RuntimeHook | None = None,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.settings = settings or SchedulerSettings()
        self.content = content
        self.live = live
        self.runtime = runtime
        self.clock = clock
        self.reach = ReachCache()

    # ------------------------------------------------------------------ permissions

    def can_approve(self, actor: Actor, b: Broadcast) -> bool:
        if actor.is_province:
            return True
        if actor.role != "commune" or self.settings.broadcast_approver != "commune":
            return False
        return b.owner_commune_id is not None and actor.covers_commune(b.owner_commune_id)

    def _may_manage(self, actor: Actor, b: Broadcast) -> bool:
        if actor.is_province:
            return True
        if actor.role != "commune":
            return False
        return b.owner_commune_id is not None and actor.covers_commune(b.owner_commune_id)

    def _may_see(self, s: Session, actor: Actor, b: Broadcast) -> bool:
        if actor.whole_province:
            return True
        if b.owner_commune_id is not None:
            return actor.covers_commune(b.owner_commune_id)
        return bool(target_communes(s, b.targets) & set(actor.commune_ids or ()))

    def _load(self, s: Session, actor: Actor, broadcast_id: int) -> Broadcast:
        b = s.get(Broadcast, broadcast_id)
        if b is None or not self._may_see(s, actor, b):
            raise NotFound(f"Không tìm thấy bản tin số {broadcast_id}.")
        return b

    # ------------------------------------------------------------------ create

    def create(
        self,
        actor: Actor,
        payload: Any,
        *,
        client_key: str | None = None,
        replaces: int | None = None,
        audit: InTransaction | None = None,
        asked: Any = None,
    ) -> dict[str, Any]:
        """Create (and, when the actor may approve, schedule) a bulletin.

        ``client_key`` is the sender's idempotency key: a second request with the same key
        from the same person returns the first bulletin (``replayed``) instead of a copy, so
        a double click or a retry on a weak link sends once. ``replaces`` is the bulletin an
        edit supersedes (left out of the conflict check; see ``ControlMixin.edit``).
        ``audit`` runs in the creating transaction (see ``InTransaction``); ``asked`` is what
        the key's fingerprint covers when it is not ``payload`` (an edit: the changes asked
        for, not the merged bulletin)."""
        if actor.role not in ("province", "commune"):
            raise Forbidden("Chỉ cán bộ xã hoặc cấp tỉnh được tạo bản tin.")
        client_key = check_client_key(client_key)
        action = "broadcast.edit" if replaces else "broadcast.create"
        asked = asked if asked is not None else {"payload": payload, "replaces": replaces}
        if client_key is not None:
            earlier = self._replay(actor, client_key, action, asked)
            if earlier is not None:
                return earlier
        now = self.clock()
        req = parse_request(payload, now)
        self._check_level(actor, req)

        with self.db.session() as s:
            check_targets(s, req.targets, actor)
            owner = self._owner_commune(s, actor, req.targets)
            to_inboxes = owner is None and req.priority == "normal"
            if not req.draft and not to_inboxes and not resolve_nodes(s, req.targets):
                raise InvalidBroadcast("Nơi phát đã chọn chưa có cụm loa nào đang hoạt động.")

        meta, stream_url, mount, content_ms = self._prepare_content(actor, req, owner)
        gap_ms = int(self.settings.repeat_gap_s * 1000)
        duration = airtime_ms(content_ms, req.repeat, gap_ms) if not req.stream else content_ms
        if req.tone is not None:
            duration += req.tone.lead_ms  # the nodes sound the tone first
        self._check_long(req, duration)
        start_ms = req.start_at_ms
        if req.priority == "emergency":
            start_ms = now
        elif start_ms is None:
            start_ms = now + int(self.settings.start_now_delay_s * 1000)
        rec = req.recurrence

        with self.db.session() as s:
            b = Broadcast(
                title=req.title,
                content_id=meta.id if meta else None,
                tts_text=req.tts_text,
                stream_url=stream_url,
                stream_mount=mount,
                language=(
                    meta.language if meta and getattr(meta, "language", None) else req.language
                ),
                priority=req.priority,
                volume=self.settings.emergency_volume
                if req.priority == "emergency"
                else req.volume,
                repeat=req.repeat,
                targets=req.targets,
                start_at_ms=start_ms,
                recurrence=rec.rule if rec else None,
                recurrence_until_ms=rec.until_ms if rec else None,
                recurrence_exdates=list(rec.exdates) if rec else None,
                status="draft",
                owner_commune_id=owner,
                created_by=actor.username,
                created_ms=now,
                updated_ms=now,
                duration_ms=duration,
                client_key=client_key,
                previous_version_id=replaces,
                tone=req.tone.model_dump() if req.tone is not None else None,
            )
            s.add(b)
            try:
                s.flush()
                if client_key is not None:
                    idempotency.remember(
                        s, actor.username, client_key, action, asked, resource_id=b.id, now_ms=now
                    )
            except IntegrityError:
                if client_key is None:
                    raise
                s.rollback()  # the same key won a race a moment ago: answer with that one
                earlier = self._replay(actor, client_key, action, asked)
                if earlier is None:
                    raise
                return earlier
            if not req.draft:
                self._advance(
                    s, actor, b, now, submit=True, exclude={replaces} if replaces else None
                )
            out = self._summary(s, b)
            status = b.status
            broadcast_id = b.id
            if audit is not None:
                audit(s, out)
        if status == "scheduled":
            self._notify_scheduled(broadcast_id)
        if mount and self.live is not None:
            out["source_url"] = self.live.source_url(mount)
        return out

    def _replay(
        self, actor: Actor, client_key: str, action: str, asked: Any
    ) -> dict[str, Any] | None:
        """The bulletin an earlier request with this key created, as it is now; a key used
        for a different request is refused (``loa.idempotency``)."""
        with self.db.session() as s:
            row = idempotency.earlier(s, actor.username, client_key, action, asked)
            b = s.get(Broadcast, int(row.resource_id)) if row and row.resource_id else None
            if b is None:
                return None
            return {**self._summary(s, b), "replayed": True}

    def _check_long(self, req: BroadcastRequest, duration_ms: int) -> None:
        """A bulletin longer than the province's setting is a likely mistake (a whole
        recording instead of an excerpt): it needs a second, explicit confirmation."""
        limit_s = self.settings.long_bulletin_s
        if req.stream or req.confirm or not limit_s or duration_ms <= limit_s * 1000:
            return
        raise InvalidBroadcast(
            f"Bản tin dài {format_duration(duration_ms)}, quá {format_duration(limit_s * 1000)}: "
            "hãy xác nhận lần nữa rằng muốn phát bản tin dài này («confirm»: true).",
            details=[{"needs_confirm": "long", "duration_ms": duration_ms}],
        )

    def _check_level(self, actor: Actor, req: BroadcastRequest) -> None:
        if req.priority == "emergency":
            if not actor.is_province:
                raise Forbidden("Chỉ cán bộ cấp tỉnh được phát bản tin khẩn cấp.")
            if not req.confirm:
                raise InvalidBroadcast(
                    "Phát khẩn cấp sẽ ngắt mọi nội dung đang phát trên các cụm loa đã chọn và "
                    "phát ngay ở âm lượng tối đa. Hãy xác nhận bằng «confirm»: true."
                )
            if req.recurrence is not None or req.start_at_ms is not None:
                raise InvalidBroadcast("Bản tin khẩn cấp phát ngay; không hẹn giờ, không lặp.")
            if req.draft:
                raise InvalidBroadcast("Bản tin khẩn cấp không lưu nháp; nó được phát ngay.")

    def _owner_commune(self, s: Session, actor: Actor, targets: dict[str, Any]) -> int | None:
        if actor.is_province:
            return None
        touched = sorted(target_communes(s, targets))
        if touched:
            return touched[0]
        return min(actor.commune_ids) if actor.commune_ids else None

    def _prepare_content(
        self, actor: Actor, req: BroadcastRequest, owner: int | None = None
    ) -> tuple[ContentMeta | None, str | None, str | None, int]:
        """(meta, stream_url, mount, content duration ms). Content of another commune is
        answered as not found (content is scoped like everything else); speech made for the
        broadcast belongs to its owner commune (None: the province's)."""
        if req.stream:
            duration = (req.duration_s or self.settings.stream_default_duration_s) * 1000
            if req.stream_url:
                check_stream_url(
                    req.stream_url,
                    self._own_stream_bases(),
                    parse_networks(self.settings.stream_allowed_networks),
                )
                return None, req.stream_url, None, duration
            if self.live is None:
                raise Unavailable("Máy chủ phát trực tiếp (Icecast) chưa được bật trên hệ thống.")
            # A mount of its own, with a source password valid on it alone (finding 1).
            mount = self.live.new_mount()
            return None, self.live.listen_url(mount), mount, duration
        if self.content is None:
            raise Unavailable("Kho nội dung âm thanh chưa sẵn sàng.")
        if req.content_id is not None:
            meta = self.content.require(req.content_id)
            content_owner = getattr(meta, "owner_commune_id", None)
            if content_owner is not None and not actor.covers_commune(content_owner):
                raise InvalidBroadcast(
                    f"Không tìm thấy nội dung «{req.content_id}» trong kho âm thanh."
                )
        else:
            meta = self.content.synthesize(
                req.tts_text or "",
                title=req.title,
                language=req.language,
                voice=req.voice,
                engine=req.engine,
                creator=actor.username,
                owner_commune_id=owner,
                # An emergency's speech is levelled in fewer renders: it is on the clock.
                urgent=req.priority == "emergency",
            )
        if not meta.duration_ms or meta.duration_ms <= 0:
            raise InvalidBroadcast(f"Nội dung «{meta.id}» không có thời lượng hợp lệ.")
        return meta, None, None, int(meta.duration_ms)

    def _own_stream_bases(self) -> list[str]:
        """Where the system's own Icecast server is reached: always a fit stream source."""
        s = self.settings
        bases = [
            getattr(self.live, "base_url", "") if self.live is not None else "",
            s.icecast_public_url,
        ]
        if s.icecast_port:
            bases.append(f"http://{s.icecast_host}:{s.icecast_port}")
        return [b for b in bases if b]

    # ------------------------------------------------------------------ workflow

    def _advance(
        self,
        s: Session,
        actor: Actor,
        b: Broadcast,
        now: int,
        *,
        submit: bool,
        exclude: set[int] | None = None,
    ) -> None:
        """From draft: submit, and approve + schedule when the actor may approve."""
        if submit and b.status == "draft":
            self._check_future(b, now)
            self._check_has_nodes(s, b)
            self._check_conflicts(s, b, now, exclude)
            b.status = "submitted"
        if b.status == "submitted" and self.can_approve(actor, b):
            self._activate(s, actor, b, now, exclude)

    @staticmethod
    def _check_has_nodes(s: Session, b: Broadcast) -> None:
        if b.owner_commune_id is None and b.priority == "normal":
            return  # goes to inboxes; each commune picks its own loudspeakers
        if not resolve_nodes(s, b.targets):
            raise InvalidBroadcast("Nơi phát đã chọn chưa có cụm loa nào đang hoạt động.")

    def _check_future(self, b: Broadcast, now: int) -> None:
        if b.priority == "emergency":
            return
        if b.recurrence:
            rec = recurrence_of(b)
            if rec is None or rec.next_after(now - 1) is None:
                raise InvalidBroadcast("Lịch lặp không còn lần phát nào trong tương lai.")
        elif b.start_at_ms is None or b.start_at_ms < now - 5_000:
            raise InvalidBroadcast("Thời điểm phát đã qua; hãy tạo lại với thời điểm mới.")

    def _activate(
        self, s: Session, actor: Actor, b: Broadcast, now: int, exclude: set[int] | None = None
    ) -> None:
        """Approved: a province *normal* bulletin goes to the communes' inboxes; everything
        else is put on the schedule (after a last conflict check)."""
        self._check_future(b, now)
        b.approved_by = actor.username
        b.updated_ms = now
        if b.owner_commune_id is None and b.priority == "normal":
            b.status = "approved"
            for commune_id in sorted(target_communes(s, b.targets)):
                exists = s.scalar(
                    select(InboxItem.id).where(
                        InboxItem.broadcast_id == b.id, InboxItem.commune_id == commune_id
                    )
                )
                if exists is None:
                    s.add(
                        InboxItem(
                            broadcast_id=b.id, commune_id=commune_id, state="new", created_ms=now
                        )
                    )
            return
        self._check_conflicts(s, b, now, exclude)
        b.status = "scheduled"
        b.scheduled_ms = now

    def _check_conflicts(
        self, s: Session, b: Broadcast, now: int, exclude: set[int] | None = None
    ) -> None:
        if b.priority == "emergency" or (b.owner_commune_id is None and b.priority == "normal"):
            return
        horizon = now + self.settings.conflict_horizon_days * 86_400_000
        slots = slots_between(b, now, horizon, limit=2_000)
        node_ids = {t.node_id for t in resolve_nodes(s, b.targets)}
        hits = find_conflicts(
            s,
            priority=b.priority,
            slots=slots,
            duration_ms=b.duration_ms,
            node_ids=node_ids,
            exclude_broadcast_id=b.id,
            exclude_ids=exclude,
        )
        if hits:
            raise Conflict(conflict_message(hits), details=[h.as_dict() for h in hits])

    def submit(
        self, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            if not self._may_manage(actor, b):
                raise Forbidden("Bạn không được gửi duyệt bản tin này.")
            if b.status != "draft":
                raise Conflict(
                    f"Bản tin đang ở trạng thái «{STATUS_LABELS_VI[b.status]}», "
                    "chỉ bản nháp mới gửi duyệt được."
                )
            self._check_future(b, now)
            self._check_has_nodes(s, b)
            self._check_conflicts(s, b, now)
            b.status = "submitted"
            b.updated_ms = now
            out = self._summary(s, b)
            if audit is not None:
                audit(s, out)
            return out

    def approve(
        self, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            if b.status != "submitted":
                raise Conflict(
                    f"Bản tin đang ở trạng thái «{STATUS_LABELS_VI[b.status]}», "
                    "chỉ bản tin chờ duyệt mới duyệt được."
                )
            if not self.can_approve(actor, b):
                raise Forbidden(
                    "Bạn không có quyền duyệt bản tin này."
                    + (
                        " Bản tin của xã do cấp tỉnh duyệt."
                        if self.settings.broadcast_approver == "province"
                        else ""
                    )
                )
            self._activate(s, actor, b, now)
            out = self._summary(s, b)
            status = b.status
            if audit is not None:
                audit(s, out)
        if status == "scheduled":
            self._notify_scheduled(broadcast_id)
        return out

    def cancel(
        self, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            if not self._may_manage(actor, b):
                raise Forbidden("Bạn không được hủy bản tin này.")
            if b.status not in OPEN_STATUSES:
                raise Conflict(
                    f"Bản tin đã kết thúc («{STATUS_LABELS_VI[b.status]}»), không thể hủy."
                )
            was_scheduled = b.status in ("scheduled", "paused")
            b.status = "cancelled"
            b.updated_ms = now
            for item in s.scalars(
                select(InboxItem).where(InboxItem.broadcast_id == b.id, InboxItem.state == "new")
            ):
                item.state = "dismissed"
                item.handled_ms = now
                item.handled_by = actor.username
            out = self._summary(s, b)
            mount = b.stream_mount
            if audit is not None:
                audit(s, out)
        if was_scheduled and self.runtime is not None:
            self.runtime.on_cancelled(broadcast_id)
        if mount:
            self._retire_mount(mount)
        return out

    def _retire_mount(self, mount: str) -> None:
        """A cancelled live broadcast: its source is cut and its password withdrawn."""
        retire = getattr(self.live, "retire_mount", None)
        if retire is None:
            return
        try:
            retire(mount)
        except Unavailable as exc:  # the server is down: nothing left to withdraw there
            log.warning("%s", exc.message)

    def _notify_scheduled(self, broadcast_id: int) -> None:
        if self.runtime is not None:
            try:
                self.runtime.on_scheduled(broadcast_id)
            except Exception:  # the housekeeping pass will pick it up anyway
                log.exception("could not hand broadcast %s to the scheduler", broadcast_id)

    # ------------------------------------------------------------------ inbox

    def inbox(self, actor: Actor, state: str | None = "new") -> list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(InboxItem, Broadcast).join(Broadcast, Broadcast.id == InboxItem.broadcast_id)
            if not actor.whole_province:
                q = q.where(InboxItem.commune_id.in_(sorted(actor.commune_ids or ())))
            if state:
                q = q.where(InboxItem.state == state)
            rows = s.execute(q.order_by(InboxItem.created_ms.desc(), InboxItem.id.desc())).all()
            return [
                {
                    "id": item.id,
                    "commune_id": item.commune_id,
                    "state": item.state,
                    "received_at": iso(item.created_ms),
                    "broadcast_id": b.id,
                    "title": b.title,
                    "priority": b.priority,
                    "priority_label": PRIORITY_LABELS[b.priority],
                    "content_id": b.content_id,
                    "duration_ms": b.duration_ms,
                    "suggested_start_at": iso(b.start_at_ms),
                    "created_by": b.created_by,
                    "scheduled_broadcast_id": item.scheduled_broadcast_id,
                }
                for item, b in rows
            ]

    def _inbox_item(self, s: Session, actor: Actor, item_id: int) -> tuple[InboxItem, Broadcast]:
        item = s.get(InboxItem, item_id)
        if item is None or not actor.covers_commune(item.commune_id):
            raise NotFound(f"Không tìm thấy mục hộp thư số {item_id}.")
        if item.state != "new":
            raise Conflict("Mục này đã được xử lý.")
        return item, s.get_one(Broadcast, item.broadcast_id)

    def schedule_from_inbox(
        self,
        actor: Actor,
        item_id: int,
        payload: Any,
        *,
        client_key: str | None = None,
        audit: InTransaction | None = None,
    ) -> dict[str, Any]:
        """The commune takes a province bulletin: a broadcast of its own, same content.
        ``client_key`` and ``audit`` as for ``create``: a retry with the same key answers
        the broadcast the first request made (``replayed``), not "already handled"."""
        if actor.role not in ("commune", "province"):
            raise Forbidden("Chỉ cán bộ xã được lên lịch bản tin từ hộp thư.")
        payload = payload or {}
        if not isinstance(payload, dict):
            raise InvalidBroadcast("Yêu cầu phải là một đối tượng JSON.")
        client_key = check_client_key(client_key)
        asked = {"item_id": item_id, "payload": payload}
        if client_key is not None:
            earlier = self._replay(actor, client_key, "inbox.schedule", asked)
            if earlier is not None:
                return earlier
        now = self.clock()
        with self.db.session() as s:
            item, original = self._inbox_item(s, actor, item_id)
            fields: dict[str, Any] = {
                "start_at": payload.get("start_at"),
                "recurrence": payload.get("recurrence"),
            }
            if fields["start_at"] is None and original.start_at_ms and original.start_at_ms > now:
                fields["start_at"] = iso(original.start_at_ms)
            start_ms, rec = parse_when(fields, now)
            if start_ms is None:
                start_ms = now + int(self.settings.start_now_delay_s * 1000)
            targets = normalize_targets(payload.get("targets") or {"communes": [item.commune_id]})
            officer = Actor("commune", frozenset({item.commune_id}), actor.username)
            check_targets(s, targets, officer)
            if not resolve_nodes(s, targets):
                raise InvalidBroadcast("Nơi phát đã chọn chưa có cụm loa nào đang hoạt động.")
            volume = int_field(payload, "volume", 0, 100, "Âm lượng («volume»)")
            volume = original.volume if volume is None else volume
            b = Broadcast(
                title=original.title,
                content_id=original.content_id,
                tts_text=original.tts_text,
                stream_url=original.stream_url,
                language=original.language,
                priority="normal",
                volume=volume,
                repeat=original.repeat,
                targets=targets,
                start_at_ms=start_ms,
                recurrence=rec.rule if rec else None,
                recurrence_until_ms=rec.until_ms if rec else None,
                recurrence_exdates=list(rec.exdates) if rec else None,
                status="draft",
                owner_commune_id=item.commune_id,
                created_by=actor.username,
                created_ms=now,
                updated_ms=now,
                duration_ms=original.duration_ms,
                source_broadcast_id=original.id,
            )
            s.add(b)
            s.flush()
            if client_key is not None:
                idempotency.remember(
                    s,
                    actor.username,
                    client_key,
                    "inbox.schedule",
                    asked,
                    resource_id=b.id,
                    now_ms=now,
                )
            self._advance(s, actor, b, now, submit=True)
            item.state = "scheduled"
            item.handled_ms = now
            item.handled_by = actor.username
            item.scheduled_broadcast_id = b.id
            out = self._summary(s, b)
            status, new_id = b.status, b.id
            if audit is not None:
                audit(s, out)
        if status == "scheduled":
            self._notify_scheduled(new_id)
        return out

    def dismiss_inbox(self, actor: Actor, item_id: int) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            item, _ = self._inbox_item(s, actor, item_id)
            item.state = "dismissed"
            item.handled_ms = now
            item.handled_by = actor.username
            return {"id": item.id, "state": item.state}

    # ------------------------------------------------------------------ reading

    def _summary(self, s: Session, b: Broadcast) -> dict[str, Any]:
        rec = recurrence_of(b)
        now = self.clock()
        next_slot = (
            next_slot_at_or_after(b, now)
            if b.status in ("scheduled", "submitted", "approved", "draft", "paused")
            else None
        )
        return {
            "id": b.id,
            "title": b.title,
            "status": b.status,
            "status_label": STATUS_LABELS_VI.get(b.status, b.status),
            "priority": b.priority,
            "priority_label": PRIORITY_LABELS.get(b.priority),
            "content_id": b.content_id,
            "tts_text": b.tts_text,
            "stream_url": b.stream_url,
            "language": b.language,
            "volume": b.volume,
            "repeat": b.repeat,
            "duration_ms": b.duration_ms,
            "targets": b.targets,
            "start_at": iso(b.start_at_ms),
            "start_at_ms": b.start_at_ms,
            "recurrence": (
                {"rrule": rec.rule, "until": iso(rec.until_ms), "exceptions": list(rec.exdates)}
                if rec
                else None
            ),
            "next_slot_at": iso(next_slot),
            "owner_commune_id": b.owner_commune_id,
            "source_broadcast_id": b.source_broadcast_id,
            "created_by": b.created_by,
            "approved_by": b.approved_by,
            "created_at": iso(b.created_ms),
            "places": describe_places(s, b.targets, counts=False)["text"],
            "previous_version_id": b.previous_version_id,
        }

    def open_live_mounts(self) -> list[str]:
        """Mounts of live broadcasts that may still go on air (restored into a restarted
        Icecast so their owners' source addresses keep working)."""
        with self.db.session() as s:
            return [
                m
                for m in s.scalars(
                    select(Broadcast.stream_mount).where(
                        Broadcast.stream_mount.is_not(None), Broadcast.status.in_(OPEN_STATUSES)
                    )
                )
                if m
            ]

    def _source_for_owner(self, actor: Actor, b: Broadcast) -> dict[str, str]:
        """The live source address carries the mount's password: only the officer who
        created the broadcast gets it, and only while it can still go on air."""
        if (
            b.stream_mount
            and self.live is not None
            and b.status in OPEN_STATUSES
            and actor.username
            and actor.username == b.created_by
        ):
            return {"source_url": self.live.source_url(b.stream_mount)}
        return {}

    def mic_mount(self, actor: Actor, broadcast_id: int) -> str:
        """The mount the officer's browser microphone feeds: only for the officer who
        created the live broadcast, and only while it may still go on air."""
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            if not b.stream_mount:
                raise InvalidBroadcast(
                    "Bản tin này không phải buổi phát trực tiếp qua máy chủ của hệ thống."
                )
            if not actor.username or actor.username != b.created_by:
                raise Forbidden("Chỉ người tạo buổi phát trực tiếp được phát âm thanh vào đó.")
            if b.status not in OPEN_STATUSES:
                raise Conflict(
                    f"Buổi phát trực tiếp đã kết thúc "
                    f"(«{STATUS_LABELS_VI.get(b.status, b.status)}»)."
                )
            return b.stream_mount

    def fail_live(self, broadcast_id: int, reason: str) -> bool:
        """The live stream broke (browser gone, encoder died): the broadcast is ``failed``,
        stopped on the clusters, and its slot is free for other bulletins."""
        now = self.clock()
        with self.db.session() as s:
            b = s.get(Broadcast, broadcast_id)
            if b is None or b.status not in OPEN_STATUSES:
                return False
            was_scheduled = b.status in ("scheduled", "paused")
            b.status = "failed"
            b.updated_ms = now
            mount = b.stream_mount
        log.warning("Buổi phát trực tiếp %s bị lỗi: %s", broadcast_id, reason)
        if was_scheduled and self.runtime is not None:
            self.runtime.on_cancelled(broadcast_id)
        if mount:
            self._retire_mount(mount)
        return True

    def end_live(
        self, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        """The officer pressed stop after closing the source cleanly: the clusters hear the
        stream end and report it played, and the mount is withdrawn (cutting any listener
        left). Stopped before its slot came, nothing aired: the broadcast is cancelled, in
        one transaction with ``audit``'s row."""
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            if not self._may_manage(actor, b):
                raise Forbidden("Bạn không được dừng buổi phát trực tiếp này.")
            mount = b.stream_mount
            dispatched = (
                s.scalar(
                    select(func.count()).select_from(Airing).where(Airing.broadcast_id == b.id)
                )
                or 0
            )
            is_open = b.status in OPEN_STATUSES
        if is_open and not dispatched:
            return self.cancel(actor, broadcast_id, audit=audit)
        if mount:
            self._retire_mount(mount)
        out = self.get(actor, broadcast_id)
        if audit is not None:  # nothing else to write: the record is this step's change
            with self.db.session() as s:
                audit(s, out)
        return out

    def live_on_air(self, actor: Actor, listeners: dict[str, int]) -> list[dict[str, Any]]:
        """Live broadcasts on air now that this user may see (``listeners``: mount ->
        clusters hearing it, from the Icecast server); others' mounts are not named."""
        if not listeners:
            return []
        out = []
        with self.db.session() as s:
            rows = s.scalars(
                select(Broadcast).where(Broadcast.stream_mount.in_(sorted(listeners)))
            ).all()
            for b in rows:
                if not self._may_see(s, actor, b):
                    continue
                out.append(
                    {
                        "broadcast_id": b.id,
                        "title": b.title,
                        "mount": b.stream_mount,
                        "listeners": listeners.get(b.stream_mount or "", 0),
                        "mine": bool(actor.username) and actor.username == b.created_by,
                    }
                )
        return sorted(out, key=lambda x: x["broadcast_id"])

    def get(self, actor: Actor, broadcast_id: int, airing_id: int | None = None) -> dict[str, Any]:
        """The broadcast with proof of play: one row per node of the chosen airing (default the
        latest), and the aired ratio over all its airings."""
        with self.db.session() as s:
            b = self._load(s, actor, broadcast_id)
            out = self._summary(s, b)
            out.update(self._source_for_owner(actor, b))
            airings = s.scalars(
                select(Airing).where(Airing.broadcast_id == b.id).order_by(Airing.slot_ms)
            ).all()
            scope = None if actor.whole_province else set(actor.commune_ids or ())
            all_phases: list[str] = []
            airing_rows = []
            by_airing: dict[int, list[AiringTarget]] = {}
            for t in s.scalars(
                select(AiringTarget)
                .join(Airing)
                .where(Airing.broadcast_id == b.id)
                .order_by(AiringTarget.node_id)
            ):
                if scope is not None and t.commune_id not in scope:
                    continue
                by_airing.setdefault(t.airing_id, []).append(t)
            for a in airings:
                phases = [t.phase for t in by_airing.get(a.id, [])]
                if a.status not in ("scheduled", "cancelled"):
                    all_phases += phases
                airing_rows.append(
                    {
                        "id": a.id,
                        "slot_at": iso(a.slot_ms),
                        "slot_ms": a.slot_ms,
                        "start_at_ms": a.start_at_ms,
                        "status": a.status,
                        "status_label": STATUS_LABELS_VI.get(a.status, a.status),
                        "nodes": len(phases),
                        "aired_ratio": aired_ratio(phases),
                    }
                )
            chosen = None
            if airing_id is not None:
                chosen = next((a for a in airings if a.id == airing_id), None)
                if chosen is None:
                    raise NotFound(f"Bản tin không có lượt phát số {airing_id}.")
            elif airings:
                dispatched = [a for a in airings if a.dispatched_ms is not None]
                chosen = (dispatched or airings)[-1]
            outcomes = []
            if chosen is not None:
                names = place_names(s, [t.node_id for t in by_airing.get(chosen.id, [])])
                for t in by_airing.get(chosen.id, []):
                    outcomes.append(
                        {
                            "node_id": t.node_id,
                            "place": names.get(t.node_id, t.node_id),
                            "village_id": t.village_id,
                            "commune_id": t.commune_id,
                            "phase": t.phase,
                            "phase_label": PHASE_LABELS_VI.get(t.phase, t.phase),
                            "started_at": iso(t.started_at_ms),
                            "started_at_ms": t.started_at_ms,
                            "finished_at": iso(t.finished_at_ms),
                            "finished_at_ms": t.finished_at_ms,
                            "lateness_ms": t.lateness_ms,
                            "error": t.error,
                        }
                    )
            if b.owner_commune_id is None and b.priority == "normal":
                # Where a province bulletin stands in each commune's inbox.
                out["inbox"] = [
                    {
                        "commune_id": i.commune_id,
                        "state": i.state,
                        "scheduled_broadcast_id": i.scheduled_broadcast_id,
                    }
                    for i in s.scalars(
                        select(InboxItem)
                        .where(InboxItem.broadcast_id == b.id)
                        .order_by(InboxItem.commune_id)
                    )
                    if scope is None or i.commune_id in scope
                ]
            out.update(
                {
                    "aired_ratio": aired_ratio(all_phases),
                    "airings": airing_rows,
                    "airing_id": chosen.id if chosen else None,
                    "airing_status": chosen.status if chosen else None,
                    "outcomes": outcomes,
                }
            )
            return out

    def list(
        self, actor: Actor, *, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> dict[str, Any]:
        with self.db.session() as s:
            q = select(Broadcast)
            if status:
                q = q.where(Broadcast.status == status)
            if not actor.whole_province:
                # Their communes' own broadcasts, and the province's that touch them: both in
                # SQL, so the page and the total cost a few queries however many were sent.
                ids = set(actor.commune_ids or ())
                province_rows = s.execute(
                    select(Broadcast.id, Broadcast.targets).where(
                        Broadcast.owner_commune_id.is_(None)
                    )
                ).all()
                reaching = self.reach.reaching(s, province_rows, ids)
                q = q.where(
                    or_(Broadcast.owner_commune_id.in_(sorted(ids)), Broadcast.id.in_(reaching))
                )
            q = q.order_by(Broadcast.created_ms.desc(), Broadcast.id.desc())
            total = s.scalar(select(func.count()).select_from(q.subquery())) or 0
            rows = s.scalars(q.limit(limit).offset(offset)).all()
            return {
                "items": [self._summary(s, b) for b in rows],
                "total": total,
                "limit": limit,
                "offset": offset,
            }

    # ``builtins.list``: inside this class ``list`` names the method above.
    def occurrences(self, actor: Actor, from_ms: int, to_ms: int) -> builtins.list[dict[str, Any]]:
        """Every slot in ``[from_ms, to_ms)`` for a calendar: past ones from the airings (with
        how they went), future ones from the rules."""
        if to_ms <= from_ms:
            raise InvalidBroadcast("«to» phải sau «from».")
        if to_ms - from_ms > MAX_CALENDAR_DAYS * 86_400_000:
            raise InvalidBroadcast(f"Chỉ xem lịch tối đa {MAX_CALENDAR_DAYS} ngày một lần.")
        out: dict[tuple[int, int], dict[str, Any]] = {}
        with self.db.session() as s:
            candidates = s.scalars(
                select(Broadcast).where(
                    Broadcast.status.in_(
                        ("scheduled", "submitted", "approved", "aired", "partly_aired", "missed")
                    )
                )
            ).all()
            for b in candidates:
                if not self._may_see(s, actor, b):
                    continue
                base = {
                    "broadcast_id": b.id,
                    "title": b.title,
                    "priority": b.priority,
                    "broadcast_status": b.status,
                    "duration_ms": b.duration_ms,
                }
                for a in s.scalars(
                    select(Airing).where(
                        Airing.broadcast_id == b.id,
                        Airing.slot_ms >= from_ms,
                        Airing.slot_ms < to_ms,
                    )
                ):
                    out[(b.id, a.slot_ms)] = {
                        **base,
                        "start_at": iso(a.slot_ms),
                        "start_ms": a.slot_ms,
                        "end_ms": a.slot_ms + b.duration_ms,
                        "airing_id": a.id,
                        "status": a.status,
                    }
                if b.status in ("scheduled", "submitted", "approved"):
                    for slot in slots_between(
                        b, max(from_ms, b.scheduled_ms or 0), to_ms, limit=1_000
                    ):
                        out.setdefault(
                            (b.id, slot),
                            {
                                **base,
                                "start_at": iso(slot),
                                "start_ms": slot,
                                "end_ms": slot + b.duration_ms,
                                "airing_id": None,
                                "status": "planned" if b.status == "scheduled" else b.status,
                            },
                        )
        return sorted(out.values(), key=lambda r: (r["start_ms"], r["broadcast_id"]))

    # ------------------------------------------------------------------ saved groups

    def create_group(
        self,
        actor: Actor,
        name: Any,
        targets: Any,
        *,
        client_key: str | None = None,
        audit: InTransaction | None = None,
    ) -> dict[str, Any]:
        """A saved set of places; ``client_key`` and ``audit`` as for ``create``."""
        if actor.role not in ("province", "commune"):
            raise Forbidden("Chỉ cán bộ xã hoặc cấp tỉnh được tạo nhóm nơi phát.")
        if not isinstance(name, str) or not name.strip() or len(name) > 200:
            raise InvalidBroadcast("Tên nhóm phải có từ 1 đến 200 ký tự.")
        targets = normalize_targets(targets)
        if targets["groups"]:
            raise InvalidBroadcast("Nhóm nơi phát không được chứa nhóm khác.")
        client_key = check_client_key(client_key)
        asked = {"name": name, "targets": targets}
        with self.db.session() as s:
            row = (
                idempotency.earlier(s, actor.username, client_key, "group.create", asked)
                if client_key
                else None
            )
            if row is not None:
                earlier: dict[str, Any] = row.response
                return earlier
            check_targets(s, targets, actor)
            owner = self._owner_commune(s, actor, targets)
            g = SavedGroup(
                name=name.strip(),
                owner_commune_id=owner,
                targets=targets,
                created_by=actor.username,
                created_ms=self.clock(),
            )
            s.add(g)
            s.flush()
            out = self._group_dict(s, g)
            if client_key:
                idempotency.remember(
                    s,
                    actor.username,
                    client_key,
                    "group.create",
                    asked,
                    resource_id=g.id,
                    response=out,
                    now_ms=self.clock(),
                )
            if audit is not None:
                audit(s, out)
            return out

    def _group_dict(self, s: Session, g: SavedGroup) -> dict[str, Any]:
        return {
            "id": g.id,
            "name": g.name,
            "owner_commune_id": g.owner_commune_id,
            "targets": g.targets,
            "nodes": len(resolve_nodes(s, g.targets)),
            "created_by": g.created_by,
            "created_at": iso(g.created_ms),
        }

    def list_groups(self, actor: Actor) -> builtins.list[dict[str, Any]]:
        with self.db.session() as s:
            q = select(SavedGroup).order_by(SavedGroup.name)
            if not actor.whole_province:
                q = q.where(SavedGroup.owner_commune_id.in_(sorted(actor.commune_ids or ())))
            return [self._group_dict(s, g) for g in s.scalars(q)]

    def delete_group(self, actor: Actor, group_id: int) -> None:
        with self.db.session() as s:
            g = s.get(SavedGroup, group_id)
            if g is None or not (
                actor.is_province
                or (
                    g.owner_commune_id is not None
                    and actor.role == "commune"
                    and actor.covers_commune(g.owner_commune_id)
                )
            ):
                raise NotFound(f"Không tìm thấy nhóm nơi phát số {group_id}.")
            s.delete(g)


__all__ = [
    "BroadcastService",
    "Recurrence",
    "STATUS_LABELS_VI",
    "content_use_counts",
    "content_users",
    "iso",
]
