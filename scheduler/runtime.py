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

The event loop that runs this also runs the ingest, so nothing here touches the database on
it (docs/architecture.md, "the ingest loop is never blocked"): APScheduler runs in its own
thread (``BackgroundScheduler``: job store reads and writes, RRULE expansion), housekeeping
reads in a worker thread, and only a due slot comes back to the loop, through
``_LoopExecutor``, as ``SchedulerRuntime.on_due``.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import logging
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from apscheduler.executors.base import BaseExecutor
from apscheduler.job import Job
from apscheduler.jobstores.base import JobLookupError
from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.base import BaseTrigger
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from controller.schedule_wake import Wake
from loa.db import Database
from loa.loops import call_in_loop
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


def _ms(dt: datetime) -> int:
    return int(dt.timestamp() * 1000)


def _dt(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, tz=UTC).astimezone(ICT)


class SlotTrigger(BaseTrigger):  # type: ignore[misc]  # APScheduler 3 ships no types
    """Fires ``lead_ms`` before each slot of a broadcast (a single time or an RRULE).

    Pickled into the job store, so it holds only plain values and rebuilds the rule when
    asked."""

    def __init__(
        self,
        *,
        start_ms: int,
        rule: str | None = None,
        until_ms: int | None = None,
        exdates: tuple[str, ...] = (),
        lead_ms: int = 0,
        grace_ms: int = 0,
        after_ms: int | None = None,
    ) -> None:
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
            rec = Recurrence(
                rule=self.rule,
                dtstart_ms=self.start_ms,
                until_ms=self.until_ms,
                exdates=self.exdates,
            )
            return next(rec.iter_from(from_ms), None)
        return self.start_ms if self.start_ms >= from_ms else None

    def get_next_fire_time(
        self, previous_fire_time: datetime | None, now: datetime
    ) -> datetime | None:
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


def fire_broadcast(broadcast_id: int) -> None:
    """The job function named in the job store. Never called: the runtime's own executor
    (``_LoopExecutor``) turns a due job into ``on_due`` of the runtime that owns the
    scheduler, so no module global says which runtime is active."""
    log.warning("broadcast %s is due but no scheduler runtime is active", broadcast_id)


class _LoopExecutor(BaseExecutor):  # type: ignore[misc]  # APScheduler 3 is untyped
    """Hands a due job from APScheduler's thread to the runtime's event loop."""

    def __init__(self, runtime: SchedulerRuntime) -> None:
        super().__init__()
        self._runtime = runtime

    def _do_submit_job(self, job: Job, run_times: list[datetime]) -> None:
        loop = self._runtime._loop
        if loop is None or loop.is_closed():
            self._run_job_success(job.id, [])
            return
        try:
            fut = asyncio.run_coroutine_threadsafe(self._runtime.on_due(job.args[0]), loop)
        except RuntimeError as exc:  # the loop closed meanwhile
            self._run_job_error(job.id, exc, exc.__traceback__)
            return

        def done(f: concurrent.futures.Future[list[int]]) -> None:
            exc = None if f.cancelled() else f.exception()
            if exc is None:
                self._run_job_success(job.id, [])
            else:
                self._run_job_error(job.id, exc, exc.__traceback__)

        fut.add_done_callback(done)


