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

Jobs run only where the app is served, each in a fresh app context on a
small pool of daemon threads, on a fixed-rate grid that does not drift.
Several processes share a lease (a lock file; Redis or the app's database
for several hosts):
only its holder runs the jobs, and it keeps the state that they all read.
No cron expressions, no retries.

The file has two parts.  The first is all that one process runs: jobs, the
scheduler and its pass, the pools, and the Flask extension.  The second,
after a banner, is the deployment: the lease-and-state interface, the lock
file, Redis and SQL databases.
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
import socket
import sys
import threading
import time
import traceback
import urllib.parse
import weakref
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta, timezone, tzinfo
from datetime import time as dtime
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

# The runner saves the state at most this often, so a run that started is
# saved within this many seconds (see _first_due).
_SAVE_EVERY = 0.5

# A change of wall minus monotonic time beyond this is a step of the wall
# clock (or a suspension), which moves the at= jobs' monotonic due times.
_STEPPED = 1.0

# With at= jobs planned, the thread wakes at least this often, so that a
# wall clock stepped while it sleeps delays a run by no more than this.
_WALL_CHECK = 60.0

# A pass saves the state itself only if no job is due for this long; else
# the saver thread does, so that a run due soon does not wait for the I/O.
_IDLE = 0.1

# Longer intervals would overflow the platform's timers and datetimes.
_MAX_INTERVAL = 100 * 365.25 * 86400

# ThreadPoolExecutor's default: background tasks are mostly I/O (mail, HTTP).
_DEFAULT_WORKERS = min(32, (os.cpu_count() or 1) + 4)

_STILL_RUNNING = "is still running at its next due time; skipping runs until it finishes"

# A job's history: what it keeps across restarts, in the deployment state.
_HISTORY = ("last_due", "last_run", "last_duration", "last_error", "runs", "failures", "skipped")


# -- jobs --


