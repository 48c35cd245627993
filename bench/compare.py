"""flask_ticker side by side with APScheduler and friends, in one run.

    pip install -e '.[bench]'
    python bench/compare.py            # the full run, a few minutes
    python bench/compare.py --quick    # a subset, under a minute

Every measurement runs in a fresh subprocess (``--worker IMPL METRIC``), so
each implementation starts with clean imports and memory.  Timing metrics
are repeated and reported as medians.  The run prints a markdown table (a
column per implementation, with ratios against APScheduler, or against
ThreadPoolExecutor for background work), and writes bench/results.json and
bench/results.png.  A cell says so where an implementation cannot do what a
metric asks; no value is ever made up.  It measures; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import platform
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from datetime import datetime, timedelta, timezone
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
HOURLY = 3600

SCHEDULERS = [
    "flask_ticker",
    "flask_ticker_nolock",
    "flask_ticker_redis",
    "flask_ticker_sql",
    "apscheduler",
    "flask_apscheduler",
    "timeloop",
    "schedule",
    "thread_sleep",
    "thread_event",
]
IMPORTABLE = [
    "flask_ticker",
    "flask_ticker_sql",
    "apscheduler",
    "flask_apscheduler",
    "timeloop",
    "schedule",
]
BACKGROUND = ["flask_ticker", "thread_pool", "thread_per_call", "flask_executor", "apscheduler"]


class CannotDo(Exception):
    """The implementation has no way to do what the metric asks."""


# -- the contenders, each behind the same small adapter --


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def make_app(**config):
    from flask import Flask

    app = Flask("bench", instance_path=tempfile.mkdtemp())
    app.config.update(TICKER_ENABLED=False, **config)
    return app


def make_ticker(name: str):
    """flask_ticker with the default lock file; _nolock: with none, to show
    its cost; _redis: with its lease in Redis, under a key of this worker's
    own, since an earlier worker exited holding its lease; _sql: with its
    lease in PostgreSQL on loopback, likewise."""
    from flask_ticker import Ticker

    url = os.environ.get("BENCH_REDIS_URL")
    if name == "flask_ticker_redis" and url is None:
        raise CannotDo("no redis-server")
    sql = os.environ.get("BENCH_SQL_URL")
    if name == "flask_ticker_sql" and sql is None:
        raise CannotDo("no PostgreSQL")
    lease = {
        "flask_ticker": {},
        "flask_ticker_nolock": {"TICKER_LOCK": False},
        "flask_ticker_redis": {"TICKER_LOCK": url, "TICKER_LOCK_KEY": f"bench:{os.getpid()}"},
        "flask_ticker_sql": {"TICKER_LOCK": sql, "TICKER_LOCK_KEY": f"bench:{os.getpid()}"},
    }
    return Ticker(make_app(**lease[name]))


class Scheduler:
    """add(interval, fn, run_now) jobs, then start() and stop()."""

    can_run_now = True
    can_stop = True
    fixed_rate = True

    def __init__(self, name: str) -> None:
        self.name = "flask_ticker" if name.startswith("flask_ticker") else name
        if self.name == "flask_ticker":
            self.ticker = make_ticker(name)
        elif name == "apscheduler":
            from apscheduler.schedulers.background import BackgroundScheduler

            self.sched = BackgroundScheduler()
        elif name == "flask_apscheduler":
            from flask_apscheduler import APScheduler

            self.sched = APScheduler()
            self.sched.init_app(make_app())
        elif name == "timeloop":
            from timeloop import Timeloop

            self.loop = Timeloop()
            self.can_run_now = self.fixed_rate = False
        elif name == "schedule":
            import schedule

            self.schedule = schedule.Scheduler()
            self.can_run_now = False
        elif name in ("thread_sleep", "thread_event"):
            self.threads, self.stopping = [], threading.Event()
            self.fixed_rate = False
            self.can_stop = name == "thread_event"
        self.count = 0

    def add(self, interval: float, fn, run_now: bool = True) -> None:
        if run_now and not self.can_run_now:
            raise CannotDo("no run-now")
        self.count += 1
        name = f"job{self.count}"
        if self.name == "flask_ticker":
            self.ticker.every(interval, fn, name=name, run_now=run_now)
        elif self.name in ("apscheduler", "flask_apscheduler"):
            first = datetime.now(timezone.utc) if run_now else None
            extra = {"next_run_time": first} if run_now else {}
            self.sched.add_job(func=fn, trigger="interval", seconds=interval, id=name, **extra)
        elif self.name == "timeloop":
            self.loop._add_job(fn, timedelta(seconds=interval))
        elif self.name == "schedule":
            self.schedule.every(interval).seconds.do(fn)
        elif self.name == "thread_sleep":

            def loop(fn=fn):
                while True:
                    fn()
                    time.sleep(interval)

            self.threads.append(threading.Thread(target=loop, daemon=True))
        elif self.name == "thread_event":

            def loop(fn=fn):
                if run_now:
                    fn()
                while not self.stopping.wait(interval):
                    fn()

            self.threads.append(threading.Thread(target=loop, daemon=True))

    def add_daily(self, hour: int, minute: int, fn) -> None:
        """A job each day at hour:minute (UTC where a zone can be given)."""
        self.count += 1
        name = f"job{self.count}"
        if self.name == "flask_ticker":
            self.ticker.every(86400, fn, name=name, at=f"{hour:02d}:{minute:02d}", tz="UTC")
        elif self.name in ("apscheduler", "flask_apscheduler"):
            self.sched.add_job(
                func=fn, trigger="cron", hour=hour, minute=minute, timezone="UTC", id=name
            )
        elif self.name == "schedule":
            # Its zones need pytz; the machine's own zone costs the same.
            self.schedule.every().day.at(f"{hour:02d}:{minute:02d}").do(fn)
        else:
            raise CannotDo("no wall-clock times")

    def start(self) -> None:
        if self.name == "flask_ticker":
            self.ticker.start()
        elif self.name in ("apscheduler", "flask_apscheduler"):
            self.sched.start()
        elif self.name == "timeloop":
            self.loop.start(block=False)
        elif self.name == "schedule":

            def loop():
                while not self.stopping.wait(1):
                    self.schedule.run_pending()

            self.stopping = threading.Event()
            threading.Thread(target=loop, daemon=True).start()
        else:
            for thread in self.threads:
                thread.start()

    def stop(self) -> None:
        if not self.can_stop:
            raise CannotDo("cannot stop")
        if self.name == "flask_ticker":
            self.ticker.stop()
        elif self.name == "apscheduler":
            self.sched.shutdown(wait=True)
        elif self.name == "flask_apscheduler":
            self.sched.shutdown(wait=True)
        elif self.name == "timeloop":
            self.loop.stop()
        else:
            self.stopping.set()
            for thread in getattr(self, "threads", []):
                thread.join()


def import_contender(name: str) -> None:
    if name.startswith("flask_ticker"):
        import flask_ticker  # noqa: F401

        if name == "flask_ticker_sql":
            import_database_driver()
    elif name == "apscheduler":
        import apscheduler.schedulers.background  # noqa: F401
    elif name == "flask_apscheduler":
        import flask_apscheduler  # noqa: F401
    elif name == "timeloop":
        import timeloop  # noqa: F401
    elif name == "schedule":
        import schedule  # noqa: F401


def import_database_driver() -> None:
    """What TICKER_LOCK = "postgresql+psycopg2://..." imports: SQLAlchemy and
    its driver.  The SQL column's import row counts them; its other rows run
    with them imported already, as in an app with a database (Flask-SQLAlchemy),
    which imports them before it makes a Ticker."""
    import psycopg2  # noqa: F401
    import sqlalchemy.dialects.postgresql.psycopg2  # noqa: F401


# -- metrics, run inside a worker process --


def m_import(name: str) -> dict:
    import flask  # noqa: F401

    before = len(sys.modules)
    began = time.perf_counter()
    import_contender(name)
    return {"ms": (time.perf_counter() - began) * 1000, "modules": len(sys.modules) - before}


def m_idle(name: str, jobs: int = 10, idle: bool = False, daily: bool = False) -> dict:
    """Register ``jobs`` hourly jobs and start: memory, threads, stop, and
    with ``idle``, the CPU spent over IDLE_SECONDS of doing nothing.  With
    ``daily``, jobs at a time of day instead, all minutes of the day in turn."""
    import flask  # noqa: F401

    base_rss, base_threads = rss_kib(), threading.active_count()
    began = time.perf_counter()
    sched = Scheduler(name)
    for i in range(jobs):
        if daily:
            sched.add_daily(i // 60 % 24, i % 60, lambda: None)
        else:
            sched.add(HOURLY, lambda: None, run_now=False)
    sched.start()
    start_ms = (time.perf_counter() - began) * 1000
    time.sleep(0.2)
    result = {
        "rss_kib": rss_kib() - base_rss,
        "threads": threading.active_count() - base_threads,
        "register_start_ms": start_ms,
    }
    if idle:
        cpu = time.process_time()
        time.sleep(IDLE_SECONDS)
        result["idle_cpu_s"] = time.process_time() - cpu
    began = time.perf_counter()
    try:
        sched.stop()
        result["stop_ms"] = (time.perf_counter() - began) * 1000
    except CannotDo as exc:
        result["stop_ms"] = str(exc)
    return result


def m_first_run(name: str) -> dict:
    # Timed inside the job: when a waiting thread wakes up would add its own
    # scheduling delay, and it could not wake before start() returns.
    sched = Scheduler(name)
    ran = threading.Event()
    started: list[float] = []

    def job():
        if not started:
            started.append(time.perf_counter())
        ran.set()

    sched.add(HOURLY, job, run_now=True)
    began = time.perf_counter()
    sched.start()
    ran.wait(30)
    return {"ms": (started[0] - began) * 1000}


def lateness(starts: list[float], interval: float) -> list[float]:
    """Seconds each run started after its slot on the job's own fixed-rate grid.

    The grid is the one the job's runs fit best: slot k of the tick each run
    belongs to, shifted so that no run is early.  How late the first run
    came after start() is measured on its own ("start() to first run").
    """
    if not starts:
        return []
    ticks = [round((t - starts[0]) / interval) for t in starts]
    origin = min(t - k * interval for t, k in zip(starts, ticks))
    return [t - (origin + k * interval) for t, k in zip(starts, ticks)]


def drift(starts: list[float], interval: float) -> float:
    """Seconds per 100 runs by which run k falls behind slot k of the grid
    that the second run started (the first carries start-up costs): a sleep
    loop's run time adds up here."""
    return slope([t - (starts[1] + k * interval) for k, t in enumerate(starts[1:])]) * 100


