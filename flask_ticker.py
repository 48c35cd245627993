"""Interval jobs and background tasks for Flask, in one file.

Run a function every hour, the first time right now, and run slow work
after the response, without cron, a job store or a scheduler package::

    from flask import Flask, request
    from flask_ticker import Ticker, run_in_background

    app = Flask(__name__)
    ticker = Ticker(app)

    @ticker.every(3600)              # now, then every hour
    def refresh_cache():
        ...

    @app.post("/signup")
    def signup():
        run_in_background(send_welcome_mail, request.form["email"])
        return "ok"

Jobs run only where the app is served: never in a CLI command, a script
that builds the app, or a test suite with ``TESTING`` set.  Each run happens
in a fresh app context on a small pool of daemon threads.  Runs follow a
fixed-rate grid on ``time.monotonic()``: they do not drift, do not overlap,
and runs missed while the process slept coalesce into one.  A failing run is
logged (through ``app.logger``) with its traceback, or in one line if it
failed the same way last time, and the job keeps its schedule.
``ticker.stop()`` runs at interpreter exit and waits up to
``TICKER_SHUTDOWN_TIMEOUT`` for work already started.

Several processes serving one app (gunicorn workers) share a lease, by
default a lock file in the instance folder: only its holder runs the jobs,
and it keeps the deployment's state beside it, so that a takeover or a
restart continues each job's schedule, and ``ticker.status()`` and
``flask ticker list`` read the same in every process.

Several hosts share a lease in Redis instead: ``TICKER_LOCK =
"redis://host:6379/0"`` (``pip install flask-ticker[redis]``).

Wall-clock times take the place of cron syntax: ``every(timedelta(days=1),
fn, at="03:00", tz="Europe/Berlin")`` runs at 03:00 local time, DST days
included; ``at=":15"`` each hour, ``at="mon 09:00"`` each week.

Limits: no cron expressions beyond those three; no retry (a run that
throws waits for its next tick).  A ticker serves one app at a time.

The file reads top to bottom: the scheduler core (`Job`, `_Scheduler`),
which knows no files or servers; the lease-and-state interface and its
implementations; the Flask extension and its launch-mode code; then the
thread pool and helpers.
"""

# SPDX-License-Identifier: MIT
from __future__ import annotations

import atexit
import contextlib
import functools
import heapq
import importlib.util
import inspect
import itertools
import json
import logging
import math
import os
import queue
import re
import signal
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import weakref
from collections.abc import Iterable, Iterator, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from blinker import Namespace
from flask import Flask, current_app, has_app_context
from flask.cli import run_command
from flask.helpers import get_debug_flag

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from concurrent.futures import Future

__version__ = "0.2.0"
# In the order a reader meets them: the extension, its jobs, tasks, signals.
__all__ = [  # noqa: RUF022
    "Ticker",
    "Job",
    "run_in_background",
    "job_started",
    "job_finished",
    "job_failed",
    "job_skipped",
    "task_failed",
]

logger = logging.getLogger("flask_ticker")

F = TypeVar("F", bound=Callable[..., Any])

# Sent with the app as sender, in the process that runs the job, inside an
# app context, as Flask sends its own; every one has ``job`` (None for a task).
_signals = Namespace()
job_started = _signals.signal("job_started", doc="A run starts.")
job_finished = _signals.signal("job_finished", doc="A run returned: duration, result.")
job_failed = _signals.signal("job_failed", doc="A run raised: exception, duration.")
job_skipped = _signals.signal("job_skipped", doc="A tick passed without a run: reason.")
task_failed = _signals.signal(
    "task_failed", doc="A run_in_background task raised: func, exception."
)
_SIGNALS = {
    "started": job_started,
    "finished": job_finished,
    "failed": job_failed,
    "skipped": job_skipped,
    "task_failed": task_failed,
}

# Shared by the jobs without kwargs: an app may register thousands of jobs.
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})

# The runner saves the deployment state at most this often, so a run that
# started is on disk within this many seconds (see `_first_due`).
_SAVE_EVERY = 0.5

# A change of wall minus monotonic time beyond this is a step of the wall
# clock (or a suspension), which moves the at= jobs' monotonic due times.
_STEPPED = 1.0

# With at= jobs planned, the thread wakes at least this often, so that a
# wall clock stepped while it sleeps delays a run by no more than this.
_WALL_CHECK = 60.0

_ONE_DAY = timedelta(days=1)  # made once: at= jobs step through days often

# Longer intervals would overflow the platform's timers and datetimes.
_MAX_INTERVAL = 100 * 365.25 * 86400

# ThreadPoolExecutor's default: background tasks are mostly I/O (mail, HTTP).
_DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)


# -- the scheduler core: jobs on fixed-rate grids; no files, no servers --


class Job:
    """One function on a fixed-rate schedule; returned by `Ticker.every`.

    Runs are due at ``origin + k * interval``, or with ``at`` at a time of
    the local clock (see `_At`).  Read the attributes for its history;
    change it with `pause`, `resume`, `cancel`.
    """

    # Slots: an app may register thousands of jobs.
    __slots__ = (
        "_args",
        "_at",
        "_declared",
        "_failing",
        "_failures",
        "_func",
        "_interval",
        "_kwargs",
        "_lagging",
        "_last_due",
        "_last_duration",
        "_last_error",
        "_last_run",
        "_name",
        "_run_now",
        "_runs",
        "_scheduler",
        "_skipped",
    )

    def __init__(
        self,
        scheduler: _Scheduler,
        func: Callable[..., Any],
        interval: float,
        name: str,
        run_now: bool,
        args: tuple,
        kwargs: Mapping[str, Any],
        at: _At | None = None,
    ) -> None:
        self._scheduler, self._at = scheduler, at
        self._declared = scheduler.generation  # for which app: see _Scheduler.add
        self._func, self._args, self._kwargs = func, args, kwargs
        self._name, self._interval, self._run_now = name, interval, run_now
        self._runs = self._failures = self._skipped = 0
        self._last_due: float | None = None  # wall time of the last run's tick
        self._last_run: float | None = None  # wall time the last run started
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._lagging = False  # warned about this streak of lapses already
        # (how it failed, how many times in a row), while it keeps failing
        # the same way: its traceback has been logged once already.
        self._failing: tuple[tuple, int] | None = None

    name = property(lambda self: self._name, doc="Unique within its ticker.")
    interval = property(lambda self: self._interval, doc="Seconds between due times, a float.")
    runs = property(lambda self: self._runs, doc="Runs finished, failed or not.")
    failures = property(lambda self: self._failures, doc="Runs that raised.")
    skipped = property(
        lambda self: self._skipped,
        doc="Due times passed over: the previous"
        " run was still going, or the process was not scheduled.",
    )
    last_duration = property(
        lambda self: self._last_duration, doc="How long the last run took, in seconds."
    )
    last_error = property(
        lambda self: self._last_error, doc="'Type: message' if the last run failed, else None."
    )

    @property
    def at(self) -> str | None:
        """The time of the local clock it runs at, as given, or None."""
        return None if self._at is None else self._at.text

    @property
    def tz(self) -> tzinfo | None:
        """The zone of ``at``: its ``tz``, else TICKER_TIMEZONE; None for an
        interval job."""
        return None if self._at is None else self._at.tz or self._scheduler.zone

    @property
    def last_run(self) -> datetime | None:
        """When the last run started, in UTC."""
        return _utc(self._last_run)

    @property
    def running(self) -> bool:
        """Whether a run is queued or in progress in this process."""
        return self._scheduler.is_running(self)

    @property
    def paused(self) -> bool:
        """Whether `pause` holds it."""
        return self._scheduler.is_paused(self)

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due, in UTC; None while paused, stopped, or
        planned in another process (the one that holds the lease)."""
        return _utc(self._scheduler.next_due(self))

    def pause(self) -> None:
        """Stop starting runs until `resume`; a run in progress finishes."""
        self._scheduler.pause(self)

    def resume(self) -> None:
        """Start runs again, on the same grid: the next due tick, not now."""
        self._scheduler.resume(self)

    def cancel(self) -> None:
        """Remove the job from its ticker; a run in progress finishes."""
        self._scheduler.remove(self)

    def run(self) -> Any:
        """Run once now in this thread, inside the app context.

        Counts in the history like a scheduled run, returns what the function
        returns and raises what it raises.  Refuses to overlap another run.
        """
        return self._scheduler.run_here(self)

    def _call(
        self,
        call: Callable[..., Any],
        wall: Callable[[], float],
        clock: Callable[[], float],
        due: float | None,
    ) -> Any:
        started = clock()
        self._last_run = wall()
        self._last_due = self._last_run if due is None else due
        self._last_error = None
        try:
            return call(self._func, self._args, self._kwargs)
        except BaseException as exc:
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._runs += 1
            self._last_duration = clock() - started

    def _log_outcome(self, exc: BaseException | None) -> None:
        if (self._last_duration or 0.0) < self._interval:
            self._lagging = False  # it keeps up again: warn at the next lapse
        if exc is None:
            if self._failing is not None:
                self._scheduler.log.info(
                    "job %r succeeded again after %d failed run(s) in a row",
                    self._name,
                    self._failing[1],
                )
                self._failing = None
            return
        # Every failure is logged, but a job that fails the same way run
        # after run (a database that is down) must not fill the log with
        # copies of one traceback: repeats take a line each.
        # By type and path, not message: a database error that quotes its
        # bound parameters differs in every message.
        how = (type(exc), _frames(exc.__traceback__))
        if self._failing is not None and self._failing[0] == how:
            self._failing = (how, self._failing[1] + 1)
            self._scheduler.log.error(
                "job %r failed again, %d times in a row, with the error and"
                " traceback logged before: %s",
                self._name,
                self._failing[1],
                self._last_error,
            )
        else:
            self._failing = (how, 1)
            self._scheduler.log.error(
                "job %r failed; it keeps its schedule", self._name, exc_info=exc
            )

    def _skip(self, ticks: int, why: str) -> None:
        self._skipped += ticks
        # Once per streak: a job that overruns every tick must not flood the
        # log.  The streak ends when a run takes less than the interval.
        if not self._lagging:
            self._lagging = True
            self._scheduler.log.warning("job %r %s", self._name, why)

    def _history(self) -> list:
        return [
            self._last_due,
            self._last_run,
            self._last_duration,
            self._last_error,
            self._runs,
            self._failures,
            self._skipped,
        ]

    def _add_run(self, started: float, duration: float, error: str | None) -> None:
        # A run another process made by hand (flask ticker run).
        self._adopt(_with_run(self._history(), started, duration, error))

    def _adopt(self, history: Sequence) -> None:
        (
            self._last_due,
            self._last_run,
            self._last_duration,
            self._last_error,
            self._runs,
            self._failures,
            self._skipped,
        ) = history

    def _schedule(self) -> str:
        every = _seconds(self._interval)
        return every if self._at is None else f"{every} at {self._at.text} {_zone_name(self.tz)}"

    def _redeclare(self, other: Job) -> None:
        self._declared = other._declared
        self._func, self._interval, self._run_now = other._func, other._interval, other._run_now
        self._at = other._at
        self._args, self._kwargs = other._args, other._kwargs

    def _declares_the_same_function(self, other: Job) -> bool:
        return _identity(other._func) == _identity(self._func)

    def _first_due(
        self, now: float, origin: float | None, unsure: tuple[float, float] | None
    ) -> tuple[float, int]:
        return _first_due(self._interval, self._run_now, now, origin, self._last_due, unsure)

    def _first_occurrence(
        self, now: float, origin: float | None, unsure: tuple[float, float] | None
    ) -> float:
        return _first_occurrence(
            self._at, self.tz, self._run_now, now, origin, self._last_due, unsure
        )

    def _next_time(self, wall: float) -> float:
        """An at= job's first time after the wall time ``wall``."""
        return self._at.next_after(wall, self.tz)

    def __repr__(self) -> str:
        due = self._scheduler.next_due(self)
        when = (
            "paused"
            if self.paused
            else "not scheduled"
            if due is None
            else f"next in {_seconds(max(0.0, due - self._scheduler.wall()))}"
        )
        if self._at is not None and due is not None and not self.paused:
            when = f"next {_when(due, self.tz)} ({_zone_name(self.tz)})"
        every = _seconds(self._interval) + ("" if self._at is None else f" at {self._at.text}")
        return (
            f"<Job {self._name!r} every {every}, {when},"
            f" runs={self._runs} failures={self._failures} skipped={self._skipped}>"
        )


