"""TICKER_LOCK = "postgresql://...", "mariadb+pymysql://..." or "sqlite:///...":
one runner on the app's own database, on real servers that these fixtures
start (PostgreSQL with initdb and pg_ctl, MariaDB with mariadb-install-db
and mariadbd), on 127.0.0.1 and a free port, in a folder of their own.

Each "host" is a process with an instance folder of its own, so that nothing
but the database is shared.  The lease expires on the database's clock, so
the in-process tests wait real time for it, while their fake clocks drive
the scheduler.
"""

from __future__ import annotations

import contextlib
import glob
import json
import logging
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from conftest import (
    BIN,
    assert_once_per_tick,
    free_port,
    require,
    settle,
    ticker_maker,
    wait_until,
)
from flask import Flask

from flask_ticker import Ticker

pytestmark = pytest.mark.skipif(sys.platform == "win32", reason="POSIX servers and signals")
PY = sys.executable
TTL = 1.0
INTERVAL = 0.5
SLACK = 0.5  # for a slow, shared machine
PASSWORD = "s3cret-pw"


def run(args: list, user: str | None = None, **kwargs) -> None:
    # PostgreSQL refuses to run as root: it runs as the postgres user then.
    prefix = ["runuser", "-u", user, "--"] if user else []
    subprocess.run(prefix + [str(a) for a in args], check=True, capture_output=True, **kwargs)


class Database:
    """A database server of the test session's own, that a test may stop and
    start again; ``url`` reaches it with a password."""

    url: str

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class Postgres(Database):
    def __init__(self) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
        pg_ctl = Path(found[-1]) if found else require("pg_ctl", "apt-get install postgresql")
        self.bin = pg_ctl.parent
        self.user = "postgres" if os.getuid() == 0 else None
        self.folder = Path(tempfile.mkdtemp(prefix="ticker-pg-"))
        self.port = free_port()
        (self.folder / "pw").write_text(PASSWORD)
        if self.user:
            shutil.chown(self.folder, self.user)
            shutil.chown(self.folder / "pw", self.user)
        password = ["-A", "scram-sha-256", "--pwfile", self.folder / "pw"]
        run(
            [self.bin / "initdb", "-D", self.folder / "data", "-U", "ticker", *password], self.user
        )
        self.url = f"postgresql+psycopg2://ticker:{PASSWORD}@127.0.0.1:{self.port}/postgres"
        self.start()

    def start(self) -> None:
        options = f"-p {self.port} -k {self.folder} -c listen_addresses=127.0.0.1"
        log = ["-l", self.folder / "log"]
        run(
            [self.bin / "pg_ctl", "-D", self.folder / "data", "-o", options, "-w", "start", *log],
            self.user,
        )

    def stop(self) -> None:
        run(
            [self.bin / "pg_ctl", "-D", self.folder / "data", "-m", "immediate", "stop"], self.user
        )

    def remove(self) -> None:
        with contextlib.suppress(subprocess.CalledProcessError):
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


class Mariadb(Database):
    def __init__(self) -> None:
        self.mariadbd = require("mariadbd", "apt-get install mariadb-server")
        install = require("mariadb-install-db", "apt-get install mariadb-server")
        self.folder = Path(tempfile.mkdtemp(prefix="ticker-mariadb-"))
        self.port = free_port()
        self.socket = self.folder / "sock"
        self.user = ["--user=root"] if os.getuid() == 0 else []
        data = f"--datadir={self.folder / 'data'}"
        normal = "--auth-root-authentication-method=normal"  # root, no password, on the socket
        run([install, "--no-defaults", data, normal, *self.user])
        self.url = f"mariadb+pymysql://ticker:{PASSWORD}@127.0.0.1:{self.port}/ticker"
        self.proc: subprocess.Popen | None = None
        self.start()
        import pymysql

        admin = pymysql.connect(unix_socket=str(self.socket), user="root")
        with admin.cursor() as cursor:
            cursor.execute("CREATE DATABASE ticker")
            for where in ("%", "localhost"):  # else the anonymous ''@localhost wins
                cursor.execute(f"CREATE USER 'ticker'@'{where}' IDENTIFIED BY '{PASSWORD}'")
                cursor.execute(f"GRANT ALL ON ticker.* TO 'ticker'@'{where}'")
        admin.close()

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                self.mariadbd,
                "--no-defaults",
                f"--datadir={self.folder / 'data'}",
                f"--port={self.port}",
                "--bind-address=127.0.0.1",
                f"--socket={self.socket}",
                "--skip-log-bin",
                *self.user,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            # Its sessions' zone, SYSTEM by default, has DST, as many servers' have.
            env={**os.environ, "TZ": "Europe/Berlin"},
        )
        wait_until(self.socket.exists, 30, "mariadbd listening")
        time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self.socket.unlink(missing_ok=True)

    def remove(self) -> None:
        self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)