class SchedulerRuntime:
    def __init__(
        self,
        db: Database,
        settings: SchedulerSettings,
        dispatcher: Dispatcher,
        *,
        clock: Callable[[], int] = now_ms,
    ) -> None:
        self.db = db
        self.settings = settings
        self.dispatcher = dispatcher
        self.clock = clock
        self.scheduler: BackgroundScheduler | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._housekeeping: asyncio.Task[None] | None = None
        self._locks: dict[int, asyncio.Lock] = {}  # per broadcast: others never wait
        self.lead_ms = int(settings.dispatch_lead_s * 1000)
        self.grace_ms = int(settings.slot_grace_s * 1000)

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        scheduler = BackgroundScheduler(
            jobstores={"default": SQLAlchemyJobStore(engine=self.db.engine, tablename=JOBS_TABLE)},
            executors={"default": _LoopExecutor(self)},
            timezone=ICT,
            job_defaults={
                "coalesce": True,
                "max_instances": 1,
                "misfire_grace_time": int((self.lead_ms + self.grace_ms) / 1000) + 1,
            },
        )
        await self.dispatcher.recover()
        await asyncio.to_thread(scheduler.start)  # creates the job table, reads the jobs
        self.scheduler = scheduler
        await self.sync()
        self._housekeeping = asyncio.create_task(
            self._housekeeping_loop(), name="loa-scheduler-housekeeping"
        )
        log.info(
            "Bộ lập lịch đã chạy (dẫn trước %.0f s, ân hạn %.0f s)",
            self.settings.dispatch_lead_s,
            self.settings.slot_grace_s,
        )

    async def stop(self) -> None:
        """Stop without touching the job store: the next start takes over from it."""
        if self._housekeeping is not None:
            self._housekeeping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._housekeeping
            self._housekeeping = None
        scheduler, self.scheduler = self.scheduler, None
        if scheduler is not None and scheduler.running:
            # Forgotten first, so a second stop() does nothing; the shutdown joins the
            # scheduler's thread, which may be in a query: not on the loop.
            await asyncio.to_thread(scheduler.shutdown, wait=False)

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
        return SlotTrigger(
            start_ms=b.start_at_ms or 0,
            rule=rec.rule if rec else None,
            until_ms=rec.until_ms if rec else None,
            exdates=rec.exdates if rec else (),
            lead_ms=0 if b.priority == "emergency" else self.lead_ms,
            grace_ms=self.grace_ms,
            after_ms=after_ms,
        )

    def _ensure_job(self, b: Broadcast, after_ms: int | None = None) -> None:
        if self.scheduler is None:  # stopped: the next start picks it up from the database
            return
        self.scheduler.add_job(
            fire_broadcast,
            trigger=self._trigger(b, after_ms),
            args=[b.id],
            id=f"{JOB_PREFIX}{b.id}",
            name=b.title[:100],
            replace_existing=True,
        )

    def _remove_job(self, broadcast_id: int) -> None:
        if self.scheduler is None:
            return
        with contextlib.suppress(JobLookupError):
            self.scheduler.remove_job(f"{JOB_PREFIX}{broadcast_id}")

    def _off_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` (job store work: database reads and writes) in the calling thread, or
        in a worker thread when called on the event loop. APScheduler's own lock makes it
        safe from any thread."""

        def run() -> None:
            try:
                fn()
            except Exception:
                log.exception("scheduler job update failed")

        try:
            running = asyncio.get_running_loop()
        except RuntimeError:
            running = None
        if running is None:
            run()
        else:
            running.run_in_executor(None, run)

    def _in_loop(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the scheduler's event loop, whichever thread calls (API routes run
        in a thread pool)."""
        if self._loop is None:
            return
        call_in_loop(self._loop, fn)

    def on_scheduled(self, broadcast_id: int) -> None:
        """A broadcast entered the schedule (thread-safe; called by the workflow)."""

        def add() -> None:
            with self.db.session() as s:
                b = s.get(Broadcast, broadcast_id)
                if b is not None and b.status == "scheduled":
                    self._ensure_job(b)

        if self._loop is not None:
            self._off_loop(add)

    def on_cancelled(self, broadcast_id: int) -> None:
        """A scheduled broadcast was cancelled: no more slots, stop what is playing."""
        if self._loop is not None:
            self._off_loop(lambda: self._remove_job(broadcast_id))

        def cancel() -> None:
            task = asyncio.get_running_loop().create_task(
                self.dispatcher.cancel_broadcast(broadcast_id)
            )

            def log_failure(t: asyncio.Task[int]) -> None:
                if not t.cancelled() and t.exception():
                    log.error("cancel of %s failed: %s", broadcast_id, t.exception())

            task.add_done_callback(log_failure)

        self._in_loop(cancel)

    def on_paused(self, broadcast_id: int) -> None:
        """A broadcast was paused: no further slot is dispatched; what plays now finishes."""
        if self._loop is not None:
            self._off_loop(lambda: self._remove_job(broadcast_id))

    def on_wake(self, wake: Wake) -> None:
        """An API process scheduled or cancelled a broadcast (``controller.schedule_wake``):
        the same as a change made in this process, instead of waiting for housekeeping.
        Ignored unless this runtime runs (on the leading controller)."""
        if self.scheduler is None:
            return
        if wake.change == "scheduled":
            self.on_scheduled(wake.broadcast_id)
        else:
            self.on_cancelled(wake.broadcast_id)

    def job_ids(self) -> set[int]:
        if self.scheduler is None:
            return set()
        return {
            int(j.id[len(JOB_PREFIX) :])
            for j in self.scheduler.get_jobs()
            if j.id.startswith(JOB_PREFIX)
        }

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
            done = (
                set(
                    s.scalars(
                        select(Airing.slot_ms).where(
                            Airing.broadcast_id == b.id, Airing.slot_ms.in_(slots)
                        )
                    )
                )
                if slots
                else set()
            )
            return [x for x in slots if x not in done]

    async def sync(self) -> None:
        """Jobs for every scheduled broadcast and none for the others; missed slots recorded;
        broadcasts cancelled elsewhere stopped. The reading and the job store work run in a
        worker thread; the loop only gives what it holds (the airings being followed) and
        acts on the answer."""
        now = self.clock()
        active_ids = sorted(
            {a.broadcast_id for a in self.dispatcher.active_airings() if not a.cancelled}
        )
        # A broadcast whose slot is being dispatched right now (its once-job already fired and
        # left the job store, its airing not yet written) is not "scheduled without a job":
        # re-adding its job fired it again at once, and APScheduler logged "skipped: maximum
        # number of running instances reached" in the middle of every large emergency.
        busy = set(self._locks)
        cancelled, due = await asyncio.to_thread(self._sync_jobs, now, active_ids, busy)
        for bid in cancelled:
            await self.dispatcher.cancel_broadcast(bid)
        # Due slots whose job fire was lost (e.g. added while the scheduler was paused).
        for bid in due:
            await self.on_due(bid)

    def _sync_jobs(
        self, now: int, active_ids: list[int], busy: set[int]
    ) -> tuple[list[int], list[int]]:
        """(broadcasts to stop, broadcasts with a due slot), the job table made to match;
        ``busy``: broadcasts being dispatched now, left as they are."""
        scheduled, active_cancelled = self._scan(now, active_ids)
        have = self.job_ids()
        want = set(scheduled) - busy
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
        for bid in sorted(have - want - busy):
            self._remove_job(bid)
        return active_cancelled, [
            bid for bid in scheduled if bid not in busy and self._has_due(bid, now)
        ]

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
            done = set(
                s.scalars(
                    select(Airing.slot_ms).where(
                        Airing.broadcast_id == b.id, Airing.slot_ms.in_(slots)
                    )
                )
            )
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
                    log.warning(
                        "Bản tin %s: %d lượt phát bị lỡ (bộ điều khiển ngừng quá thời gian ân hạn)",
                        broadcast_id,
                        len(missed),
                    )
                return b.status == "scheduled"
        except IntegrityError:
            return True  # a dispatch of the same slot got there first: nothing was missed

    def _scan(self, now: int, active_ids: list[int]) -> tuple[list[int], list[int]]:
        with self.db.session() as s:
            ids = list(s.scalars(select(Broadcast.id).where(Broadcast.status == "scheduled")))
        scheduled = [bid for bid in ids if self._record_missed(bid, now)]
        cancelled: list[int] = []
        if active_ids:
            with self.db.session() as s:
                cancelled = list(
                    s.scalars(
                        select(Broadcast.id).where(
                            Broadcast.id.in_(active_ids), Broadcast.status == "cancelled"
                        )
                    )
                )
        return scheduled, cancelled


__all__ = ["SchedulerRuntime", "SlotTrigger", "fire_broadcast"]
