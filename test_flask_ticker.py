"""Behaviour tests for flask_ticker.

Scheduling tests drive fake clocks: time moves only when a test says so,
and `FakeClock.advance` makes the scheduler's pass itself
(`Ticker.run_pending`), so nothing here sleeps to wait for a tick and no
scheduler thread runs unless a test starts one.  Launch-mode tests, in
tests/, run real servers in subprocesses.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import gc
import json
import logging
import math
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from concurrent.futures import Future
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from flask import Flask, current_app, g, has_app_context, has_request_context

import flask_ticker
from flask_ticker import Job, Ticker, run_in_background

HERE = Path(__file__).resolve().parent
WAIT = 5.0  # upper bound for anything that should happen "at once"


EPOCH = 1_800_000_000.0  # what the fake wall clock reads at monotonic 0


class FakeClock:
    """A monotonic clock and its wall clock, which move only when a test
    advances them; `wall_step` steps the wall clock alone, as NTP may."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.step = 0.0
        self.ticker: Ticker | None = None
        self.reads_by_scheduler_thread = 0

    def __call__(self) -> float:
        if threading.current_thread().name == "flask-ticker":
            self.reads_by_scheduler_thread += 1
        return self.now

    def wall(self) -> float:
        return EPOCH + self.now + self.step

    def advance(self, seconds: float = 0.0) -> float | None:
        """Move time on and make one scheduler pass; return its delay."""
        self.now += seconds
        return self.ticker.run_pending()


def wait_until(predicate, timeout: float = WAIT) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.002)


def settle(*jobs: Job) -> None:
    wait_until(lambda: not any(job.running for job in jobs))


def make_app(name: str = "ticker_test_app", **config) -> Flask:
    """An app that takes no lock: these tests run one process, and several
    apps of one name would otherwise share a lock file."""
    app = Flask(name)
    app.config.update({"TICKER_LOCK": False, **config})
    return app


@pytest.fixture
def app():
    return make_app(TICKER_ENABLED=False)


@pytest.fixture
def clock():
    return FakeClock()


def fake_ticker(app: Flask, clock: FakeClock) -> Ticker:
    ticker = Ticker(app, clock=clock, wall_clock=clock.wall)
    clock.ticker = ticker
    return ticker


@pytest.fixture
def ticker(app, clock):
    ticker = fake_ticker(app, clock)
    yield ticker
    ticker.stop(timeout=WAIT)


class Recorder:
    """A job function that notes the fake time of each call."""

    def __init__(self, clock: FakeClock | None = None) -> None:
        self.clock = clock
        self.calls: list[float] = []
        self.__qualname__ = "recorder"

    def __call__(self, *args, **kwargs):
        self.calls.append(self.clock() if self.clock else time.monotonic())
        self.args = args, kwargs
        return len(self.calls)


def started(ticker: Ticker, clock: FakeClock, wait_for_runs: bool = True) -> None:
    """Make the first pass and, unless told not to, let its runs finish."""
    clock.advance(0)
    if wait_for_runs:
        settle(*ticker.jobs)


# -- 1. every(): first run now, registration forms --


def test_run_now_job_runs_as_soon_as_the_ticker_starts(ticker, clock):
    rec = Recorder(clock)
    ticker.every(3600, rec)
    assert rec.calls == []
    started(ticker, clock)
    assert rec.calls == [1000.0]


def test_run_now_job_still_runs_when_started_long_after_registration(ticker, clock):
    rec = Recorder(clock)
    ticker.every(60, rec)
    clock.now += 10 * 3600
    started(ticker, clock)
    assert rec.calls == [clock.now]


