"""TICKER_LOCK = "redis://...": one runner for several hosts, on a real
redis-server (see the redis_server fixture).

Each "host" is a process of its own with an instance folder of its own, so
that nothing but Redis is shared.  The in-process tests drive the runner
with a fake clock, against the same real server.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from datetime import datetime, timezone
from pathlib import Path

import pytest
import redis
from click.testing import CliRunner
from conftest import BIN, assert_once_per_tick, settle, ticker_maker, wait_until
from flask import Flask

from flask_ticker import Ticker

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals")
PY = sys.executable
TTL = 1.0
INTERVAL = 0.5
# A process that lost the lease notices within TTL; the next takes it
# within TTL + TICKER_LOCK_RETRY; these allow for a slow, shared machine.
SLACK = 0.3


def redis_app(url: str, name: str = "shop", **config) -> Flask:
    app = Flask(name)
    app.config.update({"TICKER_LOCK": url, "TICKER_LOCK_TTL": 3.0, **config})
    return app


@pytest.fixture
def tickers():
    """tickers(url, **config) makes a ticker on a fake clock; all stop after."""
    yield from ticker_maker(redis_app)


# -- bad input --


@pytest.mark.parametrize("url", ["redis://localhost:nope/0", "redis://localhost/zero", "unix://"])
def test_a_malformed_redis_url_is_rejected_naming_ticker_lock(url):
    with pytest.raises(ValueError, match=f"TICKER_LOCK must be a Redis URL .* got '{url}'"):
        Ticker(redis_app(url))


@pytest.mark.parametrize(
    "url",
    [
        "redis://:hunter2x@localhost:nope/0",
        "redis://:hun@ter2x@localhost:nope/0",
        "redis://:hun/ter2x@localhost:6379/0",
        "redis://:hun?ter2x@localhost/0",
        "redis://localhost:nope/0?password=hunter2x",
    ],
)
def test_no_piece_of_the_password_of_a_rejected_url_is_shown(url):
    with pytest.raises(ValueError, match=r"\*\*\*") as raised:
        Ticker(redis_app(url))
    assert "hun" not in str(raised.value) and "ter2x" not in str(raised.value)


@pytest.mark.parametrize(
    "url",
    ["valkey://localhost:6379/0", " redis://localhost:6379/0", "redis+sentinel://localhost:26379"],
)
def test_a_url_of_another_scheme_is_rejected_never_taken_for_a_path(url):
    with pytest.raises(ValueError, match="TICKER_LOCK must be a path, a redis://"):
        Ticker(redis_app(url))


def test_an_asyncio_redis_client_is_rejected():
    import redis.asyncio

    with pytest.raises(TypeError, match="got an asyncio one"):
        Ticker(redis_app(redis.asyncio.Redis()))


def test_a_redis_url_without_redis_py_names_the_extra_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "redis", None)  # what import finds when it is missing
    with pytest.raises(ImportError, match=r"pip install 'flask-ticker\[redis\]'"):
        Ticker(redis_app("redis://127.0.0.1:6379/0"))


@pytest.mark.parametrize(
    "key, value, message",
    [
        ("TICKER_LOCK_TTL", 0, "TICKER_LOCK_TTL must be finite seconds >= 0.01, got 0"),
        ("TICKER_LOCK_TTL", "30", "TICKER_LOCK_TTL must be finite seconds >= 0.01, got '30'"),
        ("TICKER_LOCK_KEY", "", "TICKER_LOCK_KEY must be a non-empty string, got ''"),
    ],
)
def test_a_bad_lease_setting_is_rejected_naming_it(key, value, message):
    with pytest.raises(ValueError, match=message):
        Ticker(redis_app("redis://127.0.0.1:6379/0", **{key: value}))


# -- one process, a fake clock, a real server --


def test_a_redis_client_object_works_as_the_lock(redis_server, tickers):
    client = redis.Redis.from_url(redis_server.url)
    ticker, clock, ran = tickers(client)
    ticker.run_pending()
    settle(ticker)
    assert ran == [1000.0] and ticker.status()["is_runner"]
    assert client.exists("flask_ticker:shop") == 1  # the key is named after the app
    ticker.stop()
    assert client.exists("flask_ticker:shop") == 0  # released


def test_the_state_in_redis_is_the_same_in_every_process_and_survives_a_restart(
    redis_server, tickers
):
    first, clock, ran = tickers(redis_server.url)
    first.run_pending()
    settle(first)
    first.stop()
    second, clock2, ran2 = tickers(redis_server.url)
    [job] = second.status()["jobs"]
    assert job["runs"] == 1 and job["last_run"] is not None  # read before it runs
    second.run_pending()
    settle(second)
    assert ran2 == []  # its last run is less than an interval old: it waits
    clock2.now += 10
    second.run_pending()
    settle(second)
    assert ran2 == [1010.0]


def test_a_runner_whose_lease_was_taken_starts_no_run(redis_server, tickers, caplog):
    # As when a host froze past the TTL: its clock says its run is due, but
    # another host holds the lease by now.
    frozen, clock, ran = tickers(redis_server.url, TICKER_LOCK_TTL=0.2)
    frozen.run_pending()
    settle(frozen)
    other, other_clock, other_ran = tickers(redis_server.url, TICKER_LOCK_TTL=0.2)
    wait_until(
        lambda: (other.run_pending(), other.status()["is_runner"])[1],
        10,
        "the lease expired and taken over",
    )
    clock.now += 10
    frozen.run_pending()
    settle(frozen)
    assert ran == [1000.0]
    assert not frozen.status()["is_runner"]
    assert "another process took its lease" in caplog.text


def test_an_outage_stops_runs_within_the_ttl_is_logged_once_and_runs_resume_after(
    redis_server, tickers, caplog
):
    caplog.set_level(logging.INFO)
    ticker, clock, ran = tickers(redis_server.url, TICKER_LOCK_TTL=30)
    ticker.run_pending()
    settle(ticker)
    redis_server.stop()
    for _ in range(5):  # a run is due at 1010 and 1020: within the TTL, they run
        clock.now += 5
        ticker.run_pending()
        settle(ticker)  # each run reads the clock before it moves on
    assert ran == [1000.0, 1010.0, 1020.0]
    for _ in range(5):  # at 1030 the TTL has passed without a renewal: no run
        clock.now += 5
        ticker.run_pending()
        settle(ticker)
    assert ran == [1000.0, 1010.0, 1020.0]
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1 and "TICKER_LOCK" in warnings[0], warnings
    assert "within TICKER_LOCK_TTL" in caplog.text

    redis_server.start()  # empty: persistence is off
    clock.now += 5
    ticker.run_pending()
    settle(ticker)
    assert ran[-1] == clock.now  # a fresh state: the job starts its grid now
    ended = [r for r in caplog.records if "can be used again" in r.getMessage()]
    assert len(ended) == 1 and ended[0].levelno == logging.INFO


def test_with_redis_down_flask_ticker_list_says_why_in_one_line(redis_server, tickers):
    ticker, clock, ran = tickers(redis_server.url)
    redis_server.stop()
    result = CliRunner().invoke(ticker.app.cli, ["ticker", "list"])
    assert result.exit_code == 1
    assert f"Redis at {redis_server.url} (TICKER_LOCK) cannot be used" in result.output
    assert "Traceback" not in result.output


def test_with_redis_down_status_says_why_instead_of_raising(redis_server, tickers):
    ticker, clock, ran = tickers(redis_server.url)
    redis_server.stop()
    status = ticker.status()
    assert status["error"].startswith(f"Redis at {redis_server.url} (TICKER_LOCK) cannot be used")
    assert [job["name"] for job in status["jobs"]] == ["often"]
    assert json.loads(json.dumps(status)) == status


def test_a_tick_the_crashed_runner_may_have_started_unsaved_is_not_run_again(
    redis_server, tickers
):
    # The runner last saved a sign of life at 1001; it may have gone on
    # starting runs until a TTL after that, unseen, so it may have run the
    # tick at 1010.  (Deleting the key stands in for waiting out its TTL.)
    crashed, clock, ran = tickers(redis_server.url, TICKER_LOCK_TTL=30)
    crashed.run_pending()
    settle(crashed)
    clock.now += 1
    crashed.run_pending()  # saves: the run, and this sign of life
    redis.Redis.from_url(redis_server.url).delete("flask_ticker:shop")
    successor, clock2, ran2 = tickers(redis_server.url, TICKER_LOCK_TTL=30)
    clock2.now = 1012
    successor.run_pending()
    settle(successor)
    assert ran2 == []  # the tick at 1010 counts as run
    clock2.now = 1020
    successor.run_pending()
    settle(successor)
    assert ran2 == [1020]


def test_a_tick_after_the_crashed_runner_was_surely_dead_runs_at_once(redis_server, tickers):
    crashed, clock, ran = tickers(redis_server.url, TICKER_LOCK_TTL=30)
    crashed.run_pending()
    settle(crashed)
    clock.now += 1
    crashed.run_pending()
    redis.Redis.from_url(redis_server.url).delete("flask_ticker:shop")
    successor, clock2, ran2 = tickers(redis_server.url, TICKER_LOCK_TTL=30)
    clock2.now = 1040  # alive at 1001, it started no run after its TTL, 1031
    successor.run_pending()
    settle(successor)
    assert ran2 == [1040]


def test_a_run_queued_when_the_lease_is_lost_does_not_start(redis_server, tickers):
    ticker, clock, ran = tickers(redis_server.url, TICKER_LOCK_TTL=30, TICKER_MAX_WORKERS=1)
    let_go = threading.Event()
    slow = ticker.every(100, let_go.wait, name="slow")  # holds the one worker
    queued = ticker.every(5, lambda: None, name="queued", run_now=False)
    ticker.run_pending()
    wait_until(lambda: slow.running and not let_go.is_set(), 10, "the slow run going")
    clock.now = 1005
    ticker.run_pending()  # "queued" waits for the worker
    redis.Redis.from_url(redis_server.url).set("flask_ticker:shop", "another host's token")
    clock.now = 1011  # time to renew, which fails: the lease is another's
    ticker.run_pending()
    let_go.set()
    settle(ticker)
    assert queued.runs == 0 and queued.skipped == 1


def test_flask_ticker_run_records_the_run_without_taking_the_lease(redis_server, tickers):
    ticker, clock, ran = tickers(redis_server.url)
    result = CliRunner().invoke(ticker.app.cli, ["ticker", "run", "often"])
    assert result.exit_code == 0, result.output
    assert ran == [1000.0]
    assert redis.Redis.from_url(redis_server.url).exists("flask_ticker:shop") == 0
    elsewhere, _, _ = tickers(redis_server.url)  # another host, before any runner saved
    [job] = elsewhere.status()["jobs"]
    assert job["runs"] == 1 and job["last_run"] is not None


def test_a_custom_redis_key_is_used(redis_server, tickers):
    ticker, clock, ran = tickers(redis_server.url, TICKER_LOCK_KEY="myapp:lease")
    ticker.run_pending()
    client = redis.Redis.from_url(redis_server.url)
    assert client.exists("myapp:lease") and client.exists("myapp:lease:state")


# -- hosts: processes of their own, sharing only Redis --


def host(serve, tmp_path: Path, name: str, url: str, args=None, **env):
    """One host: app.run() by default, its own instance folder."""
    return serve(
        args or [PY, "launch_app.py"],
        INSTANCE_PATH=str(tmp_path / name),
        FLASK_TICKER_LOCK=url,
        FLASK_TICKER_LOCK_TTL=str(TTL),
        **{"JOB_INTERVAL": str(INTERVAL), **env},
    )


def status_of(server, name: str) -> tuple[dict, dict]:
    """``server``'s status() (the deployment state in Redis), and job ``name``'s row."""
    status = json.loads(server.get("/status"))
    return status, next(job for job in status["jobs"] if job["name"] == name)


def saved_runs(server, name: str) -> int:
    return status_of(server, name)[1]["runs"]


def test_two_hosts_on_one_redis_run_each_tick_once_and_show_the_same_status(
    serve, tmp_path, redis_server
):
    gunicorn = [BIN / "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "launch_app:app"]
    a = host(serve, tmp_path, "a", redis_server.url, gunicorn)
    b = host(serve, tmp_path, "b", redis_server.url, gunicorn)
    a.wait_until_serving()
    b.wait_until_serving()
    runs = a.wait_for_runs(10)
    assert_once_per_tick(runs, INTERVAL)
    assert len({run.pid for run in runs}) == 1  # no handover without a reason

    def shown(server):
        status, hourly = status_of(server, "hourly")
        return status["runner"], hourly["runs"], hourly["last_run"]

    wait_until(lambda: shown(a) == shown(b) and shown(a)[1] == 1, 20, "the same status")
    assert shown(a)[0]["pid"] == runs[-1].pid


def test_when_the_runner_host_is_killed_another_takes_over_on_the_same_grid(
    serve, tmp_path, redis_server
):
    a = host(serve, tmp_path, "a", redis_server.url)
    first = a.wait_for_runs(4)
    b = host(serve, tmp_path, "b", redis_server.url)
    b.wait_until_serving()
    wait_until(lambda: saved_runs(b, "hourly") == 1, 20, "the run_now run saved")
    killed_at = time.time()
    a.proc.kill()
    after = b.wait_for_runs(len(a.runs()) + 4)
    taken = [run for run in after if run.pid == b.pid]
    assert taken[0].at - killed_at < TTL + 0.2 + INTERVAL + SLACK
    assert_once_per_tick(after, INTERVAL)
    # The grid goes on: the new runner's runs fall on the old one's ticks.
    phase = [round(((run.at - first[0].at) / INTERVAL) % 1, 2) for run in taken]
    assert all(p < 0.2 or p > 0.8 for p in phase), phase
    assert len(b.runs("hourly")) == 1  # run_now ran once, on the first host


def test_a_host_frozen_past_the_ttl_starts_no_run_once_it_resumes(serve, tmp_path, redis_server):
    a = host(serve, tmp_path, "a", redis_server.url)
    a.wait_for_runs(3)
    b = host(serve, tmp_path, "b", redis_server.url)
    b.wait_until_serving()
    os.kill(a.pid, signal.SIGSTOP)
    try:
        wait_until(lambda: [r for r in b.runs() if r.pid == b.pid][2:], 20, "a takeover")
    finally:
        os.kill(a.pid, signal.SIGCONT)
    resumed_at = time.time()
    b.wait_for_runs(len(b.runs()) + 4)
    assert [run for run in a.runs() if run.pid == a.pid and run.at > resumed_at] == []
    assert_once_per_tick(b.runs(), INTERVAL)
    wait_until(lambda: "another process took its lease" in a.output(), 10, "it says so")


def test_with_redis_down_no_host_starts_runs_and_both_serve_then_one_resumes(
    serve, tmp_path, redis_server
):
    a = host(serve, tmp_path, "a", redis_server.url)
    b = host(serve, tmp_path, "b", redis_server.url)
    a.wait_for_runs(3)
    b.wait_until_serving()
    down_at = time.time()
    redis_server.stop()
    time.sleep(TTL + 1)
    assert a.get() and b.get()  # HTTP 200, or get() raises
    late = [run for run in a.runs() if run.at > down_at + TTL + 0.1]
    assert late == []
    redis_server.start()
    up_at = time.time()
    runs = a.wait_for_runs(len(a.runs()) + 4)
    resumed = [run for run in runs if run.at > up_at]
    assert_once_per_tick(resumed, INTERVAL)
    assert len({run.pid for run in resumed}) == 1
    for server in (a, b):
        assert server.output().count("cannot be used") == 1, server.output()


def test_redis_unreachable_at_start_warns_once_and_jobs_start_once_it_is_up(
    serve, tmp_path, redis_server
):
    redis_server.stop()
    a = host(serve, tmp_path, "a", redis_server.url)
    a.wait_until_serving()
    time.sleep(1.5)  # several retries
    assert a.runs() == []
    assert a.output().count("cannot be used") == 1, a.output()
    assert f"127.0.0.1:{redis_server.port}" in a.output()
    redis_server.start()
    a.wait_for_runs(2)


def test_a_wrong_redis_password_is_logged_clearly_while_the_app_serves(
    serve, tmp_path, redis_server
):
    redis.Redis.from_url(redis_server.url).config_set("requirepass", "s3cret")
    url = f"redis://:hunter2x@127.0.0.1:{redis_server.port}/0"
    a = host(serve, tmp_path, "a", url)
    a.wait_until_serving()
    wait_until(lambda: "cannot be used" in a.output(), 10, "a warning")
    output = a.output()
    assert "AuthenticationError" in output and "TICKER_LOCK" in output, output
    assert "hunter2x" not in output
    assert a.runs() == []


def test_a_restart_of_every_host_keeps_the_schedule(serve, tmp_path, redis_server):
    a = host(serve, tmp_path, "a", redis_server.url, JOB_INTERVAL="3600")
    a.wait_until_serving()  # its jobs may run before it listens
    a.wait_for_runs(1, prefix="hourly")
    wait_until(lambda: saved_runs(a, "hourly") == saved_runs(a, "tick") == 1, 20, "saved")
    a.stop()
    b = host(serve, tmp_path, "b", redis_server.url, JOB_INTERVAL="3600")
    b.wait_until_serving()
    time.sleep(1.5)
    assert len(b.runs("hourly")) == 1 and len(b.runs("tick")) == 1  # neither again


def test_an_at_job_runs_once_on_two_hosts(serve, tmp_path, redis_server):
    due = int(time.time()) + 10  # room for two hosts to start on a loaded machine
    at = datetime.fromtimestamp(due, timezone.utc).strftime("%H:%M:%S")
    hosts = [
        host(serve, tmp_path, name, redis_server.url, JOB_AT=at, JOB_INTERVAL="3600")
        for name in ("a", "b")
    ]
    for server in hosts:
        server.wait_until_serving()
    assert time.time() < due - 1, "the hosts took too long to start for this test"
    [run] = hosts[0].wait_for_runs(1, prefix="at", timeout=30)
    time.sleep(1.5)
    assert hosts[0].runs("at") == [run] and abs(run.at - due) < 0.5
