"""What a node does with ``play`` and ``stream`` commands (protocol "Behaviour" 1 and 2).

Each accepted broadcast becomes a ``Job`` with one task for its whole life: fetch and verify
(``fetched``), wait for ``start_at`` by the node's own clock, take its turn, play
(``started``), end (``finished``). Priorities follow Thông tư 39/2020/TT-BTTTT: a higher
level pre-empts a lower one at once (``preempted`` for the lower, which is dropped); at the
same or a lower level the newcomer waits until the one playing ends, then the waiting job
with the highest level (first come first) goes next. A ``play`` with a node-made ``tone``
starts at ``start_at`` without waiting for its download (``started`` with ``tone: true``),
the speech following the tone once fetched. No sound is produced: playing is a
timer for files and a byte-reading loop for live streams.

Every job ends with exactly one terminal event: ``finished``, ``preempted`` or ``failed``.
A ``stop`` ends a job that had started with ``finished`` (``reason: "stopped"``) and one
that had not with ``failed`` (``error: "stopped"``), so the controller never waits forever
for an airing that will not come.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from typing import Any, Protocol

from firmware_sim.fetch import FetchError, SharedHttp, download_verified, read_stream
from loa.protocol import PRIORITY_RANK, PlaybackEvent, PlaybackPhase, PlayCmd, StreamCmd
from loa.tone import fetch_delay_s

log = logging.getLogger(__name__)

# Sleeping in slices lets a clock-offset change during a long wait take effect.
MAX_SLEEP_SLICE_MS = 10_000


class PlayerHost(Protocol):
    def now_ms(self) -> int:
        """The node's clock (real clock + injected offset)."""

    def emit(self, event: PlaybackEvent) -> None:
        """Publish an event (QoS 1), buffered while offline."""


class Job:
    __slots__ = (
        "cmd",
        "ended",
        "order",
        "rank",
        "speech",
        "started",
        "stream_bytes",
        "task",
        "turn",
    )

    def __init__(self, cmd: PlayCmd | StreamCmd, order: int) -> None:
        self.cmd = cmd
        self.rank = PRIORITY_RANK[cmd.priority]
        self.order = order
        self.task: asyncio.Task[None] | None = None
        self.speech: asyncio.Task[None] | None = None  # a toned play's speech fetch
        self.turn: asyncio.Future[None] | None = None
        self.started = False
        self.ended = False
        self.stream_bytes = 0

    @property
    def broadcast_id(self) -> str:
        return self.cmd.broadcast_id