class Job:
    """One function on a fixed-rate schedule; returned by `Ticker.every`.

    Runs are due at ``origin + k * interval``, or with ``at`` at a time of
    the local clock.  Read its history in ``runs``, ``failures``,
    ``skipped``, ``last_duration`` (seconds), ``last_error`` ('Type:
    message' or None) and ``last_run``; change it with `pause`, `resume`
    and `cancel`.
    """

    def __init__(
        self,
        scheduler: _Scheduler,
        func: Callable[..., Any],
        interval: float,
        name: str,
        run_now: bool,
        args: tuple,
        kwargs: dict,
        at: _At | None,
    ) -> None:
        self._scheduler, self._at = scheduler, at
        self._declared = scheduler.generation  # for which app: see _Scheduler.add
        self._func, self._args, self._kwargs = func, args, kwargs
        self._name, self._interval, self._run_now = name, interval, run_now
        self._runs = self._failures = self._skipped = 0
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._last_due: float | None = None  # wall time of the last run's tick
        self._last_run: float | None = None  # wall time the last run started
        self._lagging = False  # warned about this streak of lapses already
        # (how it failed, how many times in a row) while it fails the same
        # way: its traceback is logged once, then a line per failure.
        self._failing: tuple[tuple, int] | None = None

    # Read-only: the scheduler keeps them.
    name = property(lambda self: self._name)
    interval = property(lambda self: self._interval, doc="Seconds, a float.")
    runs = property(lambda self: self._runs)
    failures = property(lambda self: self._failures)
    skipped = property(lambda self: self._skipped)
    last_duration = property(lambda self: self._last_duration, doc="Seconds, a float.")
    last_error = property(lambda self: self._last_error, doc="'Type: message', or None.")
    last_run = property(lambda self: _utc(self._last_run), doc="A datetime in UTC, or None.")
    running = property(lambda self: self._scheduler.is_running(self), doc="In this process.")
    paused = property(lambda self: self._scheduler.is_paused(self))

    @property
    def at(self) -> str | None:
        """The time of the local clock it runs at, as given, or None."""
        return None if self._at is None else self._at.text

    @property
    def tz(self) -> tzinfo | None:
        """The zone of ``at`` (its ``tz``, else TICKER_TIMEZONE), or None."""
        return None if self._at is None else self._at.tz or self._scheduler.zone

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due, in UTC; None while paused, stopped, or
        planned by another process (the runner)."""
        return _utc(self._scheduler.next_due(self))

    def pause(self) -> None:
        """Start no runs until `resume`; a run in progress finishes."""
        self._scheduler.pause(self)

    def resume(self) -> None:
        """Start runs again, on the same grid: the next due tick, not now."""
        self._scheduler.resume(self)

    def cancel(self) -> None:
        """Remove the job from its ticker; a run in progress finishes."""
        self._scheduler.remove(self)

    def run(self) -> Any:
        """Run once now in this thread, in the app context: it counts like a
        scheduled run, returns what the function returns and raises what it
        raises.  Refuses to overlap another run."""
        return self._scheduler.run_here(self)

    def _due_after(self, t: float, origin: float) -> float:
        """The first due time after ``t``: for an interval job on the grid
        from ``origin`` (monotonic), for an at= job on the wall clock."""
        if self._at is not None:
            return self._at.next_after(t, self.tz)
        index = math.floor((t - origin) / self._interval) + 1
        while origin + index * self._interval <= t:  # float rounding
            index += 1
        return origin + index * self._interval

    def _call(self, app: Flask, wall: float, clock: Callable[[], float], due: float) -> Any:
        started = clock()
        self._last_run, self._last_due, self._last_error = wall, due, None
        try:
            return _call_in_context(app, self._func, self._args, self._kwargs)
        except BaseException as exc:
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._runs += 1
            self._last_duration = clock() - started

    def _log_outcome(self, log: logging.Logger, exc: BaseException | None) -> None:
        if (self._last_duration or 0.0) < self._interval:
            self._lagging = False  # it keeps up again: warn at the next lapse
        if exc is None:
            if self._failing is not None:
                log.info(
                    "job %r succeeded again after %d failed run(s) in a row",
                    self._name,
                    self._failing[1],
                )
                self._failing = None
            return
        # By type and path, not message: a database error that quotes its
        # parameters differs in every message, and a job that fails run
        # after run must not fill the log with one traceback.
        how = (type(exc), _frames(exc.__traceback__))
        if self._failing is not None and self._failing[0] == how:
            self._failing = (how, self._failing[1] + 1)
            log.error(
                "job %r failed again, %d times in a row, with the error and"
                " traceback logged before: %s",
                self._name,
                self._failing[1],
                self._last_error,
            )
        else:
            self._failing = (how, 1)
            log.error("job %r failed; it keeps its schedule", self._name, exc_info=exc)

    def _skip(self, log: logging.Logger, ticks: int, why: str) -> None:
        self._skipped += ticks
        # Once per streak, which ends when a run takes less than the interval.
        if not self._lagging:
            self._lagging = True
            log.warning("job %r %s", self._name, why)

    def _history(self) -> dict:
        return {key: getattr(self, "_" + key) for key in _HISTORY}

    def _adopt(self, history: Mapping) -> None:
        for key in _HISTORY:
            setattr(self, "_" + key, history[key])

    def _schedule(self) -> str:
        every = _seconds(self._interval)
        return every if self._at is None else f"{every} at {self._at.text} {_zone_name(self.tz)}"

    def _redeclare(self, other: Job) -> None:
        self._declared, self._at = other._declared, other._at
        self._func, self._interval, self._run_now = other._func, other._interval, other._run_now
        self._args, self._kwargs = other._args, other._kwargs

    def _is_same_function(self, other: Job) -> bool:
        return _identity(other._func) == _identity(self._func)

    def __repr__(self) -> str:
        due = self._scheduler.next_due(self)
        if self.paused:
            when = "paused"
        elif due is None:
            when = "not scheduled"
        elif self._at is not None:
            when = f"next {_when(due, self.tz)} ({_zone_name(self.tz)})"
        else:
            when = f"next in {_seconds(max(0.0, due - self._scheduler.wall()))}"
        every = _seconds(self._interval) + ("" if self._at is None else f" at {self._at.text}")
        return (
            f"<Job {self._name!r} every {every}, {when},"
            f" runs={self._runs} failures={self._failures} skipped={self._skipped}>"
        )


def _first_due(job: Job, now: float, origin: float | None, unsure: tuple | None) -> float:
    """When a job is due first in a new runner, on the wall clock; ``origin``
    is a due time of its grid, or an at= job's first due time if it never ran.

    A job with no grid yet starts one: now with ``run_now``, else one
    interval later (or at its first at= time).  A job whose last tick ran
    waits for its next tick; one whose last tick was missed (the deployment
    was down) runs once, now.  A runner that crashed may have started runs
    it had not saved, in the window ``unsure`` (see `_Scheduler._crash_window`):
    a tick there counts as run, so that no tick runs twice.
    """
    last_due = job._last_due
    if job._at is not None:
        if origin is None and last_due is None:
            return now if job._run_now else job._due_after(now, 0.0)
        missed = origin if last_due is None else job._due_after(last_due, 0.0)
        if missed <= now and not (
            unsure and unsure[0] < missed and job._due_after(min(unsure[1], now), 0.0) > now
        ):
            return now
        return job._due_after(now, 0.0)
    if origin is None:
        return now if job._run_now else now + job.interval
    ticks = math.floor((now - origin) / job.interval)
    if ticks < 0:
        return origin
    last_tick = origin + ticks * job.interval
    ran = last_due is not None and last_due >= last_tick - 1e-6
    if ran or (unsure and unsure[0] < last_tick <= unsure[1]):
        return job._due_after(now, origin)
    return now


class _At:
    """A time of the local clock, ``at=`` of a job: each day ("03:00"), each
    hour (":15") or each week ("mon 09:00").  Occurrences are wall times.

    A daily or weekly time that a spring-forward day skips falls on the
    first instant after the gap, and one that a fall-back day repeats on
    its first occurrence.  An hourly one falls on every instant whose local
    minute and second are those given: once in each real hour.
    """

    def __init__(
        self, text: str, period: float, weekday: int | None, seconds: int, tz: tzinfo | None
    ) -> None:
        self.text, self.period, self.weekday, self.seconds = text, period, weekday, seconds
        self.tz = tz  # None: the ticker's zone

    def next_after(self, wall: float, tz: tzinfo) -> float:
        """The first occurrence after ``wall``, in the zone ``tz``."""
        tz = self.tz or tz
        if self.period == 3600:
            return self._hourly_after(wall, tz)
        day = datetime.fromtimestamp(wall, tz).date() - timedelta(days=1)
        while True:
            if self.weekday is None or day.weekday() == self.weekday:
                occurrence = self._on(day, tz)
                if occurrence > wall:
                    return occurrence
            day += timedelta(days=1)

    def _on(self, day: date, tz: tzinfo) -> float:
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
        # whole hour.  The offset may change within the next two hours (DST),
        # so each offset seen in them is tried.
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


_WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]
_PERIODS = {86400.0: "one day", 3600.0: "one hour", 604800.0: "one week"}


def _parse_at(at: Any, interval: float, tz: Any) -> _At:
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
    if not found or (day and (weekday is None or hour is None)) or h > 23 or m > 59 or sec > 59:
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
    zone = None if tz is None else _zone(tz, "every(): tz")
    return _At(at, period, weekday, h * 3600 + m * 60 + sec, zone)


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


# -- the scheduler: one pass, and the thread that makes it --


class _Scheduler:
    """The jobs of one ticker, their plans, and the thread that runs them.

    `run_pending` is one pass: it starts the jobs due at ``now`` on the job
    pool and returns the seconds until the next one.  `tick` is what the
    thread does between waits: keep the lease (only its holder, the
    runner, runs jobs), make the pass, and have the state saved, from which
    the next runner plans the jobs.  The lock guards the jobs, the heap,
    the plans and the running set; it is never held while user code runs
    or the lease does I/O.
    """

    def __init__(self, clock: Callable[[], float], wall: Callable[[], float]) -> None:
        self.clock, self.wall = clock, wall
        self.lease = _Lease()
        self.app: Flask | None = None  # whose app context each run gets
        self.log = logger  # the app's, once bound
        self.retry = 5.0
        self.zone: tzinfo | None = None  # of at= jobs without their own tz
        self.workers = _DEFAULT_WORKERS
        self.jobs: dict[str, Job] = {}
        # Counts the apps bound: a job declared again for the same app is a
        # mistake, for a new one (a factory called again) a new declaration.
        self.generation = 0
        self._paused: set[Job] = set()
        self._walled = 0  # jobs with at=, whose due times follow the wall clock
        self._offset: float | None = None  # wall minus monotonic time, at the last pass
        self._reset()

    def _reset(self) -> None:
        # What a forked child builds anew: its parent's threads are gone, and
        # may have held these locks at the moment of the fork.
        self._lock = threading.Lock()
        self._saving = threading.Lock()  # one save at a time
        self.wakeup = threading.Event()
        self.save_wanted = threading.Event()  # wakes the saver thread
        self.pool = _Pool("flask-ticker-job", self.workers)
        # Heap entries are (due, seq, job, wall): ``wall`` is the wall time
        # an at= job is due at, None for interval jobs.  _plans keeps each
        # job's live entry; the heap drops replaced ones as they come up.
        self._heap: list[tuple] = []
        self._plans: dict[Job, tuple] = {}
        self._seq = itertools.count()
        self._running: set[Job] = set()
        self._thread: threading.Thread | None = None
        self._saver: threading.Thread | None = None
        self._waiting = False  # the thread is blocked in lease.take(block=True)
        self._said_why = False  # why it does not run the jobs, or cannot
        self.is_runner = False
        self.runner: dict | None = None  # this process, while it is the runner
        self._unclaimed: dict[str, dict] = {}  # saved jobs not registered (yet)
        # Wall times within which the last runner, which left without saving,
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
                if self.is_runner:
                    self._plan(job, self._unclaimed.pop(job.name, None))
            elif not known._is_same_function(job):
                raise ValueError(
                    f"every(): a job named {job.name!r} is already registered on this"
                    " ticker with another function; pass name= to register another"
                )
            else:
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
                if moved and self.is_runner:
                    self._plan(job, job._history())
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
            if plan is not None:  # at its next due time, not now
                due, _, _, wall = plan
                now, offset = self.clock(), self.wall() - self.clock()
                if wall is None:
                    self._push(job, due if due >= now else job._due_after(now, due))
                else:
                    wall = max(wall, job._due_after(now + offset, 0.0))
                    self._push(job, wall - offset, wall)
            elif self.is_runner and self.jobs.get(job.name) is job:
                self._plan(job, None)
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
        due, _, _, wall = plan
        return wall if wall is not None else due - self.clock() + self.wall()

    def run_here(self, job: Job) -> Any:
        if self.app is None:
            raise RuntimeError(
                f"job {job.name!r} cannot run: no Flask app is bound to its ticker;"
                " pass the app to Ticker(app) or call ticker.init_app(app)"
            )
        with self._lock:
            if job in self._running:
                raise RuntimeError(f"job {job.name!r} is already running")
            self._running.add(job)
        try:
            wall = self.wall()
            return job._call(self.app, wall, self.clock, wall)
        finally:
            self._running.discard(job)
            self._mark_dirty()

    def run_by_hand(self, job: Job) -> Any:
        """Run ``job`` now in this thread and record it in the deployment
        state: as the runner if no process is, else beside it.  A lease
        that expires is never taken for it: nothing would renew it."""
        took = not self.is_runner and self.lease.ttl is None and self._take(None, block=False)
        started, runs = self.wall(), job.runs
        try:
            return self.run_here(job)
        finally:
            if took:
                self.leave()
            elif not self.is_runner and job.runs > runs:
                run = [started, job.last_duration, job.last_error]
                why = f"the run of job {job.name!r} is not in the deployment state"
                self._guarded(why, self.lease.record, job.name, run)

    # -- one pass --

    def run_pending(self, now: float) -> float | None:
        """Start the jobs due at ``now`` (monotonic); return the seconds until
        the next is due, or None if none is planned."""
        start, lapses = [], []
        offset = self.wall() - now
        with self._lock:
            if self._offset is None or not self._walled:
                self._offset = offset
            elif abs(offset - self._offset) >= _STEPPED:  # a step, or drift that adds up
                self._follow_the_wall_clock(offset)
                self._offset = offset
            while self._heap and self._heap[0][0] <= now:
                entry = heapq.heappop(self._heap)
                due, _, job, wall = entry
                if self._plans.get(job) is not entry or job in self._paused:
                    continue  # replaced, gone, or planned again by resume()
                if wall is not None and now + offset < wall - _STEPPED:
                    self._push(job, wall - offset, wall)  # the wall clock was set back
                    continue
                # A catch-up run counts for the latest due time it stands for.
                if wall is None:
                    later = job._due_after(now, due)
                    behind = round((later - due) / job.interval) - 1
                    latest = due + behind * job.interval + offset
                    self._push(job, later)
                else:
                    behind, latest, later = 0, wall, job._due_after(wall, 0.0)
                    while later <= now + offset and behind < 10_000:  # bounded
                        behind, latest, later = behind + 1, later, job._due_after(later, 0.0)
                    self._push(job, later - offset, later)
                if job in self._running:
                    lapses.append((job, behind + 1, _STILL_RUNNING))
                    continue
                if behind:
                    lapses.append(
                        (job, behind, f"was {behind} run(s) behind; running it once now")
                    )
                self._running.add(job)
                start.append((job, latest))
            delay = self._heap[0][0] - now if self._heap else None
        for job, ticks, why in lapses:
            job._skip(self.log, ticks, why)
            self._send(job_skipped, job, reason=why)
        for job, latest in start:
            self._dirty = True
            try:
                self.pool.submit(
                    job.name,
                    functools.partial(self._run, job, latest),
                    functools.partial(self._running.discard, job),
                )
            except RuntimeError:  # the pool was closed meanwhile: a stop
                self._running.discard(job)
        return delay

    def _send(self, sent: Any, job: Job, **details: Any) -> None:
        _send(self.app, self.log, sent, job=job, **details)

    def _push(self, job: Job, due: float, wall: float | None = None) -> None:
        entry = (due, next(self._seq), job, wall)
        self._plans[job] = entry
        if job not in self._paused:
            heapq.heappush(self._heap, entry)

    def _follow_the_wall_clock(self, offset: float) -> None:
        # The wall clock was stepped (NTP, by hand) or the machine slept: at=
        # jobs are due at wall times, so their monotonic due times move.  The
        # heap is built anew, so that steps cannot pile up stale entries.
        self._heap = []
        for job, (due, _, _, wall) in list(self._plans.items()):
            self._push(job, due if wall is None else wall - offset, wall)

    def _run(self, job: Job, due: float) -> None:
        if not self._may_start():  # queued behind busy workers, and the lease lost since
            self._running.discard(job)
            job._skip(self.log, 1, "was not started: this process lost the lease (TICKER_LOCK)")
            return
        self._send(job_started, job)
        try:
            result = job._call(self.app, self.wall(), self.clock, due)
        except BaseException as exc:
            job._log_outcome(self.log, exc)
            self._send(job_failed, job, exception=exc, duration=job.last_duration)
        else:
            job._log_outcome(self.log, None)
            self._send(job_finished, job, result=result, duration=job.last_duration)
        finally:
            self._running.discard(job)
            self._mark_dirty()

    def _plan(self, job: Job, saved: Mapping | None) -> None:
        """Plan a job from its row in the deployment state, or None."""
        origin = None
        if saved is not None:
            job._adopt(saved)
            # Declared anew with another interval: a new grid from its last run.
            origin = saved["origin"] if saved.get("interval") == job.interval else job._last_due
        now, wall = self.clock(), self.wall()
        due = _first_due(job, wall, origin, self._unsure)
        self._push(job, due - wall + now, None if job.at is None else due)
        self._dirty = True

    # -- the thread --

    @property
    def started(self) -> bool:
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
        try:  # the first pass runs here: run_now jobs need not wait for the thread
            self.tick(thread, first=True)
        except BaseException:
            with self._lock:
                self._thread = None
            raise
        if self.lease.shared:
            saver = self._saver = threading.Thread(
                target=_save_loop,
                args=(weakref.ref(self), self.save_wanted),
                name="flask-ticker-save",
                daemon=True,
            )
            saver.start()
        thread.start()

    def saves_on(self, thread: threading.Thread) -> bool:
        return self._saver is thread

    def tick(self, thread: threading.Thread | None, first: bool = False) -> float | None:
        """Take the lease if need be, run what is due and have what changed
        saved; return how long the thread may sleep (None: until woken).
        ``thread`` is the scheduler thread, or None for a pass by hand."""
        block = self.lease.blocks and thread is not None and not first
        if not self.is_runner and not self._take(thread, block):
            return self.retry
        if thread is not None and not self.owns(thread):
            return None  # stop() came first; the loop sees it next
        if self.clock() >= self._renew_at and not self._keep():
            return self.retry
        delay = self.run_pending(self.clock())
        if first:
            return delay  # the thread saves, as soon as it starts
        if self._dirty and self.clock() >= self._saved_at + _SAVE_EVERY:
            self._saved_at = self.clock()
            soon = delay is not None and delay <= _IDLE
            if thread is None or self._saver is None or not soon:
                self.save()
            else:  # on the saver thread: a pass with a run due soon waits for no I/O
                self.save_wanted.set()
        wakes = [delay, self._renew_at - self.clock(), _WALL_CHECK if self._walled else None]
        if self._dirty:
            wakes.append(self._saved_at + _SAVE_EVERY - self.clock())
        wake = min(w for w in wakes if w is not None)
        return None if wake == math.inf else wake

    def _keep(self) -> bool:
        """Renew a lease that expires; return whether this process may still
        start runs.  It may not once renewals have failed for a whole TTL
        since the last one that worked, on its own clock, whether or not
        another process has the lease by then."""
        now, ttl = self.clock(), self.lease.ttl
        kept = self._guarded("cannot renew the lease (TICKER_LOCK)", self.lease.renew)
        if kept:
            self._renewed_at, self._renew_at = now, now + ttl / 3
            # Also a sign of life, for a successor's _crash_window.
            self._mark_dirty()
            self._saved_at = -math.inf
            return self.is_runner
        if kept is None and self._may_start():
            self._renew_at = min(self.clock() + min(self.retry, ttl / 3), self._renewed_at + ttl)
            return True
        self._lose(
            "another process took its lease (TICKER_LOCK)"
            if kept is False
            else f"it could not renew its lease (TICKER_LOCK) within TICKER_LOCK_TTL ({ttl}s)"
        )
        return False

    def _may_start(self) -> bool:
        # The thread notices a lapse only when it next wakes.
        ttl = self.lease.ttl
        return self.is_runner and (ttl is None or self.clock() < self._renewed_at + ttl)

    def _guarded(self, what: str | None, call: Callable[..., Any], *args: Any) -> Any:
        """``call(*args)``, or None if it raised.  An _Outage was logged by the
        lease; anything else is logged here, as ``what``."""
        try:
            return call(*args)
        except Exception as exc:
            if what and not isinstance(exc, _Outage):
                self.log.exception(what)
            return None

    def _lose(self, why: str) -> None:
        self.log.warning("process %d stops starting runs: %s", os.getpid(), why)
        self._unplan_all()

    def _take(self, thread: threading.Thread | None, block: bool) -> bool:
        """Try to become the runner; on success, plan every job."""
        with self._lock:  # so that stop() sees either a stop or a wait, never neither
            if thread is not None and not self.owns(thread):
                return False
            self._waiting = block
        before = self.clock()
        why = f"cannot take the lock (TICKER_LOCK); trying again every {self.retry}s"
        why = None if self._said_why else why  # once, not every retry
        try:
            taken = self._guarded(why, self.lease.take, block)
            state = self._guarded(why, self.lease.load) if taken else None
        finally:
            self._waiting = False
        if taken is None or (taken and state is None):
            self._said_why = True
            if taken:
                self._release()
            return False
        if not taken:
            if not self._said_why:
                self._said_why = True
                self.log.info(
                    "process %d does not run the jobs: another process holds the"
                    " lock (TICKER_LOCK), and this one takes over if it stops",
                    os.getpid(),
                )
            return False
        try:
            with self._lock:
                if thread is None or self.owns(thread):  # not stopped meanwhile
                    saved = dict(state["jobs"])
                    self._unsure = self._crash_window(state["runner"])
                    self._folded = state["folded"]
                    for job in self.jobs.values():
                        self._plan(job, saved.pop(job.name, None))
                    self._unclaimed = saved
                    self.is_runner, self.runner, self._said_why = True, _runner(), False
                    ttl = self.lease.ttl
                    self._renewed_at = before
                    self._renew_at = math.inf if ttl is None else before + ttl / 3
        except Exception:  # a state of another shape: say so, and take nothing
            self.log.exception("cannot plan the jobs from the state beside TICKER_LOCK")
            self._unplan_all()
        if self.is_runner:
            self.log.info("process %d runs the jobs", os.getpid())
            return True
        self._release()
        return False

    def _crash_window(self, runner: dict | None) -> tuple[float, float] | None:
        """Where the state names a runner, it left without a clean stop, and
        may have started runs that it had not saved: those of its last
        moments.  A lease that never expires is free the moment its holder
        dies, so those moments are now.  One with a TTL is taken over a TTL
        or more later; its holder saved a sign of life, ``alive``, at each
        renewal, and may have started runs until a TTL after it."""
        if not runner:
            return None
        now, ttl = self.wall(), self.lease.ttl
        if ttl is None:
            return now - 2 * _SAVE_EVERY, now
        alive = runner.get("alive", now - ttl)
        return alive - 2 * _SAVE_EVERY, min(now, alive + ttl + 2 * _SAVE_EVERY)

    def _unplan_all(self) -> None:
        with self._lock:
            self.is_runner = False
            self._heap.clear()
            self._plans.clear()
        self._renew_at = math.inf

    def _release(self) -> None:
        self._guarded("cannot release the lease (TICKER_LOCK)", self.lease.release)

    def stop(self) -> None:
        """Stop starting runs and end the thread; a run in progress goes on."""
        with self._lock:
            thread, self._thread = self._thread, None
            saver, self._saver = self._saver, None
            waiting = self._waiting
        self.wakeup.set()
        self.save_wanted.set()
        if saver is not None and saver is not threading.current_thread():
            saver.join()  # its save comes before the last one, which leave() makes
        # A thread blocked on the lease cannot be woken; it lets go of the
        # lease itself if it ever gets it.  A thread not started yet (a
        # run_now job of the first pass stopped the ticker) ends at its first look.
        if (
            thread is not None
            and thread.ident is not None
            and thread is not threading.current_thread()
            and not waiting
        ):
            thread.join()  # prompt: the loop runs no job

    def leave(self) -> None:
        """Once the runs have finished: save, then release the lease."""
        if self.is_runner:
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
        # The first change after a save wakes the thread to have it saved
        # within _SAVE_EVERY; later ones ride along.
        if not self._dirty:
            self._dirty = True
            self.wakeup.set()

    def save(self, runner: bool = True) -> None:
        """Write the jobs' plans and history to the deployment state, and
        whether this process still runs them."""
        if not self.lease.shared:
            self._dirty = False
            return
        with self._saving:
            self._dirty = False
            kept = self._guarded(
                "cannot save the jobs' state beside TICKER_LOCK", self._save, runner
            )
            if kept is None:
                self._dirty = True  # tried again within _SAVE_EVERY
        if kept is False and self.is_runner:
            self._lose("another process took its lease (TICKER_LOCK) before it saved")

    def row(self, job: Job, offset: float) -> dict:
        """The job's row of the deployment state; ``offset`` is wall minus
        monotonic time."""
        plan = self._plans.get(job)
        due = None if plan is None else plan[3] if plan[3] is not None else plan[0] + offset
        paused = job in self._paused
        return {
            "interval": job.interval,
            "origin": due,
            **job._history(),
            "next_due": None if paused else due,
            "running": job in self._running,
            "paused": paused,
        }

    def _save(self, runner: bool) -> bool:
        for name, started, duration, error in self.lease.runs(self._folded):
            job = self.jobs.get(name)  # a run made by hand meanwhile joins the history
            if job is not None:
                job._adopt(_with_run(job._history(), started, duration, error))
            self._folded = max(self._folded, started)
        with self._lock:
            jobs = list(self.jobs.values())
            unclaimed = dict(self._unclaimed)  # another version's jobs, kept for it
        offset = self.wall() - self.clock()
        rows = {**unclaimed, **{job.name: self.row(job, offset) for job in jobs}}
        alive = {**self.runner, "alive": self.wall()} if runner and self.runner else None
        return self.lease.save({"runner": alive, "folded": self._folded, "jobs": rows})


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


def _save_loop(ref: weakref.ref[_Scheduler], wanted: threading.Event) -> None:
    # The saver thread: as _loop, it holds the scheduler only weakly while
    # it waits, and ends once stop() has replaced it.
    me = threading.current_thread()
    while True:
        wanted.wait()
        wanted.clear()
        scheduler = ref()
        if scheduler is None or not scheduler.saves_on(me):
            return
        scheduler.save()
        del scheduler


def _with_run(history: dict, started: float, duration: float, error: str | None) -> dict:
    """A job's history with one more run, made by hand in another process."""
    history = {**history, "runs": history["runs"] + 1}
    history["failures"] += error is not None
    if history["last_run"] is None or started >= history["last_run"]:
        history.update(last_run=started, last_duration=duration, last_error=error)
        history["last_due"] = max(history["last_due"] or started, started)
    return history