def m_punctuality(name: str, jobs: int = 20, interval: float = 0.05) -> dict:
    sched = Scheduler(name)
    starts: list[list[float]] = [[] for _ in range(jobs)]
    for i in range(jobs):
        sched.add(
            interval, lambda i=i: starts[i].append(time.monotonic()), run_now=sched.can_run_now
        )
    sched.start()
    time.sleep(PUNCTUALITY_SECONDS)
    end = time.monotonic()
    late = [x for s in starts for x in lateness(s, interval)]
    # the ticks each job's grid had between its first run and the end
    expected = sum(int((end - s[0]) / interval) + 1 for s in starts if s)
    runs_pct = 100 * sum(map(len, starts)) / expected
    # Drift counts runs one by one: meaningless where most runs are missing.
    drifts = [drift(s, interval) for s in starts if len(s) > 3]
    return {
        "median_ms": statistics.median(late) * 1000,
        "p99_ms": p99(late) * 1000,
        "drift_ms_per_100": statistics.median(drifts) * 1000 if runs_pct > 90 else "runs missed",
        "runs_pct": runs_pct,
        "samples_ms": [round(x * 1000, 3) for x in late],
    }


def m_overrun(name: str) -> dict:
    sched = Scheduler(name)
    lines = count_log_lines()
    running = [0, 0]  # now, most at once
    second: list[float] = []

    def slow():
        running[0] += 1
        running[1] = max(running)
        time.sleep(0.12)
        running[0] -= 1

    sched.add(0.05, slow, run_now=sched.can_run_now)
    sched.add(0.05, lambda: second.append(time.monotonic()), run_now=sched.can_run_now)
    sched.start()
    time.sleep(OVERRUN_SECONDS)
    late = lateness(second, 0.05)
    return {
        "second_p99_ms": p99(late) * 1000,
        "second_samples_ms": [round(x * 1000, 3) for x in late],
        "max_concurrency": running[1],
        "warning_lines": lines(),
    }


