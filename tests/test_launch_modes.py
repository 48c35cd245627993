"""Exactly once per tick, however the app is launched.

Each test serves an app with a real server (the Werkzeug development server,
the flask CLI, gunicorn, waitress) and reads the job runs it wrote: which
process ran each tick, and that no tick ran twice.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
from datetime import datetime, timezone

import pytest
from conftest import BIN, HERE, ROOT, Run, assert_once_per_tick, require, wait_until

INTERVAL = 0.5
pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals")
PY = sys.executable
FLASK = [PY, "-m", "flask", "--app", "launch_app"]


def ran_by(runs) -> set[int]:
    return {run.pid for run in runs}


# -- the development server and the flask CLI --


@pytest.mark.parametrize(
    "args, env",
    [
        pytest.param([PY, "launch_app.py"], {"APP_DEBUG": "1"}, id="app.run(debug=True)"),
        pytest.param([*FLASK, "run", "--debug"], {}, id="flask run --debug"),
    ],
)
def test_the_reloader_runs_jobs_only_in_its_child_and_reloads_edited_jobs(
    serve, tmp_path, args, env
):
    app_file = tmp_path / "launch_app.py"
    shutil.copy(HERE / "launch_app.py", app_file)
    server = serve(args, cwd=tmp_path, **env)
    first = server.wait_for_runs(4)
    assert ran_by(first) != {server.pid} and len(ran_by(first)) == 1

    app_file.write_text(app_file.read_text().replace('VERSION = "v1"', 'VERSION = "v2"'))
    edited = server.wait_for_runs(3, prefix="tick-v2")
    runs = server.runs()
    assert server.pid not in ran_by(runs)
    assert ran_by(edited).isdisjoint(ran_by(first))  # a new child runs the new code
    for pid in ran_by(runs):
        assert_once_per_tick([r for r in runs if r.pid == pid], INTERVAL)
    # One child at a time: the old one's runs all come before the new one's.
    assert max(r.at for r in first) < min(r.at for r in edited)


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([*FLASK, "run"], id="flask run"),
        pytest.param(
            [*FLASK, "run", "--debug", "--no-reload"], id="flask run --debug --no-reload"
        ),
        pytest.param([PY, "launch_app.py"], id="app.run()"),
    ],
)
def test_without_the_reloader_the_one_process_runs_each_tick_once(serve, args):
    server = serve(args)
    runs = server.wait_for_runs(5)
    assert ran_by(runs) == {server.pid}
    assert_once_per_tick(runs, INTERVAL)


def test_flask_run_with_reload_runs_jobs_in_the_child_only(serve):
    server = serve([*FLASK, "run", "--reload"])
    runs = server.wait_for_runs(5)
    assert len(ran_by(runs)) == 1 and server.pid not in ran_by(runs)
    assert_once_per_tick(runs, INTERVAL)


@pytest.mark.parametrize("command", [["routes"], ["migrate"]], ids=["routes", "custom command"])
def test_one_off_cli_commands_run_no_job(tmp_path, command):
    runs_file = tmp_path / "runs.txt"
    env = {
        **os.environ,
        "RUNS_FILE": str(runs_file),
        "JOB_INTERVAL": "0.05",
        "INSTANCE_PATH": str(tmp_path / "instance"),
    }
    env.pop("WERKZEUG_RUN_MAIN", None)
    result = subprocess.run(
        [*FLASK, *command], cwd=HERE, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stderr
    assert not runs_file.exists()


# -- production servers: one process of several runs the jobs --


@pytest.mark.parametrize(
    "options",
    [
        pytest.param(["-w", "4"], id="gunicorn -w 4"),
        pytest.param(["-w", "4", "--preload"], id="gunicorn -w 4 --preload"),
        pytest.param(["-w", "2", "--threads", "4", "-k", "gthread"], id="gunicorn gthread"),
    ],
)
def test_gunicorn_workers_run_each_tick_exactly_once(serve, options):
    server = serve([BIN / "gunicorn", *options, "-b", "127.0.0.1:{port}", "launch_app:app"])
    runs = server.wait_for_runs(8)
    assert_once_per_tick(runs, INTERVAL)
    later = [r for r in runs if r.at > runs[0].at + 1.5 * INTERVAL]
    assert later and server.pid not in ran_by(later)  # a worker, never the master
    assert len(ran_by(later)) == 1
    assert len(server.runs("hourly")) == 1


def test_waitress_runs_each_tick_once(serve):
    server = serve([BIN / "waitress-serve", "--listen=127.0.0.1:{port}", "launch_app:app"])
    runs = server.wait_for_runs(5)
    assert ran_by(runs) == {server.pid}
    assert_once_per_tick(runs, INTERVAL)


def test_when_the_runner_is_killed_another_worker_takes_over(serve):
    server = serve([BIN / "gunicorn", "-w", "3", "-b", "127.0.0.1:{port}", "launch_app:app"])
    runner = server.wait_for_runs(3)[-1].pid
    os.kill(runner, signal.SIGKILL)
    killed_at = time.time()
    runs = server.wait_for_runs(len(server.runs()) + 4)
    after = [r for r in runs if r.at > killed_at]
    assert runner not in ran_by(after)
    # within one interval plus the retry cadence, and generous for a busy machine
    assert after[0].at - killed_at < INTERVAL + 0.2 + 2.0
    assert_once_per_tick(runs, INTERVAL)
    assert len(server.runs("hourly")) == 1  # a takeover is not a restart


def test_recycling_the_runner_does_not_rerun_run_now_jobs(serve):
    server = serve(
        [
            BIN / "gunicorn",
            "-w",
            "2",
            "--max-requests",
            "5",
            "-b",
            "127.0.0.1:{port}",
            "launch_app:app",
        ]
    )
    server.wait_for_runs(1, prefix="hourly")
    first_runner = server.runs("hourly")[0].pid
    served_by = set()
    for _ in range(40):
        served_by.add(int(server.get()))
        time.sleep(0.05)
    assert len(served_by) > 2  # workers were recycled
    wait_until(lambda: not os.path.exists(f"/proc/{first_runner}"), 20, "runner recycled")
    server.wait_for_runs(len(server.runs()) + 3)
    assert len(server.runs("hourly")) == 1
    assert_once_per_tick(server.runs(), INTERVAL)


def test_sigterm_lets_the_running_job_finish_and_starts_no_other(serve):
    server = serve(
        [BIN / "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "launch_app:app"],
        JOB_INTERVAL="2",
        JOB_SECONDS="1",
    )
    started = server.wait_for_runs(1, prefix="tick-v1")[0]
    os.kill(server.pid, signal.SIGTERM)
    signalled_at = time.time()
    assert server.proc.wait(timeout=40) == 0, server.output()
    assert [r.pid for r in server.runs("tick-end")] == [started.pid]
    assert [r for r in server.runs("tick-v1") if r.at > signalled_at] == []
    assert signalled_at - started.at < 1, "the signal came after the job had finished"


# -- the example app, as a newcomer runs it --


def example_rows(db) -> list[tuple[str, int]]:
    if not db.exists():
        return []
    with sqlite3.connect(db, timeout=10) as conn:
        try:
            return conn.execute(
                "SELECT at, pid FROM updates WHERE source = 'ticker' ORDER BY at"
            ).fetchall()
        except sqlite3.OperationalError:  # no table yet
            return []


@pytest.mark.parametrize(
    "args",
    [
        pytest.param([PY, "example_app.py"], id="python example_app.py"),
        pytest.param(
            [PY, "-m", "flask", "--app", "example_app", "run", "--debug"],
            id="flask --app example_app run --debug",
        ),
    ],
)
def test_the_example_app_runs_its_job_once_per_tick_in_the_reloader_child(serve, tmp_path, args):
    db = tmp_path / "example.sqlite3"
    server = serve(
        args,
        cwd=ROOT,
        FLASK_DATABASE=str(db),
        FLASK_UPDATE_EVERY="0.4",
        FLASK_TICKER_LOCK=str(tmp_path / "example.lock"),
    )
    rows = wait_until(lambda: len(example_rows(db)) >= 4 and example_rows(db), 30, "4 runs")
    pids = {pid for _, pid in rows}
    assert len(pids) == 1 and server.pid not in pids
    assert_once_per_tick(
        [Run(pid, datetime.fromisoformat(at).timestamp(), "") for at, pid in rows], 0.4
    )
    server.wait_until_serving()
    assert "refresh" in server.get()


# -- uWSGI --

# Stopped with SIGKILL: uWSGI's own shutdown is not what these tests are about.
UWSGI = [
    "--http",
    "127.0.0.1:{port}",
    "--module",
    "launch_app:app",
    "--master",
    "--processes",
    "3",
    "--die-on-term",
]


@pytest.fixture
def uwsgi():
    return [require("uwsgi"), *UWSGI]


def test_uwsgi_with_lazy_apps_runs_each_tick_once_in_one_worker(serve, uwsgi):
    server = serve([*uwsgi, "--lazy-apps", "--enable-threads"], stop_signal=signal.SIGKILL)
    runs = server.wait_for_runs(6)
    assert len(ran_by(runs)) == 1 and server.pid not in ran_by(runs)
    assert_once_per_tick(runs, INTERVAL)


def test_uwsgi_without_lazy_apps_runs_each_tick_once_in_the_master(serve, uwsgi):
    # uWSGI forks its workers from C, without Python's fork hooks, so the
    # master that loaded the app keeps the jobs.
    server = serve([*uwsgi, "--enable-threads"], stop_signal=signal.SIGKILL)
    runs = server.wait_for_runs(6)
    assert ran_by(runs) == {server.pid}
    assert_once_per_tick(runs, INTERVAL)


def test_uwsgi_without_threads_gets_a_warning_that_says_how_to_fix_it(serve, uwsgi):
    server = serve([*uwsgi, "--lazy-apps"], stop_signal=signal.SIGKILL)
    wait_until(
        lambda: "--enable-threads to the uwsgi command" in server.output(), 20, "the warning"
    )


# -- the deployment state: one status, restarts that continue --


def status_of(server) -> dict:
    return json.loads(server.get("/status"))


def job_status(status: dict, name: str) -> dict:
    return next(job for job in status["jobs"] if job["name"] == name)


GUNICORN = [BIN / "gunicorn", "-b", "127.0.0.1:{port}", "launch_app:app"]


def test_every_gunicorn_worker_shows_the_example_apps_status_alike(serve, tmp_path):
    server = serve(
        [BIN / "gunicorn", "-w", "4", "-b", "127.0.0.1:{port}", "example_app:app"],
        cwd=ROOT,
        FLASK_DATABASE=str(tmp_path / "example.sqlite3"),
        FLASK_UPDATE_EVERY="3600",
        FLASK_TICKER_LOCK=str(tmp_path / "example.lock"),
    )
    server.wait_until_serving()

    def figures() -> tuple[int, tuple[str, str], str]:
        page = server.get()
        served = int(re.search(r"served by process (\d+)", page).group(1))
        runner = re.search(r"Process (\d+) on", page)
        runs = re.search(r'<td class="runs">(\d+)</td>', page).group(1)
        last = re.search(r'<td class="last-run">([^<]*)</td>', page).group(1)
        return served, (runs, last), runner and runner.group(1)

    def shown_by_another_worker():
        served, shown, runner = figures()
        return str(served) != runner and shown[0] == "1"

    # The runner shows its run at once; the others within the save lag.
    wait_until(shown_by_another_worker, 20, "the first run, saved")
    seen, runners, by_others = set(), set(), 0
    for _ in range(200):
        served, shown, runner = figures()
        seen.add(shown)
        runners.add(runner)
        by_others += str(served) != runner
        if by_others >= 10:
            break
    assert by_others >= 10, "no worker but the runner answered"
    assert len(seen) == 1 and len(runners) == 1, (seen, runners)


def test_history_survives_a_takeover_and_a_restart(serve, tmp_path):
    args = [BIN / "gunicorn", "-w", "2", *GUNICORN[1:]]
    server = serve(args)
    runner = server.wait_for_runs(4)[-1].pid
    wait_until(lambda: job_status(status_of(server), "tick")["runs"] >= 4, 20, "runs saved")
    os.kill(runner, signal.SIGKILL)
    server.wait_for_runs(len(server.runs()) + 4)
    taken = wait_until(
        lambda: (lambda s: s["runner"] and s["runner"]["pid"] != runner and s)(status_of(server)),
        20,
        "a new runner",
    )
    # The runs counted before the kill carry on: at most the runs of the last
    # save window before it are missing from the count.
    assert job_status(taken, "tick")["runs"] >= len(server.runs()) - 4
    server.stop()

    again = serve(args)
    again.wait_until_serving()
    counted = len(again.runs())
    wait_until(
        lambda: job_status(status_of(again), "tick")["runs"] >= counted,
        20,
        "the history of the first deployment",
    )
    assert len(again.runs("hourly")) == 1  # a restart soon after it ran: not again
    assert job_status(status_of(again), "hourly")["runs"] == 1


def test_gunicorns_graceful_reload_loses_no_tick_and_runs_none_twice(serve):
    # The default retry, and a run in progress at each reload: a handover
    # that waited for the retry would leave a gap.
    server = serve(
        [BIN / "gunicorn", "-w", "4", *GUNICORN[1:]],
        JOB_INTERVAL="1",
        JOB_SECONDS="0.6",
        FLASK_TICKER_LOCK_RETRY="5",
    )
    server.wait_for_runs(2, prefix="tick-v")
    for _ in range(3):
        os.kill(server.pid, signal.SIGHUP)
        server.wait_for_runs(len(server.runs("tick-v")) + 3, prefix="tick-v", timeout=30)
    runs = server.runs("tick-v")
    times = sorted(run.at for run in runs)
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert max(gaps) <= 1.5, gaps
    assert_once_per_tick(runs, 1.0)
    assert len(ran_by(runs)) >= 2  # the reloads did hand the jobs over


def test_a_run_now_false_job_runs_on_time_however_often_the_app_restarts(serve):
    launched = time.time()
    for _ in range(6):  # a deploy about every second, for longer than the interval
        server = serve(
            [BIN / "gunicorn", "-w", "1", *GUNICORN[1:]], JOB_INTERVAL="3", JOB_RUN_NOW="0"
        )
        server.wait_until_serving()
        time.sleep(1)
        server.stop()
    # Without a recorded first due time it would never run: each restart
    # would push it back.  The slack is for gunicorn start-ups on a busy machine.
    first = server.runs()[0].at
    assert launched + 3 - 0.1 <= first <= launched + 3 + 5, first - launched


def test_a_restart_waits_for_a_recent_run_and_runs_an_overdue_job_at_once(serve):
    args, env = [BIN / "gunicorn", "-w", "2", *GUNICORN[1:]], {"JOB_INTERVAL": "4"}
    server = serve(args, **env)
    first = server.wait_for_runs(1)[0].at
    server.stop()
    time.sleep(1)
    again = serve(args, **env)
    runs = again.wait_for_runs(2, timeout=30)
    assert runs[1].at - first == pytest.approx(4, abs=0.5)  # on the grid, not at restart
    again.stop()
    time.sleep(4.5)  # the next tick passes while nothing runs
    stopped_at = time.time()
    third = serve(args, **env)
    third.wait_until_serving()
    late = third.wait_for_runs(3, timeout=30)[2].at
    assert late - stopped_at < 3, "the overdue job did not run at once"
    assert len(third.runs("hourly")) == 1


# -- signals: a run in progress finishes, and none starts after --


@pytest.mark.parametrize(
    "args, sig",
    [
        pytest.param([*FLASK, "run"], signal.SIGTERM, id="flask run, SIGTERM"),
        pytest.param([*FLASK, "run"], signal.SIGINT, id="flask run, SIGINT"),
        pytest.param([PY, "launch_app.py"], signal.SIGTERM, id="app.run(), SIGTERM"),
        pytest.param(
            [BIN / "waitress-serve", "--listen=127.0.0.1:{port}", "launch_app:app"],
            signal.SIGTERM,
            id="waitress, SIGTERM",
        ),
    ],
)
def test_a_signal_lets_the_running_job_finish_and_the_process_exit_0(serve, args, sig):
    server = serve(args, JOB_INTERVAL="2", JOB_SECONDS="1")
    server.wait_until_serving()  # a Ctrl-C before the server runs is click's "Aborted!"
    serving = time.time()
    started = wait_until(
        lambda: next((r for r in server.runs("tick-v1") if r.at > serving), None), 20, "a run"
    )
    os.kill(server.pid, sig)
    signalled_at = time.time()
    assert server.proc.wait(timeout=40) == 0, server.output()
    assert signalled_at - started.at < 1, "the signal came after the job had finished"
    assert [r.pid for r in server.runs("tick-end") if r.at > started.at] == [started.pid]
    assert [r for r in server.runs("tick-v1") if r.at > signalled_at] == []


def test_the_ticker_leaves_a_sigterm_handler_of_the_apps_alone(serve, tmp_path):
    app = tmp_path / "own_handler.py"
    app.write_text(
        textwrap.dedent("""
        import os, signal, sys
        def mine(signum, frame):
            print("the app's own handler", flush=True)
            sys.exit(3)
        signal.signal(signal.SIGTERM, mine)
        from launch_app import app
        app.run(port=int(os.environ["PORT"]))
    """)
    )
    server = serve([PY, str(app)])
    server.wait_for_runs(1)
    os.kill(server.pid, signal.SIGTERM)
    assert server.proc.wait(timeout=40) == 3
    assert "the app's own handler" in server.output()


def test_an_at_job_runs_once_at_its_wall_time_in_one_gunicorn_worker(serve):
    due = int(time.time()) + 10  # some seconds after the workers are up, even on a loaded machine
    at = datetime.fromtimestamp(due, timezone.utc).strftime("%H:%M:%S")
    server = serve([BIN / "gunicorn", "-w", "2", *GUNICORN[1:]], JOB_AT=at, JOB_INTERVAL="3600")
    server.wait_until_serving()
    assert time.time() < due - 1, "gunicorn took too long to start for this test"
    [run] = server.wait_for_runs(1, prefix="at", timeout=30)
    time.sleep(1.5)  # a second run, in the other worker, would be in by now
    assert server.runs("at") == [run]
    assert abs(run.at - due) < 0.5, run.at - due
