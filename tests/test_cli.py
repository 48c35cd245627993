"""`flask ticker list` and `flask ticker run`, as a person runs them beside a
real deployment."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import pytest
from conftest import BIN, HERE, wait_until

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals")
GUNICORN = [BIN / "gunicorn", "-b", "127.0.0.1:{port}", "launch_app:app"]


def flask_ticker(server, *args: str, **env: str) -> subprocess.CompletedProcess:
    environ = {**server.env, **env}
    return subprocess.run(
        [sys.executable, "-m", "flask", "--app", "launch_app", "ticker", *args],
        cwd=HERE,
        env=environ,
        capture_output=True,
        text=True,
        timeout=60,
    )


def status_of(server) -> dict:
    return json.loads(server.get("/status"))


def test_list_agrees_with_every_worker_and_starts_no_job(serve):
    server = serve([BIN / "gunicorn", "-w", "4", *GUNICORN[1:]], JOB_INTERVAL="3600")
    server.wait_for_runs(1)
    wait_until(
        lambda: all(job["runs"] == 1 and not job["running"] for job in status_of(server)["jobs"]),
        20,
        "the first runs, saved",
    )
    runs = len(server.runs(""))
    listed = flask_ticker(server, "list", "--json")
    assert listed.returncode == 0, listed.stderr
    mine = json.loads(listed.stdout)
    page = status_of(server)
    assert mine["jobs"] == page["jobs"] and mine["runner"] == page["runner"]
    assert not mine["is_runner"] and not mine["started"]
    text = flask_ticker(server, "list")
    assert text.returncode == 0
    assert f"run by process {page['runner']['pid']}" in text.stdout
    assert "tick  every 1h  next" in text.stdout and "runs=1 failures=0" in text.stdout
    time.sleep(0.5)
    assert len(server.runs("")) == runs  # listing ran nothing


def test_run_records_its_run_in_the_deployment_and_says_how_it_went(serve):
    server = serve([BIN / "gunicorn", "-w", "2", *GUNICORN[1:]], JOB_INTERVAL="3600")
    server.wait_for_runs(1, prefix="hourly")
    wait_until(lambda: status_of(server)["jobs"][1]["runs"] == 1, 20, "the first run, saved")
    ran = flask_ticker(server, "run", "hourly")
    assert ran.returncode == 0, ran.stderr
    assert "job 'hourly' ok" in ran.stdout
    assert len(server.runs("hourly")) == 2
    hourly = status_of(server)["jobs"][1]
    assert hourly["runs"] == 2, hourly  # every worker sees it, though none ran it
    assert hourly["last_run"] > status_of(server)["jobs"][0]["last_run"]


def test_run_of_a_job_that_raises_exits_1_with_its_traceback(serve):
    server = serve([BIN / "gunicorn", "-w", "1", *GUNICORN[1:]], JOB_INTERVAL="3600")
    server.wait_until_serving()
    wait_until(lambda: not status_of(server)["jobs"][0]["running"], 20, "the first run, saved")
    failed = flask_ticker(server, "run", "tick", JOB_FAILS="1")
    assert failed.returncode == 1
    assert "Traceback (most recent call last)" in failed.stderr
    assert "ValueError: the feed is down" in failed.stderr


def test_run_of_an_unknown_job_lists_the_names_and_exits_2(serve):
    server = serve([BIN / "gunicorn", "-w", "1", *GUNICORN[1:]])
    result = flask_ticker(server, "run", "tock")
    assert result.returncode == 2
    assert "no job named 'tock'; the jobs are: tick, hourly" in result.stderr
    assert "Traceback" not in result.stderr + result.stdout


def test_run_of_a_job_the_deployment_is_running_does_not_run_it_again(serve):
    server = serve([BIN / "gunicorn", "-w", "2", *GUNICORN[1:]], JOB_INTERVAL="4", JOB_SECONDS="2")
    started = server.wait_for_runs(1, prefix="tick-v1")[0]
    wait_until(lambda: status_of(server)["jobs"][0]["running"], 20, "the run, saved")
    refused = flask_ticker(server, "run", "tick")
    assert time.time() - started.at < 2, "the run was over before the command ran"
    assert refused.returncode == 1
    assert "running in the deployment now" in refused.stderr
    assert len(server.runs("tick-v1")) == 1