def m_failing(name: str) -> dict:
    sched = Scheduler(name)
    lines = count_log_lines()
    fails, healthy = [0], []

    def failing():
        fails[0] += 1
        raise ValueError("boom")

    sched.add(0.02, failing, run_now=sched.can_run_now)
    sched.add(0.02, lambda: healthy.append(time.monotonic()), run_now=sched.can_run_now)
    sched.start()
    time.sleep(2)
    expected = int(2 / 0.02)
    return {
        "failing_runs_pct": 100 * fails[0] / expected,
        "healthy_p99_ms": p99(lateness(healthy, 0.02)) * 1000,
        "log_lines": lines(),
    }


def m_growth(name: str, jobs: int) -> dict:
    return m_idle(name, jobs)


def m_background(name: str, tasks: int, seconds: float) -> dict:
    """``tasks`` calls, from a view, of a task that takes ``seconds`` and needs
    an app context (Flask-Executor insists on a request context to copy)."""
    from flask import current_app

    app = make_app()
    done = threading.Semaphore(0)
    counted = [0]
    base_threads, peak = threading.active_count(), [0]

    def task():
        current_app.name  # the task really has its app context
        if seconds:
            time.sleep(seconds)
        peak[0] = max(peak[0], threading.active_count())
        counted[0] += 1
        done.release()

    submit = background_submitter(name, app, task)
    began = time.perf_counter()
    with app.test_request_context():
        for _ in range(tasks):
            submit()
    finished = 0
    while finished < tasks and done.acquire(timeout=5):  # 5 s without progress: given up
        finished += 1
    elapsed = (time.perf_counter() - began) * 1000
    return {"ms": elapsed, "ran_pct": 100 * counted[0] / tasks, "threads": peak[0] - base_threads}


