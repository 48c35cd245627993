"""at=: jobs at a time of the local clock, driven through DST changes and
wall-clock steps with the injectable clocks, in milliseconds."""

from __future__ import annotations

import time
from datetime import datetime, timedelta, timezone, tzinfo
from zoneinfo import ZoneInfo

import pytest
from click.testing import CliRunner
from flask import Flask
from hypothesis import given, settings
from hypothesis import strategies as st

from flask_ticker import Ticker

BERLIN = ZoneInfo("Europe/Berlin")
DAY, HOUR, WEEK = 86400, 3600, 604800


class Clocks:
    """A monotonic clock and a wall clock that the test moves; ``step``
    moves the wall clock alone, as NTP or someone at the console may."""

    def __init__(self, wall: datetime) -> None:
        self.now = 1000.0
        self.base = wall.timestamp() - self.now

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return self.base + self.now

    def step(self, seconds: float) -> None:
        self.base += seconds


def local(wall: float, tz=BERLIN) -> str:
    return datetime.fromtimestamp(wall, tz).strftime("%Y-%m-%d %H:%M:%S %Z")


@pytest.fixture
def ticker_at(tmp_path):
    """ticker_at(start, **config) -> (ticker, clocks, runs); runs holds the
    local time of every run.  A lock file in tmp_path keeps the state."""
    made = []

    def make(start: datetime, **config):
        app = Flask("walls", instance_path=str(tmp_path / "instance"))
        app.config.update({"TICKER_TIMEZONE": "Europe/Berlin", **config})
        clocks = Clocks(start)
        ticker = Ticker(app, clock=clocks, wall_clock=clocks.wall)
        made.append(ticker)
        return ticker, clocks

    yield make
    for ticker in made:
        ticker.stop(timeout=10)


def recorder(clocks: Clocks, tz=BERLIN):
    runs: list[str] = []
    return runs, lambda: runs.append(local(clocks.wall(), tz))


def step_through(ticker: Ticker, clocks: Clocks, until: float) -> None:
    """Pass after pass, as the thread would make them, each when the next
    job is due on the wall clock, until the wall time ``until``; each run
    finishes before the next pass."""
    for _ in range(10_000):  # a scheduler that never gets there fails, not hangs
        if clocks.wall() >= until:
            return
        ticker.run_pending()
        while any(job.running for job in ticker.jobs):
            time.sleep(0.0005)
        due = min((job.next_run.timestamp() for job in ticker.jobs if job.next_run), default=until)
        clocks.now += max(1e-3, min(due, until) - clocks.wall())
    raise AssertionError(f"still short of {local(until)} after 10,000 passes")