# -- the pools, and background tasks --


class _Pool:
    """A bounded pool of daemon threads, started only when there is work.

    ThreadPoolExecutor would do, but since Python 3.9 its workers are joined
    before atexit handlers run, so one hung job would block interpreter exit
    with no timeout (bpo-39812).  These are daemons, and shutdown() has a
    deadline.  Items are (label, run, cancel): run() never raises, and
    cancel() is for work dropped unstarted at shutdown.
    """

    def __init__(self, name: str, max_workers: int) -> None:
        self.name, self.max_workers = name, max_workers
        self.log = logger
        self.closed = False
        self._queue: queue.SimpleQueue = queue.SimpleQueue()  # None: a worker exits
        self._idle = threading.Semaphore(0)
        self._active: dict[threading.Thread, str] = {}  # what each worker runs
        self._lock = threading.Lock()  # guards closed and _threads
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
            for item in self._drain():
                if item is not None:
                    self._queue.put(item)

    def shutdown(self, deadline: float | None) -> list[str]:
        """Close, and let the workers drain the queue until ``deadline``
        (monotonic).  Returns the labels still running, then those that
        never started, which are cancelled."""
        self.close()
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:  # within the platform's timers, however long the timeout
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            thread.join(None if left is None else min(left, threading.TIMEOUT_MAX))
        me = threading.current_thread()
        unfinished = [label for thread, label in list(self._active.items()) if thread is not me]
        exits = 0
        for item in self._drain():
            if item is None:
                exits += 1
            else:
                item[2]()
                unfinished.append(item[0])
        for _ in range(exits):  # for the workers still busy past the deadline
            self._queue.put(None)
        return unfinished

    def _drain(self) -> list:
        items = []
        with contextlib.suppress(queue.Empty):
            while True:
                items.append(self._queue.get_nowait())
        return items


