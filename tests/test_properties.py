"""The schedule's promises, checked on random schedules, and bad input fuzzed.

The scheduling properties drive a real ticker through `Ticker.run_pending`
with fake clocks: no test sleeps to wait for time.  A run really occupies a
pool thread until the fake clock passes its end, so "still running" is the
scheduler's own, not a model of it.
"""

from __future__ import annotations

import math
import threading
from datetime import timedelta

import pytest
from flask import Flask
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flask_ticker import Ticker

WAIT = 10.0
EPOCH = 1_800_000_000.0


class World:
    """A ticker on fake clocks, and job functions that take fake time."""

    def __init__(self) -> None:
        self.now = 0.0
        app = Flask("properties")
        app.config.update(TICKER_LOCK=False, TICKER_ENABLED=False, TICKER_MAX_WORKERS=8)
        self.ticker = Ticker(app, clock=lambda: self.now, wall_clock=lambda: EPOCH + self.now)
        self.cond = threading.Condition()
        self.ends: dict[str, float] = {}  # the job's run in progress: when it ends
        self.starts: dict[str, list[float]] = {}
        self.passes = [0.0]
        self.pass_no = 0  # which pass started a run: a pause can come in the same instant
        self.started_in: dict[str, list[int]] = {}

    def job(self, duration: float):
        def run(name: str) -> None:
            with self.cond:
                start = self.now
                self.starts[name].append(start)
                self.started_in[name].append(self.pass_no)
                self.ends[name] = start + duration
                self.cond.notify_all()
                assert self.cond.wait_for(lambda: self.now >= start + duration, WAIT)
                del self.ends[name]
                self.cond.notify_all()

        return run

    def add(self, name: str, interval: float, duration: float, run_now: bool) -> None:
        self.starts[name], self.started_in[name] = [], []
        self.ticker.every(interval, self.job(duration), name=name, run_now=run_now, args=(name,))

    def settle(self) -> None:
        """Wait until every run that was started has begun, and every run
        that ends by now has ended, in the job's own figures too."""
        jobs = self.ticker.jobs
        with self.cond:
            assert self.cond.wait_for(
                lambda: all(
                    (job.name in self.ends) == job.running
                    or (job.running and self.ends.get(job.name, math.inf) <= self.now)
                    for job in jobs
                    if job.name in self.starts
                ),
                WAIT,
            )
            assert self.cond.wait_for(
                lambda: all(end > self.now for end in self.ends.values()), WAIT
            )
        for job in jobs:
            deadline = threading.Event()
            while job.running and job.name not in self.ends:
                deadline.wait(0.001)

    def close(self) -> None:
        """Let every run end, then stop the ticker."""
        with self.cond:
            self.now += 1000
            self.cond.notify_all()
        assert self.ticker.stop(WAIT)

    def step(self, seconds: float) -> None:
        with self.cond:
            self.now += seconds
            self.cond.notify_all()
        self.settle()
        self.run_pending()

    def run_pending(self) -> None:
        self.pass_no += 1
        self.ticker.run_pending()
        self.passes.append(self.now)
        self.settle()


intervals = st.sampled_from([0.5, 1.0, 2.5, 3.0, 7.0, 10.0])
durations = st.floats(min_value=0.01, max_value=25.0)
jobs = st.lists(st.tuples(intervals, durations, st.booleans()), min_size=1, max_size=4)
steps = st.lists(
    st.one_of(
        st.tuples(st.just("advance"), st.floats(min_value=0.01, max_value=4.0)),
        st.tuples(st.just("suspend"), st.floats(min_value=5.0, max_value=60.0)),
        st.tuples(st.just("pause"), st.integers(0, 3)),
        st.tuples(st.just("resume"), st.integers(0, 3)),
        st.tuples(st.just("cancel"), st.integers(0, 3)),
        st.tuples(st.just("add"), st.tuples(intervals, durations, st.booleans())),
    ),
    min_size=1,
    max_size=40,
)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(jobs, steps)
def test_random_schedules_keep_every_promise(initial, ops):
    world = World()
    ticker = world.ticker
    origins, paused, cancelled, run_times = {}, {}, {}, {}
    try:
        for i, (interval, duration, run_now) in enumerate(initial):
            world.add(f"j{i}", interval, duration, run_now)
            origins[f"j{i}"] = (0.0 if run_now else interval, interval, duration)
        world.run_pending()
        for op, arg in ops:
            if op in ("advance", "suspend"):
                world.step(arg)
                continue
            names = [job.name for job in ticker.jobs]
            if op == "add":
                name = f"j{len(origins)}"
                interval, duration, run_now = arg
                world.add(name, interval, duration, run_now)
                origins[name] = (world.now + (0 if run_now else interval), interval, duration)
                world.run_pending()
            elif names:
                job = ticker.get(names[arg % len(names)])
                # Pass numbers: the runs of the pass before it started already.
                if op == "pause":
                    if not job.paused:
                        paused.setdefault(job.name, []).append([world.pass_no, math.inf])
                    job.pause()
                elif op == "resume" and job.paused:
                    job.resume()
                    paused[job.name][-1][1] = world.pass_no
                elif op == "cancel":
                    job.cancel()
                    cancelled[job.name] = world.pass_no
        run_times = world.starts
    finally:
        world.close()

    passes = sorted(set(world.passes))
    for name, starts in run_times.items():
        origin, interval, duration = origins[name]
        # A job never overlaps itself.
        assert all(b >= a + duration for a, b in zip(starts, starts[1:])), (name, starts)
        # Every run starts at the first pass at or after a tick of its grid,
        # and a pass starts at most one run of it: a suspension catches up once.
        assert len(starts) == len(set(starts))
        for start in starts:
            previous = max([p for p in passes if p < start], default=-math.inf)
            k = math.floor((start - origin) / interval + 1e-9)
            assert origin + k * interval > previous - 1e-9, (name, start, previous)
        # A paused job never runs; a cancelled one never runs again.
        in_pass = world.started_in[name]
        for begin, end in paused.get(name, []):
            assert not [n for n in in_pass if begin < n <= end], (name, begin, end, in_pass)
        if name in cancelled:
            assert not [n for n in in_pass if n > cancelled[name]], (name, in_pass)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.floats(min_value=0.01, max_value=30.0), min_size=1, max_size=30), intervals)