@pytest.fixture(scope="session")
def servers():
    """The database servers, started when a test first needs one."""
    started: dict[str, Database] = {}
    yield started
    for server in started.values():
        server.remove()


@pytest.fixture(params=["postgresql", "mariadb", "sqlite"])
def database(request, servers, tmp_path):
    """A database that is up; ``.url``; ``.stop()`` and ``.start()`` for an
    outage (not for SQLite, a file)."""
    kind = request.param
    if kind == "sqlite":
        server = Database()
        server.url = f"sqlite:///{tmp_path / 'shared.db'}"
        server.kind = kind
        yield server
        return
    if kind not in servers:
        servers[kind] = Postgres() if kind == "postgresql" else Mariadb()
    server = servers[kind]
    server.kind = kind
    yield server
    if kind == "mariadb":
        if server.proc is None or server.proc.poll() is not None:
            server.start()
    else:
        with contextlib.suppress(subprocess.CalledProcessError):
            server.start()  # if a test stopped it


@pytest.fixture
def mariadb(servers):
    if "mariadb" not in servers:
        servers["mariadb"] = Mariadb()
    return servers["mariadb"]


SERVERS = pytest.mark.parametrize("database", ["postgresql", "mariadb"], indirect=True)


def sql_app(url, key: str, **config) -> Flask:
    app = Flask("shop")
    app.config.update(
        {"TICKER_LOCK": url, "TICKER_LOCK_TTL": TTL, "TICKER_LOCK_KEY": key, **config}
    )
    return app


@pytest.fixture
def key(request):
    """A lease of this test's own: the servers outlive each test."""
    return f"test:{request.node.name}:{os.getpid()}:{time.time()}"


@pytest.fixture
def tickers():
    """tickers(url, key, wall_ahead=0, **config) makes a ticker on a fake
    clock; all stop after."""
    yield from ticker_maker(sql_app)


def taken_over(database, key: str, tickers) -> tuple:
    """A runner that ran once, then froze past the TTL, and the ticker that
    took its lease meanwhile."""
    frozen, clock, ran = tickers(database.url, key)
    frozen.run_pending()
    settle(frozen)
    other, _, _ = tickers(database.url, key)
    wait_until(lambda: is_runner(other), 10, "the lease expired and taken over")
    return frozen, clock, ran, other


def is_runner(ticker: Ticker) -> bool:
    ticker.run_pending()
    return ticker.status()["is_runner"]


# -- bad input, and the extra --


@pytest.mark.parametrize("url", ["sqlite://", "sqlite:///:memory:"])
def test_an_in_memory_sqlite_database_is_rejected_naming_ticker_lock(url):
    with pytest.raises(ValueError, match="TICKER_LOCK .*in-memory"):
        Ticker(sql_app(url, "k", TICKER_ENABLED=False))


def test_a_malformed_database_url_is_rejected_without_its_password():
    url = "postgresql://ticker:hunter2x@127.0.0.1:notaport/db"
    with pytest.raises(ValueError, match="TICKER_LOCK") as raised:
        Ticker(sql_app(url, "k", TICKER_ENABLED=False))
    assert "hunter2x" not in str(raised.value)