def _in_pool(pool: _Pool, label: str, call: Callable[[], Any], failed=None) -> Future:
    """Run ``call`` on ``pool``; its outcome is the Future's.  ``failed(exc)``,
    if given, hears of a failure first."""
    # Imported here: it costs more than this whole module, and processes
    # that run no task (a CLI command) never need it.
    from concurrent.futures import Future

    future: Future = Future()

    def run() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            result = call()
        except BaseException as exc:
            if failed is not None:
                failed(exc)
            future.set_exception(exc)
        else:
            future.set_result(result)

    pool.submit(label, run, future.cancel)
    return future


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
    app, name, log = current_app._get_current_object(), _name(func), ticker.log  # type: ignore[attr-defined]

    def failed(exc: BaseException) -> None:
        log.error("background task %r failed", name, exc_info=exc)
        _send(app, log, task_failed, job=None, func=func, exception=exc)

    return ticker.submit_task(
        name, functools.partial(_call_in_context, app, func, args, kwargs), failed
    )


def _call_in_context(app: Flask, func: Callable[..., Any], args: tuple, kwargs: Mapping) -> Any:
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


def _send(app: Flask | None, log: logging.Logger, sent: Any, **details: Any) -> None:
    # Costs nothing where nobody listens; a receiver that raises is logged,
    # and changes neither the run's figures nor the loop.
    if not sent.receivers or app is None:
        return
    try:
        with app.app_context():
            sent.send(app, **details)
    except Exception:
        log.exception("a receiver of flask_ticker.%s raised", sent.name)