def test_due_ticks_are_runs_plus_skipped(advances, interval):
    world = World()
    world.add("job", interval, 0.01, True)
    world.run_pending()
    for seconds in advances:
        world.step(seconds)
    job = world.ticker.get("job")
    # ticks 0, interval, ... up to now, compared exactly, as the scheduler does
    due = sum(1 for k in range(int(world.now / interval) + 2) if k * interval <= world.now)
    try:
        assert job.runs + job.skipped + job.running == due
    finally:
        world.close()


# -- bad input is refused at registration, naming the argument and the value --


def fresh_ticker() -> Ticker:
    app = Flask("fuzzed")
    app.config.update(TICKER_LOCK=False, TICKER_ENABLED=False)
    return Ticker(app)


anything = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=5),
    st.binary(max_size=3),
    st.timedeltas(),
    st.lists(st.integers(), max_size=2),
)


@settings(max_examples=300, deadline=None)
@given(anything)
def test_every_accepts_a_good_interval_and_names_a_bad_one(interval):
    ticker = fresh_ticker()
    keep = ticker.every(60, print, name="keep")
    seconds = interval.total_seconds() if isinstance(interval, timedelta) else interval
    good = (
        not isinstance(interval, bool)
        and isinstance(seconds, (int, float))
        and 0 < seconds <= 100 * 365.25 * 86400
    )
    if good:
        assert ticker.every(interval, print, name="new").interval == float(seconds)
    else:
        with pytest.raises((TypeError, ValueError)) as info:
            ticker.every(interval, print, name="new")
        assert "interval for job 'new'" in str(info.value) and repr(interval) in str(info.value)
        assert ticker.jobs == [keep]


@settings(max_examples=200, deadline=None)
@given(anything)
def test_every_names_a_bad_name_or_function(value):
    ticker = fresh_ticker()
    keep = ticker.every(60, print, name="keep")
    if value is not None and not (isinstance(value, str) and value):  # None: the function's
        with pytest.raises(TypeError, match="name must be a non-empty str") as info:
            ticker.every(60, print, name=value)
        assert repr(value) in str(info.value)
    if value is not None and not callable(value):  # None: the decorator form
        with pytest.raises(TypeError, match="must be callable") as info:
            ticker.every(60, value, name="new")
        assert repr(value) in str(info.value)
    assert ticker.jobs == [keep] or [j.name for j in ticker.jobs][:1] == ["keep"]


KEYS = [
    "TICKER_ENABLED",
    "TICKER_MAX_WORKERS",
    "TICKER_SHUTDOWN_TIMEOUT",
    "TICKER_LOCK",
    "TICKER_LOCK_RETRY",
]


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(KEYS), anything)
def test_every_config_key_names_itself_and_the_bad_value(key, value):
    app = Flask("configured")
    app.config.update({"TICKER_LOCK": False, "TICKER_ENABLED": False, key: value})
    try:
        ticker = Ticker(app)
    except (TypeError, ValueError) as exc:
        assert key in str(exc) and repr(value) in str(exc), str(exc)
        assert "ticker" not in app.extensions
    else:
        assert ticker.stop(WAIT)
