"""A bounded soak: many fast jobs and a stream of background tasks, for a
while, with the default lock file.

Not part of the default run: ``pytest -m soak`` runs it for SOAK_SECONDS
(60 by default); CI runs it for 10.
"""

from __future__ import annotations

import os
import random
import threading
import time

import pytest
from flask import Flask

from flask_ticker import Ticker, run_in_background

pytestmark = pytest.mark.soak
SECONDS = float(os.environ.get("SOAK_SECONDS", "60"))


def rss_kib() -> int:
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


@pytest.mark.skipif(not os.path.exists("/proc/self/status"), reason="reads RSS from /proc")
def test_a_soak_keeps_threads_memory_and_punctuality_flat(tmp_path):
    app = Flask("soak", instance_path=str(tmp_path / "instance"))
    app.config["TICKER_ENABLED"] = True
    rng = random.Random(7)
    intervals = [rng.choice([0.01, 0.02, 0.03, 0.04, 0.05]) for _ in range(100)]
    # Lateness in 0.1 ms buckets, to 100 ms: memory that does not grow with the runs.
    buckets = [0] * 1001
    origin = [0.0]

    def job(interval: float):
        def run() -> None:
            late = (time.monotonic() - origin[0]) % interval
            buckets[min(1000, int(late * 10_000))] += 1

        return run

    ticker = Ticker()
    for i, interval in enumerate(intervals):
        ticker.every(interval, job(interval), name=f"job{i}")
    done = threading.Event()

    def tasks() -> None:
        with app.app_context():
            while not done.wait(0.005):
                run_in_background(lambda: None)

    origin[0] = time.monotonic()
    ticker.init_app(app)  # starts it: TICKER_ENABLED
    feeder = threading.Thread(target=tasks)
    feeder.start()
    try:
        time.sleep(min(10.0, SECONDS * 0.3))  # warm up: pools, caches, allocator
        threads, rss = threading.active_count(), rss_kib()
        buckets[:] = [0] * 1001
        time.sleep(SECONDS - min(10.0, SECONDS * 0.3))
        threads_after, rss_after = threading.active_count(), rss_kib()
    finally:
        done.set()
        feeder.join()
        stopped_at = time.monotonic()
        assert ticker.stop(10)
    assert threads_after == threads
    assert rss_after - rss < 1024, f"RSS grew {rss_after - rss} KiB"
    for job, interval in zip(ticker.jobs, intervals):
        due = int((stopped_at - origin[0]) / interval) + 1
        assert abs(job.runs + job.skipped - due) <= 2, (job.name, job.runs, job.skipped, due)
    runs, seen = sum(buckets), 0
    for tenths, count in enumerate(buckets):
        seen += count
        if seen >= 0.99 * runs:
            break
    assert tenths / 10 < 10, f"p99 lateness {tenths / 10} ms over {runs} runs"