# -- the Flask extension --


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
        self._app: Flask | None = None
        self._shutdown_timeout: float | None = 10.0
        self._served = False  # this process has handled a request
        self._start_on_request = False  # nothing said where it serves: see _autostart
        self._forking = False  # it handed its jobs to the children it forks
        self._reset()
        if app is not None:
            self.init_app(app)

    def _reset(self) -> None:
        self._pid = os.getpid()
        self._task_pool = _Pool("flask-ticker-task", self._scheduler.workers)
        self._task_pool.log = self.log
        # A ticker dropped without stop() (a test that made many apps) must
        # not leave its threads behind.  Not at exit: atexit stops it then.
        scheduler = self._scheduler
        weakref.finalize(
            self,
            _abandon,
            scheduler.wakeup,
            scheduler.save_wanted,
            scheduler.pool,
            self._task_pool,
        ).atexit = False

    @property
    def app(self) -> Flask | None:
        """The app this ticker serves: the last one passed to `init_app`."""
        return self._app

    @property
    def log(self) -> logging.Logger:
        """Where it logs: ``<app.logger>.flask_ticker``."""
        return self._scheduler.log

    def init_app(self, app: Flask) -> None:
        """Bind the ticker to ``app`` and, unless disabled, start it.  Binding
        another app moves the ticker.  It reads these keys of ``app.config``:

        - ``TICKER_ENABLED`` (None): None starts it where the app is served
          (see docs/semantics.md), never in a CLI command, a script or with
          ``TESTING``; True in any process but the reloader's watcher and a
          CLI command; False never by itself (`start` always does).
        - ``TICKER_MAX_WORKERS`` (``min(32, cpus + 4)``): threads that run
          jobs at once, and threads that run background tasks at once.
        - ``TICKER_SHUTDOWN_TIMEOUT`` (10): seconds `stop` waits at exit.
        - ``TICKER_LOCK`` (a file in the instance folder): a path, a Redis
          URL or client, a database URL or SQLAlchemy Engine, False for
          none, or an object with ``acquire(blocking=False)`` and ``release()``.
        - ``TICKER_LOCK_RETRY`` (5): seconds between attempts to take a
          lease that cannot be waited on (Redis, a custom lock).
        - ``TICKER_LOCK_TTL`` (30): seconds a Redis or database lease
          outlives its holder's last renewal.
        - ``TICKER_LOCK_KEY`` (``"flask_ticker:" + app.name``): the lease's
          Redis key, or its row in a database.
        - ``TICKER_TIMEZONE`` (the server's zone): the zone of ``at=`` jobs
          without a ``tz``; a zoneinfo key or a tzinfo.
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
        _require(
            enabled in (None, True, False),
            "TICKER_ENABLED",
            "True, False or None (unset)",
            enabled,
        )
        ok = isinstance(workers, int) and not isinstance(workers, bool) and workers >= 1
        _require(ok, "TICKER_MAX_WORKERS", "an int >= 1", workers)
        ok = timeout is None or (_is_number(timeout) and 0 <= timeout < math.inf)
        _require(
            ok, "TICKER_SHUTDOWN_TIMEOUT", "finite seconds >= 0, or None for no limit", timeout
        )
        _require(
            _is_number(retry) and 0 < retry < math.inf,
            "TICKER_LOCK_RETRY",
            "finite seconds > 0",
            retry,
        )
        _require(
            _is_number(ttl) and 0.01 <= ttl < math.inf,
            "TICKER_LOCK_TTL",
            "finite seconds >= 0.01",
            ttl,
        )
        _require(isinstance(key, str) and key, "TICKER_LOCK_KEY", "a non-empty string", key)
        zone = None if zone is None else _zone(zone, "TICKER_TIMEZONE")
        log = app.logger.getChild("flask_ticker")
        lease = _lease(lock, key, ttl, log)
        if self.app is not None:
            self.stop(self._shutdown_timeout)
        scheduler = self._scheduler
        scheduler.workers = scheduler.pool.max_workers = self._task_pool.max_workers = workers
        scheduler.pool.reopen()
        self._task_pool.reopen()
        self._shutdown_timeout = timeout
        scheduler.lease, scheduler.retry, scheduler.zone, scheduler.app = lease, retry, zone, app
        scheduler.generation += 1
        scheduler.log = lease.log = scheduler.pool.log = self._task_pool.log = log
        if zone is None and any(job.at is not None for job in scheduler.jobs.values()):
            self._find_zone()
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
        when the ticker starts, unless the deployment state says it ran less
        than one interval ago; without it, one interval later.  ``at`` runs
        it at a time of the local clock instead: ``"03:00"`` or
        ``"03:00:30"`` with an interval of one day, ``":15"`` with one hour,
        ``"mon 09:00"`` with one week, in the zone ``tz`` (a zoneinfo key or
        a tzinfo; default: TICKER_TIMEZONE).  ``name`` defaults to the
        function's name and is unique per ticker.  Returns the `Job`;
        without ``func``, a decorator that registers the function.
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
        if isinstance(args, (str, bytes)) or not isinstance(args, Sequence):
            raise TypeError(f"every(): args for job {name!r} must be a tuple, got {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"every(): kwargs for job {name!r} must be a dict, got {kwargs!r}")
        run_now = at is None if run_now is None else bool(run_now)
        if when is not None and when.tz is None:
            self._find_zone()
        job = Job(
            self._scheduler, func, seconds, name, run_now, tuple(args), dict(kwargs or {}), when
        )
        return self._scheduler.add(job)

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
        """The deployment's jobs as the runner last saved them (about a
        second behind at most), as JSON-ready data, times in ISO 8601 UTC:

        ``{"started": this process's thread is up, "is_runner": it runs the
        jobs, "runner": {"pid", "host", "since"} or None, "scope":
        "deployment" or "process", "jobs": [{"name", "interval", "at", "tz",
        "paused", "next_run", "last_run", "last_duration", "last_error",
        "runs", "failures", "skipped", "running"}, ...], "error": None}``.

        With no shared state (``TICKER_LOCK = False`` or a custom lock) the
        figures are this process's, as ``scope`` says.  A lease that cannot
        be used never makes it raise: ``error`` says why, in one line, and
        the figures are this process's.
        """
        scheduler = self._scheduler
        lease = scheduler.lease
        saved, error = {}, None
        runner = scheduler.runner if scheduler.is_runner else None
        if lease.shared:
            try:
                state = lease.load()
                saved = state["jobs"]
                if not scheduler.is_runner and state["runner"] and lease.is_held():
                    # as the runner shows itself; "alive" is for _crash_window
                    runner = {key: state["runner"][key] for key in ("pid", "host", "since")}
            except Exception as exc:  # a status page must not fail with the lease
                error = str(exc) if isinstance(exc, _Outage) else _unusable(lease, exc)
        offset, jobs = scheduler.wall() - scheduler.clock(), []
        for job in self.jobs:
            row = saved.get(job.name) or scheduler.row(job, offset)
            jobs.append(
                {
                    "name": job.name,
                    "interval": row["interval"] or job.interval,
                    "at": job.at,
                    "tz": job.tz and _zone_name(job.tz),
                    "paused": row["paused"],
                    "next_run": _iso(row["next_due"]),
                    "last_run": _iso(row["last_run"]),
                    "last_duration": row["last_duration"],
                    "last_error": row["last_error"],
                    "runs": row["runs"],
                    "failures": row["failures"],
                    "skipped": row["skipped"],
                    # not a crashed runner's
                    "running": row["running"] and (runner is not None or job.running),
                }
            )
        return {
            "started": self.started,
            "is_runner": scheduler.is_runner,
            "runner": runner,
            "scope": "deployment" if lease.shared else "process",
            "jobs": jobs,
            "error": error,
        }

    def run_pending(self) -> float | None:
        """Make one scheduler pass now, in this thread: take the lease if it
        is free, start the jobs that are due, and return the seconds until
        the next is due (None: none is planned).  A test with a fake
        ``clock`` calls it instead of `start`, to step through time."""
        self._check_pid()
        if self.app is None:
            raise RuntimeError(
                "Ticker.run_pending() needs an app: pass it to Ticker(app)"
                " or call ticker.init_app(app) first"
            )
        return self._scheduler.tick(None)

    # -- starting and stopping --

    @property
    def started(self) -> bool:
        """Whether the scheduler thread is up (running jobs or waiting to)."""
        return self._scheduler.started

    def start(self) -> None:
        """Start the scheduler thread.  Once this process holds the lease,
        due jobs run at once.  Idempotent; a stopped ticker starts again."""
        self._check_pid()
        if self._scheduler.started:
            return
        if self.app is None:
            raise RuntimeError(
                "Ticker.start() needs an app: pass it to Ticker(app)"
                " or call ticker.init_app(app) first"
            )
        self._scheduler.pool.reopen()
        self._task_pool.reopen()
        uwsgi = sys.modules.get("uwsgi")
        if uwsgi is not None and not (uwsgi.opt.get("enable-threads") or uwsgi.opt.get("threads")):
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
        self._check_pid()
        self._scheduler.stop()
        deadline = None if timeout is None else time.monotonic() + timeout
        unfinished = [f"job {n!r}" for n in self._scheduler.pool.shutdown(deadline)]
        unfinished += [f"task {n!r}" for n in self._task_pool.shutdown(deadline)]
        if unfinished:
            self.log.error(
                "ticker stopped with work unfinished after %s: %s",
                "no time limit" if timeout is None else f"{timeout}s",
                ", ".join(unfinished),
            )
        self._scheduler.leave()
        return not unfinished

    def submit_task(self, name: str, call: Callable[[], Any], failed: Callable) -> Future:
        """Queue a task of `run_in_background` on the task pool."""
        self._check_pid()
        return _in_pool(self._task_pool, name, call, failed)

    # -- the flask ticker command --

    def _command_line(self) -> click.Group:
        # It never starts the ticker: a CLI command does not (see _autostart).
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
                click.echo(_describe(row, time.time(), self.get(row["name"]).tz))

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

    # -- where it runs: the start rule, forks and signals --

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
                elif self.started:  # TICKER_ENABLED = True in a script that reloads
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

    def _forked(self, child: bool) -> None:
        # A preforking master (gunicorn --preload) loads the app, then forks
        # workers and serves nothing itself, and threads do not survive a
        # fork: it hands the jobs to its children, saving their state as it
        # stops, so that the child that takes the lease goes on with the
        # same grids.  Any other fork (multiprocessing) leaves the jobs be.
        preforking = "gunicorn.arbiter" in sys.modules or "uwsgi" in sys.modules
        hand_over = self._forking or (self.started and not self._served and preforking)
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


def _abandon(wakeup: threading.Event, save_wanted: threading.Event, *pools: _Pool) -> None:
    for pool in pools:
        pool.close()
    wakeup.set()
    save_wanted.set()


# Tickers to stop at interpreter exit; weak, so that apps a test suite
# drops are not kept alive by this module.
_tickers: weakref.WeakSet[Ticker] = weakref.WeakSet()


@atexit.register
def _stop_at_exit() -> None:
    for ticker in list(_tickers):
        ticker.stop(ticker._shutdown_timeout)


def _drain_on_sigterm() -> None:
    # Under flask run, app.run() and waitress nothing handles SIGTERM, so it
    # would kill a job mid-run.  Take it only where nobody else has: never
    # a handler of the app's or the server's (gunicorn's drains already).
    import signal  # here: it costs a third of importing this module

    if (
        threading.current_thread() is threading.main_thread()
        and "uwsgi" not in sys.modules
        and signal.getsignal(signal.SIGTERM) is signal.SIG_DFL
    ):
        signal.signal(signal.SIGTERM, _exit_on_sigterm)


def _exit_on_sigterm(signum: int, frame: Any) -> None:
    _stop_at_exit()  # the running jobs finish, within TICKER_SHUTDOWN_TIMEOUT
    raise SystemExit(0)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(
        after_in_parent=lambda: [t._forked(False) for t in list(_tickers)],
        after_in_child=lambda: [t._forked(True) for t in list(_tickers)],
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


# -- small helpers --


def _describe(job: dict, now: float, tz: tzinfo | None) -> str:
    """One line of ``flask ticker list``; an at= job's times in its zone."""

    def ago(iso: str) -> str:
        return _seconds(round(max(0.0, now - datetime.fromisoformat(iso).timestamp())))

    last = "never run"
    if job["running"]:
        last = "running now"
    elif job["last_error"]:
        last = f"failed {ago(job['last_run'])} ago: {job['last_error']}"
    elif job["last_run"]:
        last = f"ok {ago(job['last_run'])} ago, {_duration(job['last_duration'])}"
    if job["paused"]:
        when = "paused"
    elif not job["next_run"]:
        when = "not scheduled"
    else:
        when = f"next {_when(datetime.fromisoformat(job['next_run']).timestamp(), tz)}"
    every = _seconds(job["interval"]) + (f" at {job['at']} {job['tz']}" if job["at"] else "")
    return (
        f"{job['name']}  every {every}  {when}  {last}"
        f"  runs={job['runs']} failures={job['failures']}"
    )


