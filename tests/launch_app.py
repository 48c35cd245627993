"""The app that the launch-mode tests serve with real servers.

Every run of a job appends "pid wall-time event" to $RUNS_FILE, so a test
can count the runs of each tick and see which process made them.
"""

import os
import time

from flask import Flask

from flask_ticker import Ticker

VERSION = "v1"  # the reloader test edits this line
INTERVAL = float(os.environ.get("JOB_INTERVAL", "0.5"))
JOB_SECONDS = float(os.environ.get("JOB_SECONDS", "0"))
RUN_NOW = os.environ.get("JOB_RUN_NOW", "1") == "1"
FAILS = os.environ.get("JOB_FAILS") == "1"
AT = os.environ.get("JOB_AT")  # "HH:MM:SS" UTC: a daily job at that time

app = Flask(__name__, instance_path=os.environ.get("INSTANCE_PATH"))
app.config["TICKER_LOCK_RETRY"] = 0.2
app.config.from_prefixed_env()
ticker = Ticker(app)


def note(event: str) -> None:
    with open(os.environ["RUNS_FILE"], "a") as runs:
        runs.write(f"{os.getpid()} {time.time():.4f} {event}\n")


@ticker.every(INTERVAL, run_now=RUN_NOW)
def tick() -> None:
    note(f"tick-{VERSION}")
    if FAILS:
        raise ValueError("the feed is down")
    if JOB_SECONDS:
        time.sleep(JOB_SECONDS)
        note("tick-end")


@ticker.every(3600)
def hourly() -> None:
    note("hourly")


if AT:

    @ticker.every(86400, at=AT, tz="UTC")
    def nightly() -> None:
        note("at")


@app.get("/")
def index() -> str:
    return str(os.getpid())


@app.get("/status")
def status() -> dict:
    return {"served_by": os.getpid(), **ticker.status()}


@app.cli.command("migrate")
def migrate() -> None:
    """Stands in for 'flask db upgrade'."""
    print("migrated")


if __name__ == "__main__":
    app.run(debug=os.environ.get("APP_DEBUG") == "1", port=int(os.environ["PORT"]))
