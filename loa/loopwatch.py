"""A loop-stall monitor: is anything blocking the event loop that runs the ingest?

In ``loa serve`` and ``loa demo`` one event loop runs the ingest, the API and the scheduler,
so a database call, a file read or a subprocess wait made on it holds up every heartbeat
(docs/architecture.md, "the ingest loop is never blocked"). Home Assistant finds such calls
by wrapping known blocking functions; that names the call but misses any it did not wrap
(a query through a library). This watches the effect instead, whatever the cause:

- a task sleeps ``interval_ms`` over and over and records how late it wakes (the loop's
  lateness is exactly how long something else held it);
- a watchdog thread looks at the loop thread while it is late and, past ``threshold_ms``,
  takes its Python stack (``sys._current_frames``): the stall's report names the code that
  held the loop, not only how long;
- a ``gc.callbacks`` hook times the cyclic garbage collector, which holds every thread
  (the watchdog too) while it runs: a stall with no stack but a long collection was the
  collector.

``loa serve`` turns it on with ``LOA_LOOP_STALL_WARN_MS`` (a warning per stall, with the
stack); the test ``tests/system/test_loop_stall.py`` fails on a stall over 100 ms with the
loop caught in a blocking call, on any stall over 1 s, and (``LOA_STRICT_LOOP_STALL=1``, a
quiet machine) on any stall over 100 ms.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import math
import sys
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass
from types import FrameType

log = logging.getLogger("loa.loopwatch")


@dataclass(frozen=True)
class Stall:
    """One time the loop was held longer than the threshold."""

    lateness_ms: float
    at: float  # time.time() when the loop got going again
    stack: str  # the loop thread's stack while it was held ("" if not caught in time)
    gc_ms: float = 0.0  # time the cyclic collector ran meanwhile (any thread)
    # CPU time the whole process used meanwhile (all threads). Far below ``lateness_ms``:
    # the process was mostly not running at all (the OS gave the CPUs to other processes,
    # or the loop waited on something outside); close to it or above: the process itself
    # held the loop (its own Python work, the GIL, a collection).
    cpu_ms: float = 0.0

    @property
    def own_ms(self) -> float:
        """How much of the stall the process can have caused itself: the CPU it used, at
        most the stall's length."""
        return min(self.lateness_ms, self.cpu_ms)

    @property
    def blocking_call(self) -> str:
        """The blocking call the loop thread was caught in ("" if none): a database
        driver, a subprocess, a file or socket read, as Home Assistant's detector names
        them. A stall without one was the loop waiting (for the GIL, the CPU, a collection)."""
        own = self.stack.split(_GIL_NOTE)[0]
        for line in reversed(own.splitlines()):
            if line.lstrip().startswith("File ") and any(m in line for m in _BLOCKING):
                return line.strip()
        return ""


# Modules whose frames on the loop thread mean a blocking call.
_BLOCKING = (
    "/sqlalchemy/engine/",
    "/sqlalchemy/pool/",
    "/sqlalchemy/orm/session.py",
    "/sqlite3/",
    "/psycopg",
    "/subprocess.py",
    "/pathlib.py",
    "/shutil.py",
    "/socket.py",
    "/apscheduler/jobstores/",
    "/tempfile.py",
)
_GIL_NOTE = "\n(loop waiting for the GIL"

# Where a thread waits without holding the GIL (the loop's poll, pools' queues, locks).
_IDLE = frozenset(
    {
        "select",
        "poll",
        "wait",
        "_wait_for_tstate_lock",
        "_worker",
        "get",
        "acquire",
        "sleep",
        "recv",
        "accept",
        "_run_once",
    }
)


def _busy_threads(frames: dict[int, FrameType], skip: int) -> str:
    """The stacks of the other threads not parked in a wait: who held the GIL."""
    names = {t.ident: t.name for t in threading.enumerate()}
    out = []
    for ident, frame in frames.items():
        if ident in (skip, threading.get_ident()) or frame.f_code.co_name in _IDLE:
            continue
        stack = traceback.extract_stack(frame)[-6:]
        out.append(
            f"\n  [thread {names.get(ident, ident)}]\n" + "".join(traceback.format_list(stack))
        )
    return _GIL_NOTE + "; other threads running:)" + "".join(out) if out else ""


