"""Alarms for technicians: offline, amplifier fault, speaker-line fault, on battery, weak signal.

Alarms are derived from what the ingest already keeps (``NodeLive.state``/``reasons`` and the
latest heartbeat), not from raw messages, so any process that can read the database can run
the engine and a restart loses nothing but a few seconds of debounce.

Debounce is hysteresis on both edges: a condition must have been seen for ``raise_after_ms``
(counting from the first time it was seen, as long as it never went away for longer than
``clear_after_ms``) before an alarm is raised, and must be gone for ``clear_after_ms`` before
the alarm clears. A node flapping between online and offline therefore raises one alarm whose
``flaps`` counter grows, instead of a storm of raise/clear pairs.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import re
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from sqlalchemy import ForeignKey, Index, String, and_, func, or_, select, text
from sqlalchemy.orm import Mapped, Session, mapped_column

from controller.models import NodeLive, NodeTransition
from loa.db import Base, Database
from loa.timeutil import now_ms
from registry.models import Node, Village

if TYPE_CHECKING:
    from loa.settings import Settings

log = logging.getLogger(__name__)

ALARM_KINDS = ("offline", "amp_fault", "speaker_line", "on_battery", "weak_signal")
ALARM_LABELS_VI = {
    "offline": "Mất kết nối",
    "amp_fault": "Lỗi bộ khuếch đại",
    "speaker_line": "Lỗi đường dây loa",
    "on_battery": "Đang chạy pin",
    "weak_signal": "Sóng yếu",
}
# How bad each kind is, for sorting and colour: a silent cluster first, then one that is
# heard badly or not at all (amplifier, speaker line), then early warnings (battery, signal).
ALARM_SEVERITY = {
    "offline": 3,
    "amp_fault": 2,
    "speaker_line": 2,
    "on_battery": 1,
    "weak_signal": 1,
}
SEVERITY_LABELS_VI = {3: "Nghiêm trọng", 2: "Lỗi thiết bị", 1: "Cần chú ý"}


class Alarm(Base):
    __tablename__ = "alarm"
    __table_args__ = (
        # At most one open alarm per node and kind, even with two engines running.
        Index(
            "uq_alarm_open",
            "node_id",
            "kind",
            unique=True,
            sqlite_where=text("cleared_ms IS NULL"),
            postgresql_where=text("cleared_ms IS NULL"),
        ),
        Index("ix_alarm_raised", "raised_ms"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    node_id: Mapped[str] = mapped_column(String(64), index=True)
    kind: Mapped[str] = mapped_column(String(16))
    # Commune of the node when the alarm was raised: the scope a user must have to see it.
    commune_id: Mapped[int | None] = mapped_column(ForeignKey("commune.id"), index=True)
    first_seen_ms: Mapped[int]
    raised_ms: Mapped[int]
    cleared_ms: Mapped[int | None] = mapped_column(index=True)
    flaps: Mapped[int] = mapped_column(default=0)
    detail: Mapped[str] = mapped_column(String(300), default="")
    acked_by: Mapped[str | None] = mapped_column(String(64))
    acked_ms: Mapped[int | None]
    # What the technician wrote when acknowledging ("đã báo điện lực", "thay cầu chì").
    ack_note: Mapped[str | None] = mapped_column(String(500))


_SPLIT = re.compile(r"[,;\s]+")


def conditions(state: str, reasons: str, power: str | None) -> set[str]:
    """Alarm kinds a node's live record shows right now.

    An offline node only shows "offline": its last heartbeat is stale, so faults read from it
    are neither confirmed nor cleared (see ``AlarmEngine``)."""
    if state == "offline":
        return {"offline"}
    if state not in ("online", "degraded"):
        return set()
    found: set[str] = set()
    words = {w for w in _SPLIT.split(reasons or "") if w}
    if any(w.startswith("amp_") for w in words):
        found.add("amp_fault")
    if "speaker_line" in words:
        found.add("speaker_line")
    if "weak_signal" in words:
        found.add("weak_signal")
    if "battery_low" in words or power == "battery":
        found.add("on_battery")
    return found


def describe(kind: str, heartbeat: dict[str, Any] | None) -> str:
    """A short Vietnamese detail with the figure behind the alarm, for the technician."""
    hb = heartbeat or {}
    if kind == "weak_signal" and hb.get("rssi_dbm") is not None:
        return f"RSSI {hb['rssi_dbm']} dBm"
    if kind == "on_battery" and hb.get("battery_v") is not None:
        return f"Pin {hb['battery_v']} V"
    if kind == "speaker_line" and hb.get("speakers_total"):
        return f"{hb.get('speakers_ok', 0)}/{hb['speakers_total']} loa hoạt động"
    if kind == "amp_fault" and hb.get("amp"):
        return f"Bộ khuếch đại: {hb['amp']}"
    return ""


@dataclass
class _Seen:
    first_ms: int
    last_ms: int


class AlarmEngine:
    """Turns live node records into debounced alarm rows. Not thread-safe: one caller."""

    def __init__(
        self, db: Database, raise_after_ms: int = 30_000, clear_after_ms: int = 120_000
    ) -> None:
        self.db = db
        self.raise_after_ms = raise_after_ms
        self.clear_after_ms = clear_after_ms
        self._seen: dict[tuple[str, str], _Seen] = {}
        self._absent_since: dict[int, int] = {}  # alarm id -> first evaluation without it
        self._started = False

    def evaluate(self, at_ms: int | None = None) -> dict[str, int]:
        """One pass over every node; returns counts of alarms raised and cleared."""
        now = now_ms() if at_ms is None else at_ms
        raised = cleared = 0
        with self.db.session() as s:
            # Only the power field of the heartbeat, extracted by the database: decoding 3,000
            # heartbeat documents every pass would cost more than everything else together.
            # Only nodes that show a condition (the same rule as ``conditions``, in SQL): at
            # 100,000 nodes, bringing every healthy row into Python each pass cost more than
            # the ingest itself.
            power = NodeLive.heartbeat["power"].as_string()
            live = s.execute(
                select(
                    NodeLive.node_id, NodeLive.state, NodeLive.reasons, power, NodeLive.since_ms
                ).where(
                    or_(
                        NodeLive.state == "offline",
                        and_(
                            NodeLive.state.in_(("online", "degraded")),
                            or_(NodeLive.reasons != "", power == "battery"),
                        ),
                    )
                )
            ).all()
            open_alarms = {
                (a.node_id, a.kind): a
                for a in s.scalars(select(Alarm).where(Alarm.cleared_ms.is_(None)))
            }
            states: dict[str, str] = {}
            healthy = sorted({n for n, _ in open_alarms} - {row[0] for row in live})
            for i in range(0, len(healthy), 900):  # SQLite's bound-parameter limit
                states.update(
                    s.execute(
                        select(NodeLive.node_id, NodeLive.state).where(
                            NodeLive.node_id.in_(healthy[i : i + 900])
                        )
                    ).all()
                )
            current: set[tuple[str, str]] = set()
            for node_id, state, reasons, power, since_ms in live:
                states[node_id] = state
                for kind in conditions(state, reasons, power):
                    key = (node_id, kind)
                    current.add(key)
                    seen = self._seen.get(key)
                    if seen is None:
                        # On the first pass after a start, a state that has held since
                        # ``since_ms`` counts from then: a restart must not delay alarms.
                        first = since_ms if (not self._started and kind == "offline") else now
                        seen = self._seen[key] = _Seen(min(first, now), now)
                    seen.last_ms = now
            # Forget conditions that have been gone long enough to count as ended.
            for key in [
                k
                for k, v in self._seen.items()
                if k not in current and now - v.last_ms >= self.clear_after_ms
            ]:
                del self._seen[key]

            to_raise = [
                key
                for key, seen in self._seen.items()
                if key in current
                and key not in open_alarms
                and now - seen.first_ms >= self.raise_after_ms
            ]
            if to_raise:
                nodes = {n for n, _ in to_raise}
                communes = _communes_of(s, nodes)
                heartbeats: dict[str, dict[str, Any] | None] = dict(
                    s.execute(
                        select(NodeLive.node_id, NodeLive.heartbeat).where(
                            NodeLive.node_id.in_(nodes)
                        )
                    ).all()
                )
                for node_id, kind in to_raise:
                    s.add(
                        Alarm(
                            node_id=node_id,
                            kind=kind,
                            commune_id=communes.get(node_id),
                            first_seen_ms=self._seen[(node_id, kind)].first_ms,
                            raised_ms=now,
                            detail=_detail(s, node_id, kind, heartbeats.get(node_id), now),
                        )
                    )
                    raised += 1

            for key, alarm in open_alarms.items():
                node_id, kind = key
                if key in current:
                    if alarm.id in self._absent_since:
                        del self._absent_since[alarm.id]
                        alarm.flaps += 1
                    continue
                state = states.get(node_id)
                if state == "offline" and kind != "offline":
                    continue  # stale: cannot tell whether the fault is still there
                since = self._absent_since.setdefault(alarm.id, now)
                if state is None or now - since >= self.clear_after_ms:
                    alarm.cleared_ms = now
                    self._absent_since.pop(alarm.id, None)
                    cleared += 1
        self._started = True
        return {"raised": raised, "cleared": cleared}


def _communes_of(s: Session, node_ids: Iterable[str]) -> dict[str, int]:
    rows = s.execute(
        select(Node.id, Village.commune_id)
        .join(Village, Node.village_id == Village.id)
        .where(Node.id.in_(list(node_ids)))
    ).all()
    return {node_id: commune_id for node_id, commune_id in rows}


def _detail(s: Session, node_id: str, kind: str, hb: dict[str, Any] | None, now: int) -> str:
    if kind != "offline":
        return describe(kind, hb)
    # How often the node dropped in the last hour tells a flaky link from a dead node.
    drops = s.scalar(
        select(func.count())
        .select_from(NodeTransition)
        .where(
            NodeTransition.node_id == node_id,
            NodeTransition.to_state == "offline",
            NodeTransition.at_ms >= now - 3_600_000,
        )
    )
    return f"{drops} lần mất kết nối trong 1 giờ qua" if drops and drops > 1 else ""


def acknowledge(
    s: Session, alarm_id: int, username: str, at_ms: int | None = None, note: str | None = None
) -> Alarm:
    """Mark an alarm seen by a technician, with what they did or whom they told. A second
    acknowledgement keeps the first one's time and person; its note is added, not lost."""
    alarm = s.get(Alarm, alarm_id)
    if alarm is None:
        raise LookupError(alarm_id)
    if alarm.acked_ms is None:
        alarm.acked_by = username
        alarm.acked_ms = now_ms() if at_ms is None else at_ms
        alarm.ack_note = note
    elif note:
        joined = f"{alarm.ack_note} · {username}: {note}" if alarm.ack_note else note
        alarm.ack_note = joined[:500]
    return alarm


class AlarmService:
    """Runs ``AlarmEngine.evaluate`` every ``interval_s`` in a worker thread, so database work
    never blocks the event loop that also serves MQTT or HTTP."""

    def __init__(
        self,
        db: Database,
        interval_s: float = 2.0,
        raise_after_s: float = 30,
        clear_after_s: float = 120,
    ) -> None:
        self.engine = AlarmEngine(db, int(raise_after_s * 1000), int(clear_after_s * 1000))
        self.interval_s = interval_s
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_settings(cls, db: Database, settings: Settings) -> AlarmService:
        return cls(
            db,
            interval_s=settings.alarm_interval_s,
            raise_after_s=settings.alarm_raise_after_s,
            clear_after_s=settings.alarm_clear_after_s,
        )

    async def run(self) -> None:
        while True:
            try:
                await asyncio.to_thread(self.engine.evaluate)
            except Exception:  # keep watching: one bad pass must not end alarms for good
                log.exception("alarm evaluation failed")
            await asyncio.sleep(self.interval_s)

    def start(self) -> None:
        if self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self.run(), name="alarms")

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