def _check_callable(func: Any, what: str) -> None:
    if not callable(func):
        raise TypeError(f"{what} must be callable, got {func!r}")
    if inspect.iscoroutinefunction(func) and importlib.util.find_spec("asgiref") is None:
        raise RuntimeError(
            f"{what} {_name(func)!r} is a coroutine function, which needs"
            " Flask's async extra: pip install 'flask[async]'"
        )


def _check_interval(interval: object, name: str | None) -> float:
    what = "every(): interval" + ("" if name is None else f" for job {name!r}")
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif _is_number(interval):
        seconds = float(interval)
    else:
        raise TypeError(f"{what} must be seconds (int or float) or a timedelta, got {interval!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{what} must be positive and finite, got {interval!r}")
    if seconds > _MAX_INTERVAL:
        raise ValueError(f"{what} must be at most 100 years, got {interval!r}")
    return seconds


def _require(ok: object, key: str, rule: str, value: object) -> None:
    if not ok:
        raise ValueError(f"{key} must be {rule}, got {value!r}")


def _is_number(x: object) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _frames(tb: Any) -> tuple:
    """Where a traceback passed: (code, line) of each frame."""
    frames = []
    while tb is not None:
        frames.append((tb.tb_frame.f_code, tb.tb_lineno))
        tb = tb.tb_next
    return tuple(frames)


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


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _utc(wall: float | None) -> datetime | None:
    return None if wall is None else datetime.fromtimestamp(wall, timezone.utc)


def _iso(wall: float | None) -> str | None:
    return None if wall is None else _utc(wall).isoformat()


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


# ===========================================================================
# The deployment.  Everything above is what one process runs.  Below: how
# several processes, or hosts, agree on one runner, and share the jobs'
# state, behind one lease-and-state interface.  The scheduler calls it and
# never asks which implementation it has.
# ===========================================================================


class _Lease:
    """Who of several processes runs the jobs, and the state they share.

    A process takes the lease to become the runner, and releases it when
    it stops.  A lease with a ``ttl`` expires unless its holder renews it
    within that many seconds.  The runner saves the state; any process
    loads it: ``{"runner": {pid, host, since, alive} or None, "folded": t,
    "jobs": {name: row}}``, rows as `_Scheduler.row` makes them, times on
    the wall clock.  Runs made by hand beside the runner (`record`) are in
    the rows that `load` returns, and in the runner's history up to
    ``folded``.  A store that cannot be reached raises `_Outage`, having
    logged it.

    This class itself is ``TICKER_LOCK = False``: always held, and no state
    beyond the process, so every process runs the jobs.
    """

    shared = False  # whether there is state beyond this process
    blocks = False  # take(block=True) waits until the lease is free
    ttl: float | None = None
    where = "this process"
    log = logger

    def check(self) -> None:
        """Fail now, at start-up, on a setting that cannot work."""

    def take(self, block: bool) -> bool:
        return True

    def renew(self) -> bool:
        """Extend a held lease by its ``ttl``; False if it was lost."""
        return True

    def release(self) -> None:
        pass

    def forget(self) -> None:
        """In a forked child: let go of the parent's lease without releasing it."""

    def is_held(self) -> bool:
        """Whether some process holds the lease now."""
        return True

    def load(self) -> dict:
        return {"runner": None, "folded": 0.0, "jobs": {}}

    def save(self, state: dict) -> bool:
        """Write the state; False if this process had lost the lease."""
        return True

    def record(self, name: str, run: list) -> None:
        """Note a run made by hand, [started, duration, error], for the runner."""

    def runs(self, since: float) -> list[list]:
        """The runs recorded by hand since ``since``: [name, *run] each."""
        return []


class _Outage(ConnectionError):
    """The lease's store cannot be reached.  The lease has logged it, once
    for the whole outage, so whoever catches this need not."""


def _unusable(lease: _Lease, exc: BaseException) -> str:
    return f"TICKER_LOCK ({lease.where}) cannot be used: {type(exc).__name__}: {exc}"


# The state's first line names its version: a state another version wrote
# is ignored, not misread.  Then a line per job.
_STATE_VERSION = 2

# The row of a job that only runs by hand have made.
_NO_ROW = {
    "interval": None,
    "origin": None,
    "last_due": None,
    "last_run": None,
    "last_duration": None,
    "last_error": None,
    "runs": 0,
    "failures": 0,
    "skipped": 0,
    "next_due": None,
    "running": False,
    "paused": False,
}


def _encode_state(state: dict) -> list[str]:
    head = {"version": _STATE_VERSION, "runner": state["runner"], "folded": state["folded"]}
    rows = (json.dumps({"name": name, **row}) for name, row in state["jobs"].items())
    return [json.dumps(head), *rows]


def _decode_state(lines: Iterable[bytes | str], runs: list[list]) -> dict:
    """The state `_encode_state` wrote, with the runs by hand since.  Raises
    ValueError if it is damaged."""
    lines = iter(lines)
    state = _Lease().load()
    try:
        head = json.loads(next(lines, "{}"))
        if head.get("version") == _STATE_VERSION:
            state.update(runner=head["runner"], folded=float(head["folded"]))
            for line in lines:
                row = json.loads(line)
                state["jobs"][row.pop("name")] = row
                if row.keys() != _NO_ROW.keys():
                    raise ValueError(f"a damaged state: a row of other fields, {line!r}")
        if not isinstance(state["runner"], (dict, type(None))):
            raise ValueError(f"a damaged state: the runner is {state['runner']!r}")
        for name, started, duration, error in runs:
            if started > state["folded"]:
                row = state["jobs"].get(name) or _NO_ROW
                state["jobs"][name] = _with_run(row, started, duration, error)
    except (KeyError, TypeError, AttributeError) as exc:  # valid JSON, of another shape
        raise ValueError(f"a damaged state: {exc}") from None
    return state


class _UserLock(_Lease):
    """A lock object of the user's: ``acquire(blocking=False)``, ``release()``.
    It keeps no state, so each new runner starts its grids afresh.

    Some locks may be released only by the thread that acquired them (an
    RLock, a session's advisory lock), while the ticker may take the lease
    on one thread and release it on another: so a pool of one thread, its
    own, makes both calls.
    """

    def __init__(self, lock: Any) -> None:
        self.lock = lock
        self._thread = _Pool("flask-ticker-lock", 1)

    def take(self, block: bool) -> bool:
        acquire = functools.partial(self.lock.acquire, blocking=False)
        held = False
        try:
            held = bool(_in_pool(self._thread, "acquire", acquire).result())
        finally:
            if not held:
                self._retire()
        return held

    def release(self) -> None:
        try:
            _in_pool(self._thread, "release", self.lock.release).result()
        finally:
            self._retire()

    def _retire(self) -> None:
        # Its thread lives only while the lock is held.
        self._thread.close()
        self._thread = _Pool("flask-ticker-lock", 1)

    def forget(self) -> None:
        self._thread = _Pool("flask-ticker-lock", 1)  # the parent's stayed behind