def background_submitter(name: str, app, task):
    def in_context():
        with app.app_context():
            task()

    if name == "flask_ticker":
        from flask_ticker import Ticker, run_in_background

        Ticker(app)
        return lambda: run_in_background(task)
    if name == "thread_pool":
        from concurrent.futures import ThreadPoolExecutor

        pool = ThreadPoolExecutor()
        return lambda: pool.submit(in_context)
    if name == "thread_per_call":
        return lambda: threading.Thread(target=in_context).start()
    if name == "flask_executor":
        from flask_executor import Executor

        executor = Executor(app)
        return lambda: executor.submit(task)
    if name == "apscheduler":
        from apscheduler.schedulers.background import BackgroundScheduler

        sched = BackgroundScheduler()
        sched.start()
        return lambda: sched.add_job(in_context)
    raise CannotDo("no background helper")


def count_log_lines():
    """Count the lines logged at WARNING and above from now on, tracebacks
    included, as a default formatter would write them."""
    counter = logging.Handler(logging.WARNING)
    counter.count = 0

    def emit(record):
        counter.count += len(counter.format(record).splitlines())

    counter.emit = emit
    logging.getLogger().addHandler(counter)
    return lambda: counter.count


def slope(ys: list[float]) -> float:
    n = len(ys)
    mean_x, mean_y = (n - 1) / 2, sum(ys) / n
    num = sum((x - mean_x) * (y - mean_y) for x, y in enumerate(ys))
    return num / sum((x - mean_x) ** 2 for x in range(n))