class Player:
    def __init__(self, host: PlayerHost, http: SharedHttp) -> None:
        self.host = host
        self.http = http
        self.current: Job | None = None
        self.waiting: list[Job] = []
        self.jobs: set[Job] = set()
        self._order = itertools.count()
        self.stream_bytes_total = 0

    # ------------------------------------------------------------------ queries

    @property
    def playing_id(self) -> str | None:
        cur = self.current
        return cur.broadcast_id if cur is not None and cur.started else None

    @property
    def volume_override(self) -> int | None:
        cur = self.current
        return cur.cmd.volume if cur is not None and cur.started else None

    # ------------------------------------------------------------------ commands

    def submit(self, cmd: PlayCmd | StreamCmd) -> Job:
        job = Job(cmd, next(self._order))
        self.jobs.add(job)
        job.task = asyncio.get_running_loop().create_task(self._life(job), name=f"job-{cmd.cmd_id}")
        return job

    def stop(self, broadcast_id: str | None = None) -> int:
        """End the matching jobs (all when ``broadcast_id`` is None); returns how many."""
        victims = [
            j
            for j in self.jobs
            if not j.ended and (broadcast_id is None or j.broadcast_id == broadcast_id)
        ]
        for job in victims:
            if job in self.waiting:
                self.waiting.remove(job)
            if job.started:
                self._end(job, "finished", reason="stopped")
            else:
                self._end(job, "failed", error="stopped")
            self._cancel(job)
        return len(victims)

    def shutdown(self, *, emit: bool) -> None:
        """Node going down: end every job (``failed: shutdown`` on a clean stop; nothing at
        all when the node is killed, since a dead node cannot speak)."""
        self.waiting.clear()
        for job in list(self.jobs):
            if emit:
                self._end(job, "failed", error="shutdown")
            else:
                job.ended = True
            self._cancel(job)
        self.current = None

    # ------------------------------------------------------------------ job life

    async def _life(self, job: Job) -> None:
        cmd = job.cmd
        fetched_at: int | None = None
        speech: asyncio.Task[None] | None = None
        try:
            if isinstance(cmd, PlayCmd) and cmd.tone is not None:
                # A node-made warning tone: sound it at start_at while the speech downloads
                # (docs/protocol.md, "Node-made warning tone").
                speech = job.speech = asyncio.get_running_loop().create_task(self._fetch(job))
                await self._sleep_until(cmd.start_at)
                await self._take_turn(job)
                self._mark_started(job, tone=True)
                await asyncio.sleep(cmd.tone.lead_ms / 1000)
                await speech  # the speech plays when fetched, or the job fails as a fetch does
                total_ms = cmd.duration_ms * cmd.repeat + cmd.gap_ms * (cmd.repeat - 1)
                await asyncio.sleep(total_ms / 1000)
                self._end(job, "finished")
                return
            if isinstance(cmd, PlayCmd):
                await download_verified(self.http, cmd.url, cmd.bytes, cmd.sha256)
                fetched_at = self.host.now_ms()
                self._event(job, "fetched")
            await self._sleep_until(cmd.start_at)
            await self._take_turn(job)
            if isinstance(cmd, PlayCmd):
                self._mark_started(job, fetched_at)
                total_ms = cmd.duration_ms * cmd.repeat + cmd.gap_ms * (cmd.repeat - 1)
                await asyncio.sleep(total_ms / 1000)
                self._end(job, "finished")
            else:
                why = await read_stream(
                    self.http,
                    cmd.url,
                    on_open=lambda: self._mark_started(job),
                    on_bytes=lambda n: self._count_stream(job, n),
                )
                self._end(job, "finished", reason=why)
        except FetchError as exc:
            log.info("broadcast %s failed: %s", job.broadcast_id, exc)
            self._end(job, "failed", error=exc.error, detail=exc.detail)
        except asyncio.CancelledError:
            job.ended = True  # whoever cancelled has already published the terminal event
            raise
        except Exception:  # a bug must not leave the controller waiting for a terminal event
            log.exception("broadcast %s crashed", job.broadcast_id)
            self._end(job, "failed", error="internal")
        finally:
            if speech is not None and not speech.done():
                speech.cancel()  # stopped or pre-empted during the tone: no download left behind
            elif speech is not None and not speech.cancelled():
                speech.exception()  # read, so a failure after a stop is not logged as lost
            self.jobs.discard(job)
            if job in self.waiting:
                self.waiting.remove(job)
            if self.current is job:
                self.current = None
                self._next()

    async def _fetch(self, job: Job) -> None:
        """The speech of a toned ``play``, fetched and verified alongside the tone."""
        cmd = job.cmd
        assert isinstance(cmd, PlayCmd) and cmd.tone is not None
        await asyncio.sleep(fetch_delay_s(cmd.tone))  # spread over the tone (docs/protocol.md)
        await download_verified(self.http, cmd.url, cmd.bytes, cmd.sha256)
        if not job.ended:  # stopped or pre-empted meanwhile: its terminal event was the last
            self._event(job, "fetched")

    async def _sleep_until(self, at_ms: int) -> None:
        if not at_ms:
            return
        while (left := at_ms - self.host.now_ms()) > 0:
            await asyncio.sleep(min(left, MAX_SLEEP_SLICE_MS) / 1000)

    async def _take_turn(self, job: Job) -> None:
        cur = self.current
        if cur is None:
            self.current = job
            return
        if job.rank > cur.rank:
            # Hand over first, so the pre-empted job's clean-up does not start someone else.
            self.current = job
            self._end(cur, "preempted")
            self._cancel(cur)
            return
        job.turn = asyncio.get_running_loop().create_future()
        self.waiting.append(job)
        await job.turn

    def _next(self) -> None:
        if not self.waiting:
            return
        best = max(self.waiting, key=lambda j: (j.rank, -j.order))
        self.waiting.remove(best)
        self.current = best
        if best.turn is not None and not best.turn.done():
            best.turn.set_result(None)

    def _cancel(self, job: Job) -> None:
        # The speech download goes with the job at once, not one loop turn later when the
        # job's clean-up runs (a fetch completing in between would send "fetched" after the
        # terminal event), as node_agent does.
        if job.speech is not None and not job.speech.done():
            job.speech.cancel()
        if job.task is not None and not job.task.done():
            job.task.cancel()

    # ------------------------------------------------------------------ events

    def _mark_started(self, job: Job, fetched_at: int | None = None, *, tone: bool = False) -> None:
        job.started = True
        # ``fetched_at`` repeats the fetch on the start (docs/protocol.md): a controller that
        # took over after the ``fetched`` event went to its dead predecessor still sees it.
        # ``tone: true``: what started is the node-made warning tone, the speech follows.
        extra: dict[str, Any] = {} if fetched_at is None else {"fetched_at": fetched_at}
        if tone:
            extra["tone"] = True
        self._event(job, "started", **extra)

    def _count_stream(self, job: Job, n: int) -> None:
        job.stream_bytes += n
        self.stream_bytes_total += n

    def _end(self, job: Job, phase: PlaybackPhase, **extra: Any) -> None:
        if job.ended:
            return
        job.ended = True
        self._event(job, phase, **extra)

    def _event(
        self, job: Job, phase: PlaybackPhase, error: str | None = None, **extra: Any
    ) -> None:
        now = self.host.now_ms()
        self.host.emit(
            PlaybackEvent(
                type="playback",
                ts=now,
                broadcast_id=job.broadcast_id,
                phase=phase,
                at=now,
                error=error,
                **extra,
            )
        )
