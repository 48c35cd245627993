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

Each run happens in a fresh app context on a small pool of daemon threads.
Runs follow a fixed-rate grid on ``time.monotonic()``: they do not drift,
do not overlap, and runs missed while the process slept coalesce into one.
A failing run is logged (logger ``flask_ticker``) with its traceback, or in
one line if it failed the same way last time, and the job keeps its
schedule.  ``ticker.stop()`` runs at interpreter exit and waits up to
``TICKER_SHUTDOWN_TIMEOUT`` for work already started.

Several processes serving one app (gunicorn workers) share a lock file in
the instance folder, and only its holder runs the jobs; if it dies, another
takes over and continues the same grid.

Limits: jobs live in memory.  There is no cron syntax, no persistence across
restarts and no retry; a run that throws waits for its next tick.  A ticker
serves one app at a time.
"""
# SPDX-License-Identifier: MIT
from __future__ import annotations

import atexit
import collections
import contextlib
import functools
import heapq
import itertools
import json
import logging
import math
import os
import queue
import re
import sys
import threading
import time
import weakref
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta, timezone
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Callable, TypeVar

import click
from flask import Flask, current_app, has_app_context
from flask.cli import run_command
from flask.helpers import get_debug_flag

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]

if TYPE_CHECKING:
    from concurrent.futures import Future

__version__ = "0.1.0"
__all__ = ["Ticker", "Job", "run_in_background"]

logger = logging.getLogger("flask_ticker")

F = TypeVar("F", bound=Callable[..., Any])

# Shared by the jobs without kwargs: an app may register thousands of jobs.
_NO_KWARGS: Mapping[str, Any] = MappingProxyType({})


def _readonly(attr: str, doc: str) -> property:
    return property(lambda self: getattr(self, attr), doc=doc)


# Tickers to stop at interpreter exit; weak, so that apps a test suite
# drops are not kept alive by this module.
_tickers: weakref.WeakSet[Ticker] = weakref.WeakSet()


class Job:
    """One function on a fixed-rate schedule; returned by `Ticker.every`.

    The k-th run is due at ``first_due + k * interval``.  Read the
    attributes for its state; change it with `pause`, `resume`, `cancel`.
    """

    # Slots: an app may register thousands of jobs.
    __slots__ = ("_ticker", "_func", "_args", "_kwargs", "_name", "_interval", "_run_now",
                 "_runs", "_failures", "_skipped", "_last_run", "_last_duration",
                 "_last_error", "_paused", "_running", "_origin", "_index", "_due", "_seq",
                 "_lagging", "_failing")

    def __init__(self, ticker: Ticker, func: Callable[..., Any], interval: float,
                 name: str, run_now: bool, args: tuple, kwargs: Mapping[str, Any]) -> None:
        self._ticker = ticker
        self._func, self._args, self._kwargs = func, args, kwargs
        self._name = name
        self._interval = interval
        self._run_now = run_now
        self._runs = self._failures = self._skipped = 0
        self._last_run: datetime | None = None
        self._last_duration: float | None = None
        self._last_error: str | None = None
        self._paused = False
        self._running = False
        # Scheduler state, guarded by the ticker's lock: the grid's origin
        # and index, and the sequence number of this job's live heap entry.
        self._origin: float | None = None  # set when planned
        self._index = 0
        self._due: float | None = None
        self._seq: int | None = None
        self._lagging = False  # warned about this streak of lapses already
        # (how it failed, how many times in a row), while it keeps failing
        # the same way: its traceback has been logged once already.
        self._failing: tuple[tuple, int] | None = None

    name = _readonly("_name", "Unique within its ticker.")
    interval = _readonly("_interval", "Seconds between due times, a float.")
    runs = _readonly("_runs", "Runs finished, failed or not.")
    failures = _readonly("_failures", "Runs that raised.")
    skipped = _readonly("_skipped", "Due times passed over: the previous run was"
                        " still going, or the process was not scheduled.")
    last_run = _readonly("_last_run", "When the last run started, in UTC.")
    last_duration = _readonly("_last_duration", "How long the last run took, in seconds.")
    last_error = _readonly("_last_error", "'Type: message' of the last failure, or None.")
    running = _readonly("_running", "Whether a run is queued or in progress.")
    paused = _readonly("_paused", "Whether `pause` holds it.")

    @property
    def next_run(self) -> datetime | None:
        """When the next run is due, in UTC; None while paused, stopped, or
        not planned in this process (another holds the lock)."""
        due = self._due
        if due is None:
            return None
        return datetime.now(timezone.utc) + timedelta(seconds=due - self._ticker._clock())

    def pause(self) -> None:
        """Stop starting runs until `resume`; a run in progress finishes."""
        with self._ticker._lock:
            self._paused = True
            self._ticker._unschedule(self)

    def resume(self) -> None:
        """Start runs again, on the same grid: the next due tick, not now."""
        ticker = self._ticker
        with ticker._lock:
            if not self._paused:
                return
            self._paused = False
            if ticker._holding and self._origin is not None \
                    and ticker._jobs.get(self.name) is self:
                ahead = math.ceil((ticker._clock() - self._origin) / self._interval)
                ticker._schedule(self, max(ahead, self._index))
                ticker._wakeup.set()

    def cancel(self) -> None:
        """Remove the job from its ticker; a run in progress finishes."""
        ticker = self._ticker
        with ticker._lock:
            if ticker._jobs.get(self.name) is self:
                del ticker._jobs[self.name]
                ticker._unschedule(self)

    def run(self) -> Any:
        """Run once now in this thread, inside the app context.

        Counts in the stats like a scheduled run, returns what the function
        returns and raises what it raises.  Meant for tests and one-offs.
        """
        with self._ticker._lock:
            if self._running:
                raise RuntimeError(f"job {self.name!r} is already running")
            self._running = True
        try:
            return self._call()
        finally:
            self._release()

    def _call(self) -> Any:
        app = self._ticker.app
        if app is None:
            raise RuntimeError(
                f"job {self.name!r} cannot run: no Flask app is bound to its ticker;"
                " pass the app to Ticker(app) or call ticker.init_app(app)")
        clock = self._ticker._clock
        started = clock()
        self._last_run = datetime.now(timezone.utc)
        try:
            with app.app_context():
                return self._func(*self._args, **self._kwargs)
        except BaseException as exc:
            self._failures += 1
            self._last_error = f"{type(exc).__name__}: {exc}"
            raise
        finally:
            self._runs += 1
            self._last_duration = clock() - started

    def _run_scheduled(self) -> None:
        try:
            self._call()
        except BaseException as exc:
            self._log_failure(exc)
        else:
            if self._failing is not None:
                logger.info("job %r succeeded again after %d failed run(s) in a row",
                            self.name, self._failing[1])
                self._failing = None
        finally:
            if (self._last_duration or 0.0) < self._interval:
                self._lagging = False  # it keeps up again: warn at the next lapse
            self._running = False

    def _log_failure(self, exc: BaseException) -> None:
        # Every failure is logged, but a job that fails the same way run
        # after run (a database that is down) must not fill the log with
        # copies of one traceback: repeats take a line each.
        how = (self._last_error, _frames(exc.__traceback__))
        if self._failing is not None and self._failing[0] == how:
            self._failing = (how, self._failing[1] + 1)
            logger.error("job %r failed again, %d times in a row, with the error and"
                         " traceback logged before: %s", self.name, self._failing[1],
                         self._last_error)
        else:
            self._failing = (how, 1)
            logger.error("job %r failed; it keeps its schedule", self.name, exc_info=exc)

    def _release(self) -> None:
        self._running = False

    def __repr__(self) -> str:
        due = self._due
        when = "paused" if self._paused else "not scheduled" if due is None else \
            f"next in {_seconds(max(0.0, due - self._ticker._clock()))}"
        return (f"<Job {self.name!r} every {_seconds(self.interval)}, {when},"
                f" runs={self.runs} failures={self.failures} skipped={self.skipped}>")


class Ticker:
    """Runs `Job` s on one daemon thread for one Flask app.

    ``Ticker(app)`` or ``Ticker()`` then ``init_app(app)``.  ``clock`` is
    the monotonic time source, in seconds; tests pass a fake one.
    """

    def __init__(self, app: Flask | None = None, *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        self.app: Flask | None = None
        self._clock = clock
        self._jobs: dict[str, Job] = {}
        self._seqs = itertools.count()
        self._max_workers = 4
        self._shutdown_timeout: float | None = 10.0
        self._runner: Any = None  # the TICKER_LOCK, or None to run unlocked
        self._retry = 5.0
        self._served = False   # this process has handled a request
        self._forking = False  # it handed its jobs to the children it forks
        self._reset()
        if app is not None:
            self.init_app(app)

    def _reset(self) -> None:
        # The state a forked child must build anew: its parent's threads are
        # gone, and may have held these locks at the moment of the fork.
        #
        # Guards the jobs, the heap and every job's scheduler state.  No
        # user code runs while it is held.
        self._lock = threading.Lock()
        self._pid = os.getpid()
        self._heap: list[tuple[float, int, Job]] = []
        self._wakeup = threading.Event()
        self._thread: threading.Thread | None = None
        self._holding = False  # of the runner lock
        self._unplanned: list[Job] = []  # jobs added since it was taken
        self._job_pool = _Pool("flask-ticker-job", self._max_workers)
        self._task_pool = _Pool("flask-ticker-task", self._max_workers)
        for job in self._jobs.values():
            job._running = False
            self._unschedule(job)
        # A ticker dropped without stop() (a test that made many apps) must
        # not leave its threads behind.  Not at exit: atexit stops it then.
        weakref.finalize(self, _abandon, self._wakeup, self._job_pool,
                         self._task_pool).atexit = False

    def init_app(self, app: Flask) -> None:
        """Bind the ticker to ``app`` and, unless disabled, start it.

        Reads these keys from ``app.config`` (set them before this call):

        - ``TICKER_ENABLED`` (True): start automatically in the process that
          serves the app.  False registers jobs without running them.
        - ``TICKER_MAX_WORKERS`` (4): threads that run jobs at once, and
          threads that run background tasks at once.
        - ``TICKER_SHUTDOWN_TIMEOUT`` (10): seconds `stop` waits at exit for
          running jobs and background tasks.
        - ``TICKER_LOCK`` (a file in the instance folder): what makes one
          process of several run the jobs: a path, False for no lock, or an
          object with ``acquire(blocking=False) -> bool`` and ``release()``.
        - ``TICKER_LOCK_RETRY`` (5): seconds between a waiting process's
          attempts to take the lock.

        Binding another app moves the ticker: it stops serving the first.
        """
        other = app.extensions.get("ticker")
        if other is self:
            return
        if other is not None:
            raise RuntimeError(
                "A 'Ticker' instance has already been registered on this Flask app."
                " Import and use that instance instead.")
        config = app.config
        config.setdefault("TICKER_ENABLED", True)
        workers = config.setdefault("TICKER_MAX_WORKERS", 4)
        timeout = config.setdefault("TICKER_SHUTDOWN_TIMEOUT", 10.0)
        lock = config.setdefault("TICKER_LOCK", os.path.join(
            app.instance_path, f"flask_ticker-{_safe_name(app.name)}.lock"))
        retry = config.setdefault("TICKER_LOCK_RETRY", 5.0)
        if isinstance(workers, bool) or not isinstance(workers, int) or workers < 1:
            raise ValueError(f"TICKER_MAX_WORKERS must be an int >= 1, got {workers!r}")
        if not (timeout is None or _is_number(timeout) and timeout >= 0):
            raise ValueError(f"TICKER_SHUTDOWN_TIMEOUT must be seconds >= 0 or None,"
                             f" got {timeout!r}")
        if not (_is_number(retry) and retry > 0):
            raise ValueError(f"TICKER_LOCK_RETRY must be seconds > 0, got {retry!r}")
        runner = _runner_lock(lock)
        if self.app is not None:
            self.stop(self._shutdown_timeout)
        self._max_workers = self._job_pool.max_workers = self._task_pool.max_workers = workers
        self._job_pool.reopen()
        self._task_pool.reopen()
        self._shutdown_timeout, self._runner, self._retry = timeout, runner, retry
        self._served = False
        app.extensions["ticker"] = self
        app.before_request(self._note_request)
        self.app = app
        _tickers.add(self)
        if config["TICKER_ENABLED"]:
            self._start_when_serving(app)

    # -- registering jobs --

    def every(self, interval: float | timedelta, func: Callable[..., Any] | None = None, *,
              name: str | None = None, run_now: bool = True,
              args: Sequence[Any] = (), kwargs: Mapping[str, Any] | None = None) -> Any:
        """Run ``func`` every ``interval`` seconds (a number or a timedelta).

        With ``run_now`` the first run is due when the ticker starts (or at
        once, if it has started), else one interval later.  ``name``
        defaults to the function's qualified name and is unique per ticker.
        Returns the `Job`; without ``func``, a decorator that registers the
        function and returns it unchanged.
        """
        label = name if name is not None or func is None else _name(func)
        seconds = _check_interval(interval, label)
        if func is None:
            def register(f: F) -> F:
                self.every(seconds, f, name=name, run_now=run_now, args=args, kwargs=kwargs)
                return f
            return register
        if not callable(func):
            raise TypeError(f"every(): func for job {name!r} must be callable, got {func!r}")
        name = _name(func) if name is None else name
        if not isinstance(name, str) or not name:
            raise TypeError(f"every(): name must be a non-empty str, got {name!r}")
        if not isinstance(args, tuple) and (  # the usual case, without an ABC check
                isinstance(args, (str, bytes)) or not isinstance(args, Sequence)):
            raise TypeError(f"every(): args for job {name!r} must be a tuple, got {args!r}")
        if kwargs is not None and not isinstance(kwargs, Mapping):
            raise TypeError(f"every(): kwargs for job {name!r} must be a dict, got {kwargs!r}")
        job = Job(self, func, seconds, name, bool(run_now), tuple(args),
                  dict(kwargs) if kwargs else _NO_KWARGS)
        with self._lock:
            if name in self._jobs:
                raise ValueError(
                    f"every(): a job named {name!r} is already registered on this ticker;"
                    " pass name= to register another")
            self._jobs[name] = job
            if self._holding:
                # The scheduler plans it, with any others added meanwhile:
                # one pass over the lock file's state for a thousand jobs
                # registered after start, not a thousand.
                self._unplanned.append(job)
                self._wakeup.set()
        return job

    @property
    def jobs(self) -> list[Job]:
        """The registered jobs, in registration order."""
        with self._lock:
            return list(self._jobs.values())

    def get(self, name: str) -> Job | None:
        """The job called ``name``, or None."""
        return self._jobs.get(name)

    # -- starting and stopping --

    @property
    def running(self) -> bool:
        """Whether the scheduler thread is running (holding the lock or not)."""
        return self._thread is not None

    def start(self) -> None:
        """Start the scheduler thread.  Once this process holds the lock,
        jobs with ``run_now`` run at once.  Idempotent; a stopped ticker can
        be started again.
        """
        self._check_pid()
        with self._lock:
            if self._thread is not None:
                return
            if self.app is None:
                raise RuntimeError("Ticker.start() needs an app: pass it to Ticker(app)"
                                   " or call ticker.init_app(app) first")
            self._job_pool.reopen()
            self._task_pool.reopen()
            if _uwsgi_without_threads():
                logger.warning("uWSGI runs without --enable-threads, so the ticker"
                               " cannot run: add --enable-threads to the uwsgi command")
                return
            if isinstance(self._runner, _LockFile):
                self._runner.join()
            self._start_due()  # here: run_now jobs need not wait for the new thread
            self._thread = threading.Thread(
                target=_loop, args=(weakref.ref(self), self._wakeup),
                name="flask-ticker", daemon=True)
            self._thread.start()

    def stop(self, timeout: float | None = None) -> bool:
        """Stop starting runs and wait up to ``timeout`` seconds (None: no
        limit) for running jobs and background tasks already accepted, then
        release the lock.

        Returns True if all finished.  Otherwise logs what did not, by name;
        tasks that had not started by then never will.  Idempotent.
        """
        finished = self._halt(timeout)
        if isinstance(self._runner, _LockFile):
            self._runner.leave()
        return finished

    def _halt(self, timeout: float | None) -> bool:
        self._check_pid()
        with self._lock:
            thread, self._thread = self._thread, None
            for job in self._jobs.values():
                self._unschedule(job)
            self._heap.clear()
        self._wakeup.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join()  # prompt: the loop never runs user code
        deadline = None if timeout is None else time.monotonic() + timeout
        unfinished = [f"job {n!r}" for n in self._job_pool.shutdown(deadline)]
        unfinished += [f"task {n!r}" for n in self._task_pool.shutdown(deadline)]
        if unfinished:
            logger.error("ticker stopped after %ss with work unfinished: %s",
                         timeout, ", ".join(unfinished))
        if self._holding:
            self._holding = False
            if self._runner is not None:
                self._runner.release()
        return not unfinished

    def _note_request(self) -> None:
        self._served = True

    def _forked(self, child: bool) -> None:
        # A preforking master (gunicorn --preload) loads the app, then forks
        # workers and serves nothing itself, and threads do not survive a
        # fork: it hands the jobs to its children.
        # It stays a member of the deployment, so the child that takes the
        # lock continues the grid instead of starting it again.  Any other
        # fork (multiprocessing) leaves the jobs where they are.
        hand_over = self._forking or (
            self._thread is not None and not self._served and _preforking_server())
        if not child:
            if hand_over and not self._forking:
                self._forking = True
                threading.Thread(target=self._halt, args=(None,), daemon=True,
                                 name="flask-ticker-handover").start()
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
        if isinstance(self._runner, _LockFile):
            self._runner.forget()
        self._reset()

    def _start_when_serving(self, app: Flask) -> None:
        # Start only in the process that serves requests: never in the
        # reloader's watcher, nor in a one-off CLI command like a migration.
        if os.environ.get("WERKZEUG_RUN_MAIN") == "true":
            self.start()  # the reloader's serving child
        elif os.environ.get("FLASK_RUN_FROM_CLI") == "true":
            ctx = click.get_current_context(silent=True)
            if ctx is not None and ctx.command is run_command:
                reload = ctx.params.get("reload")
                if not (get_debug_flag() if reload is None else reload):
                    self.start()
        elif app.import_name != "__main__":
            self.start()
        # app.run(debug=True) turns the reloader on after this point, so the
        # run() of a script's own app decides for itself.
        run = app.run

        @functools.wraps(run)
        def run_and_start(*args: Any, **kwargs: Any) -> Any:
            if self.app is app and os.environ.get("FLASK_RUN_FROM_CLI") != "true" \
                    and os.environ.get("WERKZEUG_RUN_MAIN") != "true":
                if not _uses_reloader(app, args, kwargs):
                    self.start()
                elif self.running:
                    self.stop(0)
                    logger.warning(
                        "jobs ran in the reloader's watcher process before app.run()"
                        " turned the reloader on; create the app in the script that"
                        " calls app.run(), or use 'flask run --debug'")
            return run(*args, **kwargs)

        app.run = run_and_start  # type: ignore[method-assign]

    # -- the scheduler, under self._lock --

    def _plan(self, jobs: list[Job], now: float) -> None:
        """Put jobs on their grids: new ones from now, and those this
        deployment already runs (another process had the lock) where they are.
        """
        wall = time.time()
        known = {}
        if isinstance(self._runner, _LockFile):
            new = collections.defaultdict(list)
            for job in jobs:
                new[job.interval, wall if job._run_now else wall + job.interval].append(job.name)
            known = self._runner.shared_origins(new)
        for job in jobs:
            if job.name in known:
                job._origin = known[job.name] - wall + now
                index = max(0, math.floor((now - job._origin) / job.interval) + 1)
            else:
                job._origin = now if job._run_now else now + job.interval
                index = 0
            job._index = index
            if not job._paused:
                self._schedule(job, index)

    def _schedule(self, job: Job, index: int) -> None:
        job._index = index
        # At index 0 the origin itself, not an equal float: one object less
        # per job, for apps that have thousands.
        job._due = job._origin + index * job.interval if index else job._origin
        job._seq = next(self._seqs)
        heapq.heappush(self._heap, (job._due, job._seq, job))

    def _unschedule(self, job: Job) -> None:
        # Its heap entry stays, but no longer matches; _run_due drops it.
        job._due = job._seq = None

    def _run_due(self) -> float | None:
        with self._lock:
            if self._thread is not threading.current_thread():
                return None  # stop() came first; the loop sees it next
            return self._start_due()

    def _start_due(self) -> float | None:
        """Start the jobs that are due; return the seconds until the next."""
        now = self._clock()
        if not self._holding and not self._take_lock(now):
            return self._retry
        if self._unplanned:
            jobs = [job for job in self._unplanned if self._jobs.get(job.name) is job]
            if self._plan_or_log(jobs, now):
                self._unplanned = []
        heap = self._heap
        while heap and heap[0][0] <= now:
            due, seq, job = heapq.heappop(heap)
            if seq != job._seq:
                continue
            behind = int((now - due) // job.interval)  # ticks missed already
            if job.running:
                job._skipped += behind + 1
                self._lag(job, "is still running at its next due time;"
                               " skipping runs until it finishes")
            else:
                if behind:
                    job._skipped += behind
                    self._lag(job, f"was {behind} run(s) behind (was the process"
                                   " suspended?); running it once now")
                job._running = True
                self._job_pool.submit(job.name, job._run_scheduled, job._release)
            index = job._index + behind + 1
            while job._origin + index * job.interval <= now:  # float rounding
                index += 1
            self._schedule(job, index)
        delay = heap[0][0] - now if heap else None
        if self._unplanned:  # planning them failed: try again then
            delay = self._retry if delay is None else min(delay, self._retry)
        return delay

    def _take_lock(self, now: float) -> bool:
        runner = self._runner
        try:
            if runner is not None and not runner.acquire(blocking=False):
                return False
        except Exception:
            logger.exception("cannot take TICKER_LOCK; trying again in %ss", self._retry)
            return False
        if not self._plan_or_log(list(self._jobs.values()), now):
            if runner is not None:
                runner.release()
            return False
        self._unplanned = []
        self._holding = True
        logger.info("process %d runs the jobs", os.getpid())
        return True

    def _plan_or_log(self, jobs: list[Job], now: float) -> bool:
        try:
            self._plan(jobs, now)
        except Exception:
            logger.exception("cannot read the jobs' schedule beside TICKER_LOCK;"
                             " trying again in %ss", self._retry)
            return False
        return True

    def _lag(self, job: Job, why: str) -> None:
        # Once per streak: a job that overruns every tick must not flood the
        # log.  The streak ends when a run takes less than the interval.
        if not job._lagging:
            job._lagging = True
            logger.warning("job %r %s", job.name, why)


def run_in_background(func: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future:
    """Run ``func(*args, **kwargs)`` on the current app's ticker pool.

    Call it inside an app context (a view, a CLI command, a job): the task
    runs in a fresh app context of the same app, never the request context,
    which is gone by then.  A failing task is logged with its traceback and
    its exception is set on the returned Future.  At shutdown, accepted
    tasks finish, up to ``TICKER_SHUTDOWN_TIMEOUT``.
    """
    if not callable(func):
        raise TypeError(f"run_in_background(): func must be callable, got {func!r}")
    ticker = current_app.extensions.get("ticker") if has_app_context() else None
    if ticker is None:
        raise RuntimeError(
            "run_in_background() needs an app context of an app with a Ticker:"
            " call it in a view or a job, or inside 'with app.app_context():'")
    name = _name(func)
    app = current_app._get_current_object()  # type: ignore[attr-defined]

    # Imported here: it costs more than this whole module, and jobs and
    # processes that run no task (a CLI command) never need it.
    from concurrent.futures import Future
    future: Future = Future()

    def task() -> None:
        if not future.set_running_or_notify_cancel():
            return
        try:
            with app.app_context():
                result = func(*args, **kwargs)
        except BaseException as exc:  # the task's, or a teardown's
            logger.exception("background task %r failed", name)
            future.set_exception(exc)
        else:
            future.set_result(result)

    ticker._check_pid()
    ticker._task_pool.submit(name, task, future.cancel)
    return future


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
                thread = threading.Thread(target=self._work, daemon=True,
                                          name=f"{self.name}-{next(self._count)}")
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
            item[1]()
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
            self.closed = False

    def shutdown(self, deadline: float | None) -> list[str]:
        """Close, and let the workers drain the queue until ``deadline``
        (monotonic).  Returns the labels still running, then those that
        never started, which are cancelled.
        """
        self.close()
        with self._lock:
            threads = [t for t in self._threads if t is not threading.current_thread()]
        for thread in threads:
            thread.join(None if deadline is None else max(0.0, deadline - time.monotonic()))
        unfinished = [label for thread, label in list(self._active.items())
                      if thread is not threading.current_thread()]
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


class _LockFile:
    """The default ``TICKER_LOCK``: a lock file, and two files beside it that
    tell the processes sharing it whether a new runner takes over or starts
    the deployment afresh.

    ``name.lock``: whoever holds it runs the jobs.  ``name.lock.members``:
    each process with a started ticker holds it shared, so the first one to
    join knows it is alone: a restart, unless the master that forked it (see
    `_master`) still runs.  ``name.lock.state``: the deployment's id and each
    job's grid origin, on the wall clock, read by a new runner.

    These are flock() locks: the kernel drops them when their process dies,
    so a crash never leaves a stale lock.  A forked child shares its parent's
    open files, so it closes its copies (`forget`) rather than unlocking.
    """

    def __init__(self, path: str) -> None:
        self.path = path
        self.deployment: str | None = None
        self._held: Any = None     # the open lock file, while held
        self._member: Any = None   # the open members file, while a member
        # Held around every use of the files, and across os.fork(): a child
        # that inherited a file another thread had open and locked would
        # keep that lock alive, and deadlock on it, forever.
        self.io = threading.RLock()

    def _open(self, suffix: str = "") -> Any:
        flags = os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_CLOEXEC", 0)
        try:
            fd = os.open(self.path + suffix, flags, 0o600)
        except FileNotFoundError:
            os.makedirs(os.path.dirname(self.path) or ".", mode=0o700, exist_ok=True)
            fd = os.open(self.path + suffix, flags, 0o600)
        return open(fd, "r+b", buffering=0)

    def acquire(self, blocking: bool = False) -> bool:
        with self.io:
            file = self._open()
            try:
                fcntl.flock(file, fcntl.LOCK_EX | (0 if blocking else fcntl.LOCK_NB))
            except BlockingIOError:
                file.close()
                return False
            self._held = file
            return True

    def release(self) -> None:
        # Closing drops the lock; LOCK_UN would also drop it for a forked
        # child that has not closed its copy yet.
        with self.io:
            if self._held is not None:
                self._held.close()
                self._held = None

    def join(self) -> None:
        self._open().close()  # a bad path fails here, at start-up
        anchor = _master()
        with self.io, self._state() as state:  # one joiner at a time
            self._member = self._open(".members")
            try:
                fcntl.flock(self._member, fcntl.LOCK_EX | fcntl.LOCK_NB)
                if anchor is None or state.get("master") != anchor:
                    state.clear()  # nobody else is running: a new deployment
                    state["master"] = anchor
            except BlockingIOError:
                pass
            # Safe to convert: only joiners lock it exclusively, one at a time.
            fcntl.flock(self._member, fcntl.LOCK_SH)
            self.deployment = state.setdefault("deployment", os.urandom(8).hex())

    def leave(self) -> None:
        with self.io:
            if self._member is not None:
                self._member.close()
                self._member = None

    def forget(self) -> None:
        # In a forked child these close only the child's copies.
        self.release()
        self.leave()

    def shared_origins(self, new: Mapping[tuple[float, float], list[str]]) -> dict[str, float]:
        """Given ``{(interval, origin if new): [job names]}``, record the
        new jobs and return the origins of those this deployment already runs.

        The state keeps ``[interval, origin, [names]]`` grids: jobs planned
        together share one, so that each costs it little more than its name.
        """
        with self.io, self._state() as state:
            if state.get("deployment") != self.deployment:
                state.clear()
                state["deployment"] = self.deployment
            grids = state.setdefault("grids", [])
            known = {}
            if grids:
                mine = {(interval, name) for (interval, _), names in new.items()
                        for name in names}
                known = {name: origin for interval, origin, names in grids
                         for name in names if (interval, name) in mine}
            for (interval, origin), names in new.items():
                names = [name for name in names if name not in known]
                if names:
                    grids.append([interval, origin, names])
        return known

    @contextlib.contextmanager
    def _state(self) -> Any:
        with self._open(".state") as file:
            fcntl.flock(file, fcntl.LOCK_EX)
            before = file.read()
            try:
                state = json.loads(before) if before else {}
            except ValueError:
                state = {}
            yield state
            after = json.dumps(state).encode()
            if after != before:
                # Overwrite, then cut: ext4 flushes a file truncated to zero
                # when it is closed, which made each transaction cost 0.5 ms.
                os.pwrite(file.fileno(), after, 0)
                if len(after) < len(before):
                    file.truncate(len(after))


def _loop(ref: weakref.ref[Ticker], wakeup: threading.Event) -> None:
    # Holds the ticker only weakly while asleep, so a ticker nobody stopped
    # goes away with its app.  Clearing the event before checking means a
    # stop() or an added job can never be missed.
    me = threading.current_thread()
    while True:
        wakeup.clear()
        ticker = ref()
        if ticker is None or ticker._thread is not me:
            return
        delay = ticker._run_due()
        del ticker
        wakeup.wait(delay)


def _abandon(wakeup: threading.Event, *pools: _Pool) -> None:
    for pool in pools:
        pool.close()
    wakeup.set()


@atexit.register
def _stop_at_exit() -> None:
    for ticker in list(_tickers):
        ticker.stop(ticker._shutdown_timeout)


_held_for_fork: list[_LockFile] = []  # whose io lock the forking thread holds


def _before_fork() -> None:
    _held_for_fork[:] = [t._runner for t in list(_tickers) if isinstance(t._runner, _LockFile)]
    for files in _held_for_fork:
        files.io.acquire()


def _after_fork(child: bool) -> None:
    for files in _held_for_fork:
        if child:
            files.io = threading.RLock()
        else:
            files.io.release()
    _held_for_fork.clear()
    for ticker in list(_tickers):
        ticker._forked(child)


if hasattr(os, "register_at_fork"):
    os.register_at_fork(before=_before_fork, after_in_parent=lambda: _after_fork(False),
                        after_in_child=lambda: _after_fork(True))


def _uses_reloader(app: Flask, args: tuple, kwargs: dict) -> bool:
    # Mirrors how Flask.run picks its debug and use_reloader settings.
    debug = kwargs.get("debug", args[2] if len(args) > 2 else None)
    if debug is None:
        debug = get_debug_flag() if "FLASK_DEBUG" in os.environ else app.debug
    return bool(kwargs.get("use_reloader", debug))


def _runner_lock(lock: Any) -> Any:
    if lock is False or lock is None:
        return None
    if isinstance(lock, (str, os.PathLike)):
        if fcntl is None:
            logger.warning("no flock() on this platform: TICKER_LOCK %r is ignored,"
                           " and every process that serves the app runs the jobs", lock)
            return None
        return _LockFile(os.fspath(lock))
    if callable(getattr(lock, "acquire", None)) and callable(getattr(lock, "release", None)):
        return lock
    raise TypeError("TICKER_LOCK must be a path, False, or an object with"
                    f" acquire(blocking=False) and release(), got {lock!r}")


def _master() -> str | None:
    """The master process of a preforking server, if it forked this one.

    It outlives its workers: while it runs, a worker that finds no other
    member replaces recycled ones, and the deployment has not restarted.
    """
    if not _preforking_server():
        return None
    ppid = os.getppid()
    try:  # its start time tells it from a later process with the same pid
        with open(f"/proc/{ppid}/stat") as stat:
            return f"{ppid}:{stat.read().rsplit(')', 1)[1].split()[19]}"
    except OSError:
        return str(ppid)


def _preforking_server() -> bool:
    return "gunicorn.arbiter" in sys.modules or "uwsgi" in sys.modules


def _uwsgi_without_threads() -> bool:
    uwsgi = sys.modules.get("uwsgi")
    return uwsgi is not None and not (uwsgi.opt.get("enable-threads") or uwsgi.opt.get("threads"))


def _safe_name(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def _check_interval(interval: object, name: str | None) -> float:
    if isinstance(interval, timedelta):
        seconds = interval.total_seconds()
    elif _is_number(interval):
        seconds = float(interval)
    else:
        raise TypeError(f"{_interval_of(name)} must be seconds (int or float) or a"
                        f" timedelta, got {interval!r}")
    if not (math.isfinite(seconds) and seconds > 0):
        raise ValueError(f"{_interval_of(name)} must be positive and finite, got {interval!r}")
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


def _name(func: Any) -> str:
    return getattr(func, "__qualname__", None) or repr(func)


def _seconds(s: float) -> str:
    for unit, size in (("h", 3600), ("m", 60)):
        if s >= size:
            return f"{s / size:.3g}{unit}"
    return f"{s:.3g}s"
