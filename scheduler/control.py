"""Full control of what was scheduled, and the check an officer confirms before sending.

- ``check``: a dry run of ``create``: the same parsing, scope and conflict checks, and one
  summary in words (villages by name, clusters and how many are offline now, when, how long,
  priority, language). Nothing is written, so a refused or abandoned send leaves nothing.
- ``edit``: a new version with the changes; the old one is cancelled and kept as history
  (``previous_version_id`` links them).
- ``pause`` / ``resume``: no slot is dispatched while paused; slots that passed meanwhile are
  skipped, not recorded as missed (the officer chose not to play them).
- ``skip``: one occurrence of a recurring bulletin (an exception date); ``set_recurrence``:
  its end date and exceptions.

Every action follows the same scope rule as cancel: the province, or an officer of the
bulletin's own commune. The running scheduler is told after commit, as for create/cancel.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

from loa import idempotency
from loa.timeutil import ICT
from scheduler.errors import Conflict, Forbidden, InvalidBroadcast
from scheduler.models import Broadcast
from scheduler.recurrence import build_recurrence, describe_slot, parse_local_date
from scheduler.request import PRIORITY_LABELS, parse_request
from scheduler.slots import airtime_ms, next_slot_at_or_after, recurrence_of
from scheduler.targets import Actor, check_targets, describe_places, resolve_nodes

if TYPE_CHECKING:
    from sqlalchemy.orm import Session

    from loa.db import Database
    from scheduler.config import SchedulerSettings
    from scheduler.content import ContentGateway
    from scheduler.request import BroadcastRequest
    from scheduler.workflow import InTransaction, RuntimeHook

    class _Service(Protocol):
        """What these methods use of the ``BroadcastService`` they belong to (a protocol:
        mypy takes no subclass as the type of a mixin's ``self``)."""

        db: Database
        settings: SchedulerSettings
        content: ContentGateway | None
        runtime: RuntimeHook | None
        clock: Callable[[], int]

        def create(
            self,
            actor: Actor,
            payload: Any,
            *,
            client_key: str | None = None,
            replaces: int | None = None,
            audit: InTransaction | None = None,
            asked: Any = None,
        ) -> dict[str, Any]: ...
        def _replay(
            self, actor: Actor, client_key: str, action: str, asked: Any
        ) -> dict[str, Any] | None: ...
        def _load(self, s: Session, actor: Actor, broadcast_id: int) -> Broadcast: ...
        def _may_manage(self, actor: Actor, b: Broadcast) -> bool: ...
        def _check_level(self, actor: Actor, req: BroadcastRequest) -> None: ...
        def _check_conflicts(
            self, s: Session, b: Broadcast, now: int, exclude: set[int] | None = None
        ) -> None: ...
        def _owner_commune(
            self, s: Session, actor: Actor, targets: dict[str, Any]
        ) -> int | None: ...
        def _summary(self, s: Session, b: Broadcast) -> dict[str, Any]: ...
        def _notify_scheduled(self, broadcast_id: int) -> None: ...
        def _estimate_ms(self, req: BroadcastRequest) -> int: ...
        def _managed(self, s: Session, actor: Actor, broadcast_id: int, verb: str) -> Broadcast: ...


LANGUAGE_LABELS = {"vi": "Tiếng Việt", "tay": "Tày", "nung": "Nùng", "dao": "Dao", "other": "Khác"}
# What an edit may change; anything else is refused by parse_request as usual.
EDITABLE = (
    "title",
    "tts_text",
    "content_id",
    "targets",
    "start_at",
    "recurrence",
    "priority",
    "language",
    "volume",
    "repeat",
    "confirm",
)


def check_client_key(key: str | None) -> str | None:
    """An idempotency key: 8-80 letters, digits or ``_.:-`` (a UUID fits); the one check of
    ``loa.idempotency``, refused as a scheduling error."""
    return idempotency.check_key(key, InvalidBroadcast)


def format_duration(ms: int) -> str:
    """ "2 phút 05 giây", "45 giây", "1 giờ 30 phút": how long, in words a listener uses."""
    total = max(0, round(ms / 1000))
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    if hours:
        return f"{hours} giờ {minutes:02d} phút" if minutes else f"{hours} giờ"
    if minutes:
        return f"{minutes} phút {seconds:02d} giây" if seconds else f"{minutes} phút"
    return f"{seconds} giây"


def when_text(start_ms: int | None, now_choice: bool, rule: str | None) -> str:
    if now_choice:
        return "Phát ngay"
    if start_ms is None:
        return "–"
    text = describe_slot(start_ms)
    if rule:
        text += (
            " (lặp lại: "
            + (
                "hằng ngày"
                if "DAILY" in rule
                else "các ngày trong tuần"
                if "WEEKLY" in rule
                else rule
            )
            + ")"
        )
    return text


class ControlMixin:
    """Methods of :class:`scheduler.workflow.BroadcastService` (kept apart to stay readable)."""

    # ------------------------------------------------------------------ check before send

    def check(
        self: _Service, actor: Actor, payload: Any, *, replaces: int | None = None
    ) -> dict[str, Any]:
        """What ``create`` would do with ``payload``, in words, without writing anything.
        ``replaces``: the bulletin an edit would supersede (it does not conflict with its
        own new version)."""
        if actor.role not in ("province", "commune"):
            raise Forbidden("Chỉ cán bộ xã hoặc cấp tỉnh được tạo bản tin.")
        now = self.clock()
        req = parse_request(payload, now)
        self._check_level(actor, req)
        duration_ms = self._estimate_ms(req)
        now_choice = req.start_at_ms is None or req.priority == "emergency"
        start_ms = (
            now + int(self.settings.start_now_delay_s * 1000) if now_choice else req.start_at_ms
        )
        with self.db.session() as s:
            if replaces is not None:
                self._managed(s, actor, replaces, "sửa")
            check_targets(s, req.targets, actor)
            owner = self._owner_commune(s, actor, req.targets)
            nodes = resolve_nodes(s, req.targets)
            to_inboxes = owner is None and req.priority == "normal"
            if not to_inboxes and not nodes:
                raise InvalidBroadcast("Nơi phát đã chọn chưa có cụm loa nào đang hoạt động.")
            places = describe_places(s, req.targets, nodes)
            probe = Broadcast(
                id=-1,
                title=req.title,
                priority=req.priority,
                targets=req.targets,
                start_at_ms=start_ms,
                recurrence=req.recurrence.rule if req.recurrence else None,
                recurrence_until_ms=(req.recurrence.until_ms if req.recurrence else None),
                recurrence_exdates=(list(req.recurrence.exdates) if req.recurrence else None),
                owner_commune_id=owner,
                duration_ms=duration_ms,
            )
            self._check_conflicts(s, probe, now, {replaces} if replaces else None)
        limit_s = self.settings.long_bulletin_s
        return {
            "title": req.title,
            "places": places,
            "start_at_ms": start_ms,
            "now": now_choice,
            "when": when_text(start_ms, now_choice, probe.recurrence),
            "duration_ms": duration_ms,
            "duration": format_duration(duration_ms),
            "priority": req.priority,
            "priority_label": PRIORITY_LABELS[req.priority],
            "language": req.language,
            "language_label": LANGUAGE_LABELS.get(req.language, req.language),
            "to_inboxes": to_inboxes,
            "long": bool(limit_s and duration_ms > limit_s * 1000),
            "long_limit": format_duration(limit_s * 1000) if limit_s else None,
        }

    def _estimate_ms(self: _Service, req: BroadcastRequest) -> int:
        """Airtime of the request: an uploaded file's real length; for text the length of
        the spoken preview (cached, the same one "Nghe thử" plays)."""
        gap_ms = int(self.settings.repeat_gap_s * 1000)
        if req.stream:  # a live stream: its planned length
            return (req.duration_s or self.settings.stream_default_duration_s) * 1000
        if self.content is None:
            from scheduler.errors import Unavailable

            raise Unavailable("Kho nội dung âm thanh chưa sẵn sàng.")
        if req.content_id is not None:
            content_ms = int(self.content.require(req.content_id).duration_ms)
        else:
            content_ms = self.content.spoken_ms(
                req.tts_text or "", language=req.language, voice=req.voice, engine=req.engine
            )
        return airtime_ms(content_ms, req.repeat, gap_ms)

    # ------------------------------------------------------------------ control

    def _managed(
        self: _Service, s: Session, actor: Actor, broadcast_id: int, verb: str
    ) -> Broadcast:
        b = self._load(s, actor, broadcast_id)
        if not self._may_manage(actor, b):
            raise Forbidden(f"Bạn không được {verb} bản tin này.")
        return b

    def edit(
        self: _Service,
        actor: Actor,
        broadcast_id: int,
        payload: Any,
        *,
        client_key: str | None = None,
        audit: InTransaction | None = None,
    ) -> dict[str, Any]:
        """A new version with ``payload``'s changes over the old fields; the old version is
        cancelled (stopped on the clusters if it is on air) and kept as history. The new
        version, the cancelled old one and the audit row are one transaction."""
        from scheduler.workflow import STATUS_LABELS_VI, iso

        if not isinstance(payload, dict):
            raise InvalidBroadcast("Yêu cầu phải là một đối tượng JSON.")
        unknown = sorted(set(payload) - set(EDITABLE))
        if unknown:
            raise InvalidBroadcast(f"Không sửa được: {', '.join(unknown)}.")
        # A retry of an edit that went through finds the old version cancelled: it answers
        # with the new version (same key, same changes) before the status check refuses it.
        client_key = check_client_key(client_key)
        asked = {"payload": payload, "replaces": broadcast_id}
        if client_key is not None:
            earlier = self._replay(actor, client_key, "broadcast.edit", asked)
            if earlier is not None:
                return earlier
        now = self.clock()
        with self.db.session() as s:
            old = self._managed(s, actor, broadcast_id, "sửa")
            if old.status not in ("draft", "submitted", "scheduled", "paused"):
                raise Conflict(
                    f"Bản tin đang ở trạng thái «{STATUS_LABELS_VI[old.status]}», không sửa được."
                )
            if old.stream_url or old.stream_mount:
                raise InvalidBroadcast("Không sửa được phát trực tiếp; hãy dừng và phát lại.")
            rec = recurrence_of(old)
            merged: dict[str, Any] = {
                "title": old.title,
                "targets": old.targets,
                "priority": old.priority,
                "language": old.language,
                "volume": old.volume,
                "repeat": old.repeat,
            }
            if old.tone:  # an alert's node-made warning tone stays with the new version
                merged["tone"] = old.tone
            if old.start_at_ms is not None and (rec is not None or old.start_at_ms > now):
                merged["start_at"] = iso(old.start_at_ms)
            else:
                merged["start_at"] = "now"
            if rec is not None:
                merged["recurrence"] = {
                    "rrule": rec.rule,
                    "exceptions": list(rec.exdates),
                    **({"until": rec.until_ms} if rec.until_ms else {}),
                }
            if "tts_text" in payload or "content_id" in payload:
                pass
            elif old.tts_text:
                merged["tts_text"] = old.tts_text
            else:
                merged["content_id"] = old.content_id
        kept = merged.get("recurrence")
        merged.update(payload)
        new_rec = merged.get("recurrence")
        if (
            isinstance(kept, dict)
            and isinstance(new_rec, dict)
            and "exceptions" not in new_rec
            and new_rec.get("rrule") == kept["rrule"]
        ):
            # The same rule edited from the form: the days already skipped stay skipped.
            merged["recurrence"] = {**new_rec, "exceptions": kept["exceptions"]}
        if merged.get("recurrence") in (None, "", {}):
            merged.pop("recurrence", None)
        was_live: list[bool] = []

        def retire_old(s: Session, out: dict[str, Any]) -> None:
            old = s.get_one(Broadcast, broadcast_id)
            was_live.append(old.status in ("scheduled", "paused"))
            old.status = "cancelled"
            old.updated_ms = now
            if audit is not None:
                audit(s, out)

        new = self.create(
            actor,
            merged,
            client_key=client_key,
            replaces=broadcast_id,
            audit=retire_old,
            asked=asked,
        )
        if new.get("replayed"):
            return new
        if was_live and was_live[0] and self.runtime is not None:
            self.runtime.on_cancelled(broadcast_id)
        return new

    def history(self: _Service, actor: Actor, broadcast_id: int) -> list[dict[str, Any]]:
        """Every version of a bulletin, newest first (the one asked for and its ancestors)."""
        out = []
        with self.db.session() as s:
            b: Broadcast | None = self._load(s, actor, broadcast_id)
            seen: set[int] = set()
            while b is not None and b.id not in seen:
                seen.add(b.id)
                out.append(self._summary(s, b))
                b = s.get(Broadcast, b.previous_version_id) if b.previous_version_id else None
        return out

    def pause(
        self: _Service, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            b = self._managed(s, actor, broadcast_id, "tạm dừng")
            if b.status != "scheduled":
                raise Conflict("Chỉ tạm dừng được bản tin đã lên lịch.")
            b.status = "paused"
            b.updated_ms = now
            out = self._summary(s, b)
            if audit is not None:
                audit(s, out)
        if self.runtime is not None and hasattr(self.runtime, "on_paused"):
            self.runtime.on_paused(broadcast_id)
        return out

    def resume(
        self: _Service, actor: Actor, broadcast_id: int, *, audit: InTransaction | None = None
    ) -> dict[str, Any]:
        now = self.clock()
        with self.db.session() as s:
            b = self._managed(s, actor, broadcast_id, "tiếp tục")
            if b.status != "paused":
                raise Conflict("Bản tin không ở trạng thái tạm dừng.")
            if next_slot_at_or_after(b, now) is None:
                raise InvalidBroadcast(
                    "Bản tin không còn lần phát nào trong tương lai; hãy sửa giờ phát hoặc hủy nó."
                )
            self._check_conflicts(s, b, now)
            b.status = "scheduled"
            # Slots that passed while paused were skipped on purpose, not missed.
            b.scheduled_ms = now
            b.updated_ms = now
            out = self._summary(s, b)
            if audit is not None:
                audit(s, out)
        self._notify_scheduled(broadcast_id)
        return out

    def skip(
        self: _Service,
        actor: Actor,
        broadcast_id: int,
        payload: Any,
        *,
        audit: InTransaction | None = None,
    ) -> dict[str, Any]:
        """Leave out one day of a recurring bulletin (``{"date": "dd/mm/yyyy"}``)."""
        raw = payload.get("date") if isinstance(payload, dict) else None
        if not isinstance(raw, str) or not raw.strip():
            raise InvalidBroadcast("Hãy chọn ngày bỏ phát («date», dd/mm/yyyy).")
        day = parse_local_date(raw)
        now = self.clock()
        with self.db.session() as s:
            b = self._managed(s, actor, broadcast_id, "sửa")
            rec = recurrence_of(b)
            if rec is None:
                raise InvalidBroadcast("Bản tin này chỉ phát một lần: hãy dùng «Hủy».")
            if b.status not in ("scheduled", "paused", "submitted", "draft"):
                raise Conflict("Bản tin đã kết thúc.")
            start = int(datetime(day.year, day.month, day.day, tzinfo=ICT).timestamp() * 1000)
            slot = next(rec.iter_from(max(start, now)), None)
            if slot is None or slot >= start + 86_400_000:
                raise InvalidBroadcast(f"Ngày {day:%d/%m/%Y} không có lần phát nào sắp tới.")
            dates = sorted({*(b.recurrence_exdates or ()), day.isoformat()})
            b.recurrence_exdates = dates
            b.updated_ms = now
            out = self._summary(s, b)
            status = b.status
            if audit is not None:
                audit(s, out)
        if status == "scheduled":
            self._notify_scheduled(broadcast_id)
        return out

    def set_recurrence(
        self: _Service,
        actor: Actor,
        broadcast_id: int,
        payload: Any,
        *,
        audit: InTransaction | None = None,
    ) -> dict[str, Any]:
        """End date (``until``, dd/mm/yyyy or empty for none) and exception dates."""
        if not isinstance(payload, dict):
            raise InvalidBroadcast("Yêu cầu phải là một đối tượng JSON {until, exceptions}.")
        now = self.clock()
        with self.db.session() as s:
            b = self._managed(s, actor, broadcast_id, "sửa")
            rec = recurrence_of(b)
            if rec is None:
                raise InvalidBroadcast("Bản tin này không lặp lại.")
            if b.status not in ("scheduled", "paused", "submitted", "draft"):
                raise Conflict("Bản tin đã kết thúc.")
            exceptions = payload.get("exceptions", list(rec.exdates))
            if not isinstance(exceptions, list):
                raise InvalidBroadcast("«exceptions» phải là danh sách ngày.")
            until = payload.get("until", rec.until_ms)
            new = build_recurrence(
                rec.rule,
                rec.dtstart_ms,
                until=until or None,
                exceptions=[str(x) for x in exceptions],
            )
            if new.next_after(now - 1) is None:
                raise InvalidBroadcast(
                    "Sau thay đổi này bản tin không còn lần phát nào; hãy "
                    "dùng «Hủy» nếu muốn dừng hẳn."
                )
            b.recurrence_until_ms = new.until_ms
            b.recurrence_exdates = list(new.exdates)
            b.updated_ms = now
            out = self._summary(s, b)
            status = b.status
            if audit is not None:
                audit(s, out)
        if status == "scheduled":
            self._notify_scheduled(broadcast_id)
        return out


__all__ = ["ControlMixin", "check_client_key", "format_duration", "LANGUAGE_LABELS"]
