"""Receiving CAP alerts and putting them on the air, with a record of every step.

One entry, ``AlertService.receive``, for the three ways a document arrives (REST POST, feed,
web upload). The raw bytes are stored first, whatever happens next, so a refused or
unexpected document is never lost and the sender can be told why. Then:

- signature: checked when present (trusted certificates only); unsigned documents pass only
  where the policy allows (``signature_policy``);
- duplicates (same sender, identifier, sent) are recorded and ignored;
- ``Ack``/``Error`` and ``System``/``Draft`` never air; ``Exercise``/``Test`` air only on the
  clusters of the saved groups marked for drills, with "this is a drill" spoken around them;
- an expired alert never airs;
- ``Update``/``Cancel`` close the alerts they reference: what is playing is stopped through
  the scheduler's cancel path (a ``stop`` to each node), and a Cancel airs an "all clear";
- the area selects the clusters; automatic mode (trusted sender, severe enough) airs at once
  as an *emergency* broadcast (the scheduler's own emergency path: pre-empts, forced volume),
  otherwise a province or commune officer approves, with an escalation timeout;
- an aired alert repeats every N minutes until it expires or is cancelled.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from alerts import cap as capmod
from alerts import mapview, speech
from alerts.areas import Cluster, load_clusters, select_clusters, targets_for
from alerts.config import AlertSettings
from alerts.errors import AlertConflict, AlertError, AlertForbidden, AlertNotFound, CapRefused
from alerts.figures import start_figures
from alerts.models import AlertStep, AlertTemplate, CapAlert, CapMessage
from alerts.signature import has_signature, load_certificates, verify
from loa import idempotency
from loa.db import Database
from loa.timeutil import format_datetime, now_ms
from scheduler.errors import ScheduleError
from scheduler.models import Airing, AiringTarget, Broadcast
from scheduler.targets import Actor, resolve_nodes
from scheduler.workflow import iso

log = logging.getLogger("loa.alerts")

STATE_LABELS_VI = {
    "pending_approval": "Chờ duyệt",
    "escalated": "Chờ duyệt (đã chuyển lên tỉnh)",
    "airing": "Đang phát",
    "not_aired": "Không phát",
    "expired": "Đã hết hiệu lực",
    "cancelled": "Đã hủy",
    "superseded": "Đã được cập nhật",
    "rejected": "Bị từ chối phát",
    "info": "Chỉ lưu (không phát)",
}
ACTIVE = ("pending_approval", "escalated", "airing")
STEP_LABELS_VI = {
    "received": "Nhận tài liệu",
    "duplicate": "Nhận lại (trùng, bỏ qua)",
    "area_matched": "Xác định cụm loa trong vùng",
    "awaiting_approval": "Chờ duyệt",
    "approved": "Đã duyệt",
    "aired": "Đã phát",
    "repeated": "Phát lặp lại",
    "repeat_failed": "Phát lặp lại không được",
    "not_aired": "Không phát",
    "expired": "Hết hiệu lực",
    "escalated": "Chuyển lên cấp tỉnh",
    "approval_timeout": "Quá thời gian chờ duyệt",
    "rejected": "Từ chối phát",
    "cancelled": "Đã hủy",
    "superseded": "Được cập nhật",
    "cancel_applied": "Áp dụng lệnh hủy",
    "all_clear": "Lên lịch thông báo bãi bỏ",
    "all_clear_failed": "Không phát được bãi bỏ",
    "stop_requested": "Yêu cầu dừng",
    "recording_failed": "Không phát được bản ghi âm",
}
AUTO_ACTOR = "cap-tu-dong"
# audit(session, action, username, target, detail): installed by the composition (the
# dashboard writes the shared audit log); alert_step keeps the alert's own timeline anyway.
AuditHook = Callable[[Session, str, str, str, dict], None]


def targets_by_node(s: Session, broadcast_id: int) -> tuple[dict[str, AiringTarget], int | None]:
    """Each cluster's target row in a broadcast's first airing that reached it (a repeat is
    its own broadcast), and when the airing was dispatched."""
    per_node: dict[str, AiringTarget] = {}
    dispatched = None
    for t, a in s.execute(
        select(AiringTarget, Airing)
        .join(Airing)
        .where(Airing.broadcast_id == broadcast_id)
        .order_by(Airing.slot_ms)
    ).all():
        per_node.setdefault(t.node_id, t)
        dispatched = dispatched or a.dispatched_ms
    return per_node, dispatched


def not_started_reason(t: AiringTarget | None) -> str:
    """Why a targeted cluster did not start: never sent the command, or its last phase."""
    if t is None:
        return "Chưa được gửi lệnh (cụm loa chưa có trong lượt phát)"
    return f"{t.phase}" + (f": {t.error}" if t.error else "")


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


class AlertService:
    def __init__(
        self,
        db: Database,
        broadcasts: Any = None,
        settings: AlertSettings | None = None,
        *,
        content: Any = None,
        clock: Callable[[], int] = now_ms,
        audit: AuditHook | None = None,
        certificates: list[str] | None = None,
    ) -> None:
        self.db = db
        self.broadcasts = broadcasts  # scheduler.workflow.BroadcastService
        self.settings = settings or AlertSettings()
        self.content = content  # scheduler.content.ContentGateway, for warning tones
        self.clock = clock
        self.audit = audit
        self.certificates = (
            certificates
            if certificates is not None
            else load_certificates(self.settings.trusted_certs)
        )

    # ------------------------------------------------------------------ record keeping

    def _step(
        self,
        s: Session,
        alert_id: int | None,
        action: str,
        actor: str,
        detail: dict | None = None,
        target: str = "",
    ) -> None:
        if alert_id is not None:
            s.add(
                AlertStep(
                    alert_id=alert_id, at_ms=self.clock(), action=action, actor=actor, detail=detail
                )
            )
        if self.audit is not None:
            self.audit(
                s,
                f"alert.{action}",
                actor,
                target or (f"alert:{alert_id}" if alert_id else ""),
                detail or {},
            )

    # ------------------------------------------------------------------ receive

    def receive(
        self,
        raw: bytes,
        *,
        source: str,
        source_ref: str = "",
        trusted_source: bool = False,
        truncated_from: int | None = None,
        client_key: str | None = None,
    ) -> dict[str, Any]:
        """Store, check and handle one document. Raises ``CapRefused`` (after storing the
        document with its reason) when it is refused. ``client_key``: the sender's
        ``Idempotency-Key`` (``loa.idempotency``, per ``source_ref``): the same key with the
        same document answers with the alert it created, with another document 409."""
        now = self.clock()
        raw = bytes(raw)
        client_key = idempotency.check_key(client_key)
        if client_key is not None:
            replay = self._replay(source_ref, client_key, raw)
            if replay is not None:
                return replay
        try:
            if truncated_from is not None:
                raise capmod.refuse(
                    "too_large",
                    f"Tài liệu CAP quá lớn ({truncated_from:,} byte; tối đa "
                    f"{self.settings.max_bytes:,} byte).".replace(",", "."),
                    f"CAP document too large ({truncated_from} bytes; at most "
                    f"{self.settings.max_bytes}); only the first bytes were kept.",
                    413,
                )
            root, alert = capmod.load(raw, max_bytes=self.settings.max_bytes)
            signed = has_signature(root)
            if signed:
                verified = verify(root, self.certificates)
                alert = capmod.read_alert(verified.root)
                alert.signed = True
            elif self.settings.signature_policy == "require":
                raise capmod.refuse(
                    "unsigned",
                    "Tỉnh yêu cầu mọi cảnh báo CAP phải có chữ ký "
                    "số hợp lệ; tài liệu này không có chữ ký.",
                    "Signatures are required and this document is unsigned.",
                    403,
                )
            elif not trusted_source:
                raise capmod.refuse(
                    "unsigned",
                    "Nguồn này chưa được tin cậy nên cảnh báo phải có chữ ký số hợp lệ.",
                    "Unsigned documents are accepted only from trusted sources.",
                    403,
                )
        except CapRefused as exc:
            self._store_refusal(raw, source, source_ref, now, exc)
            raise
        try:
            return self._accept(raw, alert, source, source_ref, now, client_key)
        except IntegrityError:
            # The same alert (or the same key) arrived twice at once (API and feed): the
            # other one won; this one is a duplicate like any other.
            replay = self._replay(source_ref, client_key, raw) if client_key else None
            if replay is not None:
                return replay
            return self._accept(raw, alert, source, source_ref, now, client_key)

    def _replay(self, source_ref: str, client_key: str, raw: bytes) -> dict[str, Any] | None:
        with self.db.session() as s:
            row = idempotency.earlier(s, source_ref, client_key, "alert.receive", _sha(raw))
        if row is None or row.resource_id is None:
            return None
        return self.summary(int(row.resource_id)) | {"result": "duplicate", "replayed": True}

    def _store_refusal(
        self, raw: bytes, source: str, source_ref: str, now: int, exc: CapRefused
    ) -> None:
        with self.db.session() as s:
            msg = CapMessage(
                received_ms=now,
                source=source,
                source_ref=source_ref[:500],
                sha256=_sha(raw),
                size=len(raw),
                raw=raw,
                outcome="refused",
                reason_code=exc.code,
                reason=exc.message,
            )
            s.add(msg)
            s.flush()
            self._step(
                s,
                None,
                "refused",
                source_ref or source,
                {"message_id": msg.id, "code": exc.code, "reason": exc.message},
                target=f"cap_message:{msg.id}",
            )
        log.warning("CAP bị từ chối (%s, %s): %s", source, exc.code, exc.message)

    def _accept(
        self,
        raw: bytes,
        alert: capmod.CapAlert,
        source: str,
        source_ref: str,
        now: int,
        client_key: str | None = None,
    ) -> dict[str, Any]:
        info = alert.info_for()

        def remember(s: Session, alert_id: int) -> None:
            if client_key is not None:
                idempotency.remember(
                    s,
                    source_ref,
                    client_key,
                    "alert.receive",
                    _sha(raw),
                    resource_id=alert_id,
                    now_ms=now,
                )

        with self.db.session() as s:
            dup = s.scalar(
                select(CapAlert).where(
                    CapAlert.sender == alert.sender[:300],
                    CapAlert.identifier == alert.identifier[:300],
                    CapAlert.sent_ms == alert.sent_ms,
                )
            )
            msg = CapMessage(
                received_ms=now,
                source=source,
                source_ref=source_ref[:500],
                sha256=_sha(raw),
                size=len(raw),
                raw=raw,
                outcome="duplicate" if dup else "accepted",
                signed=alert.signed,
                sender=alert.sender[:300],
                identifier=alert.identifier[:300],
                alert_id=dup.id if dup else None,
            )
            s.add(msg)
            if dup is not None:
                s.flush()
                remember(s, dup.id)
                self._step(s, dup.id, "duplicate", source_ref or source, {"message_id": msg.id})
                return {
                    "result": "duplicate",
                    "alert_id": dup.id,
                    "state": dup.state,
                    "detail": "Cảnh báo này đã nhận trước đó (cùng sender, identifier, "
                    "sent); bỏ qua.",
                    "detail_en": "Already received (same sender, identifier, sent).",
                }
            s.flush()
            row = CapAlert(
                message_id=msg.id,
                sender=alert.sender[:300],
                identifier=alert.identifier[:300],
                sent_ms=alert.sent_ms,
                sent=alert.sent[:40],
                msg_type=alert.msg_type,
                status=alert.status,
                severity=alert.max_severity(),
                urgency=info.urgency if info else "Unknown",
                event=(info.event if info else "")[:300],
                headline=((info.headline or "") if info else "")[:500],
                language=(info.language if info else "")[:20],
                area_desc="; ".join(dict.fromkeys(a.desc for a in alert.areas()))[:2000],
                expires_ms=alert.expires_ms(),
                received_ms=now,
                state="info",
                drill=alert.status in ("Exercise", "Test"),
                node_ids=[],
                broadcast_ids=[],
                references=[],
            )
            s.add(row)
            s.flush()
            msg.alert_id = row.id
            alert_id = row.id
            remember(s, alert_id)
            self._step(
                s,
                alert_id,
                "received",
                source_ref or source,
                {
                    "message_id": msg.id,
                    "source": source,
                    "msg_type": alert.msg_type,
                    "status": alert.status,
                    "signed": alert.signed,
                },
            )
        try:
            self._handle(alert_id, alert)
        except Exception as exc:  # stored already: say on its page why it did not air
            log.exception("CAP alert %s could not be handled", alert_id)
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "not_aired",
                f"Lỗi khi xử lý cảnh báo, chưa phát: {type(exc).__name__}: {exc}"[:1000],
            )
        return self.summary(alert_id) | {"result": "accepted"}

    # ------------------------------------------------------------------ decisions

    def _set(
        self,
        alert_id: int,
        actor: str,
        action: str,
        state: str,
        reason: str | None,
        detail: dict | None = None,
        **fields: Any,
    ) -> None:
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            row.state = state
            row.state_reason = reason
            for k, v in fields.items():
                setattr(row, k, v)
            self._step(
                s, alert_id, action, actor, {"state": state, "reason": reason, **(detail or {})}
            )

    def _handle(self, alert_id: int, alert: capmod.CapAlert) -> None:
        now = self.clock()
        if alert.msg_type in ("Ack", "Error"):
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "info",
                f"Bản tin loại {alert.msg_type} chỉ được lưu, không bao giờ phát.",
            )
            return
        if alert.msg_type in ("Update", "Cancel"):
            refs = self._referenced(alert)
            with self.db.session() as s:
                s.get(CapAlert, alert_id).references = refs
            if alert.msg_type == "Cancel":
                closed = self._close(refs, alert_id, "cancelled", all_clear=True)
                reason = (
                    f"Đã hủy {len(closed)} cảnh báo được tham chiếu."
                    if closed
                    else "Không có cảnh báo đang hiệu lực nào khớp «references»."
                )
                self._set(
                    alert_id, AUTO_ACTOR, "cancel_applied", "info", reason, {"closed": closed}
                )
                return
        if alert.status in ("System", "Draft"):
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "not_aired",
                f"Trạng thái «{alert.status}» không bao giờ được phát.",
            )
            return self._close_if_update(alert, alert_id)
        drill = alert.status in ("Exercise", "Test")
        if not drill and alert.status not in self.settings.air_statuses:
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "not_aired",
                f"Trạng thái «{alert.status}» không nằm trong danh sách được phát.",
            )
            return self._close_if_update(alert, alert_id)
        expires = alert.expires_ms()
        if expires is not None and expires <= now:
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "expired",
                f"Cảnh báo đã hết hiệu lực lúc {iso(expires)}; không phát.",
            )
            return self._close_if_update(alert, alert_id)
        if not alert.infos:
            self._set(
                alert_id,
                AUTO_ACTOR,
                "not_aired",
                "not_aired",
                "Cảnh báo không có khối «info» nên không có gì để đọc.",
            )
            return self._close_if_update(alert, alert_id)

        with self.db.session() as s:
            clusters = load_clusters(s)
            selection = select_clusters(s, alert, self.settings, clusters)
            chosen = selection.clusters
            if drill:
                allowed = (
                    {t.node_id for t in resolve_nodes(s, {"groups": self.settings.drill_group_ids})}
                    if self.settings.drill_group_ids
                    else set()
                )
                chosen = [c for c in chosen if c.node_id in allowed]
            targets = targets_for(chosen, clusters) if chosen else None
            template = self._template(s, alert.info_for())
            tone = self._tone_for(s, alert.info_for())
        info = alert.info_for()
        assert info is not None
        text = speech.compose(alert, info, template, drill=drill)
        spoken = self._spoken(text)
        ends = expires or (now + int(self.settings.default_duration_min * 60_000))
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            row.node_ids = [c.node_id for c in chosen]
            row.targets = targets
            row.text = text
            row.spoken = spoken
            row.tone = tone
            row.ends_ms = ends
            self._step(
                s,
                alert_id,
                "area_matched",
                AUTO_ACTOR,
                {
                    "clusters": len(chosen),
                    "empty_areas": selection.empty_areas,
                    "unknown_geocodes": selection.unknown_geocodes,
                    "drill": drill,
                    "tone": tone,
                },
            )
        if not chosen:
            why = (
                "Không có cụm loa nào thuộc nhóm diễn tập trong vùng cảnh báo."
                if drill
                else "Không có cụm loa nào trong vùng cảnh báo."
            )
            self._set(alert_id, AUTO_ACTOR, "not_aired", "not_aired", why)
            return self._close_if_update(alert, alert_id)

        if self.settings.automatic(alert.sender, alert.max_severity()):
            with self.db.session() as s:
                s.get(CapAlert, alert_id).decision = "auto"
            self._close_if_update(alert, alert_id)
            self._air(alert_id, AUTO_ACTOR, first=True)
        else:
            self._set(
                alert_id,
                AUTO_ACTOR,
                "awaiting_approval",
                "pending_approval",
                "Chờ cán bộ tỉnh hoặc xã duyệt phát.",
                decision="approval",
            )

    def _close_if_update(self, alert: capmod.CapAlert, alert_id: int) -> None:
        if alert.msg_type == "Update":
            with self.db.session() as s:
                refs = list(s.get(CapAlert, alert_id).references or [])
            self._close(refs, alert_id, "superseded", all_clear=False)

    def _referenced(self, alert: capmod.CapAlert) -> list[int]:
        out = []
        with self.db.session() as s:
            for ref in alert.references:
                found = s.scalar(
                    select(CapAlert.id).where(
                        CapAlert.sender == ref.sender[:300],
                        CapAlert.identifier == ref.identifier[:300],
                        CapAlert.sent_ms == ref.sent_ms,
                    )
                )
                if found is not None:
                    out.append(found)
        return out

    @staticmethod
    def _event_keys(info: capmod.Info | None) -> list[str]:
        keys = [speech.event_key(info.event)] if info else []
        return keys + [speech.event_key(v) for _, v in (info.event_codes if info else [])]

    def _template_row(
        self, s: Session, info: capmod.Info | None, keys: list[str] | None = None
    ) -> AlertTemplate | None:
        keys = self._event_keys(info) if keys is None else keys
        for key in [*keys, "*"]:
            t = s.get(AlertTemplate, key)
            if t is not None:
                return t
        return None

    def _tone_for(
        self, s: Session, info: capmod.Info | None, keys: list[str] | None = None
    ) -> dict[str, Any]:
        """The warning tone of an alert's event type: the event template's own
        ``tone_pattern`` / ``tone_hz`` where set (the lookup ``_template_row`` does), else the
        "*" template's, else the province setting. ``pattern`` "" = no tone."""
        row = self._template_row(s, info, keys)
        # No row means there is no "*" template either (``_template_row`` ends with it).
        star = s.get(AlertTemplate, "*") if row is not None and row.event_key != "*" else None
        pattern, source = self.settings.tone_pattern, "default"
        hz = self.settings.tone_hz
        for t in (star, row):  # the event's own choice wins over "*"
            if t is not None and t.tone_pattern is not None:
                pattern, source = t.tone_pattern, t.event_key
            if t is not None and t.tone_hz is not None:
                hz = t.tone_hz
        return {"pattern": pattern or "", "hz": float(hz), "source": source}

    def _alert_tone(self, s: Session, row: CapAlert) -> dict[str, Any]:
        """The tone chosen with the alert's text; for alerts from before migration 0018 the
        same lookup by their stored event name."""
        if row.tone is not None:
            return row.tone
        return self._tone_for(s, None, [speech.event_key(row.event)] if row.event else [])

    def _template(self, s: Session, info: capmod.Info | None) -> str:
        t = self._template_row(s, info)
        return t.template if t is not None else speech.DEFAULT_TEMPLATE

    def _recordings(self, s: Session, event: str) -> list[str]:
        t = s.get(AlertTemplate, speech.event_key(event)) or s.get(AlertTemplate, "*")
        return list(t.recordings or []) if t is not None else []

    def _spoken(self, text: str) -> str:
        store = getattr(self.content, "store", None)
        tts = getattr(store, "tts", None)
        if tts is not None and hasattr(tts, "normalize"):
            return tts.normalize(text)
        from broadcasts.normalize import normalize

        return normalize(text)

    # ------------------------------------------------------------------ airing

    def _actor(self, username: str) -> Actor:
        return Actor("province", None, username[:64])

    def _air(self, alert_id: int, username: str, *, first: bool) -> int | None:
        """One emergency broadcast of the alert through the scheduler; returns its id."""
        if self.broadcasts is None:
            self._set(
                alert_id,
                username,
                "not_aired",
                "not_aired",
                "Bộ lập lịch phát thanh chưa chạy trên hệ thống.",
            )
            return None
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            title = (f"{'[Diễn tập] ' if row.drill else ''}Cảnh báo: {row.headline or row.event}")[
                :300
            ]
            body = {
                "title": title,
                "priority": "emergency",
                "confirm": True,
                "targets": row.targets,
            }
            text = row.text
            chosen = self._alert_tone(s, row)
        try:
            # A repeat plays the audio made the first time: no second synthesis; the tone
            # was chosen with the text, so a repeat sounds the same one.
            tone = self._node_tone(chosen)
            if tone is not None:
                body["tone"] = tone
            content_id = self._first_content(alert_id) or (
                None if tone is not None else self._tone_content(text, title, username, chosen)
            )
            if content_id:
                body["content_id"] = content_id
            else:
                body["tts_text"] = text
            out = self.broadcasts.create(self._actor(username), body)
        except (ScheduleError, AlertError) as exc:
            if first:
                self._set(
                    alert_id, username, "not_aired", "not_aired", f"Không phát được: {exc.message}"
                )
            else:
                with self.db.session() as s:
                    self._step(s, alert_id, "repeat_failed", username, {"reason": exc.message})
            return None
        extra = self._air_recordings(alert_id, username, title, body["targets"])
        now = self.clock()
        every = self.settings.repeat_every_min
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            row.broadcast_ids = [*row.broadcast_ids, out["id"], *extra]
            row.next_repeat_ms = (now + int(every * 60_000)) if every > 0 else None
            if first:
                row.state = "airing"
                row.state_reason = None
            self._step(
                s,
                alert_id,
                "aired" if first else "repeated",
                username,
                {"broadcast_id": out["id"], "clusters": len(row.node_ids)},
            )
        return out["id"]

    def _air_recordings(self, alert_id: int, username: str, title: str, targets: dict) -> list[int]:
        """The province's pre-recorded messages for this event (Tày, Nùng, Dao...): each an
        emergency broadcast on the same clusters; at the same level a node plays them after
        the Vietnamese one, in turn (docs/protocol.md, behaviour 2)."""
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            # A recording cannot say "this is a drill": drills are spoken in Vietnamese only.
            ids = [] if row.drill else self._recordings(s, row.event)
        out = []
        for content_id in ids:
            try:
                b = self.broadcasts.create(
                    self._actor(username),
                    {
                        "title": f"{title} ({content_id})"[:300],
                        "content_id": content_id,
                        "priority": "emergency",
                        "confirm": True,
                        "targets": targets,
                    },
                )
            except ScheduleError as exc:
                with self.db.session() as s:
                    self._step(
                        s,
                        alert_id,
                        "recording_failed",
                        username,
                        {"content_id": content_id, "reason": exc.message},
                    )
                continue
            out.append(b["id"])
        return out

    def _first_content(self, alert_id: int) -> str | None:
        with self.db.session() as s:
            bids = s.get(CapAlert, alert_id).broadcast_ids or []
            if not bids:
                return None
            b = s.get(Broadcast, bids[0])
            return b.content_id if b is not None else None

    def _node_tone(self, chosen: dict[str, Any]) -> dict[str, int] | None:
        """The warning tone as the ``tone`` of each node's ``play`` (``tone_mode`` "node"):
        the nodes generate it and sound it at once while the speech downloads, instead of
        downloading it baked into the audio first. None without a pattern or in "file" mode.
        ``chosen``: the alert's tone (``_tone_for``)."""
        if self.settings.tone_mode != "node":
            return None
        parsed = speech.parse_tone_pattern(chosen["pattern"])
        if parsed is None:
            return None
        count, blast, gap = parsed
        return {
            "hz": round(chosen["hz"]),
            "on_ms": round(blast * 1000),
            "off_ms": round(gap * 1000),
            "count": count,
        }

    def _tone_content(
        self, text: str, title: str, username: str, chosen: dict[str, Any]
    ) -> str | None:
        """With a tone pattern chosen: tones + speech as one stored item; else None (the
        scheduler synthesises the text itself)."""
        if not chosen["pattern"] or self.content is None:
            return None
        import tempfile
        from pathlib import Path

        from pydub import AudioSegment

        store = self.content.store
        tones = speech.tone_segment(chosen["pattern"], chosen["hz"])
        store.tmp_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=store.tmp_dir, prefix="alert-") as tmp:
            spoken = store.tts.speak(text, Path(tmp) / "speech.wav")
            voice = AudioSegment.from_file(spoken.path)
            mixed = tones.set_frame_rate(voice.frame_rate).set_channels(voice.channels) + voice
            out = Path(tmp) / "alert.wav"
            mixed.export(out, format="wav")
            meta = store.add_file(
                out,
                filename="alert.wav",
                title=title,
                language="vi",
                source="tts",
                creator=username,
                chime=False,
            )
        return meta.id

    def _close(self, refs: list[int], by_id: int, state: str, *, all_clear: bool) -> list[int]:
        """End referenced alerts: stop their broadcasts on air; an all-clear after a Cancel."""
        closed = []
        now = self.clock()
        for ref in refs:
            with self.db.session() as s:
                row = s.get(CapAlert, ref)
                if row is None or row.state not in ACTIVE:
                    continue
                was_airing = row.state == "airing"
                bids = list(row.broadcast_ids or [])
                row.state = state
                row.state_reason = (
                    f"{'Hủy' if state == 'cancelled' else 'Cập nhật'} bởi cảnh báo số {by_id}."
                )
                row.closed_by_id = by_id
                row.closed_ms = now
                row.next_repeat_ms = None
                targets, node_ids, event, area = row.targets, row.node_ids, row.event, row.area_desc
                self._step(s, ref, state, AUTO_ACTOR, {"by": by_id, "broadcasts": bids})
            closed.append(ref)
            for bid in bids:
                self._cancel_broadcast(bid)
            if (
                all_clear
                and was_airing
                and self.settings.all_clear
                and targets
                and self.broadcasts is not None
            ):
                text = speech.ALL_CLEAR_TEMPLATE.format(
                    su_kien=event or "thiên tai", khu_vuc=area or "địa phương"
                )
                try:
                    out = self.broadcasts.create(
                        self._actor(AUTO_ACTOR),
                        {
                            "title": f"Bãi bỏ cảnh báo: {event}"[:300],
                            "tts_text": text,
                            "priority": "priority",
                            "targets": targets,
                        },
                    )
                except ScheduleError as exc:
                    with self.db.session() as s:
                        self._step(s, ref, "all_clear_failed", AUTO_ACTOR, {"reason": exc.message})
                    continue
                with self.db.session() as s:
                    s.get(CapAlert, ref).all_clear_broadcast_id = out["id"]
                    self._step(
                        s,
                        ref,
                        "all_clear",
                        AUTO_ACTOR,
                        {"broadcast_id": out["id"], "clusters": len(node_ids)},
                    )
        return closed

    def _cancel_broadcast(self, broadcast_id: int) -> None:
        if self.broadcasts is None:
            return
        with contextlib.suppress(ScheduleError):  # already over: nothing to stop
            self.broadcasts.cancel(self._actor(AUTO_ACTOR), broadcast_id)

    # ------------------------------------------------------------------ preview

    def preview(self, raw: bytes) -> dict[str, Any]:
        """What a document would do, without storing or airing anything: the clusters it
        selects (by village, with coordinates for the map), the text, the decision."""
        root, alert = capmod.load(bytes(raw), max_bytes=self.settings.max_bytes)
        if has_signature(root):
            alert = capmod.read_alert(verify(root, self.certificates).root)
            alert.signed = True
        info = alert.info_for()
        with self.db.session() as s:
            clusters = load_clusters(s)
            selection = select_clusters(s, alert, self.settings, clusters)
            template = self._template(s, info)
            tone = self._tone_for(s, info)
        drill = alert.status in ("Exercise", "Test")
        villages: dict[tuple[str, str], list[dict]] = {}
        for c in selection.clusters:
            villages.setdefault((c.commune_name, c.village_name), []).append(c.as_dict())
        automatic = self.settings.automatic(alert.sender, alert.max_severity())
        text = speech.compose(alert, info, template, drill=drill) if info else ""
        return {
            "sender": alert.sender,
            "identifier": alert.identifier,
            "sent": alert.sent,
            "msg_type": alert.msg_type,
            "status": alert.status,
            "signed": alert.signed,
            "severity": alert.max_severity(),
            "expires_at": iso(alert.expires_ms()),
            "event": info.event if info else "",
            "headline": info.headline if info else None,
            "decision": "auto" if automatic else "approval",
            "drill": drill,
            "clusters": len(selection.clusters),
            "by_village": [
                {"commune": k[0], "village": k[1], "clusters": v}
                for k, v in sorted(villages.items())
            ],
            "empty_areas": selection.empty_areas,
            "unknown_geocodes": selection.unknown_geocodes,
            "text": text,
            "spoken": self._spoken(text) if text else "",
            "node_ids": [c.node_id for c in selection.clusters],
            "areas": mapview.areas_of(alert),
            "tone": speech.tone_info(tone),
        }

    # ------------------------------------------------------------------ people

    def _check_scope(self, row: CapAlert, actor: Actor) -> None:
        if actor.role not in ("province", "commune"):
            raise AlertForbidden(
                "forbidden",
                "Chỉ cán bộ tỉnh hoặc xã được duyệt cảnh báo.",
                "Only province or commune officers may decide on alerts.",
            )
        if actor.whole_province:
            return
        with self.db.session() as s:
            communes = {c.commune_id for c in load_clusters(s) if c.node_id in set(row.node_ids)}
        if not communes or not communes <= set(actor.commune_ids or ()):
            raise AlertForbidden(
                "forbidden",
                "Cảnh báo này phát ra ngoài xã của bạn; cần cán bộ cấp tỉnh duyệt.",
                "This alert reaches beyond your communes; the province must approve it.",
            )

    def approve(self, actor: Actor, alert_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            state = row.state
        if state not in ("pending_approval", "escalated"):
            raise AlertConflict(
                "not_pending",
                f"Cảnh báo đang ở trạng thái "
                f"«{STATE_LABELS_VI.get(state, state)}», không chờ duyệt.",
                f"The alert is {state}, not awaiting approval.",
            )
        self._check_scope(row, actor)
        if row.ends_ms is not None and row.ends_ms <= self.clock():
            self._set(
                alert_id,
                actor.username,
                "not_aired",
                "expired",
                "Cảnh báo đã hết hiệu lực trước khi được duyệt; không phát.",
            )
            return self.summary(alert_id)
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            row.approved_by = actor.username
            row.approved_ms = self.clock()
            self._step(s, alert_id, "approved", actor.username, {})
        if row.msg_type == "Update":
            self._close(list(row.references or []), alert_id, "superseded", all_clear=False)
        self._air(alert_id, actor.username, first=True)
        return self.summary(alert_id)

    def reject(self, actor: Actor, alert_id: int, reason: str = "") -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
        if row.state not in ("pending_approval", "escalated"):
            raise AlertConflict(
                "not_pending",
                "Cảnh báo không ở trạng thái chờ duyệt.",
                "The alert is not awaiting approval.",
            )
        self._check_scope(row, actor)
        self._set(
            alert_id,
            actor.username,
            "rejected",
            "rejected",
            (reason or "Cán bộ từ chối phát.")[:1000],
        )
        return self.summary(alert_id)

    def stop(self, actor: Actor, alert_id: int) -> dict[str, Any]:
        """An officer ends an alert by hand (as a Cancel would, with the all-clear)."""
        if not actor.is_province:
            raise AlertForbidden(
                "forbidden",
                "Chỉ cán bộ cấp tỉnh được dừng cảnh báo.",
                "Only the province may stop an alert.",
            )
        with self.db.session() as s:
            if s.get(CapAlert, alert_id) is None:
                raise AlertNotFound(alert_id)
            self._step(s, alert_id, "stop_requested", actor.username, {})
        self._close([alert_id], alert_id, "cancelled", all_clear=True)
        return self.summary(alert_id)

    # ------------------------------------------------------------------ time

    def tick(self) -> dict[str, int]:
        """Due repeats, expiries and approval escalations (called every ``tick_s``)."""
        now = self.clock()
        counts = {"repeated": 0, "expired": 0, "escalated": 0}
        with self.db.session() as s:
            rows = s.scalars(select(CapAlert).where(CapAlert.state.in_(ACTIVE))).all()
            work = [(r.id, r.state, r.ends_ms, r.next_repeat_ms, r.received_ms) for r in rows]
        timeout = int(self.settings.approval_timeout_s * 1000)
        for alert_id, state, ends, next_repeat, received in work:
            if ends is not None and ends <= now:
                self._set(
                    alert_id,
                    AUTO_ACTOR,
                    "expired",
                    "expired",
                    "Cảnh báo đã hết hiệu lực.",
                    next_repeat_ms=None,
                )
                counts["expired"] += 1
            elif state == "airing" and next_repeat is not None and next_repeat <= now:
                self._air(alert_id, AUTO_ACTOR, first=False)
                counts["repeated"] += 1
            elif state == "pending_approval" and received + timeout <= now:
                if self.settings.on_approval_timeout == "air":
                    with self.db.session() as s:
                        self._step(s, alert_id, "approval_timeout", AUTO_ACTOR, {"then": "air"})
                    self._air(alert_id, AUTO_ACTOR, first=True)
                else:
                    self._set(
                        alert_id,
                        AUTO_ACTOR,
                        "escalated",
                        "escalated",
                        "Quá thời gian chờ duyệt; đã chuyển lên cán bộ cấp tỉnh.",
                        escalated_ms=now,
                    )
                counts["escalated"] += 1
        return counts

    # ------------------------------------------------------------------ templates

    def templates(self) -> list[dict[str, Any]]:
        with self.db.session() as s:
            rows = s.scalars(select(AlertTemplate).order_by(AlertTemplate.event_key)).all()
            out = [
                {
                    "event_key": t.event_key,
                    "template": t.template,
                    "recordings": list(t.recordings or []),
                    "updated_by": t.updated_by,
                    "updated_at": iso(t.updated_ms),
                    **self._template_tone(s, t.event_key),
                }
                for t in rows
            ]
            default_tone = self._template_tone(s, "*")
        if not any(t["event_key"] == "*" for t in out):
            out.append(
                {
                    "event_key": "*",
                    "template": speech.DEFAULT_TEMPLATE,
                    "updated_by": "",
                    "updated_at": None,
                    **default_tone,
                }
            )
        return out

    def _template_tone(self, s: Session, key: str) -> dict[str, Any]:
        """A template's own tone (``tone_pattern``/``tone_hz``, None = the default) and, for
        people, the ``tone`` its alerts sound (``tone_info``: the "*" template's or the
        province setting filled in where it has none of its own)."""
        t = s.get(AlertTemplate, key)
        return {
            "tone_pattern": t.tone_pattern if t is not None else None,
            "tone_hz": t.tone_hz if t is not None else None,
            "tone": speech.tone_info(self._tone_for(s, None, [key] if key != "*" else [])),
        }

    def set_template(
        self,
        actor: Actor,
        event: str,
        template: str,
        recordings: list[str] | None = None,
        *,
        tone_pattern: str | None = None,
        tone_hz: float | None = None,
        keep_recordings: bool = False,
    ) -> dict[str, Any]:
        """Save an event type's spoken template, its recordings and its warning tone
        (``tone_pattern`` None = the default, "" = none; ``tone_hz`` None = the default).
        Everything is checked before anything is saved. ``keep_recordings``: the web form,
        which has no recordings field, keeps the ones saved through the API."""
        if not actor.is_province:
            raise AlertForbidden(
                "forbidden",
                "Chỉ cán bộ cấp tỉnh được sửa mẫu lời đọc.",
                "Only the province may edit templates.",
            )
        key = "*" if event.strip() == "*" else speech.event_key(event)
        if not key or len(key) > 200:
            raise AlertError(
                "bad_template", "Tên loại sự kiện không hợp lệ.", "Invalid event type."
            )
        template = speech.check_template(template)
        tone_pattern, tone_hz = speech.check_tone(tone_pattern, tone_hz)
        recordings = self._check_recordings(recordings or [])
        with self.db.session() as s:
            row = s.get(AlertTemplate, key)
            if keep_recordings:
                recordings = list(row.recordings or []) if row is not None else []
            if row is None:
                row = AlertTemplate(event_key=key, template=template)
                s.add(row)
            row.template = template
            row.recordings = recordings or None
            row.tone_pattern = tone_pattern
            row.tone_hz = tone_hz
            row.updated_by = actor.username
            row.updated_ms = self.clock()
            self._step(
                s,
                None,
                "template_saved",
                actor.username,
                {"event_key": key, "tone_pattern": tone_pattern, "tone_hz": tone_hz},
                target=f"alert_template:{key}",
            )
            s.flush()
            tone = self._template_tone(s, key)
        return {"event_key": key, "template": template, "recordings": recordings, **tone}

    def _check_recordings(self, recordings: list) -> list[str]:
        if not isinstance(recordings, list) or len(recordings) > 5:
            raise AlertError(
                "bad_recordings",
                "«recordings» là danh sách tối đa 5 mã nội dung.",
                "'recordings' is a list of at most 5 content ids.",
            )
        out = []
        for cid in recordings:
            meta = self.content.get(cid) if (self.content and isinstance(cid, str)) else None
            if meta is None:
                raise AlertError(
                    "bad_recordings",
                    f"Không tìm thấy bản ghi âm «{cid}» trong kho nội dung.",
                    f"Recording {cid!r} not found.",
                )
            out.append(cid)
        return out

    # ------------------------------------------------------------------ reading

    def summary(self, alert_id: int) -> dict[str, Any]:
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            return self._row(row)

    @staticmethod
    def _row(row: CapAlert) -> dict[str, Any]:
        return {
            "id": row.id,
            "sender": row.sender,
            "identifier": row.identifier,
            "sent": row.sent,
            "msg_type": row.msg_type,
            "status": row.status,
            "severity": row.severity,
            "urgency": row.urgency,
            "event": row.event,
            "headline": row.headline,
            "language": row.language,
            "area_desc": row.area_desc,
            "expires_at": iso(row.expires_ms),
            "received_at": iso(row.received_ms),
            "received_ms": row.received_ms,
            "decision": row.decision,
            "state": row.state,
            "state_label": STATE_LABELS_VI.get(row.state, row.state),
            "state_reason": row.state_reason,
            "drill": row.drill,
            "text": row.text,
            "spoken": row.spoken,
            "clusters": len(row.node_ids or []),
            "targets": row.targets,
            "approved_by": row.approved_by,
            "approved_at": iso(row.approved_ms),
            "approved_ms": row.approved_ms,
            "escalated_at": iso(row.escalated_ms),
            "expires_ms": row.expires_ms,
            "broadcast_ids": list(row.broadcast_ids or []),
            "next_repeat_at": iso(row.next_repeat_ms),
            "closed_by_id": row.closed_by_id,
            "closed_at": iso(row.closed_ms),
            "all_clear_broadcast_id": row.all_clear_broadcast_id,
            "references": list(row.references or []),
            "message_id": row.message_id,
            "tone": speech.tone_info(row.tone) if row.tone is not None else None,
        }

    def list(self, actor: Actor, *, limit: int = 50, offset: int = 0) -> dict[str, Any]:
        with self.db.session() as s:
            rows = s.scalars(
                select(CapAlert).order_by(CapAlert.received_ms.desc(), CapAlert.id.desc())
            ).all()
            if not actor.whole_province:
                mine = {
                    c.node_id
                    for c in load_clusters(s)
                    if c.commune_id in set(actor.commune_ids or ())
                }
                rows = [r for r in rows if mine & set(r.node_ids or [])]
            return {
                "items": [self._row(r) for r in rows[offset : offset + limit]],
                "total": len(rows),
                "limit": limit,
                "offset": offset,
            }

    def messages(self, *, limit: int = 50) -> list[dict[str, Any]]:
        """Received documents, refused ones first in mind: what came, when, and why not."""
        with self.db.session() as s:
            rows = s.scalars(select(CapMessage).order_by(CapMessage.id.desc()).limit(limit))
            return [
                {
                    "id": m.id,
                    "received_at": iso(m.received_ms),
                    "received_at_local": format_datetime(m.received_ms),
                    "source": m.source,
                    "source_ref": m.source_ref,
                    "outcome": m.outcome,
                    "reason_code": m.reason_code,
                    "reason": m.reason,
                    "size": m.size,
                    "sha256": m.sha256,
                    "signed": m.signed,
                    "sender": m.sender,
                    "identifier": m.identifier,
                    "alert_id": m.alert_id,
                }
                for m in rows
            ]

    def raw(self, message_id: int) -> bytes:
        with self.db.session() as s:
            m = s.get(CapMessage, message_id)
            if m is None:
                raise AlertError(
                    "not_found",
                    f"Không tìm thấy tài liệu số {message_id}.",
                    f"Document {message_id} not found.",
                    404,
                )
            return m.raw

    def report(self, actor: Actor, alert_id: int) -> dict[str, Any]:
        """Proof: when it came, when approved, first cluster playing, 50 % / 99 % of the
        targeted clusters started, and every cluster that did not, with why."""
        with self.db.session() as s:
            row = s.get(CapAlert, alert_id)
            if row is None:
                raise AlertNotFound(alert_id)
            out = self._row(row)
            clusters = {c.node_id: c for c in load_clusters(s)}
            if not actor.whole_province:
                mine = {
                    n for n, c in clusters.items() if c.commune_id in set(actor.commune_ids or ())
                }
                if not mine & set(row.node_ids or []):
                    raise AlertNotFound(alert_id)
            steps = s.scalars(
                select(AlertStep)
                .where(AlertStep.alert_id == alert_id)
                .order_by(AlertStep.at_ms, AlertStep.id)
            ).all()
            out["steps"] = [
                {
                    "at": iso(st.at_ms),
                    "at_ms": st.at_ms,
                    "action": st.action,
                    "label": STEP_LABELS_VI.get(st.action, st.action),
                    "actor": st.actor,
                    "detail": st.detail,
                }
                for st in steps
            ]
            out["airings"] = [
                self._airing_proof(s, bid, row, clusters) for bid in (row.broadcast_ids or [])
            ]
            out["proof"] = out["airings"][0] if out["airings"] else None
            out["clusters_detail"] = [
                clusters[n].as_dict() for n in (row.node_ids or []) if n in clusters
            ]
            out["areas"] = self._areas(s, row)
        return out

    @staticmethod
    def _areas(s: Session, row: CapAlert) -> list[dict[str, Any]]:
        """The polygons and circles of the stored document (it was accepted: it parses)."""
        message = s.get(CapMessage, row.message_id)
        if message is None:
            return []
        try:
            _root, alert = capmod.load(bytes(message.raw), max_bytes=len(message.raw) + 1)
        except CapRefused:
            return []
        return mapview.areas_of(alert)

    def area_map(self, report: dict[str, Any]) -> dict[str, Any] | None:
        """The offline map of a preview or an alert's report (``alerts.mapview``): its
        areas, the targeted clusters (green/red by the first airing once aired), every
        other cluster in view grey, the targeted villages listed."""
        with self.db.session() as s:
            clusters = load_clusters(s)
        if "node_ids" in report:  # a preview: nothing aired
            return mapview.area_map(clusters, report["node_ids"], report["areas"])
        proof = report.get("proof")
        targeted = [c["node_id"] for c in report.get("clusters_detail", [])]
        return mapview.area_map(
            clusters,
            targeted,
            report.get("areas", []),
            not_started=None if proof is None else [m["node_id"] for m in proof["not_started"]],
        )

    @staticmethod
    def _airing_proof(
        s: Session, broadcast_id: int, row: CapAlert, clusters: dict[str, Cluster]
    ) -> dict[str, Any]:
        per_node, dispatched = targets_by_node(s, broadcast_id)
        aimed = sorted(set(row.node_ids or []) | set(per_node))
        # One formula for the page, the evidence folder and its check (alerts.figures).
        fig = start_figures(
            len(aimed),
            (t.started_at_ms for t in per_node.values() if t.started_at_ms),
            row.received_ms,
        )
        first, p50, p99 = fig["first_started_ms"], fig["p50_ms"], fig["p99_ms"]
        missing = []
        for node_id in aimed:
            t = per_node.get(node_id)
            if t is not None and t.started_at_ms:
                continue
            c = clusters.get(node_id)
            why = not_started_reason(t)
            missing.append(
                {
                    "node_id": node_id,
                    "village": c.village_name if c else "",
                    "commune": c.commune_name if c else "",
                    "phase": t.phase if t else None,
                    "reason": why,
                }
            )
        return {
            "broadcast_id": broadcast_id,
            "dispatched_at": iso(dispatched),
            **fig,
            "first_started_at": iso(first),
            "p50_at": iso(p50),
            "p99_at": iso(p99),
            "not_started": missing,
        }