class _Scheduler:
    """The jobs of one ticker, their grids, and the thread that runs them.

    `run_pending` is one synchronous pass: it starts the jobs that are due
    at ``now`` and returns the seconds until the next one.  `tick`, below
    it, is what the thread does between waits on an Event: keep the lease
    (see `_Lease`), since only its holder runs jobs; make the pass; and save
    the jobs' history to the deployment state, from which the next holder
    plans them (see `_first_due`).
    """

    def __init__(self, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.clock, self.wall = clock, wall
        self.lease: _Lease = _NoLock()
        # call(func, args, kwargs) runs a job's function; the Ticker binds it
        # to its app.  None: no app yet.
        self.call: Callable[[Callable[..., Any], tuple, Mapping[str, Any]], Any] | None = None
        self.submit: Callable[[str, Callable[[], None], Callable[[], Any]], None] | None = None
        self.retry = 5.0
        self.zone: tzinfo | None = None  # of at= jobs without their own tz (the Ticker's)
        self.log = logger  # the app's, once bound: see Ticker.init_app
        # notify(event, job, **details): "started", "finished", "failed",
        # "skipped"; the Ticker sends them as signals.
        self.notify: Callable[..., None] = lambda event, job, **details: None
        self.jobs: dict[str, Job] = {}
        # Counts the apps bound: a job declared again for the same app is a
        # mistake, for a new one (a factory called again) a new declaration.
        self.generation = 0
        self._paused: set[Job] = set()
        self._walled = 0  # jobs with at=, whose due times follow the wall clock
        self._offset: float | None = None  # wall minus monotonic time, at the last pass
        self._reset()

    def _reset(self) -> None:
        # What a forked child builds anew: its parent's threads are gone,
        # and may have held this lock at the moment of the fork.
        #
        # Guards jobs, the heap, the plans and the running set.  Never held
        # while user code runs or while the lease does I/O.
        self._lock = threading.Lock()
        # One save at a time: the thread's, stop()'s and a pass by hand.
        self._saving = threading.Lock()
        self.wakeup = threading.Event()
        # _plans keeps each job's live entry; the heap may also hold entries
        # that were replaced since, and drops them when they come up.
        self._heap: list[_Entry] = []
        self._plans: dict[Job, _Entry] = {}
        self._running: set[Job] = set()
        self._thread: threading.Thread | None = None
        self._waiting = False  # the thread is blocked in lease.take(block=True)
        self._said_why = False  # why it does not run the jobs, or why it cannot
        self.holding = False
        self.runner: dict | None = None  # this process, while it holds the lease
        self._unclaimed: dict[str, list] = {}  # saved jobs not registered (yet)
        # Wall times within which the last holder, which left without saving,
        # may have started runs that the state does not show; or None.
        self._unsure: tuple[float, float] | None = None
        self._folded = 0.0  # runs by hand up to this wall time are in the history
        self._dirty = False  # history changed since the last save
        self._saved_at = -math.inf  # monotonic
        # A lease with a TTL: when a renewal last worked, and when to renew.
        self._renewed_at, self._renew_at = -math.inf, math.inf

    # -- what Job and Ticker ask of it --

    def add(self, job: Job) -> Job:
        with self._lock:
            known = self.jobs.get(job.name)
            if known is None:
                self.jobs[job.name] = job
                self._walled += job.at is not None
                if self.holding:
                    self._plan(job, self._unclaimed.pop(job.name, None), self.clock(), self.wall())
            elif not known._declares_the_same_function(job):
                raise ValueError(
                    f"every(): a job named {job.name!r} is already registered on this"
                    " ticker with another function; pass name= to register another"
                )
            else:  # the same function again
                moved = (known.interval, known.at, known.tz) != (job.interval, job.at, job.tz)
                if moved and known._declared == job._declared:
                    raise ValueError(
                        f"every(): job {job.name!r} is already declared on this app, to run"
                        f" every {known._schedule()}; declaring it again to run every"
                        f" {job._schedule()} would replace that silently: declare it once,"
                        " or pass name= to make it a second job"
                    )
                self._walled += (job.at is not None) - (known.at is not None)
                known._redeclare(job)
                job = known
                if moved and self.holding:
                    self._plan(job, [None, None, *job._history()], self.clock(), self.wall())
        self.wakeup.set()
        return job

    def remove(self, job: Job) -> None:
        with self._lock:
            if self.jobs.get(job.name) is job:
                del self.jobs[job.name]
                self._walled -= job.at is not None
                self._paused.discard(job)
                self._plans.pop(job, None)
        self._mark_dirty()

    def pause(self, job: Job) -> None:
        with self._lock:
            if self.jobs.get(job.name) is job:
                self._paused.add(job)
        self._mark_dirty()

    def resume(self, job: Job) -> None:
        with self._lock:
            if job not in self._paused:
                return
            self._paused.discard(job)
            plan = self._plans.get(job)
            if plan is not None and job.at is not None:  # at its next time
                wall = self.wall()
                self._push_at(job, max(plan[2], job._next_time(wall)), wall - self.clock())
            elif plan is not None:  # back on its grid, at the next tick
                due, _, origin = plan
                ahead = math.ceil((self.clock() - origin) / job.interval)
                self._push(job, origin, max(ahead, round((due - origin) / job.interval)))
            elif self.holding and self.jobs.get(job.name) is job:
                self._plan(job, None, self.clock(), self.wall())
        self.wakeup.set()
        self._mark_dirty()

    def is_paused(self, job: Job) -> bool:
        return job in self._paused

    def is_running(self, job: Job) -> bool:
        return job in self._running

    def next_due(self, job: Job) -> float | None:
        """The wall time at which ``job`` is due next, or None."""
        plan = self._plans.get(job)
        if plan is None or job in self._paused:
            return None
        return plan[2] if job.at is not None else plan[0] - self.clock() + self.wall()

    def run_here(self, job: Job) -> Any:
        if self.call is None:
            raise RuntimeError(
                f"job {job.name!r} cannot run: no Flask app is bound to its ticker;"
                " pass the app to Ticker(app) or call ticker.init_app(app)"
            )
        with self._lock:
            if job in self._running:
                raise RuntimeError(f"job {job.name!r} is already running")
            self._running.add(job)
        try:
            return job._call(self.call, self.wall, self.clock, None)
        finally:
            self._running.discard(job)
            self._mark_dirty()

    # -- one pass --

    def run_pending(self, now: float) -> float | None:
        """Start the jobs due at ``now`` (monotonic); return the seconds until
        the next is due, or None if none is planned."""
        start, lapses = [], []
        offset = self.wall() - now
        with self._lock:
            if self._offset is None or not self._walled:
                self._offset = offset
            elif abs(offset - self._offset) >= _STEPPED:  # a step, or drift that adds up to one
                self._follow_the_wall_clock(offset)
                self._offset = offset
            heap = self._heap
            while heap and heap[0][0] <= now:
                entry = heapq.heappop(heap)
                due, job, origin = entry
                if self._plans.get(job) is not entry:
                    continue  # replaced, or the job is gone
                if job in self._paused:
                    continue  # resume() plans it again
                planned = (
                    self._plan_next_time(job, origin, now + offset, offset)
                    if job.at is not None
                    else self._plan_next_tick(job, due, origin, now, offset)
                )
                if planned is None:
                    continue
                behind, latest = planned  # a catch-up run counts for the latest it stands for
                if job in self._running:
                    lapses.append(
                        (
                            job,
                            behind + 1,
                            "is still running at its next due"
                            " time; skipping runs until it finishes",
                        )
                    )
                else:
                    if behind:
                        lapses.append(
                            (
                                job,
                                behind,
                                f"was {behind} run(s) behind (was the"
                                " process suspended?); running it once now",
                            )
                        )
                    self._running.add(job)
                    start.append((job, latest))
            delay = heap[0][0] - now if heap else None
        for job, ticks, why in lapses:
            job._skip(ticks, why)
            self.notify("skipped", job, reason=why)
        if start:
            self._dirty = True
            for job, due in start:
                try:
                    self.submit(
                        job.name,
                        functools.partial(self._run, job, due),
                        functools.partial(self._running.discard, job),
                    )
                except RuntimeError:  # the pool was closed meanwhile: a stop
                    self._running.discard(job)
        return delay

    def _plan_next_tick(
        self, job: Job, due: float, origin: float, now: float, offset: float
    ) -> tuple[int, float]:
        """Plan an interval job due at ``due`` by its next tick after ``now``;
        return how many ticks it has missed already and the latest one's
        wall time."""
        behind = int((now - due) // job.interval)
        index = round((due - origin) / job.interval) + behind + 1
        while origin + index * job.interval <= now:  # float rounding
            index += 1
        self._push(job, origin, index)
        return behind, due + behind * job.interval + offset

    def _plan_next_time(
        self, job: Job, time: float, wall: float, offset: float
    ) -> tuple[int, float] | None:
        """Plan an ``at=`` job due at wall ``time`` by its next time after
        ``wall``; return how many times it has missed already and the latest
        time that has come, or None if ``time`` has not come on the wall
        clock (which was set back)."""
        if wall < time - _STEPPED:
            self._push_at(job, time, offset)
            return None
        missed, latest, later = 0, time, job._next_time(time)
        while later <= wall and missed < 10_000:  # a long suspension: bounded
            missed, latest = missed + 1, later
            later = job._next_time(later)
        self._push_at(job, later, offset)
        return missed, latest

    def _follow_the_wall_clock(self, offset: float) -> None:
        # The wall clock was stepped (NTP, by hand) or the machine slept: at=
        # jobs are due at wall times, so their monotonic due times move.  The
        # heap is built anew, so that steps cannot pile up stale entries.
        live = []
        for job, entry in self._plans.items():
            if job.at is not None:
                entry = self._plans[job] = _Entry((entry[2] - offset, job, entry[2]))
            if job not in self._paused:
                live.append(entry)
        heapq.heapify(live)
        self._heap = live

    def _run(self, job: Job, due: float) -> None:
        if not self._may_start():  # queued behind busy workers, and the lease lost since
            self._running.discard(job)
            job._skip(1, "was not started: this process lost the lease (TICKER_LOCK)")
            return
        self.notify("started", job)
        try:
            result = job._call(self.call, self.wall, self.clock, due)
        except BaseException as exc:
            job._log_outcome(exc)
            self.notify("failed", job, exception=exc, duration=job.last_duration)
        else:
            job._log_outcome(None)
            self.notify("finished", job, result=result, duration=job.last_duration)
        finally:
            self._running.discard(job)
            self._mark_dirty()

    def run_by_hand(self, job: Job) -> Any:
        """Run ``job`` now in this thread, and record it in the deployment
        state: as the runner, if no process is, else beside it.  A lease
        that expires is never taken for it: nothing would renew it during a
        long run."""
        took = not self.holding and self.lease.ttl is None and self._take(None, block=False)
        started, runs = self.wall(), job.runs
        try:
            return self.run_here(job)
        finally:
            if took:
                self.leave()
            elif not self.holding and job.runs > runs:  # it did run
                try:
                    self.lease.record(job.name, [started, job.last_duration, job.last_error])
                except _Outage as exc:  # the caller gets the run's own outcome
                    self.log.warning(
                        "the run of job %r is not in the deployment state: %s", job.name, exc
                    )

    def _push(self, job: Job, origin: float, index: int) -> None:
        # At index 0 the origin itself, not an equal float: one object less
        # per job, for apps that have thousands.
        entry = _Entry((origin + index * job.interval if index else origin, job, origin))
        self._plans[job] = entry
        if job not in self._paused:
            heapq.heappush(self._heap, entry)

    def _push_at(self, job: Job, time: float, offset: float) -> None:
        # An at= job's entry: (monotonic due, job, its wall time).
        entry = _Entry((time - offset, job, time))
        self._plans[job] = entry
        if job not in self._paused:
            heapq.heappush(self._heap, entry)

    def _plan(self, job: Job, saved: list | None, now: float, wall: float) -> None:
        """Put a job on its grid, from what the deployment state says of it;
        ``now`` and ``wall`` are one reading of both clocks."""
        origin = None
        if saved is not None:
            interval, origin = saved[0], saved[1]
            job._adopt(saved[2:9])
            if interval != job.interval:  # declared anew: a new grid from its last run
                origin = saved[2]
        if job.at is not None:
            self._push_at(job, job._first_occurrence(wall, origin, self._unsure), wall - now)
        else:
            origin, index = job._first_due(wall, origin, self._unsure)
            self._push(job, origin - wall + now, index)
        self._dirty = True

    # -- the thread --

    @property
    def running(self) -> bool:
        return self._thread is not None

    def owns(self, thread: threading.Thread) -> bool:
        return self._thread is thread

    def start(self) -> None:
        with self._lock:
            if self._thread is not None:
                return
            thread = self._thread = threading.Thread(
                target=_loop,
                args=(weakref.ref(self), self.wakeup),
                name="flask-ticker",
                daemon=True,
            )
        # The first pass runs here: run_now jobs need not wait for the thread.
        try:
            self.tick(thread, first=True)
        except BaseException:
            with self._lock:
                self._thread = None
            raise
        thread.start()

    def tick(self, thread: threading.Thread | None, first: bool = False) -> float | None:
        """Take the lease if need be, run what is due and save what changed;
        return how long the thread may sleep (None: until woken).  ``thread``
        is the scheduler thread, or None for a pass made by hand."""
        block = self.lease.blocks and thread is not None and not first
        if not self.holding and not self._take(thread, block):
            return self.retry
        if thread is not None and not self.owns(thread):
            return None  # stop() came first; the loop sees it next
        if not self._keep():
            return self.retry
        delay = self.run_pending(self.clock())
        if first:
            return delay  # the thread saves, as soon as it starts
        if self._dirty and self.clock() >= self._saved_at + _SAVE_EVERY:
            self.save()
        wakes = [delay, self._renew_at - self.clock(), _WALL_CHECK if self._walled else None]
        if self._dirty:
            wakes.append(self._saved_at + _SAVE_EVERY - self.clock())
        wake = min(w for w in wakes if w is not None)
        return None if wake == math.inf else wake

    def _keep(self) -> bool:
        """Renew a lease that expires, when it is time to; return whether
        this process may still start runs.  It may not once renewals have
        failed for a whole TTL since the last one that worked, on its own
        clock, whether or not another process has the lease by then."""
        ttl, now = self.lease.ttl, self.clock()
        if ttl is None or now < self._renew_at:
            return True
        try:
            kept: bool | None = self.lease.renew()
        except Exception as exc:
            if not isinstance(exc, _Outage):  # an _Outage is logged by the lease
                self.log.exception("cannot renew the lease (TICKER_LOCK)")
            kept = None
        if kept:
            self._renewed_at, self._renew_at = now, now + ttl / 3
            self.save()  # also a sign of life, for a successor's _crash_window
            return self.holding
        if kept is None and self._may_start():  # which reads the clock again
            self._renew_at = min(self.clock() + min(self.retry, ttl / 3), self._renewed_at + ttl)
            return True
        self._lose(
            "another process took its lease (TICKER_LOCK)"
            if kept is False
            else f"it could not renew its lease (TICKER_LOCK) within TICKER_LOCK_TTL ({ttl}s)"
        )
        return False

    def _may_start(self) -> bool:
        # Holding, and within a TTL of the last renewal that worked: the
        # thread notices a lapse only when it next wakes.
        ttl = self.lease.ttl
        return self.holding and (ttl is None or self.clock() < self._renewed_at + ttl)

    def _lose(self, why: str) -> None:
        self.log.warning("process %d stops starting runs: %s", os.getpid(), why)
        self._unplan_all()

    def _take(self, thread: threading.Thread | None, block: bool) -> bool:
        """Try to become the runner; on success, plan every job."""
        with self._lock:  # so that stop() sees either a stop or a wait, never neither
            if thread is not None and not self.owns(thread):
                return False
            self._waiting = block
        taken, state, before = False, None, self.clock()
        try:
            taken = self.lease.take(block)
            state = self.lease.load() if taken else None
        except Exception as exc:
            if not self._said_why and not isinstance(exc, _Outage):  # once, not every retry
                self._said_why = True
                self.log.exception(
                    "cannot take the lock (TICKER_LOCK); trying again every %ss", self.retry
                )
            if taken:
                self._release()
            return False
        finally:
            self._waiting = False
        if not taken and not self._said_why:
            self._said_why = True
            self.log.info(
                "process %d does not run the jobs: another process holds the"
                " lock (TICKER_LOCK), and this one takes over if it stops",
                os.getpid(),
            )
        try:
            with self._lock:
                if taken and (thread is None or self.owns(thread)):  # not stopped meanwhile
                    saved = state["jobs"] if state else {}
                    self._unsure = self._crash_window(state and state["runner"])
                    self._folded = state["folded"] if state else 0.0
                    now, wall = self.clock(), self.wall()
                    for job in self.jobs.values():
                        self._plan(job, saved.pop(job.name, None), now, wall)
                    self._unclaimed = saved
                    self.holding = True
                    self.runner = _runner()  # since now, for every save and status
                    self._said_why = False
                    ttl = self.lease.ttl
                    self._renewed_at = before
                    self._renew_at = math.inf if ttl is None else before + ttl / 3
        except Exception:  # a state file of another shape: say so, and take nothing
            self.log.exception("cannot plan the jobs from the state beside TICKER_LOCK")
            self._unplan_all()
        if self.holding:
            self.log.info("process %d runs the jobs", os.getpid())
            return True
        if taken:
            self._release()
        return False

    def _crash_window(self, runner: dict | None) -> tuple[float, float] | None:
        """Where the state names a runner, it left without a clean stop, and
        may have started runs it had not saved yet: those of its last
        moments.  A lease that never expires is free the moment its holder
        dies, and a process blocked on it takes over at once, so those
        moments are now.  One with a TTL is taken over a TTL or more later.
        Its holder saved a sign of life, ``alive``, at each renewal (see
        `_keep`), and may have started runs until a TTL after the last
        renewal that worked, so the window runs from ``alive`` to a TTL
        after it."""
        if not runner:
            return None
        now, ttl = self.wall(), self.lease.ttl
        if ttl is None:
            return now - 2 * _SAVE_EVERY, now
        alive = runner.get("alive", now - ttl)
        return alive - 2 * _SAVE_EVERY, min(now, alive + ttl + 2 * _SAVE_EVERY)

    def _unplan_all(self) -> None:
        with self._lock:
            self.holding = False
            self._heap.clear()
            self._plans.clear()
        self._renew_at = math.inf

    def _release(self) -> None:
        try:
            self.lease.release()
        except Exception as exc:  # it expires by itself, if it expires
            if not isinstance(exc, _Outage):
                self.log.exception("cannot release the lease (TICKER_LOCK)")

    def stop(self) -> None:
        """Stop starting runs and end the thread; a run in progress goes on."""
        with self._lock:
            thread, self._thread = self._thread, None
            waiting = self._waiting
        self.wakeup.set()
        # A thread blocked on the lease cannot be woken; it lets go of the
        # lease itself if it ever gets it.
        # A thread start() has not started yet (a run_now job of its first
        # pass stops the ticker) ends at its first look.
        if (
            thread is not None
            and thread.ident is not None
            and thread is not threading.current_thread()
            and not waiting
        ):
            thread.join()  # prompt: the loop runs no job (job_skipped receivers aside)

    def leave(self) -> None:
        """Once the runs have finished: save, then release the lease."""
        if self.holding:
            try:
                self.save(runner=False)
            finally:
                self._unplan_all()
                self._release()

    def forget_parent(self) -> None:
        """In a forked child: drop the parent's lease and threads."""
        self.lease.forget()
        self._reset()

    # -- saving the deployment state --

    def _mark_dirty(self) -> None:
        # The first change after a save wakes the thread to save it within
        # _SAVE_EVERY; later ones ride along.
        if not self._dirty:
            self._dirty = True
            self.wakeup.set()

    def save(self, runner: bool = True) -> None:
        """Write what changed of the jobs' grids and history to the
        deployment state, and whether this process still runs them."""
        changed, self._dirty = self._dirty, False
        if not self.lease.shared:
            return
        self._saved_at = self.clock()
        with self._saving:
            try:
                kept = self._save(runner, changed)
            except Exception as exc:
                self._dirty = True
                if not isinstance(exc, _Outage):
                    self.log.exception(
                        "cannot save the jobs' state beside TICKER_LOCK; trying again in %ss",
                        _SAVE_EVERY,
                    )
                return
        if kept is False and self.holding:
            self._lose("another process took its lease (TICKER_LOCK) before it saved")

    def row(self, job: Job, offset: float) -> list:
        """The job's row of the deployment state; ``offset`` is wall minus
        monotonic time."""
        plan = self._plans.get(job)
        paused = job in self._paused
        if plan is None:
            origin = due = None
        elif job.at is not None:  # its entry holds its wall time
            origin = due = plan[2]
        else:
            origin, due = plan[2] + offset, plan[0] + offset
        return [
            job.interval,
            origin,
            *job._history(),
            None if paused else due,
            job in self._running,
            paused,
        ]

    def _save(self, runner: bool, changed: bool) -> bool | None:
        if changed:  # runs made by hand meanwhile join the history
            for name, started, duration, error in self.lease.runs(self._folded):
                job = self.jobs.get(name)
                if job is not None:
                    job._add_run(started, duration, error)
                self._folded = max(self._folded, started)
        with self._lock:  # a list of the jobs, not of their rows: 10,000 jobs are fine
            jobs = list(self.jobs.values())
            unclaimed = list(self._unclaimed.items())
        offset = self.wall() - self.clock()

        def rows() -> Iterator[tuple[str, list]]:
            for job in jobs:
                yield job.name, self.row(job, offset)
            yield from unclaimed  # another version's jobs, kept for when it runs again

        alive = {**self.runner, "alive": self.wall()} if runner and self.runner else None
        return self.lease.save(alive, rows() if changed else None, self._folded)


class _Entry(tuple):
    """(due, job, origin) on the heap, ordered by due time alone: jobs need
    no order, and a tie-breaking counter would cost every entry an int."""

    __slots__ = ()

    def __lt__(self, other: tuple) -> bool:  # type: ignore[override]
        return self[0] < other[0]


def _first_due(
    interval: float,
    run_now: bool,
    now: float,
    origin: float | None,
    last_due: float | None,
    unsure: tuple[float, float] | None,
) -> tuple[float, int]:
    """Where a job's grid goes on, as (origin, index), on the wall clock.

    A job with no grid yet starts one: now with ``run_now``, else one
    interval later.  A job whose last tick ran waits for its next tick.  A
    job whose last tick was missed (the deployment was down) runs once, now.
    A holder that crashed may have started runs without saving them, in the
    window ``unsure`` (see `_Scheduler._crash_window`): a tick there counts
    as run, so that no tick runs twice.
    """
    if origin is None:
        return (now if run_now else now + interval), 0
    ticks = math.floor((now - origin) / interval)
    if ticks < 0:
        return origin, 0
    last_tick = origin + ticks * interval
    ran = last_due is not None and last_due >= last_tick - 1e-6
    if ran or (unsure and unsure[0] < last_tick <= unsure[1]):
        return origin, ticks + 1
    return now, 0


class _At:
    """A time of the local clock, ``at=`` of a job: each day ("03:00"), each
    hour (":15") or each week ("mon 09:00").  Occurrences are wall times.

    A daily or weekly time that a spring-forward day skips falls on the
    first instant after the gap, and one that a fall-back day repeats on
    its first occurrence.  An hourly one falls on every instant whose
    local minute and second are those given: once in each real hour, so
    also in an hour that the clock repeats.  ``tz`` None: the ticker's zone.
    """

    __slots__ = ("_last", "period", "seconds", "text", "tz", "weekday")

    def __init__(
        self, text: str, period: float, weekday: int | None, seconds: int, tz: tzinfo | None
    ) -> None:
        self.text, self.period, self.weekday, self.seconds, self.tz = (
            text,
            period,
            weekday,
            seconds,
            tz,
        )
        # (wall, tz, answer) of the last question: a ticker plans all its
        # jobs from one reading of the clock, and thousands of jobs may
        # share an _At (see _parse_at).
        self._last: tuple = (None, None, None)

    def next_after(self, wall: float, tz: tzinfo) -> float:
        """The first occurrence after ``wall``, in the zone ``tz``."""
        tz = self.tz or tz
        asked, zone, answer = self._last
        if asked != wall or zone is not tz:
            answer = self._after(wall, tz)
            self._last = (wall, tz, answer)
        return answer

    def _after(self, wall: float, tz: tzinfo) -> float:
        if self.period == 3600:
            return self._hourly_after(wall, tz)
        day = datetime.fromtimestamp(wall, tz).date() - _ONE_DAY
        for _ in range(10):
            if self.weekday is None or day.weekday() == self.weekday:
                occurrence = self._on(day, tz)
                if occurrence > wall:
                    return occurrence
            day += _ONE_DAY
        raise AssertionError("no occurrence within ten days")  # pragma: no cover

    def _on(self, day: date, tz: tzinfo) -> float:
        midnight = _plain_day(day, tz)
        if midnight is not None:
            return midnight + self.seconds
        hour, rest = divmod(self.seconds, 3600)
        naive = datetime.combine(day, dtime(hour, rest // 60, rest % 60))
        first = naive.replace(tzinfo=tz).timestamp()  # fold=0: the first of two
        if datetime.fromtimestamp(first, tz).replace(tzinfo=None) == naive:
            return first
        # Skipped by a spring-forward: the gap ends between the two readings
        # of the time, the one with the offset after it and the one before.
        low, high = naive.replace(tzinfo=tz, fold=1).timestamp(), first
        while high - low > 1:
            mid = (low + high) // 2
            if datetime.fromtimestamp(mid, tz).replace(tzinfo=None) > naive:
                high = mid
            else:
                low = mid
        return high

    def _hourly_after(self, wall: float, tz: tzinfo) -> float:
        # An instant t is one when (t + its UTC offset) is ``seconds`` past a
        # whole hour.  The offset may change within the next two hours (a
        # DST change), so each offset seen in them is tried.
        def offset(t: float) -> float:
            return datetime.fromtimestamp(t, tz).utcoffset().total_seconds()

        best = math.inf
        for ahead in range(0, 7201, 1800):
            shift = offset(wall + ahead)
            base = wall + (self.seconds - wall - shift) % 3600
            for t in (base, base + 3600):
                if wall < t < best and offset(t) == shift:
                    best = t
        return best


@functools.lru_cache(maxsize=64)
def _plain_day(day: date, tz: tzinfo) -> float | None:
    """The wall time of ``day``'s midnight in ``tz`` if the day keeps one UTC
    offset from start to end (no DST change), else None.  Cached: jobs at
    different times of one day share it."""
    midnight = datetime.combine(day, dtime(), tz)
    start = midnight.timestamp()
    end = datetime.combine(day + _ONE_DAY, dtime(), tz).timestamp()
    offset = datetime.fromtimestamp(start, tz).utcoffset()
    if datetime.fromtimestamp(end - 1, tz).utcoffset() != offset or midnight.utcoffset() != offset:
        return None
    return start


def _first_occurrence(
    at: _At,
    tz: tzinfo,
    run_now: bool,
    now: float,
    origin: float | None,
    last_due: float | None,
    unsure: tuple[float, float] | None,
) -> float:
    """When an ``at=`` job is due next, on the wall clock: `_first_due`'s
    rule for local times.  ``origin`` is the first due time recorded for a
    job that has not run yet.  An occurrence missed while the deployment was
    down runs once, now, however many were missed; occurrences that all
    fall in ``unsure`` count as run."""
    if origin is None and last_due is None:
        return now if run_now else at.next_after(now, tz)
    missed = origin if last_due is None else at.next_after(last_due, tz)
    if missed <= now and not (
        unsure and unsure[0] < missed and at.next_after(min(unsure[1], now), tz) > now
    ):
        return now
    return at.next_after(now, tz)


def _loop(ref: weakref.ref[_Scheduler], wakeup: threading.Event) -> None:
    # Holds the scheduler only weakly while asleep, so a ticker nobody
    # stopped goes away with its app.  Clearing the event before checking
    # means a stop() or an added job can never be missed.
    me = threading.current_thread()
    while True:
        wakeup.clear()
        scheduler = ref()
        if scheduler is None or not scheduler.owns(me):
            return
        try:
            delay = scheduler.tick(me)
        except Exception:  # a bug of ours: say so, and keep the jobs going
            scheduler.log.critical(
                "the ticker's scheduler failed; it goes on in %ss", scheduler.retry, exc_info=True
            )
            delay = scheduler.retry
        del scheduler
        wakeup.wait(None if delay is None else min(delay, threading.TIMEOUT_MAX))


# -- the lease and the deployment state --


class _Lease:
    """Who of several processes runs the jobs, and what they all remember.

    A process takes the lease to become the runner and releases it when it
    stops.  A lease with a ``ttl`` expires unless its holder renews it
    within that many seconds (`renew`); the others never expire.  The
    runner saves the deployment state; any process loads it.
    The state is ``{"runner": {...} or None, "jobs": {name: [interval,
    origin, *history, next_due, running, paused]}, "folded": t}``, times on
    the wall clock.  Runs made by hand outside the runner (`record`) are in
    the jobs' rows that `load` returns; the runner's history includes those
    up to ``folded``.
    ``shared`` is False where there is no state beyond this process.
    A store that cannot be reached raises `_Outage`, having logged it.
    """

    shared = True
    blocks = False  # take(block=True) waits until the lease is free
    ttl: float | None = None
    log = logger

    def check(self) -> None:
        """Fail now, at start-up, on a setting that cannot work."""

    def take(self, block: bool) -> bool:
        raise NotImplementedError

    def renew(self) -> bool:
        """Extend a held lease by its ``ttl``; False if it was lost."""
        return True

    def release(self) -> None:
        pass

    def forget(self) -> None:
        """In a forked child: let go of the parent's lease without releasing it."""

    def load(self) -> dict | None:
        return None

    def save(
        self, runner: dict | None, jobs: Iterable[tuple[str, list]] | None, folded: float
    ) -> bool | None:
        """Record the runner (None: it stopped cleanly) and, unless None,
        every job's row.  False: this process had lost the lease, and saved
        nothing."""

    def record(self, name: str, run: list) -> None:
        """Note a run made by hand, [started, duration, error], for the runner."""

    def runs(self, since: float) -> list[list]:
        """The runs recorded by hand since ``since``: [name, *run] each."""
        return []

    def holder(self) -> bool:
        """Whether some process holds the lease now."""
        return True


class _Outage(ConnectionError):
    """The lease's store cannot be reached.  The lease has logged it, once
    for the whole outage, so whoever catches this need not."""


# The state's fields, in the order of a row: the header names them, so that
# a state written by another version is ignored, not misread.
_FIELDS = [
    "interval",
    "origin",
    "last_due",
    "last_run",
    "last_duration",
    "last_error",
    "runs",
    "failures",
    "skipped",
    "next_due",
    "running",
    "paused",
]


def _encode_state(jobs: Iterable[tuple[str, list]], folded: float) -> Iterator[str]:
    yield json.dumps({"fields": _FIELDS, "folded": folded}) + "\n"
    for name, row in jobs:
        yield json.dumps([name, *row]) + "\n"


def _decode_state(
    lines: Iterable[bytes | str], runs: Callable[[float], list[list]], runner: dict | None
) -> dict | None:
    """The state `_encode_state` wrote, with the runs by hand since; None if
    another version wrote it.  Raises ValueError if it is damaged."""
    lines = iter(lines)
    head = json.loads(next(lines, "{}"))
    if head.get("fields") != _FIELDS:
        return None
    jobs = {}
    for line in lines:
        name, *row = json.loads(line)
        jobs[name] = row
    folded = head.get("folded", 0.0)
    for name, started, duration, error in runs(folded):
        row = jobs.setdefault(
            name, [None, None, None, None, None, None, 0, 0, 0, None, False, False]
        )
        row[2:9] = _with_run(row[2:9], started, duration, error)
    return {"runner": runner, "jobs": jobs, "folded": folded}


def _runs_since(runs: Iterable[bytes | str], since: float) -> list[list]:
    return [run for run in map(json.loads, runs) if run[1] > since]


class _NoLock(_Lease):
    """``TICKER_LOCK = False``: every process runs the jobs; no shared state."""

    shared = False

    def take(self, block: bool) -> bool:
        return True


class _UserLock(_Lease):
    """A lock object of the user's: ``acquire(blocking=False)``, ``release()``.
    It keeps no state, so each new runner starts its grids afresh.

    Some locks may be released only by the thread that acquired them (an
    RLock, a database session's advisory lock), while the ticker takes the
    lease on one thread and releases it on another; so a thread of the
    lease's own makes both calls, and lives as long as the lock is held.
    """

    shared = False

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self._holder: tuple[queue.SimpleQueue, queue.SimpleQueue] | None = None

    def take(self, block: bool) -> bool:
        requests, answers = queue.SimpleQueue(), queue.SimpleQueue()
        threading.Thread(
            target=self._hold, args=(requests, answers), name="flask-ticker-lock", daemon=True
        ).start()
        if _answer(answers):
            self._holder = requests, answers
            return True
        return False

    def _hold(self, requests: queue.SimpleQueue, answers: queue.SimpleQueue) -> None:
        if _reply(answers, lambda: bool(self.lock.acquire(blocking=False))):
            requests.get()  # release() asks
            _reply(answers, self.lock.release)

    def release(self) -> None:
        holder, self._holder = self._holder, None
        if holder is not None:
            requests, answers = holder
            requests.put(None)
            _answer(answers)

    def forget(self) -> None:
        self._holder = None  # its thread stayed behind in the parent


class _LockFile(_Lease):
    """The default: a flock() lock file, and the state in a file beside it.

    The kernel drops a flock() lock when its process dies, so a crash never
    leaves a stale lock, and a process blocked on it takes over at once.
    Beside it, ``name.lock.state`` holds a JSON line naming its fields, then
    one per job; ``name.lock.runner`` names the process that runs the jobs,
    and a clean stop removes it; ``name.lock.runs`` notes runs made by hand
    (flask ticker run) beside a runner, until the runner has taken them in.  A
    forked child shares its parent's open files, so it closes its copies
    (`forget`) rather than unlocking.
    """

    blocks = True

    def __init__(self, path: str) -> None:
        self.path = self.where = path
        self._held: Any = None  # the open lock file, while held

    def _open(self, path: str, flags: int = 0) -> int:
        flags |= (
            os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        )
        try:
            return os.open(path, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
            return os.open(path, flags, 0o600)

    def check(self) -> None:
        """Fail now, at start-up, on a path that cannot work."""
        os.close(self._open(self.path))

    def take(self, block: bool) -> bool:
        file = open(self._open(self.path), "r+b", buffering=0)  # noqa: SIM115 (held while locked)
        try:
            fcntl.flock(file, fcntl.LOCK_EX | (0 if block else fcntl.LOCK_NB))
        except BaseException:
            file.close()
            if not block:
                return False
            raise
        self._held = file
        return True

    def release(self) -> None:
        # Closing drops the lock; LOCK_UN would also drop it for a forked
        # child that has not closed its copy yet.
        file, self._held = self._held, None
        if file is not None:
            file.close()

    forget = release

    def holder(self) -> bool:
        if self._held is not None:
            return True
        with open(self._open(self.path), "r+b", buffering=0) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def load(self) -> dict | None:
        try:
            with open(self.path + ".state", "rb") as file:
                runner = None
                with (
                    contextlib.suppress(FileNotFoundError),
                    open(self.path + ".runner", "rb") as runner_file,
                ):
                    runner = json.load(runner_file)
                return _decode_state(file, self.runs, runner)
        except FileNotFoundError:
            return None
        except ValueError:
            self.log.warning("ignoring %s.state, which is damaged", self.path)
            return None

    def save(
        self, runner: dict | None, jobs: Iterable[tuple[str, list]] | None, folded: float
    ) -> None:
        if jobs is not None:
            self._replace(".state", _encode_state(jobs, folded))
            if folded and os.path.exists(self.path + ".runs"):
                # What is in the history now leaves the log.  A run recorded
                # in the moment between reading and replacing it is lost from
                # the history; runs by hand are rare enough for that.
                later = [json.dumps(run) + "\n" for run in self.runs(folded)]
                if later:
                    self._replace(".runs", later)
                else:
                    os.unlink(self.path + ".runs")
        if runner is not None:
            self._replace(".runner", [json.dumps(runner)])
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path + ".runner")

    def record(self, name: str, run: list) -> None:
        with open(self._open(self.path + ".runs", os.O_APPEND), "a", encoding="utf-8") as file:
            file.write(json.dumps([name, *run]) + "\n")

    def runs(self, since: float) -> list[list]:
        try:
            with open(self.path + ".runs", "rb") as file:
                return _runs_since(file, since)
        except FileNotFoundError:
            return []

    def _replace(self, suffix: str, lines: Iterable[str]) -> None:
        # By rename, so that a reader never sees half a file.
        temp = f"{self.path}{suffix}.{os.getpid()}"
        try:
            with open(self._open(temp, os.O_TRUNC), "w", encoding="utf-8") as file:
                file.writelines(lines)
            os.replace(temp, self.path + suffix)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(temp)
            raise


class _RedisLease(_Lease):
    """``TICKER_LOCK = "redis://..."``, or a redis-py client: a lease in
    Redis, for processes on several hosts.

    The lease is the key ``key``, holding this process's random token.  It
    is set only if absent and expires ``ttl`` seconds after its last
    renewal, so a host that dies or freezes is replaced; it relies on
    Redis's clock alone, never on the hosts'.  Renewal, release and every
    save compare the token first, in one script, so that a process that
    lost the lease can change neither it nor the state.  The state is that
    of `_LockFile`, in ``key:state``, ``key:runner`` and ``key:runs``.
    """

    # KEYS[1] the lease; ARGV[1] the token, ARGV[2] the TTL in ms.  Where
    # SET NX finds the lease taken, this process may hold it still: after a
    # lapse of its own, it need not wait out its own TTL.
    _TAKE = """
        if redis.call('set', KEYS[1], ARGV[1], 'NX', 'PX', ARGV[2]) then return 1 end
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('pexpire', KEYS[1], ARGV[2])"""
    _RENEW = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('pexpire', KEYS[1], ARGV[2])"""
    _RELEASE = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        return redis.call('del', KEYS[1])"""
    # KEYS: the lease, state, runner and runs; ARGV: the token, the state
    # ('' keeps it), the runner ('' removes it), folded.  The runs folded
    # into the history are the oldest; later ones stay, however recent.
    _SAVE = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        if ARGV[2] ~= '' then redis.call('set', KEYS[2], ARGV[2]) end
        if ARGV[3] ~= '' then redis.call('set', KEYS[3], ARGV[3])
        else redis.call('del', KEYS[3]) end
        local folded, n = tonumber(ARGV[4]), 0
        for _, run in ipairs(redis.call('lrange', KEYS[4], 0, -1)) do
            if cjson.decode(run)[2] > folded then break end
            n = n + 1
        end
        if n > 0 then redis.call('ltrim', KEYS[4], n, -1) end
        return 1"""

    def __init__(self, client: Any, key: str, ttl: float, where: str) -> None:
        import redis  # the setting was checked: see _lease()

        self.client, self.key, self.ttl, self.where = client, key, ttl, where
        self._keys = [key, f"{key}:state", f"{key}:runner", f"{key}:runs"]
        self._ms = max(1, round(ttl * 1000))
        self._errors = (redis.RedisError, OSError)
        self._take, self._renew, self._release, self._save = (
            client.register_script(script)
            for script in (self._TAKE, self._RENEW, self._RELEASE, self._SAVE)
        )
        self._token = os.urandom(16).hex()
        self._down = False  # whether the last call failed: outages are logged once

    def _do(self, call: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
        try:
            result = call(*args, **kwargs)
        except self._errors as exc:
            why = f"{type(exc).__name__}: {exc}"
            if not self._down:
                self._down = True
                self.log.warning(
                    "Redis at %s (TICKER_LOCK) cannot be used (%s); no job starts until it can",
                    self.where,
                    why,
                )
            raise _Outage(f"Redis at {self.where} (TICKER_LOCK) cannot be used: {why}") from exc
        if self._down:
            self._down = False
            self.log.info("Redis at %s (TICKER_LOCK) can be used again", self.where)
        return result

    def take(self, block: bool) -> bool:
        return self._do(self._take, keys=self._keys[:1], args=[self._token, self._ms]) == 1

    def renew(self) -> bool:
        return self._do(self._renew, keys=self._keys[:1], args=[self._token, self._ms]) == 1

    def release(self) -> None:
        self._do(self._release, keys=self._keys[:1], args=[self._token])

    def forget(self) -> None:
        self._token = os.urandom(16).hex()  # the parent's stays the parent's

    def holder(self) -> bool:
        return bool(self._do(self.client.exists, self.key))

    def load(self) -> dict | None:
        pipe = self.client.pipeline()
        pipe.get(self._keys[1])
        pipe.get(self._keys[2])
        pipe.lrange(self._keys[3], 0, -1)
        state, runner, runs = self._do(pipe.execute)
        if state is None and not runs:
            return None
        # Runs by hand (flask ticker run, from cron) may come before any
        # runner has saved a state.
        lines = [next(_encode_state((), 0.0))] if state is None else state.splitlines()
        try:
            return _decode_state(
                lines, functools.partial(_runs_since, runs), runner and json.loads(runner)
            )
        except ValueError:
            self.log.warning("ignoring %s in Redis, which is damaged", self._keys[1])
            return None

    def save(
        self, runner: dict | None, jobs: Iterable[tuple[str, list]] | None, folded: float
    ) -> None:
        state = "" if jobs is None else "".join(_encode_state(jobs, folded))
        return (
            self._do(
                self._save,
                keys=self._keys,
                args=[
                    self._token,
                    state,
                    "" if runner is None else json.dumps(runner),
                    repr(float(folded)),
                ],
            )
            == 1
        )

    def record(self, name: str, run: list) -> None:
        self._do(self.client.rpush, self._keys[3], json.dumps([name, *run]))

    def runs(self, since: float) -> list[list]:
        return _runs_since(self._do(self.client.lrange, self._keys[3], 0, -1), since)


def _redis_client(url: str, ttl: float) -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "TICKER_LOCK is a Redis URL, which needs redis-py: pip install 'flask-ticker[redis]'"
        ) from None
    # The first connection's getaddrinfo() would import this (4 ms) on the
    # way to the first run; here it is a sliver of importing redis-py.
    import encodings.idna  # noqa: F401

    # A call that hangs would hold up renewals and stop(); redis-py's
    # default waits forever.
    timeout = min(5.0, ttl / 3)
    try:
        # redis-py takes "/abc" for database 0, and "unix://" for no path.
        parts = urllib.parse.urlsplit(url)
        if parts.scheme == "unix" and not parts.path:
            raise ValueError("no socket path")
        if parts.scheme != "unix" and not re.fullmatch(r"/?\d*", parts.path):
            raise ValueError("the database must be a number")
        options = {"socket_timeout": timeout, "socket_connect_timeout": timeout}
        # Newer redis-py labels each new connection (CLIENT SETINFO), which
        # costs the first run 3 ms; a lease needs no label.
        accepted = inspect.signature(redis.Redis.__init__).parameters
        labels = ["driver_info"] if "driver_info" in accepted else ["lib_name", "lib_version"]
        options.update((name, None) for name in labels if name in accepted)
        return redis.Redis.from_url(parts.scheme + url[len(parts.scheme) :], **options)
    except (ValueError, TypeError) as exc:
        # urllib's reasons may quote a piece of an oddly written password.
        why = f": {exc}" if _redact(url) == url else ""
        raise ValueError(
            f"TICKER_LOCK must be a Redis URL such as"
            f" redis://[:password@]host:port/db, got {_redact(url)!r}{why}"
        ) from None


def _redis_where(client: Any, log: logging.Logger) -> str:
    """Where a redis-py client of the user's connects, for log lines; and a
    warning if a call through it may hang."""
    if inspect.iscoroutinefunction(getattr(client, "execute_command", None)):
        raise TypeError(
            "TICKER_LOCK must be a redis.Redis client, got an asyncio one"
            f" ({type(client).__module__}.{type(client).__qualname__}): the"
            " ticker's thread makes blocking calls"
        )
    options = getattr(getattr(client, "connection_pool", None), "connection_kwargs", {})
    if options.get("socket_timeout") is None:
        log.warning(
            "the Redis client in TICKER_LOCK has no socket_timeout: a network that"
            " drops packets would hold up the lease's renewals and stop(); pass"
            " socket_timeout=5 or so, or a URL"
        )
    return (
        options.get("path") or f"{options.get('host')}:{options.get('port')}/{options.get('db')}"
    )


def _redact(url: str) -> str:
    """The URL without its secrets, for logs and errors: the user info
    (everything between "://" and the last "@", however oddly written) and
    the values of query keys that name a password, key, secret or token."""
    scheme, sep, rest = url.partition("://")
    if not sep:
        return url
    _user_info, at, rest = rest.rpartition("@")
    head, mark, query = rest.partition("?")

    def hidden(pair: str) -> str:
        name, eq, value = pair.partition("=")
        secret = re.search("pass|secret|key|token|cred", urllib.parse.unquote(name), re.I)
        return f"{name}{eq}***" if secret and value else pair

    query = "&".join(map(hidden, query.split("&"))) if mark else ""
    return f"{scheme}://{'***@' if at else ''}{head}{mark}{query}"


def _describe(job: dict, now: float, tz: tzinfo | None = None) -> str:
    """One line of ``flask ticker list``; an at= job's times in its zone ``tz``."""

    def ago(iso: str) -> str:
        return _seconds(round(max(0.0, now - datetime.fromisoformat(iso).timestamp())))

    last = "never run"
    if job["last_run"]:
        outcome = (
            f"failed {ago(job['last_run'])} ago: {job['last_error']}"
            if job["last_error"]
            else f"ok {ago(job['last_run'])} ago, {_duration(job['last_duration'])}"
        )
        last = "running now" if job["running"] else outcome
    when = (
        "paused"
        if job["paused"]
        else "not scheduled"
        if not job["next_run"]
        else f"next {_when(datetime.fromisoformat(job['next_run']).timestamp(), tz)}"
    )
    every = _seconds(job["interval"])
    if job["at"]:
        every += f" at {job['at']} {job['tz']}"
    return (
        f"{job['name']}  every {every}  {when}  {last}"
        f"  runs={job['runs']} failures={job['failures']}"
    )


def _with_run(history: list, started: float, duration: float, error: str | None) -> list:
    """A job's history, ``Job._history()``-shaped, with one more run by hand."""
    last_due, last_run, last_duration, last_error, runs, failures, skipped = history
    if last_run is None or started >= last_run:
        last_run, last_duration = started, duration
        last_due = max(last_due or started, started)
        last_error = error
    return [
        last_due,
        last_run,
        last_duration,
        last_error,
        runs + 1,
        failures + (error is not None),
        skipped,
    ]


def _runner() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(),
    }


# -- the Flask extension, and where it runs --


class Ticker:
    """Schedules `Job` s on one daemon thread for one Flask app, and runs
    them, and background tasks, on bounded pools of worker threads.

    ``Ticker(app)`` or ``Ticker()`` then ``init_app(app)``.  ``clock`` is
    the monotonic time source and ``wall_clock`` the wall clock, both in
    seconds; tests pass fake ones.
    """

    def __init__(
        self,
        app: Flask | None = None,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self._scheduler = _Scheduler(clock, wall_clock)
        self._app: Flask | None = None  # the one it serves, and runs jobs for
        self._shutdown_timeout: float | None = 10.0
        self._served = False  # this process has handled a request
        self._start_on_request = False  # nothing said where it serves: see _autostart
        self._forking = False  # it handed its jobs to the children it forks
        self._max_workers = _DEFAULT_WORKERS
        self._reset()
        if app is not None:
            self.init_app(app)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._job_pool = _Pool("flask-ticker-job", self._max_workers)
        self._task_pool = _Pool("flask-ticker-task", self._max_workers)
        self._job_pool.log = self._task_pool.log = self.log
        self._scheduler.submit = self._job_pool.submit
        # A ticker dropped without stop() (a test that made many apps) must
        # not leave its threads behind.  Not at exit: atexit stops it then.
        weakref.finalize(
            self, _abandon, self._scheduler.wakeup, self._job_pool, self._task_pool
        ).atexit = False

    @property
    def app(self) -> Flask | None:
        """The app this ticker serves: the last one passed to `init_app`."""
        return self._app

    @property
    def log(self) -> logging.Logger:
        """Where it logs: ``<app.logger>.flask_ticker``, so that Flask's
        handler gives every line a time and a level under any server."""
        return self._scheduler.log

    def init_app(self, app: Flask) -> None:
        """Bind the ticker to ``app`` and, unless disabled, start it.

        Reads these keys from ``app.config`` (set them before this call):

        - ``TICKER_ENABLED`` (None): None starts the ticker where the app
          is served: at once under the development server (never in the
          reloader's watcher), gunicorn, uWSGI and waitress, at the first
          request under another server, and never in a CLI command, a
          script that does not serve the app, or with ``TESTING`` set.
          True starts it at once in any process but a reloader's watcher
          and a flask CLI command; False never starts it by itself.  `start`
          always does.
        - ``TICKER_MAX_WORKERS`` (``min(32, cpus + 4)``, as for
          ThreadPoolExecutor): threads that run jobs at once, and threads
          that run background tasks at once.
        - ``TICKER_SHUTDOWN_TIMEOUT`` (10): seconds `stop` waits at exit for
          running jobs and background tasks.
        - ``TICKER_LOCK`` (a file in the instance folder): what makes one
          process of several run the jobs, and where their state is kept:
          a path; a Redis URL (``redis://``, ``rediss://``, ``unix://``)
          or a redis-py client, for several hosts; False for no lock; or
          an object with ``acquire(blocking=False) -> bool`` and
          ``release()``, which must not expire while held.
        - ``TICKER_LOCK_RETRY`` (5): seconds between a waiting process's
          attempts to take a lease it cannot wait on (Redis, a custom lock).
        - ``TICKER_LOCK_TTL`` (30): seconds a Redis lease outlives its
          holder's last renewal; it bounds how long a dead host's jobs wait.
        - ``TICKER_LOCK_KEY`` (``"flask_ticker:" + app.name``): the Redis
          key of the lease; the state's keys begin with it.
        - ``TICKER_TIMEZONE`` (the server's zone: ``TZ``, else
          ``/etc/localtime``, else UTC with a warning): the zone of ``at=``
          jobs without a ``tz``; a zoneinfo key or a tzinfo.

        Binding another app moves the ticker: it stops serving the first.
        """
        other = app.extensions.get("ticker")
        if other is self:
            return
        if other is not None:
            raise RuntimeError(
                "A 'Ticker' instance has already been registered on this Flask app."
                " Import and use that instance instead."
            )
        config = app.config
        enabled = config.setdefault("TICKER_ENABLED", None)
        workers = config.setdefault("TICKER_MAX_WORKERS", _DEFAULT_WORKERS)
        timeout = config.setdefault("TICKER_SHUTDOWN_TIMEOUT", 10.0)
        lock = config.setdefault(
            "TICKER_LOCK",
            os.path.join(app.instance_path, f"flask_ticker-{_safe_name(app.name)}.lock"),
        )
        retry = config.setdefault("TICKER_LOCK_RETRY", 5.0)
        ttl = config.setdefault("TICKER_LOCK_TTL", 30.0)
        key = config.setdefault("TICKER_LOCK_KEY", f"flask_ticker:{app.name}")
        zone = config.setdefault("TICKER_TIMEZONE", None)
        if enabled not in (None, True, False):
            raise ValueError(
                f"TICKER_ENABLED must be True, False or None (unset), got {enabled!r}"
            )
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"TICKER_MAX_WORKERS must be an int >= 1, got {workers!r}")
        if not (timeout is None or (_is_number(timeout) and 0 <= timeout < math.inf)):
            raise ValueError(
                f"TICKER_SHUTDOWN_TIMEOUT must be finite seconds >= 0, or None"
                f" for no limit, got {timeout!r}"
            )
        if not (_is_number(retry) and 0 < retry < math.inf):
            raise ValueError(f"TICKER_LOCK_RETRY must be finite seconds > 0, got {retry!r}")
        if not (_is_number(ttl) and 0.01 <= ttl < math.inf):
            raise ValueError(f"TICKER_LOCK_TTL must be finite seconds >= 0.01, got {ttl!r}")
        if not (isinstance(key, str) and key):
            raise ValueError(f"TICKER_LOCK_KEY must be a non-empty string, got {key!r}")
        zone = None if zone is None else _zone(zone, "TICKER_TIMEZONE")
        lease = _lease(lock, key, ttl, app.logger.getChild("flask_ticker"))
        if self.app is not None:
            self.stop(self._shutdown_timeout)
        self._max_workers = self._job_pool.max_workers = self._task_pool.max_workers = workers
        self._job_pool.reopen()
        self._task_pool.reopen()
        self._shutdown_timeout = timeout
        scheduler = self._scheduler
        scheduler.lease, scheduler.retry, scheduler.zone = lease, retry, zone
        scheduler.generation += 1
        scheduler.call = functools.partial(_call_in_context, app)
        scheduler.log = lease.log = self._job_pool.log = self._task_pool.log = app.logger.getChild(
            "flask_ticker"
        )
        if zone is None and any(job.at is not None for job in scheduler.jobs.values()):
            self._find_zone()
        scheduler.notify = self._send
        if "ticker" not in app.cli.commands:
            app.cli.add_command(self._command_line())
        self._served = False
        app.extensions["ticker"] = self
        app.before_request(self._note_request)
        self._app = app
        _tickers.add(self)
        self._autostart(app, enabled)

    # -- registering jobs --

    def every(
        self,
        interval: float | timedelta,
        func: Callable[..., Any] | None = None,
        *,
        name: str | None = None,
        run_now: bool | None = None,
        at: str | None = None,
        tz: str | tzinfo | None = None,
        args: Sequence[Any] = (),
        kwargs: Mapping[str, Any] | None = None,
    ) -> Any:
        """Run ``func`` every ``interval`` seconds (a number or a timedelta).

        With ``run_now`` (the default without ``at``) the first run is due
        when the ticker starts (or at once, if it has started), unless the
        deployment state says it ran less than one interval ago; without it,
        one interval later, or at the first ``at`` time.  ``at`` runs it at a
        time of the local clock instead: ``"03:00"`` or ``"03:00:30"`` with
        an interval of one day, ``":15"`` with one hour, ``"mon 09:00"`` with
        one week; ``tz`` is its zone, a zoneinfo key or a tzinfo (default:
        TICKER_TIMEZONE).  ``name``
        defaults to the function's qualified name and is unique per ticker;
        declaring the same function again under its name (an app factory
        called again) replaces the declaration.  Returns the `Job`; without
        ``func``, a decorator that registers the function and returns it.
        """
        label = name if name is not None or func is None else _name(func)
        seconds = _check_interval(interval, label)
        when = None if at is None and tz is None else _parse_at(at, seconds, tz)
        if func is None:

            def register(f: F) -> F:
                self.every(
                    seconds, f, name=name, run_now=run_now, at=at, tz=tz, args=args, kwargs=kwargs
                )
                return f

            return register
        _check_callable(func, f"every(): func for job {label!r}")
        name = _name(func) if name is None else name
        if not isinstance(name, str) or not name:
            raise TypeError(f"every(): name must be a non-empty str, got {name!r}")
        if not isinstance(args, tuple) and (  # the usual case, without an ABC check
            isinstance(args, (str, bytes)) or not isinstance(args, Sequence)
        ):
            raise TypeError(f"every(): args for job {name!r} must be a tuple, got {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"every(): kwargs for job {name!r} must be a dict, got {kwargs!r}")
        run_now = at is None if run_now is None else bool(run_now)
        if when is not None and when.tz is None:
            self._find_zone()
        return self._scheduler.add(
            Job(
                self._scheduler,
                func,
                seconds,
                name,
                run_now,
                tuple(args),
                dict(kwargs) if kwargs else _NO_KWARGS,
                when,
            )
        )

    def _find_zone(self) -> None:
        # The server's zone, looked up once an at= job needs it (most apps
        # have none), and never by the scheduler, which reads no files.
        if self._scheduler.zone is None:
            self._scheduler.zone = _local_zone(self.log)

    @property
    def jobs(self) -> list[Job]:
        """The registered jobs, in registration order."""
        return list(self._scheduler.jobs.values())

    def get(self, name: str) -> Job | None:
        """The job called ``name``, or None."""
        return self._scheduler.jobs.get(name)

    def status(self) -> dict:
        """The deployment's jobs as the process that runs them last saved
        them (at most about a second behind), as JSON-ready data.

        ``{"running": this process's thread runs, "is_runner": it runs the
        jobs, "runner": {"pid", "host", "since"} or None, "scope":
        "deployment" or "process", "jobs": [{"name", "interval", "at", "tz", "paused",
        "next_run", "last_run", "last_duration", "last_error", "runs",
        "failures", "skipped", "running"}, ...], "error": None}``, times in
        ISO 8601 UTC.  With no shared state (``TICKER_LOCK = False`` or a
        custom lock) the figures are this process's: ``scope`` says which.
        It never raises for a lease that cannot be used (Redis down, a path
        it cannot write): ``error`` is then one line saying why, and the
        figures are this process's.
        """
        scheduler = self._scheduler
        lease = scheduler.lease
        state, error, runner = None, None, scheduler.runner if scheduler.holding else None
        if lease.shared:
            try:
                state = lease.load()
                if not scheduler.holding and state and state["runner"] and lease.holder():
                    # as the runner shows itself; "alive" is for _crash_window
                    runner = {key: state["runner"][key] for key in ("pid", "host", "since")}
            except Exception as exc:  # a status page must not fail with the lease
                error = (
                    str(exc)
                    if isinstance(exc, _Outage)
                    else f"TICKER_LOCK ({lease.where}) cannot be used: {type(exc).__name__}: {exc}"
                )
        saved = state["jobs"] if state else {}
        offset, jobs = scheduler.wall() - scheduler.clock(), []
        for job in self.jobs:
            row = saved.get(job.name) or scheduler.row(job, offset)
            (
                interval,
                _,
                _,
                last_run,
                duration,
                last_error,
                runs,
                failures,
                skipped,
                next_due,
                running,
                paused,
            ) = row
            running = running and (runner is not None or job.running)  # not a crashed one's
            jobs.append(
                {
                    "name": job.name,
                    "interval": interval or job.interval,
                    "at": job.at,
                    "tz": job.tz and _zone_name(job.tz),
                    "paused": paused,
                    "next_run": _iso(next_due),
                    "last_run": _iso(last_run),
                    "last_duration": duration,
                    "last_error": last_error,
                    "runs": runs,
                    "failures": failures,
                    "skipped": skipped,
                    "running": running,
                }
            )
        return {
            "running": self.running,
            "is_runner": scheduler.holding,
            "runner": runner,
            "scope": "deployment" if lease.shared else "process",
            "jobs": jobs,
            "error": error,
        }

    def run_pending(self) -> float | None:
        """Make one scheduler pass now, in this thread: take the lease if
        it is free, start the jobs that are due (on the job pool), and return
        the seconds until the next is due (None: none is planned).

        The scheduler thread does this between waits.  A test with a fake
        ``clock`` calls it instead of `start`, to step through time.
        """
        self._check_pid()
        if self.app is None:
            raise RuntimeError(
                "Ticker.run_pending() needs an app: pass it to Ticker(app)"
                " or call ticker.init_app(app) first"
            )
        return self._scheduler.tick(None)

    # -- starting and stopping --

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is running (holding the lease or not)."""
        return self._scheduler.running

    def start(self) -> None:
        """Start the scheduler thread.  Once this process holds the lease,
        due jobs run at once.  Idempotent; a stopped ticker can be started
        again.
        """
        self._check_pid()
        if self._scheduler.running:
            return
        if self.app is None:
            raise RuntimeError(
                "Ticker.start() needs an app: pass it to Ticker(app)"
                " or call ticker.init_app(app) first"
            )
        self._job_pool.reopen()
        self._task_pool.reopen()
        if _uwsgi_without_threads():
            self.log.warning(
                "uWSGI runs without --enable-threads, so the ticker"
                " cannot run: add --enable-threads to the uwsgi command"
            )
            return
        self._scheduler.lease.check()
        self._scheduler.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop starting runs and wait up to ``timeout`` seconds (None: no
        limit) for running jobs and background tasks already accepted, then
        save the jobs' state and release the lease.

        Returns True if all finished.  Otherwise logs what did not, by name;
        tasks that had not started by then never will.  Idempotent.
        """
        finished = self._halt(timeout)
        self._scheduler.leave()
        return finished

    def _halt(self, timeout: float | None) -> bool:
        self._check_pid()
        self._scheduler.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        unfinished = [f"job {n!r}" for n in self._job_pool.shutdown(deadline)]
        unfinished += [f"task {n!r}" for n in self._task_pool.shutdown(deadline)]
        if unfinished:
            self.log.error(
                "ticker stopped with work unfinished after %s: %s",
                "no time limit" if timeout is None else f"{timeout}s",
                ", ".join(unfinished),
            )
        return not unfinished

    def _command_line(self) -> click.Group:
        """``flask ticker``: see the deployment's jobs, or run one now.  It
        never starts the ticker: a CLI command does not (see _autostart)."""
        group = click.Group("ticker", help="See the deployment's jobs, or run one now.")

        @group.command("list")
        @click.option("--json", "as_json", is_flag=True, help="Print ticker.status() as JSON.")
        def list_jobs(as_json: bool) -> None:
            """One line per job: its interval, next run, last run, counts."""
            shown = self.status()
            if as_json:
                click.echo(json.dumps(shown, indent=2))
            if shown["error"]:  # the one line that says why, not a traceback
                raise click.ClickException(shown["error"])
            if as_json:
                return
            runner = shown["runner"]
            click.echo(
                f"run by process {runner['pid']} on {runner['host']} since"
                f" {_when(datetime.fromisoformat(runner['since']).timestamp(), None)}"
                if runner
                else "no process runs the jobs now"
            )
            for row in shown["jobs"]:
                click.echo(_describe(row, time.time(), self._scheduler.jobs[row["name"]].tz))

        @group.command("run")
        @click.argument("name")
        def run_job(name: str) -> None:
            """Run the job NAME once, now, in this process, and record the run."""
            job = self.get(name)
            if job is None:
                known = ", ".join(job.name for job in self.jobs) or "none"
                raise click.UsageError(f"no job named {name!r}; the jobs are: {known}")
            if next(row for row in self.status()["jobs"] if row["name"] == name)["running"]:
                click.echo(
                    f"job {name!r} is running in the deployment now: not run again", err=True
                )
                raise SystemExit(1)
            try:
                result = self._scheduler.run_by_hand(job)
            except BaseException:
                click.echo(traceback.format_exc(), err=True, nl=False)
                raise SystemExit(1) from None
            click.echo(f"job {name!r} ok in {_duration(job.last_duration)}, returned {result!r}")

        return group

    def _send(self, event: str, job: Job | None, **details: Any) -> None:
        # Costs nothing where nobody listens; a receiver that raises is
        # logged, and changes neither the run's figures nor the loop.
        sent = _SIGNALS[event]
        app = self._app
        if not sent.receivers or app is None:
            return
        try:
            with app.app_context():
                sent.send(app, job=job, **details)
        except Exception:
            self.log.exception("a receiver of flask_ticker.%s raised", sent.name)

    def submit_task(self, label: str, run: Callable[[], None], cancel: Callable[[], Any]) -> None:
        """Queue a task of `run_in_background` on the task pool."""
        self._check_pid()
        self._task_pool.submit(label, run, cancel)

    def _stop_at_exit(self) -> None:
        self.stop(self._shutdown_timeout)

    def _forked(self, child: bool) -> None:
        # A preforking master (gunicorn --preload) loads the app, then forks
        # workers and serves nothing itself, and threads do not survive a
        # fork: it hands the jobs to its children.  It saves their state as
        # it stops, so the child that takes the lease goes on with the same
        # grids.  Any other fork (multiprocessing) leaves the jobs where
        # they are.
        hand_over = self._forking or (self.running and not self._served and _preforking_server())
        if not child:
            if hand_over and not self._forking:
                self._forking = True
                threading.Thread(
                    target=self.stop, args=(None,), daemon=True, name="flask-ticker-handover"
                ).start()
            return
        self._forget_parent()
        if hand_over:
            self._forking = False
            self.start()

    def _check_pid(self) -> None:
        # uWSGI forks its workers from C without Python's fork hooks; such a
        # child finds its parent's threads here, and must not wait for them.
        if self._pid != os.getpid():
            self._forget_parent()

    def _forget_parent(self) -> None:
        self._scheduler.forget_parent()
        self._reset()

    def _autostart(self, app: Flask, enabled: bool | None) -> None:
        # Jobs run only where the app is served: never in the reloader's
        # watcher, a migration, a script that builds the app for a query,
        # or a test suite that did not ask.
        where = _where_served()
        if enabled is False or where == "watcher":
            why = "TICKER_ENABLED is False" if enabled is False else "the reloader's watcher"
        elif where == "cli":
            why = "a CLI command serves no requests (call ticker.start() in it to run jobs)"
        elif enabled is None and app.config.get("TESTING"):
            why = "TESTING is set (set TICKER_ENABLED = True to run jobs in tests)"
        elif enabled or where == "serving":
            self._start_safely()
            why = None
        else:
            self._start_on_request = True
            why = "it starts at the first request, if this process serves one"
        if why is not None:
            self.log.info("process %d does not start the jobs: %s", os.getpid(), why)
        # app.run() is the one server that comes after init_app, and it may
        # turn the reloader on (debug=True), so it decides for itself.
        run = app.run

        @functools.wraps(run)
        def run_and_start(*args: Any, **kwargs: Any) -> Any:
            if self.app is app and enabled is not False and _where_served() == "unknown":
                if not _uses_reloader(app, args, kwargs):
                    self._start_safely()
                elif self.running:  # TICKER_ENABLED = True in a script that reloads
                    self.stop(0)
                    self.log.warning(
                        "jobs ran in the reloader's watcher process before app.run()"
                        " turned the reloader on; leave TICKER_ENABLED unset there"
                    )
            return run(*args, **kwargs)

        app.run = run_and_start  # type: ignore[method-assign]

    def _note_request(self) -> None:
        self._served = True
        if self._start_on_request:
            self._start_safely()

    def _start_safely(self) -> None:
        # A scheduler must never take the site down with it: if it cannot
        # start, the app serves on without jobs and says why, once.
        self._start_on_request = False
        try:
            self.start()
            _drain_on_sigterm()
        except OSError as exc:
            self.log.error(
                "no job runs in process %d: the lock file %s cannot be used (%s: %s)."
                " Make its folder writable by this process, or set TICKER_LOCK to a path"
                " it can write",
                os.getpid(),
                exc.filename or _redact(str(self.app.config["TICKER_LOCK"])),
                type(exc).__name__,
                exc.strerror or exc,
            )
        except Exception:
            self.log.exception(
                "no job runs in process %d: the ticker failed to start", os.getpid()
            )


def run_in_background(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
    """Run ``func(*args, **kwargs)`` on the current app's ticker pool.

    Call it inside an app context (a view, a CLI command, a job): the task
    runs in a fresh app context of the same app, never the request context,
    which is gone by then.  A failing task is logged with its traceback and
    its exception is set on the returned Future.  At shutdown, accepted
    tasks finish, up to ``TICKER_SHUTDOWN_TIMEOUT``.
    """
    _check_callable(func, "run_in_background(): func")
    ticker = current_app.extensions.get("ticker") if has_app_context() else None
    if ticker is None:
        raise RuntimeError(
            "run_in_background() needs an app context of an app with a Ticker:"
            " call it in a view or a job, or inside 'with app.app_context():'"
        )
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    name = _name(func)

    # Imported here: it costs more than this whole module, and jobs and
    # processes that run no task (a CLI command) never need it.
    from concurrent.futures import Future

    future: Future = Future()

    def task() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = _call_in_context(app, func, args, kwargs)
        except BaseException as exc:  # the task's, or a teardown's
            ticker.log.exception("background task %r failed", name)
            future.set_exception(exc)
            ticker._send("task_failed", None, func=func, exception=exc)
        else:
            future.set_result(result)

    ticker.submit_task(name, task, future.cancel)
    return future


def _call_in_context(
    app: Flask, func: Callable[..., Any], args: tuple, kwargs: Mapping[str, Any]
) -> Any:
    # ensure_sync runs a coroutine function to its end, as Flask runs an
    # async view, so that no coroutine is ever left un-awaited.
    with app.app_context():
        result = app.ensure_sync(func)(*args, **kwargs)
        if inspect.isawaitable(result):  # def job(): return fetch()
            if importlib.util.find_spec("asgiref") is None:
                if inspect.iscoroutine(result):
                    result.close()  # failed below, so never "never awaited"
                raise RuntimeError(
                    f"{_name(func)!r} returned an awaitable, which needs"
                    " Flask's async extra to await: pip install 'flask[async]'"
                )
            result = app.ensure_sync(_awaited)(result)
        return result


async def _awaited(awaitable: Any) -> Any:
    return await awaitable


def _check_callable(func: Any, what: str) -> None:
    if not callable(func):
        raise TypeError(f"{what} must be callable, got {func!r}")
    if inspect.iscoroutinefunction(func) and importlib.util.find_spec("asgiref") is None:
        raise RuntimeError(
            f"{what} {_name(func)!r} is a coroutine function, which needs"
            " Flask's async extra: pip install 'flask[async]'"
        )


# Tickers to stop at interpreter exit; weak, so that apps a test suite
# drops are not kept alive by this module.
_tickers: weakref.WeakSet[Ticker] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for ticker in list(_tickers):
        ticker._stop_at_exit()


def _drain_on_sigterm() -> None:
    # Under flask run, app.run() and waitress nothing handles SIGTERM, so it
    # would kill a job mid-run.  Take it only where nobody else has: never
    # a handler of the app's or the server's (gunicorn's drains already).
    if (
        threading.current_thread() is threading.main_thread()
        and "uwsgi" not in sys.modules
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    _stop_at_exit()  # the running jobs finish, within TICKER_SHUTDOWN_TIMEOUT
    raise SystemExit(0)


def _after_fork(child: bool) -> None:
    for ticker in list(_tickers):
        ticker._forked(child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        after_in_parent=lambda: _after_fork(False), after_in_child=lambda: _after_fork(True)
    )


def _where_served() -> str:
    """ "serving" in a process that serves requests with a server we know,
    "watcher" in a reloader's watcher, "cli" in another flask command, and
    "unknown" anywhere else: a script, a test suite, another server."""
    if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
        return "serving"  # the reloader's child
    if os.environ.get("FLASK_RUN_FROM_CLI") == "true":
        ctx = click.get_current_context(silent=True)
        if ctx is None or ctx.command is not run_command:
            return "cli"
        reload = ctx.params.get("reload")
        return "watcher" if (get_debug_flag() if reload is None else reload) else "serving"
    if any(name in sys.modules for name in ("gunicorn.arbiter", "uwsgi", "waitress")):
        return "serving"
    return "unknown"


def _uses_reloader(app: Flask, args: tuple, kwargs: dict) -> bool:
    # Mirrors how Flask.run picks its debug and use_reloader settings.
    debug = kwargs.get("debug", args[2] if len(args) > 2 else None)
    if debug is None:
        debug = get_debug_flag() if "FLASK_DEBUG" in os.environ else app.debug
    return bool(kwargs.get("use_reloader", debug))


def _lease(lock: Any, key: str, ttl: float, log: logging.Logger) -> _Lease:
    if lock is False or lock is None:
        return _NoLock()
    if isinstance(lock, str) and "://" in lock:  # never a path: a typo must not become one
        if lock.partition("://")[0].lower() not in ("redis", "rediss", "unix"):
            raise ValueError(
                "TICKER_LOCK must be a path or a redis://, rediss:// or unix://"
                f" URL, got {_redact(lock)!r}"
            )
        return _RedisLease(_redis_client(lock, ttl), key, ttl, _redact(lock))
    if isinstance(lock, (str, os.PathLike)):
        if not os.fspath(lock):
            raise ValueError(
                "TICKER_LOCK must be a path, a Redis URL, False, or a lock object, got ''"
            )
        if fcntl is None:
            logger.warning(
                "no flock() on this platform: TICKER_LOCK %r is ignored,"
                " and every process that serves the app runs the jobs",
                lock,
            )
            return _NoLock()
        return _LockFile(os.fspath(lock))
    if callable(getattr(lock, "register_script", None)):  # a redis-py client
        return _RedisLease(lock, key, ttl, _redis_where(lock, log))
    if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
        return _UserLock(lock)
    raise TypeError(
        "TICKER_LOCK must be a path, a Redis URL, False, or an object with"
        f" acquire(blocking=False) and release(), got {lock!r}"
    )


def _preforking_server() -> bool:
    return "gunicorn.arbiter" in sys.modules or "uwsgi" in sys.modules


def _uwsgi_without_threads() -> bool:
    uwsgi = sys.modules.get("uwsgi")
    return uwsgi is not None and not (uwsgi.opt.get("enable-threads") or uwsgi.opt.get("threads"))


# -- the thread pool, and helpers --


class _Pool:
    """A bounded pool of daemon threads, started only when there is work.

    ThreadPoolExecutor would do, but since Python 3.9 its workers are joined
    before atexit handlers run, so one hung job would block interpreter exit
    with no timeout (bpo-39812).  These are daemons; shutdown() has a deadline.
    Otherwise it works the same way: a queue, and idle workers counted with
    a semaphore.
    """

    def __init__(self, name: str, max_workers: int) -> None:
        self.name = name
        self.max_workers = max_workers
        self.log = logger
        self.closed = False
        # Items are (label, run, cancel): run() never raises; cancel() is
        # for work dropped unstarted at shutdown.  None tells a worker to exit.
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._idle = threading.Semaphore(0)
        self._active: dict[threading.Thread, str] = {}  # what each worker runs
        # Guards closed and _threads, so no work is queued after shutdown.
        self._lock = threading.Lock()
        self._threads: set[threading.Thread] = set()
        self._count = itertools.count()

    def submit(self, label: str, run: Callable[[], None], cancel: Callable[[], Any]) -> None:
        with self._lock:
            if self.closed:
                raise RuntimeError(f"cannot start {label!r}: the ticker has been stopped")
            self._queue.put((label, run, cancel))
            if not self._idle.acquire(blocking=False) and len(self._threads) < self.max_workers:
                thread = threading.Thread(
                    target=self._work, daemon=True, name=f"{self.name}-{next(self._count)}"
                )
                self._threads.add(thread)
                thread.start()

    def _work(self) -> None:
        me = threading.current_thread()
        while True:
            item = self._queue.get()
            if item is None:
                with self._lock:
                    self._threads.discard(me)
                self._idle.acquire(blocking=False)  # no longer idle: gone
                return
            self._active[me] = item[0]
            try:
                item[1]()
            except BaseException:  # run() never raises; if it does, say so
                self.log.critical("the ticker's %s worker failed", self.name, exc_info=True)
            # An idle worker must not keep the last job, and its app, alive.
            del self._active[me], item
            self._idle.release()

    def close(self) -> None:
        """Refuse new work; workers exit once the work queued before is done."""
        with self._lock:
            if not self.closed:
                self.closed = True
                for _ in self._threads:
                    self._queue.put(None)

    def reopen(self) -> None:
        with self._lock:
            if not self.closed:
                return
            self.closed = False
            # The exit notes that shutdown left for workers busy past its
            # deadline: those workers serve again instead.
            kept = []
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is not None:
                    kept.append(item)
            for item in kept:
                self._queue.put(item)

    def shutdown(self, deadline: float | None) -> list[str]:
        """Close, and let the workers drain the queue until ``deadline``
        (monotonic).  Returns the labels still running, then those that
        never started, which are cancelled.
        """
        self.close()
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:  # within the platform's timers, however long the timeout
            thread.join(
                None
                if deadline is None
                else min(max(0.0, deadline - time.monotonic()), threading.TIMEOUT_MAX)
            )
        unfinished = [
            label
            for thread, label in list(self._active.items())
            if thread is not threading.current_thread()
        ]
        exits = 0
        while True:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                break
            if item is None:
                exits += 1
            else:
                item[2]()
                unfinished.append(item[0])
        for _ in range(exits):  # for the workers still busy past the deadline
            self._queue.put(None)
        return unfinished


def _reply(answers: queue.SimpleQueue, call: Callable[[], Any]) -> Any:
    """Call ``call`` and put its outcome on ``answers`` for `_answer`; return
    its result (None if it raised)."""
    try:
        result = call()
    except BaseException as exc:
        answers.put((None, exc))
        return None
    answers.put((result, None))
    return result


def _answer(answers: queue.SimpleQueue) -> Any:
    result, exc = answers.get()
    if exc is not None:
        raise exc
    return result


def _abandon(wakeup: threading.Event, *pools: _Pool) -> None:
    for pool in pools:
        pool.close()
    wakeup.set()


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _check_interval(interval: object, name: str | None) -> float:
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif _is_number(interval):
        seconds = float(interval)
    else:
        raise TypeError(
            f"{_interval_of(name)} must be seconds (int or float) or a timedelta, got {interval!r}"
        )
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{_interval_of(name)} must be positive and finite, got {interval!r}")
    if seconds > _MAX_INTERVAL:
        raise ValueError(f"{_interval_of(name)} must be at most 100 years, got {interval!r}")
    return seconds


def _interval_of(name: str | None) -> str:
    return "every(): interval" + ("" if name is None else f" for job {name!r}")


def _frames(tb: Any) -> tuple:
    """Where a traceback passed: (code, line) of each frame."""
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(frames)


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _qualname(func: Any) -> str:
    # Never repr(): a partial's would put its bound arguments, an API key
    # say, into every log line.
    while isinstance(func, functools.partial):
        func = func.func
    name = getattr(func, "__qualname__", None)
    return name if isinstance(name, str) else type(func).__qualname__


def _name(func: Any) -> str:
    # "heartbeat", not "create_app.<locals>.heartbeat": a name to type after
    # flask ticker run.  _identity tells two such functions apart.
    return _qualname(func).rpartition("<locals>.")[2]


def _identity(func: Any) -> tuple:
    return getattr(func, "__module__", None), _qualname(func)


def _utc(wall: float | None) -> datetime | None:
    return None if wall is None else datetime.fromtimestamp(wall, timezone.utc)


def _iso(wall: float | None) -> str | None:
    return None if wall is None else _utc(wall).isoformat()


_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_PERIODS = {86400.0: "one day", 3600.0: "one hour", 604800.0: "one week"}


def _parse_at(at: Any, interval: float, tz: Any) -> _At:
    try:  # jobs that share a time share its _At: an app may register thousands
        return _parsed[at, interval, tz]
    except (KeyError, TypeError):  # TypeError: not hashable, so not valid either
        pass
    if at is None:
        raise ValueError(
            f"every(): tz= needs at=, got tz={tz!r} without it; an interval"
            " job follows the monotonic clock, in no zone"
        )
    found = (
        re.fullmatch(r"(?:([a-z]+) +)?(\d\d?)?:(\d\d)(?::(\d\d))?", at.strip().lower())
        if isinstance(at, str)
        else None
    )
    day, hour, minute, second = found.groups() if found else (None, None, "0", None)
    weekday = (
        None
        if not day or len(day) < 3
        else next((i for i, name in enumerate(_WEEKDAYS) if name.startswith(day)), None)
    )
    h, m, sec = int(hour or 0), int(minute), int(second or 0)
    if (
        not found
        or (day and weekday is None)
        or (day and hour is None)
        or h > 23
        or m > 59
        or sec > 59
    ):
        raise ValueError(
            "every(): at must be 'HH:MM[:SS]' (each day), ':MM[:SS]' (each"
            f" hour) or 'mon HH:MM' (each week), got {at!r}"
        )
    period = 604800.0 if day else 86400.0 if hour is not None else 3600.0
    if interval != period:
        raise ValueError(
            f"every(): at={at!r} needs interval={period:g} ({_PERIODS[period]}),"
            f" got interval={interval:g}; at= takes an interval of one day,"
            " one hour or one week"
        )
    parsed = _parsed[at, interval, tz] = _At(
        at,
        period,
        weekday,
        h * 3600 + m * 60 + sec,
        None if tz is None else _zone(tz, "every(): tz"),
    )
    return parsed


# No bound: it holds as many times as the app declares.
_parsed: dict[tuple, _At] = {}


def _zone(tz: Any, what: str) -> tzinfo:
    if hasattr(tz, "localize"):
        # pytz: attached with replace(), as here, its zones take the offset
        # of their first entry (Berlin's is +00:53).
        raise TypeError(
            f"{what} must be a zoneinfo key or a zoneinfo.ZoneInfo, got {tz!r}, a"
            f" pytz zone; pass its name, {getattr(tz, 'zone', 'its key')!r}"
        )
    if isinstance(tz, tzinfo):
        return tz
    if not isinstance(tz, str):
        raise TypeError(
            f"{what} must be a zoneinfo key such as 'Europe/Berlin' or a tzinfo, got {tz!r}"
        )
    import zoneinfo  # only where at= is used

    try:
        return zoneinfo.ZoneInfo(tz)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"{what} must be a zoneinfo key such as 'Europe/Berlin', got {tz!r},"
            " which is no zone here (where the OS has no time zone database,"
            " pip install tzdata)"
        ) from None


def _local_zone(log: logging.Logger) -> tzinfo:
    """The server's zone, as cron finds it: TZ, else /etc/localtime."""
    import zoneinfo

    key = os.environ.get("TZ", "").lstrip(":")
    with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):
        if key.startswith("/"):
            with open(key, "rb") as file:
                return zoneinfo.ZoneInfo.from_file(file, key=key)
        if key:
            return zoneinfo.ZoneInfo(key)
    if key:
        log.warning(
            "TZ=%r names no zone that zoneinfo knows (a rule such as"
            " 'CET-1CEST' is not read): using /etc/localtime; set TICKER_TIMEZONE",
            key,
        )
    with contextlib.suppress(zoneinfo.ZoneInfoNotFoundError, ValueError):
        path = os.path.realpath("/etc/localtime")
        if "/zoneinfo/" in path:
            return zoneinfo.ZoneInfo(path.split("/zoneinfo/", 1)[1])
    with contextlib.suppress(OSError, ValueError), open("/etc/localtime", "rb") as file:
        return zoneinfo.ZoneInfo.from_file(file, key="localtime")
    log.warning(
        "no local time zone found (TZ, /etc/localtime): at= times are in UTC;"
        " set TICKER_TIMEZONE to say which zone they are in"
    )
    return timezone.utc


def _when(wall: float, tz: tzinfo | None) -> str:
    """A wall time as the zone's clock shows it (UTC for None): the one
    format of every time that flask ticker list and a Job's repr show."""
    shown = datetime.fromtimestamp(wall, tz or timezone.utc)
    return f"{shown:%Y-%m-%d %H:%M:%S} {shown.tzname()}"


def _duration(s: float) -> str:
    """0.09 ms, 12 ms, 1.2 s: a run's duration as a person reads it."""
    ms = s * 1000
    return f"{ms:.2f} ms" if ms < 1 else f"{ms:.0f} ms" if ms < 1000 else f"{s:.1f} s"


def _zone_name(tz: tzinfo) -> str:
    return getattr(tz, "key", None) or str(tz)


def _seconds(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.3g}{unit}"
    return f"{s:.3g}s"