def test_a_database_url_without_sqlalchemy_names_the_extra_to_install(monkeypatch, tmp_path):
    monkeypatch.setitem(sys.modules, "sqlalchemy", None)
    with pytest.raises(ImportError, match=r"pip install 'flask-ticker\[sql\]'"):
        Ticker(sql_app(f"sqlite:///{tmp_path / 'x.db'}", "k", TICKER_ENABLED=False))


def test_sqlalchemy_is_never_imported_unasked():
    code = (
        "import sys, flask, flask_ticker\n"
        "t = flask_ticker.Ticker(flask.Flask('a'))\n"
        "print('sqlalchemy' in sys.modules)"
    )
    out = subprocess.run([PY, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# -- one process, or a few, on each database --


def test_an_engine_works_as_the_lock_and_keeps_the_app_tables(database, key, tickers):
    import sqlalchemy as sa

    engine = sa.create_engine(database.url)
    with engine.begin() as conn:
        conn.execute(sa.text("CREATE TABLE IF NOT EXISTS orders (id INTEGER PRIMARY KEY)"))
        conn.execute(sa.text("DELETE FROM orders"))
        conn.execute(sa.text("INSERT INTO orders (id) VALUES (7)"))
    ticker, clock, ran = tickers(engine, key)
    ticker.run_pending()
    settle(ticker)
    assert ran == [1000.0] and ticker.status()["is_runner"]
    with engine.connect() as conn:
        tables = sa.inspect(conn).get_table_names()
        assert conn.execute(sa.text("SELECT id FROM orders")).scalars().all() == [7]
    assert {"flask_ticker_lease", "flask_ticker_runs"} <= set(tables)
    assert all(t == "orders" or t.startswith("flask_ticker") for t in tables), tables
    engine.dispose()


def drop_tables(url: str) -> None:
    import sqlalchemy as sa

    engine = sa.create_engine(url)
    with engine.begin() as conn:
        conn.execute(sa.text("DROP TABLE IF EXISTS flask_ticker_runs"))
        conn.execute(sa.text("DROP TABLE IF EXISTS flask_ticker_lease"))
    engine.dispose()


def test_missing_tables_are_made_on_first_use(database, key, tickers):
    drop_tables(database.url)
    ticker, _, ran = tickers(database.url, key)
    ticker.run_pending()
    settle(ticker)
    assert ran == [1000.0] and ticker.status()["is_runner"]


def test_a_driver_that_counts_changed_rows_is_refused_naming_client_found_rows(
    mariadb, key, tickers, caplog
):
    import sqlalchemy as sa

    # Without CLIENT_FOUND_ROWS, an UPDATE that changes nothing counts 0 rows.
    engine = sa.create_engine(mariadb.url, connect_args={"client_flag": 0})
    ticker, _, ran = tickers(engine, key)
    with caplog.at_level(logging.ERROR, "flask.app.flask_ticker"):
        ticker.run_pending()
    settle(ticker)
    assert ran == [] and not ticker.status()["is_runner"]
    assert "CLIENT_FOUND_ROWS" in caplog.text
    engine.dispose()


def test_a_session_time_zone_with_dst_does_not_shift_the_mysql_lease(mariadb, key, tickers):
    import sqlalchemy as sa

    # 02:30 on the night Berlin's clocks go back: an hour that comes twice.
    # MariaDB reads such a time as its second occurrence, an hour late.
    repeated = 1792888200  # 2026-10-25 00:30 UTC, 02:30 CEST, the first

    def at_that_moment(zone: str):
        engine = sa.create_engine(mariadb.url)

        @sa.event.listens_for(engine, "connect")
        def set_clock(connection, record):
            with connection.cursor() as cursor:
                cursor.execute(f"SET time_zone = '{zone}'")
                cursor.execute(f"SET timestamp = {repeated}")

        return engine

    berlin, utc = at_that_moment("SYSTEM"), at_that_moment("+00:00")
    try:
        holder, _, _ = tickers(utc, key, TICKER_LOCK_TTL=30)
        other, _, _ = tickers(berlin, key, TICKER_LOCK_TTL=30)
        assert is_runner(holder)
        assert not is_runner(other)  # the lease is 30 s from expiring in every zone
    finally:
        for engine in (berlin, utc):
            engine.dispose()


def test_the_state_is_the_same_in_every_process_and_survives_a_restart(database, key, tickers):
    first, clock, ran = tickers(database.url, key)
    first.run_pending()
    settle(first)
    first.stop()
    second, clock2, ran2 = tickers(database.url, key)
    [job] = second.status()["jobs"]
    assert job["runs"] == 1 and job["last_run"] is not None
    second.run_pending()
    settle(second)
    assert ran2 == []  # its last run is less than an interval old: it waits
    clock2.now += 10
    second.run_pending()
    settle(second)
    assert ran2 == [1010.0]


def test_runs_by_hand_beside_the_runner_are_folded_into_its_history_once(database, key, tickers):
    runner, clock, ran = tickers(database.url, key, TICKER_LOCK_TTL=30)
    assert is_runner(runner)
    settle(runner)
    by_hand, _, hand_ran = tickers(database.url, key)  # flask ticker run, elsewhere
    for _ in range(2):
        result = CliRunner().invoke(by_hand.app.cli, ["ticker", "run", "often"])
        assert result.exit_code == 0, result.output
    assert len(hand_ran) == 2 and not by_hand.status()["is_runner"]
    for step in (10, 0.5, 0.5):  # a run and a renewal at 1010, then saves
        clock.now += step
        runner.run_pending()
        settle(runner)
    assert ran == [1000.0, 1010.0]
    assert [job.runs for job in runner.jobs] == [4]  # two by hand, folded in once
    assert [job["runs"] for job in by_hand.status()["jobs"]] == [4]


def test_two_apps_on_one_database_each_have_a_runner(database, key, tickers):
    shop, _, shop_ran = tickers(database.url, key + ":shop")
    blog, _, blog_ran = tickers(database.url, key + ":blog")
    assert is_runner(shop) and is_runner(blog)
    settle(shop)
    settle(blog)
    assert shop_ran == blog_ran == [1000.0]


def test_a_stale_runner_can_neither_renew_nor_start_a_run(database, key, tickers, caplog):
    frozen, clock, ran, other = taken_over(database, key, tickers)
    clock.now += 10  # the stale runner wakes: its renewal is due, and a run
    frozen.run_pending()
    settle(frozen)
    assert ran == [1000.0] and not frozen.status()["is_runner"]
    assert "another process took its lease" in caplog.text


def test_a_stale_runner_can_neither_save_nor_release(database, key, tickers, caplog):
    frozen, clock, ran, other = taken_over(database, key, tickers)
    frozen.stop()  # it still believes it runs the jobs: a last save, then a release
    assert "took its lease (TICKER_LOCK) before it saved" in caplog.text
    third, _, _ = tickers(database.url, key)
    assert not is_runner(third)  # the other's lease stands
    assert third.status()["runner"] is not None  # and its record, not a clean stop's


def test_a_host_whose_clock_is_an_hour_ahead_neither_takes_a_held_lease_nor_runs(
    database, key, tickers
):
    holder, _, _ = tickers(database.url, key)
    assert is_runner(holder)
    ahead, clock, ran = tickers(database.url, key, wall_ahead=3600.0)
    for _ in range(3):
        clock.now += 10
        assert not is_runner(ahead)
    assert ran == []


def test_16_threads_and_4_processes_racing_for_the_lease_have_one_winner(
    database, key, tmp_path, caplog
):
    drop_tables(database.url)  # so that they race to make them, and the row
    code = (
        "import sys, time, flask, flask_ticker\n"
        "app = flask.Flask('shop')\n"
        "app.config.update(TICKER_LOCK=sys.argv[1], TICKER_LOCK_KEY=sys.argv[2],"
        " TICKER_ENABLED=False)\n"
        "t = flask_ticker.Ticker(app)\n"
        "time.sleep(float(sys.argv[3]) - time.time())\n"
        "t.run_pending()\n"
        "print(t.status()['is_runner'], flush=True)\n"
        "time.sleep(3)\n"
    )
    start_at = time.time() + 3
    procs = [
        subprocess.Popen(
            [PY, "-c", code, database.url, key, str(start_at)], stdout=subprocess.PIPE
        )
        for _ in range(4)
    ]
    tickers = [
        Ticker(sql_app(database.url, key, TICKER_ENABLED=False, TICKER_LOCK_TTL=30))
        for _ in range(16)
    ]
    results: list[bool] = []

    def race(ticker: Ticker) -> None:
        time.sleep(max(0.0, start_at - time.time()))
        ticker.run_pending()
        results.append(ticker.status()["is_runner"])

    threads = [threading.Thread(target=race, args=(t,)) for t in tickers]
    with caplog.at_level(logging.INFO, "flask.app.flask_ticker"):
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(30)
    outputs = [proc.communicate(timeout=30)[0].decode().strip() for proc in procs]
    for ticker in tickers:
        ticker.stop(timeout=10)
    assert [proc.returncode for proc in procs] == [0] * 4
    assert results.count(True) + outputs.count("True") == 1, (results, outputs)
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING], caplog.text


@SERVERS  # an SQLite file neither goes down nor has a password
def test_with_the_database_down_runs_stop_within_the_ttl_and_resume_after(
    database, key, tickers, caplog
):
    caplog.set_level(logging.INFO)
    ticker, clock, ran = tickers(database.url, key, TICKER_LOCK_TTL=30)
    ticker.run_pending()
    settle(ticker)
    database.stop()
    try:
        for _ in range(5):  # due at 1010 and 1020: within the TTL, they run
            clock.now += 5
            ticker.run_pending()
            settle(ticker)
        assert ran == [1000.0, 1010.0, 1020.0]
        for _ in range(5):  # at 1030 the TTL has passed without a renewal
            clock.now += 5
            ticker.run_pending()
            settle(ticker)
        assert ran == [1000.0, 1010.0, 1020.0]
        status = ticker.status()
        assert "(TICKER_LOCK) cannot be used" in status["error"]
        assert PASSWORD not in status["error"]
    finally:
        database.start()
    wait_until(lambda: is_runner(ticker), 20, "the lease taken again")
    settle(ticker)
    assert ran[-1] == clock.now
    warnings = [r.getMessage() for r in caplog.records if "cannot be used (" in r.getMessage()]
    assert len(warnings) == 1 and PASSWORD not in warnings[0], warnings
    assert len([r for r in caplog.records if "can be used again" in r.getMessage()]) == 1


def test_a_database_that_hangs_holds_up_stop_only_until_its_calls_time_out(
    mariadb, key, tickers, caplog
):
    ticker, clock, ran = tickers(mariadb.url, key)
    assert is_runner(ticker)
    settle(ticker)
    clock.now += 10  # a renewal and a run are due
    took: list[float] = []

    def renew_then_stop() -> None:
        began = time.monotonic()
        ticker.run_pending()
        ticker.stop(0)
        took.append(time.monotonic() - began)

    stopping = threading.Thread(target=renew_then_stop, name="renew-then-stop")
    os.kill(mariadb.proc.pid, signal.SIGSTOP)  # up, and answering nothing
    try:
        stopping.start()
        stopping.join(30)
    finally:
        os.kill(mariadb.proc.pid, signal.SIGCONT)
        stopping.join(30)
    # Three calls (a renewal, a save, a release) of 2 s at most each, and
    # slack for a slow machine; without timeouts it waits for the database.
    assert took and took[0] < 12, took
    assert ran == [1000.0]  # the run due at 1010 was not started
    assert "cannot be used" in caplog.text


@SERVERS  # an SQLite file neither goes down nor has a password
def test_a_wrong_password_is_an_outage_logged_once_and_never_shown(database, key, tickers, caplog):
    url = database.url.replace(PASSWORD, "hunter2x")
    ticker, clock, ran = tickers(url, key)
    for _ in range(3):
        assert not is_runner(ticker)
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1, warnings
    assert "hunter2x" not in caplog.text and "hunter2x" not in json.dumps(ticker.status())
    assert ran == []


def test_an_unreachable_database_at_start_is_one_warning(key, tickers, caplog):
    url = f"postgresql+psycopg2://ticker:{PASSWORD}@127.0.0.1:{free_port()}/postgres"
    ticker, clock, ran = tickers(url, key)
    for _ in range(3):
        assert not is_runner(ticker)
    warnings = [r.getMessage() for r in caplog.records if "cannot be used" in r.getMessage()]
    assert len(warnings) == 1 and PASSWORD not in caplog.text, warnings


# -- hosts: real servers, each with an instance folder of its own --


def host(serve, tmp_path: Path, name: str, url: str, key: str, args=None, **env):
    return serve(
        args or [PY, "launch_app.py"],
        INSTANCE_PATH=str(tmp_path / name),
        FLASK_TICKER_LOCK=json.dumps(url),
        FLASK_TICKER_LOCK_KEY=json.dumps(key),
        FLASK_TICKER_LOCK_TTL=str(TTL),
        **{"JOB_INTERVAL": str(INTERVAL), **env},
    )


def test_two_hosts_run_each_tick_once_for_longer_than_two_ttls(serve, tmp_path, database, key):
    gunicorn = [BIN / "gunicorn", "-w", "2", "-b", "127.0.0.1:{port}", "launch_app:app"]
    waitress = [BIN / "waitress-serve", "--listen=127.0.0.1:{port}", "launch_app:app"]
    a = host(serve, tmp_path, "a", database.url, key, gunicorn)
    b = host(serve, tmp_path, "b", database.url, key, waitress)
    a.wait_until_serving()
    b.wait_until_serving()
    began = time.time()
    runs = a.wait_for_runs(12, prefix="tick")
    assert runs[-1].at - began > 2 * TTL
    assert_once_per_tick(runs, INTERVAL)
    assert len(a.runs("hourly")) == 1


def test_when_the_runner_is_killed_another_takes_over_on_the_same_grid(
    serve, tmp_path, database, key
):
    a = host(serve, tmp_path, "a", database.url, key)
    first = a.wait_for_runs(4)
    b = host(serve, tmp_path, "b", database.url, key)
    b.wait_until_serving()
    killed_at = time.time()
    a.proc.kill()
    after = b.wait_for_runs(len(a.runs()) + 4)
    taken = [run for run in after if run.pid == b.pid]
    assert taken[0].at - killed_at < TTL + 0.2 + INTERVAL + SLACK
    assert_once_per_tick(after, INTERVAL)
    phase = [
        round(((run.at - first[0].at) / INTERVAL) % 1, 2)
        for run in taken
        if run.event == "tick-v1"
    ]
    assert all(p < 0.2 or p > 0.8 for p in phase), phase
    assert len(b.runs("hourly")) == 1  # run_now ran once, on the first host


def test_a_clean_stop_hands_over_within_a_retry(serve, tmp_path, database, key):
    a = host(serve, tmp_path, "a", database.url, key)
    a.wait_for_runs(3)
    b = host(serve, tmp_path, "b", database.url, key)
    b.wait_until_serving()
    stopped_at = time.time()
    a.stop()
    after = b.wait_for_runs(len(b.runs()) + 3)
    taken = [run for run in after if run.pid == b.pid]
    assert taken[0].at - stopped_at < 0.2 + INTERVAL + SLACK  # TICKER_LOCK_RETRY is 0.2
    assert_once_per_tick(after, INTERVAL)


@SERVERS  # an SQLite file neither goes down nor has a password
def test_with_the_database_down_both_hosts_serve_then_one_resumes(serve, tmp_path, database, key):
    a = host(serve, tmp_path, "a", database.url, key)
    b = host(serve, tmp_path, "b", database.url, key)
    a.wait_for_runs(3)
    b.wait_until_serving()
    down_at = time.time()
    database.stop()
    try:
        time.sleep(TTL + 1)
        assert a.get() and b.get()  # HTTP 200, or get() raises
        assert [run for run in a.runs() if run.at > down_at + TTL + 0.1] == []
    finally:
        database.start()
    up_at = time.time()
    wait_until(lambda: len([r for r in a.runs() if r.at > up_at]) >= 4, 30, "resumed")
    resumed = [run for run in a.runs() if run.at > up_at]
    assert_once_per_tick(resumed, INTERVAL)
    assert len({run.pid for run in resumed}) == 1