def berlin(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%d %H:%M:%S").replace(tzinfo=BERLIN)


def test_a_daily_job_runs_at_its_local_time_not_when_the_ticker_starts(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    job = ticker.every(timedelta(days=1), job_func, name="nightly", at="03:00")
    step_through(ticker, clocks, berlin("2026-12-05 12:00:00").timestamp())
    assert runs == [
        "2026-12-03 03:00:00 CET",
        "2026-12-04 03:00:00 CET",
        "2026-12-05 03:00:00 CET",
    ]
    assert job.next_run == datetime(2026, 12, 6, 2, 0, tzinfo=timezone.utc)
    assert job.tz == BERLIN and job.at == "03:00"


def test_run_now_runs_once_at_once_then_at_the_wall_times(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at="03:00", run_now=True)
    step_through(ticker, clocks, berlin("2026-12-03 12:00:00").timestamp())
    assert runs == ["2026-12-02 10:00:00 CET", "2026-12-03 03:00:00 CET"]


@pytest.mark.parametrize(
    "at, expected",
    [
        (
            "02:30",
            [
                "2026-03-28 02:30:00 CET",
                "2026-03-29 03:00:00 CEST",  # skipped: after the gap
                "2026-03-30 02:30:00 CEST",
            ],
        ),
        (
            "03:00",
            ["2026-03-28 03:00:00 CET", "2026-03-29 03:00:00 CEST", "2026-03-30 03:00:00 CEST"],
        ),
    ],
)
def test_on_a_spring_forward_day_only_a_skipped_time_moves_to_the_gaps_end(
    ticker_at, at, expected
):
    ticker, clocks = ticker_at(berlin("2026-03-27 12:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at=at)
    step_through(ticker, clocks, berlin("2026-03-30 12:00:00").timestamp())
    assert runs == expected


def test_a_time_that_fall_back_repeats_runs_once_at_its_first_occurrence(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-10-24 12:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at="02:30")
    step_through(ticker, clocks, berlin("2026-10-26 12:00:00").timestamp())
    assert runs == ["2026-10-25 02:30:00 CEST", "2026-10-26 02:30:00 CET"]


def test_an_hourly_job_runs_once_in_each_real_hour_across_fall_back(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-10-25 00:30:00"))
    runs, job_func = recorder(clocks)
    ticker.every(HOUR, job_func, name="quarter", at=":15")
    step_through(ticker, clocks, berlin("2026-10-25 04:00:00").timestamp())
    assert runs == [
        "2026-10-25 01:15:00 CEST",
        "2026-10-25 02:15:00 CEST",
        "2026-10-25 02:15:00 CET",
        "2026-10-25 03:15:00 CET",
    ]


def test_a_weekly_job_runs_on_its_day(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))  # a Wednesday
    runs, job_func = recorder(clocks)
    ticker.every(timedelta(weeks=1), job_func, name="report", at="mon 09:00")
    step_through(ticker, clocks, berlin("2026-12-15 00:00:00").timestamp())
    assert runs == ["2026-12-07 09:00:00 CET", "2026-12-14 09:00:00 CET"]


@pytest.mark.parametrize("step", [3600, -3600])
def test_a_wall_clock_step_away_from_a_time_neither_doubles_nor_skips_it(ticker_at, step):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at="03:00")
    step_through(ticker, clocks, berlin("2026-12-02 22:00:00").timestamp())
    clocks.step(step)
    step_through(ticker, clocks, berlin("2026-12-04 12:00:00").timestamp())
    assert runs == ["2026-12-03 03:00:00 CET", "2026-12-04 03:00:00 CET"]


def test_a_process_not_scheduled_across_the_time_gives_one_catch_up_run(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    job = ticker.every(DAY, job_func, name="nightly", at="03:00")
    ticker.run_pending()
    clocks.now += 3 * DAY  # asleep: both clocks moved on, nothing ran
    step_through(ticker, clocks, berlin("2026-12-05 12:00:00").timestamp())
    assert runs == ["2026-12-05 10:00:00 CET"]
    assert job.skipped == 2


def test_a_machine_asleep_across_the_time_runs_it_once_on_waking(ticker_at):
    # Asleep, the monotonic clock stands still; only the wall clock moves.
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at="03:00")
    ticker.run_pending()
    clocks.step(3 * DAY)
    step_through(ticker, clocks, berlin("2026-12-06 12:00:00").timestamp())
    assert runs == ["2026-12-05 10:00:00 CET", "2026-12-06 03:00:00 CET"]


def test_a_factory_declaring_a_job_again_in_another_zone_moves_its_next_time(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))

    def nightly() -> None:
        pass

    job = ticker.every(DAY, nightly, at="03:00", tz="Europe/Berlin")
    ticker.run_pending()
    ticker.stop()
    ticker.init_app(Flask("walls", instance_path=ticker.app.instance_path))  # called again
    ticker.every(DAY, nightly, at="03:00", tz="America/New_York")
    ticker.run_pending()
    assert job.next_run == datetime(2026, 12, 3, 8, 0, tzinfo=timezone.utc)


def run_nightly(ticker_at, start: str, until: str) -> list[str]:
    """One deployment's life, from ``start`` to ``until`` (Berlin times),
    with a job at 03:00; its runs."""
    ticker, clocks = ticker_at(berlin(start))
    runs, job_func = recorder(clocks)
    ticker.every(DAY, job_func, name="nightly", at="03:00")
    step_through(ticker, clocks, berlin(until).timestamp())
    ticker.stop()
    return runs


def test_a_restart_just_before_the_time_runs_it_once_at_the_time(ticker_at):
    assert run_nightly(ticker_at, "2026-12-02 10:00:00", "2026-12-03 02:59:59") == []
    assert run_nightly(ticker_at, "2026-12-03 02:59:59", "2026-12-04 12:00:00") == [
        "2026-12-03 03:00:00 CET",
        "2026-12-04 03:00:00 CET",
    ]


def test_a_restart_after_missed_times_runs_once_at_once(ticker_at):
    assert run_nightly(ticker_at, "2026-12-02 10:00:00", "2026-12-03 12:00:00") == [
        "2026-12-03 03:00:00 CET"
    ]
    # Down for three nights:
    assert run_nightly(ticker_at, "2026-12-06 12:00:00", "2026-12-07 12:00:00") == [
        "2026-12-06 12:00:00 CET",
        "2026-12-07 03:00:00 CET",
    ]


def test_a_job_that_never_ran_runs_at_start_if_its_first_time_passed_while_down(ticker_at):
    assert run_nightly(ticker_at, "2026-12-02 10:00:00", "2026-12-02 10:00:01") == []
    assert run_nightly(ticker_at, "2026-12-03 09:00:00", "2026-12-03 10:00:00") == [
        "2026-12-03 09:00:00 CET"
    ]


def test_a_restart_after_a_catch_up_run_does_not_run_it_again(ticker_at):
    # The catch-up run stands for the latest time it missed, not the first.
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(HOUR, job_func, name="quarter", at=":15")
    ticker.run_pending()
    clocks.now += 3 * HOUR + 60  # not scheduled across 10:15, 11:15 and 12:15
    step_through(ticker, clocks, berlin("2026-12-02 13:02:00").timestamp())
    ticker.stop()
    again, clocks2 = ticker_at(berlin("2026-12-02 13:02:00"))
    runs2, job_func2 = recorder(clocks2)
    again.every(HOUR, job_func2, name="quarter", at=":15")
    step_through(again, clocks2, berlin("2026-12-02 13:30:00").timestamp())
    assert runs == ["2026-12-02 13:01:00 CET"] and runs2 == ["2026-12-02 13:15:00 CET"]


def test_an_interval_job_restarted_after_a_catch_up_run_waits_for_its_next_tick(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    runs, job_func = recorder(clocks)
    ticker.every(600, job_func, name="often")
    ticker.run_pending()
    clocks.now += 3000  # five ticks missed
    step_through(ticker, clocks, berlin("2026-12-02 10:50:30").timestamp())
    ticker.stop()
    again, clocks2 = ticker_at(berlin("2026-12-02 10:50:30"))
    runs2, job_func2 = recorder(clocks2)
    again.every(600, job_func2, name="often")
    step_through(again, clocks2, berlin("2026-12-02 11:05:00").timestamp())
    assert runs == ["2026-12-02 10:00:00 CET", "2026-12-02 10:50:00 CET"]
    assert runs2 == ["2026-12-02 11:00:00 CET"]


def test_repr_shows_the_next_time_in_the_jobs_zone(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    job = ticker.every(DAY, lambda: None, name="nightly", at="03:00")
    ticker.run_pending()
    assert "every 24h at 03:00, next 2026-12-03 03:00:00 CET (Europe/Berlin)" in repr(job)


def test_status_keeps_utc_and_adds_the_time_and_zone_which_list_shows(ticker_at):
    ticker, clocks = ticker_at(berlin("2026-12-02 10:00:00"))
    ticker.every(DAY, lambda: None, name="nightly", at="03:00")
    ticker.run_pending()
    [row] = ticker.status()["jobs"]
    assert row["next_run"] == "2026-12-03T02:00:00+00:00"
    assert row["at"] == "03:00" and row["tz"] == "Europe/Berlin"
    out = CliRunner().invoke(ticker.app.cli, ["ticker", "list"]).output
    assert "at 03:00 Europe/Berlin" in out and "next 2026-12-03 03:00:00 CET" in out, out


@pytest.mark.parametrize(
    "interval, kwargs, message",
    [
        (DAY, {"at": "25:00"}, r"at must be 'HH:MM\[:SS\]' .* got '25:00'"),
        (DAY, {"at": "3am"}, "at must be .* got '3am'"),
        (HOUR, {"at": ":75"}, "at must be .* got ':75'"),
        (DAY, {"at": "xyz 09:00"}, "at must be .* got 'xyz 09:00'"),
        (HOUR, {"at": "03:00"}, "at='03:00' needs interval=86400 .* got interval=3600"),
        (DAY, {"at": ":15"}, "at=':15' needs interval=3600 .* got interval=86400"),
        (DAY, {"at": "mon 09:00"}, "at='mon 09:00' needs interval=604800 .* got interval=86400"),
        (7200, {"at": "03:00"}, "at='03:00' needs interval=86400 .* got interval=7200"),
        (
            DAY,
            {"at": "03:00", "tz": "Mars/Olympus"},
            "tz must be a zoneinfo key .* 'Mars/Olympus'",
        ),
        (DAY, {"tz": "Europe/Berlin"}, "tz= needs at=, got tz='Europe/Berlin'"),
    ],
)
def test_bad_wall_clock_input_is_rejected_naming_the_argument_and_value(interval, kwargs, message):
    ticker = Ticker(Flask("bad"))
    with pytest.raises(ValueError, match=message):
        ticker.every(interval, lambda: None, name="job", **kwargs)
    with pytest.raises(ValueError, match=message):
        ticker.every(interval, name="job", **kwargs)  # the decorator form, at once
    assert ticker.jobs == []


def test_a_pytz_zone_is_rejected_with_its_name(ticker_at):
    class PytzLike(tzinfo):  # with pytz's localize()
        zone = "Europe/Berlin"

        def localize(self, dt):
            return dt

    ticker = Ticker(Flask("pytz"))
    with pytest.raises(TypeError, match="a pytz zone; pass its name, 'Europe/Berlin'"):
        ticker.every(DAY, lambda: None, at="03:00", tz=PytzLike())


def test_an_unknown_ticker_timezone_is_rejected_at_init_app():
    app = Flask("bad")
    app.config["TICKER_TIMEZONE"] = "Europe/Atlantis"
    with pytest.raises(
        ValueError, match="TICKER_TIMEZONE must be a zoneinfo key .*'Europe/Atlantis'"
    ):
        Ticker(app)


def test_the_default_zone_comes_from_tz(monkeypatch):
    monkeypatch.setenv("TZ", "America/New_York")
    ticker = Ticker(Flask("tz"))
    job = ticker.every(DAY, lambda: None, name="nightly", at="03:00")
    assert job.tz == ZoneInfo("America/New_York")


# -- properties, over zones with odd DST rules --

ZONES = ["Europe/Berlin", "America/New_York", "Australia/Lord_Howe", "Asia/Kolkata", "UTC"]


def expected_times(
    zone: ZoneInfo, period: int, weekday, seconds: int, start: float, end: float
) -> list[str]:
    """The documented times in (start, end), found by scanning every minute:
    the oracle shares no code with the module."""
    found, days = [], set()  # a day's time comes once, the first of two
    t = start - start % 60 + 60
    while t < end:
        shown, before = datetime.fromtimestamp(t, zone), datetime.fromtimestamp(t - 60, zone)
        if period == HOUR:
            hit = shown.minute * 60 == seconds
        else:
            # The first minute of its day at or past the time: the time
            # itself, the end of a gap that skipped it, or the first of two.
            of_day = shown.hour * 3600 + shown.minute * 60
            earlier = before.hour * 3600 + before.minute * 60
            hit = (
                of_day >= seconds
                and (before.date() != shown.date() or earlier < seconds)
                and (weekday is None or shown.weekday() == weekday)
                and shown.date() not in days
            )
            if hit:
                days.add(shown.date())
        if hit:
            found.append(local(t, zone))
        t += 60
    return found


@settings(max_examples=40, deadline=None)
@given(
    zone=st.sampled_from(ZONES),
    period=st.sampled_from([HOUR, DAY, WEEK]),
    weekday=st.integers(0, 6),
    hour=st.sampled_from([0, 1, 2, 3, 12, 23]) | st.integers(0, 23),
    minute=st.sampled_from([0, 15, 30, 45]) | st.integers(0, 59),
    start=st.sampled_from(
        [
            "2026-03-07",
            "2026-03-27",
            "2026-04-04",
            "2026-09-30",
            "2026-10-24",
            "2026-10-31",
            "2026-12-02",
        ]
    ),
    steps=st.lists(st.sampled_from([3600, -3600]), max_size=2),
)
def test_random_times_run_as_documented_once_each_across_dst_and_clock_steps(
    zone, period, weekday, hour, minute, start, steps
):
    tz = ZoneInfo(zone)
    begin = datetime.strptime(start, "%Y-%m-%d").replace(hour=12, tzinfo=tz)
    days = 16 if period == WEEK else 9 if period == DAY else 3
    end = (begin + timedelta(days=days)).timestamp()
    at = f":{minute:02d}" if period == HOUR else f"{hour:02d}:{minute:02d}"
    if period == WEEK:
        at = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"][weekday] + " " + at
    seconds = minute * 60 + (0 if period == HOUR else hour * 3600)

    app = Flask("props")
    app.config["TICKER_LOCK"] = False  # no state to write at every pass
    clocks = Clocks(begin)
    ticker = Ticker(app, clock=clocks, wall_clock=clocks.wall)
    runs, job_func = recorder(clocks, tz)
    try:
        ticker.every(period, job_func, name="job", at=at, tz=zone)
        # Each step comes a day in, two hours from any time of the job.
        stop_at = begin.timestamp()
        for step in steps:
            stop_at += DAY
            step_through(ticker, clocks, stop_at)
            nearest = min((abs(t - clocks.wall()) for t in ticker_times(ticker)), default=1e9)
            if nearest > 2 * HOUR and period != HOUR:
                clocks.step(step)
        step_through(ticker, clocks, end)
        assert runs == expected_times(
            tz, period, weekday if period == WEEK else None, seconds, begin.timestamp(), end
        )
    finally:
        ticker.stop(timeout=10)


def ticker_times(ticker: Ticker) -> list[float]:
    return [job.next_run.timestamp() for job in ticker.jobs if job.next_run]