class _LockFile(_Lease):
    """The default: a flock() lock file, and the state in a file beside it.

    The kernel drops a flock() lock when its process dies, so a crash never
    leaves a stale lock, and a process blocked on it takes over at once.
    Beside it, ``name.lock.state`` holds the state, and ``name.lock.runs``
    notes runs made by hand (flask ticker run) until the runner has taken
    them in.  A forked child shares its parent's open files, so it closes
    its copies (`forget`) rather than unlocking.
    """

    shared = blocks = True

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

    def is_held(self) -> bool:
        if self._held is not None:
            return True
        with open(self._open(self.path), "r+b", buffering=0) as file:
            try:
                fcntl.flock(file, fcntl.LOCK_SH | fcntl.LOCK_NB)
            except BlockingIOError:
                return True
            return False

    def load(self) -> dict:
        try:
            with open(self.path + ".state", "rb") as file:
                return _decode_state(file, self.runs(0.0))
        except FileNotFoundError:
            return _decode_state([], self.runs(0.0))
        except ValueError:
            self.log.warning("ignoring %s.state, which is damaged", self.path)
            return _Lease().load()

    def save(self, state: dict) -> bool:
        self._replace(".state", _encode_state(state))
        if state["folded"] and os.path.exists(self.path + ".runs"):
            # What is in the history now leaves the log.  A run recorded in
            # the moment between reading and replacing it is lost from the
            # history; runs by hand are rare enough for that.
            later = [json.dumps(run) for run in self.runs(state["folded"])]
            if later:
                self._replace(".runs", later)
            else:
                os.unlink(self.path + ".runs")
        return True

    def record(self, name: str, run: list) -> None:
        with open(self._open(self.path + ".runs", os.O_APPEND), "a", encoding="utf-8") as file:
            file.write(json.dumps([name, *run]) + "\n")

    def runs(self, since: float) -> list[list]:
        try:
            with open(self.path + ".runs", "rb") as file:
                return [run for run in map(json.loads, file) if run[1] > since]
        except FileNotFoundError:
            return []

    def _replace(self, suffix: str, lines: list[str]) -> None:
        # By rename, so that a reader never sees half a file.
        temp = f"{self.path}{suffix}.{os.getpid()}"
        try:
            with open(self._open(temp, os.O_TRUNC), "w", encoding="utf-8") as file:
                file.writelines(line + "\n" for line in lines)
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
    lost the lease can change neither it nor the state, which is that of
    `_LockFile`, in ``key:state`` and ``key:runs``.
    """

    shared = True
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
    # KEYS: the lease, state and runs; ARGV: the token, the state, folded.
    # The runs folded into the history are the oldest; later ones stay.
    _SAVE = """
        if redis.call('get', KEYS[1]) ~= ARGV[1] then return 0 end
        redis.call('set', KEYS[2], ARGV[2])
        local folded, n = tonumber(ARGV[3]), 0
        for _, run in ipairs(redis.call('lrange', KEYS[3], 0, -1)) do
            if cjson.decode(run)[2] > folded then break end
            n = n + 1
        end
        if n > 0 then redis.call('ltrim', KEYS[3], n, -1) end
        return 1"""

    def __init__(self, client: Any, key: str, ttl: float, where: str) -> None:
        import redis  # the setting was checked: see _lease()

        self.client, self.key, self.ttl, self.where = client, key, ttl, where
        self._keys = [key, f"{key}:state", f"{key}:runs"]
        self._ms = max(1, round(ttl * 1000))
        self._errors = (redis.RedisError, OSError)
        scripts = {"take": self._TAKE, "renew": self._RENEW, "release": self._RELEASE}
        scripts["save"] = self._SAVE
        self._scripts = {name: client.register_script(text) for name, text in scripts.items()}
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

    def _script(self, name: str, *args: Any) -> bool:
        keys = self._keys if name == "save" else self._keys[:1]
        return self._do(self._scripts[name], keys=keys, args=[self._token, *args]) == 1

    def take(self, block: bool) -> bool:
        return self._script("take", self._ms)

    def renew(self) -> bool:
        return self._script("renew", self._ms)

    def release(self) -> None:
        self._script("release")

    def forget(self) -> None:
        self._token = os.urandom(16).hex()  # the parent's stays the parent's

    def is_held(self) -> bool:
        return bool(self._do(self.client.exists, self.key))

    def load(self) -> dict:
        pipe = self.client.pipeline()
        pipe.get(self._keys[1])
        pipe.lrange(self._keys[2], 0, -1)
        state, runs = self._do(pipe.execute)
        try:
            return _decode_state((state or b"").splitlines(), [json.loads(run) for run in runs])
        except ValueError:
            self.log.warning("ignoring %s in Redis, which is damaged", self._keys[1])
            return _Lease().load()

    def save(self, state: dict) -> bool:
        return self._script("save", "\n".join(_encode_state(state)), repr(float(state["folded"])))

    def record(self, name: str, run: list) -> None:
        self._do(self.client.rpush, self._keys[2], json.dumps([name, *run]))

    def runs(self, since: float) -> list[list]:
        runs = map(json.loads, self._do(self.client.lrange, self._keys[2], 0, -1))
        return [run for run in runs if run[1] > since]


# The database's clock, in ms.  clock_timestamp(), not now(), which is the
# time the transaction began; UTC_TIMESTAMP, which no session time zone
# (and none of its DST hours) shifts, unlike UNIX_TIMESTAMP(NOW()).
_SQL_NOW = {
    "postgresql": "CAST(EXTRACT(EPOCH FROM clock_timestamp()) * 1000 AS BIGINT)",
    "mysql": "(TIMESTAMPDIFF(MICROSECOND, '1970-01-01', UTC_TIMESTAMP(6)) DIV 1000)",
    "sqlite": "CAST((julianday('now') - 2440587.5) * 86400000 AS INTEGER)",
}
_SQL = {
    # Where the lease is taken, this process may hold it still: after a
    # lapse of its own, it need not wait out its own TTL.
    "take": """UPDATE flask_ticker_lease SET token = :token, holder = :holder,
        expires = {now} + :ttl WHERE name = :name
        AND (token IS NULL OR token = :token OR expires < {now})""",
    "renew": """UPDATE flask_ticker_lease SET expires = {now} + :ttl
        WHERE name = :name AND token = :token AND expires >= {now}""",
    "release": """UPDATE flask_ticker_lease SET token = NULL, holder = NULL, expires = 0
        WHERE name = :name AND token = :token""",
    "save": """UPDATE flask_ticker_lease SET state = :state
        WHERE name = :name AND token = :token AND expires >= {now}""",
    "held": """SELECT COUNT(*) FROM flask_ticker_lease
        WHERE name = :name AND token IS NOT NULL AND expires >= {now}""",
    # The state, then the runs by hand: one statement, so one snapshot.
    "load": """SELECT state, 0 AS id FROM flask_ticker_lease WHERE name = :name
        UNION ALL SELECT run, id FROM flask_ticker_runs WHERE name = :name ORDER BY id""",
    "make": "INSERT INTO flask_ticker_lease (name, expires) VALUES (:name, 0)",
    # Changes nothing, so it counts the row only if the driver counts the
    # rows matched, not those changed: else a take would look lost when it
    # was won (Oban #1250).
    "touch": "UPDATE flask_ticker_lease SET expires = expires WHERE name = :name",
    "runs": """SELECT run FROM flask_ticker_runs WHERE name = :name AND started > :since
        ORDER BY id""",
    "record": """INSERT INTO flask_ticker_runs (name, started, run)
        VALUES (:name, :started, :run)""",
    "fold": "DELETE FROM flask_ticker_runs WHERE name = :name AND started <= :since",
}


class _SqlLease(_Lease):
    """``TICKER_LOCK = "postgresql://..."`` (also MySQL, MariaDB and SQLite),
    or an SQLAlchemy Engine: a lease in the app's own database, judged by
    the database's clock alone, never the hosts'.

    The lease is a row of ``flask_ticker_lease``, named ``key``: who holds
    it, their random token, and when it expires, in milliseconds of the
    database's clock.  Each call is a transaction whose one statement on
    that row compares the token and the time, so that a process that lost
    the lease can change neither it nor the state, kept in the same row.  Runs made by hand are rows of
    ``flask_ticker_runs``.  No advisory locks: they belong to a connection,
    which a pooler (pgbouncer) may give to another client.
    """

    shared = True

    def __init__(self, engine: Any, key: str, ttl: float, where: str) -> None:
        import sqlalchemy as sa  # the setting was checked: see _lease()

        self.engine, self.key, self.ttl, self.where = engine, key, ttl, where
        self._sa = sa
        self._ms = max(1, round(ttl * 1000))
        self._errors = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError)
        dialect = "mysql" if engine.dialect.name == "mariadb" else engine.dialect.name
        if dialect not in _SQL_NOW:
            raise ValueError(
                "TICKER_LOCK must be a PostgreSQL, MySQL, MariaDB or SQLite database,"
                f" got {where!r}"
            )
        now = _SQL_NOW[dialect]
        self._sql = {name: sa.text(sql.format(now=now)) for name, sql in _SQL.items()}
        state_type = sa.Text()
        if dialect == "mysql":  # where TEXT holds only 64 KiB
            from sqlalchemy.dialects.mysql import LONGTEXT

            state_type = LONGTEXT()
        tables = sa.MetaData()
        lease = sa.Table(
            "flask_ticker_lease",
            tables,
            sa.Column("name", sa.String(190), primary_key=True),
            sa.Column("holder", sa.String(190)),
            sa.Column("token", sa.String(32)),
            sa.Column("expires", sa.BigInteger, nullable=False),
            sa.Column("state", state_type),
        )
        runs = sa.Table(
            "flask_ticker_runs",
            tables,
            sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
            sa.Column("name", sa.String(190), nullable=False, index=True),
            sa.Column("started", sa.Double, nullable=False),  # FLOAT is 4 bytes on MySQL
            sa.Column("run", sa.Text, nullable=False),
        )
        # In the order they are made: where the lease's table is, so is the other.
        self._tables = (runs, lease)
        self._row_found = False  # there, and counted as it should be: see _call
        self._token = os.urandom(16).hex()
        self._down = False  # whether the last call failed: outages are logged once

    def _miscount_error(self) -> RuntimeError:
        return RuntimeError(
            f"TICKER_LOCK ({self.where}): the driver counts the rows an UPDATE"
            " changed, not those it matched; use one of SQLAlchemy's own dialects,"
            " which count matched rows (CLIENT_FOUND_ROWS)"
        )

    def _call(self, work: Callable[[Any], Any]) -> Any:
        """``work(conn)`` in a transaction.  Until one has found the lease's
        row, counted as it should be (see "touch"), each call looks for it
        first, in the same transaction; where it is missing, it is made, with
        the tables if need be, and the call is tried again."""
        sa, key, tables = self._sa, {"name": self.key}, ()
        for tries_left in (2, 1, 0):
            try:
                with self.engine.begin() as conn:
                    found = self._row_found or conn.execute(self._sql["touch"], key).rowcount == 1
                    if found:
                        result = work(conn)
            except sa.exc.DBAPIError as exc:
                # SQLite says "no such table" as it says "cannot connect".
                missing = not isinstance(exc, self._errors) or "no such table" in str(exc)
                if self._row_found or not tries_left or not missing:
                    raise
                found, tables = False, self._tables
            if found:
                self._row_found = True
                return result
            if not tries_left:  # made, or there, and still not counted
                raise self._miscount_error()
            self._make_row(tables)
        raise AssertionError("unreachable: the last try returns or raises")

    def _make_row(self, tables: tuple) -> None:
        # With the tables it needs first.  Each in a transaction of its own,
        # so that processes that start together wait for each other but never
        # deadlock (a MySQL UPDATE that matched no row holds a gap lock that
        # an INSERT would wait on).  Another process may make each meanwhile:
        # then this one fails, and the next try finds it.
        sa = self._sa
        for table in tables:
            with contextlib.suppress(sa.exc.DBAPIError), self.engine.begin() as conn:
                table.create(conn, checkfirst=True)
        with contextlib.suppress(sa.exc.IntegrityError), self.engine.begin() as conn:
            conn.execute(self._sql["make"], {"name": self.key})

    def _do(self, work: Callable[[Any], Any]) -> Any:
        try:
            result = self._call(work)
        except self._errors as exc:
            cause = getattr(exc, "orig", None) or exc  # a pool timeout has no driver error
            why = f"{type(cause).__name__}: {str(cause).strip()}"
            password = self.engine.url.password
            why = why.replace(password, "***") if password else why
            if not self._down:
                self._down = True
                self.log.warning(
                    "the database at %s (TICKER_LOCK) cannot be used (%s); no job starts"
                    " until it can",
                    self.where,
                    why,
                )
            raise _Outage(
                f"the database at {self.where} (TICKER_LOCK) cannot be used: {why}"
            ) from None
        if self._down:
            self._down = False
            self.log.info("the database at %s (TICKER_LOCK) can be used again", self.where)
        return result

    def _query(self, statement: str, read: Callable[[Any], Any], /, **params: Any) -> Any:
        """What ``read`` takes from the result of ``_SQL[statement]``, executed
        for this lease's row and token."""
        params |= {"name": self.key, "token": self._token}
        return self._do(lambda conn: read(conn.execute(self._sql[statement], params)))

    def _update(self, statement: str, **params: Any) -> bool:
        return self._query(statement, lambda result: result.rowcount == 1, **params)

    def take(self, block: bool) -> bool:
        return self._update("take", holder=f"{socket.gethostname()}:{os.getpid()}", ttl=self._ms)

    def renew(self) -> bool:
        return self._update("renew", ttl=self._ms)

    def release(self) -> None:
        self._update("release")

    def forget(self) -> None:
        self._token = os.urandom(16).hex()  # the parent's stays the parent's
        self.engine.dispose(close=False)  # and so do its connections

    def is_held(self) -> bool:
        return bool(self._query("held", lambda result: result.scalar()))

    def load(self) -> dict:
        state, runs = "", []
        for text, row_id in self._query("load", lambda result: result.all()):
            if row_id == 0:  # the lease's row
                state = text or ""
            else:
                runs.append(json.loads(text))
        try:
            return _decode_state(state.splitlines(), runs)
        except ValueError:
            self.log.warning(
                "ignoring the state of %s in the database, which is damaged", self.key
            )
            return _Lease().load()

    def save(self, state: dict) -> bool:
        text = "\n".join(_encode_state(state))
        params = {"name": self.key, "token": self._token, "state": text, "since": state["folded"]}

        def write(conn: Any) -> bool:
            if conn.execute(self._sql["save"], params).rowcount != 1:
                return False
            conn.execute(self._sql["fold"], params)
            return True

        return self._do(write)

    def record(self, name: str, run: list) -> None:
        text = json.dumps([name, *run])
        self._query("record", lambda result: None, started=run[0], run=text)

    def runs(self, since: float) -> list[list]:
        runs = self._query("runs", lambda result: result.scalars().all(), since=since)
        return [json.loads(run) for run in runs]