def test_run_now_false_waits_one_interval_after_start(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(60, rec, run_now=False)
    started(ticker, clock)
    clock.advance(59.9)
    settle(job)
    assert rec.calls == []
    clock.advance(0.1)
    settle(job)
    assert rec.calls == [1060.0]


def test_jobs_added_after_start_are_scheduled_from_that_moment(ticker, clock):
    started(ticker, clock)
    clock.advance(5)
    now_rec, later_rec = Recorder(clock), Recorder(clock)
    a = ticker.every(10, now_rec)
    b = ticker.every(10, later_rec, name="later", run_now=False)
    clock.advance(0)
    settle(a, b)
    assert now_rec.calls == [1005.0] and later_rec.calls == []
    clock.advance(10)
    settle(a, b)
    assert now_rec.calls == [1005.0, 1015.0] and later_rec.calls == [1015.0]


def test_decorator_form_registers_and_returns_the_function_unchanged(ticker):
    def heartbeat():
        return "beat"

    assert ticker.every(60)(heartbeat) is heartbeat
    job = ticker.get("heartbeat")
    assert isinstance(job, Job) and job.run() == "beat"


def test_every_with_func_returns_the_job_named_after_the_function(ticker):
    def poll():
        pass

    job = ticker.every(timedelta(minutes=5), poll)
    assert isinstance(job, Job)
    assert job.name == "poll" and job.interval == 300.0
    assert ticker.every(1.5, poll, name="poll_fast").interval == 1.5


def test_args_and_kwargs_are_passed_to_every_run(ticker):
    rec = Recorder()
    job = ticker.every(1, rec, args=("a", 1), kwargs={"k": "v"})
    job.run()
    assert rec.args == (("a", 1), {"k": "v"})


# -- 2. fixed rate on the monotonic clock --


def test_runs_stay_on_the_fixed_rate_grid_however_long_they_take(ticker, clock):
    starts = []

    def slow():
        starts.append(clock.now)
        clock.now += 3  # the run itself takes 3 s of (fake) time

    job = ticker.every(10, slow)
    started(ticker, clock)
    for _ in range(3):
        settle(job)
        clock.advance(10 - (clock.now - 1000) % 10)
    settle(job)
    assert starts == [1000.0, 1010.0, 1020.0, 1030.0]


def test_a_late_wakeup_does_not_shift_the_grid(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    started(ticker, clock)
    clock.advance(10.4)  # the loop woke 0.4 s late
    settle(job)
    clock.advance(9.5)  # 1019.9: not due yet
    settle(job)
    assert rec.calls == [1000.0, 1010.4]
    clock.advance(0.1)
    settle(job)
    assert rec.calls == [1000.0, 1010.4, 1020.0]


def test_a_wall_clock_step_changes_nothing_but_next_run(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    started(ticker, clock)
    before = job.next_run
    clock.step = -3600.0  # someone sets the clock back an hour
    assert job.next_run == before - timedelta(hours=1)
    clock.advance(9.9)
    settle(job)
    assert rec.calls == [1000.0]
    clock.advance(0.1)
    settle(job)
    assert rec.calls == [1000.0, 1010.0]


# -- 3. no overlap, no bursts --


def test_an_overrunning_job_skips_ticks_and_keeps_its_grid(ticker, clock, caplog):
    release = threading.Event()
    starts = []

    def stuck():
        starts.append(clock.now)
        release.wait(WAIT)

    job = ticker.every(10, stuck)
    started(ticker, clock, wait_for_runs=False)
    wait_until(lambda: starts)
    for _ in range(3):
        clock.advance(10)
    assert job.skipped == 3 and starts == [1000.0] and job.running
    release.set()
    settle(job)
    clock.advance(5)  # 1035: between ticks, nothing runs
    settle(job)
    assert starts == [1000.0]
    clock.advance(5)  # 1040: back on the grid
    settle(job)
    assert starts == [1000.0, 1040.0]
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "still running" in warnings[0].getMessage()


def test_a_job_that_always_overruns_warns_once_until_it_keeps_up_again(ticker, clock, caplog):
    entered, permits = threading.Semaphore(0), threading.Semaphore(0)
    job = ticker.every(10, lambda: (entered.release(), permits.acquire(timeout=WAIT)))

    def slow_tick():  # the run at the current time overruns into the next tick
        assert entered.acquire(timeout=WAIT)
        clock.advance(10)
        clock.now += 1
        permits.release()
        settle(job)
        clock.advance(9)

    started(ticker, clock, wait_for_runs=False)
    slow_tick()  # 1000 overruns into 1010: a warning
    slow_tick()  # 1020 overruns into 1030: the same streak
    assert entered.acquire(timeout=WAIT)
    permits.release()  # 1040 takes no time: the streak is over
    settle(job)
    clock.advance(10)
    slow_tick()  # 1050 overruns into 1060: a new streak
    assert job.skipped == 3 and job.runs == 4
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    permits.release()  # the run at 1070


def test_ticks_missed_while_suspended_coalesce_into_one_run(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    started(ticker, clock)
    clock.advance(55)  # five ticks passed while the process was stopped
    settle(job)
    assert rec.calls == [1000.0, 1055.0]
    assert job.skipped == 4
    assert job.next_run is not None
    clock.advance(4.9)
    settle(job)
    assert len(rec.calls) == 2
    clock.advance(0.1)
    settle(job)
    assert rec.calls[-1] == 1060.0


# -- 4. isolation: app context, threads, failures --


def test_each_run_gets_a_fresh_app_context_and_its_teardown(app, ticker, clock):
    teardowns = []
    seen = []
    app.teardown_appcontext(lambda exc: teardowns.append(exc))

    def job_func():
        seen.append((current_app._get_current_object(), g.get("mark")))
        g.mark = "left over"

    job = ticker.every(10, job_func)
    started(ticker, clock)
    clock.advance(10)
    settle(job)
    assert seen == [(app, None), (app, None)]
    assert teardowns == [None, None]


def test_a_hung_job_does_not_delay_another_jobs_start(ticker, clock):
    release = threading.Event()
    hung = ticker.every(10, lambda: release.wait(WAIT), name="hung")
    rec = Recorder(clock)
    other = ticker.every(10, rec, name="other")
    started(ticker, clock, wait_for_runs=False)
    settle(other)
    clock.advance(10)
    settle(other)
    assert rec.calls == [1000.0, 1010.0] and hung.running
    release.set()


def test_a_failing_job_is_logged_counted_and_keeps_its_schedule(ticker, clock, caplog):
    calls = []

    def flaky():
        calls.append(clock.now)
        raise ValueError("feed is down")

    job = ticker.every(10, flaky, name="sync-feed")
    started(ticker, clock)
    clock.advance(10)
    settle(job)
    assert calls == [1000.0, 1010.0]
    assert job.failures == 2 and job.runs == 2
    assert job.last_error == "ValueError: feed is down"
    errors = [
        r
        for r in caplog.records
        if r.name.endswith(".flask_ticker") and r.levelno == logging.ERROR
    ]
    assert len(errors) == 2
    assert "sync-feed" in errors[0].getMessage() and errors[0].exc_info[0] is ValueError
    # the same failure again: one line, not another copy of the traceback
    assert errors[1].exc_info is None
    assert errors[1].getMessage() == (
        "job 'sync-feed' failed again, 2 times in a row, with the error and traceback"
        " logged before: ValueError: feed is down"
    )


def failures_logged(caplog) -> list[tuple[str, bool]]:
    """(message, with a traceback) of each ERROR record of flask_ticker."""
    return [
        (r.getMessage(), r.exc_info is not None)
        for r in caplog.records
        if r.name.endswith(".flask_ticker") and r.levelno == logging.ERROR
    ]


def test_a_new_error_or_a_new_streak_logs_its_traceback_again(ticker, clock, caplog):
    caplog.set_level(logging.INFO)
    outcomes = iter([KeyError("a"), KeyError("b"), ValueError("b"), None, ValueError("b")])

    def job_func():
        error = next(outcomes)
        if error is not None:
            raise error

    job = ticker.every(10, job_func, name="flaky")
    started(ticker, clock)
    for _ in range(4):
        clock.advance(10)
        settle(job)
    assert job.runs == 5 and job.failures == 4
    assert failures_logged(caplog) == [
        ("job 'flaky' failed; it keeps its schedule", True),
        # another message, the same type and path: a repeat, with its message
        (
            "job 'flaky' failed again, 2 times in a row, with the error and traceback"
            " logged before: KeyError: 'b'",
            False,
        ),
        ("job 'flaky' failed; it keeps its schedule", True),  # another type
        ("job 'flaky' failed; it keeps its schedule", True),  # after a good run
    ]
    assert "job 'flaky' succeeded again after 1 failed run(s) in a row" in caplog.text


def test_the_same_error_from_another_line_logs_its_traceback(ticker, clock, caplog):
    calls = []

    def job_func():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("down")
        raise RuntimeError("down")

    job = ticker.every(10, job_func, name="two-places")
    started(ticker, clock)
    clock.advance(10)
    settle(job)
    assert [tb for _, tb in failures_logged(caplog)] == [True, True]


def test_a_job_that_calls_sys_exit_does_not_stop_the_schedule(ticker, clock):
    job = ticker.every(10, sys.exit, name="exits")
    started(ticker, clock)
    clock.advance(10)
    settle(job)
    assert job.runs == 2 and job.last_error.startswith("SystemExit")


def run_script(tmp_path: Path, body: str, timeout: float = 30, **env: str):
    script = tmp_path / "script.py"
    script.write_text(textwrap.dedent(body))
    return subprocess.run(
        [sys.executable, str(script)],
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd=tmp_path,
        env={**os.environ, "PYTHONPATH": str(HERE), **env},
    )


def test_job_failures_are_visible_with_flasks_default_logging(tmp_path):
    result = run_script(
        tmp_path,
        """
        import threading
        from flask import Flask
        from flask_ticker import Ticker

        app = Flask("failing_app")
        app.config.update(TICKER_LOCK=False, TICKER_ENABLED=True)  # a script: say so
        ticker = Ticker(app)
        done = threading.Event()

        @ticker.every(3600)
        def sync_feed():
            done.set()
            raise ValueError("feed is down")

        done.wait(10)
        app.logger.info("not shown: Flask logs INFO only in debug")
    """,
    )
    assert result.returncode == 0, result.stderr
    assert "sync_feed" in result.stderr
    assert "ERROR in flask_ticker" in result.stderr  # Flask's handler: time and level
    assert "Traceback (most recent call last)" in result.stderr
    assert "ValueError: feed is down" in result.stderr


# -- 5. threads: one sleeping scheduler, bounded workers --


def test_an_idle_ticker_does_not_wake_between_due_times(ticker, clock):
    for i in range(10):
        ticker.every(3600, lambda: None, name=f"hourly-{i}", run_now=False)
    assert clock.advance(0) == 3600.0  # the pass says how long to sleep
    ticker.start()
    wait_until(lambda: clock.reads_by_scheduler_thread > 0)
    time.sleep(0.3)
    reads = clock.reads_by_scheduler_thread
    time.sleep(0.3)
    assert clock.reads_by_scheduler_thread == reads


def test_threads_stay_bounded_however_many_jobs_are_due(app, clock):
    app.config["TICKER_MAX_WORKERS"] = 2
    ticker = fake_ticker(app, clock)
    release = threading.Event()
    before = threading.active_count()
    jobs = [ticker.every(10, lambda: release.wait(WAIT), name=f"j{i}") for i in range(10)]
    ticker.start()
    for _ in range(5):
        clock.advance(10)
    added = [t for t in threading.enumerate() if t.name.startswith("flask-ticker")]
    assert threading.active_count() - before == len(added) == 1 + 2
    assert all(thread.daemon for thread in added)
    assert all(job.running for job in jobs)
    release.set()
    settle(*jobs)
    assert ticker.stop(WAIT)


# -- 6. shutdown --


def test_stop_wakes_an_idle_loop_at_once_and_ends_its_thread(app):
    ticker = Ticker(app)
    ticker.every(3600, lambda: None, run_now=False)
    ticker.start()
    wait_until(lambda: ticker.jobs[0].next_run is not None)
    [thread] = [t for t in threading.enumerate() if t.name == "flask-ticker"]
    began = time.monotonic()
    assert ticker.stop() is True
    assert time.monotonic() - began < WAIT  # not the hour the loop sleeps for
    assert not thread.is_alive() and not ticker.started
    assert ticker.jobs[0].next_run is None


def test_stop_waits_for_a_running_job_to_finish(ticker, clock):
    finished = threading.Event()
    entered = threading.Event()

    def work():
        entered.set()
        time.sleep(0.2)
        finished.set()

    ticker.every(3600, work)
    started(ticker, clock, wait_for_runs=False)
    assert entered.wait(WAIT)
    assert ticker.stop(timeout=WAIT) is True
    assert finished.is_set()


def test_stop_timeout_returns_false_and_names_the_unfinished_job(ticker, clock, caplog):
    release = threading.Event()
    entered = threading.Event()
    ticker.every(3600, lambda: (entered.set(), release.wait(WAIT)), name="hangs")
    started(ticker, clock, wait_for_runs=False)
    assert entered.wait(WAIT)
    assert ticker.stop(timeout=0.05) is False
    assert "job 'hangs'" in caplog.text
    workers = [t for t in threading.enumerate() if t.name.startswith("flask-ticker-job")]
    release.set()
    for worker in workers:  # once the job is done, its worker exits too
        worker.join(WAIT)
        assert not worker.is_alive()


def scheduler_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == "flask-ticker"]


def test_start_and_stop_are_idempotent_and_a_stopped_ticker_restarts(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    before = len(scheduler_threads())
    ticker.start()
    ticker.start()
    assert len(scheduler_threads()) == before + 1
    settle(job)
    assert ticker.stop() and ticker.stop()
    assert len(scheduler_threads()) == before and not ticker.started
    clock.now += 3
    ticker.start()
    settle(job)
    assert rec.calls == [1000.0, 1003.0]  # no shared state: run_now again
    clock.advance(10)
    settle(job)
    assert rec.calls[-1] == 1013.0


def test_a_hung_job_does_not_block_interpreter_exit(tmp_path):
    result = run_script(
        tmp_path,
        """
        import threading
        from flask import Flask
        from flask_ticker import Ticker

        app = Flask("exit_app")
        app.config.update(TICKER_LOCK=False, TICKER_ENABLED=True)
        app.config["TICKER_SHUTDOWN_TIMEOUT"] = 0.5
        ticker = Ticker(app)
        entered = threading.Event()

        @ticker.every(3600)
        def hangs_forever():
            entered.set()
            threading.Event().wait()

        entered.wait(10)
        print("main done", flush=True)
    """,
        timeout=20,
    )
    assert result.returncode == 0, result.stderr
    assert "main done" in result.stdout
    assert "hangs_forever" in result.stderr and "unfinished" in result.stderr


def test_accepted_background_tasks_finish_before_exit(tmp_path):
    out = tmp_path / "out.txt"
    result = run_script(
        tmp_path,
        f"""
        import time
        from flask import Flask
        from flask_ticker import Ticker, run_in_background

        app = Flask("exit_app")
        app.config["TICKER_LOCK"] = False
        Ticker(app)

        def write(i):
            time.sleep(0.2)
            with open({str(out)!r}, "a") as f:
                f.write(f"{{i}}\\n")

        with app.app_context():
            for i in range(6):
                run_in_background(write, i)
    """,
    )
    assert result.returncode == 0, result.stderr
    assert sorted(out.read_text().split()) == [str(i) for i in range(6)]


# -- 7. the Job handle --


def test_job_attributes_report_the_runs(ticker, clock):
    def work():
        clock.now += 2

    job = ticker.every(10, work, name="work")
    assert (
        job.runs,
        job.failures,
        job.skipped,
        job.last_run,
        job.last_duration,
        job.last_error,
        job.running,
        job.paused,
        job.next_run,
    ) == (0, 0, 0, None, None, None, False, False, None)
    started(ticker, clock)
    assert job.runs == 1 and job.last_duration == 2.0
    assert job.last_run == datetime.fromtimestamp(EPOCH + 1000, timezone.utc)
    # due at 1010, the clock reads 1002: 8 s from now
    assert job.next_run == datetime.fromtimestamp(EPOCH + 1010, timezone.utc)
    assert repr(job) == "<Job 'work' every 10s, next in 8s, runs=1 failures=0 skipped=0>"


@pytest.mark.parametrize(
    "attr",
    [
        "name",
        "interval",
        "runs",
        "failures",
        "skipped",
        "last_run",
        "last_duration",
        "last_error",
        "running",
        "paused",
        "next_run",
    ],
)
def test_job_attributes_are_read_only(ticker, attr):
    job = ticker.every(10, lambda: None, name="j")
    with pytest.raises(AttributeError):
        setattr(job, attr, 1)


def test_pause_holds_runs_and_resume_returns_to_the_grid(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    started(ticker, clock)
    job.pause()
    assert job.paused and job.next_run is None
    clock.advance(25)
    settle(job)
    assert rec.calls == [1000.0]
    job.resume()
    assert job.next_run == datetime.fromtimestamp(EPOCH + 1030, timezone.utc)
    clock.advance(0)
    settle(job)
    assert rec.calls == [1000.0] and not job.paused
    clock.advance(5)  # 1030, the next point of the original grid
    settle(job)
    assert rec.calls == [1000.0, 1030.0]


def test_cancel_removes_the_job_and_it_never_runs_again(ticker, clock):
    rec = Recorder(clock)
    job = ticker.every(10, rec)
    started(ticker, clock)
    job.cancel()
    assert ticker.jobs == [] and ticker.get(job.name) is None
    clock.advance(30)
    settle(job)
    assert rec.calls == [1000.0]
    ticker.every(10, rec)  # the name is free again


def test_job_run_returns_the_result_and_reraises_in_the_callers_thread(app, ticker):
    where = []

    def ok():
        where.append((threading.current_thread(), current_app._get_current_object()))
        return 42

    def bad():
        raise KeyError("nope")

    assert ticker.every(10, ok).run() == 42
    assert where == [(threading.current_thread(), app)]
    job = ticker.every(10, bad)
    with pytest.raises(KeyError):
        job.run()
    assert job.runs == 1 and job.failures == 1 and job.last_error == "KeyError: 'nope'"


def test_job_run_refuses_to_overlap_a_scheduled_run(ticker, clock):
    release = threading.Event()
    job = ticker.every(10, lambda: release.wait(WAIT))
    started(ticker, clock, wait_for_runs=False)
    with pytest.raises(RuntimeError, match="already running"):
        job.run()
    release.set()


def test_jobs_lists_in_registration_order_and_get_finds_by_name(ticker):
    a = ticker.every(1, lambda: None, name="a")
    b = ticker.every(1, lambda: None, name="b")
    assert ticker.jobs == [a, b]
    assert ticker.get("b") is b and ticker.get("missing") is None


# -- 8. run_in_background --


def test_run_in_background_returns_a_future_with_the_result(app, ticker):
    with app.app_context():
        future = run_in_background(lambda a, b=0: a + b, 1, b=2)
    assert isinstance(future, Future)
    assert future.result(WAIT) == 3


def test_a_task_from_a_view_runs_in_a_fresh_app_context_without_the_request(app, ticker):
    seen = Future()

    def task():
        seen.set_result(
            (
                current_app._get_current_object(),
                has_request_context(),
                g.get("from_view"),
                threading.current_thread().name,
            )
        )

    @app.get("/")
    def view():
        g.from_view = True
        run_in_background(task)
        return "ok"

    assert app.test_client().get("/").status_code == 200
    task_app, in_request, from_view, thread_name = seen.result(WAIT)
    assert task_app is app and not in_request and from_view is None
    assert thread_name.startswith("flask-ticker-task")


def test_a_failing_task_is_logged_and_its_exception_set_on_the_future(app, ticker, caplog):
    def send_mail():
        raise ConnectionError("smtp down")

    with app.app_context():
        future = run_in_background(send_mail)
    assert isinstance(future.exception(WAIT), ConnectionError)
    wait_until(lambda: "send_mail" in caplog.text)
    record = next(r for r in caplog.records if "send_mail" in r.getMessage())
    assert record.levelno == logging.ERROR and record.exc_info[0] is ConnectionError


def test_run_in_background_outside_an_app_context_says_what_to_do():
    with pytest.raises(RuntimeError, match="app context"):
        run_in_background(print)


def test_run_in_background_rejects_a_non_callable(app, ticker):
    with app.app_context(), pytest.raises(TypeError, match="func must be callable, got 42"):
        run_in_background(42)


def test_background_threads_stay_within_max_workers(app):
    app.config["TICKER_MAX_WORKERS"] = 3
    ticker = Ticker(app)
    names = set()
    lock = threading.Lock()

    def task():
        with lock:
            names.add(threading.current_thread().name)
        time.sleep(0.001)

    with app.app_context():
        futures = [run_in_background(task) for _ in range(200)]
    for future in futures:
        future.result(WAIT)
    assert 1 <= len(names) <= 3
    assert ticker.stop(WAIT)


def test_stop_finishes_accepted_tasks_and_names_those_it_cannot(app, caplog):
    app.config["TICKER_MAX_WORKERS"] = 1
    ticker = Ticker(app)
    release = threading.Event()
    done = []

    def quick(i):
        done.append(i)

    def stuck():
        release.wait(WAIT)

    with app.app_context():
        fine = [run_in_background(quick, i) for i in range(3)]
    assert ticker.stop(WAIT) is True
    assert sorted(done) == [0, 1, 2] and all(f.done() for f in fine)

    ticker.start()
    with app.app_context():
        first = run_in_background(stuck)
        queued = run_in_background(quick, 99)
    wait_until(first.running)
    assert ticker.stop(timeout=0.05) is False
    assert "task" in caplog.text and "stuck" in caplog.text and "quick" in caplog.text
    assert queued.cancelled()
    release.set()
    with app.app_context(), pytest.raises(RuntimeError, match="stopped"):
        run_in_background(quick, 1)


# -- 9. the Werkzeug reloader: see tests/test_launch_modes.py, which serves
# the example app with the real development server and counts the runs.


# -- 10. configuration and the app factory --


def test_config_defaults_are_set_on_the_app():
    app = Flask("my app", instance_path="/srv/instance")
    app.config["TICKER_ENABLED"] = False
    Ticker(app)
    assert app.config["TICKER_ENABLED"] is False
    assert app.config["TICKER_MAX_WORKERS"] == min(32, (os.cpu_count() or 1) + 4)
    assert app.config["TICKER_SHUTDOWN_TIMEOUT"] == 10.0
    assert app.config["TICKER_LOCK"] == "/srv/instance/flask_ticker-my_app.lock"
    assert app.config["TICKER_LOCK_RETRY"] == 5.0


def test_enabled_true_starts_at_once_and_false_never_starts():
    enabled = Ticker(make_app("enabled", TICKER_ENABLED=True))
    assert enabled.started
    assert enabled.stop(WAIT)
    disabled = make_app("disabled", TICKER_ENABLED=False)
    ticker = Ticker(disabled)
    disabled.test_client().get("/")
    assert not ticker.started


def test_unset_an_unknown_server_starts_the_ticker_at_its_first_request():
    app = make_app("served")
    ticker = Ticker(app)
    ran = []
    ticker.every(3600, lambda: ran.append(1), name="hourly")
    assert app.config["TICKER_ENABLED"] is None and not ticker.started
    app.test_client().get("/")
    assert ticker.started
    wait_until(lambda: ran == [1])
    app.test_client().get("/")
    assert ticker.stop(WAIT) and ran == [1]


def test_under_testing_the_ticker_does_not_start_and_job_run_works(caplog):
    caplog.set_level(logging.INFO)
    app = make_app("tested", TESTING=True)
    ticker = Ticker(app)
    job = ticker.every(3600, lambda: "ran", name="hourly")
    app.test_client().get("/")
    assert not ticker.started and job.next_run is None
    assert job.run() == "ran"
    assert "TESTING is set" in caplog.text


@pytest.mark.parametrize(
    "key, value, message",
    [
        (
            "TICKER_ENABLED",
            "false",
            r"TICKER_ENABLED must be True, False or None \(unset\), got 'false'",
        ),
        ("TICKER_MAX_WORKERS", 0, "TICKER_MAX_WORKERS must be an int >= 1, got 0"),
        (
            "TICKER_SHUTDOWN_TIMEOUT",
            "soon",
            "TICKER_SHUTDOWN_TIMEOUT must be finite .* got 'soon'",
        ),
        ("TICKER_SHUTDOWN_TIMEOUT", math.inf, "TICKER_SHUTDOWN_TIMEOUT must be finite .* got inf"),
        ("TICKER_LOCK_RETRY", -1, "TICKER_LOCK_RETRY must be finite seconds > 0, got -1"),
        (
            "TICKER_LOCK",
            "",
            "TICKER_LOCK must be a path, a Redis URL, False, or a lock object, got ''",
        ),
    ],
)
def test_bad_config_is_rejected_with_the_key_and_value(key, value, message):
    app = make_app("bad", **{key: value})
    with pytest.raises(ValueError, match=message):
        Ticker(app)
    assert "ticker" not in app.extensions


def test_the_extension_registers_itself_and_refuses_a_second_ticker(app):
    ticker = Ticker(app)
    assert app.extensions["ticker"] is ticker
    ticker.init_app(app)  # the same one again is harmless
    with pytest.raises(RuntimeError, match="already been registered on this Flask app"):
        Ticker(app)


def test_the_app_factory_pattern_binds_later(clock):
    ticker = Ticker(clock=clock)
    clock.ticker = ticker
    rec = Recorder(clock)
    ticker.every(10, rec)
    app = make_app("factory", TICKER_ENABLED=False)
    ticker.init_app(app)
    assert ticker.app is app
    started(ticker, clock)
    assert rec.calls == [1000.0]
    ticker.stop()


def test_one_module_level_ticker_moves_to_each_new_app_without_doubling():
    ticker = Ticker()
    ran_in = []
    ticker.every(3600, lambda: ran_in.append(current_app.name), name="hourly")
    before = threading.active_count()
    for i in range(5):
        ticker.init_app(make_app(f"app{i}", TICKER_ENABLED=True))
        wait_until(lambda: len(ran_in) == i + 1)
    assert ran_in == [f"app{i}" for i in range(5)]
    assert threading.active_count() - before <= 1 + 1  # loop + one job worker
    ticker.stop()


def test_apps_dropped_without_stop_take_their_threads_with_them():
    runs = []

    def create_app():
        app = make_app("many", TICKER_ENABLED=True)
        ticker = Ticker(app)
        ticker.every(3600, lambda: runs.append(1), name="hourly")
        return app

    baseline = set(threading.enumerate())
    for i in range(10):
        app = create_app()
        wait_until(lambda: len(runs) == i + 1)
    del app
    left = set(threading.enumerate()) - baseline
    # A worker may hold the last job for a moment after it ran: collect
    # until nothing does.
    wait_until(lambda: (gc.collect(), not any(t.is_alive() for t in left))[1])
    assert len(runs) == 10


# -- 11. bad input fails at registration --


@pytest.mark.parametrize(
    "interval, error",
    [
        (0, ValueError),
        (-5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        (timedelta(0), ValueError),
        (timedelta(seconds=-1), ValueError),
        (True, TypeError),
        ("60", TypeError),
        (None, TypeError),
    ],
)
def test_a_bad_interval_is_rejected_naming_the_job_and_value(ticker, interval, error):
    def refresh():
        pass

    with pytest.raises(error) as info:
        ticker.every(interval, refresh, name="refresh")
    assert "interval for job 'refresh'" in str(info.value)
    assert repr(interval) in str(info.value)
    with pytest.raises(error, match="interval"):
        ticker.every(interval)  # the decorator form checks at once too


def test_a_non_callable_func_is_rejected(ticker):
    with pytest.raises(TypeError, match="func for job 'x' must be callable, got 42"):
        ticker.every(10, 42, name="x")


def test_a_partial_is_named_after_its_function_never_its_bound_arguments(ticker, caplog):
    def sync_feed(api_key):
        raise ConnectionError("down")

    job = ticker.every(10, functools.partial(sync_feed, "sk-secret"))
    assert job.name.endswith("sync_feed")
    with pytest.raises(ConnectionError):
        job.run()
    with ticker.app.app_context():
        run_in_background(functools.partial(sync_feed, "sk-secret")).exception(WAIT)
    wait_until(lambda: "background task" in caplog.text)
    assert "sk-secret" not in caplog.text and "sk-secret" not in repr(job)


def test_bad_args_and_kwargs_are_rejected(ticker):
    with pytest.raises(TypeError, match="args for job 'x' must be a tuple, got 'abc'"):
        ticker.every(10, print, name="x", args="abc")
    with pytest.raises(TypeError, match="kwargs for job 'x' must be a dict"):
        ticker.every(10, print, name="x", kwargs=[1])


def test_a_duplicate_name_is_rejected_and_the_first_job_is_untouched(ticker, clock):
    first = Recorder(clock)
    job = ticker.every(10, first, name="sync")
    with pytest.raises(ValueError, match="'sync' is already registered"):
        ticker.every(20, print, name="sync")
    assert ticker.jobs == [job] and job.interval == 10.0
    started(ticker, clock)
    assert first.calls == [1000.0]


def test_running_a_job_with_no_app_bound_says_how_to_bind_one():
    job = Ticker().every(10, print, name="orphan")
    with pytest.raises(RuntimeError, match="job 'orphan' cannot run: no Flask app"):
        job.run()
    with pytest.raises(RuntimeError, match="needs an app"):
        Ticker().start()


def test_the_module_declares_its_public_surface():
    assert flask_ticker.__all__ == [
        "Ticker",
        "Job",
        "run_in_background",
        "job_started",
        "job_finished",
        "job_failed",
        "job_skipped",
        "task_failed",
    ]
    assert isinstance(flask_ticker.__version__, str)


# -- the runner lock: one process of several runs the jobs --


def locked_app(tmp_path: Path, name: str = "locked", **config) -> Flask:
    app = Flask(name, instance_path=str(tmp_path / "instance"))
    app.config.update({"TICKER_LOCK_RETRY": 0.05, **config})
    return app


def test_the_default_lock_file_and_its_state_are_private_and_the_folder_is_created(tmp_path):
    ticker = Ticker(locked_app(tmp_path, "my app", TICKER_ENABLED=True))
    job = ticker.every(3600, lambda: None, name="hourly")
    instance = tmp_path / "instance"
    wait_until(lambda: job.runs == 1)
    wait_until(lambda: (instance / "flask_ticker-my_app.lock.state").exists())
    assert instance.stat().st_mode & 0o777 == 0o700
    for suffix in ("", ".state"):
        path = instance / f"flask_ticker-my_app.lock{suffix}"
        assert path.stat().st_mode & 0o777 == 0o600, path
    assert ticker.stop(WAIT)


def test_a_symlinked_lock_file_is_refused_and_the_app_still_serves(tmp_path, caplog):
    (tmp_path / "instance").mkdir()
    target = tmp_path / "elsewhere"
    lock = tmp_path / "instance" / "flask_ticker-locked.lock"
    lock.symlink_to(target)
    app = locked_app(tmp_path, TICKER_ENABLED=True)
    ticker = Ticker(app)
    ran = []
    ticker.every(1, lambda: ran.append(1), name="often")
    assert not ticker.started and not target.exists()
    [error] = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert str(lock) in error.getMessage() and "TICKER_LOCK" in error.getMessage()
    assert app.test_client().get("/").status_code == 404  # it serves (no routes)
    with pytest.raises(OSError):
        ticker.start()  # an explicit start says so by raising
    assert ran == []


def test_a_custom_lock_is_acquired_and_released_on_one_thread(caplog):
    # Held elsewhere at start(), so that the scheduler thread takes it on a
    # retry and stop() releases it from this thread.
    lock = threading.RLock()  # release() from another thread raises
    held, let_go = threading.Event(), threading.Event()

    def another_process() -> None:
        with lock:
            held.set()
            let_go.wait()

    holder = threading.Thread(target=another_process)
    holder.start()
    held.wait()
    ticker = Ticker(make_app("custom", TICKER_LOCK=lock, TICKER_LOCK_RETRY=0.05))
    ran = []
    ticker.every(3600, lambda: ran.append(1), name="hourly")
    ticker.start()
    assert ran == []
    let_go.set()
    holder.join()
    wait_until(lambda: ran)
    assert ticker.stop(timeout=10)
    assert lock.acquire(blocking=False)  # released, by the thread that held it
    lock.release()
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []


def test_a_custom_lock_keeps_a_thread_only_while_it_is_held():
    def lock_threads() -> list:
        return [t for t in threading.enumerate() if t.name.startswith("flask-ticker-lock")]

    lock = threading.Lock()
    ticker = Ticker(make_app("custom", TICKER_LOCK=lock, TICKER_LOCK_RETRY=0.05))
    ticker.every(3600, lambda: None, name="hourly")
    ticker.start()
    wait_until(lambda: ticker.status()["is_runner"])
    assert len(lock_threads()) == 1  # the thread that holds it
    assert ticker.stop(timeout=10)
    wait_until(lambda: lock_threads() == [])
    with lock:  # held elsewhere: a failed take leaves no thread either
        assert ticker.run_pending() == 0.05 and not ticker.status()["is_runner"]
        wait_until(lambda: lock_threads() == [])


def test_a_bad_lock_setting_is_rejected(tmp_path):
    with pytest.raises(
        TypeError, match="TICKER_LOCK must be a path, a Redis URL, False, or an object .* got 42"
    ):
        Ticker(locked_app(tmp_path, TICKER_LOCK=42))
    with pytest.raises(ValueError, match="TICKER_LOCK_RETRY must be finite seconds > 0, got 0"):
        Ticker(locked_app(tmp_path, TICKER_LOCK_RETRY=0))


def two_tickers(tmp_path: Path, runs: list):
    tickers = []
    for i in range(2):
        ticker = Ticker(locked_app(tmp_path, "shared", TICKER_ENABLED=False))
        ticker.every(3600, lambda i=i: runs.append(i), name="hourly")
        ticker.every(0.2, lambda: None, name="fast", run_now=False)
        tickers.append(ticker)
    return tickers


def test_only_the_lock_holder_runs_and_a_takeover_keeps_the_grid(tmp_path):
    runs: list[int] = []
    first, second = two_tickers(tmp_path, runs)
    first.start()
    wait_until(lambda: runs == [0])
    second.start()
    fast_due = first.get("fast").next_run
    assert first.stop(WAIT)
    wait_until(lambda: second.get("fast").next_run is not None)
    assert runs == [0]  # the hourly run_now job did not run again
    taken_over = second.get("fast").next_run
    # the same 0.2 s grid: a whole number of ticks after the first holder's
    ticks = (taken_over - fast_due).total_seconds() / 0.2
    assert abs(ticks - round(ticks)) < 0.05, ticks
    assert second.stop(WAIT)


def test_a_waiting_process_takes_over_as_soon_as_the_runner_stops(tmp_path):
    runs: list[int] = []
    first, second = two_tickers(tmp_path, runs)
    for ticker in (first, second):
        ticker.app.config["TICKER_LOCK_RETRY"] = 60  # no retry could be this quick
    first.start()
    wait_until(lambda: runs == [0])
    second.start()
    assert first.stop(WAIT)
    wait_until(lambda: second.status()["is_runner"])
    assert second.stop(WAIT)


def test_jobs_added_after_the_lock_is_taken_share_the_grid_too(tmp_path):
    runs: list[int] = []
    first, second = two_tickers(tmp_path, runs)
    first.start()
    wait_until(lambda: runs == [0])
    second.start()
    late = [
        ticker.every(3600, lambda i=i: runs.append(10 + i), name="late")
        for i, ticker in enumerate((first, second))
    ]
    wait_until(lambda: runs == [0, 10])
    assert first.stop(WAIT)
    wait_until(lambda: second.get("fast").next_run is not None)
    assert late[1].next_run is not None  # planned on the first holder's grid:
    assert runs == [0, 10]  # it does not run again now
    assert second.stop(WAIT)


def test_a_job_added_to_a_running_ticker_has_its_next_run_at_once(tmp_path):
    ticker = Ticker(locked_app(tmp_path, TICKER_ENABLED=True))
    wait_until(lambda: ticker.status()["is_runner"])
    job = ticker.every(3600, lambda: None, name="later", run_now=False)
    expected = datetime.now(timezone.utc) + timedelta(hours=1)
    assert abs(job.next_run - expected) < timedelta(seconds=WAIT)
    job.cancel()
    assert job.next_run is None
    assert ticker.stop(WAIT)


# -- the deployment state: restarts continue, history survives --


def deployment(tmp_path: Path, clock: FakeClock, name: str = "deployed") -> Ticker:
    """One process's ticker on the shared lock file, stepped by ``clock``."""
    return fake_ticker(locked_app(tmp_path, name, TICKER_ENABLED=False), clock)


def saved(ticker: Ticker, clock: FakeClock, *jobs: Job) -> None:
    """Let the runs finish and the runner save them, as it does within 0.5 s."""
    settle(*jobs)
    clock.advance(0.5)


def ran_once_and_stopped(tmp_path: Path, clock: FakeClock, rec: Recorder) -> None:
    """A deployment that ran the 60 s job 'sync' at 1000, then stopped cleanly."""
    first = deployment(tmp_path, clock)
    first.every(60, rec, name="sync")
    clock.advance(0)
    saved(first, clock, first.get("sync"))
    assert first.stop(WAIT) and rec.calls == [1000.0]


def test_a_restart_soon_after_a_run_does_not_run_the_job_again(tmp_path):
    clock = FakeClock()
    rec = Recorder(clock)
    ran_once_and_stopped(tmp_path, clock, rec)
    clock.now += 1  # the deploy takes a second
    second = deployment(tmp_path, clock)
    job = second.every(60, rec, name="sync")
    clock.advance(0)
    settle(job)
    assert rec.calls == [1000.0]
    assert job.next_run == datetime.fromtimestamp(EPOCH + 1060, timezone.utc)
    clock.advance(1060 - clock.now)
    settle(job)
    assert rec.calls == [1000.0, 1060.0]
    assert second.stop(WAIT)


def test_a_restart_after_missed_ticks_runs_the_job_once_at_once(tmp_path):
    clock = FakeClock()
    rec = Recorder(clock)
    ran_once_and_stopped(tmp_path, clock, rec)

    clock.now += 5 * 60  # down for five ticks
    second = deployment(tmp_path, clock)
    job = second.every(60, rec, name="sync")
    clock.advance(0)
    settle(job)
    clock.advance(0)
    settle(job)
    assert rec.calls == [1000.0, 1300.5]  # once, not once per missed tick
    assert job.next_run == datetime.fromtimestamp(EPOCH + 1360.5, timezone.utc)
    assert second.stop(WAIT)


def test_run_now_false_keeps_its_first_due_time_across_restarts(tmp_path):
    clock = FakeClock()
    rec = Recorder(clock)
    for restart in range(4):  # a deploy every second, the job due after 3
        ticker = deployment(tmp_path, clock)
        ticker.every(3, rec, name="daily", run_now=False)
        clock.advance(0)
        clock.advance(0.5)
        settle(*ticker.jobs)
        assert ticker.stop(WAIT)
        clock.now += 0.5
    assert rec.calls == [1003.0]


def test_history_survives_a_restart(tmp_path):
    clock = FakeClock()
    first = deployment(tmp_path, clock)

    def sync():
        raise ConnectionError("feed down")

    first.every(10, sync, name="sync")
    clock.advance(0)
    settle(*first.jobs)
    clock.advance(10)
    saved(first, clock, *first.jobs)
    assert first.stop(WAIT)

    second = deployment(tmp_path, clock)
    job = second.every(10, sync, name="sync")
    clock.advance(0)
    assert (job.runs, job.failures, job.last_error) == (2, 2, "ConnectionError: feed down")
    assert job.last_run == datetime.fromtimestamp(EPOCH + 1010, timezone.utc)
    assert second.stop(WAIT)


def test_status_reads_the_same_in_a_process_that_does_not_run_the_jobs(tmp_path):
    clock = FakeClock()
    runner = deployment(tmp_path, clock)
    other = Ticker(
        locked_app(tmp_path, "deployed", TICKER_ENABLED=False), clock=clock, wall_clock=clock.wall
    )
    for ticker in (runner, other):
        ticker.every(60, lambda: None, name="sync")
        ticker.every(3600, lambda: None, name="hourly", run_now=False)
    clock.advance(0)
    saved(runner, clock, *runner.jobs)
    assert other.run_pending() == 0.05  # it cannot take the lease: try again then
    mine, theirs = runner.status(), other.status()
    assert mine["is_runner"] and not theirs["is_runner"]
    assert mine["jobs"] == theirs["jobs"]
    assert mine["runner"] == theirs["runner"] == runner.status()["runner"]  # since it took over
    assert theirs["runner"]["pid"] == os.getpid() and theirs["scope"] == "deployment"
    sync = theirs["jobs"][0]
    assert (sync["name"], sync["runs"], sync["running"]) == ("sync", 1, False)
    assert sync["last_run"] == datetime.fromtimestamp(EPOCH + 1000, timezone.utc).isoformat()
    assert sync["next_run"] == datetime.fromtimestamp(EPOCH + 1060, timezone.utc).isoformat()
    json.dumps(theirs)  # JSON-ready as it is
    assert runner.stop(WAIT)
    assert other.status()["runner"] is None


def test_status_without_a_shared_state_says_it_is_this_processs(ticker, clock):
    ticker.every(10, lambda: None, name="sync")
    started(ticker, clock)
    status = ticker.status()
    assert status["scope"] == "process" and status["is_runner"]
    assert [(j["name"], j["runs"]) for j in status["jobs"]] == [("sync", 1)]


def test_a_process_with_fewer_jobs_keeps_the_others_history(tmp_path):
    clock = FakeClock()
    first = deployment(tmp_path, clock)
    first.every(60, lambda: None, name="old")
    clock.advance(0)
    saved(first, clock, *first.jobs)
    assert first.stop(WAIT)
    for jobs in (["new"], ["old", "new"]):  # a rollout, then a rollback
        ticker = deployment(tmp_path, clock)
        for name in jobs:
            ticker.every(60, lambda: None, name=name)
        clock.advance(0)
        saved(ticker, clock, *ticker.jobs)
        assert ticker.stop(WAIT)
    assert ticker.get("old").runs == 1  # its history came back with it


@pytest.mark.parametrize(
    "damaged",
    [
        '{"version": 2, "runner": null, "folded": 0.0}\n{"name": "sync", trunc',
        '{"version": 2, "runner": null, "folded": 0.0}\n{"name": "sync"}',
        '{"version": 2, "runner": "me", "folded": 0.0}',
        '{"version": 2, "runner": null}',
        "[2]",
    ],
    ids=["cut short", "a row without fields", "a runner of no shape", "no folded", "no header"],
)
def test_a_damaged_state_file_is_ignored_with_a_warning(tmp_path, caplog, damaged):
    (tmp_path / "instance").mkdir()
    state = tmp_path / "instance" / "flask_ticker-deployed.lock.state"
    state.write_text(damaged)
    clock = FakeClock()
    ticker = deployment(tmp_path, clock)
    rec = Recorder(clock)
    ticker.every(60, rec, name="sync")
    clock.advance(0)
    settle(*ticker.jobs)
    assert rec.calls == [1000.0] and "damaged" in caplog.text
    assert ticker.stop(WAIT)


def test_an_app_factory_called_many_times_declares_its_jobs_again(tmp_path):
    ticker = Ticker()
    ran_in: list[Flask] = []

    def create_app(i: int) -> Flask:
        app = locked_app(tmp_path, f"factory{i}", TICKER_ENABLED=True)
        ticker.init_app(app)

        @ticker.every(3600)
        def sync():
            ran_in.append(current_app._get_current_object())

        return app

    apps = []
    for i in range(5):
        apps.append(create_app(i))
        wait_until(lambda: len(ran_in) == i + 1)
    assert ran_in == apps  # each app's run in its own context
    assert len(ticker.jobs) == 1 and ticker.app is apps[-1]
    assert ticker.stop(WAIT)


def test_another_function_under_a_taken_name_is_rejected(ticker):
    ticker.every(10, print, name="sync")
    with pytest.raises(ValueError, match="'sync' is already registered.*another function"):
        ticker.every(10, len, name="sync")


class CountingLock:
    def __init__(self, free: bool) -> None:
        self.free, self.calls = free, []

    def acquire(self, blocking: bool = True) -> bool:
        self.calls.append(("acquire", blocking))
        return self.free

    def release(self) -> None:
        self.calls.append(("release",))


def test_a_custom_lock_decides_who_runs(tmp_path):
    taken = CountingLock(free=False)
    runs = []
    ticker = Ticker(locked_app(tmp_path, TICKER_LOCK=taken, TICKER_ENABLED=False))
    ticker.every(3600, lambda: runs.append(1))
    ticker.start()
    wait_until(lambda: len(taken.calls) >= 3)  # it keeps trying, every 0.05 s
    assert runs == [] and set(taken.calls) == {("acquire", False)}
    taken.free = True
    wait_until(lambda: runs == [1])
    assert ticker.stop(WAIT)
    assert taken.calls[-1] == ("release",)


def test_a_failing_teardown_fails_the_task_and_keeps_its_worker():
    app = make_app(TICKER_ENABLED=False, TICKER_MAX_WORKERS=1)
    ticker = Ticker(app)
    calls = []

    @app.teardown_appcontext
    def broken_teardown(exc):
        calls.append(exc)
        if len(calls) == 1:
            raise OSError("session close failed")

    with app.app_context():
        first = run_in_background(lambda: "done")
    assert isinstance(first.exception(WAIT), OSError)
    with app.app_context():
        second = run_in_background(lambda: "done")
    assert second.result(WAIT) == "done"  # on the same, only worker
    assert ticker.stop(WAIT)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_a_forked_child_runs_no_job_and_the_parent_keeps_them(tmp_path):
    runs = tmp_path / "runs.txt"
    ticker = Ticker(locked_app(tmp_path, "forking", TICKER_ENABLED=False))
    ticker.every(0.05, lambda: runs.open("a").write(f"{os.getpid()}\n"), name="note")
    ticker.start()
    wait_until(lambda: runs.exists())
    pid = os.fork()
    if pid == 0:  # the child: any outcome but a clean exit fails the test
        code = 1
        try:
            time.sleep(0.5)
            code = 0 if not ticker.status()["is_runner"] else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0
    assert ticker.stop(WAIT)
    pids = {int(line) for line in runs.read_text().split()}
    assert pids == {os.getpid()}


# -- 12. promises under faults: async functions, failure floods, load, stop --


def test_a_coroutine_job_is_awaited_in_its_app_context_and_counted(app, ticker, clock):
    seen = []

    async def fetch_feed():
        await asyncio.sleep(0)
        seen.append(current_app._get_current_object())
        return "fetched"

    async def broken_feed():
        await asyncio.sleep(0)
        raise ValueError("bad feed")

    good, bad = ticker.every(10, fetch_feed), ticker.every(10, broken_feed)
    started(ticker, clock)
    assert seen == [app] and (good.runs, good.failures) == (1, 0)
    assert (bad.runs, bad.failures, bad.last_error) == (1, 1, "ValueError: bad feed")
    assert good.run() == "fetched"


def test_a_coroutine_task_sets_its_result_on_the_future(app, ticker):
    async def send_mail(to):
        await asyncio.sleep(0)
        return f"sent to {to}"

    with app.app_context():
        assert (
            run_in_background(send_mail, "a@example.com").result(WAIT) == "sent to a@example.com"
        )


def test_a_coroutine_without_the_async_extra_is_refused_at_registration(ticker, monkeypatch):
    monkeypatch.setitem(sys.modules, "asgiref", None)  # as if it were not installed

    async def fetch_feed():
        pass

    with pytest.raises(RuntimeError, match=r"pip install 'flask\[async\]'"):
        ticker.every(10, fetch_feed)
    with ticker.app.app_context(), pytest.raises(RuntimeError, match="async extra"):
        run_in_background(fetch_feed)
    assert ticker.jobs == []


def test_a_thousand_failures_in_a_row_log_one_traceback_and_grow_no_memory(ticker, clock, caplog):
    import tracemalloc

    def down():
        raise ConnectionError(f"database down, query {clock.now}")  # a new message each time

    job = ticker.every(1, down, name="sync")
    started(ticker, clock)
    assert [bool(r.exc_info) for r in caplog.records] == [True]
    for _ in range(100):  # warm up
        clock.advance(1)
        settle(job)
    # pytest's capture keeps every record: count the lines, keep none.
    lines = collections.Counter()

    class Counting(logging.Handler):
        def emit(self, record):
            lines["all"] += 1
            lines["tracebacks"] += record.exc_info is not None

    counting = Counting()
    ticker.log.addHandler(counting)
    ticker.log.propagate = False
    ours = [tracemalloc.Filter(True, flask_ticker.__file__)]
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot().filter_traces(ours)
        for _ in range(1000):
            clock.advance(1)
            settle(job)
        after = tracemalloc.take_snapshot().filter_traces(ours)
    finally:
        tracemalloc.stop()
        ticker.log.removeHandler(counting)
        ticker.log.propagate = True
    grown = sum(stat.size_diff for stat in after.compare_to(before, "filename"))
    assert job.failures == 1101
    assert grown < 16 * 1024, grown
    assert lines == {"all": 1000, "tracebacks": 0}  # one line a failure, no traceback again


def test_ten_thousand_tasks_from_eight_threads_each_run_once(app):
    ticker = Ticker(app)
    ran = collections.Counter()
    lock = threading.Lock()

    def task(i):
        with lock:
            ran[i] += 1

    def submit(start):
        with app.app_context():
            return [run_in_background(task, i) for i in range(start, start + 1250)]

    futures = []
    threads = [
        threading.Thread(target=lambda s=s: futures.extend(submit(s)))
        for s in range(0, 10_000, 1250)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert ticker.stop(30)
    assert len(futures) == 10_000 and all(f.done() and not f.cancelled() for f in futures)
    assert sorted(ran) == list(range(10_000)) and set(ran.values()) == {1}


def test_a_task_submitted_from_inside_a_job_runs(ticker, clock):
    results = []
    job = ticker.every(10, lambda: results.append(run_in_background(lambda: "inner")))
    started(ticker, clock)
    assert results[0].result(WAIT) == "inner" and job.failures == 0


def test_stop_from_inside_a_job_does_not_deadlock(app):
    ticker = Ticker(app)
    stopped = threading.Event()
    ticker.every(3600, lambda: (ticker.stop(WAIT), stopped.set()), name="stopper")
    ticker.start()
    assert stopped.wait(WAIT)
    wait_until(lambda: not ticker.started)


def test_stop_from_two_threads_at_once_is_safe(app):
    ticker = Ticker(app)
    entered, release = threading.Event(), threading.Event()
    ticker.every(3600, lambda: (entered.set(), release.wait(WAIT)), name="slow")
    ticker.start()
    assert entered.wait(WAIT)
    results = []
    stoppers = [
        threading.Thread(target=lambda: results.append(ticker.stop(WAIT))) for _ in range(2)
    ]
    for stopper in stoppers:
        stopper.start()
    release.set()
    for stopper in stoppers:
        stopper.join(WAIT)
    assert results == [True, True] and not ticker.started


def test_start_stop_cycles_leak_no_threads(app):
    ticker = Ticker(app)
    ticker.every(3600, lambda: None, name="hourly")
    ticker.start()
    assert ticker.stop(WAIT)
    before = threading.active_count()
    for _ in range(20):
        ticker.start()
        assert ticker.stop(WAIT)
    wait_until(lambda: threading.active_count() <= before)


def test_a_fault_in_the_scheduler_itself_is_logged_critical_and_the_loop_goes_on(app, caplog):
    failing = [False]

    def clock():
        if failing[0] and threading.current_thread().name == "flask-ticker":
            failing[0] = False
            raise RuntimeError("injected fault")
        return time.monotonic()

    app.config["TICKER_LOCK_RETRY"] = 0.05
    ticker = Ticker(app, clock=clock)
    ran = []
    ticker.start()
    failing[0] = True
    ticker.every(0.05, lambda: ran.append(1), name="often")  # wakes the loop
    wait_until(lambda: len(ran) >= 3)
    [record] = [r for r in caplog.records if r.levelno == logging.CRITICAL]
    assert "scheduler failed" in record.getMessage() and record.exc_info[0] is RuntimeError
    assert ticker.started
    assert ticker.stop(WAIT)


# -- 13. operating it: signals and the flask ticker command --


def test_each_signal_fires_once_per_event_with_its_arguments(app, ticker, clock):
    seen = []

    def receiver(name):
        def receive(sender, **kwargs):
            seen.append((name, sender, has_app_context(), kwargs))

        return receive

    receivers = {
        name: receiver(name)
        for name in ("job_started", "job_finished", "job_failed", "job_skipped", "task_failed")
    }
    for name, receive in receivers.items():
        getattr(flask_ticker, name).connect(receive)
    try:
        release = threading.Event()
        ok = ticker.every(10, lambda: "done", name="ok")
        bad = ticker.every(10, lambda: 1 / 0, name="bad")
        slow = ticker.every(10, lambda: release.wait(WAIT), name="slow")
        started(ticker, clock, wait_for_runs=False)
        settle(ok, bad)
        clock.advance(10)  # slow is still running: a skip
        release.set()
        settle(ok, bad, slow)
        with app.app_context():
            run_in_background(lambda: {}["missing"]).exception(WAIT)
        wait_until(lambda: any(name == "task_failed" for name, *_ in seen))
    finally:
        for name, receive in receivers.items():
            getattr(flask_ticker, name).disconnect(receive)
    assert all(sender is app and in_context for _, sender, in_context, _ in seen)
    events = [(name, kwargs["job"].name if kwargs["job"] else None) for name, _, _, kwargs in seen]
    assert events.count(("job_started", "ok")) == 2 and events.count(("job_finished", "ok")) == 2
    assert events.count(("job_failed", "bad")) == 2 and ("job_skipped", "slow") in events
    finished = next(k for n, _, _, k in seen if n == "job_finished")
    assert finished["result"] == "done" and finished["duration"] >= 0
    failed = next(k for n, _, _, k in seen if n == "job_failed")
    assert isinstance(failed["exception"], ZeroDivisionError) and failed["duration"] >= 0
    skipped = next(k for n, _, _, k in seen if n == "job_skipped")
    assert "still running" in skipped["reason"]
    task = next(k for n, _, _, k in seen if n == "task_failed")
    assert isinstance(task["exception"], KeyError) and callable(task["func"])


def test_a_receiver_that_raises_is_logged_and_changes_nothing(ticker, clock, caplog):
    def broken(sender, **kwargs):
        raise RuntimeError("receiver bug")

    flask_ticker.job_finished.connect(broken)
    try:
        rec = Recorder(clock)
        job = ticker.every(10, rec)
        started(ticker, clock)
        clock.advance(10)
        settle(job)
    finally:
        flask_ticker.job_finished.disconnect(broken)
    assert rec.calls == [1000.0, 1010.0] and (job.runs, job.failures) == (2, 0)
    assert "a receiver of flask_ticker.job_finished raised" in caplog.text


def test_the_extension_adds_no_url_rule(app):
    before = [rule.rule for rule in app.url_map.iter_rules()]
    Ticker(app)
    assert [rule.rule for rule in app.url_map.iter_rules()] == before


def test_flask_ticker_list_shows_each_job_and_json_shows_the_status(tmp_path):
    app = locked_app(tmp_path, "listed")
    ticker = Ticker(app)
    ticker.every(3600, lambda: None, name="hourly")
    ticker.every(60, lambda: 1 / 0, name="broken")
    for job in ticker.jobs:
        with contextlib.suppress(ZeroDivisionError):
            ticker.get(job.name).run()
    runner = app.test_cli_runner()
    listed = runner.invoke(args=["ticker", "list"])
    assert listed.exit_code == 0, listed.output
    lines = listed.output.splitlines()
    assert lines[0] == "no process runs the jobs now"
    assert lines[1].startswith("hourly  every 1h  not scheduled  ok 0s ago")
    assert "broken  every 1m" in lines[2] and "failed 0s ago: ZeroDivisionError" in lines[2]
    as_json = runner.invoke(args=["ticker", "list", "--json"])
    assert json.loads(as_json.output)["jobs"] == ticker.status()["jobs"]
    assert not ticker.started


def test_flask_ticker_run_runs_the_job_and_says_how_it_went(tmp_path):
    app = locked_app(tmp_path, "run")
    ticker = Ticker(app)
    ticker.every(3600, lambda: "fresh", name="refresh")
    ticker.every(3600, lambda: 1 / 0, name="broken")
    runner = app.test_cli_runner()
    ok = runner.invoke(args=["ticker", "run", "refresh"])
    assert ok.exit_code == 0 and "job 'refresh' ok" in ok.output and "'fresh'" in ok.output
    assert ticker.status()["jobs"][0]["runs"] == 1  # recorded in the deployment state
    bad = runner.invoke(args=["ticker", "run", "broken"])
    assert bad.exit_code == 1 and "ZeroDivisionError" in bad.output
    unknown = runner.invoke(args=["ticker", "run", "nope"])
    assert unknown.exit_code == 2 and "the jobs are: refresh, broken" in unknown.output
    assert "Traceback" not in unknown.output
    missing = runner.invoke(args=["ticker", "run"])
    assert missing.exit_code == 2 and "Missing argument" in missing.output
    assert not ticker.started


def add_the_docs_health_check(app: Flask, ticker: Ticker) -> None:
    doc = (HERE / "docs" / "operating.md").read_text()
    view = doc.split('```python\n@app.get("/healthz")')[1].split("```")[0]
    exec(
        '@app.get("/healthz")' + view,
        {
            "app": app,
            "ticker": ticker,
            "datetime": datetime,
            "timezone": timezone,
            "timedelta": timedelta,
            "login_required": lambda view: view,
        },
    )


def test_the_docs_health_check_answers_503_without_a_runner_or_with_a_stale_job(tmp_path):
    app = locked_app(tmp_path, "healthy", TICKER_ENABLED=False)  # started below
    behind = [0.0]  # how far the ticker's wall clock is behind, to make a run look old
    ticker = Ticker(app, wall_clock=lambda: time.time() - behind[0])
    ticker.every(3600, lambda: None, name="hourly")
    ticker.every(3600, lambda: None, name="not_yet", run_now=False)  # never stale
    add_the_docs_health_check(app, ticker)
    client = app.test_client()
    assert client.get("/healthz").status_code == 503  # nothing runs the jobs
    ticker.start()
    wait_until(lambda: client.get("/healthz").status_code == 200)
    behind[0] = 3 * 3600
    ticker.every(3600, lambda: None, name="late")  # runs now, which looks 3 h ago
    wait_until(lambda: client.get("/healthz").get_json() == {"ok": False, "stale": ["late"]})
    assert ticker.stop(WAIT)


def test_a_restart_after_a_stop_that_timed_out_still_runs_jobs(app):
    app.config["TICKER_MAX_WORKERS"] = 1
    ticker = Ticker(app)
    release, later = threading.Event(), []
    ticker.every(3600, lambda: release.wait(WAIT), name="hung")
    ticker.start()
    wait_until(lambda: ticker.get("hung").running)
    assert ticker.stop(timeout=0.05) is False  # the hung run outlives it
    ticker.get("hung").cancel()
    ticker.every(3600, lambda: later.append(1), name="later")
    ticker.start()
    release.set()  # the one worker finishes the old run, then takes the new
    wait_until(lambda: later == [1])
    assert ticker.stop(WAIT)


def test_run_pending_without_an_app_says_how_to_bind_one():
    with pytest.raises(RuntimeError, match="run_pending\\(\\) needs an app"):
        Ticker().run_pending()


# -- 13. what a newcomer runs into: status pages, names, redeclaration, display --


def lock_under_a_file(tmp_path: Path) -> str:
    (tmp_path / "plain").write_text("not a folder")
    return str(tmp_path / "plain" / "x.lock")


def test_status_with_an_unusable_lock_path_says_why_instead_of_raising(tmp_path):
    app = locked_app(tmp_path, TICKER_LOCK=lock_under_a_file(tmp_path), TICKER_ENABLED=False)
    ticker = Ticker(app)
    ticker.every(3600, lambda: None, name="hourly")
    status = ticker.status()
    assert status["error"].startswith(f"TICKER_LOCK ({tmp_path / 'plain' / 'x.lock'})")
    assert "NotADirectoryError" in status["error"] and "\n" not in status["error"]
    assert [job["name"] for job in status["jobs"]] == ["hourly"]
    assert json.loads(json.dumps(status)) == status


def test_status_has_no_error_when_the_lease_can_be_used(tmp_path, ticker):
    assert ticker.status()["error"] is None
    assert Ticker(locked_app(tmp_path, TICKER_ENABLED=False)).status()["error"] is None


def test_flask_ticker_list_with_an_unusable_lock_path_prints_one_line_and_exits_1(tmp_path):
    app = locked_app(tmp_path, TICKER_LOCK=lock_under_a_file(tmp_path), TICKER_ENABLED=False)
    Ticker(app).every(3600, lambda: None, name="hourly")
    result = app.test_cli_runner().invoke(args=["ticker", "list"])
    assert result.exit_code == 1
    assert "TICKER_LOCK" in result.output and "NotADirectoryError" in result.output
    assert "Traceback" not in result.output


def test_a_job_declared_in_a_factory_is_named_without_locals(ticker):
    def create_app():
        @ticker.every(60)
        def heartbeat():
            return "beat"

    create_app()
    assert [job.name for job in ticker.jobs] == ["heartbeat"]
    assert ticker.get("heartbeat").run() == "beat"


def test_two_modules_functions_of_one_name_collide_with_a_clear_error(ticker, tmp_path):
    for module in ("shop_jobs", "blog_jobs"):
        (tmp_path / f"{module}.py").write_text("def cleanup():\n    return __name__\n")
    sys.path.insert(0, str(tmp_path))
    try:
        import blog_jobs
        import shop_jobs
    finally:
        sys.path.remove(str(tmp_path))
    ticker.every(3600, shop_jobs.cleanup)
    with pytest.raises(ValueError, match="'cleanup' is already registered.*pass name="):
        ticker.every(3600, blog_jobs.cleanup)
    assert ticker.every(3600, blog_jobs.cleanup, name="blog_cleanup").run() == "blog_jobs"


def test_two_factory_functions_of_one_short_name_collide(ticker):
    def make(text):
        def heartbeat():
            return text

        return heartbeat

    def other_factory():
        def heartbeat():
            pass

        return heartbeat

    ticker.every(60, make("a"))
    with pytest.raises(ValueError, match="'heartbeat' is already registered"):
        ticker.every(60, other_factory())


def cleanup():
    pass


def test_declaring_a_job_again_with_another_interval_raises_and_the_first_stands(ticker):
    job = ticker.every(60, cleanup)
    with pytest.raises(ValueError, match="job 'cleanup' is already declared on this app.*1m"):
        ticker.every(3600, cleanup)
    assert ticker.jobs == [job] and job.interval == 60


def test_declaring_a_job_again_with_another_at_raises(ticker):
    ticker.every(timedelta(days=1), cleanup, at="03:00", tz="UTC")
    with pytest.raises(ValueError, match="job 'cleanup' is already declared"):
        ticker.every(timedelta(days=1), cleanup, at="04:00", tz="UTC")
    with pytest.raises(ValueError, match="job 'cleanup' is already declared"):
        ticker.every(timedelta(days=1), cleanup, at="03:00", tz="Europe/Berlin")
    assert ticker.get("cleanup").at == "03:00" and str(ticker.get("cleanup").tz) == "UTC"


def test_one_function_under_two_names_is_two_jobs(ticker):
    ticker.every(3600, cleanup, name="ok")
    ticker.every(120, cleanup, name="later")
    assert [(job.name, job.interval) for job in ticker.jobs] == [("ok", 3600), ("later", 120)]


def test_a_factory_called_again_replans_a_job_declared_with_another_interval(clock):
    ticker = Ticker(clock=clock, wall_clock=clock.wall)
    clock.ticker = ticker

    def create_app(every):
        app = make_app("factory", TICKER_ENABLED=False)
        ticker.init_app(app)
        ticker.every(every, cleanup)
        return app

    create_app(60)
    started(ticker, clock)
    create_app(3600)
    assert [(job.name, job.interval) for job in ticker.jobs] == [("cleanup", 3600)]
    clock.advance(0)
    assert ticker.get("cleanup").next_run == datetime.fromtimestamp(
        EPOCH + 1000 + 3600, timezone.utc
    )
    ticker.stop(WAIT)


def test_a_plain_function_that_returns_a_coroutine_has_it_awaited(ticker, clock):
    done = []

    async def fetch():
        await asyncio.sleep(0)
        done.append(1)
        return "fetched"

    def job():
        return fetch()

    with warnings_as_errors():
        registered = ticker.every(10, job)
        started(ticker, clock)
        assert done == [1] and (registered.runs, registered.failures) == (1, 0)
        assert registered.run() == "fetched"


def test_a_coroutine_returned_without_the_async_extra_fails_loudly(
    ticker, clock, monkeypatch, caplog
):
    async def fetch():
        pass

    job = ticker.every(10, lambda: fetch(), name="wrapped")
    monkeypatch.setitem(sys.modules, "asgiref", None)  # as if it were not installed
    with warnings_as_errors():
        started(ticker, clock)
        gc.collect()
    assert (job.runs, job.failures) == (1, 1)
    assert "pip install 'flask[async]'" in job.last_error
    assert "job 'wrapped' failed" in caplog.text


@contextlib.contextmanager
def warnings_as_errors():
    """Fails on "coroutine ... was never awaited", which Python only warns of."""
    import warnings

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
        gc.collect()
    assert [str(w.message) for w in caught if "never awaited" in str(w.message)] == []


def test_next_run_is_the_due_time_of_the_next_run(ticker, clock):
    job = ticker.every(60, Recorder(clock), name="minutely")
    assert job.next_run is None  # not planned before the ticker starts
    started(ticker, clock)
    due = datetime.fromtimestamp(EPOCH + 1060, timezone.utc)
    assert job.next_run == due
    assert ticker.status()["jobs"][0]["next_run"] == due.isoformat()
    clock.advance(60)
    settle(job)
    assert job.next_run == due + timedelta(seconds=60)
    job.pause()
    assert job.next_run is None and ticker.status()["jobs"][0]["next_run"] is None


def test_flask_ticker_list_shows_durations_and_times_in_one_format(tmp_path):
    app = locked_app(tmp_path, "shown", TICKER_ENABLED=False)
    ticker = Ticker(app)
    ticker.every(3600, lambda: None, name="hourly").run()
    ticker.every(timedelta(days=1), lambda: None, name="nightly", at="03:00", tz="Europe/Berlin")
    ticker.start()
    try:
        lines = app.test_cli_runner().invoke(args=["ticker", "list"]).output.splitlines()
    finally:
        assert ticker.stop(WAIT)
    stamp = r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d"
    hourly = next(line for line in lines if line.startswith("hourly"))
    nightly = next(line for line in lines if line.startswith("nightly"))
    assert re.search(rf"next {stamp} UTC ", hourly)
    assert re.search(rf"next {stamp} CES?T ", nightly)
    assert re.search(r"ok \d+s ago, \d+(\.\d\d)? ms ", hourly), hourly
    assert "e-0" not in hourly


@pytest.mark.parametrize(
    "seconds, shown", [(0.0000908, "0.09 ms"), (0.0123, "12 ms"), (1.234, "1.2 s")]
)
def test_a_run_by_hand_reports_its_duration_in_words(tmp_path, seconds, shown):
    app = locked_app(tmp_path, "timed", TICKER_ENABLED=False)
    now = [0.0]
    ticker = Ticker(app, clock=lambda: now[0])

    def hourly():
        now[0] += seconds  # the run takes this long on the ticker's clock

    ticker.every(3600, hourly)
    result = app.test_cli_runner().invoke(args=["ticker", "run", "hourly"])
    assert f"job 'hourly' ok in {shown}," in result.output, result.output


def test_the_docs_health_check_answers_503_with_the_reason_the_lease_cannot_be_used(tmp_path):
    app = locked_app(tmp_path, TICKER_LOCK=lock_under_a_file(tmp_path), TICKER_ENABLED=False)
    ticker = Ticker(app)
    add_the_docs_health_check(app, ticker)
    answer = app.test_client().get("/healthz")
    assert answer.status_code == 503
    assert answer.get_json()["error"] == ticker.status()["error"]
    assert "NotADirectoryError" in answer.get_json()["error"]