def p99(xs: list[float]) -> float:
    return sorted(xs)[min(len(xs) - 1, int(len(xs) * 0.99))] if xs else float("nan")


METRICS = {
    "import": m_import,
    "idle": m_idle,
    "first_run": m_first_run,
    "punctuality": m_punctuality,
    "overrun": m_overrun,
    "failing": m_failing,
    "growth": m_growth,
    "background": m_background,
}
IDLE_SECONDS = PUNCTUALITY_SECONDS = OVERRUN_SECONDS = 0.0  # set by the parent


def worker(impl: str, metric: str, params: dict) -> None:
    global IDLE_SECONDS, PUNCTUALITY_SECONDS, OVERRUN_SECONDS
    IDLE_SECONDS = params.pop("idle_seconds", 5.0)
    PUNCTUALITY_SECONDS = params.pop("punctuality_seconds", 5.0)
    OVERRUN_SECONDS = params.pop("overrun_seconds", 3.0)
    if impl == "flask_ticker_sql" and metric != "import":
        # The app's database is its own: its import is in the import row.
        import_database_driver()
    try:
        result = METRICS[metric](impl, **params)
    except CannotDo as exc:
        result = {"cannot": str(exc)}
    print(json.dumps(result))
    sys.stdout.flush()
    os._exit(0)  # some contenders cannot stop; do not wait for their threads


# -- the parent: run workers, take medians, print and draw --


def measure(impl: str, metric: str, repeat: int = 1, timeout: float = 120, **params) -> dict:
    runs = []
    for _ in range(repeat):
        out = subprocess.run(
            [
                sys.executable,
                __file__,
                "--worker",
                impl,
                metric,
                json.dumps({**SETTINGS, **params}),
            ],
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**os.environ, "PYTHONDONTWRITEBYTECODE": ""},
        )
        if out.returncode != 0 or not out.stdout.strip():
            return {"error": (out.stderr.strip().splitlines() or ["no output"])[-1]}
        runs.append(json.loads(out.stdout.strip().splitlines()[-1]))
    if "cannot" in runs[0]:
        return runs[0]
    merged = {}
    for key, value in runs[0].items():
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            merged[key] = statistics.median(r[key] for r in runs)
        elif isinstance(value, list):
            merged[key] = [x for r in runs for x in r[key]]
        else:
            merged[key] = value
    # Lateness percentiles come from all runs' samples together: one run's
    # p99 rests on its few worst samples, and a median of three such is
    # still mostly noise.
    for prefix in ("", "second_"):
        if merged.get(prefix + "samples_ms"):
            merged[prefix + "p99_ms"] = p99(merged[prefix + "samples_ms"])
    if merged.get("samples_ms"):
        merged["median_ms"] = statistics.median(merged["samples_ms"])
    return merged