class LoopWatch:
    """Measure how late the running loop wakes a sleeping task; keep what stalled it.

    Use ``async with LoopWatch(threshold_ms=100) as watch:`` or ``start()``/``stop()`` on the
    loop to watch."""

    def __init__(
        self,
        *,
        threshold_ms: float = 100.0,
        interval_ms: float = 10.0,
        log_stalls: bool = True,
        keep: int = 100,
    ) -> None:
        self.threshold_ms = threshold_ms
        self.interval_ms = interval_ms
        self.log_stalls = log_stalls
        self.keep = keep
        self.stalls: list[Stall] = []
        self.max_lateness_ms = 0.0
        self.ticks = 0
        # Every tick's lateness (bounded: 10 minutes of 10 ms ticks), for percentiles.
        self.samples: deque[float] = deque(maxlen=60_000)
        self._task: asyncio.Task[None] | None = None
        self._thread: threading.Thread | None = None
        self._stop = threading.Event()
        self._loop_thread_id = 0
        self._beat = 0.0  # monotonic time the loop task last ran
        self._stack = ""  # taken by the watchdog during the current stall
        self._lock = threading.Lock()
        self._gc_started = 0.0
        self._gc_ms = 0.0  # collector time since the last tick
        self.gc_max_ms = 0.0
        self.gc_total_ms = 0.0

    # ------------------------------------------------------------------ life

    async def start(self) -> None:
        self._loop_thread_id = threading.get_ident()
        self._beat = time.monotonic()
        self._stop.clear()
        self._task = asyncio.create_task(self._watch(), name="loa-loopwatch")
        self._thread = threading.Thread(target=self._watchdog, name="loa-loopwatch", daemon=True)
        self._thread.start()
        gc.callbacks.append(self._on_gc)

    async def stop(self) -> None:
        self._stop.set()
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._on_gc)
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
            self._task = None
        thread, self._thread = self._thread, None
        if thread is not None:
            await asyncio.to_thread(thread.join, 1.0)

    async def __aenter__(self) -> LoopWatch:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # ------------------------------------------------------------------ watching

    async def _watch(self) -> None:
        interval = self.interval_ms / 1000
        while True:
            before = time.monotonic()
            cpu_before = time.process_time()
            self._beat = before
            await asyncio.sleep(interval)
            late_ms = (time.monotonic() - before - interval) * 1000
            cpu_ms = (time.process_time() - cpu_before) * 1000
            self.ticks += 1
            self.samples.append(late_ms)
            self.max_lateness_ms = max(self.max_lateness_ms, late_ms)
            gc_ms, self._gc_ms = self._gc_ms, 0.0
            if late_ms > self.threshold_ms:
                with self._lock:
                    stack, self._stack = self._stack, ""
                self._record(Stall(late_ms, time.time(), stack, gc_ms, cpu_ms))
            elif self._stack:
                with self._lock:
                    self._stack = ""

    def _on_gc(self, phase: str, info: dict[str, int]) -> None:
        if phase == "start":
            self._gc_started = time.perf_counter()
        elif self._gc_started:
            took = (time.perf_counter() - self._gc_started) * 1000
            self._gc_ms += took
            self.gc_max_ms = max(self.gc_max_ms, took)
            self.gc_total_ms += took

    def _watchdog(self) -> None:
        """Off the loop: while the loop is late past the threshold, take its stack (the
        first look is the one kept: it shows what started the stall)."""
        step = max(self.interval_ms, self.threshold_ms / 4) / 1000
        while not self._stop.wait(step):
            late_ms = (time.monotonic() - self._beat) * 1000 - self.interval_ms
            if late_ms <= self.threshold_ms or self._stack:
                continue
            frames = sys._current_frames()
            frame = frames.get(self._loop_thread_id)
            if frame is None:
                continue
            text = "".join(traceback.format_stack(frame))
            if frame.f_code.co_name in _IDLE:
                # The loop was idle, waiting for the GIL: the threads that were running
                # Python meanwhile held it.
                text += _busy_threads(frames, self._loop_thread_id)
            with self._lock:
                if not self._stack:
                    self._stack = text

    def _record(self, stall: Stall) -> None:
        self.stalls.append(stall)
        del self.stalls[: -self.keep]
        if self.log_stalls:
            log.warning(
                "Vòng sự kiện bị chặn %.0f ms (ngưỡng %.0f ms; thu gom rác %.0f ms) / "
                "event loop blocked %.0f ms:\n%s",
                stall.lateness_ms,
                self.threshold_ms,
                stall.gc_ms,
                stall.lateness_ms,
                stall.stack or "(không bắt được ngăn xếp)",
            )

    def percentile(self, p: float) -> float:
        """The ``p``-th percentile (0-100, nearest rank) of the ticks' lateness in ms."""
        if not self.samples:
            return 0.0
        ordered = sorted(self.samples)
        return ordered[max(0, math.ceil(p / 100 * len(ordered)) - 1)]

    def summary(self) -> str:
        """One line: ticks, lateness p50/p99/max, stalls over the threshold, longest GC."""
        return (
            f"{self.ticks} ticks, lateness p50 {self.percentile(50):.1f} ms, "
            f"p99 {self.percentile(99):.1f} ms, max {self.max_lateness_ms:.0f} ms, "
            f"{len(self.stalls)} over {self.threshold_ms:.0f} ms "
            f"({sum(1 for st in self.stalls if st.own_ms > self.threshold_ms)} with the "
            f"process's own CPU over it), longest gc {self.gc_max_ms:.0f} ms, "
            f"gc total {self.gc_total_ms:.0f} ms"
        )

    def report(self) -> str:
        """The stalls seen, longest first, each with its stack (for a failing test)."""
        lines = [self.summary()]
        for st in sorted(self.stalls, key=lambda x: -x.lateness_ms):
            blocking = f", BLOCKING CALL {st.blocking_call}" if st.blocking_call else ""
            lines.append(
                f"--- {st.lateness_ms:.0f} ms (process cpu {st.cpu_ms:.0f} ms, "
                f"gc {st.gc_ms:.0f} ms{blocking})\n"
                f"{st.stack or '(no stack caught)'}"
            )
        return "\n".join(lines)


