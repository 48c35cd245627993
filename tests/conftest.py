"""Fixtures for the tests that serve apps with real servers in subprocesses.

Servers bind to free ports on 127.0.0.1, run in sessions of their own so
that every process they fork is stopped with them, and every wait is
bounded.
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import NamedTuple

import pytest

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
BIN = Path(sys.executable).parent  # flask, gunicorn and waitress-serve live here


class Run(NamedTuple):
    pid: int
    at: float
    event: str


def require(program: str, install: str | None = None) -> Path:
    """The path of an optional server's program: in this venv, else on PATH.
    Without it a test skips, with a reason, except under CI=true, where it
    fails: CI installs every server, so that no test can pass there by
    skipping."""
    path = BIN / program
    if path.exists():
        return path
    found = shutil.which(program)
    if found:
        return Path(found)
    message = f"{program} is not installed ({install or f'pip install {program}'})"
    if os.environ.get("CI") == "true":
        pytest.fail(f"{message}, and CI must run this test")
    pytest.skip(message)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float = 20.0, what: str = "condition"):
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if result:
            return result
        assert time.monotonic() < deadline, f"{what}: not met within {timeout}s"
        time.sleep(0.02)


class Server:
    """One command serving an app, with the job runs it has written so far."""

    def __init__(
        self,
        tmp_path: Path,
        args: list[str],
        cwd: Path,
        env: dict[str, str],
        stop_signal: int = signal.SIGTERM,
    ):
        self.port = free_port()
        self.stop_signal = stop_signal
        self.runs_file = tmp_path / "runs.txt"
        self.env = {
            **os.environ,
            "RUNS_FILE": str(self.runs_file),
            "PORT": str(self.port),
            "FLASK_RUN_PORT": str(self.port),
            "INSTANCE_PATH": str(tmp_path / "instance"),
            "PYTHONPATH": f"{ROOT}{os.pathsep}{HERE}",
            **env,
        }
        for inherited in ("WERKZEUG_RUN_MAIN", "WERKZEUG_SERVER_FD", "FLASK_RUN_FROM_CLI"):
            self.env.pop(inherited, None)
        self.log = open(tmp_path / f"server-{self.port}.log", "w+")  # one per server
        args = [str(a).replace("{port}", str(self.port)) for a in args]
        self.proc = subprocess.Popen(
            args,
            cwd=cwd,
            env=self.env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def output(self) -> str:
        self.log.seek(0)
        return self.log.read()

    def runs(self, prefix: str = "tick") -> list[Run]:
        if not self.runs_file.exists():
            return []
        rows = [line.split() for line in self.runs_file.read_text().splitlines()]
        return [
            Run(int(pid), float(at), event) for pid, at, event in rows if event.startswith(prefix)
        ]

    def wait_for_runs(self, count: int, prefix: str = "tick", timeout: float = 20.0) -> list[Run]:
        def enough():
            assert self.proc.poll() is None, f"server exited:\n{self.output()}"
            runs = self.runs(prefix)
            return runs if len(runs) >= count else None

        return wait_until(enough, timeout, f"{count} '{prefix}' runs")

    def get(self, path: str = "/") -> str:
        url = f"http://127.0.0.1:{self.port}{path}"
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.read().decode()

    def wait_until_serving(self, timeout: float = 20.0) -> None:
        def serving():
            assert self.proc.poll() is None, f"server exited:\n{self.output()}"
            try:
                return self.get()
            except OSError:
                return None

        wait_until(serving, timeout, "serving")

    def stop(self) -> None:
        for sig in (self.stop_signal, signal.SIGKILL):
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                break
            try:
                self.proc.wait(timeout=10)
                break
            except subprocess.TimeoutExpired:
                pass
        # Reap whatever the server forked, even if the leader is gone.
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.log.close()


@pytest.fixture
def serve(tmp_path):
    """serve(args, cwd=tests/, **env) starts a server, "{port}" in args being
    its free port; all are stopped after the test."""
    servers: list[Server] = []

    def start(
        args: list, cwd: Path = HERE, stop_signal: int = signal.SIGTERM, **env: str
    ) -> Server:
        server = Server(tmp_path, args, cwd, env, stop_signal)
        servers.append(server)
        return server

    yield start
    for server in servers:
        server.stop()


def assert_once_per_tick(runs: list[Run], interval: float) -> None:
    """No two runs in one tick, from one process or several."""
    times = sorted(run.at for run in runs)
    gaps = [round(b - a, 3) for a, b in zip(times, times[1:])]
    assert all(gap > interval / 2 for gap in gaps), f"two runs in one tick: {gaps}"


class RedisServer:
    """A redis-server of the test's own on 127.0.0.1, persistence off, that
    a test may stop and start again on the same port."""

    def __init__(self, program: Path, folder: Path, *options: str):
        self.program, self.folder, self.options = program, folder, options
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.program,
                "--bind",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.folder),
                *self.options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_until(self.answers, 20, "redis-server answering PING")

    def answers(self) -> bool:
        assert self.proc.poll() is None, "redis-server exited"
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=1) as s:
                s.sendall(b"PING\r\n")
                reply = s.recv(64)
        except OSError:
            return False
        return reply.startswith((b"+PONG", b"-NOAUTH"))

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path_factory):
    """A running redis-server; ``redis_server.stop()`` and ``.start()`` make
    an outage.  It needs redis-server, which .ci/run installs."""
    program = require("redis-server", "apt-get install redis-server")
    server = RedisServer(program, tmp_path_factory.mktemp("redis"))
    server.start()
    yield server
    server.stop()


class LeaseClock:
    """A monotonic clock and its wall clock, moved only by a lease test."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now

    def wall(self) -> float:
        return 1.8e9 + self.now


def ticker_maker(build_app):
    """For a lease's ``tickers`` fixture: make(*args, wall_ahead=0, **config)
    makes a ticker of build_app(*args, **config) on a LeaseClock, with a job
    "often" every 10 s, and returns (ticker, clock, the clock's time at each
    run); every ticker made stops after the test."""
    from flask_ticker import Ticker

    made = []

    def make(*args, wall_ahead: float = 0.0, **config):
        clock, ran = LeaseClock(), []
        wall = (lambda: clock.wall() + wall_ahead) if wall_ahead else clock.wall
        ticker = Ticker(build_app(*args, **config), clock=clock, wall_clock=wall)
        ticker.every(10, lambda: ran.append(clock.now), name="often")
        made.append(ticker)
        return ticker, clock, ran

    yield make
    for ticker in made:
        ticker.stop(timeout=10)


def settle(ticker) -> None:
    """Wait until no run that a pass started is still going."""
    wait_until(lambda: not any(job.running for job in ticker.jobs), 10, "runs finished")