def _sql_engine(url: str, ttl: float) -> Any:
    try:
        import sqlalchemy as sa
    except ImportError:
        raise ImportError(
            "TICKER_LOCK is a database URL, which needs SQLAlchemy:"
            " pip install 'flask-ticker[sql]'"
        ) from None
    try:
        parsed = sa.engine.make_url(url)
    except (sa.exc.ArgumentError, ValueError):  # whose reasons may quote the password
        raise ValueError(
            "TICKER_LOCK must be a database URL such as"
            f" postgresql://user:password@host/db, got {_redact(url)!r}"
        ) from None
    backend = parsed.get_backend_name()
    if backend == "sqlite" and parsed.database in (None, "", ":memory:"):
        raise ValueError(
            "TICKER_LOCK must name an SQLite file, sqlite:///path/to/file.db, got"
            f" {_redact(url)!r}: an in-memory database is this process's alone"
        )
    # Its own small pool, never the app's sessions.  A call that hangs would
    # hold up renewals and stop(), so calls time out, in whole seconds as
    # drivers take them.  PostgreSQL's drivers have no read timeout: TCP
    # keepalives find a database host that is gone, not one that hangs.
    seconds = max(2, round(min(5.0, ttl / 3)))
    if backend == "sqlite":
        options = {"timeout": seconds}  # for another process's write
    elif backend == "postgresql":
        options = {"connect_timeout": seconds, "keepalives_idle": seconds}
        options |= {"keepalives_interval": 1, "keepalives_count": 3}
    else:  # MySQL, MariaDB
        options = {"connect_timeout": seconds, "read_timeout": seconds, "write_timeout": seconds}
    return sa.create_engine(
        parsed,
        pool_size=1,
        max_overflow=1,  # a status page beside the thread
        pool_timeout=5,
        pool_pre_ping=True,
        connect_args=options,
    )


def _lease(lock: Any, key: str, ttl: float, log: logging.Logger) -> _Lease:
    """The lease that ``TICKER_LOCK`` names."""
    if lock is False or lock is None:
        return _Lease()
    if isinstance(lock, str) and "://" in lock:  # never a path: a typo must not become one
        scheme = lock.partition("://")[0].lower()
        if scheme in ("redis", "rediss", "unix"):
            return _RedisLease(_redis_client(lock, ttl), key, ttl, _redact(lock))
        if scheme.partition("+")[0] in ("postgresql", "mysql", "mariadb", "sqlite"):
            return _SqlLease(_sql_engine(lock, ttl), key, ttl, _redact(lock))
        raise ValueError(
            "TICKER_LOCK must be a path, a redis://, rediss:// or unix:// URL, or a"
            f" postgresql://, mysql://, mariadb:// or sqlite:/// URL, got {_redact(lock)!r}"
        )
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
            return _Lease()
        return _LockFile(os.fspath(lock))
    if callable(getattr(lock, "register_script", None)):  # a redis-py client
        return _RedisLease(lock, key, ttl, _redis_where(lock, log))
    if type(lock).__module__.startswith("sqlalchemy") and hasattr(lock, "dialect"):  # an Engine
        return _SqlLease(lock, key, ttl, lock.url.render_as_string(hide_password=True))
    if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
        return _UserLock(lock)
    raise TypeError(
        "TICKER_LOCK must be a path, a Redis URL, False, or an object with"
        f" acquire(blocking=False) and release(), got {lock!r}"
    )


def _redis_client(url: str, ttl: float) -> Any:
    try:
        import redis
    except ImportError:
        raise ImportError(
            "TICKER_LOCK is a Redis URL, which needs redis-py: pip install 'flask-ticker[redis]'"
        ) from None
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


def _runner() -> dict:
    return {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": datetime.now(timezone.utc).isoformat(),
    }