# Young-generation threshold for the cyclic collector (CPython's default is 700). Measured in
# tests/system/test_loop_stall.py: at 700 the API's ORM work set off ~90 collections a
# second, 1.3-1.7 s of every 10 s spent collecting with every thread held; at 5,000 about 6
# a second and 0.4-0.9 s. Each collection scans at most what survived since the last one, a
# few milliseconds of work.
GC_THRESHOLDS = (5_000, 20, 10)


def settle_for_latency(switch_interval_s: float = 0.001) -> None:
    """Once, after a process has started its services (``loa serve``, ``loa demo``,
    ``loa controller``): settings, set once and never switched back, that keep the loop
    prompt while worker threads run Python (API routes, the indicator, APScheduler).

    - The GIL switch interval (5 ms by default) is how long the loop, back from its poll,
      may wait for a busy thread to let go, at *each* of the many times a loop turn
      releases the GIL (every socket call): under load that adds up to hundreds of ms
      (measured: 18 stalls over 100 ms in the stall test at 5 ms, 5 at 1 ms).
    - ``gc.freeze()`` moves everything alive after start-up (modules, classes, the
      registry) out of the collector's reach, so a full collection scans what was
      allocated since, not the whole heap (measured: full collections of 250-430 ms on
      the loop).
    - ``GC_THRESHOLDS``: fewer young collections (see there).

    The collector stays on throughout: nothing is switched off and on again (the issue's
    rule against process-wide switches is about toggling a process's behaviour around one
    piece of work; these are set once, like a command-line flag)."""
    sys.setswitchinterval(switch_interval_s)
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def watch_loop_from_settings(threshold_ms: float) -> LoopWatch | None:
    """Start a watch on the running loop when ``threshold_ms`` > 0 (setting
    ``loop_stall_warn_ms``); None otherwise. Also sets asyncio's own slow-callback
    threshold, which applies when asyncio debug mode is on (``PYTHONASYNCIODEBUG=1``)."""
    if threshold_ms <= 0:
        return None
    asyncio.get_running_loop().slow_callback_duration = threshold_ms / 1000
    watch = LoopWatch(threshold_ms=threshold_ms)
    await watch.start()
    return watch


__all__ = [
    "GC_THRESHOLDS",
    "LoopWatch",
    "Stall",
    "settle_for_latency",
    "watch_loop_from_settings",
]
