"""The running scheduler: APScheduler 3 with a persistent job store on Loa's own database.

One job per scheduled broadcast, with a trigger that fires a lead time before each slot of
its recurrence. Jobs live in the ``apscheduler_jobs`` table (SQLAlchemyJobStore on the same
database URL), so a controller restart loses nothing: on start APScheduler runs a job whose
time passed while we were down if it is still within the grace window, and the job itself
works out which slots are due, dispatches them (idempotently) and records as missed those
that are too late. Nothing here trusts APScheduler to run a job exactly once: the
``Airing`` unique key (broadcast, slot) does that.

Housekeeping (every ``housekeeping_s``) keeps the job table in step with the broadcast table
(so the API may run in another process and only write rows), records missed slots and
stops cancelled broadcasts.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.asyncio import AsyncIOScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from loa.db import Database
from loa.timeutil import ICT, now_ms
from scheduler.config import SchedulerSettings
from scheduler.lifecycle import last_slot_ms, record_missed
from scheduler.models import Airing, Broadcast
from scheduler.recurrence import Recurrence
from scheduler.slots import recurrence_of, slots_between

if TYPE_CHECKING:
    from scheduler.dispatch import Dispatcher

log = logging.getLogger("loa.scheduler")

JOB_PREFIX = "broadcast-"
JOBS_TABLE = "apscheduler_jobs"

_active: SchedulerRuntime | None = None


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ICT)


class SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 ships no types
    """Fires ``lead_ms`` before each slot of a broadcast (a single time or an RRULE).

    Pickled into the job store, so it holds only plain values and rebuilds the rule when
    asked."""

    def __init__(self, *, start_ms: int, rule: str | None = None, until_ms: int | None = None,
                 exdates: tuple[str, ...] = (), lead_ms: int = 0, grace_ms: int = 0,
                 after_ms: int | None = None) -> None:
        self.start_ms = start_ms
        # Slots at or before this one already have an airing (dispatched or missed).
        self.after_ms = after_ms
        self.rule = rule
        self.until_ms = until_ms
        self.exdates = tuple(exdates)
        self.lead_ms = lead_ms
        self.grace_ms = grace_ms

    def _next_slot(self, from_ms: int) -> int | None:
        if self.rule:
            rec = Recurrence(rule=self.rule, dtstart_ms=self.start_ms, until_ms=self.until_ms,
                             exdates=self.exdates)
            return next(rec.iter_from(from_ms), None)
        return self.start_ms if self.start_ms >= from_ms else None

    def get_next_fire_time(self, previous_fire_time: datetime | None,
                           now: datetime) -> datetime | None:
        if previous_fire_time is None:
            # Slots still playable: up to the grace window in the past.
            from_ms = _ms(now) - self.grace_ms
            after_ms: int | None = getattr(self, "after_ms", None)  # None in older pickles
            if after_ms is not None:
                from_ms = max(from_ms, after_ms + 1)
        else:
            from_ms = _ms(previous_fire_time) + self.lead_ms + 1
        slot = self._next_slot(from_ms)
        return None if slot is None else _dt(slot - self.lead_ms)

    def __str__(self) -> str:
        return f"slots[{self.rule or 'once'} from {self.start_ms}]"


async def fire_broadcast(broadcast_id: int) -> None:
    """The job function stored in the job store (referenced by name)."""
    rt = _active
    if rt is None:
        log.warning("broadcast %s is due but no scheduler runtime is active", broadcast_id)
        return
    await rt.on_due(broadcast_id)


class SchedulerRuntime:
    def __init__(self, db: Database, settings: SchedulerSettings, dispatcher: Dispatcher,
                 *, clock: Callable[[], int] = now_ms) -> None:
        self.db = db
        self.settings = settings
        self.dispatcher = dispatcher
        self.clock = clock
        self.scheduler: AsyncIOScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._locks: dict[int, asyncio.Lock] = {}  # per broadcast: others never wait
        self.lead_ms = int(settings.dispatch_lead_s * 1000)
        self.grace_ms = int(settings.slot_grace_s * 1000)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        global _active
        self._loop = asyncio.get_running_loop()
        self.scheduler = AsyncIOScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine,
                                                     tablename=JOBS_TABLE)},
            timezone=ICT,
            job_defaults={"coalesce": True, "max_instances": 1,
                          "misfire_grace_time": int((self.lead_ms + self.grace_ms) / 1000) + 1})
        _active = self
        await self.dispatcher.recover()
        self.scheduler.start()
        await self.sync()
        self._housekeeping = asyncio.create_task(self._housekeeping_loop(),
                                                 name="loa-scheduler-housekeeping")
        log.info("Bộ lập lịch đã chạy (dẫn trước %.0f s, ân hạn %.0f s)",
                 self.settings.dispatch_lead_s, self.settings.slot_grace_s)

    async def stop(self) -> None:
        """Stop without touching the job store: the next start takes over from it."""
        global _active
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None and scheduler.running:
            # AsyncIOScheduler shuts down on its loop's next turn; forget it now so a second
            # stop() does nothing.
            scheduler.shutdown(wait=False)
        if _active is self:
            _active = None

    async def _housekeeping_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.housekeeping_s)
            try:
                await self.sync()
            except asyncio.CancelledError:
                raise
            except Exception:
                log.exception("scheduler housekeeping failed")

    # ------------------------------------------------------------------ jobs

    def _trigger(self, b: Broadcast, after_ms: int | None = None) -> SlotTrigger:
        rec = recurrence_of(b)
        return SlotTrigger(start_ms=b.start_at_ms or 0, rule=rec.rule if rec else None,
                           until_ms=rec.until_ms if rec else None,
                           exdates=rec.exdates if rec else (),
                           lead_ms=0 if b.priority == "emergency" else self.lead_ms,
                           grace_ms=self.grace_ms, after_ms=after_ms)

    def _ensure_job(self, b: Broadcast, after_ms: int | None = None) -> None:
        if self.scheduler is None:  # stopped: the next start picks it up from the database
            return
        self.scheduler.add_job(fire_broadcast, trigger=self._trigger(b, after_ms), args=[b.id],
                               id=f"{JOB_PREFIX}{b.id}", name=b.title[:100],
                               replace_existing=True)

    def _remove_job(self, broadcast_id: int) -> None:
        if self.scheduler is None:
            return
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(f"{JOB_PREFIX}{broadcast_id}")

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the scheduler's event loop, whichever thread calls (API routes run
        in a thread pool)."""
        if self._loop is None:
            return
        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is self._loop:
            fn()
        else:
            self._loop.call_soon_threadsafe(fn)

    def on_scheduled(self, broadcast_id: int) -> None:
        """A broadcast entered the schedule (thread-safe; called by the workflow)."""
        def add() -> None:
            with self.db.session() as s:
                b = s.get(Broadcast, broadcast_id)
                if b is not None and b.status == "scheduled":
                    self._ensure_job(b)
        self._in_loop(add)

    def on_cancelled(self, broadcast_id: int) -> None:
        """A scheduled broadcast was cancelled: no more slots, stop what is playing."""
        def cancel() -> None:
            self._remove_job(broadcast_id)
            task = asyncio.get_running_loop().create_task(
                self.dispatcher.cancel_broadcast(broadcast_id))

            def log_failure(t: asyncio.Task[int]) -> None:
                if not t.cancelled() and t.exception():
                    log.error("cancel of %s failed: %s", broadcast_id, t.exception())
            task.add_done_callback(log_failure)
        self._in_loop(cancel)

    def on_paused(self, broadcast_id: int) -> None:
        """A broadcast was paused: no further slot is dispatched; what plays now finishes."""
        self._in_loop(lambda: self._remove_job(broadcast_id))

    def job_ids(self) -> set[int]:
        if self.scheduler is None:
            return set()
        return {int(j.id[len(JOB_PREFIX):]) for j in self.scheduler.get_jobs()
                if j.id.startswith(JOB_PREFIX)}

    # ------------------------------------------------------------------ slots

    async def on_due(self, broadcast_id: int) -> list[int]:
        """Dispatch every slot of the broadcast that is due now; record those too late."""
        lock = self._locks.setdefault(broadcast_id, asyncio.Lock())
        try:
            async with lock:
                now = self.clock()
                due = await asyncio.to_thread(self._due_slots, broadcast_id, now)
                for slot in due:
                    await self.dispatcher.dispatch(broadcast_id, slot)
                return due
        finally:
            if not lock.locked() and self._locks.get(broadcast_id) is lock:
                del self._locks[broadcast_id]

    def _due_slots(self, broadcast_id: int, now: int) -> list[int]:
        with self.db.session() as s:
            b = s.get(Broadcast, broadcast_id)
            if b is None or b.status != "scheduled":
                return []
        self._record_missed(broadcast_id, now)
        with self.db.session() as s:
            b = s.get(Broadcast, broadcast_id)
            if b is None or b.status != "scheduled":
                return []
            lead = 0 if b.priority == "emergency" else self.lead_ms
            lower = max(now - self.grace_ms, (b.scheduled_ms or 0) - 5_000)
            slots = slots_between(b, lower, now + lead + 2_000, limit=50)
            done = set(s.scalars(select(Airing.slot_ms).where(
                Airing.broadcast_id == b.id, Airing.slot_ms.in_(slots)))) if slots else set()
            return [x for x in slots if x not in done]

    async def sync(self) -> None:
        """Jobs for every scheduled broadcast and none for the others; missed slots recorded;
        broadcasts cancelled elsewhere stopped."""
        now = self.clock()
        scheduled, active_cancelled = await asyncio.to_thread(self._scan, now)
        have = self.job_ids()
        want = set(scheduled)
        with self.db.session() as s:
            for bid in sorted(want - have):
                b = s.get(Broadcast, bid)
                if b is None or b.status != "scheduled":
                    continue
                # A broadcast whose slots all have airings gets no job (its status is
                # settled by the dispatcher); one with slots to come gets its job (again).
                after = last_slot_ms(s, b.id)
                if self._trigger(b, after).get_next_fire_time(None, _dt(now)) is not None:
                    self._ensure_job(b, after)
        for bid in sorted(have - want):
            self._remove_job(bid)
        for bid in active_cancelled:
            await self.dispatcher.cancel_broadcast(bid)
        # Due slots whose job fire was lost (e.g. added while the scheduler was paused).
        for bid in scheduled:
            if self._has_due(bid, now):
                await self.on_due(bid)

    def _has_due(self, broadcast_id: int, now: int) -> bool:
        with self.db.session() as s:
            b = s.get(Broadcast, broadcast_id)
            if b is None:
                return False
            lead = 0 if b.priority == "emergency" else self.lead_ms
            lower = max(now - self.grace_ms, (b.scheduled_ms or 0) - 5_000)
            slots = slots_between(b, lower, now + lead - 1_000, limit=5)
            if not slots:
                return False
            done = set(s.scalars(select(Airing.slot_ms).where(
                Airing.broadcast_id == b.id, Airing.slot_ms.in_(slots))))
            return any(x not in done for x in slots)

    def _record_missed(self, broadcast_id: int, now: int) -> bool:
        """Missed slots of one broadcast, in a transaction of its own; True if still
        scheduled afterwards."""
        try:
            with self.db.session() as s:
                b = s.get(Broadcast, broadcast_id)
                if b is None or b.status != "scheduled":
                    return False
                missed = record_missed(s, b, now - self.grace_ms, now, self.settings)
                if missed:
                    log.warning("Bản tin %s: %d lượt phát bị lỡ (bộ điều khiển ngừng quá "
                                "thời gian ân hạn)", broadcast_id, len(missed))
                return b.status == "scheduled"
        except IntegrityError:
            return True  # a dispatch of the same slot got there first: nothing was missed

    def _scan(self, now: int) -> tuple[list[int], list[int]]:
        with self.db.session() as s:
            ids = list(s.scalars(select(Broadcast.id).where(Broadcast.status == "scheduled")))
        scheduled = [bid for bid in ids if self._record_missed(bid, now)]
        active_ids = {a.broadcast_id for a in self.dispatcher.active_airings()
                      if not a.cancelled}
        cancelled: list[int] = []
        if active_ids:
            with self.db.session() as s:
                cancelled = list(s.scalars(select(Broadcast.id).where(
                    Broadcast.id.in_(sorted(active_ids)), Broadcast.status == "cancelled")))
        return scheduled, cancelled


__all__ = ["SchedulerRuntime", "SlotTrigger", "fire_broadcast"]