SETTINGS: dict = {}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset, under a minute")
    parser.add_argument("--out", default=str(HERE / "results.json"))
    parser.add_argument("--chart", default=str(HERE / "results.png"))
    parser.add_argument("--worker", nargs=3, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        impl, metric, params = args.worker
        worker(impl, metric, json.loads(params))
        return
    quick = args.quick
    SETTINGS.update(
        idle_seconds=1.0 if quick else 5.0,
        punctuality_seconds=1.0 if quick else 5.0,
        overrun_seconds=1.0 if quick else 3.0,
    )
    reps = 3 if quick else 7
    schedulers = (
        [
            "flask_ticker",
            "flask_ticker_nolock",
            "flask_ticker_redis",
            "flask_ticker_sql",
            "apscheduler",
            "thread_event",
        ]
        if quick
        else SCHEDULERS
    )
    results: dict = {"meta": meta(quick), "scheduling": {}, "background": {}, "growth": {}}
    redis_server = start_redis()
    stop_postgres = start_postgres()
    try:
        measure_all(results, schedulers, quick, reps)
    finally:
        if redis_server is not None:
            redis_server.kill()
        stop_postgres()
    Path(args.out).write_text(json.dumps(results, indent=1, default=str))
    print(table(results))
    draw(results, args.chart)


def measure_all(results: dict, schedulers: list[str], quick: bool, reps: int) -> None:
    background = ["flask_ticker", "thread_pool"] if quick else BACKGROUND
    # Compile every module once, so that no import pays for compiling.
    subprocess.run(
        [sys.executable, "-m", "compileall", "-q", str(HERE.parent / "flask_ticker.py")],
        check=True,
    )
    for impl in schedulers:
        print(f"measuring {impl} ...", file=sys.stderr, flush=True)
        r = results["scheduling"][impl] = {}
        # The SQL column's import is the module's and SQLAlchemy's.
        module = "flask_ticker" if impl in ("flask_ticker_nolock", "flask_ticker_redis") else impl
        r["import"] = (
            measure(module, "import", reps)
            if module in IMPORTABLE
            else {"cannot": "nothing to import"}
        )
        r["idle10"] = measure(impl, "idle", 1 if quick else 3)
        r["first_run"] = measure(impl, "first_run", reps)
        r["punctuality"] = measure(impl, "punctuality", 1 if quick else 3)  # p99 is noisy
        r["overrun"] = measure(impl, "overrun", 1 if quick else 3)  # its p99 too
        r["failing"] = measure(impl, "failing")
        r["idle10k"] = measure(
            impl, "idle", 1, jobs=100 if quick else 10_000, idle=True, timeout=300
        )
        r["daily10k"] = measure(
            impl, "idle", 1, jobs=100 if quick else 10_000, daily=True, timeout=300
        )
    for impl in ["flask_ticker", "apscheduler"]:
        results["growth"][impl] = {
            n: measure(impl, "growth", 1, jobs=n, timeout=600)
            for n in ([100, 1000] if quick else [100, 1000, 10_000, 100_000])
        }
    for impl in background:
        print(f"measuring {impl} (background) ...", file=sys.stderr, flush=True)
        results["background"][impl] = {
            "trivial": measure(
                impl, "background", reps, tasks=1000 if quick else 10_000, seconds=0
            ),
            "ten_ms": measure(
                impl, "background", 1, tasks=200 if quick else 10_000, seconds=0.01, timeout=600
            ),
        }


def start_redis() -> subprocess.Popen | None:
    """A redis-server on loopback for the flask_ticker_redis column, its URL
    in BENCH_REDIS_URL for the workers; None (the column says so) without one."""
    program = shutil.which("redis-server")
    if program is None:
        return None
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [program, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no"],
        cwd=tempfile.mkdtemp(),
        stdout=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 10
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as conn:
                conn.sendall(b"PING\r\n")
                if conn.recv(16).startswith(b"+PONG"):
                    break
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)
    os.environ["BENCH_REDIS_URL"] = f"redis://127.0.0.1:{port}/0"
    return proc


def start_postgres():
    """A PostgreSQL on loopback for the flask_ticker_sql column, its URL in
    BENCH_SQL_URL; returns what stops it.  Without one, the column says so."""
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/pg_ctl"))
    pg_ctl = found[-1] if found else shutil.which("pg_ctl")
    try:
        import psycopg2  # noqa: F401
        import sqlalchemy  # noqa: F401
    except ImportError:
        pg_ctl = None
    if not pg_ctl:
        return lambda: None
    folder = Path(tempfile.mkdtemp(prefix="bench-pg-"))
    # PostgreSQL refuses to run as root: it runs as the postgres user then.
    user = ["runuser", "-u", "postgres", "--"] if os.getuid() == 0 else []
    if user:
        shutil.chown(folder, "postgres")
    bindir = Path(pg_ctl).parent
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = str(folder / "data")
    quiet = {"check": True, "capture_output": True}
    subprocess.run(
        [*user, str(bindir / "initdb"), "-D", data, "-U", "bench", "-A", "trust"], **quiet
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1"
    start = [str(bindir / "pg_ctl"), "-D", data, "-o", options, "-l", str(folder / "log"), "-w"]
    subprocess.run([*user, *start, "start"], **quiet)
    os.environ["BENCH_SQL_URL"] = f"postgresql+psycopg2://bench@127.0.0.1:{port}/postgres"

    def stop() -> None:
        subprocess.run([*user, *start[:3], "-m", "immediate", "stop"], capture_output=True)
        shutil.rmtree(folder, ignore_errors=True)

    return stop


def meta(quick: bool) -> dict:
    versions = {}
    for dist in [
        "flask",
        "apscheduler",
        "flask-apscheduler",
        "timeloop",
        "schedule",
        "flask-executor",
        "flask-ticker",
        "redis",
        "sqlalchemy",
    ]:
        try:
            versions[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            versions[dist] = "not installed"
    return {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d"),
        "quick": quick,
        "python": platform.python_version(),
        "machine": f"{platform.machine()},"
        f" {os.cpu_count()} cores, {platform.system()} {platform.release()}",
        "versions": versions,
    }


# -- reporting --


def cell(result: dict, key: str, fmt: str = "{:.2f}") -> str:
    if "cannot" in result:
        return result["cannot"]
    if "error" in result:
        return f"error: {result['error'][:40]}"
    value = result.get(key)
    if isinstance(value, str):
        return value
    return "n/a" if value is None else fmt.format(value)


def ratio(value: str, base: str) -> str:
    try:
        return f"{float(value) / float(base):.2f}x"
    except (ValueError, ZeroDivisionError):
        return "-"


ROWS = [  # (label, section, metric, key, format)
    ("import after flask (ms)", "import", "ms", "{:.2f}"),
    ("modules added by import", "import", "modules", "{:.0f}"),
    ("RSS added, import + 10 hourly jobs (KiB)", "idle10", "rss_kib", "{:.0f}"),
    ("threads added, 10 idle hourly jobs", "idle10", "threads", "{:.0f}"),
    ("start() to first run-now run (ms)", "first_run", "ms", "{:.2f}"),
    ("stop() with 10 idle hourly jobs (ms)", "idle10", "stop_ms", "{:.2f}"),
    ("20 jobs at 50 ms: median lateness (ms)", "punctuality", "median_ms", "{:.2f}"),
    ("20 jobs at 50 ms: p99 lateness (ms)", "punctuality", "p99_ms", "{:.2f}"),
    ("20 jobs at 50 ms: drift (ms per 100 ticks)", "punctuality", "drift_ms_per_100", "{:.2f}"),
    ("20 jobs at 50 ms: runs of expected (%)", "punctuality", "runs_pct", "{:.0f}"),
    ("overrun: second job p99 lateness (ms)", "overrun", "second_p99_ms", "{:.2f}"),
    ("overrun: max concurrency of the slow job", "overrun", "max_concurrency", "{:.0f}"),
    ("overrun: warning log lines", "overrun", "warning_lines", "{:.0f}"),
    ("failing every 20 ms: runs (%)", "failing", "failing_runs_pct", "{:.0f}"),
    ("failing: healthy job p99 lateness (ms)", "failing", "healthy_p99_ms", "{:.2f}"),
    ("failing: log lines in 2 s, tracebacks included", "failing", "log_lines", "{:.0f}"),
    ("many hourly jobs: register + start (ms)", "idle10k", "register_start_ms", "{:.1f}"),
    ("many hourly jobs: idle CPU (s)", "idle10k", "idle_cpu_s", "{:.3f}"),
    ("many hourly jobs: RSS added (KiB)", "idle10k", "rss_kib", "{:.0f}"),
    ("many hourly jobs: threads added", "idle10k", "threads", "{:.0f}"),
    ("many hourly jobs: stop (ms)", "idle10k", "stop_ms", "{:.2f}"),
    (
        "as many daily jobs, at= / cron: register + start (ms)",
        "daily10k",
        "register_start_ms",
        "{:.1f}",
    ),
    ("as many daily jobs, at= / cron: RSS added (KiB)", "daily10k", "rss_kib", "{:.0f}"),
]
BACKGROUND_ROWS = [
    ("trivial tasks, in an app context, until done (ms)", "trivial", "ms", "{:.0f}"),
    ("10 ms tasks: ran (%)", "ten_ms", "ran_pct", "{:.0f}"),
    ("10 ms tasks: until done (ms)", "ten_ms", "ms", "{:.0f}"),
    ("10 ms tasks: most threads added", "ten_ms", "threads", "{:.0f}"),
]


def table(results: dict) -> str:
    m = results["meta"]
    out = [
        f"Measured {m['date']} on {m['machine']}, Python {m['python']};"
        f" {', '.join(f'{k} {v}' for k, v in m['versions'].items())}."
        + (" Quick run." if m["quick"] else ""),
        "",
    ]
    for title, section, rows, base in [
        ("Scheduling", "scheduling", ROWS, "apscheduler"),
        ("Background work", "background", BACKGROUND_ROWS, "thread_pool"),
    ]:
        impls = list(results[section])
        out += [
            f"### {title} (ratio: flask_ticker / {base})",
            "",
            "| metric | " + " | ".join(impls) + " | ratio |",
            "|---" * (len(impls) + 2) + "|",
        ]
        for label, group, key, fmt in rows:
            cells = [cell(results[section][i][group], key, fmt) for i in impls]
            base_cell = cell(results[section][base][group], key, fmt) if base in impls else "-"
            out.append(
                f"| {label} | "
                + " | ".join(cells)
                + f" | {ratio(cells[impls.index('flask_ticker')], base_cell)} |"
            )
        out.append("")
    out += [
        "### Cost growth (register + start ms / RSS KiB)",
        "",
        "| jobs | " + " | ".join(results["growth"]) + " |",
        "|---" * (len(results["growth"]) + 1) + "|",
    ]
    sizes = next(iter(results["growth"].values())).keys()
    for n in sizes:
        cells = [
            f"{cell(results['growth'][i][n], 'register_start_ms', '{:.1f}')} /"
            f" {cell(results['growth'][i][n], 'rss_kib', '{:.0f}')}"
            for i in results["growth"]
        ]
        out.append(f"| {n} | " + " | ".join(cells) + " |")
    return "\n".join(out)


def draw(results: dict, path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 4.5))
    for impl, r in results["scheduling"].items():
        samples = r["punctuality"].get("samples_ms")
        if samples:
            xs = sorted(samples)
            left.plot(xs, [i / len(xs) for i in range(len(xs))], label=impl)
    left.set_xscale("symlog", linthresh=0.1)
    left.set(
        title="20 jobs at 50 ms: lateness against the grid",
        xlabel="ms late (log)",
        ylabel="fraction of runs",
    )
    left.legend(fontsize=8)
    for impl, sizes in results["growth"].items():
        ns = [n for n in sizes if isinstance(sizes[n].get("register_start_ms"), (int, float))]
        right.plot(
            [int(n) for n in ns],
            [sizes[n]["register_start_ms"] for n in ns],
            marker="o",
            label=impl,
        )
    right.set(
        xscale="log",
        yscale="log",
        title="register + start, hourly jobs",
        xlabel="jobs",
        ylabel="ms",
    )
    right.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=90)


if __name__ == "__main__":
    main()
